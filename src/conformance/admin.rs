//! The checks of ABI 1.1's calls: owner, inspect, force_release, stats.
//!
//! Each is gated on what the plugin has: a call answered `unsupported` (a
//! 1.0 plugin has none of these slots; a mode may refuse one) or a
//! capability `describe` does not list skips the check with that reason,
//! so a 1.0 plugin passes the suite with these checks skipped, never
//! failed, and never silently passed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Ctx, sleep_ms};
use crate::{
    ErrorKind, LockAdmin, LockHandle, MAX_OWNER_BYTES, PluginError, STATS_BUCKET_BOUNDS_US,
    STATS_BUCKETS, Stats,
};

/// Why a check did not pass.
pub(crate) enum Verdict {
    /// The plugin broke the contract.
    Fail(String),
    /// The check does not apply to this plugin, and why.
    Skip(String),
}

impl From<String> for Verdict {
    fn from(s: String) -> Self {
        Verdict::Fail(s)
    }
}

pub(crate) type Outcome = Result<(), Verdict>;
type Check = fn(&Ctx<'_>) -> Outcome;

/// The 1.1 checks, in run order.
pub(crate) const ALL: &[(&str, Check)] = &[
    ("owner_round_trip", owner_round_trip),
    ("inspect_free_held_expired", inspect_free_held_expired),
    ("force_release_breaks_the_holder", force_release_breaks_the_holder),
    ("force_release_against_a_renewing_holder", force_release_against_a_renewing_holder),
    ("stats_count_every_outcome", stats_count_every_outcome),
];

const LONG_TTL: u64 = 30_000;

fn admin(ctx: &Ctx<'_>) -> Result<Box<dyn LockAdmin>, Verdict> {
    ctx.admin_instance().map_err(Verdict::Fail)
}

/// An error is a failure, except `unsupported`, which skips the check.
pub(crate) fn call<T>(r: Result<T, PluginError>, what: &str) -> Result<T, Verdict> {
    r.map_err(|e| match e.kind {
        ErrorKind::Unsupported => Verdict::Skip(format!("{what}: {}", e.message)),
        kind => Verdict::Fail(format!("{what} failed ({kind}): {}", e.message)),
    })
}

pub(crate) fn fail<T>(message: String) -> Result<T, Verdict> {
    Err(Verdict::Fail(message))
}

pub(crate) fn lock<P: LockAdmin + ?Sized>(
    p: &P,
    key: &str,
    ttl: u64,
    owner: Option<&str>,
) -> Result<LockHandle, Verdict> {
    match call(p.try_lock_as(key, ttl, owner), "try_lock")? {
        Some(h) => Ok(h),
        None => fail(format!("try_lock({key:?}) was contended, expected to acquire")),
    }
}

pub(crate) fn needs<P: LockAdmin + ?Sized>(p: &P, capability: &str) -> Outcome {
    if p.capabilities().iter().any(|c| c == capability) {
        return Ok(());
    }
    Err(Verdict::Skip(format!("the plugin does not list the `{capability}` capability")))
}

fn owner_round_trip(ctx: &Ctx<'_>) -> Outcome {
    let (a, b) = (admin(ctx)?, admin(ctx)?);
    needs(&*a, "owner")?;
    let key = ctx.key("k");
    let owner = "conformance/holder ü:42 \"quoted\"";
    let h = lock(&*a, &key, LONG_TTL, Some(owner))?;
    let info = call(b.inspect(&key), "inspect from another instance")?;
    if !info.held || info.owner.as_deref() != Some(owner) {
        return fail(format!("inspect shows {info:?}, expected held with owner {owner:?}"));
    }
    if info.fence != h.fence {
        return fail(format!("inspect shows fence {:?}, the handle has {:?}", info.fence, h.fence));
    }
    call(a.release(h).map_err(PluginError::backend), "release")?;
    // Without an owner, inspect shows none rather than a stale one.
    let h = lock(&*a, &key, LONG_TTL, None)?;
    let info = call(b.inspect(&key), "inspect")?;
    if info.owner.is_some() {
        return fail(format!("a lock taken without an owner shows owner {:?}", info.owner));
    }
    call(a.release(h).map_err(PluginError::backend), "release")?;
    let long = "o".repeat(MAX_OWNER_BYTES + 1);
    match a.try_lock_as(&key, LONG_TTL, Some(&long)) {
        Err(e) if e.kind == ErrorKind::InvalidArgument && e.message.contains("owner") => {}
        other => {
            return fail(format!(
                "an owner of {} bytes gave {other:?}, expected invalid_argument naming owner",
                long.len()
            ));
        }
    }
    let longest = "o".repeat(MAX_OWNER_BYTES);
    let h = lock(&*a, &key, LONG_TTL, Some(&longest))?;
    let info = call(b.inspect(&key), "inspect")?;
    if info.owner.as_deref() != Some(longest.as_str()) {
        return fail(format!("a {MAX_OWNER_BYTES}-byte owner did not round-trip"));
    }
    call(a.release(h).map_err(PluginError::backend), "release")
}

fn inspect_free_held_expired(ctx: &Ctx<'_>) -> Outcome {
    let (a, b) = (admin(ctx)?, admin(ctx)?);
    let key = ctx.key("k");
    let never = call(b.inspect(&ctx.key("never-locked")), "inspect of a key never locked")?;
    if never.held || never.fence.is_some() || never.owner.is_some() || never.expires_in_ms.is_some()
    {
        return fail(format!("a key never locked shows {never:?}, expected held:false alone"));
    }
    match b.inspect("") {
        Err(e) if e.kind == ErrorKind::InvalidArgument && e.message.contains("key") => {}
        other => return fail(format!("inspect of an empty key gave {other:?}")),
    }
    let h = lock(&*a, &key, LONG_TTL, Some("inspector"))?;
    let info = call(b.inspect(&key), "inspect of a held key")?;
    if info.key != key || !info.held {
        return fail(format!("a held key shows {info:?}"));
    }
    match info.expires_in_ms {
        Some(ms) if ms > 0 && ms <= LONG_TTL => {}
        other => return fail(format!("expires_in_ms is {other:?}, expected 1..={LONG_TTL}")),
    }
    if let Some(ms) = info.held_for_ms {
        if ms > LONG_TTL {
            return fail(format!("held_for_ms is {ms} right after acquiring"));
        }
    }
    call(a.release(h).map_err(PluginError::backend), "release")?;
    let info = call(b.inspect(&key), "inspect after release")?;
    if info.held {
        return fail(format!("a released key shows {info:?}"));
    }
    let short = ctx.options().short_ttl_ms;
    let _h = lock(&*a, &key, short, None)?;
    let info = call(b.inspect(&key), "inspect of a short lease")?;
    if !info.held || info.expires_in_ms.is_some_and(|ms| ms > short) {
        return fail(format!("a {short} ms lease shows {info:?}"));
    }
    sleep_ms(short + ctx.options().settle_ms);
    let info = call(b.inspect(&key), "inspect after expiry")?;
    if info.held {
        return fail(format!("a lease past its TTL shows {info:?}, expected held:false"));
    }
    Ok(())
}

fn force_release_breaks_the_holder(ctx: &Ctx<'_>) -> Outcome {
    let (a, op, c) = (admin(ctx)?, admin(ctx)?, admin(ctx)?);
    let key = ctx.key("k");
    let free = call(op.force_release(&key, None), "force_release of a free key")?;
    if free.released {
        return fail(format!("breaking a free key said {free:?}"));
    }
    let h = lock(&*a, &key, LONG_TTL, Some("stuck"))?;
    if let Some(f) = h.fence {
        let wrong = call(op.force_release(&key, Some(f + 1_000)), "force_release, wrong fence")?;
        if wrong.released {
            return fail(format!("if_fence {} broke the holder of fence {f}", f + 1_000));
        }
        call(a.renew(&h).map_err(PluginError::backend), "renew after a refused break")?;
    }
    let broke = call(op.force_release(&key, h.fence), "force_release")?;
    if !broke.released || broke.fence != h.fence {
        return fail(format!("breaking fence {:?} said {broke:?}", h.fence));
    }
    if a.renew(&h).is_ok() {
        return fail("the broken holder's renew succeeded".into());
    }
    if let Err(e) = a.release(h.clone()) {
        return fail(format!("the broken holder's release failed ({e}); it must be a no-op"));
    }
    let info = call(op.inspect(&key), "inspect after the break");
    if let Ok(info) = &info {
        if info.held {
            return fail(format!("the key is still held after the break: {info:?}"));
        }
    }
    let next = lock(&*c, &key, LONG_TTL, None)?;
    if let (Some(old), next_fence) = (h.fence, next.fence) {
        if next_fence.is_none_or(|n| n <= old) {
            return fail(format!("the next fence {next_fence:?} is not above the broken {old}"));
        }
    }
    // The broken holder's late release leaves the new holder alone.
    let _ = a.release(h);
    match a.try_lock_as(&key, LONG_TTL, None) {
        Ok(None) => {}
        other => return fail(format!("after a stale release the new holder lost it: {other:?}")),
    }
    call(c.release(next).map_err(PluginError::backend), "release")
}

fn force_release_against_a_renewing_holder(ctx: &Ctx<'_>) -> Outcome {
    let (holder, op, next) = (admin(ctx)?, admin(ctx)?, admin(ctx)?);
    let key = ctx.key("k");
    // Probe first so a plugin without the slot is skipped before threads start.
    call(op.force_release(&ctx.key("probe"), None), "force_release")?;
    let h = lock(&*holder, &key, LONG_TTL, Some("renewer"))?;
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (renews, lost, broke) = std::thread::scope(|s| {
        let renewer = s.spawn(|| {
            let mut renews = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if holder.renew(&h).is_err() {
                    return (renews, true);
                }
                renews += 1;
            }
            (renews, false)
        });
        // Let the renewer run, then break the lock in the middle of it.
        sleep_ms(50);
        let broke = op.force_release(&key, None);
        // Its very next renew must fail; give a slow backend a while.
        let (renews, lost) = renewer.join().unwrap_or((0, false));
        stop.store(true, Ordering::Relaxed);
        (renews, lost, broke)
    });
    let broke = call(broke, "force_release")?;
    if !broke.released {
        return fail(format!("breaking a renewed lock said {broke:?}"));
    }
    if !lost {
        return fail(format!("the holder renewed {renews} times and never saw the break"));
    }
    if let Err(e) = holder.release(h.clone()) {
        return fail(format!("the broken holder's release failed ({e}); it must be a no-op"));
    }
    let n = lock(&*next, &key, LONG_TTL, None)?;
    if let Some(old) = h.fence {
        if n.fence.is_none_or(|f| f <= old) {
            return fail(format!("the next fence {:?} is not above the broken {old}", n.fence));
        }
    }
    if holder.renew(&h).is_ok() {
        return fail("the broken holder renewed after the next holder acquired".into());
    }
    call(next.release(n).map_err(PluginError::backend), "release")
}

fn delta(after: &Stats, before: &Stats) -> [u64; 11] {
    let f = |s: &Stats| {
        [
            s.acquired,
            s.contended,
            s.renewed,
            s.renew_failures,
            s.released,
            s.force_released,
            s.errors.invalid_argument,
            s.errors.backend,
            s.errors.panic,
            s.errors.unsupported,
            s.latency_us.try_lock.iter().sum(),
        ]
    };
    let (a, b) = (f(after), f(before));
    std::array::from_fn(|i| a[i].wrapping_sub(b[i]))
}

fn stats_count_every_outcome(ctx: &Ctx<'_>) -> Outcome {
    let (a, b) = (admin(ctx)?, admin(ctx)?);
    let before = call(a.stats(), "stats")?;
    let shape = &before.latency_us;
    if shape.bounds != STATS_BUCKET_BOUNDS_US
        || [&shape.try_lock, &shape.renew, &shape.release].iter().any(|h| h.len() != STATS_BUCKETS)
    {
        return fail(format!("the histograms do not have the ABI's buckets: {shape:?}"));
    }
    let key = ctx.key("k");
    let h = lock(&*a, &key, LONG_TTL, None)?; // acquired
    let held = lock(&*b, &ctx.key("other"), LONG_TTL, None)?;
    if a.try_lock_as(&ctx.key("other"), LONG_TTL, None).ok() != Some(None) {
        return fail("try_lock of a key another instance holds was not contended".into());
    } // contended
    call(a.renew(&h).map_err(PluginError::backend), "renew")?; // renewed
    if a.try_lock_as("", LONG_TTL, None).is_ok() {
        return fail("try_lock of an empty key succeeded".into());
    } // errors.invalid_argument
    call(a.release(h.clone()).map_err(PluginError::backend), "release")?; // released
    if a.renew(&h).is_ok() {
        return fail("renew after release succeeded".into());
    } // renew_failures + errors.backend
    let broke = a.force_release(&ctx.key("other"), None);
    let after = call(a.stats(), "stats")?;
    let _ = b.release(held);
    let mut want = [1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 3];
    match &broke {
        Ok(broke) => want[5] = u64::from(broke.released),
        Err(e) if e.kind == ErrorKind::Unsupported => want[9] = 1,
        Err(e) => return fail(format!("force_release failed ({}): {}", e.kind, e.message)),
    }
    let got = delta(&after, &before);
    if got != want {
        return fail(format!(
            "counted [acquired, contended, renewed, renew_failures, released, force_released, \
             invalid_argument, backend, panic, unsupported, try_lock timings] {got:?}, \
             expected {want:?}"
        ));
    }
    let other = call(b.stats(), "stats of another instance")?;
    if (other.acquired, other.contended, other.renewed, other.renew_failures) != (1, 0, 0, 0) {
        return fail(format!("another instance's stats show this one's calls: {other:?}"));
    }
    Ok(())
}
