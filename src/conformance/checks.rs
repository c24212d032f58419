//! The checks themselves. Each returns `Err(reason)` on the first violation.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::{Ctx, sleep_ms};
use crate::{LockHandle, LockingPlugin, MAX_KEY_BYTES, MAX_TTL_MS};

type Check = fn(&Ctx<'_>) -> Result<(), String>;

/// Every check, in run order.
pub(crate) const ALL: &[(&str, Check)] = &[
    ("acquire", acquire),
    ("contention_from_other_instance", contention_from_other_instance),
    ("not_reentrant", not_reentrant),
    ("distinct_keys_are_independent", distinct_keys_are_independent),
    ("renew_keeps_it", renew_keeps_it),
    ("release_frees_it", release_frees_it),
    ("release_is_idempotent", release_is_idempotent),
    ("expiry_frees_it", expiry_frees_it),
    ("renew_after_expiry_fails", renew_after_expiry_fails),
    ("stale_release_is_noop", stale_release_is_noop),
    ("stale_renew_fails", stale_renew_fails),
    ("forged_handle_is_rejected", forged_handle_is_rejected),
    ("lock_ids_are_unique", lock_ids_are_unique),
    ("fence_increases", fence_increases),
    ("key_limits", key_limits),
    ("ttl_limits", ttl_limits),
    ("threads_never_overlap", threads_never_overlap),
    ("calls_after_cleanup_fail", calls_after_cleanup_fail),
];

const LONG_TTL: u64 = 30_000;

fn must_lock(p: &dyn LockingPlugin, key: &str, ttl: u64, what: &str) -> Result<LockHandle, String> {
    match p.try_lock(key, ttl) {
        Ok(Some(h)) => Ok(h),
        Ok(None) => Err(format!("{what}: try_lock({key:?}) was contended, expected to acquire")),
        Err(e) => Err(format!("{what}: try_lock({key:?}) failed: {e}")),
    }
}

fn must_contend(p: &dyn LockingPlugin, key: &str, what: &str) -> Result<(), String> {
    match p.try_lock(key, LONG_TTL) {
        Ok(None) => Ok(()),
        Ok(Some(h)) => Err(format!(
            "{what}: try_lock({key:?}) acquired (lock_id {}), expected contention",
            h.lock_id
        )),
        Err(e) => {
            Err(format!("{what}: try_lock({key:?}) failed ({e}), expected contention (Ok(None))"))
        }
    }
}

fn ok<T>(r: Result<T, String>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn past_short_ttl(ctx: &Ctx<'_>) {
    sleep_ms(ctx.options().short_ttl_ms + ctx.options().settle_ms);
}

fn acquire(ctx: &Ctx<'_>) -> Result<(), String> {
    let a = ctx.instance()?;
    let key = ctx.key("k");
    let h = must_lock(&*a, &key, LONG_TTL, "first acquisition")?;
    if h.key != key || h.ttl_ms != LONG_TTL || h.lock_id.is_empty() {
        return Err(format!("handle does not describe the request: {h:?}"));
    }
    ok(a.release(h), "release")
}

fn contention_from_other_instance(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let key = ctx.key("k");
    let h = must_lock(&*a, &key, LONG_TTL, "instance A")?;
    must_contend(&*b, &key, "instance B while A holds")?;
    ok(a.release(h), "release")
}

fn not_reentrant(ctx: &Ctx<'_>) -> Result<(), String> {
    let a = ctx.instance()?;
    let key = ctx.key("k");
    let h = must_lock(&*a, &key, LONG_TTL, "first")?;
    must_contend(&*a, &key, "same instance again")?;
    ok(a.release(h), "release")
}

fn distinct_keys_are_independent(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let h1 = must_lock(&*a, &ctx.key("one"), LONG_TTL, "A on one")?;
    let h2 = must_lock(&*b, &ctx.key("two"), LONG_TTL, "B on two")?;
    ok(a.release(h1), "release one")?;
    ok(b.release(h2), "release two")
}

fn renew_keeps_it(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let key = ctx.key("k");
    let ttl = ctx.options().short_ttl_ms;
    let h = must_lock(&*a, &key, ttl, "A")?;
    let started = Instant::now();
    // Renew at half the TTL until well past the original lease.
    while started.elapsed().as_millis() < u128::from(ttl * 2 + ctx.options().settle_ms) {
        sleep_ms(ttl / 2);
        ok(a.renew(&h), "renew while held")?;
    }
    must_contend(&*b, &key, "B after A renewed past its first TTL")?;
    ok(a.release(h), "release")
}

fn release_frees_it(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let key = ctx.key("k");
    let h = must_lock(&*a, &key, LONG_TTL, "A")?;
    ok(a.release(h), "release")?;
    let h = must_lock(&*b, &key, LONG_TTL, "B right after A released")?;
    ok(b.release(h), "release B")
}

fn release_is_idempotent(ctx: &Ctx<'_>) -> Result<(), String> {
    let a = ctx.instance()?;
    let h = must_lock(&*a, &ctx.key("k"), LONG_TTL, "A")?;
    ok(a.release(h.clone()), "first release")?;
    ok(a.release(h.clone()), "second release of the same handle")?;
    if a.renew(&h).is_ok() {
        return Err("renew after release succeeded; it must fail and never re-acquire".into());
    }
    Ok(())
}

fn expiry_frees_it(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let key = ctx.key("k");
    let _h = must_lock(&*a, &key, ctx.options().short_ttl_ms, "A")?;
    past_short_ttl(ctx);
    let h = must_lock(&*b, &key, LONG_TTL, "B after A's TTL ran out")?;
    ok(b.release(h), "release B")
}

fn renew_after_expiry_fails(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let key = ctx.key("k");
    let h = must_lock(&*a, &key, ctx.options().short_ttl_ms, "A")?;
    past_short_ttl(ctx);
    if a.renew(&h).is_ok() {
        return Err("renew of an expired lock succeeded; it must fail, not re-acquire".into());
    }
    let h = must_lock(&*b, &key, LONG_TTL, "B after A's failed renew")?;
    ok(b.release(h), "release B")
}

/// A holds with a short TTL, lets it expire, and B takes over.
fn takeover(
    ctx: &Ctx<'_>,
    a: &dyn LockingPlugin,
    b: &dyn LockingPlugin,
) -> Result<(LockHandle, LockHandle), String> {
    let key = ctx.key("k");
    let old = must_lock(a, &key, ctx.options().short_ttl_ms, "A")?;
    past_short_ttl(ctx);
    let new = must_lock(b, &key, LONG_TTL, "B after A expired")?;
    Ok((old, new))
}

fn stale_release_is_noop(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let (old, new) = takeover(ctx, &*a, &*b)?;
    ok(a.release(old), "release of A's stale handle must be OK")?;
    must_contend(&*a, &new.key, "A after its stale release (B must still hold)")?;
    ok(b.renew(&new), "B's renew after A's stale release")?;
    ok(b.release(new), "release B")
}

fn stale_renew_fails(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let (old, new) = takeover(ctx, &*a, &*b)?;
    if a.renew(&old).is_ok() {
        return Err("renew of a stale handle succeeded after B took over".into());
    }
    must_contend(&*a, &new.key, "A after its stale renew (B must still hold)")?;
    ok(b.renew(&new), "B's renew")?;
    ok(b.release(new), "release B")
}

fn forged_handle_is_rejected(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let h = must_lock(&*a, &ctx.key("k"), LONG_TTL, "A")?;
    let forged = LockHandle { lock_id: format!("{}x", h.lock_id), ..h.clone() };
    if b.renew(&forged).is_ok() {
        return Err("renew with a forged lock_id succeeded".into());
    }
    ok(b.release(forged), "release with a forged lock_id must be OK (and touch nothing)")?;
    must_contend(&*b, &h.key, "B after the forged release (A must still hold)")?;
    ok(a.renew(&h), "A's renew")?;
    ok(a.release(h), "release A")
}

fn lock_ids_are_unique(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let key = ctx.key("k");
    let mut seen = HashSet::new();
    for i in 0..20 {
        let p = if i % 2 == 0 { &a } else { &b };
        let h = must_lock(&**p, &key, LONG_TTL, "acquisition")?;
        if !seen.insert(h.lock_id.clone()) {
            return Err(format!("lock_id {} was handed out twice", h.lock_id));
        }
        ok(p.release(h), "release")?;
    }
    Ok(())
}

fn fence_increases(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let key = ctx.key("k");
    let mut fences = Vec::new();
    for i in 0..6 {
        let p = if i % 2 == 0 { &a } else { &b };
        let h = must_lock(&**p, &key, LONG_TTL, "acquisition")?;
        fences.push(h.fence);
        ok(p.release(h), "release")?;
    }
    // One more by takeover after expiry, the case where counters tied to the
    // lock's own record tend to reset.
    let _old = must_lock(&*a, &key, ctx.options().short_ttl_ms, "short acquisition")?;
    fences.push(_old.fence);
    past_short_ttl(ctx);
    let h = must_lock(&*b, &key, LONG_TTL, "takeover")?;
    fences.push(h.fence);
    ok(b.release(h), "release")?;

    let fencing = ctx.options().fencing.unwrap_or(fences[0].is_some());
    if !fencing {
        return match fences.iter().find(|f| f.is_some()) {
            Some(f) => Err(format!("backend said it does not fence but handed out fence {f:?}")),
            None => Ok(()),
        };
    }
    let Some(values) = fences.iter().copied().collect::<Option<Vec<u64>>>() else {
        return Err(format!("some handles lack a fence: {fences:?}"));
    };
    if values.windows(2).any(|w| w[1] <= w[0]) {
        return Err(format!("fences do not strictly increase: {values:?}"));
    }
    Ok(())
}

fn key_limits(ctx: &Ctx<'_>) -> Result<(), String> {
    let a = ctx.instance()?;
    let pad = |len: usize| {
        let mut k = ctx.prefix().to_owned();
        k.push_str(&"k".repeat(len - k.len()));
        k
    };
    let h = must_lock(&*a, &pad(MAX_KEY_BYTES), LONG_TTL, "key of exactly MAX_KEY_BYTES")?;
    ok(a.renew(&h), "renew of the longest key")?;
    ok(a.release(h), "release of the longest key")?;
    if let Ok(r) = a.try_lock(&pad(MAX_KEY_BYTES + 1), LONG_TTL) {
        return Err(format!("key of MAX_KEY_BYTES + 1 bytes gave {r:?}, expected an error"));
    }
    if let Ok(r) = a.try_lock("", LONG_TTL) {
        return Err(format!("empty key gave {r:?}, expected an error"));
    }
    // Quotes, backslashes, SQL and Lua metacharacters, unicode: must be data.
    for odd in [
        "it's \"quoted\" \\ back",
        "'; DROP TABLE x; --",
        "ключ/鍵/🔒",
        "a\nb\tc\u{7f}",
        "%_*?[]{}",
    ] {
        let key = format!("{}{odd}", ctx.prefix());
        let h = must_lock(&*a, &key, LONG_TTL, "unusual key")?;
        if h.key != key {
            return Err(format!("handle key {:?} differs from requested {key:?}", h.key));
        }
        must_contend(&*a, &key, "unusual key held")?;
        ok(a.release(h), "release unusual key")?;
        let h = must_lock(&*a, &key, LONG_TTL, "unusual key after release")?;
        ok(a.release(h), "release unusual key")?;
    }
    Ok(())
}

fn ttl_limits(ctx: &Ctx<'_>) -> Result<(), String> {
    let a = ctx.instance()?;
    for bad in [0, MAX_TTL_MS + 1] {
        if let Ok(r) = a.try_lock(&ctx.key("bad"), bad) {
            return Err(format!("ttl_ms {bad} gave {r:?}, expected an error"));
        }
    }
    let h = must_lock(&*a, &ctx.key("max"), MAX_TTL_MS, "ttl_ms = MAX_TTL_MS")?;
    ok(a.renew(&h), "renew with MAX_TTL_MS")?;
    ok(a.release(h), "release")?;
    let _h = must_lock(&*a, &ctx.key("one"), 1, "ttl_ms = 1")?;
    Ok(())
}

fn threads_never_overlap(ctx: &Ctx<'_>) -> Result<(), String> {
    let (a, b) = (ctx.instance()?, ctx.instance()?);
    let key = ctx.key("k");
    let holders = AtomicUsize::new(0);
    let acquired = AtomicUsize::new(0);
    let overlaps = AtomicUsize::new(0);
    let errors = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for t in 0..ctx.options().threads {
            let p: &dyn LockingPlugin = if t % 2 == 0 { &*a } else { &*b };
            let (key, holders, acquired, overlaps, errors) =
                (&key, &holders, &acquired, &overlaps, &errors);
            s.spawn(move || {
                for _ in 0..ctx.options().attempts_per_thread {
                    match p.try_lock(key, LONG_TTL) {
                        Ok(Some(h)) => {
                            if holders.fetch_add(1, Ordering::SeqCst) != 0 {
                                overlaps.fetch_add(1, Ordering::SeqCst);
                            }
                            acquired.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            holders.fetch_sub(1, Ordering::SeqCst);
                            if let Err(e) = p.release(h) {
                                errors.lock().unwrap().push(format!("release: {e}"));
                            }
                        }
                        Ok(None) => std::thread::yield_now(),
                        Err(e) => errors.lock().unwrap().push(format!("try_lock: {e}")),
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    let (acquired, overlaps) = (acquired.into_inner(), overlaps.into_inner());
    if overlaps > 0 {
        return Err(format!("{overlaps} overlapping holders in {acquired} acquisitions"));
    }
    if !errors.is_empty() {
        return Err(format!("{} errors under contention, first: {}", errors.len(), errors[0]));
    }
    if acquired == 0 {
        return Err("no thread ever acquired the lock".into());
    }
    Ok(())
}

fn calls_after_cleanup_fail(ctx: &Ctx<'_>) -> Result<(), String> {
    let a = ctx.instance()?;
    let h = must_lock(&*a, &ctx.key("k"), LONG_TTL, "A")?;
    a.cleanup();
    if let Ok(r) = a.try_lock(&ctx.key("other"), LONG_TTL) {
        return Err(format!("try_lock after cleanup gave {r:?}, expected an error"));
    }
    if a.renew(&h).is_ok() {
        return Err("renew after cleanup succeeded".into());
    }
    if a.release(h).is_ok() {
        return Err("release after cleanup succeeded".into());
    }
    a.cleanup(); // idempotent
    Ok(())
}
