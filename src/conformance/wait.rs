//! The checks of ABI 1.2's calls: waiting for a lock (hand-off, timeout,
//! cancellation, FIFO order, expiry) and `renew_for`.
//!
//! Each runs when the plugin lists `"lock_wait"` (and `"fifo"` or
//! `"renew_ttl"` for the checks of those promises) and is skipped with the
//! reason otherwise: a plugin that hosts poll is not checked as if it
//! waited. Checks line waiters up by starting them a while apart
//! ([`QUEUE_GAP_MS`]); nothing here measures speed, but a wait must end
//! within a second of its cancel, as the ABI promises it within 100 ms.

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::admin::{Outcome, Verdict, call, fail, lock, needs};
use super::{Ctx, sleep_ms};
use crate::{ErrorKind, LockHandle, LockWait, PluginError, Wait};

type Check = fn(&Ctx<'_>) -> Outcome;

/// The 1.2 checks, in run order.
pub(crate) const ALL: &[(&str, Check)] = &[
    ("wait_hands_off_after_release", wait_hands_off_after_release),
    ("wait_times_out_with_none", wait_times_out_with_none),
    ("wait_cancel_from_another_thread", wait_cancel_from_another_thread),
    ("wait_fifo_order", wait_fifo_order),
    ("wait_expiry_wakes_a_waiter", wait_expiry_wakes_a_waiter),
    ("wait_refuses_bad_input", wait_refuses_bad_input),
    ("renew_for_sets_the_remaining_time", renew_for_sets_the_remaining_time),
];

const LONG_TTL: u64 = 30_000;
/// How long a waiter lasts when nothing should end its wait but the lock.
const LONG_WAIT: Duration = Duration::from_secs(30);
/// Time given to a waiter to reach the backend and queue before the next
/// one starts or the holder releases.
const QUEUE_GAP_MS: u64 = 250;
/// How soon after its cancel a wait must have returned.
const CANCEL_BOUND: Duration = Duration::from_secs(1);
/// Slack for a `sent` instant carried across the C boundary in whole
/// microseconds, and a deadline carried in whole milliseconds.
const ROUNDING: Duration = Duration::from_millis(5);

fn instance(ctx: &Ctx<'_>) -> Result<Box<dyn LockWait>, Verdict> {
    ctx.wait_instance().map_err(Verdict::Fail)
}

fn release(p: &dyn LockWait, h: LockHandle) -> Outcome {
    call(p.release(h).map_err(PluginError::backend), "release")
}

/// The key is free: `inspect` says so (when the plugin can) and another
/// instance takes it (and lets it go).
fn free_for_others(p: &dyn LockWait, other: &dyn LockWait, key: &str, what: &str) -> Outcome {
    if let Ok(info) = p.inspect(key) {
        if info.held {
            return fail(format!("{what}: inspect shows the key held: {info:?}"));
        }
    }
    match other.try_lock_as(key, LONG_TTL, None) {
        Ok(Some(h)) => release(other, h),
        Ok(None) => fail(format!("{what}: try_lock by another instance was contended")),
        Err(e) => fail(format!("{what}: try_lock by another instance failed: {e}")),
    }
}

fn wait_hands_off_after_release(ctx: &Ctx<'_>) -> Outcome {
    let (a, b) = (instance(ctx)?, instance(ctx)?);
    needs(&*a, "lock_wait")?;
    let key = ctx.key("k");
    let held = lock(&*a, &key, LONG_TTL, None)?;
    let wait = Wait::new(LONG_WAIT);
    let (early, released, got, started, returned) = thread::scope(|s| {
        let waiter = s.spawn(|| {
            let started = Instant::now();
            let got = b.lock_wait(&key, LONG_TTL, Some("conformance/waiter"), &wait);
            (got, started, Instant::now())
        });
        sleep_ms(QUEUE_GAP_MS);
        let early = waiter.is_finished();
        let released = a.release(held.clone());
        if released.is_err() || early {
            wait.cancel();
        }
        let (got, started, returned) = waiter.join().unwrap_or_else(|_| {
            (Err(PluginError::backend("the waiter panicked")), Instant::now(), Instant::now())
        });
        (early, released, got, started, returned)
    });
    if early {
        if let Ok(Some(got)) = &got {
            let _ = b.release(got.handle.clone());
        }
        return fail(format!("lock_wait returned {got:?} while another instance held the key"));
    }
    call(released.map_err(PluginError::backend), "release")?;
    let Some(got) = call(got, "lock_wait")? else {
        return fail(format!(
            "the waiter got nothing in {LONG_WAIT:?} though the holder released (cancelled: {})",
            wait.is_cancelled()
        ));
    };
    if got.handle.key != key {
        return fail(format!("lock_wait returned a handle for {:?}", got.handle.key));
    }
    if let (Some(old), new) = (held.fence, got.handle.fence) {
        if new.is_none_or(|n| n <= old) {
            return fail(format!("the waiter's fence {new:?} is not above the holder's {old}"));
        }
    }
    if got.sent + ROUNDING < started || got.sent > returned {
        return fail(format!(
            "Acquired::sent is {:?} after the wait began and {:?} before it returned; it must \
             lie between",
            got.sent.saturating_duration_since(started),
            returned.saturating_duration_since(got.sent)
        ));
    }
    if a.try_lock_as(&key, LONG_TTL, None).ok() != Some(None) {
        return fail("the waiter's lock was not contended for the old holder".into());
    }
    release(&*b, got.handle)?;
    free_for_others(&*b, &*a, &key, "after the waiter released")
}

fn wait_times_out_with_none(ctx: &Ctx<'_>) -> Outcome {
    let (a, b) = (instance(ctx)?, instance(ctx)?);
    needs(&*a, "lock_wait")?;
    let key = ctx.key("k");
    let held = lock(&*a, &key, LONG_TTL, None)?;
    let timeout = Duration::from_millis(300);
    let wait = Wait::new(timeout);
    let got = b.lock_wait(&key, LONG_TTL, None, &wait);
    let early = wait.deadline().saturating_duration_since(Instant::now());
    match got {
        Ok(None) => {}
        Ok(Some(got)) => {
            let _ = b.release(got.handle.clone());
            return fail(format!("a wait for a held key returned a lock: {:?}", got.handle));
        }
        Err(e) => return fail(format!("a timed-out wait is Ok(None), not an error: {e}")),
    }
    if early > ROUNDING {
        return fail(format!("the wait gave up {early:?} before its deadline"));
    }
    if wait.is_cancelled() {
        return fail("a timed-out wait reads as cancelled".into());
    }
    release(&*a, held)?;
    free_for_others(&*a, &*b, &key, "after a timed-out wait and the holder's release")?;
    // And a zero wait is one try: a free key is taken.
    match b.lock_wait(&key, LONG_TTL, None, &Wait::new(Duration::ZERO)) {
        Ok(Some(got)) => release(&*b, got.handle),
        other => fail(format!("a zero wait on a free key gave {other:?}, expected the lock")),
    }
}

fn wait_cancel_from_another_thread(ctx: &Ctx<'_>) -> Outcome {
    let (a, b, c) = (instance(ctx)?, instance(ctx)?, instance(ctx)?);
    needs(&*a, "lock_wait")?;
    let key = ctx.key("k");
    let held = lock(&*a, &key, LONG_TTL, None)?;
    let wait = Wait::new(LONG_WAIT);
    let (got, cancelled_at, returned) = thread::scope(|s| {
        let waiter = s.spawn(|| {
            let got = b.lock_wait(&key, LONG_TTL, None, &wait);
            (got, Instant::now())
        });
        sleep_ms(QUEUE_GAP_MS);
        // The cancel comes from a third thread, as a host's signal handler
        // or timer would send it.
        let cancelled_at = s
            .spawn(|| {
                let at = Instant::now();
                wait.cancel();
                at
            })
            .join()
            .unwrap_or_else(|_| Instant::now());
        let (got, returned) = waiter
            .join()
            .unwrap_or((Err(PluginError::backend("the waiter panicked")), Instant::now()));
        (got, cancelled_at, returned)
    });
    match got {
        Ok(None) => {}
        Ok(Some(got)) => {
            let _ = b.release(got.handle.clone());
            return fail(format!("a cancelled wait returned a lock: {:?}", got.handle));
        }
        Err(e) => return fail(format!("a cancelled wait is Ok(None), not an error: {e}")),
    }
    let took = returned.saturating_duration_since(cancelled_at);
    if took > CANCEL_BOUND {
        return fail(format!("the wait returned {took:?} after its cancel"));
    }
    if a.try_lock_as(&key, LONG_TTL, None).ok() != Some(None) {
        return fail("the holder's lock was not contended after the cancel".into());
    }
    release(&*a, held)?;
    // Nothing of the cancelled waiter remains to take the key.
    free_for_others(&*a, &*c, &key, "after a cancelled wait and the holder's release")
}

fn wait_fifo_order(ctx: &Ctx<'_>) -> Outcome {
    const WAITERS: usize = 4;
    let a = instance(ctx)?;
    needs(&*a, "lock_wait")?;
    needs(&*a, "fifo")?;
    let waiters: Vec<Box<dyn LockWait>> =
        (0..WAITERS).map(|_| instance(ctx)).collect::<Result<_, _>>()?;
    let key = ctx.key("k");
    let held = lock(&*a, &key, LONG_TTL, None)?;
    let order = Mutex::new(Vec::new());
    let wait = Wait::new(LONG_WAIT);
    let (early, released, results) = thread::scope(|s| {
        let threads: Vec<_> = waiters
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (key, order, wait) = (&key, &order, &wait);
                let t = s.spawn(move || -> Outcome {
                    let got = call(p.lock_wait(key, LONG_TTL, None, wait), "lock_wait")?;
                    let Some(got) = got else {
                        return fail(format!("waiter {i} got nothing (cancelled or timed out)"));
                    };
                    order.lock().unwrap_or_else(|p| p.into_inner()).push(i);
                    sleep_ms(10);
                    release(&**p, got.handle)
                });
                sleep_ms(QUEUE_GAP_MS);
                t
            })
            .collect();
        let early = order.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let released = a.release(held);
        if released.is_err() || !early.is_empty() {
            wait.cancel();
        }
        let results: Vec<Outcome> = threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| fail("a waiter panicked".into())))
            .collect();
        (early, released, results)
    });
    if !early.is_empty() {
        return fail(format!("waiters {early:?} got the lock while another instance held it"));
    }
    call(released.map_err(PluginError::backend), "release")?;
    for r in results {
        r?;
    }
    let order = order.into_inner().unwrap_or_else(|p| p.into_inner());
    let want: Vec<usize> = (0..WAITERS).collect();
    if order != want {
        return fail(format!(
            "waiters started {QUEUE_GAP_MS} ms apart got the lock in the order {order:?}"
        ));
    }
    Ok(())
}

fn wait_expiry_wakes_a_waiter(ctx: &Ctx<'_>) -> Outcome {
    let (a, b) = (instance(ctx)?, instance(ctx)?);
    needs(&*a, "lock_wait")?;
    let key = ctx.key("k");
    let short = ctx.options().short_ttl_ms;
    let held = lock(&*a, &key, short, None)?;
    // Nobody releases: only the lease's end can let the waiter in, long
    // before the wait's own deadline.
    let wait = Wait::new(Duration::from_millis(short + ctx.options().settle_ms + 10_000));
    let got = call(b.lock_wait(&key, LONG_TTL, None, &wait), "lock_wait")?;
    let Some(got) = got else {
        return fail(format!(
            "a waiter behind a {short} ms lease nobody renewed got nothing before its deadline"
        ));
    };
    if a.renew(&held).is_ok() {
        let _ = b.release(got.handle);
        return fail("the waiter returned a lock while the holder could still renew it".into());
    }
    if let (Some(old), new) = (held.fence, got.handle.fence) {
        if new.is_none_or(|n| n <= old) {
            return fail(format!("the waiter's fence {new:?} is not above the holder's {old}"));
        }
    }
    release(&*b, got.handle)
}

fn wait_refuses_bad_input(ctx: &Ctx<'_>) -> Outcome {
    let a = instance(ctx)?;
    needs(&*a, "lock_wait")?;
    let wait = Wait::new(Duration::from_secs(5));
    for (key, ttl, owner, names) in [
        (String::new(), LONG_TTL, None, "key"),
        (ctx.key("k"), 0, None, "ttl"),
        (ctx.key("k"), LONG_TTL, Some("o".repeat(crate::MAX_OWNER_BYTES + 1)), "owner"),
    ] {
        match a.lock_wait(&key, ttl, owner.as_deref(), &wait) {
            Err(e) if e.kind == ErrorKind::InvalidArgument && e.message.contains(names) => {}
            Ok(Some(got)) => {
                let _ = a.release(got.handle.clone());
                return fail(format!(
                    "a wait with a bad {names} returned a lock: {:?}",
                    got.handle
                ));
            }
            other => {
                return fail(format!(
                    "a wait with a bad {names} gave {other:?}, expected invalid_argument naming it"
                ));
            }
        }
    }
    Ok(())
}

fn renew_for_sets_the_remaining_time(ctx: &Ctx<'_>) -> Outcome {
    let (a, b) = (instance(ctx)?, instance(ctx)?);
    needs(&*a, "renew_ttl")?;
    let key = ctx.key("k");
    let (short, settle) = (ctx.options().short_ttl_ms, ctx.options().settle_ms);
    let h = lock(&*a, &key, LONG_TTL, None)?;
    call(a.renew_for(&h, short), "renew_for")?;
    if let Ok(info) = a.inspect(&key) {
        if info.expires_in_ms.is_some_and(|ms| ms > short) {
            return fail(format!("after renew_for({short}) inspect shows {info:?}"));
        }
    }
    // A plain renew goes back to the handle's TTL.
    call(a.renew(&h).map_err(PluginError::backend), "renew after renew_for")?;
    sleep_ms(short + settle);
    if b.try_lock_as(&key, LONG_TTL, None).ok() != Some(None) {
        return fail(format!(
            "renew after renew_for({short}) kept the short lease: the key was free after it"
        ));
    }
    call(a.renew_for(&h, short), "renew_for")?;
    sleep_ms(short + settle);
    let next = match b.try_lock_as(&key, LONG_TTL, None) {
        Ok(Some(next)) => next,
        other => {
            return fail(format!(
                "{short} ms after renew_for({short}) another instance's try_lock gave {other:?}"
            ));
        }
    };
    if a.renew_for(&h, LONG_TTL).is_ok() {
        return fail("renew_for of a lock another instance took over succeeded".into());
    }
    if a.try_lock_as(&key, LONG_TTL, None).ok() != Some(None) {
        return fail("the failed renew_for disturbed the new holder".into());
    }
    release(&*b, next)
}
