//! Running a scheduled job once across a cluster.
//!
//! A scheduler fires the same job on every node; [`run_exclusive`] makes
//! exactly one of them run it. The others see contention and skip quietly,
//! and a broken backend is an error the scheduler logs (and the job is
//! skipped rather than run twice). Jobs declare whether they need this with a
//! [`LockingHint`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::LockingPlugin;
use crate::guard::{GuardOptions, LockGuard, LockLost, ReleaseError};

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
}
