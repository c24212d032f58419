//! One Redis server: its pooled connections, and script calls on them that
//! never outlive a deadline.
//!
//! A call is split into *send* and *receive* so the quorum mode can put its
//! request on the wire to every master before waiting for any answer: the
//! masters work in parallel without a thread per request. Every socket
//! operation runs under the time left until the call's deadline (socket
//! read/write timeouts, connect timeout), so a hung server (SIGSTOP, a
//! black-holed network) costs at most that.

use std::time::{Duration, Instant};

use bext_locking::redact::Secrets;
use redis::{ErrorKind, RedisError, Value};

use crate::redact::{Voice, redact_url};
use crate::resp::Wire;
use crate::scripts::{self, Lua};
use bext_locking_kit::pool::{Lease, Pool};

/// A call: which script (or the one plain command), its keys and its
/// arguments.
pub struct Invocation<'a> {
    /// The script; `None` is the unfenced acquire, a plain
    /// `SET KEYS[1] ARGV[1] NX PX ARGV[2]` (one command, no Lua: what a
    /// hand-written client sends).
    pub lua: Option<&'a Lua>,
    /// `KEYS`.
    pub keys: &'a [&'a str],
    /// `ARGV`.
    pub args: &'a [&'a str],
}

impl Invocation<'_> {
    /// The command as bytes on the wire: `EVALSHA` normally, `EVAL` when the
    /// server does not know the script (after a restart or `SCRIPT FLUSH`).
    ///
    /// Written straight into one buffer of the exact size: the driver's
    /// command builder grows its buffers argument by argument, and those
    /// reallocations were the largest share of the plugin's own work per
    /// call (an instruction count showed it).
    pub fn packed(&self, by_sha: bool) -> Vec<u8> {
        let Some(lua) = self.lua else {
            let (key, token, ttl) = (self.keys[0], self.args[0], self.args[1]);
            return pack(&[b"SET", key.as_bytes(), token.as_bytes(), b"NX", b"PX", ttl.as_bytes()]);
        };
        let (name, script): (&[u8], &str) =
            if by_sha { (b"EVALSHA", &lua.sha) } else { (b"EVAL", lua.source) };
        let mut digits = [0; 20];
        let numkeys = decimal(self.keys.len() as u64, &mut digits);
        let mut parts: Vec<&[u8]> = Vec::with_capacity(3 + self.keys.len() + self.args.len());
        parts.extend([name, script.as_bytes(), numkeys]);
        parts.extend(self.keys.iter().map(|k| k.as_bytes()));
        parts.extend(self.args.iter().map(|a| a.as_bytes()));
        pack(&parts)
    }
}

/// One command in the protocol's request form: an array of bulk strings.
pub(crate) fn pack(parts: &[&[u8]]) -> Vec<u8> {
    let mut digits = [0; 20];
    let len = 3
        + decimal(parts.len() as u64, &mut digits).len()
        + parts
            .iter()
            .map(|p| 5 + decimal(p.len() as u64, &mut digits).len() + p.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(b'*');
    out.extend_from_slice(decimal(parts.len() as u64, &mut digits));
    out.extend_from_slice(b"\r\n");
    for p in parts {
        out.push(b'$');
        out.extend_from_slice(decimal(p.len() as u64, &mut digits));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    debug_assert_eq!(out.len(), len);
    out
}

/// `n` in decimal ASCII, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// A pooled connection and the socket timeout currently set on it.
pub struct Conn {
    inner: Wire,
    timeout: Duration,
}

/// One server.
pub struct Node {
    client: redis::Client,
    voice: Voice,
    pool: Pool<Conn>,
    connect_timeout: Duration,
    /// Replies the driver waits for during its handshake (AUTH, SELECT),
    /// each under the full connect timeout, so the timeout is split.
    handshake_replies: u32,
}

impl Node {
    /// A node for `url` (already checked). Opens no connection yet.
    pub fn new(
        url: &str,
        pool_size: usize,
        connect_timeout: Duration,
        secrets: Secrets,
    ) -> Result<Self, String> {
        let voice = Voice::new(redact_url(url), secrets);
        let client =
            redis::Client::open(url).map_err(|e| voice.message(&format!("bad URL: {e}")))?;
        let info = &client.get_connection_info().redis;
        // AUTH may be sent twice (with, then without, the user name).
        let handshake_replies = u32::from(info.password.is_some())
            * (1 + u32::from(info.username.is_some()))
            + u32::from(info.db != 0);
        Ok(Self { client, voice, pool: Pool::new(pool_size), connect_timeout, handshake_replies })
    }

    /// A client for this server, for a waiter's dedicated subscription
    /// connection (never pooled: it ends with the wait).
    pub fn client(&self) -> redis::Client {
        self.client.clone()
    }

    /// The URL with its password redacted.
    pub fn label(&self) -> &str {
        &self.voice.label
    }

    /// Drops idle connections and refuses new calls.
    pub fn close(&self) {
        drop(self.pool.close());
    }

    /// Runs one script call to completion.
    pub fn call(&self, inv: &Invocation<'_>, deadline: Instant) -> Result<Value, String> {
        let mut p = self.start(deadline);
        if p.needs_connect() {
            p.connect(deadline);
        }
        p.send(&inv.packed(true), deadline);
        p.finish(inv, deadline)
    }

    /// Leases a connection slot without connecting yet.
    pub fn start(&self, deadline: Instant) -> Pending<'_> {
        match self.pool.lease(deadline) {
            Ok(lease) => Pending { node: self, lease: Some(lease), failure: None, stale: false },
            Err(e) => Pending {
                node: self,
                lease: None,
                failure: Some(self.voice.message(&e.to_string())),
                stale: false,
            },
        }
    }

    fn open(&self, deadline: Instant) -> Result<Conn, String> {
        let remaining = remaining(deadline)
            .ok_or_else(|| self.voice.message("no time left to connect before the deadline"))?;
        // The timeout applies to the TCP connect and then to each handshake
        // reply in turn, so a hung server could cost it several times over.
        let budget = remaining.min(self.connect_timeout) / self.handshake_replies.max(1);
        let inner = Wire::connect(self.client.get_connection_info(), budget).map_err(|e| {
            if e.is_timeout() {
                self.voice.message("connect timed out")
            } else {
                self.voice.message(&format!("cannot connect: {}", crate::redact::describe(&e)))
            }
        })?;
        // The handshake left its own timeouts set: fit them to this call.
        let mut conn = Conn { inner, timeout: Duration::ZERO };
        fit_timeout(&mut conn, deadline, false).map_err(|_| {
            self.voice.message("connected, but no time was left before the deadline")
        })?;
        self.load_scripts(&mut conn, deadline)?;
        Ok(conn)
    }

    /// Loads every script on a new connection, so `EVALSHA` does not meet
    /// `NOSCRIPT` later: the `EVAL` fallback is an extra round trip that a
    /// quorum call may have no time left for. Replies are read one by one
    /// under the deadline (a driver pipeline would wait the full socket
    /// timeout for each).
    fn load_scripts(&self, conn: &mut Conn, deadline: Instant) -> Result<(), String> {
        let mut packed = Vec::new();
        for lua in scripts::ALL {
            packed.extend(redis::cmd("SCRIPT").arg("LOAD").arg(lua.source).get_packed_command());
        }
        let fail = |e: RedisError| self.voice.error(&e);
        fit_timeout(conn, deadline, false).map_err(fail)?;
        conn.inner.send_packed_command(&packed).map_err(fail)?;
        for _ in scripts::ALL {
            fit_timeout(conn, deadline, false).map_err(fail)?;
            conn.inner.recv_response().and_then(Value::extract_error).map_err(fail)?;
        }
        Ok(())
    }
}

/// The time left until `deadline`, or `None` when it has passed.
pub fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

/// How long a read may still wait once the deadline has passed: an answer
/// that arrived in time but was not read yet (this thread was descheduled)
/// still counts. Callers that measure validity measure it after reading.
const READ_GRACE: Duration = Duration::from_millis(1);

/// Sets the socket timeouts to the time left, unless they are already
/// close to it: one `setsockopt` pair per call would be a measurable share
/// of a loopback round trip.
fn fit_timeout(conn: &mut Conn, deadline: Instant, grace: bool) -> Result<(), RedisError> {
    let Some(left) = remaining(deadline).or(grace.then_some(READ_GRACE)) else {
        return Err(RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)));
    };
    let slack = (left / 16).max(Duration::from_millis(1));
    if conn.timeout.abs_diff(left) > slack {
        conn.inner.set_read_timeout(Some(left))?;
        conn.inner.set_write_timeout(Some(left))?;
        conn.timeout = left;
    }
    Ok(())
}

/// A call in flight on one node.
pub struct Pending<'n> {
    node: &'n Node,
    lease: Option<Lease<'n, Conn>>,
    failure: Option<String>,
    /// The reused connection failed on send: reconnect and resend in `finish`.
    stale: bool,
}

impl Pending<'_> {
    /// Whether a fresh connection must be opened before sending.
    pub fn needs_connect(&self) -> bool {
        self.failure.is_none() && self.lease.as_ref().is_some_and(|l| l.conn.is_none())
    }

    /// Opens the connection this call will use.
    pub fn connect(&mut self, deadline: Instant) {
        let Some(lease) = self.lease.as_mut() else { return };
        match self.node.open(deadline) {
            Ok(conn) => lease.conn = Some(conn),
            Err(e) => self.failure = Some(e),
        }
    }

    /// Puts the request on the wire (no waiting for the answer).
    pub fn send(&mut self, packed: &[u8], deadline: Instant) {
        if self.failure.is_some() {
            return;
        }
        let Some(lease) = self.lease.as_mut() else { return };
        let Some(conn) = lease.conn.as_mut() else { return };
        let sent = fit_timeout(conn, deadline, false)
            .and_then(|()| conn.inner.send_packed_command(packed));
        if let Err(e) = sent {
            lease.conn = None;
            if lease.reused && is_stale(&e) {
                self.stale = true;
            } else {
                self.failure = Some(self.node.voice.error(&e));
            }
        }
    }

    /// Waits for the answer, retrying once on a fresh connection when a
    /// reused one turns out to be dead (the server restarted), and once with
    /// `EVAL` when the server lost its script cache.
    pub fn finish(mut self, inv: &Invocation<'_>, deadline: Instant) -> Result<Value, String> {
        if let Some(f) = self.failure.take() {
            return Err(f);
        }
        let node = self.node;
        let Some(lease) = self.lease.as_mut() else {
            return Err(node.voice.message("no connection"));
        };
        if self.stale || lease.conn.is_none() {
            // Stale: the server restarted, so the other idle connections are
            // dead too. Never connected: the caller skipped `connect`.
            if self.stale {
                drop(node.pool.clear_idle());
            }
            return resend(node, lease, inv, deadline);
        }
        match receive(lease, deadline) {
            Ok(v) => script_reply(node, lease, v, inv, deadline),
            Err(e) if lease.reused && is_stale(&e) => {
                drop(node.pool.clear_idle());
                resend(node, lease, inv, deadline)
            }
            Err(e) => Err(node.voice.error(&e)),
        }
    }
}

/// A failure that means "this connection was closed under us", as opposed
/// to a slow or hung server.
fn is_stale(e: &RedisError) -> bool {
    e.is_connection_dropped() || e.is_connection_refusal()
}

fn receive(lease: &mut Lease<'_, Conn>, deadline: Instant) -> Result<Value, RedisError> {
    let conn = lease.conn.as_mut().expect("sent on this connection");
    let got = fit_timeout(conn, deadline, true).and_then(|()| conn.inner.recv_response());
    if got.is_err() {
        // A half-read reply leaves the stream out of step: never reuse it.
        lease.conn = None;
    }
    got
}

fn resend(
    node: &Node,
    lease: &mut Lease<'_, Conn>,
    inv: &Invocation<'_>,
    deadline: Instant,
) -> Result<Value, String> {
    lease.reused = false;
    lease.conn = Some(node.open(deadline)?);
    exchange(node, lease, &inv.packed(true), deadline)
        .and_then(|v| script_reply(node, lease, v, inv, deadline))
}

fn exchange(
    node: &Node,
    lease: &mut Lease<'_, Conn>,
    packed: &[u8],
    deadline: Instant,
) -> Result<Value, String> {
    let conn = lease.conn.as_mut().expect("connected");
    if let Err(e) =
        fit_timeout(conn, deadline, false).and_then(|()| conn.inner.send_packed_command(packed))
    {
        lease.conn = None;
        return Err(node.voice.error(&e));
    }
    receive(lease, deadline).map_err(|e| node.voice.error(&e))
}

/// Turns a server error reply into `Err` (the connection stays good), and
/// answers `NOSCRIPT` by sending the script's source.
fn script_reply(
    node: &Node,
    lease: &mut Lease<'_, Conn>,
    value: Value,
    inv: &Invocation<'_>,
    deadline: Instant,
) -> Result<Value, String> {
    match value.extract_error() {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == ErrorKind::NoScriptError => {
            exchange(node, lease, &inv.packed(false), deadline)?
                .extract_error()
                .map_err(|e| node.voice.error(&e))
        }
        Err(e) => Err(node.voice.error(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written packing is byte for byte what the driver packs.
    #[test]
    fn packs_as_the_driver_does() {
        let keys = ["bext:lock:{a}", "bext:lock:info:{a}"];
        let long = "x".repeat(12_345);
        let args = ["token", "30000", "", long.as_str(), "ключ"];
        for lua in [None, Some(&*scripts::RELEASE)] {
            for by_sha in [true, false] {
                let inv = Invocation { lua, keys: &keys, args: &args };
                let expected = match lua {
                    None => redis::cmd("SET")
                        .arg(keys[0])
                        .arg(args[0])
                        .arg("NX")
                        .arg("PX")
                        .arg(args[1])
                        .get_packed_command(),
                    Some(l) => {
                        let mut c = redis::cmd(if by_sha { "EVALSHA" } else { "EVAL" });
                        c.arg(if by_sha { l.sha.as_str() } else { l.source }).arg(keys.len());
                        for k in keys {
                            c.arg(k);
                        }
                        for a in args {
                            c.arg(a);
                        }
                        c.get_packed_command()
                    }
                };
                assert_eq!(inv.packed(by_sha), expected, "{lua:?} {by_sha}", lua = lua.is_some());
            }
        }
        let mut d = [0; 20];
        assert_eq!(decimal(0, &mut d), b"0");
        assert_eq!(decimal(u64::MAX, &mut d), b"18446744073709551615");
    }
}
