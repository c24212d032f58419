//! A small blocking connection pool.
//!
//! Hand-made rather than r2d2: it must never wait past a call's deadline,
//! must drop every idle connection at once after a server restart, and
//! in advisory mode lends connections out for as long as a lock is held.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::conn::{Conn, Fail, FailKind};

struct State {
    // Boxed on purpose: connections leave the pool as `Box<Conn>` and are
    // held that way by calls and advisory locks, so they never get copied.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Conn>>,
    /// Connections that exist: idle, lent out, or being opened.
    open: usize,
    closed: bool,
    /// Callers waiting for a connection: nobody is notified (a syscall)
    /// when nobody waits.
    waiting: usize,
}

/// Up to `pool_size` connections to one server, each with the mode's
/// statements prepared.
pub(crate) struct Pool {
    settings: Settings,
    statements: Vec<String>,
    state: Mutex<State>,
    freed: Condvar,
}

/// How long a close may wait for the server to acknowledge it.
const CLOSE_GRACE: Duration = Duration::from_millis(200);

impl Pool {
    pub fn new(settings: Settings, statements: Vec<String>) -> Self {
        Self {
            settings,
            statements,
            state: Mutex::new(State { idle: Vec::new(), open: 0, closed: false, waiting: 0 }),
            freed: Condvar::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (every change is one
        // assignment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The deadline of a call starting now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.settings.call_budget()
    }

    /// Takes an idle connection, or opens one when fewer than `pool_size`
    /// exist, or waits for one to come back, until `deadline`.
    pub fn get(&self, deadline: Instant) -> Result<Box<Conn>, Fail> {
        let mut st = self.state();
        loop {
            if st.closed {
                return Err(closed());
            }
            if let Some(conn) = st.idle.pop() {
                return Ok(conn);
            }
            if st.open < self.settings.pool_size {
                st.open += 1;
                drop(st);
                return Conn::open(&self.settings, &self.statements, deadline).inspect_err(|_| {
                    self.state().open -= 1;
                    self.freed.notify_one();
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Fail::new(
                    FailKind::Busy,
                    format!(
                        "all {} connections stayed busy (pool_size; in advisory mode each held \
                         lock keeps one)",
                        self.settings.pool_size
                    ),
                ));
            }
            st.waiting += 1;
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            st.waiting -= 1;
        }
    }

    /// Gives a healthy connection back.
    pub fn put(&self, mut conn: Box<Conn>) {
        if conn.is_broken() {
            return self.discard(conn);
        }
        conn.fresh = false;
        let mut st = self.state();
        if st.closed {
            st.open -= 1;
            drop(st);
            return conn.close(Instant::now() + CLOSE_GRACE);
        }
        st.idle.push(conn);
        let waiting = st.waiting > 0;
        drop(st);
        if waiting {
            self.freed.notify_one();
        }
    }

    /// Closes a connection that must not be reused.
    pub fn discard(&self, conn: Box<Conn>) {
        let waiting = {
            let mut st = self.state();
            st.open -= 1;
            st.waiting > 0
        };
        if waiting {
            self.freed.notify_one();
        }
        if conn.is_broken() {
            drop(conn);
        } else {
            conn.close(Instant::now() + CLOSE_GRACE);
        }
    }

    /// Drops every idle connection: after one turned out dead (a server
    /// restart, `pg_terminate_backend`), the others likely are too.
    pub fn discard_idle(&self) {
        let idle = {
            let mut st = self.state();
            st.open -= st.idle.len();
            std::mem::take(&mut st.idle)
        };
        self.freed.notify_all();
        drop(idle);
    }

    /// Runs `f` on a pooled connection. A connection-level failure on a
    /// reused connection is retried once on a new one, so a call after a
    /// server restart or a killed backend succeeds instead of failing once
    /// per stale connection; `f` must therefore be safe to repeat.
    ///
    /// Returns the connection with the result so a caller may keep it.
    pub fn attempt<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&mut Conn) -> Result<T, Fail>,
    ) -> Result<(T, Box<Conn>), Fail> {
        loop {
            let mut conn = self.get(deadline)?;
            match f(&mut conn) {
                Ok(v) => return Ok((v, conn)),
                Err(e) if e.keeps_connection() => {
                    self.put(conn);
                    return Err(e);
                }
                Err(e) => {
                    let retry = e.kind == FailKind::Connection && !conn.fresh;
                    self.discard(conn);
                    if !retry {
                        return Err(e);
                    }
                    self.discard_idle();
                }
            }
        }
    }

    /// [`attempt`](Self::attempt), giving the connection back afterwards.
    pub fn with_conn<T>(
        &self,
        deadline: Instant,
        f: impl FnMut(&mut Conn) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let (v, conn) = self.attempt(deadline, f)?;
        self.put(conn);
        Ok(v)
    }

    /// Closes every idle connection and refuses further work; connections
    /// lent out are closed as they come back.
    pub fn close(&self) {
        let idle = {
            let mut st = self.state();
            st.closed = true;
            st.open -= st.idle.len();
            std::mem::take(&mut st.idle)
        };
        self.freed.notify_all();
        let until = Instant::now() + CLOSE_GRACE;
        for conn in idle {
            conn.close(until);
        }
    }
}

pub(crate) fn closed() -> Fail {
    Fail::new(FailKind::Closed, "this instance was cleaned up")
}
