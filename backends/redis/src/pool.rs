//! A small bounded pool of connections to one server (or one cluster).
//!
//! It keeps at most `cap` connections open, hands idle ones out most
//! recently used first, and makes a caller wait (until its deadline) only
//! when all `cap` are busy. Connections are opened by the caller, outside
//! the lock, so a slow connect never blocks threads that have one.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Why no connection could be leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// `close` was called.
    Closed,
    /// All connections stayed busy until the deadline.
    Exhausted,
}

pub struct Pool<T> {
    state: Mutex<State<T>>,
    freed: Condvar,
    cap: usize,
}

struct State<T> {
    idle: Vec<T>,
    /// Idle plus leased, including leases still connecting.
    open: usize,
    /// Threads blocked in `take`: a notify costs a syscall, so it is only
    /// sent when someone waits.
    waiting: usize,
    closed: bool,
}

/// The right to use one connection slot. `conn` is `None` when the caller
/// must connect first. Dropping the lease returns the connection, or frees
/// the slot when `conn` was taken or never filled (a broken connection is
/// discarded by setting `conn = None`).
pub struct Lease<'p, T> {
    pool: &'p Pool<T>,
    /// The connection, once there is one.
    pub conn: Option<T>,
    /// Whether `conn` came from the idle list (it may have gone stale).
    pub reused: bool,
}

impl<T> Pool<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(State { idle: Vec::new(), open: 0, waiting: 0, closed: false }),
            freed: Condvar::new(),
            cap,
        }
    }

    /// The most connections this pool keeps open.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the state inconsistent
        // (every update is a single push, pop or counter step), so poisoning
        // is ignored rather than turned into a second panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection, or a free slot to connect into, waiting until
    /// `deadline` when every slot is busy.
    pub fn take(&self, deadline: Instant) -> Result<Lease<'_, T>, PoolError> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return Err(PoolError::Closed);
            }
            if let Some(conn) = state.idle.pop() {
                return Ok(Lease { pool: self, conn: Some(conn), reused: true });
            }
            if state.open < self.cap {
                state.open += 1;
                return Ok(Lease { pool: self, conn: None, reused: false });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PoolError::Exhausted);
            }
            state.waiting += 1;
            state =
                self.freed.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            state.waiting -= 1;
        }
    }

    /// Drops every idle connection: after one turned out stale (the server
    /// restarted), the others almost certainly are too.
    pub fn clear_idle(&self) {
        let idle = {
            let mut state = self.lock();
            let idle = std::mem::take(&mut state.idle);
            state.open -= idle.len();
            idle
        };
        drop(idle);
        self.freed.notify_all();
    }

    /// Refuses every later `take` and drops the idle connections; leased
    /// ones are dropped as they come back.
    pub fn close(&self) {
        let idle = {
            let mut state = self.lock();
            state.closed = true;
            let idle = std::mem::take(&mut state.idle);
            state.open -= idle.len();
            idle
        };
        drop(idle);
        self.freed.notify_all();
    }

    fn give_back(&self, conn: Option<T>) {
        let mut state = self.lock();
        let wake = state.waiting > 0;
        let dropped = match conn {
            Some(conn) if !state.closed => {
                state.idle.push(conn);
                None
            }
            other => {
                state.open -= 1;
                other
            }
        };
        drop(state);
        drop(dropped);
        if wake {
            self.freed.notify_one();
        }
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        self.pool.give_back(self.conn.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[test]
    fn reuses_and_caps() {
        let pool = Pool::new(2);
        let mut a = pool.take(soon()).unwrap();
        assert!(a.conn.is_none() && !a.reused);
        a.conn = Some(1);
        let b = pool.take(soon()).unwrap();
        assert_eq!(pool.take(soon()).err(), Some(PoolError::Exhausted));
        drop(a);
        let a = pool.take(soon()).unwrap();
        assert_eq!((a.conn, a.reused), (Some(1), true));
        drop(b); // never connected: frees its slot
        let c = pool.take(soon()).unwrap();
        assert!(c.conn.is_none());
    }

    #[test]
    fn waiter_gets_a_returned_connection() {
        let pool = Pool::new(1);
        let mut a = pool.take(soon()).unwrap();
        a.conn = Some(7);
        std::thread::scope(|s| {
            let waiter =
                s.spawn(|| pool.take(Instant::now() + Duration::from_secs(5)).map(|l| l.conn));
            std::thread::sleep(Duration::from_millis(20));
            drop(a);
            assert_eq!(waiter.join().unwrap(), Ok(Some(7)));
        });
    }

    #[test]
    fn close_and_clear() {
        let pool = Pool::new(3);
        let mut a = pool.take(soon()).unwrap();
        a.conn = Some(1);
        drop(a);
        pool.clear_idle();
        let b = pool.take(soon()).unwrap();
        assert!(b.conn.is_none());
        pool.close();
        assert_eq!(pool.take(soon()).err(), Some(PoolError::Closed));
        drop(b);
        assert_eq!(pool.lock().open, 0);
    }
}
