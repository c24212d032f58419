//! The waiter's loop, shared by every deployment: subscribe to the lock's
//! channel first, then try; on contention sleep until a message, the
//! holder's expiry (the `PTTL` the try answered with) or the deadline,
//! whichever comes first, and try again.
//!
//! Subscribing before the first try is what makes a release between the
//! try and the sleep impossible to miss: the release's `PUBLISH` runs in
//! the same script as its delete, so it either came before the try (which
//! then found the lock free) or reaches the open subscription.

use std::time::{Duration, Instant};

use bext_locking::wait::POLL_MAX;
use bext_locking::{Acquired, LockHandle, PluginError, Wait};

use crate::wake::{Wakeups, Woke};

/// Slept past the holder's `PTTL` before trying again: Redis expires a key
/// the millisecond after its deadline, and `PTTL` rounds down.
const EXPIRY_MARGIN: Duration = Duration::from_millis(2);

/// How long to sleep when the holder's key has no expiry (written by
/// something other than this plugin) and nothing is published: the floor
/// for a lock whose end cannot be foreseen.
const NO_EXPIRY_RECHECK: Duration = Duration::from_secs(1);

/// What one try found.
pub enum Try {
    /// The lock is ours.
    Got(LockHandle),
    /// Someone else holds it; when their lease could end, if known
    /// (`None`: no expiry, or not known).
    Held(Option<Duration>),
}

/// Where a waiter subscribes and how long it may take to.
pub struct Listen {
    /// One list of servers per subscription (see [`Wakeups::open`]).
    pub sources: Vec<Vec<redis::Client>>,
    /// The lock's channel.
    pub channel: String,
    /// Connect and subscribe timeout per server.
    pub timeout: Duration,
}

/// Reads a waiter's acquire answer on contention, `{pttl}`: `Some` for a
/// contention reply (holding the remaining time when the key expires).
pub fn contended(v: &redis::Value) -> Option<Option<Duration>> {
    match v {
        redis::Value::Array(a) if a.len() == 1 => match a[0] {
            redis::Value::Int(ms) if ms >= 0 => Some(Some(Duration::from_millis(ms as u64))),
            // Gone since the acquire failed (cannot happen in one script,
            // kept for safety): try again at once.
            redis::Value::Int(-2) => Some(Some(Duration::ZERO)),
            redis::Value::Int(_) => Some(None),
            _ => None,
        },
        _ => None,
    }
}

/// Waits for a lock: `attempt` is one try, `listen` where releases are
/// published. `Ok(None)` when `wait` timed out or was cancelled; an
/// `attempt` error ends the wait with that error. When the wait gives up,
/// every subscription is closed (unsubscribed, its connection dropped)
/// before this returns; when it got the lock, the subscriptions close
/// right after, on their own threads, so the hand-off is not delayed.
pub fn wait_for(
    wait: &Wait,
    listen: Listen,
    mut attempt: impl FnMut() -> Result<Try, PluginError>,
) -> Result<Option<Acquired>, PluginError> {
    let mut once = || {
        let sent = Instant::now();
        attempt().map(|t| match t {
            Try::Got(handle) => Ok(Acquired { handle, sent }),
            Try::Held(hint) => Err(hint),
        })
    };
    if wait.remaining().is_zero() {
        // `wait_ms: 0`: one try, nothing to subscribe for.
        return Ok(once()?.ok());
    }
    let ready_by = Instant::now() + listen.timeout.min(wait.remaining());
    let mut wakeups = Wakeups::new();
    let _hook = wait.on_cancel(wakeups.canceller());
    wakeups.open(listen.sources, &listen.channel, listen.timeout, ready_by);
    loop {
        if wait.is_cancelled() {
            return Ok(None);
        }
        let hint = match once()? {
            Ok(got) => {
                wakeups.close_later();
                return Ok(Some(got));
            }
            Err(hint) => hint,
        };
        if wait.is_over() {
            return Ok(None);
        }
        let mut nap = hint.map_or(NO_EXPIRY_RECHECK, |d| d + EXPIRY_MARGIN);
        if wakeups.live() == 0 {
            // Not subscribed anywhere (the servers refuse it, or are down):
            // a bounded poll is the floor until a subscription opens.
            nap = nap.min(POLL_MAX);
        }
        let until = (Instant::now() + nap).min(wait.deadline());
        if wakeups.wait_until(until) == Woke::Cancelled {
            return Ok(None);
        }
    }
}
