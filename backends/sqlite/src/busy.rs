//! Waiting for another connection's write lock.
//!
//! SQLite's own busy timeout sleeps 1, 2, 5, 10 … up to 100 ms between
//! tries. A process that releases a lease and asks for it again at once
//! takes the write lock while its rivals sleep, so under contention one
//! process could keep a key almost to itself (measured: 1 acquisition in
//! 665 for one of four processes). This handler retries after 25 µs and
//! doubles the pause up to 1 ms, so rivals get the write lock soon after it
//! comes free, without the CPU cost of polling at a fixed short interval
//! (which halved the throughput of four processes on a disk file).
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
    // 25 µs doubling to 1 ms.
    let pause = Duration::from_micros((25u64 << attempt.clamp(0, 6)).min(1_000));
    std::thread::sleep(pause.min(deadline - now));
    true
}
