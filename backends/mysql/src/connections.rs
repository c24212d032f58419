//! The connections of one instance: the kit's bounded pool, plus what is
//! MySQL's own (opening with the mode's statements prepared, retrying a
//! stale connection once, running a deadlock victim again).
//!
//! Connections leave the pool for as long as a caller needs them: one call,
//! or in get_lock mode the life of a held lock.

use std::time::Instant;

use bext_locking_kit::message;
use bext_locking_kit::pool::{self, PoolError, Taken};

use crate::config::Settings;
use crate::conn::Conn;
use crate::fail::{Fail, FailKind};

/// Up to `pool_size` connections to one server, each with the mode's
/// statements prepared.
pub(crate) struct Pool {
    settings: Settings,
    statements: Vec<String>,
    inner: pool::Pool<Conn>,
}

/// How often one call runs a statement InnoDB picked as a deadlock victim
/// before it reports the deadlock.
const DEADLOCK_TRIES: usize = 5;

impl Pool {
    pub fn new(settings: Settings, statements: Vec<String>) -> Self {
        let inner = pool::Pool::new(settings.pool_size);
        Self { settings, statements, inner }
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
    pub fn get(&self, deadline: Instant) -> Result<Conn, Fail> {
        match self.inner.take(deadline) {
            Ok(Taken::Idle(conn)) => Ok(conn),
            Ok(Taken::Vacant) => Conn::open(&self.settings, &self.statements, deadline)
                .inspect_err(|_| self.inner.vacate()),
            Err(PoolError::Closed) => Err(closed()),
            Err(PoolError::Exhausted { cap }) => Err(Fail::new(
                FailKind::Busy,
                format!(
                    "all {cap} connections stayed busy (pool_size; in get_lock mode each held \
                     lock keeps one)"
                ),
            )),
        }
    }

    /// Gives a healthy connection back.
    pub fn put(&self, mut conn: Conn) {
        if conn.is_broken() {
            return self.discard(conn);
        }
        conn.fresh = false;
        // Refused after close: dropping it says goodbye to the server.
        drop(self.inner.give_back(conn));
    }

    /// Closes a connection that must not be reused (dropping it tells the
    /// server, which ends the session and frees its named locks).
    pub fn discard(&self, conn: Conn) {
        self.inner.vacate();
        drop(conn);
    }

    /// Drops every idle connection: after one turned out dead (a server
    /// restart, a `KILL`), the others likely are too.
    pub fn discard_idle(&self) {
        drop(self.inner.clear_idle());
    }

    /// Runs `f` on a pooled connection. A connection-level failure on a
    /// reused connection is retried once on a new one, so a call after a
    /// server restart or a killed session succeeds instead of failing once
    /// per stale connection, and a deadlock victim runs again (nothing of
    /// it was applied); `f` must therefore be safe to repeat.
    ///
    /// Returns the connection with the result so a caller may keep it.
    pub fn attempt<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&mut Conn) -> Result<T, Fail>,
    ) -> Result<(T, Conn), Fail> {
        let mut deadlocks = 0;
        loop {
            let mut conn = self.get(deadline)?;
            match f(&mut conn) {
                Ok(v) => return Ok((v, conn)),
                Err(e) if e.kind == FailKind::Deadlock => {
                    self.put(conn);
                    deadlocks += 1;
                    if deadlocks >= DEADLOCK_TRIES || Instant::now() >= deadline {
                        return Err(e);
                    }
                }
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
        drop(self.inner.close());
    }
}

pub(crate) fn closed() -> Fail {
    Fail::new(FailKind::Closed, message::CLOSED)
}
