//! Waiting for another connection's write lock.
//!
//! SQLite's own busy timeout sleeps 1, 2, 5, 10 … up to 100 ms between
//! tries. A process that releases a lease and asks for it again at once
//! takes the write lock while its rivals sleep, so under contention one
//! process could keep a key almost to itself. This handler retries after
//! tens of microseconds at first and backs off to 1 ms, so rivals get the
//! write lock within a fraction of a millisecond of it coming free.
//!
//! SQLite calls the handler on the thread that runs the statement, and each
//! connection is used by one thread at a time (behind the instance's mutex),
//! so the deadline of the current call lives in a thread-local.
//!
//! Public so that benchmarks can give a plain `rusqlite` connection the very
//! same waiting behaviour.

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    /// When the statement running on this thread must give up waiting.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f`, letting each statement in it wait up to `timeout` for the
/// write lock, on connections that use [`handler`]. Outside `within` the
/// handler gives up at once.
pub fn within<T>(timeout: Duration, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Instant>);
    impl Drop for Reset {
        fn drop(&mut self) {
            DEADLINE.set(self.0);
        }
    }
    let _reset = Reset(DEADLINE.replace(Some(Instant::now() + timeout)));
    f()
}

/// The busy handler to install with `Connection::busy_handler`: `attempt`
/// counts the tries so far for this lock. Returns whether SQLite should try
/// again.
pub fn handler(attempt: i32) -> bool {
    let Some(deadline) = DEADLINE.get() else { return false };
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    let pause = match attempt {
        0..20 => Duration::from_micros(50),
        20..100 => Duration::from_micros(200),
        _ => Duration::from_millis(1),
    };
    std::thread::sleep(pause.min(deadline - now));
    true
}
