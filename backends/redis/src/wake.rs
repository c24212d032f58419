//! Wake-ups for waiters: a subscription to a lock's pub/sub channel on a
//! dedicated connection per server, opened by the waiter and closed when
//! its wait ends.
//!
//! The synchronous driver can only block on one socket, under a read
//! timeout, so each subscription is read by a thread of its own that
//! counts the messages it gets and wakes the waiter through a condition
//! variable. The waiter blocks on that variable until a message, the
//! holder's expiry or its own deadline, and a cancel wakes it at once
//! through the same variable. The threads look at their stop flag every
//! [`READ_SLICE`]; closing a subscription sends `UNSUBSCRIBE`, waits for
//! its answer and drops the connection, so nothing is left on the server
//! once the wait has returned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a subscription thread blocks in one read before it looks at
/// its stop flag: bounds how long closing a wait takes.
pub const READ_SLICE: Duration = Duration::from_millis(40);

/// How long closing a subscription waits for the server's answer to
/// `UNSUBSCRIBE` before dropping the connection anyway.
const UNSUBSCRIBE_TIMEOUT: Duration = Duration::from_millis(50);

/// The pause before a broken subscription is opened again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// What a server's subscription thread tells the waiter.
#[derive(Default)]
struct State {
    /// Messages received (and resubscriptions after a break, during which
    /// a release may have been missed), over every subscription.
    messages: u64,
    /// Subscriptions currently open.
    live: usize,
    /// Subscription threads that have answered once (subscribed, or
    /// failed to).
    answered: usize,
    /// Subscription threads that have ended.
    ended: usize,
    /// The waiter has stopped waiting for subscriptions and made (or is
    /// making) its first try: one that subscribes only now may have missed
    /// a release, so it wakes the waiter.
    opened: bool,
    /// The wait was cancelled: wake now.
    cancelled: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.state().messages += 1;
        self.wake.notify_all();
    }
}

/// Why [`Wakeups::wait_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// A message arrived (or a subscription was reopened): try again.
    Message,
    /// `until` passed.
    Time,
    /// The wait was cancelled.
    Cancelled,
}

/// How long closing waits for the subscription threads to end before it
/// leaves the rest to finish on their own (a thread stuck connecting to a
/// hung server): a cancelled wait must return within 100 ms.
const CLOSE_WAIT: Duration = Duration::from_millis(90);

/// One wait's subscriptions, one per server (a single node or a cluster
/// has one, a quorum one per master). Dropping it closes them all.
pub struct Wakeups {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Messages seen by the waiter so far.
    seen: u64,
}

impl Wakeups {
    /// No subscription yet: register [`canceller`](Self::canceller) with
    /// the wait, then [`open`](Self::open), so a cancel also cuts the
    /// subscribing short.
    pub fn new() -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        Self { shared, threads: Vec::new(), seen: 0 }
    }

    /// Subscribes to `channel` on each source (a source is a list of
    /// servers tried in turn until one subscribes: a cluster's seeds, where
    /// any node hears every `PUBLISH`), and returns once every source has
    /// answered, `ready_by` has passed or the wait is cancelled. A source
    /// that could not subscribe keeps trying in the background;
    /// [`live`](Self::live) says how many are open.
    pub fn open(
        &mut self,
        sources: Vec<Vec<redis::Client>>,
        channel: &str,
        timeout: Duration,
        ready_by: Instant,
    ) {
        for clients in sources {
            let (shared, channel) = (self.shared.clone(), channel.to_owned());
            let spawned = std::thread::Builder::new()
                .name("bext-redis-wake".into())
                .spawn(move || listen(&clients, &channel, timeout, &shared));
            // Without a thread this source is not heard: the waiter falls
            // back on the holder's expiry and the floor.
            if let Ok(t) = spawned {
                self.threads.push(t);
            }
        }
        let mut state = self.shared.state();
        while state.answered < self.threads.len() && !state.cancelled {
            let left = ready_by.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = match self.shared.wake.wait_timeout(state, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        state.opened = true;
        self.seen = state.messages;
    }

    /// How many subscriptions are open now.
    pub fn live(&self) -> usize {
        self.shared.state().live
    }

    /// Wakes [`wait_until`](Self::wait_until) for good: what the wait's
    /// cancel hook calls, on the cancelling thread.
    pub fn canceller(&self) -> impl FnOnce() + Send + 'static {
        let shared = self.shared.clone();
        move || {
            shared.state().cancelled = true;
            shared.wake.notify_all();
        }
    }

    /// Blocks until a message arrives that the waiter has not seen, `until`
    /// passes or the wait is cancelled.
    pub fn wait_until(&mut self, until: Instant) -> Woke {
        let mut state = self.shared.state();
        loop {
            if state.cancelled {
                return Woke::Cancelled;
            }
            if state.messages != self.seen {
                self.seen = state.messages;
                return Woke::Message;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Woke::Time;
            }
            state = match self.shared.wake.wait_timeout(state, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Closes every subscription without waiting for it: what a waiter
    /// that got the lock does, so the hand-off is not held up by a read
    /// slice. Each thread still unsubscribes and drops its connection,
    /// within about [`READ_SLICE`].
    pub fn close_later(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Dropping the handles detaches the threads.
        self.threads.clear();
    }
}

impl Drop for Wakeups {
    /// Stops every subscription and waits until each has unsubscribed and
    /// dropped its connection (about [`READ_SLICE`] plus a round trip),
    /// but no longer than [`CLOSE_WAIT`]: a thread still connecting to a
    /// hung server is left to see the stop flag once its connect times
    /// out, and closes without subscribing.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let until = Instant::now() + CLOSE_WAIT;
        let mut state = self.shared.state();
        while state.ended < self.threads.len() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = match self.shared.wake.wait_timeout(state, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        let all_ended = state.ended == self.threads.len();
        drop(state);
        for t in self.threads.drain(..) {
            // Joining an ended thread returns at once; the others detach.
            if all_ended || t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// A subscription thread: subscribe on the first of `clients` that
/// answers, count messages until told to stop, resubscribe after a break.
fn listen(clients: &[redis::Client], channel: &str, timeout: Duration, shared: &Shared) {
    let mut ready = true;
    let stopped = || shared.stop.load(Ordering::Acquire);
    while !stopped() {
        let conn = clients.iter().take_while(|_| !stopped()).find_map(|c| connect(c, timeout));
        let Some(mut conn) = conn.filter(|_| !stopped()) else {
            // Tell the waiter not to wait for this one, then retry.
            tell(shared, &mut ready);
            pause(shared, RECONNECT_PAUSE);
            continue;
        };
        let mut pubsub = conn.as_pubsub();
        if pubsub.subscribe(channel).is_err() || pubsub.set_read_timeout(Some(READ_SLICE)).is_err()
        {
            tell(shared, &mut ready);
            // Closed at once (no UNSUBSCRIBE wait): the connection is broken.
            let _ = pubsub.set_read_timeout(Some(Duration::from_millis(1)));
            drop(pubsub);
            pause(shared, RECONNECT_PAUSE);
            continue;
        }
        {
            // One critical section with the waiter's `opened`: either the
            // waiter has not tried yet (and will only after this), or this
            // subscription came after its first try (late, or again after
            // a break) and a release may have come in between: wake it.
            let mut state = shared.state();
            state.live += 1;
            state.answered += usize::from(std::mem::take(&mut ready));
            if state.opened {
                state.messages += 1;
            }
        }
        shared.wake.notify_all();
        while !stopped() {
            match pubsub.get_message() {
                Ok(_) => shared.bump(),
                Err(e) if e.is_timeout() => {}
                Err(_) => break,
            }
        }
        shared.state().live -= 1;
        // Dropping the subscription sends UNSUBSCRIBE and reads its answer
        // under this timeout; the connection closes right after.
        let _ = pubsub.set_read_timeout(Some(UNSUBSCRIBE_TIMEOUT));
        drop(pubsub);
        drop(conn);
    }
    tell(shared, &mut ready);
    shared.state().ended += 1;
    shared.wake.notify_all();
}

/// Tells the waiter this subscription has answered (once).
fn tell(shared: &Shared, ready: &mut bool) {
    if std::mem::take(ready) {
        shared.state().answered += 1;
        shared.wake.notify_all();
    }
}

fn connect(client: &redis::Client, timeout: Duration) -> Option<redis::Connection> {
    let conn = client.get_connection_with_timeout(timeout).ok()?;
    conn.set_write_timeout(Some(timeout)).ok()?;
    conn.set_read_timeout(Some(timeout)).ok()?;
    Some(conn)
}

/// Sleeps `d`, in slices, unless told to stop.
fn pause(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while !shared.stop.load(Ordering::Acquire) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(READ_SLICE));
    }
}
