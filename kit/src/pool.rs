//! A bounded pool of connections whose waits end at a deadline.
//!
//! It keeps at most `cap` connections open, hands idle ones out most
//! recently used first, and makes a caller wait (until its deadline) only
//! when all `cap` are busy. Connections are opened by the caller, outside
//! the lock, so a slow connect never blocks threads that have one: a
//! [`Taken::Vacant`] slot is counted as open until it is filled and given
//! back, or [vacated](Pool::vacate).
//!
//! Two ways to use it: [`Pool::lease`] for a connection used within one call
//! (the [`Lease`] gives it back when dropped), or [`Pool::take`] with
//! [`give_back`](Pool::give_back)/[`vacate`](Pool::vacate) for one that is
//! kept longer (a session lock held on its connection).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::message;

/// Why no connection could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// [`close`](Pool::close) was called.
    Closed,
    /// All connections stayed busy until the deadline.
    Exhausted {
        /// The pool's size, for the message.
        cap: usize,
    },
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Closed => f.write_str(message::CLOSED),
            PoolError::Exhausted { cap } => f.write_str(&message::pool_exhausted(*cap)),
        }
    }
}

/// What [`Pool::take`] handed out.
#[derive(Debug)]
pub enum Taken<T> {
    /// An idle connection (it may have gone stale since it was last used).
    Idle(T),
    /// A free slot: open a connection into it, then give it back, or
    /// vacate the slot if opening failed.
    Vacant,
}

/// Up to `cap` connections of type `T`.
pub struct Pool<T> {
    state: Mutex<State<T>>,
    freed: Condvar,
    cap: usize,
}

struct State<T> {
    idle: Vec<T>,
    /// Idle plus handed out, including vacant slots being filled.
    open: usize,
    /// Threads waiting in `take`: a notify costs a syscall, so it is only
    /// sent when someone waits.
    waiting: usize,
    closed: bool,
}

impl<T> Pool<T> {
    /// An empty pool of at most `cap` connections.
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
        // Every update is a single push, pop or counter step, so a panic
        // while the lock is held cannot leave the state inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, or a free slot to connect into, waiting until
    /// `deadline` when every slot is busy.
    pub fn take(&self, deadline: Instant) -> Result<Taken<T>, PoolError> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return Err(PoolError::Closed);
            }
            if let Some(conn) = state.idle.pop() {
                return Ok(Taken::Idle(conn));
            }
            if state.open < self.cap {
                state.open += 1;
                return Ok(Taken::Vacant);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PoolError::Exhausted { cap: self.cap });
            }
            state.waiting += 1;
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiting -= 1;
        }
    }

    /// [`take`](Self::take) as a [`Lease`] that gives the connection back
    /// (or frees its slot) when dropped.
    pub fn lease(&self, deadline: Instant) -> Result<Lease<'_, T>, PoolError> {
        Ok(match self.take(deadline)? {
            Taken::Idle(conn) => Lease { pool: self, conn: Some(conn), reused: true },
            Taken::Vacant => Lease { pool: self, conn: None, reused: false },
        })
    }

    /// Returns a healthy connection to the idle list. After `close` it is
    /// handed back instead, for the caller to close as it sees fit.
    #[must_use = "a connection returned after close must be closed by the caller"]
    pub fn give_back(&self, conn: T) -> Option<T> {
        let mut state = self.lock();
        let wake = state.waiting > 0;
        let refused = if state.closed {
            state.open -= 1;
            Some(conn)
        } else {
            state.idle.push(conn);
            None
        };
        drop(state);
        if wake {
            self.freed.notify_one();
        }
        refused
    }

    /// Frees the slot of a connection that was dropped, or never opened.
    pub fn vacate(&self) {
        let wake = {
            let mut state = self.lock();
            state.open -= 1;
            state.waiting > 0
        };
        if wake {
            self.freed.notify_one();
        }
    }

    /// Takes every idle connection out of the pool (for the caller to
    /// close): after one turned out stale, the others almost certainly are.
    pub fn clear_idle(&self) -> Vec<T> {
        let idle = {
            let mut state = self.lock();
            let idle = std::mem::take(&mut state.idle);
            state.open -= idle.len();
            idle
        };
        self.freed.notify_all();
        idle
    }

    /// Refuses every later `take` and returns the idle connections (for the
    /// caller to close); connections handed out come back refused.
    pub fn close(&self) -> Vec<T> {
        self.lock().closed = true;
        self.clear_idle()
    }

    /// How many connections are open (idle, handed out, or being opened).
    pub fn open(&self) -> usize {
        self.lock().open
    }
}

/// The right to use one connection slot. `conn` is `None` when the caller
/// must connect first. Dropping the lease gives the connection back, or
/// frees the slot when `conn` was taken or never filled (so a broken
/// connection is discarded by setting `conn = None`).
pub struct Lease<'p, T> {
    pool: &'p Pool<T>,
    /// The connection, once there is one.
    pub conn: Option<T>,
    /// Whether `conn` came from the idle list (it may have gone stale).
    pub reused: bool,
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        match self.conn.take() {
            Some(conn) => drop(self.pool.give_back(conn)),
            None => self.pool.vacate(),
        }
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
        let mut a = pool.lease(soon()).unwrap();
        assert!(a.conn.is_none() && !a.reused);
        a.conn = Some(1);
        let b = pool.lease(soon()).unwrap();
        assert_eq!(pool.lease(soon()).err(), Some(PoolError::Exhausted { cap: 2 }));
        drop(a);
        let a = pool.lease(soon()).unwrap();
        assert_eq!((a.conn, a.reused), (Some(1), true));
        drop(b); // never connected: frees its slot
        let c = pool.lease(soon()).unwrap();
        assert!(c.conn.is_none());
    }

    #[test]
    fn waiter_gets_a_returned_connection() {
        let pool = Pool::new(1);
        let mut a = pool.lease(soon()).unwrap();
        a.conn = Some(7);
        std::thread::scope(|s| {
            let waiter =
                s.spawn(|| pool.lease(Instant::now() + Duration::from_secs(5)).map(|l| l.conn));
            std::thread::sleep(Duration::from_millis(20));
            drop(a);
            assert_eq!(waiter.join().unwrap(), Ok(Some(7)));
        });
    }

    #[test]
    fn a_waiter_gets_a_vacated_slot() {
        let pool = Pool::<u8>::new(1);
        assert!(matches!(pool.take(soon()), Ok(Taken::Vacant)));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| pool.take(Instant::now() + Duration::from_secs(5)));
            std::thread::sleep(Duration::from_millis(20));
            pool.vacate();
            assert!(matches!(waiter.join().unwrap(), Ok(Taken::Vacant)));
        });
    }

    #[test]
    fn close_and_clear() {
        let pool = Pool::new(3);
        let mut a = pool.lease(soon()).unwrap();
        a.conn = Some(1);
        drop(a);
        assert_eq!(pool.clear_idle(), vec![1]);
        let b = pool.lease(soon()).unwrap();
        assert!(b.conn.is_none());
        assert_eq!(pool.close(), Vec::<i32>::new());
        assert_eq!(pool.take(soon()).err(), Some(PoolError::Closed));
        drop(b);
        assert_eq!(pool.open(), 0);
        // A connection handed back after close is refused, for the caller to close.
        let pool = Pool::new(1);
        assert!(matches!(pool.take(soon()), Ok(Taken::Vacant)));
        let _ = pool.close();
        assert_eq!(pool.give_back(5), Some(5));
        assert_eq!(pool.open(), 0);
        assert_eq!(PoolError::Closed.to_string(), "this instance was cleaned up");
        assert_eq!(
            PoolError::Exhausted { cap: 4 }.to_string(),
            "all 4 pooled connections stayed busy until the deadline"
        );
    }
}
