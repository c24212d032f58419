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
use std::sync::mpsc;
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

/// One wait's subscriptions, one per server (a single node or a cluster
/// has one, a quorum one per master). Dropping it closes them all.
pub struct Wakeups {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Messages seen by the waiter so far.
    seen: u64,
}

impl Wakeups {
    /// Subscribes to `channel` on each source (a source is a list of
    /// servers tried in turn until one subscribes: a cluster's seeds, where
    /// any node hears every `PUBLISH`), and returns once every source has
    /// answered or `ready_by` has passed. A source that could not subscribe
    /// keeps trying in the background; [`live`](Self::live) says how many
    /// are open.
    pub fn open(
        sources: Vec<Vec<redis::Client>>,
        channel: &str,
        timeout: Duration,
        ready_by: Instant,
    ) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::new();
        for clients in sources {
            let (shared, channel, ready) = (shared.clone(), channel.to_owned(), ready_tx.clone());
            let spawned = std::thread::Builder::new()
                .name("bext-redis-wake".into())
                .spawn(move || listen(&clients, &channel, timeout, &shared, ready));
            // Without a thread this source is not heard: the waiter falls
            // back on the holder's expiry and the floor.
            if let Ok(t) = spawned {
                threads.push(t);
            }
        }
        drop(ready_tx);
        let mut answered = 0;
        while answered < threads.len() {
            let left = ready_by.saturating_duration_since(Instant::now());
            if left.is_zero() || ready_rx.recv_timeout(left).is_err() {
                break;
            }
            answered += 1;
        }
        let seen = shared.state().messages;
        Self { shared, threads, seen }
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
}

impl Drop for Wakeups {
    /// Stops every subscription and waits until each has unsubscribed and
    /// dropped its connection (at most about [`READ_SLICE`] plus
    /// [`UNSUBSCRIBE_TIMEOUT`]).
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A subscription thread: subscribe on the first of `clients` that
/// answers, count messages until told to stop, resubscribe after a break.
fn listen(
    clients: &[redis::Client],
    channel: &str,
    timeout: Duration,
    shared: &Shared,
    ready: mpsc::Sender<()>,
) {
    let mut ready = Some(ready);
    let stopped = || shared.stop.load(Ordering::Acquire);
    while !stopped() {
        let Some(mut conn) = clients.iter().find_map(|c| connect(c, timeout)) else {
            // Tell the waiter not to wait for this one, then retry.
            tell(&mut ready);
            pause(shared, RECONNECT_PAUSE);
            continue;
        };
        let mut pubsub = conn.as_pubsub();
        if pubsub.subscribe(channel).is_err() || pubsub.set_read_timeout(Some(READ_SLICE)).is_err()
        {
            tell(&mut ready);
            // Closed at once (no UNSUBSCRIBE wait): the connection is broken.
            let _ = pubsub.set_read_timeout(Some(Duration::from_millis(1)));
            drop(pubsub);
            pause(shared, RECONNECT_PAUSE);
            continue;
        }
        shared.state().live += 1;
        if ready.is_some() {
            tell(&mut ready);
        } else {
            // A release may have come while this subscription was down.
            shared.bump();
        }
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
    tell(&mut ready);
}

/// Tells the waiter this subscription has answered (once).
fn tell(ready: &mut Option<mpsc::Sender<()>>) {
    if let Some(r) = ready.take() {
        // The waiter stopped waiting for answers: nothing to tell.
        let _ = r.send(());
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
