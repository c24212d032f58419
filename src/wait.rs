//! What ABI 1.2 adds: waiting for a lock without polling, cancellable from
//! another thread, and setting a held lease's remaining time once.
//!
//! [`Wait`] is one wait's deadline and cancellation, shared by the host that
//! starts the wait, the thread that may cancel it and the backend that
//! blocks on it. Backends block on their own notification (a condition
//! variable, a pub/sub message, a watch) and register a hook with
//! [`Wait::on_cancel`] that wakes that notification, so a cancel reaches a
//! waiter at once rather than at its next poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{LockAdmin, LockHandle, PluginError};

/// One wait for a lock: a deadline and a cancellation flag, cheap to clone
/// (clones share the flag). Cancel it from any thread with
/// [`cancel`](Self::cancel); everything blocked on it returns within
/// milliseconds.
#[derive(Clone)]
pub struct Wait {
    deadline: Instant,
    shared: Arc<Shared>,
}

struct Shared {
    cancelled: AtomicBool,
    hooks: Mutex<Hooks>,
    wake: Condvar,
}

#[derive(Default)]
struct Hooks {
    next_id: u64,
    waiting: Vec<(u64, Box<dyn FnOnce() + Send>)>,
    /// Set while `cancel` runs the hooks it took, so that a [`CancelHook`]
    /// dropped meanwhile waits for them: a hook never outlives its guard.
    running: bool,
}

impl Wait {
    /// A wait that times out `timeout` from now.
    pub fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Self::until(now.checked_add(timeout).unwrap_or(now + Duration::from_secs(86_400 * 366)))
    }

    /// A wait that times out at `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            shared: Arc::new(Shared {
                cancelled: AtomicBool::new(false),
                hooks: Mutex::new(Hooks::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// When the wait gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::Acquire)
    }

    /// Whether the deadline has passed.
    pub fn timed_out(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Whether the waiter should stop: cancelled or timed out.
    pub fn is_over(&self) -> bool {
        self.is_cancelled() || self.timed_out()
    }

    fn hooks(&self) -> MutexGuard<'_, Hooks> {
        // A hook that panicked poisons nothing we rely on: the list stays
        // consistent, so keep using it.
        self.shared.hooks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels the wait: sets the flag, wakes [`sleep`](Self::sleep)ers and
    /// runs every registered hook once. Idempotent.
    pub fn cancel(&self) {
        let taken = {
            let mut hooks = self.hooks();
            if self.shared.cancelled.swap(true, Ordering::AcqRel) {
                return;
            }
            hooks.running = true;
            std::mem::take(&mut hooks.waiting)
        };
        self.shared.wake.notify_all();
        // Run outside the lock, so a hook may use this wait; a guard
        // dropped meanwhile waits for `running` to clear.
        for (_, hook) in taken {
            hook();
        }
        self.hooks().running = false;
        self.shared.wake.notify_all();
    }

    /// Sleeps for `d` (never past the deadline), returning early when the
    /// wait is cancelled. Returns whether the waiter should go on (neither
    /// cancelled nor timed out).
    pub fn sleep(&self, d: Duration) -> bool {
        let until = (Instant::now() + d).min(self.deadline);
        let mut hooks = self.hooks();
        while !self.is_cancelled() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            hooks = match self.shared.wake.wait_timeout(hooks, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        drop(hooks);
        !self.is_over()
    }

    /// Runs `hook` when the wait is cancelled (at once, on this thread, if
    /// it already is), on the cancelling thread. Dropping the returned
    /// guard unregisters the hook, and waits for it if it is running, so a
    /// hook may point to what lives as long as its guard (say, the
    /// instance to send a cancel to). A backend registers one around each blocking
    /// step that needs waking (closing a subscription, notifying a
    /// condition variable); it must not drop the guard while holding a
    /// lock the hook takes.
    pub fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) -> CancelHook {
        let mut hooks = self.hooks();
        if self.is_cancelled() {
            drop(hooks);
            hook();
            return CancelHook { wait: None, id: 0 };
        }
        hooks.next_id += 1;
        let id = hooks.next_id;
        hooks.waiting.push((id, Box::new(hook)));
        CancelHook { wait: Some(self.clone()), id }
    }
}

impl std::fmt::Debug for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait")
            .field("remaining", &self.remaining())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A hook registered by [`Wait::on_cancel`]; dropping it unregisters the
/// hook (it then never runs).
#[must_use = "dropping the guard unregisters the hook at once"]
pub struct CancelHook {
    wait: Option<Wait>,
    id: u64,
}

impl Drop for CancelHook {
    fn drop(&mut self) {
        if let Some(wait) = self.wait.take() {
            let mut hooks = wait.hooks();
            hooks.waiting.retain(|(id, _)| *id != self.id);
            while hooks.running {
                hooks = match wait.shared.wake.wait(hooks) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
        }
    }
}

/// A lock taken by a wait: the handle, and when the request that took it
/// was sent.
///
/// The lease may have started any time after `sent`, so a guard that must
/// stop before the lease can pass on counts from `sent`, not from when the
/// wait returned: a wait of minutes ends with a lease as old as its last
/// request, not as old as the wait.
#[derive(Debug, Clone)]
pub struct Acquired {
    /// The lock.
    pub handle: LockHandle,
    /// When the request that took the lock was sent, by this process's
    /// monotonic clock.
    pub sent: Instant,
}

/// How a plugin waits, as it says in `describe`'s `capabilities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitMode {
    /// The plugin has the `lock_wait` slot: a release or expiry wakes the
    /// waiter (`"lock_wait"`).
    Notified,
    /// As [`Notified`](Self::Notified), and waiters get the lock in the
    /// order they started waiting (`"lock_wait"` and `"fifo"`).
    Fifo,
    /// No `lock_wait` slot (a 1.0 or 1.1 plugin) or the instance's mode
    /// refuses it: the host polls `try_lock` with jittered backoff.
    Polling,
}

impl WaitMode {
    /// How a plugin that lists `capabilities` in `describe` waits.
    pub fn of<S: AsRef<str>>(capabilities: &[S]) -> Self {
        let has = |c: &str| capabilities.iter().any(|x| x.as_ref() == c);
        match (has("lock_wait"), has("fifo")) {
            (true, true) => Self::Fifo,
            (true, false) => Self::Notified,
            _ => Self::Polling,
        }
    }
}

/// ABI 1.2's calls, beside [`LockAdmin`]: implemented by the loader's
/// instances and by the backend kit's in-process wrapper.
pub trait LockWait: LockAdmin {
    /// How [`lock_wait`](Self::lock_wait) waits on this instance.
    fn wait_mode(&self) -> WaitMode;

    /// Waits until `key` is ours (`Ok(Some)`), or until `wait` times out or
    /// is cancelled (`Ok(None)`: check [`Wait::is_cancelled`] to tell them
    /// apart). `Err` is a broken backend, as for `try_lock`. A plugin
    /// without the slot is polled with jittered backoff.
    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError>;

    /// Sets the remaining time of a lock this handle holds to `ttl_ms` from
    /// now, once (later renewals use the handle's own TTL again). Plugins
    /// that can list `"renew_ttl"` in `capabilities`; the others answer
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) and the
    /// lock is left as it was.
    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError>;
}

impl<T: LockWait + ?Sized> LockWait for Box<T> {
    fn wait_mode(&self) -> WaitMode {
        (**self).wait_mode()
    }
    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        (**self).lock_wait(key, ttl_ms, owner, wait)
    }
    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        (**self).renew_for(handle, ttl_ms)
    }
}

/// The first pause of a polling wait.
pub const POLL_FIRST: Duration = Duration::from_millis(10);
/// The longest pause of a polling wait.
pub const POLL_MAX: Duration = Duration::from_millis(250);

/// Waits by polling `attempt` with jittered exponential backoff from
/// [`POLL_FIRST`] to `cap`: what hosts do for a plugin without `lock_wait`,
/// and the floor of backends that have no notification of their own.
/// `attempt` returns the lock, or `None` with an optional hint of when the
/// holder's lease ends (the next try is then no later than that).
pub fn poll_wait<T>(
    wait: &Wait,
    cap: Duration,
    mut attempt: impl FnMut() -> Result<Option<T>, PluginError>,
    mut hint: impl FnMut() -> Option<Duration>,
) -> Result<Option<T>, PluginError> {
    let mut backoff = POLL_FIRST.min(cap);
    loop {
        if wait.is_cancelled() {
            return Ok(None);
        }
        if let Some(got) = attempt()? {
            return Ok(Some(got));
        }
        if wait.is_over() {
            return Ok(None);
        }
        // Full jitter on the upper half: waiters that collided once do not
        // collide again in step.
        let half = backoff / 2;
        let jitter = Duration::from_nanos(jitter_u64() % (half.as_nanos().max(1) as u64));
        let mut pause = half + jitter;
        if let Some(ends) = hint() {
            pause = pause.min(ends + Duration::from_millis(1));
        }
        backoff = (backoff * 2).min(cap);
        if !wait.sleep(pause) && wait.is_cancelled() {
            return Ok(None);
        }
    }
}

/// A cheap per-call random number for jitter (`RandomState` draws fresh
/// keys each time).
fn jitter_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_wakes_a_sleeper_and_runs_hooks_once() {
        let wait = Wait::new(Duration::from_secs(60));
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = ran.clone();
        let _hook = wait.on_cancel(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let sleeper = {
            let wait = wait.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let go_on = wait.sleep(Duration::from_secs(30));
                (go_on, start.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        wait.cancel();
        wait.cancel();
        let (go_on, slept) = sleeper.join().unwrap();
        assert!(!go_on);
        assert!(slept < Duration::from_secs(10), "slept {slept:?} after a cancel");
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_dropped_hook_never_runs_and_a_late_one_runs_at_once() {
        let wait = Wait::new(Duration::from_secs(60));
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        drop(wait.on_cancel(move || flag.store(true, Ordering::SeqCst)));
        wait.cancel();
        assert!(!ran.load(Ordering::SeqCst));
        let flag = ran.clone();
        let _late = wait.on_cancel(move || flag.store(true, Ordering::SeqCst));
        assert!(ran.load(Ordering::SeqCst));
    }

    #[test]
    fn sleep_stops_at_the_deadline() {
        let wait = Wait::new(Duration::from_millis(20));
        assert!(!wait.sleep(Duration::from_secs(30)));
        assert!(wait.timed_out() && !wait.is_cancelled());
    }

    #[test]
    fn poll_wait_takes_the_lock_when_it_frees_and_stops_on_cancel() {
        let wait = Wait::new(Duration::from_secs(60));
        let mut tries = 0;
        let got = poll_wait(
            &wait,
            POLL_MAX,
            || {
                tries += 1;
                Ok((tries == 3).then_some(tries))
            },
            || None,
        );
        assert_eq!(got.unwrap(), Some(3));
        wait.cancel();
        assert_eq!(poll_wait::<u32>(&wait, POLL_MAX, || Ok(None), || None).unwrap(), None);
    }
}
