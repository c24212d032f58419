//! Running a scheduled job once across a cluster.
//!
//! A scheduler fires the same job on every node; [`run_exclusive`] makes
//! exactly one of them run it. The others see contention and skip quietly,
//! and a broken backend is an error the scheduler logs (and the job is
//! skipped rather than run twice). Jobs declare whether they need this with a
//! [`LockingHint`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::guard::{GuardOptions, LockGuard, LockLost, ReleaseError};
use crate::{ClockDrift, LockAdmin, LockWait, LockingPlugin};

/// Why [`run_exclusive`] did not simply run the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The backend failed (or the key/TTL is invalid): nobody knows who holds
    /// the lock, so the job was **not** run. Log it and skip this round.
    Backend(String),
    /// The job ran, but the lock was lost while it ran: another node may have
    /// run it at the same time. The job's return value is dropped; a job
    /// that can stop early checks [`LockGuard::is_lost`] as it goes.
    Lost(LockLost),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Backend(e) => write!(f, "lock backend failed, job not run: {e}"),
            RunError::Lost(lost) => write!(f, "job ran but {lost}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Runs `f` only if `key` can be locked right now, renewing the lock while
/// `f` runs and releasing it afterwards.
///
/// * `Ok(None)`: someone else holds the lock; `f` did not run. Skip.
/// * `Ok(Some(value))`: `f` ran under the lock and returned `value`.
/// * `Err(RunError::Backend)`: the backend failed; `f` did not run.
/// * `Err(RunError::Lost)`: `f` ran but the lock was lost meanwhile.
///
/// `f` gets the guard so a long job can check [`LockGuard::is_lost`] (or
/// listen on [`LockGuard::lost_channel`]) and stop, or pass
/// [`LockGuard::fence`] to the resource it writes. The loss is signalled at
/// the latest a stop margin (a third of the TTL by default) before the lease
/// ends, so a job that stops when told is done before anyone else can hold
/// the lock; [`run_exclusive_with`] sets the margin. A failed release after
/// `f` is not reported: the lease ends by itself when `ttl` runs out and no
/// one else could have held the lock meanwhile.
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use bext_locking::{run_exclusive, LockingPlugin, RunError};
/// # fn tick(plugin: &Arc<dyn LockingPlugin>) {
/// match run_exclusive(plugin, "jobs/nightly-report", Duration::from_secs(60), |_guard| {
///     // ... build the report ...
/// }) {
///     Ok(Some(())) => {}                           // we ran it
///     Ok(None) => {}                               // another node runs it
///     Err(e) => eprintln!("nightly-report: {e}"),  // log and skip
/// }
/// # }
/// ```
pub fn run_exclusive<T>(
    plugin: &Arc<dyn LockingPlugin>,
    key: &str,
    ttl: Duration,
    f: impl FnOnce(&LockGuard) -> T,
) -> Result<Option<T>, RunError> {
    run_exclusive_with(plugin, key, ttl, GuardOptions::default(), f)
}

/// [`run_exclusive`] with [`GuardOptions`]: the stop margin, the backend's
/// clock-drift allowance, the renewal interval. Options that cannot guard
/// `ttl` are a [`RunError::Backend`] and `f` does not run.
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use bext_locking::{run_exclusive_with, ClockDrift, GuardOptions, LockingPlugin};
/// # fn tick(plugin: &Arc<dyn LockingPlugin>) {
/// // Told of a loss at least 20 s before the 60 s lease could end.
/// let options = GuardOptions::default()
///     .stop_margin(Duration::from_secs(20))
///     .clock_drift(ClockDrift::REDLOCK);
/// let _ = run_exclusive_with(plugin, "jobs/rebuild", Duration::from_secs(60), options, |guard| {
///     let lost = guard.lost_channel();
///     // ... work in steps, checking `lost.try_recv().is_ok()` between them ...
/// # drop(lost);
/// });
/// # }
/// ```
pub fn run_exclusive_with<T>(
    plugin: &Arc<dyn LockingPlugin>,
    key: &str,
    ttl: Duration,
    options: GuardOptions,
    f: impl FnOnce(&LockGuard) -> T,
) -> Result<Option<T>, RunError> {
    let Some(guard) =
        LockGuard::acquire_with(plugin, key, ttl, options).map_err(RunError::Backend)?
    else {
        return Ok(None);
    };
    let value = f(&guard);
    match guard.release() {
        Err(ReleaseError::Lost(lost)) => Err(RunError::Lost(lost)),
        // A release that fails after a clean run changes nothing for the
        // caller: the lease ends with its TTL.
        Ok(()) | Err(ReleaseError::Backend(_)) => Ok(Some(value)),
    }
}

/// The capability a plugin lists in `describe` when it can set a held
/// lease's remaining time once: what a minimum hold needs.
pub const RENEW_TTL: &str = "renew_ttl";

/// Checks that `plugin` can keep a lock for `min_hold` after a job: a
/// `min_hold` of zero always passes (nothing is kept); otherwise the plugin
/// must list [`RENEW_TTL`] and `min_hold` must be a TTL the ABI allows. The
/// error says which, and is meant to be shown before anything is locked.
pub fn check_min_hold<P: LockAdmin + ?Sized>(plugin: &P, min_hold: Duration) -> Result<(), String> {
    if min_hold.is_zero() {
        return Ok(());
    }
    let ms = ceil_ms(min_hold);
    if ms > crate::MAX_TTL_MS {
        return Err(format!(
            "a minimum hold of {ms} ms is longer than the longest lease ({} ms)",
            crate::MAX_TTL_MS
        ));
    }
    if !plugin.capabilities().iter().any(|c| c == RENEW_TTL) {
        return Err(format!(
            "plugin `{}` cannot keep a lock past the job for a minimum hold: it does not list the \
             `{RENEW_TTL}` capability (setting a held lease's remaining time once), so the lock \
             would be freed as soon as the job ends",
            plugin.name()
        ));
    }
    Ok(())
}

/// How a job's lock ended, after [`finish_min_hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The minimum hold had passed: the lock was released.
    Released,
    /// The job ended early: the lock was left held, its lease set to end
    /// this long from now (the rest of the minimum hold, plus the
    /// backend's clock-drift allowance), and is not renewed any more.
    Kept(Duration),
}

/// Ends a job's lock, keeping it until `min_hold` after `acquired` (the
/// instant the lock was taken) when the job finished sooner.
///
/// When the hold has not passed yet, the guard stops renewing without
/// releasing ([`LockGuard::keep`]) and the lease's remaining time is set
/// once, with [`LockWait::renew_for`], to the rest of the hold plus
/// `drift`'s allowance (the backend expires leases on its own clock, which
/// may run fast); nothing waits for it, so the caller can exit at once.
/// Otherwise the lock is released as usual. A `min_hold` longer than the
/// TTL is fine: that is its point. Call [`check_min_hold`] before taking
/// the lock; a plugin without the capability fails here with
/// [`ReleaseError::Backend`], leaving the lease to end with its TTL.
pub fn finish_min_hold<P: LockWait + ?Sized>(
    plugin: &P,
    guard: LockGuard,
    acquired: Instant,
    min_hold: Duration,
    drift: &ClockDrift,
) -> Result<Finished, ReleaseError> {
    let left = (acquired + min_hold).saturating_duration_since(Instant::now());
    if left.is_zero() {
        return guard.release().map(|()| Finished::Released);
    }
    let handle = guard.keep().map_err(ReleaseError::Lost)?;
    let ms = ceil_ms(left).saturating_add(ceil_ms(drift.allowance(left))).min(crate::MAX_TTL_MS);
    match plugin.renew_for(&handle, ms) {
        Ok(()) => Ok(Finished::Kept(Duration::from_millis(ms))),
        Err(e) => Err(ReleaseError::Backend(format!(
            "could not keep `{}` for the minimum hold ({}); it frees itself when its TTL runs out",
            handle.key, e.message
        ))),
    }
}

/// Whole milliseconds, rounded up: a hold is never shorter than asked.
fn ceil_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// [`run_exclusive_with`] that keeps the lock for at least `min_hold`
/// after it was taken, even when `f` returns sooner (ShedLock's
/// `lockAtLeastFor`): a job that nodes fire at slightly different times
/// (clocks or schedulers that disagree) then runs once, not once per
/// node. When `f` finishes early the lock is left held with its lease set
/// to end when the hold does and this returns at once, without waiting.
/// `min_hold` may be longer than `ttl`; zero is [`run_exclusive_with`].
///
/// The plugin must list [`RENEW_TTL`] in its capabilities (checked before
/// locking: otherwise [`RunError::Backend`] says so and `f` does not run).
/// The clock-drift allowance added to the hold is Redlock's (1 % + 2 ms).
/// A failure to keep the lock after `f` ran is not reported (the lease then
/// ends with its TTL), as a failed release is not.
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use bext_locking::{run_exclusive_min_hold, GuardOptions, LockWait};
/// # fn tick<P: LockWait + 'static>(plugin: &Arc<P>) {
/// // Every node fires this at about 02:00; it runs once even if one node's
/// // clock is up to five minutes late.
/// let minute = Duration::from_secs(60);
/// let _ = run_exclusive_min_hold(plugin, "jobs/nightly", minute, 5 * minute, GuardOptions::default(), |_guard| {
///     // ... a job that takes seconds ...
/// });
/// # }
/// ```
pub fn run_exclusive_min_hold<P: LockWait + 'static, T>(
    plugin: &Arc<P>,
    key: &str,
    ttl: Duration,
    min_hold: Duration,
    options: GuardOptions,
    f: impl FnOnce(&LockGuard) -> T,
) -> Result<Option<T>, RunError> {
    check_min_hold(&**plugin, min_hold).map_err(RunError::Backend)?;
    let guarded: Arc<dyn LockingPlugin> = plugin.clone();
    let Some(guard) =
        LockGuard::acquire_with(&guarded, key, ttl, options).map_err(RunError::Backend)?
    else {
        return Ok(None);
    };
    let acquired = Instant::now();
    let value = f(&guard);
    match finish_min_hold(&**plugin, guard, acquired, min_hold, &ClockDrift::REDLOCK) {
        Err(ReleaseError::Lost(lost)) => Err(RunError::Lost(lost)),
        Ok(_) | Err(ReleaseError::Backend(_)) => Ok(Some(value)),
    }
}

/// Whether a job must run on one node of the cluster at a time.
///
/// A scheduler attaches one to each job and runs it with [`LockingHint::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LockingHint {
    /// The job must run once across the cluster: take the global lock, and
    /// skip the run when another node holds it or the backend is down.
    RequireGlobal,
    /// The job is per node (cleaning a local cache, say): run it every time
    /// without asking any backend.
    #[default]
    Local,
}

impl LockingHint {
    /// Whether this job needs the global lock.
    pub fn requires_global(self) -> bool {
        self == LockingHint::RequireGlobal
    }

    /// Runs `f` as the hint says.
    ///
    /// [`Local`](Self::Local) runs `f(None)` at once and never fails.
    /// [`RequireGlobal`](Self::RequireGlobal) behaves as [`run_exclusive`],
    /// giving `f` the guard; with no plugin configured it refuses to run the
    /// job (`Err(RunError::Backend)`) rather than run it on every node.
    pub fn run<T>(
        self,
        plugin: Option<&Arc<dyn LockingPlugin>>,
        key: &str,
        ttl: Duration,
        f: impl FnOnce(Option<&LockGuard>) -> T,
    ) -> Result<Option<T>, RunError> {
        match (self, plugin) {
            (LockingHint::Local, _) => Ok(Some(f(None))),
            (LockingHint::RequireGlobal, Some(plugin)) => {
                run_exclusive(plugin, key, ttl, |g| f(Some(g)))
            }
            (LockingHint::RequireGlobal, None) => Err(RunError::Backend(format!(
                "job `{key}` requires a global lock but no locking plugin is configured"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::testing::{Call, TestPlugin};

    const TTL: Duration = Duration::from_millis(900);

    fn setup() -> (Arc<TestPlugin>, Arc<dyn LockingPlugin>) {
        let test = Arc::new(TestPlugin::default());
        let plugin: Arc<dyn LockingPlugin> = test.clone();
        (test, plugin)
    }

    #[test]
    fn runs_the_job_under_the_lock_and_releases_it() {
        let (test, plugin) = setup();
        let out = run_exclusive(&plugin, "job", TTL, |g| {
            assert_eq!(test.holder("job").as_deref(), Some(g.handle().lock_id.as_str()));
            std::thread::sleep(TTL * 2);
            assert!(!g.is_lost());
            42
        });
        assert_eq!(out, Ok(Some(42)));
        assert_eq!(test.holder("job"), None, "not released");
        assert_eq!(test.count(&Call::Release), 1);
    }

    #[test]
    fn contention_skips_without_running() {
        let (_test, plugin) = setup();
        let _held = plugin.try_lock("job", 10_000).unwrap().unwrap();
        let out = run_exclusive(&plugin, "job", TTL, |_| panic!("ran while another holder had it"));
        assert_eq!(out, Ok(None::<()>));
    }

    #[test]
    fn backend_failure_is_an_error_and_nothing_runs() {
        let (test, plugin) = setup();
        test.fail_try_lock.store(true, Ordering::SeqCst);
        let out = run_exclusive(&plugin, "job", TTL, |_| panic!("ran without a lock"));
        match out {
            Err(RunError::Backend(e)) => assert!(e.contains("down"), "{e}"),
            other => panic!("expected a backend error, got {other:?}"),
        }
    }

    #[test]
    fn loss_during_the_job_is_reported() {
        let (test, plugin) = setup();
        let out = run_exclusive(&plugin, "job", TTL, |g| {
            test.steal("job");
            g.wait_lost(Duration::from_secs(10)).expect("loss not seen by the job");
        });
        match out {
            Err(RunError::Lost(lost)) => assert_eq!(lost.key, "job"),
            other => panic!("expected Lost, got {other:?}"),
        }
        assert_eq!(test.holder("job").as_deref(), Some("thief"), "the thief's lock was touched");
    }

    #[test]
    fn hints_pick_local_or_global() {
        let (test, plugin) = setup();
        assert_eq!(LockingHint::default(), LockingHint::Local);
        let out = LockingHint::Local.run(None, "job", TTL, |g| g.is_none());
        assert_eq!(out, Ok(Some(true)));
        assert!(test.log().is_empty(), "a local job asked the backend");

        let out = LockingHint::RequireGlobal.run(Some(&plugin), "job", TTL, |g| g.is_some());
        assert_eq!(out, Ok(Some(true)));
        assert_eq!(test.count(&Call::TryLock), 1);

        let out = LockingHint::RequireGlobal.run(None, "job", TTL, |_| panic!("ran unlocked"));
        assert!(matches!(out, Err(RunError::Backend(e)) if e.contains("no locking plugin")));
        assert!(LockingHint::RequireGlobal.requires_global());
        assert!(!LockingHint::Local.requires_global());
    }

    mod min_hold {
        use super::*;
        use crate::testing_wait::WaitPlugin;

        const HOLD: Duration = Duration::from_millis(1500);

        #[test]
        fn an_early_finish_keeps_the_lock_until_the_hold_ends_then_frees_it() {
            let plugin = Arc::new(WaitPlugin::default());
            let start = Instant::now();
            let out =
                run_exclusive_min_hold(&plugin, "job", TTL, HOLD, GuardOptions::default(), |g| {
                    g.fence()
                });
            let returned = start.elapsed();
            assert!(matches!(out, Ok(Some(Some(_)))), "{out:?}");
            assert!(returned < HOLD, "waited out the hold ({returned:?}) instead of returning");
            // Held past the TTL: the hold is longer than it.
            assert!(plugin.try_lock("job", 1000).unwrap().is_none(), "freed at once");
            let left = plugin.expires_in("job").expect("held");
            assert!(left > HOLD - returned - Duration::from_millis(50), "{left:?}");
            std::thread::sleep(left + Duration::from_millis(30));
            assert!(plugin.try_lock("job", 1000).unwrap().is_some(), "still held after the hold");
        }

        #[test]
        fn a_job_longer_than_the_hold_releases_as_usual() {
            let plugin = Arc::new(WaitPlugin::default());
            let hold = Duration::from_millis(100);
            let out =
                run_exclusive_min_hold(&plugin, "job", TTL, hold, GuardOptions::default(), |_| {
                    std::thread::sleep(hold * 2);
                });
            assert_eq!(out, Ok(Some(())));
            assert_eq!(plugin.expires_in("job"), None, "not released");
        }

        #[test]
        fn zero_is_a_plain_run_and_a_plugin_without_renew_ttl_is_refused_before_locking() {
            let plugin = Arc::new(WaitPlugin::default());
            plugin.no_renew_ttl.store(true, Ordering::SeqCst);
            let out = run_exclusive_min_hold(
                &plugin,
                "job",
                TTL,
                Duration::ZERO,
                GuardOptions::default(),
                |_| 1,
            );
            assert_eq!(out, Ok(Some(1)));
            assert_eq!(plugin.expires_in("job"), None);
            let out =
                run_exclusive_min_hold(&plugin, "job", TTL, HOLD, GuardOptions::default(), |_| {
                    panic!("ran although the hold cannot be kept")
                });
            match out {
                Err(RunError::Backend(e)) => assert!(e.contains("renew_ttl"), "{e}"),
                other => panic!("expected a refusal, got {other:?}"),
            }
            assert_eq!(plugin.expires_in("job"), None, "locked although refused");
        }

        #[test]
        fn a_hold_beyond_the_longest_lease_is_refused() {
            let plugin = WaitPlugin::default();
            let err =
                check_min_hold(&plugin, Duration::from_millis(crate::MAX_TTL_MS + 1)).unwrap_err();
            assert!(err.contains("longest lease"), "{err}");
            assert!(check_min_hold(&plugin, Duration::from_secs(3600)).is_ok());
        }

        #[test]
        fn keeping_a_lost_lock_reports_the_loss() {
            let plugin = Arc::new(WaitPlugin::default());
            let out =
                run_exclusive_min_hold(&plugin, "job", TTL, HOLD, GuardOptions::default(), |g| {
                    plugin.force_release("job", None).unwrap();
                    g.wait_lost(Duration::from_secs(10)).expect("loss not seen");
                });
            assert!(matches!(out, Err(RunError::Lost(_))), "{out:?}");
            assert_eq!(plugin.expires_in("job"), None, "a lost lock was kept");
        }
    }
}
