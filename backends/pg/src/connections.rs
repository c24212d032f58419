//! The connections of one instance: the kit's bounded pool, plus what is
//! PostgreSQL's own (opening with the mode's statements prepared, closing
//! with a goodbye, retrying a stale connection once).
//!
//! Connections leave the pool for as long as a caller needs them: one call,
//! or in advisory mode the life of a held lock.

use std::time::{Duration, Instant};

use bext_locking_kit::message;
use bext_locking_kit::pool::{self, PoolError, Taken};

use crate::config::Settings;
use crate::conn::Conn;
use crate::deadlines::Watch;
use crate::fail::{Fail, FailKind};

/// Up to `pool_size` connections to one server, each with the mode's
/// statements prepared.
pub(crate) struct Pool {
    settings: Settings,
    statements: Vec<String>,
    // Boxed: a connection (with its runtime) is large, and moves between the
    // pool, calls and held locks.
    inner: pool::Pool<Box<Conn>>,
    /// The deadlines of every connection's calls.
    watch: Watch,
}

/// How long a close may wait for the server to acknowledge it.
const CLOSE_GRACE: Duration = Duration::from_millis(200);

// Boxed on purpose: that is how connections live in the pool.
#[allow(clippy::vec_box)]
fn close_all(conns: Vec<Box<Conn>>) {
    let until = Instant::now() + CLOSE_GRACE;
    for conn in conns {
        conn.close(until);
    }
}

impl Pool {
    pub fn new(settings: Settings, statements: Vec<String>, watch: Watch) -> Self {
        let inner = pool::Pool::new(settings.pool_size);
        Self { settings, statements, inner, watch }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The deadline of a call starting now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.settings.call_budget()
    }

    /// Takes an idle connection, or opens one when fewer than `pool_size`
    /// exist, or waits for one to come back, until `deadline`.
    pub fn get(&self, deadline: Instant) -> Result<Box<Conn>, Fail> {
        match self.inner.take(deadline) {
            Ok(Taken::Idle(conn)) => Ok(conn),
            Ok(Taken::Vacant) => {
                Conn::open(&self.settings, &self.statements, deadline, &self.watch)
                    .inspect_err(|_| self.inner.vacate())
            }
            Err(PoolError::Closed) => Err(closed()),
            Err(PoolError::Exhausted { cap }) => Err(Fail::new(
                FailKind::Busy,
                format!(
                    "all {cap} connections stayed busy (pool_size; in advisory mode each held \
                     lock keeps one)"
                ),
            )),
        }
    }

    /// Opens a connection outside the pool (not counted in `pool_size`),
    /// with the mode's statements prepared: a waiter's, which its owner
    /// closes.
    pub fn open_dedicated(&self, deadline: Instant) -> Result<Box<Conn>, Fail> {
        Conn::open(&self.settings, &self.statements, deadline, &self.watch)
    }

    /// Gives a healthy connection back.
    pub fn put(&self, mut conn: Box<Conn>) {
        if conn.is_broken() {
            return self.discard(conn);
        }
        conn.fresh = false;
        if let Some(refused) = self.inner.give_back(conn) {
            refused.close(Instant::now() + CLOSE_GRACE);
        }
    }

    /// Closes a connection that must not be reused.
    pub fn discard(&self, conn: Box<Conn>) {
        self.inner.vacate();
        if conn.is_broken() {
            drop(conn);
        } else {
            conn.close(Instant::now() + CLOSE_GRACE);
        }
    }

    /// Drops every idle connection: after one turned out dead (a server
    /// restart, `pg_terminate_backend`), the others likely are too.
    pub fn discard_idle(&self) {
        drop(self.inner.clear_idle());
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
        close_all(self.inner.close());
    }
}

pub(crate) fn closed() -> Fail {
    Fail::new(FailKind::Closed, message::CLOSED)
}
