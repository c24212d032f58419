//! One connection: a `tokio-postgres` client driven on its own
//! current-thread runtime by the calling thread, with a deadline on every
//! call.
//!
//! This is what the sync `postgres` crate does, plus the deadline: its
//! `Client` waits as long as the server takes, so a frozen server or a
//! black-holed network would hang a `try_lock` forever.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Connection, NoTls, Row, Socket, Statement};

use crate::config::Settings;
use crate::fail::{Fail, FailKind, describe_error};

type Driver = Connection<Socket, NoTlsStream>;

/// One open connection and its prepared statements.
pub(crate) struct Conn {
    // Fields drop in order: the client and socket before their runtime.
    client: Client,
    /// Reads and writes the socket; `None` once the connection ended.
    driver: Option<Pin<Box<Driver>>>,
    /// Why the driver stopped, to explain the "connection closed" that
    /// pending calls then see.
    ended: Option<String>,
    statement_timeout: Duration,
    /// One timer per connection, re-armed for every call (cheaper than a
    /// new one each time).
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The statements of the mode, prepared once per connection.
    pub stmts: Vec<Statement>,
    /// True until the connection has come back to the pool once: a failure
    /// on a fresh connection is not worth retrying on another.
    pub fresh: bool,
    rt: Runtime,
}

impl Conn {
    /// Opens a connection and prepares `statements` on it, all before
    /// `deadline` and within the connect timeout.
    /// Boxed: a connection (with its runtime) is large, and moves between
    /// the pool, calls and held locks on every call.
    pub fn open(s: &Settings, statements: &[String], deadline: Instant) -> Result<Box<Self>, Fail> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Fail::new(FailKind::Connection, format!("cannot start a runtime: {e}")))?;
        let until = deadline.min(Instant::now() + s.connect_timeout);
        // Timers must be made inside the runtime, hence the async blocks.
        let opened =
            rt.block_on(async { tokio::time::timeout_at(until.into(), s.pg.connect(NoTls)).await });
        let (client, driver) = match opened {
            Err(_) => {
                return Err(Fail::new(
                    FailKind::Timeout,
                    format!("connecting took longer than {} ms", s.connect_timeout.as_millis()),
                ));
            }
            Ok(Err(e)) => {
                return Err(Fail::new(
                    FailKind::Connection,
                    format!("cannot connect: {}", describe_error(&e)),
                ));
            }
            Ok(Ok(pair)) => pair,
        };
        // A timer must be made inside its runtime.
        let timer = {
            let _in = rt.enter();
            Box::pin(tokio::time::sleep_until(until.into()))
        };
        let mut conn = Box::new(Self {
            client,
            timer,
            driver: Some(Box::pin(driver)),
            ended: None,
            statement_timeout: s.statement_timeout,
            stmts: Vec::with_capacity(statements.len()),
            fresh: true,
            rt,
        });
        for sql in statements {
            let stmt = conn.drive(until, |c| c.prepare(sql))?;
            conn.stmts.push(stmt);
        }
        Ok(conn)
    }

    /// Runs one client future to completion, driving the socket meanwhile,
    /// and gives up at `deadline` (or after the statement timeout).
    fn drive<'c, T, F>(
        &'c mut self,
        deadline: Instant,
        call: impl FnOnce(&'c Client) -> F,
    ) -> Result<T, Fail>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>> + 'c,
    {
        let until = deadline.min(Instant::now() + self.statement_timeout);
        let Self { client, driver, ended, rt, statement_timeout, timer, .. } = self;
        // Pinned here, so the future `block_on` takes (and moves) holds a
        // reference to it: the client's query future is large, and copying
        // it into `block_on` was a measurable share of a pair.
        let mut fut = pin!(call(client));
        let out = rt.block_on(async {
            timer.as_mut().reset(until.into());
            poll_fn(|cx| {
                if let Some(d) = driver.as_mut() {
                    if let Poll::Ready(r) = d.as_mut().poll(cx) {
                        // Dropping the driver fails every pending call with
                        // "connection closed"; remember why it ended.
                        *ended = Some(match r {
                            Ok(()) => "the server closed the connection".to_owned(),
                            Err(e) => describe_error(&e),
                        });
                        *driver = None;
                    }
                }
                if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await
        });
        match out {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => {
                let mut fail = Fail::from_pg(&e);
                if let Some(why) = ended.as_deref() {
                    if !fail.message.contains(why) {
                        fail.message.push_str(&format!(" ({why})"));
                    }
                }
                Err(fail)
            }
            None => {
                let waited = if until < deadline { *statement_timeout } else { Duration::ZERO };
                Err(Fail::new(
                    FailKind::Timeout,
                    if waited.is_zero() {
                        "the call ran out of time waiting for the server".to_owned()
                    } else {
                        format!("no answer from the server within {} ms", waited.as_millis())
                    },
                ))
            }
        }
    }

    /// Runs prepared statement `stmt` and returns at most one row.
    pub fn query_opt(
        &mut self,
        stmt: usize,
        params: &[&(dyn ToSql + Sync)],
        deadline: Instant,
    ) -> Result<Option<Row>, Fail> {
        let stmt = self.stmts[stmt].clone();
        self.drive(deadline, move |c| async move { c.query_opt(&stmt, params).await })
    }

    /// Runs prepared statement `stmt` and returns the rows it touched.
    pub fn execute(
        &mut self,
        stmt: usize,
        params: &[&(dyn ToSql + Sync)],
        deadline: Instant,
    ) -> Result<u64, Fail> {
        let stmt = self.stmts[stmt].clone();
        self.drive(deadline, move |c| async move { c.execute(&stmt, params).await })
    }

    /// Runs one unprepared statement (setup only) and returns its rows.
    pub fn query_sql(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        deadline: Instant,
    ) -> Result<Vec<Row>, Fail> {
        self.drive(deadline, move |c| c.query(sql, params))
    }

    /// Whether the connection is known to be unusable.
    pub fn is_broken(&self) -> bool {
        self.driver.is_none() || self.client.is_closed()
    }

    /// Says goodbye to the server (so it ends the session at once, releasing
    /// any session lock) and closes the socket, waiting at most until
    /// `deadline`.
    pub fn close(self: Box<Self>, deadline: Instant) {
        let Self { client, driver, rt, .. } = *self;
        drop(client);
        if let Some(driver) = driver {
            // With its client gone, the driver sends Terminate and ends.
            let _ = rt.block_on(async { tokio::time::timeout_at(deadline.into(), driver).await });
        }
    }
}
