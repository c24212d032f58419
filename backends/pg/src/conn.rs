//! One connection: a `tokio-postgres` client driven on its own
//! current-thread runtime by the calling thread, with a deadline on every
//! call (kept by the instance's deadline thread, see `deadlines`).
//!
//! This is what the sync `postgres` crate does, plus the deadline: its
//! `Client` waits as long as the server takes, so a frozen server or a
//! black-holed network would hang a `try_lock` forever.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Row, Socket, Statement};

use crate::config::Settings;
use crate::deadlines::{Slot, Watch};
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
    /// Notifications (`LISTEN`) received and not yet taken; a connection
    /// listens to one channel at most, so a count is enough.
    notices: usize,
    /// This connection's deadline, one call at a time.
    deadline: Arc<Slot>,
    /// The statements of the mode, prepared once per connection.
    pub stmts: Vec<Statement>,
    /// True until the connection has come back to the pool once: a failure
    /// on a fresh connection is not worth retrying on another.
    pub fresh: bool,
    rt: Runtime,
}

impl Conn {
    /// Opens a connection and prepares `statements` on it, all before
    /// `deadline` and within the connect timeout; `watch` keeps the
    /// deadlines of its calls. Boxed: a connection (with its runtime) is
    /// large, and moves between the pool, calls and held locks on every
    /// call.
    pub fn open(
        s: &Settings,
        statements: &[String],
        deadline: Instant,
        watch: &Watch,
    ) -> Result<Box<Self>, Fail> {
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
        let mut conn = Box::new(Self {
            client,
            deadline: watch.slot(),
            driver: Some(Box::pin(driver)),
            ended: None,
            notices: 0,
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
        let waited = if until < deadline { self.statement_timeout } else { Duration::ZERO };
        self.drive_until(until, waited, None, call).0
    }

    /// Runs one client future to completion or `until`, driving the socket
    /// meanwhile. With `cancel`, a wake-up of that `Notify` sends the
    /// server a cancel request for the running statement (on this
    /// connection's runtime, beside the statement, which then ends with
    /// SQLSTATE 57014 unless it finished first). Returns whether a cancel
    /// was sent; the connection must then not be reused, as a cancel that
    /// lands late would hit its next statement. `waited` names the limit in
    /// the timeout message (zero: the caller's deadline).
    fn drive_until<'c, T, F>(
        &'c mut self,
        until: Instant,
        waited: Duration,
        cancel: Option<&Notify>,
        call: impl FnOnce(&'c Client) -> F,
    ) -> (Result<T, Fail>, bool)
    where
        F: Future<Output = Result<T, tokio_postgres::Error>> + 'c,
    {
        let Self { client, driver, ended, rt, deadline, notices, .. } = self;
        let token = cancel.map(|_| client.cancel_token());
        // Pinned here, so the future `block_on` takes (and moves) holds a
        // reference to it: the client's query future is large, and copying
        // it into `block_on` was a measurable share of a pair.
        let mut fut = pin!(call(client));
        let mut sent_cancel = false;
        let mut armed = deadline.arm(until);
        let out = rt.block_on(async {
            let mut woken = cancel.map(|n| Box::pin(n.notified()));
            let mut canceller: Option<Pin<Box<dyn Future<Output = ()>>>> = None;
            let mut result = None;
            poll_fn(|cx| {
                pump(driver, ended, notices, cx);
                if result.is_none() {
                    if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                        result = Some(r);
                    }
                }
                if let Some(w) = woken.as_mut() {
                    if w.as_mut().poll(cx).is_ready() {
                        woken = None;
                        if result.is_none() {
                            if let Some(token) = token.clone() {
                                sent_cancel = true;
                                canceller = Some(Box::pin(async move {
                                    let _ = token.cancel_query(NoTls).await;
                                }));
                            }
                        }
                    }
                }
                if let Some(c) = canceller.as_mut() {
                    if c.as_mut().poll(cx).is_ready() {
                        canceller = None;
                    }
                }
                // A cancel in flight is seen through, so that it has
                // reached the server when the caller decides what to do.
                if result.is_some() && canceller.is_none() {
                    return Poll::Ready(result.take());
                }
                if armed.passed(cx) {
                    return Poll::Ready(result.take());
                }
                Poll::Pending
            })
            .await
        });
        drop(armed);
        let out = match out {
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
            None => Err(Fail::new(
                FailKind::Timeout,
                if waited.is_zero() {
                    "the call ran out of time waiting for the server".to_owned()
                } else {
                    format!("no answer from the server within {} ms", waited.as_millis())
                },
            )),
        };
        (out, sent_cancel)
    }

    /// Drives the connection, doing nothing else, until a notification
    /// (`LISTEN`) arrives, `until` passes or `wake` is notified. Returns
    /// whether a notification came (those that arrived earlier, during a
    /// statement, count too: see [`take_notices`](Self::take_notices)).
    pub fn wait_notice(&mut self, until: Instant, wake: &Notify) -> Result<bool, Fail> {
        let Self { driver, ended, rt, deadline, notices, .. } = self;
        if *notices > 0 {
            return Ok(true);
        }
        let mut armed = deadline.arm(until);
        rt.block_on(async {
            let mut woken = pin!(wake.notified());
            poll_fn(|cx| {
                pump(driver, ended, notices, cx);
                if *notices > 0 {
                    return Poll::Ready(());
                }
                if driver.is_none() {
                    return Poll::Ready(());
                }
                if woken.as_mut().poll(cx).is_ready() || armed.passed(cx) {
                    return Poll::Ready(());
                }
                Poll::Pending
            })
            .await
        });
        drop(armed);
        if *notices > 0 {
            return Ok(true);
        }
        if driver.is_none() {
            let why = ended.clone().unwrap_or_else(|| "the connection ended".to_owned());
            return Err(Fail::new(FailKind::Connection, why));
        }
        Ok(false)
    }

    /// How many notifications arrived since the last call, clearing the
    /// count.
    pub fn take_notices(&mut self) -> usize {
        std::mem::take(&mut self.notices)
    }

    /// Runs one or more unprepared statements without parameters (the
    /// simple protocol), within the statement timeout.
    pub fn batch(&mut self, sql: &str, deadline: Instant) -> Result<(), Fail> {
        self.drive(deadline, move |c| c.batch_execute(sql))
    }

    /// Runs prepared statement `stmt` until `until` (past the statement
    /// timeout: the caller has set the server's limits for it), sending a
    /// cancel request when `cancel` is notified. Returns whether a cancel
    /// was sent: the connection must then be closed, not reused.
    pub fn query_opt_cancellable(
        &mut self,
        stmt: usize,
        params: &[&(dyn ToSql + Sync)],
        until: Instant,
        cancel: &Notify,
    ) -> (Result<Option<Row>, Fail>, bool) {
        let stmt = self.stmts[stmt].clone();
        self.drive_until(until, Duration::ZERO, Some(cancel), move |c| async move {
            c.query_opt(&stmt, params).await
        })
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

/// Reads and writes the socket as far as it goes without blocking,
/// counting notifications; on the connection's end, drops the driver and
/// remembers why (dropping it fails every pending call with "connection
/// closed").
fn pump(
    driver: &mut Option<Pin<Box<Driver>>>,
    ended: &mut Option<String>,
    notices: &mut usize,
    cx: &mut Context<'_>,
) {
    let Some(d) = driver.as_mut() else { return };
    loop {
        match d.as_mut().poll_message(cx) {
            Poll::Ready(Some(Ok(AsyncMessage::Notification(_)))) => *notices += 1,
            // Notices (warnings) are of no use to a lock.
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(e))) => {
                *ended = Some(describe_error(&e));
                *driver = None;
                return;
            }
            Poll::Ready(None) => {
                *ended = Some("the server closed the connection".to_owned());
                *driver = None;
                return;
            }
            Poll::Pending => return,
        }
    }
}
