//! The deadlines of the calls on one instance's connections, kept by one
//! thread instead of a runtime timer per call.
//!
//! A runtime timer re-armed for every statement makes every wait for the
//! server an `epoll_wait` with a timeout (which the kernel backs with a
//! high-resolution timer) and turns the runtime's timer wheel on every
//! park: about 6 % of a pair's CPU through the `.so` in advisory mode.
//! Here a call only stores its deadline in its connection's [`Slot`]; one
//! thread per instance sleeps until the soonest deadline of the calls in
//! flight and wakes a call whose deadline has passed. A call that ends in
//! time (nearly all) costs two atomic stores, a load and an uncontended
//! lock, and never wakes the thread: the thread sleeps until a deadline
//! seconds away, and by then that call is long done.
//!
//! The thread must hear of a deadline sooner than the one it sleeps
//! towards. A call stores its deadline, then reads when the thread will
//! next look ([`Shared::wakes_at`], "now" while it scans): if that is later
//! than its deadline, it bumps a generation under the thread's lock and
//! notifies it. Both sides use sequentially consistent atomics, so a scan
//! either sees the new deadline or the call sees the scan (or its
//! outcome) and notifies; the thread checks the generation under its lock
//! before it sleeps, so no notification is lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A slot with no call in flight.
const IDLE: u64 = 0;
/// A slot whose call's deadline passed: the call must give up.
const FIRED: u64 = 1;
/// [`Shared::wakes_at`] while the thread scans: every call notifies.
const SCANNING: u64 = 0;
/// [`Shared::wakes_at`] while the thread sleeps until notified.
const NEVER: u64 = u64::MAX;

/// How long the thread sleeps after a scan found no call in flight but
/// some call since the previous scan: calls keep coming then, and each
/// would otherwise have to wake it (its deadline being sooner than
/// "never"). After a quiet nap it sleeps until notified. Shorter than any
/// call budget, so that a call starting after such a scan never has to
/// notify.
const IDLE_NAP: Duration = Duration::from_millis(500);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the thread and the slots share.
struct Shared {
    /// Deadlines are nanoseconds after this, plus 2 (clear of [`IDLE`] and
    /// [`FIRED`]).
    origin: Instant,
    /// When the thread looks next, encoded like a deadline; [`SCANNING`]
    /// or [`NEVER`].
    wakes_at: AtomicU64,
    /// Set once the owner dropped: calls armed from then on give up at once.
    closed: AtomicBool,
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    /// Every connection's slot (dropped ones are pruned).
    slots: Vec<Weak<Slot>>,
    /// Bumped by a call whose deadline is sooner than the thread's plan.
    generation: u64,
    closed: bool,
}

impl Shared {
    fn encode(&self, at: Instant) -> u64 {
        let ns = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(ns).unwrap_or(u64::MAX - 2).min(u64::MAX - 3) + 2
    }

    fn decode(&self, v: u64) -> Instant {
        self.origin + Duration::from_nanos(v.saturating_sub(2))
    }

    /// The thread: scans the slots, fires the overdue ones, sleeps until
    /// the soonest deadline left (or a notification).
    fn run(&self) {
        let mut st = lock(&self.state);
        loop {
            self.wakes_at.store(SCANNING, SeqCst);
            let seen = st.generation;
            let now = Instant::now();
            let now_v = self.encode(now);
            let closed = st.closed;
            let (mut soonest, mut active) = (NEVER, false);
            st.slots.retain(|w| {
                let Some(slot) = w.upgrade() else { return false };
                active |= slot.armed.swap(false, SeqCst);
                let v = slot.state.load(SeqCst);
                if v > FIRED {
                    if closed || v <= now_v {
                        slot.fire(v);
                    } else {
                        soonest = soonest.min(v);
                    }
                }
                true
            });
            if closed {
                return;
            }
            let at = match soonest {
                NEVER if active => self.encode(now + IDLE_NAP),
                v => v,
            };
            self.wakes_at.store(at, SeqCst);
            if st.generation != seen {
                continue;
            }
            st = if at == NEVER {
                self.wake.wait(st).unwrap_or_else(PoisonError::into_inner)
            } else {
                let nap = self.decode(at).saturating_duration_since(now);
                self.wake.wait_timeout(st, nap).unwrap_or_else(PoisonError::into_inner).0
            };
        }
    }
}

/// The owner of the thread: dropping it fires every call still in flight
/// and stops the thread.
pub(crate) struct Watch {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Starts the thread.
    pub fn start() -> Result<Self, String> {
        let shared = Arc::new(Shared {
            origin: Instant::now(),
            wakes_at: AtomicU64::new(NEVER),
            closed: AtomicBool::new(false),
            state: Mutex::new(State { slots: Vec::new(), generation: 0, closed: false }),
            wake: Condvar::new(),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bext-pg-timeout".into())
            .spawn(move || for_thread.run())
            .map_err(|e| format!("cannot start the deadline thread: {e}"))?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// A slot for one connection's calls, one call at a time.
    pub fn slot(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            shared: self.shared.clone(),
            state: AtomicU64::new(IDLE),
            armed: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        let mut st = lock(&self.shared.state);
        st.slots.retain(|w| w.strong_count() > 0);
        st.slots.push(Arc::downgrade(&slot));
        slot
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.shared.closed.store(true, SeqCst);
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection's deadline, one call at a time: [`arm`](Slot::arm) it
/// for the call, and give up once the [`Armed`] guard says it
/// [`passed`](Armed::passed).
pub(crate) struct Slot {
    shared: Arc<Shared>,
    /// [`IDLE`], [`FIRED`] or the call's deadline.
    state: AtomicU64,
    /// Armed since the thread's last scan (see [`IDLE_NAP`]).
    armed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    /// The call starting now must end by `until`; the call is over when
    /// the guard drops.
    pub fn arm(&self, until: Instant) -> Armed<'_> {
        let v = self.shared.encode(until);
        self.state.store(v, SeqCst);
        self.armed.store(true, SeqCst);
        if self.shared.closed.load(SeqCst) {
            // Nothing would ever fire it: give up at once instead.
            self.state.store(FIRED, SeqCst);
        } else if v < self.shared.wakes_at.load(SeqCst) {
            lock(&self.shared.state).generation += 1;
            self.shared.wake.notify_one();
        }
        Armed { slot: self, registered: false }
    }

    /// Who to wake when the deadline passes: the task polling the call.
    fn register(&self, waker: &Waker) {
        let mut w = lock(&self.waker);
        if !w.as_ref().is_some_and(|old| old.will_wake(waker)) {
            *w = Some(waker.clone());
        }
    }

    fn fired(&self) -> bool {
        self.state.load(SeqCst) == FIRED
    }

    /// Fires the call armed with `v`, unless it ended or another one
    /// started meanwhile.
    fn fire(&self, v: u64) {
        if self.state.compare_exchange(v, FIRED, SeqCst, SeqCst).is_ok() {
            if let Some(w) = lock(&self.waker).as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

/// One call's deadline, armed; dropping it ends the call (also when the
/// call panics, so no later fire can hit a call that is gone).
pub(crate) struct Armed<'s> {
    slot: &'s Slot,
    registered: bool,
}

impl Armed<'_> {
    /// Whether the deadline has passed. The first call registers the
    /// waker of `cx`, before looking, so a fire after the look wakes it
    /// and a fire before it is seen: call it on every poll that would
    /// otherwise return pending.
    pub fn passed(&mut self, cx: &Context<'_>) -> bool {
        if !self.registered {
            self.slot.register(cx.waker());
            self.registered = true;
        }
        self.slot.fired()
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.slot.state.store(IDLE, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::task::Wake;

    /// A waker that reports each wake on a channel.
    struct Told(Mutex<mpsc::Sender<()>>);
    impl Wake for Told {
        fn wake(self: Arc<Self>) {
            let _ = lock(&self.0).send(());
        }
        fn wake_by_ref(self: &Arc<Self>) {
            let _ = lock(&self.0).send(());
        }
    }

    fn waker() -> (Waker, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        (Waker::from(Arc::new(Told(Mutex::new(tx)))), rx)
    }

    /// Asks `call` whether its deadline passed, as a poll driven by `w`.
    fn passed(call: &mut Armed<'_>, w: &Waker) -> bool {
        call.passed(&Context::from_waker(w))
    }

    #[test]
    fn a_passed_deadline_fires_and_wakes_the_call() {
        let watch = Watch::start().unwrap();
        let slot = watch.slot();
        let (w, woken) = waker();
        let armed = Instant::now();
        let mut call = slot.arm(armed + Duration::from_millis(50));
        assert!(!passed(&mut call, &w));
        woken.recv_timeout(Duration::from_secs(5)).expect("woken at the deadline");
        assert!(passed(&mut call, &w));
        assert!(armed.elapsed() >= Duration::from_millis(50), "fired early");
    }

    #[test]
    fn a_call_that_ends_in_time_is_never_fired() {
        let watch = Watch::start().unwrap();
        let slot = watch.slot();
        let (w, woken) = waker();
        let mut call = slot.arm(Instant::now() + Duration::from_millis(30));
        assert!(!passed(&mut call, &w));
        drop(call);
        assert!(woken.recv_timeout(Duration::from_millis(200)).is_err(), "a finished call woken");
        assert!(!slot.fired());
    }

    #[test]
    fn a_sooner_deadline_wakes_a_thread_sleeping_towards_a_later_one() {
        let watch = Watch::start().unwrap();
        let (far, near) = (watch.slot(), watch.slot());
        let _far_call = far.arm(Instant::now() + Duration::from_secs(60));
        // Let the thread plan its sleep towards the far deadline.
        std::thread::sleep(Duration::from_millis(50));
        let (w, woken) = waker();
        let mut near_call = near.arm(Instant::now() + Duration::from_millis(20));
        assert!(!passed(&mut near_call, &w));
        woken.recv_timeout(Duration::from_secs(5)).expect("the near deadline fired");
        assert!(near.fired() && !far.fired());
    }

    #[test]
    fn a_rearmed_slot_keeps_only_its_new_deadline() {
        let watch = Watch::start().unwrap();
        let slot = watch.slot();
        drop(slot.arm(Instant::now() + Duration::from_millis(20)));
        let _call = slot.arm(Instant::now() + Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!slot.fired(), "the old deadline fired the new call");
    }

    #[test]
    fn dropping_the_watch_fires_calls_in_flight_and_later_ones() {
        let watch = Watch::start().unwrap();
        let slot = watch.slot();
        let (w, woken) = waker();
        let mut call = slot.arm(Instant::now() + Duration::from_secs(60));
        assert!(!passed(&mut call, &w));
        drop(watch);
        woken.recv_timeout(Duration::from_secs(5)).expect("woken at the end");
        assert!(slot.fired());
        drop(call);
        let mut later = slot.arm(Instant::now() + Duration::from_secs(60));
        assert!(passed(&mut later, &w), "a call after the end would wait forever");
    }

    #[test]
    fn many_calls_each_fire_at_their_own_deadline_never_before() {
        let watch = Watch::start().unwrap();
        let start = Instant::now();
        let slots: Vec<_> = (0..8).map(|_| watch.slot()).collect();
        let calls: Vec<_> = slots
            .iter()
            .zip(0..8u64)
            .map(|(s, i)| {
                let until = start + Duration::from_millis(10 + 15 * ((i * 5) % 8));
                (s, s.arm(until), until)
            })
            .collect();
        while !calls.iter().all(|(s, _, _)| s.fired()) {
            assert!(start.elapsed() < Duration::from_secs(5), "not all fired");
            for (s, _, until) in &calls {
                // Read the clock after the flag: fired implies passed.
                let fired = s.fired();
                assert!(!fired || Instant::now() >= *until, "fired before its deadline");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
