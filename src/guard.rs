//! The auto-renewing guard: hold a lock for as long as a job runs.
//!
//! A [`LockGuard`] owns a [`LockHandle`] and keeps its lease alive from a
//! background thread, renewing it every third of the TTL by default. The
//! moment a renewal fails, or the lease runs out while a renewal is still
//! waiting for an answer, the guard declares the lock **lost**: it stops
//! renewing for good (a lost lock is never "renewed" back, which could make
//! two holders), records why, and tells everyone who asked (a channel, a
//! callback, [`LockGuard::wait_lost`]). The protected work must stop then.
//!
//! Dropping the guard (or calling [`LockGuard::release`]) stops the renewal
//! threads, joins them, and only then releases the lock, so no renewal can
//! ever run after the release.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{LockHandle, LockingPlugin};

/// Why a guarded lock was lost. Sent to every watcher of a [`LockGuard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLost {
    /// The key that was locked.
    pub key: String,
    /// The `lock_id` of the acquisition that was lost.
    pub lock_id: String,
    /// What happened: the backend's renew error, or that the lease ran out
    /// before a renewal was confirmed.
    pub reason: String,
}

impl fmt::Display for LockLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lock on `{}` was lost: {}", self.key, self.reason)
    }
}

impl std::error::Error for LockLost {}

/// How a [`LockGuard`] renews.
#[derive(Debug, Clone)]
pub struct GuardOptions {
    renew_divisor: u32,
    lease_started: Option<Instant>,
}

impl Default for GuardOptions {
    fn default() -> Self {
        Self { renew_divisor: 3, lease_started: None }
    }
}

impl GuardOptions {
    /// Renew every `ttl / divisor` (default 3: a renewal that is slow or
    /// lost in transit still leaves a third of the lease for the next one).
    /// Values below 2 are treated as 2: renewing only when the lease ends
    /// would lose every lock.
    pub fn renew_divisor(mut self, divisor: u32) -> Self {
        self.renew_divisor = divisor.max(2);
        self
    }

    /// When the lease began: the instant just *before* the `try_lock` request
    /// was sent. The guard counts the lease from there, so it never believes
    /// a lease lasts longer than it does. Defaults to the guard's creation,
    /// which is right when the guard is made immediately after `try_lock`;
    /// [`LockGuard::acquire`] sets it for you.
    pub fn lease_started(mut self, at: Instant) -> Self {
        self.lease_started = Some(at);
        self
    }
}

type Callback = Box<dyn FnOnce(&LockLost) + Send>;

enum Watcher {
    Channel(Sender<LockLost>),
    Callback(Callback),
}

impl Watcher {
    fn notify(self, lost: &LockLost) {
        match self {
            // A receiver that went away no longer wants to know.
            Watcher::Channel(tx) => drop(tx.send(lost.clone())),
            Watcher::Callback(f) => {
                // A panicking callback must not take the renewal thread (and
                // with it the other watchers) down.
                let _ = catch_unwind(AssertUnwindSafe(|| f(lost)));
            }
        }
    }
}

struct State {
    lost: Option<LockLost>,
    /// When the lease ends unless a renewal lands first, by our own clock.
    deadline: Instant,
    renewals: u64,
    watchers: Vec<Watcher>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn renewed(&self, deadline: Instant) {
        let mut state = self.lock();
        state.deadline = deadline;
        state.renewals += 1;
    }

    /// Records the loss (once) and notifies every watcher outside the lock.
    fn lose(&self, lost: LockLost) {
        let watchers = {
            let mut state = self.lock();
            if state.lost.is_some() {
                return;
            }
            state.lost = Some(lost.clone());
            std::mem::take(&mut state.watchers)
        };
        self.changed.notify_all();
        for w in watchers {
            w.notify(&lost);
        }
    }
}

enum Event {
    Stop,
    Renewed(Result<(), String>),
}

/// A held lock whose lease is renewed in the background until it is dropped.
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use bext_locking::{LockGuard, LockingPlugin};
/// fn nightly(plugin: &Arc<dyn LockingPlugin>) -> Result<(), Box<dyn std::error::Error>> {
///     let Some(guard) = LockGuard::acquire(plugin, "jobs/nightly", Duration::from_secs(30))? else {
///         return Ok(()); // another node runs it
///     };
///     for _step in 0..10 {
///         if guard.is_lost() {
///             return Err("lost the lock; stopping".into());
///         }
///         // ... one step of the job ...
///     }
///     guard.release()?;
///     Ok(())
/// }
/// ```
///
/// Two threads work for each guard: one keeps time and decides, the other
/// makes the (blocking) renew calls. Splitting them lets the guard declare
/// the lock lost when the lease runs out even while a renew call is stuck.
pub struct LockGuard {
    plugin: Arc<dyn LockingPlugin>,
    handle: LockHandle,
    shared: Arc<Shared>,
    events: Sender<Event>,
    timer: Option<JoinHandle<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("backend", &self.plugin.name())
            .field("handle", &self.handle)
            .field("lost", &self.lost())
            .finish()
    }
}

impl LockGuard {
    /// Tries once to acquire `key` and, on success, guards it with default
    /// options. `Ok(None)` is contention; `Err` is a backend failure or a
    /// key/TTL outside [`crate::limits`].
    pub fn acquire(
        plugin: &Arc<dyn LockingPlugin>,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Self>, String> {
        Self::acquire_with(plugin, key, ttl, GuardOptions::default())
    }

    /// [`acquire`](Self::acquire) with options; the lease is counted from
    /// just before the request.
    pub fn acquire_with(
        plugin: &Arc<dyn LockingPlugin>,
        key: &str,
        ttl: Duration,
        options: GuardOptions,
    ) -> Result<Option<Self>, String> {
        let ttl_ms = duration_ms(ttl);
        crate::validate_lock_request(key, ttl_ms)?;
        let started = Instant::now();
        Ok(plugin
            .try_lock(key, ttl_ms)?
            .map(|h| Self::with_options(Arc::clone(plugin), h, options.lease_started(started))))
    }

    /// Guards a handle that `plugin` just handed out, with default options.
    pub fn new(plugin: Arc<dyn LockingPlugin>, handle: LockHandle) -> Self {
        Self::with_options(plugin, handle, GuardOptions::default())
    }

    /// Guards a handle that `plugin` handed out.
    pub fn with_options(
        plugin: Arc<dyn LockingPlugin>,
        handle: LockHandle,
        options: GuardOptions,
    ) -> Self {
        let started = options.lease_started.unwrap_or_else(Instant::now);
        let ttl = Duration::from_millis(handle.ttl_ms);
        let every = (ttl / options.renew_divisor).max(Duration::from_millis(1));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                lost: None,
                deadline: started + ttl,
                renewals: 0,
                watchers: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        let (events_tx, events_rx) = mpsc::channel();
        let (renew_tx, renew_rx) = mpsc::channel::<()>();

        let renewer = {
            let (plugin, handle, events) = (Arc::clone(&plugin), handle.clone(), events_tx.clone());
            thread::Builder::new()
                .name("bext-lock-renew".into())
                .spawn(move || renew_loop(&*plugin, &handle, &renew_rx, &events))
                .expect("spawning the renewal thread")
        };
        let timer = {
            let shared = Arc::clone(&shared);
            let ids = (handle.key.clone(), handle.lock_id.clone());
            thread::Builder::new()
                .name("bext-lock-guard".into())
                .spawn(move || {
                    let timing = Timing { ttl, every, deadline: started + ttl };
                    if let Some(reason) = timer_loop(timing, &shared, &events_rx, &renew_tx) {
                        shared.lose(LockLost { key: ids.0, lock_id: ids.1, reason });
                    }
                })
                .expect("spawning the guard thread")
        };
        Self {
            plugin,
            handle,
            shared,
            events: events_tx,
            timer: Some(timer),
            renewer: Some(renewer),
        }
    }

    /// The handle being guarded (its `fence` is what a protected resource
    /// should check).
    pub fn handle(&self) -> &LockHandle {
        &self.handle
    }

    /// The locked key.
    pub fn key(&self) -> &str {
        &self.handle.key
    }

    /// The fence of this acquisition, when the backend fences.
    pub fn fence(&self) -> Option<u64> {
        self.handle.fence
    }

    /// How many renewals have succeeded so far.
    pub fn renewals(&self) -> u64 {
        self.shared.lock().renewals
    }

    /// Whether the lock has been lost. Also true as soon as the lease has
    /// run out by the guard's own clock, even if the renewal thread has not
    /// got round to saying so.
    pub fn is_lost(&self) -> bool {
        self.lost().is_some()
    }

    /// Why the lock was lost, or `None` while it is held.
    pub fn lost(&self) -> Option<LockLost> {
        let state = self.shared.lock();
        match &state.lost {
            Some(lost) => Some(lost.clone()),
            None if Instant::now() >= state.deadline => Some(self.expired()),
            None => None,
        }
    }

    fn expired(&self) -> LockLost {
        LockLost {
            key: self.handle.key.clone(),
            lock_id: self.handle.lock_id.clone(),
            reason: format!(
                "the lease ({} ms) ran out before a renewal was confirmed",
                self.handle.ttl_ms
            ),
        }
    }

    /// Blocks until the lock is lost (returning why) or `timeout` passes
    /// (returning `None`).
    pub fn wait_lost(&self, timeout: Duration) -> Option<LockLost> {
        let until = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some(lost) = &state.lost {
                return Some(lost.clone());
            }
            let now = Instant::now();
            if now >= state.deadline {
                return Some(self.expired());
            }
            if now >= until {
                return None;
            }
            let wait = until.min(state.deadline) - now;
            state = self
                .shared
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A channel that receives one [`LockLost`] when the lock is lost
    /// (at once if it already is). Nothing is ever sent while it is held.
    pub fn lost_channel(&self) -> Receiver<LockLost> {
        let (tx, rx) = mpsc::channel();
        self.watch(Watcher::Channel(tx));
        rx
    }

    /// Calls `f` once when the lock is lost (at once, on this thread, if it
    /// already is). It runs on the guard's thread: keep it short, e.g. send
    /// a message or set a flag. It is never called if the guard is released
    /// first.
    pub fn on_lost(&self, f: impl FnOnce(&LockLost) + Send + 'static) {
        self.watch(Watcher::Callback(Box::new(f)));
    }

    fn watch(&self, watcher: Watcher) {
        let mut state = self.shared.lock();
        match state.lost.clone() {
            Some(lost) => {
                drop(state);
                watcher.notify(&lost);
            }
            None => state.watchers.push(watcher),
        }
    }

    /// Stops renewing, joins the threads and returns why the lock was lost,
    /// if it was.
    fn stop(&mut self) -> Option<LockLost> {
        // The timer may already have exited (after a loss): then the send
        // fails, which is fine.
        let _ = self.events.send(Event::Stop);
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
        // The timer dropped the renewer's request channel on its way out, so
        // the renewer ends after its current call, if any.
        if let Some(r) = self.renewer.take() {
            let _ = r.join();
        }
        self.shared.watchers_drop();
        self.lost()
    }

    /// Stops renewing and releases the lock.
    ///
    /// Fails with [`ReleaseError::Lost`] if the lock was lost (it is then
    /// not released: it is no longer ours to release), or with
    /// [`ReleaseError::Backend`] if the release call failed (the lease then
    /// ends by itself when its TTL runs out).
    pub fn release(mut self) -> Result<(), ReleaseError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), ReleaseError> {
        if self.timer.is_none() && self.renewer.is_none() {
            return Ok(()); // already finished
        }
        if let Some(lost) = self.stop() {
            return Err(ReleaseError::Lost(lost));
        }
        self.plugin.release(self.handle.clone()).map_err(ReleaseError::Backend)
    }
}

/// Why [`LockGuard::release`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseError {
    /// The lock had been lost before the release; nothing was released.
    Lost(LockLost),
    /// The backend's release call failed; the lease ends with its TTL.
    Backend(String),
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::Lost(lost) => lost.fmt(f),
            ReleaseError::Backend(e) => write!(f, "release failed: {e}"),
        }
    }
}

impl std::error::Error for ReleaseError {}

impl Shared {
    /// Watchers are dropped once the guard stops, so a channel receiver sees
    /// the sender go away instead of waiting forever.
    fn watchers_drop(&self) {
        let watchers = std::mem::take(&mut self.lock().watchers);
        drop(watchers);
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Nothing to report from a destructor: a failed release ends with
        // the TTL, and a loss has been reported to the watchers already.
        let _ = self.finish();
    }
}

struct Timing {
    ttl: Duration,
    every: Duration,
    deadline: Instant,
}

/// Keeps time: asks for a renewal every `every`, and returns the reason the
/// lock was lost, or `None` when told to stop.
fn timer_loop(
    mut t: Timing,
    shared: &Shared,
    events: &Receiver<Event>,
    renew: &Sender<()>,
) -> Option<String> {
    let mut next = t.deadline - t.ttl + t.every;
    // The instant the renewal in flight was requested, if one is.
    let mut pending: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= t.deadline {
            return Some(format!(
                "the lease ({} ms) ran out before a renewal was confirmed",
                t.ttl.as_millis()
            ));
        }
        if pending.is_none() && now >= next {
            pending = Some(now);
            if renew.send(()).is_err() {
                return Some("the renewal thread stopped".to_owned());
            }
            continue;
        }
        let wake = if pending.is_some() { t.deadline } else { next.min(t.deadline) };
        match events.recv_timeout(wake - now) {
            Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => return None,
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Event::Renewed(Err(e))) => return Some(e),
            Ok(Event::Renewed(Ok(()))) => {
                // The backend restarted the lease no earlier than the
                // request was sent, so counting from then never overstates it.
                let sent = pending.take().unwrap_or(now);
                t.deadline = sent + t.ttl;
                next = sent + t.every;
                shared.renewed(t.deadline);
            }
        }
    }
}

/// Makes one renew call per request until the timer goes away.
fn renew_loop(
    plugin: &dyn LockingPlugin,
    handle: &LockHandle,
    requests: &Receiver<()>,
    events: &Sender<Event>,
) {
    for () in requests {
        let result = catch_unwind(AssertUnwindSafe(|| plugin.renew(handle)))
            .unwrap_or_else(|_| Err("renew panicked".to_owned()));
        if events.send(Event::Renewed(result)).is_err() {
            return;
        }
    }
}

/// Milliseconds of `d`, saturating (limits reject anything that large).
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::testing::{Call, TestPlugin};

    /// Short, but with room for a renewal thread delayed by a loaded machine.
    const TTL: Duration = Duration::from_millis(300);
    /// Long enough for any loss to be reported on a loaded machine.
    const PATIENCE: Duration = Duration::from_secs(10);

    fn setup() -> (Arc<TestPlugin>, Arc<dyn LockingPlugin>) {
        let test = Arc::new(TestPlugin::default());
        let plugin: Arc<dyn LockingPlugin> = test.clone();
        (test, plugin)
    }

    fn guard(plugin: &Arc<dyn LockingPlugin>, key: &str) -> LockGuard {
        LockGuard::acquire(plugin, key, TTL).unwrap().expect("the key is free")
    }

    #[test]
    fn renewal_keeps_the_lock_past_its_ttl() {
        let (test, plugin) = setup();
        let g = guard(&plugin, "k");
        thread::sleep(TTL * 4);
        assert!(!g.is_lost(), "lost: {:?}", g.lost());
        assert_eq!(test.holder("k").as_deref(), Some(g.handle().lock_id.as_str()));
        assert!(plugin.try_lock("k", 1000).unwrap().is_none(), "the lease expired");
        assert!(g.renewals() >= 3, "only {} renewals in 4 TTLs", g.renewals());
        g.release().unwrap();
    }

    #[test]
    fn renews_at_a_third_of_the_ttl_by_default() {
        let (test, plugin) = setup();
        let ttl = Duration::from_millis(600);
        let g = LockGuard::acquire(&plugin, "k", ttl).unwrap().unwrap();
        // The first renewal is due at 200 ms, and no earlier.
        thread::sleep(Duration::from_millis(120));
        assert_eq!(test.count(&Call::RenewStart), 0, "renewed before a third of the TTL");
        let until = Instant::now() + PATIENCE;
        while g.renewals() == 0 && Instant::now() < until {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(g.renewals() >= 1);
        drop(g);
    }

    #[test]
    fn drop_releases_and_stops_renewing() {
        let (test, plugin) = setup();
        let g = guard(&plugin, "k");
        thread::sleep(TTL / 2);
        drop(g);
        assert_eq!(test.count(&Call::Release), 1);
        assert_eq!(test.holder("k"), None, "drop did not release");
        assert!(plugin.try_lock("k", 1000).unwrap().is_some(), "the key is not free after drop");
        let renews = test.count(&Call::RenewStart);
        thread::sleep(TTL);
        assert_eq!(test.count(&Call::RenewStart), renews, "renewed after the guard was dropped");
    }

    #[test]
    fn no_renewal_runs_after_the_release() {
        let (test, plugin) = setup();
        // Each renewal takes a while, so one is likely in flight at drop.
        test.set_renew_delay(Duration::from_millis(30));
        let g = guard(&plugin, "k");
        thread::sleep(Duration::from_millis(70));
        drop(g);
        thread::sleep(Duration::from_millis(100));
        let log = test.log();
        let release = log.iter().position(|c| *c == Call::Release).expect("released");
        assert!(
            !log[release..].iter().any(|c| matches!(c, Call::RenewStart | Call::RenewEnd(_))),
            "a renewal overlapped or followed the release: {log:?}"
        );
    }

    #[test]
    fn renewal_failure_is_lost_at_once_and_never_retried() {
        let (test, plugin) = setup();
        let g = guard(&plugin, "k");
        let rx = g.lost_channel();
        test.steal("k");
        let lost = rx.recv_timeout(PATIENCE).expect("loss was not reported");
        assert!(g.is_lost());
        assert_eq!(lost.key, "k");
        assert_eq!(lost.lock_id, g.handle().lock_id);
        assert!(lost.reason.contains("no longer ours"), "{lost}");
        // The failed renewal is the last one: no retry that could win the key back.
        let renews = test.count(&Call::RenewStart);
        thread::sleep(TTL * 2);
        assert_eq!(test.count(&Call::RenewStart), renews, "renewal retried after the loss");
        assert_eq!(test.holder("k").as_deref(), Some("thief"));
    }

    #[test]
    fn a_lost_lock_is_not_released() {
        let (test, plugin) = setup();
        let g = guard(&plugin, "k");
        test.steal("k");
        assert!(g.wait_lost(PATIENCE).is_some());
        match g.release() {
            Err(ReleaseError::Lost(lost)) => {
                assert!(lost.to_string().contains("was lost"), "{lost}")
            }
            other => panic!("expected Lost, got {other:?}"),
        }
        assert_eq!(test.count(&Call::Release), 0, "released a lock that was no longer ours");
        assert_eq!(test.holder("k").as_deref(), Some("thief"));
    }

    #[test]
    fn callbacks_and_channels_hear_of_the_loss_once() {
        let (test, plugin) = setup();
        let g = guard(&plugin, "k");
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        g.on_lost(move |lost| {
            assert_eq!(lost.key, "k");
            c.fetch_add(1, Ordering::SeqCst);
        });
        let before = g.lost_channel();
        assert_eq!(g.wait_lost(TTL / 10), None, "lost while held");
        test.steal("k");
        before.recv_timeout(PATIENCE).expect("the channel heard nothing");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Watchers added after the loss hear at once.
        let after = g.lost_channel();
        assert!(after.try_recv().is_ok());
        let late = Arc::new(AtomicUsize::new(0));
        let l = Arc::clone(&late);
        g.on_lost(move |_| {
            l.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(late.load(Ordering::SeqCst), 1);
        drop(g);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(before.try_recv().is_err(), "more than one loss message");
    }

    #[test]
    fn a_hung_renewal_is_lost_when_the_lease_runs_out() {
        let (test, plugin) = setup();
        // Renewals never answer within the lease.
        test.set_renew_delay(TTL * 3);
        let g = guard(&plugin, "k");
        let rx = g.lost_channel();
        let lost = rx.recv_timeout(PATIENCE).expect("the loss was not reported");
        assert!(lost.reason.contains("ran out"), "{lost}");
        // Reported while the renew call was still stuck, not after it returned.
        assert_eq!(test.renews_ended(), 0, "the loss waited for the hung renewal");
        assert_eq!(test.count(&Call::RenewStart), 1);
        drop(g);
        assert_eq!(test.count(&Call::Release), 0);
    }

    #[test]
    fn the_release_waits_for_a_hung_renewal_thread() {
        let (test, plugin) = setup();
        test.set_renew_delay(Duration::from_millis(200));
        let g = LockGuard::acquire(&plugin, "k", Duration::from_millis(900)).unwrap().unwrap();
        // The first renewal starts at 300 ms and is still running at 350 ms.
        let until = Instant::now() + PATIENCE;
        while test.count(&Call::RenewStart) == 0 && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        g.release().unwrap();
        let started = test.count(&Call::RenewStart);
        assert_eq!(test.renews_ended(), started, "the renewal thread was not joined");
        assert_eq!(test.log().last(), Some(&Call::Release));
    }

    #[test]
    fn a_panicking_renewal_is_a_loss() {
        let (test, plugin) = setup();
        test.panic_renew.store(true, Ordering::SeqCst);
        // A long lease: printing the panic (with a backtrace) takes a while.
        let g = LockGuard::acquire_with(
            &plugin,
            "k",
            Duration::from_secs(30),
            GuardOptions::default().renew_divisor(300),
        )
        .unwrap()
        .unwrap();
        let lost = g.wait_lost(PATIENCE).expect("no loss");
        assert!(lost.reason.contains("panicked"), "{lost}");
    }

    #[test]
    fn lease_is_counted_from_before_the_request() {
        let (_test, plugin) = setup();
        let handle = plugin.try_lock("k", 100).unwrap().unwrap();
        // A lease that began long ago is over, whatever the backend says.
        let started = Instant::now() - Duration::from_millis(500);
        let g = LockGuard::with_options(
            Arc::clone(&plugin),
            handle,
            GuardOptions::default().lease_started(started),
        );
        assert!(g.is_lost());
        assert!(g.wait_lost(Duration::ZERO).is_some());
    }

    #[test]
    fn invalid_requests_are_errors_not_contention() {
        let (test, plugin) = setup();
        assert!(LockGuard::acquire(&plugin, "", TTL).is_err());
        assert!(LockGuard::acquire(&plugin, "k", Duration::ZERO).is_err());
        test.fail_try_lock.store(true, Ordering::SeqCst);
        let err = LockGuard::acquire(&plugin, "k", TTL).unwrap_err();
        assert!(err.contains("down"), "{err}");
    }

    #[test]
    fn contention_is_none() {
        let (_test, plugin) = setup();
        let g = guard(&plugin, "k");
        assert!(LockGuard::acquire(&plugin, "k", TTL).unwrap().is_none());
        drop(g);
    }
}
