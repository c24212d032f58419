//! The auto-renewing guard: hold a lock for as long as a job runs, and say
//! so *in time* when it is lost.
//!
//! A [`LockGuard`] owns a [`LockHandle`] and keeps its lease alive from a
//! background thread, renewing it every third of the TTL by default.
//!
//! # The timeline
//!
//! ```text
//!  sent                       renew due               deadline to stop        lease end    TTL
//!   |---------------------------|-------------------------|-----------------------|------|
//!   0                          ttl/3                  lease end − stop margin    ttl − drift
//!   |<-- held, nothing to do -->|<-- renewal may take -->|<-- the work stops --->|
//! ```
//!
//! * The lease is counted from `sent`, the instant just *before* the request
//!   that started it (the `try_lock`, then each confirmed renewal) left, on
//!   the monotonic clock. The backend started its lease no earlier.
//! * `lease end = sent + ttl − drift`, where `drift` is the backend's
//!   clock-drift allowance ([`ClockDrift`]; Redlock's 1 % + 2 ms unless the
//!   backend states its own), because the backend expires the lease on its
//!   own clock, which may run faster.
//! * The holder is told the lock is lost **no later than
//!   `lease end − stop margin`** (the deadline to stop), so the protected
//!   work has the stop margin to wind down before anyone else can hold the
//!   lock. The default stop margin is a third of the TTL: a renewal is sent
//!   a third of the way in and has (almost) a whole third to be confirmed,
//!   and the work keeps the last third to stop.
//!
//! The lock is declared **lost** at the first of:
//! * a renewal that fails (the backend's error; never retried: retrying
//!   could win back a lock someone else holds by then);
//! * no renewal confirmed by the deadline to stop (a backend or network
//!   that hangs);
//! * a detected pause: the guard's threads woke far later than they asked
//!   (the process was stopped with SIGSTOP, swapped out, starved of CPU, or
//!   the machine was suspended, which the wall clock shows) and the
//!   deadline to stop has passed meanwhile. The guard then never renews
//!   back into a lease that may have passed to someone else, and the
//!   reason says "paused".
//!
//! The loss is recorded once and told to everyone who asked (a channel, a
//! callback, [`LockGuard::wait_lost`]); [`LockGuard::is_lost`] turns true
//! the moment the deadline passes, even before the guard's thread says so.
//!
//! Dropping the guard (or calling [`LockGuard::release`]) stops the renewal
//! threads, joins them, and only then releases the lock, so no renewal can
//! ever run after the release.
//!
//! What no guard can promise: if the *whole* process is frozen (or the
//! machine suspended) across the deadline, nothing in it runs to stop the
//! work until it resumes. The guard then reports the loss at once, but the
//! work may already have written after the lease end. That is what fences
//! are for: pass [`LockGuard::fence`] to the resource you protect.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crate::{ClockDrift, LockHandle, LockingPlugin};

/// Why a guarded lock was lost. Sent to every watcher of a [`LockGuard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLost {
    /// The key that was locked.
    pub key: String,
    /// The `lock_id` of the acquisition that was lost.
    pub lock_id: String,
    /// What happened, in words: the backend's renew error, that no renewal
    /// was confirmed by the deadline to stop, or that the process was paused.
    pub reason: String,
    /// Which of those it was.
    pub cause: LossCause,
    /// When the lease ends (or ended) by the holder's clock: the instant
    /// after which nothing the lock protects may run. It may already be in
    /// the past (after a pause).
    pub lease_end: Instant,
}

/// What made a guard declare its lock lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LossCause {
    /// A renew call returned an error (or panicked): the lock is not ours.
    RenewFailed,
    /// No renewal was confirmed by the deadline to stop (lease end − stop
    /// margin): the backend or the network hangs.
    NotConfirmed,
    /// The guard woke far later than it asked (the process was paused,
    /// swapped out or starved, or the machine suspended) and the deadline to
    /// stop passed meanwhile: the lease may already belong to someone else.
    Paused,
}

impl fmt::Display for LockLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lock on `{}` was lost: {}", self.key, self.reason)
    }
}

impl std::error::Error for LockLost {}

/// How a [`LockGuard`] renews, and how early it tells the holder to stop.
#[derive(Debug, Clone)]
pub struct GuardOptions {
    renew_divisor: u32,
    lease_started: Option<Instant>,
    stop_margin: Option<Duration>,
    clock_drift: ClockDrift,
}

impl Default for GuardOptions {
    fn default() -> Self {
        Self {
            renew_divisor: 3,
            lease_started: None,
            stop_margin: None,
            clock_drift: ClockDrift::REDLOCK,
        }
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

    /// How long before the lease end the holder is told, at the latest,
    /// that the lock is lost: the time the protected work has to stop.
    /// Default: a third of the TTL. It must leave the first renewal (due at
    /// `ttl / divisor`) some time before the deadline to stop;
    /// [`LockGuard::acquire_with`] refuses options that do not.
    pub fn stop_margin(mut self, margin: Duration) -> Self {
        self.stop_margin = Some(margin);
        self
    }

    /// The backend's clock-drift allowance (default [`ClockDrift::REDLOCK`]).
    /// A host that loaded the backend from a plugin takes it from the
    /// plugin's `describe` answer (`clock_drift`).
    pub fn clock_drift(mut self, drift: ClockDrift) -> Self {
        self.clock_drift = drift;
        self
    }

    /// Checks that these options can guard a lease of `ttl`: an error says
    /// which numbers do not fit.
    pub fn check(&self, ttl: Duration) -> Result<(), String> {
        let t = self.timeline(ttl);
        if t.stop_after <= t.every {
            return Err(format!(
                "a stop margin of {} ms leaves no time to renew a {} ms lease: the lock would be \
                 declared lost at {} ms, before the first renewal is sent at {} ms (the lease counts \
                 as {} ms: the TTL less {} ms for clock drift)",
                t.margin.as_millis(),
                ttl.as_millis(),
                t.stop_after.as_millis(),
                t.every.as_millis(),
                t.lease.as_millis(),
                t.drift.as_millis()
            ));
        }
        Ok(())
    }

    fn timeline(&self, ttl: Duration) -> Timeline {
        let drift = self.clock_drift.allowance(ttl);
        let lease = ttl.saturating_sub(drift);
        let margin = self.stop_margin.unwrap_or(ttl / 3);
        Timeline {
            ttl,
            drift,
            lease,
            margin,
            stop_after: lease.saturating_sub(margin),
            every: (ttl / self.renew_divisor).max(Duration::from_millis(1)),
            pause: (ttl / 10).max(PAUSE_MIN),
        }
    }
}

/// A wake-up at least this late (or a tenth of the TTL, if longer) counts
/// as a pause: scheduling noise on a loaded machine stays well below it.
const PAUSE_MIN: Duration = Duration::from_millis(50);

/// The lease's numbers, fixed for the guard's life.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    ttl: Duration,
    drift: Duration,
    /// `ttl − drift`: how long a lease lasts by our count.
    lease: Duration,
    margin: Duration,
    /// `lease − margin`: the deadline to stop, after `sent`.
    stop_after: Duration,
    every: Duration,
    pause: Duration,
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
    /// When the lease ends by our clock unless a renewal lands first.
    lease_end: Instant,
    /// `lease_end − stop margin`: a loss is declared by then at the latest.
    deadline: Instant,
    /// When the renewal in flight was requested, if one is.
    renewal_sent: Option<Instant>,
    renewals: u64,
    watchers: Vec<Watcher>,
}

struct Shared {
    key: String,
    lock_id: String,
    timeline: Timeline,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn loss(&self, cause: LossCause, reason: String, lease_end: Instant) -> LockLost {
        LockLost { key: self.key.clone(), lock_id: self.lock_id.clone(), reason, cause, lease_end }
    }

    fn not_confirmed(&self, lease_end: Instant, waiting: Option<Duration>) -> LockLost {
        let t = &self.timeline;
        let renewal = match waiting {
            Some(w) => format!("; the renewal sent {} ms ago has not answered", w.as_millis()),
            None => String::new(),
        };
        self.loss(
            LossCause::NotConfirmed,
            format!(
                "no renewal was confirmed by the deadline to stop, {} ms before the lease ends \
                 (a {} ms TTL counted as {} ms for clock drift){renewal}",
                t.margin.as_millis(),
                t.ttl.as_millis(),
                t.lease.as_millis()
            ),
            lease_end,
        )
    }

    /// Makes a passed deadline a loss (once); true when the lock is lost.
    ///
    /// The timer always wakes by the deadline, so finding it passed by more
    /// than the pause threshold proves the process did not run meanwhile:
    /// that is a pause, whoever notices it first.
    fn expire(&self, state: &mut State, now: Instant) -> bool {
        if state.lost.is_none() && now >= state.deadline {
            let past = now - state.deadline;
            state.lost = Some(if past >= self.timeline.pause {
                self.loss(LossCause::Paused, paused_reason(past), state.lease_end)
            } else {
                self.not_confirmed(state.lease_end, state.renewal_sent.map(|t| now - t))
            });
            self.changed.notify_all();
        }
        state.lost.is_some()
    }

    /// Applies a confirmed renewal sent at `sent`, unless the deadline to
    /// stop passed first (then the lock is lost, whatever the backend says).
    fn renewed(&self, sent: Instant) -> bool {
        let mut state = self.lock();
        if self.expire(&mut state, Instant::now()) {
            return false;
        }
        state.lease_end = sent + self.timeline.lease;
        state.deadline = sent + self.timeline.stop_after;
        state.renewal_sent = None;
        state.renewals += 1;
        true
    }

    /// Moves the lease end earlier by time the monotonic clock did not see.
    fn shorten(&self, by: Duration) {
        let mut state = self.lock();
        if state.lost.is_none() {
            let (end, deadline) = (state.lease_end, state.deadline);
            state.lease_end = end.checked_sub(by).unwrap_or(end.min(Instant::now()));
            state.deadline = deadline.checked_sub(by).unwrap_or(deadline.min(Instant::now()));
        }
    }

    /// Records the loss (the first one recorded wins) and notifies every
    /// watcher outside the lock.
    fn lose(&self, lost: LockLost) {
        let (watchers, lost) = {
            let mut state = self.lock();
            let lost = state.lost.get_or_insert(lost).clone();
            (std::mem::take(&mut state.watchers), lost)
        };
        self.changed.notify_all();
        for w in watchers {
            w.notify(&lost);
        }
    }

    /// Watchers are dropped once the guard stops, so a channel receiver sees
    /// the sender go away instead of waiting forever.
    fn watchers_drop(&self) {
        let watchers = std::mem::take(&mut self.lock().watchers);
        drop(watchers);
    }
}

/// What the timer asks the renewal thread for.
struct Request {
    /// When the timer asked: the lease of this renewal counts from here.
    sent: Instant,
    wall: SystemTime,
    /// The deadline to stop at the time of asking.
    deadline: Instant,
}

enum Event {
    Stop,
    Renewed(Result<(), String>),
    /// The renewal thread got to a request only after the deadline.
    Paused(String),
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
///         // True by the deadline to stop at the latest: a third of the TTL
///         // before the lease ends, time enough to finish the step cleanly.
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
/// the lock lost at the deadline even while a renew call is stuck.
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
    /// just before the request. Options that cannot guard `ttl` (see
    /// [`GuardOptions::check`]) are an error, and nothing is acquired.
    pub fn acquire_with(
        plugin: &Arc<dyn LockingPlugin>,
        key: &str,
        ttl: Duration,
        options: GuardOptions,
    ) -> Result<Option<Self>, String> {
        let ttl_ms = duration_ms(ttl);
        crate::validate_lock_request(key, ttl_ms)?;
        options.check(Duration::from_millis(ttl_ms))?;
        let started = Instant::now();
        Ok(plugin
            .try_lock(key, ttl_ms)?
            .map(|h| Self::with_options(Arc::clone(plugin), h, options.lease_started(started))))
    }

    /// Waits for `key` (ABI 1.2 `lock_wait`: woken by the backend, not by
    /// polling, on plugins that have it; polled otherwise) until `wait`
    /// times out or is cancelled (`Ok(None)`), then guards it with
    /// `options`. The lease is counted from when the request that took the
    /// lock was sent, not from the start of the wait. `owner` is recorded
    /// by plugins that store owners.
    pub fn acquire_wait<P: crate::LockWait + 'static>(
        plugin: &Arc<P>,
        key: &str,
        ttl: Duration,
        owner: Option<&str>,
        wait: &crate::Wait,
        options: GuardOptions,
    ) -> Result<Option<Self>, crate::PluginError> {
        let ttl_ms = duration_ms(ttl);
        crate::validate_lock_request(key, ttl_ms).map_err(crate::PluginError::invalid)?;
        options.check(Duration::from_millis(ttl_ms)).map_err(crate::PluginError::invalid)?;
        Ok(plugin.lock_wait(key, ttl_ms, owner, wait)?.map(|acquired| {
            let guarded: Arc<dyn LockingPlugin> = plugin.clone();
            Self::with_options(guarded, acquired.handle, options.lease_started(acquired.sent))
        }))
    }

    /// Guards a handle that `plugin` just handed out, with default options.
    pub fn new(plugin: Arc<dyn LockingPlugin>, handle: LockHandle) -> Self {
        Self::with_options(plugin, handle, GuardOptions::default())
    }

    /// Guards a handle that `plugin` handed out. Options that fail
    /// [`GuardOptions::check`] make the lock lost as soon as the guard
    /// starts: a guard that cannot keep its promise says so.
    pub fn with_options(
        plugin: Arc<dyn LockingPlugin>,
        handle: LockHandle,
        options: GuardOptions,
    ) -> Self {
        let started = options.lease_started.unwrap_or_else(Instant::now);
        let timeline = options.timeline(Duration::from_millis(handle.ttl_ms));
        let shared = Arc::new(Shared {
            key: handle.key.clone(),
            lock_id: handle.lock_id.clone(),
            timeline,
            state: Mutex::new(State {
                lost: None,
                lease_end: started + timeline.lease,
                deadline: started + timeline.stop_after,
                renewal_sent: None,
                renewals: 0,
                watchers: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        let (events_tx, events_rx) = mpsc::channel();
        let (renew_tx, renew_rx) = mpsc::channel::<Request>();

        let renewer = {
            let (plugin, handle, events) = (Arc::clone(&plugin), handle.clone(), events_tx.clone());
            thread::Builder::new()
                .name("bext-lock-renew".into())
                .spawn(move || renew_loop(&*plugin, &handle, &renew_rx, &events))
                .expect("spawning the renewal thread")
        };
        let timer = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("bext-lock-guard".into())
                .spawn(move || {
                    if let Some(lost) = timer_loop(&shared, started, &events_rx, &renew_tx) {
                        shared.lose(lost);
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

    /// When the lease ends by the holder's clock, as of the last confirmed
    /// renewal: `sent + ttl − drift`. Nothing the lock protects may run
    /// after it.
    pub fn lease_end(&self) -> Instant {
        self.shared.lock().lease_end
    }

    /// The deadline to stop: `lease_end − stop margin`. If no renewal is
    /// confirmed by then, the lock is lost at that instant.
    pub fn stop_deadline(&self) -> Instant {
        self.shared.lock().deadline
    }

    /// The stop margin in force: the time the work gets between the latest
    /// possible loss signal and the lease end.
    pub fn stop_margin(&self) -> Duration {
        self.shared.timeline.margin
    }

    /// Whether the lock has been lost. Also true as soon as the deadline to
    /// stop has passed by the guard's own clock, even if the guard's thread
    /// has not got round to saying so.
    pub fn is_lost(&self) -> bool {
        self.lost().is_some()
    }

    /// Why the lock was lost, or `None` while it is held.
    pub fn lost(&self) -> Option<LockLost> {
        let mut state = self.shared.lock();
        self.shared.expire(&mut state, Instant::now());
        state.lost.clone()
    }

    /// Blocks until the lock is lost (returning why) or `timeout` passes
    /// (returning `None`).
    pub fn wait_lost(&self, timeout: Duration) -> Option<LockLost> {
        let until = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            let now = Instant::now();
            if self.shared.expire(&mut state, now) {
                return state.lost.clone();
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
    /// while the lock is held.
    pub fn on_lost(&self, f: impl FnOnce(&LockLost) + Send + 'static) {
        self.watch(Watcher::Callback(Box::new(f)));
    }

    fn watch(&self, watcher: Watcher) {
        let mut state = self.shared.lock();
        self.shared.expire(&mut state, Instant::now());
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
        // the renewer ends after its current call, if any. A lost lock is
        // never released, so nothing must wait for a renew call that may
        // hang for as long as the backend's timeout: let it finish alone.
        if let Some(r) = self.renewer.take() {
            if self.lost().is_none() {
                let _ = r.join();
            }
        }
        self.shared.watchers_drop();
        self.lost()
    }

    /// Stops renewing and releases the lock.
    ///
    /// A renewal in flight is waited for first, so no renewal runs after the
    /// release. Fails with [`ReleaseError::Lost`] if the lock was lost (it is then
    /// not released: it is no longer ours to release), or with
    /// [`ReleaseError::Backend`] if the release call failed (the lease then
    /// ends by itself when its TTL runs out).
    pub fn release(mut self) -> Result<(), ReleaseError> {
        self.finish()
    }

    /// Stops renewing **without** releasing, and hands back the handle: the
    /// lease then runs out by itself (at most its TTL after the last
    /// renewal), unless the caller sets its remaining time once more (see
    /// [`LockWait::renew_for`](crate::LockWait::renew_for)), which is how a
    /// job keeps others out for a minimum time after it finished. A renewal
    /// in flight is waited for first, so none can run after this returns.
    /// Fails with the loss if the lock was lost.
    pub fn keep(mut self) -> Result<LockHandle, LockLost> {
        if let Some(lost) = self.stop() {
            return Err(lost);
        }
        // `stop` took both threads, so `Drop` finds nothing to release.
        Ok(self.handle.clone())
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

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Nothing to report from a destructor: a failed release ends with
        // the TTL, and a loss has been reported to the watchers already.
        let _ = self.finish();
    }
}

/// Both clocks at one instant: a wait that took much longer on either
/// than asked means the process (or the machine) was paused.
#[derive(Clone, Copy)]
struct Clocks {
    mono: Instant,
    wall: SystemTime,
}

impl Clocks {
    fn now() -> Self {
        Self { mono: Instant::now(), wall: SystemTime::now() }
    }

    /// Time since `self` by the monotonic clock, and the time the wall
    /// clock saw on top of that (a suspended machine's monotonic clock
    /// stops; a clock stepped forward looks the same and is treated the
    /// same, which errs on the safe side).
    fn since(&self) -> (Instant, Duration, Duration) {
        let now = Instant::now();
        let mono = now - self.mono;
        let wall = SystemTime::now().duration_since(self.wall).unwrap_or_default();
        (now, mono, wall.saturating_sub(mono))
    }
}

fn paused_reason(past: Duration) -> String {
    format!(
        "the process was paused (stopped, swapped out or starved of CPU, or the machine \
         suspended): it got to run again {} ms after the deadline to stop, so the lease may have \
         passed to another holder; it is not renewed",
        past.as_millis()
    )
}

/// Keeps time: asks for a renewal every `every`, and returns the loss, or
/// `None` when told to stop while the lock is held.
fn timer_loop(
    shared: &Shared,
    started: Instant,
    events: &Receiver<Event>,
    renew: &Sender<Request>,
) -> Option<LockLost> {
    let t = shared.timeline;
    let mut next = started + t.every;
    // The instant the renewal in flight was requested, if one is.
    let mut pending: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let (lease_end, deadline, ask) = {
            let mut state = shared.lock();
            if shared.expire(&mut state, now) {
                return state.lost.clone();
            }
            let ask = pending.is_none() && now >= next;
            if ask {
                pending = Some(now);
                state.renewal_sent = pending;
            }
            (state.lease_end, state.deadline, ask)
        };
        if ask {
            let request = Request { sent: now, wall: SystemTime::now(), deadline };
            if renew.send(request).is_err() {
                return Some(shared.loss(
                    LossCause::RenewFailed,
                    "the renewal thread stopped".to_owned(),
                    lease_end,
                ));
            }
            continue;
        }
        let wake = if pending.is_some() { deadline } else { next.min(deadline) };
        let before = Clocks::now();
        let event = events.recv_timeout(wake.saturating_duration_since(before.mono));
        let (woke, _, hidden) = before.since();
        if hidden >= t.pause {
            // The machine was suspended (or the clock stepped forward): the
            // backend's clock may have counted that time against the lease.
            shared.shorten(hidden);
        }
        match event {
            Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => {
                // Stopped: lost only if the deadline has passed by now.
                let mut state = shared.lock();
                let lost = shared.expire(&mut state, Instant::now());
                return if lost { state.lost.clone() } else { None };
            }
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Event::Renewed(Err(e))) => {
                return Some(shared.loss(LossCause::RenewFailed, e, lease_end));
            }
            Ok(Event::Paused(reason)) => {
                return Some(shared.loss(LossCause::Paused, reason, lease_end));
            }
            Ok(Event::Renewed(Ok(()))) => {
                // The backend restarted the lease no earlier than the
                // request was sent, so counting from then never overstates it.
                let sent = pending.take().unwrap_or(woke);
                if !shared.renewed(sent) {
                    return shared.lock().lost.clone();
                }
                next = sent + t.every;
            }
        }
    }
}

/// Makes one renew call per request until the timer goes away; a request
/// it only gets to after its deadline (the process was paused) is not
/// renewed: the lease may already be someone else's.
fn renew_loop(
    plugin: &dyn LockingPlugin,
    handle: &LockHandle,
    requests: &Receiver<Request>,
    events: &Sender<Event>,
) {
    for r in requests {
        let asked = Clocks { mono: r.sent, wall: r.wall };
        let (now, _, hidden) = asked.since();
        let event = if now + hidden >= r.deadline {
            Event::Paused(paused_reason(now + hidden - r.deadline))
        } else {
            let result = catch_unwind(AssertUnwindSafe(|| plugin.renew(handle)))
                .unwrap_or_else(|_| Err("renew panicked".to_owned()));
            Event::Renewed(result)
        };
        if events.send(event).is_err() {
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

    /// Short, but with room for a renewal thread delayed by a loaded
    /// machine: the renewal due at 300 ms has until about 590 ms.
    const TTL: Duration = Duration::from_millis(900);
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
        thread::sleep(TTL * 3);
        assert!(!g.is_lost(), "lost: {:?}", g.lost());
        assert_eq!(test.holder("k").as_deref(), Some(g.handle().lock_id.as_str()));
        assert!(plugin.try_lock("k", 1000).unwrap().is_none(), "the lease expired");
        assert!(g.renewals() >= 3, "only {} renewals in 3 TTLs", g.renewals());
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

    /// Acquires with `options` and returns the guard and the instant just
    /// before the request, which the lease is counted from.
    fn guard_with(
        plugin: &Arc<dyn LockingPlugin>,
        ttl: Duration,
        options: GuardOptions,
    ) -> (LockGuard, Instant) {
        let before = Instant::now();
        let g = LockGuard::acquire_with(plugin, "k", ttl, options).unwrap().expect("free");
        (g, before)
    }

    #[test]
    fn a_hung_renewal_is_lost_at_the_deadline_before_the_lease_ends() {
        let (test, plugin) = setup();
        // Renewals never answer within the lease.
        let ttl = Duration::from_millis(1500);
        test.set_renew_delay(ttl * 4);
        let (g, before) = guard_with(&plugin, ttl, GuardOptions::default());
        // 1 % + 2 ms of drift: the lease counts as 1483 ms, the deadline to
        // stop is a third of the TTL (500 ms) before its end.
        let lease_end = before + Duration::from_millis(1483);
        assert!(g.lease_end() >= lease_end && g.lease_end() < Instant::now() + ttl);
        assert_eq!(g.stop_margin(), ttl / 3);
        assert_eq!(g.lease_end() - g.stop_deadline(), ttl / 3);
        let rx = g.lost_channel();
        let lost = rx.recv_timeout(PATIENCE).expect("the loss was not reported");
        let told = Instant::now();
        assert_eq!(lost.cause, LossCause::NotConfirmed, "{lost}");
        assert!(lost.reason.contains("no renewal was confirmed"), "{lost}");
        // Told at the deadline to stop: not before it, and well before the
        // lease end (500 ms of room for a late thread on a loaded machine).
        assert!(told >= g.stop_deadline(), "told {:?} early", g.stop_deadline() - told);
        assert!(told < lost.lease_end, "told {:?} after the lease end", told - lost.lease_end);
        assert_eq!(lost.lease_end, g.lease_end());
        // Reported while the renew call was still stuck, not after it returned.
        assert_eq!(test.renews_ended(), 0, "the loss waited for the hung renewal");
        assert_eq!(test.count(&Call::RenewStart), 1);
        // A lost lock is not released, so dropping the guard need not wait
        // for the stuck call (which may last the backend's whole timeout).
        drop(g);
        assert_eq!(test.renews_ended(), 0, "the drop waited for the hung renewal");
        assert_eq!(test.count(&Call::Release), 0);
    }

    #[test]
    fn the_stop_margin_and_drift_are_options() {
        let (test, plugin) = setup();
        let ttl = Duration::from_millis(1200);
        test.set_renew_delay(ttl * 4);
        let options = GuardOptions::default()
            .stop_margin(Duration::from_millis(300))
            .clock_drift(ClockDrift::new(0.0, 100));
        let (g, before) = guard_with(&plugin, ttl, options);
        assert_eq!(g.stop_margin(), Duration::from_millis(300));
        // 1200 − 100 ms of drift; the deadline 300 ms before that, at 800 ms.
        assert!(g.lease_end() >= before + Duration::from_millis(1100));
        assert_eq!(g.lease_end() - g.stop_deadline(), Duration::from_millis(300));
        let lost = g.wait_lost(PATIENCE).expect("no loss");
        let told = Instant::now();
        assert!(told >= g.stop_deadline() && told < lost.lease_end, "{lost}");
        assert!(told >= before + Duration::from_millis(800));
    }

    #[test]
    fn options_that_leave_no_time_to_renew_are_refused() {
        let (test, plugin) = setup();
        let ttl = Duration::from_secs(3);
        // The deadline would come before the first renewal (at 1 s).
        let err = LockGuard::acquire_with(
            &plugin,
            "k",
            ttl,
            GuardOptions::default().stop_margin(Duration::from_secs(2)),
        )
        .unwrap_err();
        assert!(err.contains("2000 ms leaves no time to renew a 3000 ms lease"), "{err}");
        assert_eq!(test.count(&Call::TryLock), 0, "acquired with options it cannot keep");
        assert!(GuardOptions::default().check(ttl).is_ok());
        assert!(
            GuardOptions::default().stop_margin(Duration::from_millis(1900)).check(ttl).is_ok()
        );
        // A handle guarded with such options is lost at once.
        let h = plugin.try_lock("k", 3000).unwrap().unwrap();
        let g = LockGuard::with_options(
            Arc::clone(&plugin),
            h,
            GuardOptions::default().stop_margin(Duration::from_secs(5)),
        );
        assert!(g.is_lost());
    }

    #[test]
    fn a_guard_that_could_not_run_past_its_deadline_reports_a_pause() {
        let (test, plugin) = setup();
        let ttl = Duration::from_millis(900);
        let (g, _) = guard_with(&plugin, ttl, GuardOptions::default());
        let rx = g.lost_channel();
        // Keep the guard's threads from running, as SIGSTOP would, until
        // well past the deadline to stop (600 ms) and the lease end.
        {
            let _frozen = g.shared.lock();
            thread::sleep(ttl + Duration::from_millis(300));
        }
        let lost = rx.recv_timeout(PATIENCE).expect("no loss");
        assert_eq!(lost.cause, LossCause::Paused, "{lost}");
        assert!(lost.reason.contains("paused"), "{lost}");
        assert!(lost.lease_end < Instant::now());
        // Never renewed into a lease that may be someone else's.
        thread::sleep(Duration::from_millis(100));
        assert!(
            test.log().iter().all(|c| !matches!(c, Call::RenewEnd(true))),
            "renewed after the pause: {:?}",
            test.log()
        );
        assert_eq!(g.lost().map(|l| l.cause), Some(LossCause::Paused));
    }

    #[test]
    fn a_renewal_request_picked_up_after_its_deadline_is_not_sent() {
        let (test, plugin) = setup();
        let handle = plugin.try_lock("k", 1000).unwrap().unwrap();
        let (requests_tx, requests) = mpsc::channel();
        let (events, results) = mpsc::channel();
        // Asked for 2 s ago with a deadline 1 s ago: the renewal thread did
        // not run meanwhile.
        let now = Instant::now();
        let sent = now - Duration::from_secs(2);
        let wall = SystemTime::now() - Duration::from_secs(2);
        requests_tx.send(Request { sent, wall, deadline: now - Duration::from_secs(1) }).unwrap();
        drop(requests_tx);
        renew_loop(&*plugin, &handle, &requests, &events);
        match results.try_recv() {
            Ok(Event::Paused(reason)) => assert!(reason.contains("paused"), "{reason}"),
            _ => panic!("expected a pause"),
        }
        assert_eq!(test.count(&Call::RenewStart), 0, "renewed after the deadline");
    }

    #[test]
    fn the_lease_end_moves_with_each_confirmed_renewal() {
        let (_test, plugin) = setup();
        let (g, before) =
            guard_with(&plugin, TTL, GuardOptions::default().clock_drift(ClockDrift::NONE));
        let first = g.lease_end();
        assert!(first >= before + TTL && first <= Instant::now() + TTL);
        let until = Instant::now() + PATIENCE;
        while g.renewals() == 0 {
            assert!(Instant::now() < until, "no renewal");
            thread::sleep(Duration::from_millis(10));
        }
        // Counted from the renewal's request, a third of the TTL later.
        assert!(g.lease_end() >= first + TTL / 3, "{:?}", g.lease_end() - first);
        assert!(g.lease_end() <= Instant::now() + TTL);
        drop(g);
    }

    #[test]
    fn the_release_waits_for_a_hung_renewal_thread() {
        let (test, plugin) = setup();
        test.set_renew_delay(Duration::from_millis(200));
        let g = LockGuard::acquire(&plugin, "k", Duration::from_millis(1500)).unwrap().unwrap();
        // The first renewal starts at 500 ms and is still running at 550 ms.
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
        let handle = plugin.try_lock("k", 300).unwrap().unwrap();
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
