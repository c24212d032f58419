//! One connection: a sync `mysql` client whose socket timeouts bound every
//! wait for the server, with the mode's statements prepared on it.

use std::time::{Duration, Instant};

use mysql::prelude::{FromRow, Queryable};
use mysql::{Params, Statement};

use crate::config::Settings;
use crate::fail::{Fail, FailKind};

/// One open connection and its prepared statements.
pub(crate) struct Conn {
    inner: mysql::Conn,
    stmts: Vec<Statement>,
    /// True until the connection has come back to the pool once: a failure
    /// on a fresh connection is not worth retrying on another.
    pub fresh: bool,
    /// Set by a connection-level failure or a timeout: never reuse.
    broken: bool,
}

/// Builds the driver's lazily compiled server-version regexes, once per
/// process, before any socket is open. Compiling them takes long enough in
/// a slow process (under valgrind, on a loaded machine) that doing it
/// between the server's greeting and the reply can outlast the server's
/// `connect_timeout` (10 s by default), which then resets the connection.
fn warm_up_driver() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use mysql::consts::{CapabilityFlags, StatusFlags};
        let greeting = mysql_common::packets::HandshakePacket::new(
            10,
            &b"5.5.5-10.11.0-MariaDB"[..],
            0,
            [0; 8],
            None::<&[u8]>,
            CapabilityFlags::empty(),
            0,
            StatusFlags::empty(),
            None::<&[u8]>,
        );
        let _ = (greeting.server_version_parsed(), greeting.maria_db_server_version_parsed());
    });
}

impl Conn {
    /// Opens a connection (running the session setup) and prepares
    /// `statements` on it, giving up at `deadline` or after the connect
    /// timeout, whichever comes first.
    pub fn open(s: &Settings, statements: &[String], deadline: Instant) -> Result<Self, Fail> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Fail::new(FailKind::Timeout, "the call ran out of time before connecting"));
        }
        warm_up_driver();
        let connect = left.min(s.connect_timeout);
        // Every read of the handshake waits at most the connect budget too.
        let wait = connect.min(s.statement_timeout).max(Duration::from_millis(1));
        let opts = mysql::OptsBuilder::from_opts(s.opts.clone())
            .tcp_connect_timeout(Some(connect))
            .read_timeout(Some(wait))
            .write_timeout(Some(wait));
        let inner = mysql::Conn::new(opts).map_err(|e| {
            let fail = Fail::from_mysql(&e);
            let kind = if fail.kind == FailKind::Timeout {
                FailKind::Timeout
            } else {
                FailKind::Connection
            };
            Fail::new(kind, format!("cannot connect: {}", fail.message))
        })?;
        let mut conn =
            Self { inner, stmts: Vec::with_capacity(statements.len()), fresh: true, broken: false };
        for sql in statements {
            let stmt = conn.run(|c| c.prep(sql))?;
            conn.stmts.push(stmt);
        }
        Ok(conn)
    }

    fn run<T>(&mut self, f: impl FnOnce(&mut mysql::Conn) -> mysql::Result<T>) -> Result<T, Fail> {
        f(&mut self.inner).map_err(|e| {
            let fail = Fail::from_mysql(&e);
            if !fail.keeps_connection() {
                self.broken = true;
            }
            fail
        })
    }

    /// Runs prepared statement `stmt`; the rows it changed and the
    /// `LAST_INSERT_ID()` it set.
    pub fn exec(&mut self, stmt: usize, params: impl Into<Params>) -> Result<(u64, u64), Fail> {
        let stmt = self.stmts[stmt].clone();
        self.run(|c| {
            c.exec_drop(&stmt, params)?;
            Ok((c.affected_rows(), c.last_insert_id()))
        })
    }

    /// Runs prepared statement `stmt` and returns its first row.
    pub fn first<T: FromRow>(
        &mut self,
        stmt: usize,
        params: impl Into<Params>,
    ) -> Result<Option<T>, Fail> {
        let stmt = self.stmts[stmt].clone();
        self.run(|c| c.exec_first(&stmt, params))
    }

    /// Runs one unprepared statement (setup only) and returns its rows.
    pub fn query<T: FromRow>(
        &mut self,
        sql: &str,
        params: impl Into<Params>,
    ) -> Result<Vec<T>, Fail> {
        self.run(|c| c.exec(sql, params))
    }

    /// Runs one unprepared statement without parameters (the text
    /// protocol, for what cannot be prepared), dropping its result.
    pub fn text(&mut self, sql: &str) -> Result<(), Fail> {
        self.run(|c| c.query_drop(sql))
    }

    /// The server's id of this session (`CONNECTION_ID()`).
    pub fn connection_id(&self) -> u32 {
        self.inner.connection_id()
    }

    /// Whether the connection is known to be unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }
}
