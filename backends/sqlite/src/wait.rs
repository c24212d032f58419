//! Waiting for a lock without a server to notify us.
//!
//! SQLite has no way to tell another process that a row changed, so a
//! waiter watches the file itself through `PRAGMA data_version`: a number
//! that changes on a connection exactly when *another* connection (in any
//! process) has committed to the file since this connection last looked.
//! Asking is a cheap check, not a query of the table: a shared read of the
//! WAL index header in the `-shm` mapping, with no disk read. The waiter
//! asks every [`WATCH_FIRST`] doubling to [`WATCH_MAX`] (the bounded floor),
//! and only when the number moved does it read the key's row (one indexed
//! read) and, when the lease is over, try to take it (a write). Between
//! those it also wakes at the holder's `expires_at_ms`, so an expiry is
//! noticed on time with no commit at all.
//!
//! The instance's own connection sees no change from its own commits, so a
//! release by another thread of the same instance wakes its waiters
//! through [`Releases`], a condition variable, at once.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The first pause between two `data_version` checks of one wait.
pub const WATCH_FIRST: Duration = Duration::from_millis(1);
/// The longest pause between two `data_version` checks: a release by
/// another process is seen within this (plus the try that takes the lock).
pub const WATCH_MAX: Duration = Duration::from_millis(4);

/// Releases made through one instance, for that instance's waiters (its
/// connection cannot see its own commits in `data_version`).
#[derive(Default)]
pub(crate) struct Releases {
    state: Mutex<Generation>,
    changed: Condvar,
}

#[derive(Default)]
struct Generation {
    /// Bumped by every release, force release, cleanup and cancel.
    count: u64,
    /// Threads sleeping in [`Releases::wait_past`]: a notify is a system
    /// call even when nobody waits, so a release (every pair) sends one
    /// only when someone does.
    sleepers: usize,
}

impl Releases {
    fn lock(&self) -> std::sync::MutexGuard<'_, Generation> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().count
    }

    /// Wakes every waiter of this instance.
    pub(crate) fn bump(&self) {
        let mut g = self.lock();
        g.count += 1;
        let wake = g.sleepers > 0;
        drop(g);
        if wake {
            self.changed.notify_all();
        }
    }

    /// Sleeps up to `d`, or until the generation is no longer `seen`.
    /// Returns whether it moved.
    pub(crate) fn wait_past(&self, seen: u64, d: Duration) -> bool {
        let mut g = self.lock();
        // Counted under the lock a bump takes, so a bump after this
        // check sees the sleeper and notifies.
        g.sleepers += 1;
        let (mut g, _) = self
            .changed
            .wait_timeout_while(g, d, |g| g.count == seen)
            .unwrap_or_else(PoisonError::into_inner);
        g.sleepers -= 1;
        g.count != seen
    }
}

/// When the next check of a wait is due: the next `data_version` look,
/// never past the holder's expiry or the wait's deadline.
pub(crate) fn next_pause(pause: Duration, wake_at: Instant) -> Duration {
    pause.min(wake_at.saturating_duration_since(Instant::now()))
}
