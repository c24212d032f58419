//! A small blocking client for the etcd v3 API through etcd's JSON gateway
//! (`POST /v3/...`, served by every etcd since 3.4 on its client URLs).
//!
//! Every call takes a deadline and never outlives it. Calls fail over from
//! one endpoint to the next when the request surely did not reach the server
//! (connection refused, connect timed out), and re-send it within the
//! deadline only when that is harmless: reads, keep-alives, revokes, and the
//! lock transactions, which are written so that a second send recognises the
//! first one's effect. A plain write whose answer was lost is reported as an
//! error rather than sent twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};
use std::{fmt, io};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bext_locking::redact::Secrets;
use serde_json::{Value, json};

use crate::config::Password;

/// What went wrong with a call, sorted by what the caller may do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// No endpoint took the request: it was never sent.
    Unreachable,
    /// The request may or may not have been applied: the answer timed out
    /// or the connection broke after sending.
    Ambiguous,
    /// etcd answered with an error (gRPC status `code`).
    Server {
        /// The gRPC status code etcd reported.
        code: i64,
    },
    /// The answer could not be understood.
    Protocol,
}

/// A failed call; the message names the endpoint and the cause, never a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The class of failure.
    pub kind: ErrorKind,
    /// What happened, for people.
    pub message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// gRPC `NOT_FOUND`, as etcd reports a lease that does not exist.
const CODE_NOT_FOUND: i64 = 5;
/// gRPC `UNAVAILABLE`: no leader, leader changed, or the proposal timed out.
const CODE_UNAVAILABLE: i64 = 14;
/// gRPC `UNAUTHENTICATED`: the auth token expired or is unknown.
const CODE_UNAUTHENTICATED: i64 = 16;
/// The shortest attempt worth starting.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);
/// The pause before re-sending after etcd said it is unavailable.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Whether a request may be sent again after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Reads, idempotent writes, and writes whose repeat is harmless:
    /// retry, on the next endpoint, within the deadline.
    Safe,
    /// Writes: only re-send when the request surely never left.
    NeverTwice,
}

/// A key's current record, as a range read returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The stored value.
    pub value: Vec<u8>,
    /// The cluster revision at which the key was created.
    pub create_revision: i64,
    /// The lease the key is attached to; 0 for none.
    pub lease: i64,
}

/// What [`Client::take`] should write.
#[derive(Debug, Clone, Copy)]
pub struct Take<'a> {
    /// The lock's key, created only when it does not exist.
    pub key: &'a [u8],
    /// Its value: the acquisition's lock id.
    pub value: &'a [u8],
    /// Another key and value written with it (the owner).
    pub beside: Option<(&'a [u8], &'a [u8])>,
    /// The lease everything is put on.
    pub lease: i64,
    /// A key range that must also be empty: the lock's wait queue.
    pub queue: Option<(&'a [u8], &'a [u8])>,
    /// When the lock is not taken, this key is put on the lease (joining
    /// the queue).
    pub enqueue: Option<&'a [u8]>,
    /// When the lock is taken, this key is deleted (leaving the queue).
    pub dequeue: Option<&'a [u8]>,
}

/// What [`Client::take`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The lock is ours; its create revision.
    Taken(i64),
    /// Not taken; the queue key was written at this create revision.
    Queued(i64),
    /// Not taken (the key exists or the queue is not empty).
    Held,
}

/// What [`Client::ahead`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ahead {
    /// The lock's key exists.
    pub held: bool,
    /// The queue key just ahead of the waiter, if any.
    pub predecessor: Option<Vec<u8>>,
    /// The revision the two were read at.
    pub revision: i64,
}

/// One member's view of the cluster, from `/v3/maintenance/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// This member's id.
    pub member_id: u64,
    /// The member it believes leads; 0 when it knows none.
    pub leader: u64,
    /// The raft term it is in.
    pub raft_term: u64,
}

/// A blocking etcd v3 client over the JSON gateway, safe to share between
/// threads; each thread's request uses its own pooled connection.
pub struct Client {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    /// The endpoint that answered last; calls start there.
    preferred: AtomicUsize,
    connect_timeout: Duration,
    credentials: Option<(String, Password)>,
    /// The password, to scrub from every message (a server or a proxy in
    /// between may echo the authentication request).
    secrets: Secrets,
    token: RwLock<Option<String>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for these base URLs (`http://host:port`, as
    /// [`crate::config::EtcdConfig::check`] normalises them).
    pub fn new(
        endpoints: Vec<String>,
        connect_timeout: Duration,
        credentials: Option<(String, Password)>,
    ) -> Self {
        let agent = ureq::Agent::config_builder()
            // etcd's error answers carry a JSON body worth reading.
            .http_status_as_error(false)
            // etcd members are dialled directly: an HTTP_PROXY meant for the
            // host's web traffic must not sit between us and the cluster.
            .proxy(None)
            // Room for one idle connection per thread of a busy host.
            .max_idle_connections(64)
            .max_idle_connections_per_host(32)
            .user_agent("bext-locking-etcd")
            .build()
            .new_agent();
        let mut secrets = Secrets::new();
        if let Some((_, password)) = &credentials {
            secrets.add(password.expose());
        }
        Self {
            agent,
            endpoints,
            preferred: AtomicUsize::new(0),
            connect_timeout,
            credentials,
            secrets,
            token: RwLock::new(None),
        }
    }

    /// The endpoints this client talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Grants a lease of `ttl_s` seconds and returns its id. etcd raises a
    /// TTL below its minimum to that minimum.
    pub fn lease_grant(&self, ttl_s: i64, deadline: Instant) -> Result<i64, Error> {
        let body = json!({ "TTL": ttl_s.to_string() });
        // A grant sent twice leaves at most one lease that no key is
        // attached to; it runs out on its own.
        let answer = self.call("/v3/lease/grant", &body, deadline, Resend::Safe)?;
        if let Some(e) = answer.get("error").and_then(Value::as_str).filter(|e| !e.is_empty()) {
            return Err(Error::new(ErrorKind::Server { code: 0 }, format!("lease grant: {e}")));
        }
        match int(&answer, "ID") {
            0 => Err(Error::new(ErrorKind::Protocol, "lease grant answered without a lease id")),
            id => Ok(id),
        }
    }

    /// Refreshes a lease once; returns its TTL in seconds, or 0 when the
    /// lease no longer exists.
    pub fn lease_keepalive(&self, lease: i64, deadline: Instant) -> Result<i64, Error> {
        let body = json!({ "ID": lease.to_string() });
        let answer = self.call("/v3/lease/keepalive", &body, deadline, Resend::Safe)?;
        // A streaming call: the gateway wraps each message in `result`.
        if let Some(e) = answer.get("error") {
            return Err(server_error(e, "lease keep-alive"));
        }
        let result = answer.get("result").ok_or_else(|| {
            Error::new(ErrorKind::Protocol, "lease keep-alive answered without a result")
        })?;
        Ok(int(result, "TTL"))
    }

    /// Revokes a lease, deleting every key attached to it. Returns false when
    /// the lease was already gone.
    pub fn lease_revoke(&self, lease: i64, deadline: Instant) -> Result<bool, Error> {
        let body = json!({ "ID": lease.to_string() });
        match self.call("/v3/lease/revoke", &body, deadline, Resend::Safe) {
            Ok(_) => Ok(true),
            Err(Error { kind: ErrorKind::Server { code: CODE_NOT_FOUND }, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates `key` with `value` on `lease` in one transaction, only if the
    /// key does not exist. Returns the revision that created it, or `None`
    /// when the key already existed (nothing was written).
    ///
    /// Sending it twice is harmless: when the key exists, the transaction
    /// reads it back, and a key carrying this very `value` and `lease` was
    /// created by the first send, whose answer was lost.
    pub fn put_if_absent(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
        deadline: Instant,
    ) -> Result<Option<i64>, Error> {
        self.put_if_absent_with(key, value, None, lease, deadline)
    }

    /// [`put_if_absent`](Self::put_if_absent) that also writes `beside`
    /// (a key and its value) on the same lease, in the same transaction.
    pub fn put_if_absent_with(
        &self,
        key: &[u8],
        value: &[u8],
        beside: Option<(&[u8], &[u8])>,
        lease: i64,
        deadline: Instant,
    ) -> Result<Option<i64>, Error> {
        let take = Take { key, value, beside, lease, queue: None, enqueue: None, dequeue: None };
        Ok(match self.take(&take, deadline)? {
            Taken::Taken(revision) => Some(revision),
            Taken::Queued(_) | Taken::Held => None,
        })
    }

    /// The lock transaction: "if `take.key` does not exist (and the queue
    /// range is empty), put it on the lease (with `beside`) and delete
    /// `dequeue`; else put `enqueue` on the lease". One round trip.
    ///
    /// Sending it twice is harmless: the second send's failure branch
    /// reads the key back, and a key carrying this very value and lease
    /// was taken by the first send (a queue key the second one wrote is
    /// then deleted again).
    pub fn take(&self, take: &Take<'_>, deadline: Instant) -> Result<Taken, Error> {
        let key = B64.encode(take.key);
        let lease = take.lease.to_string();
        let put = |k: &[u8], v: &[u8]| json!({ "request_put": { "key": B64.encode(k), "value": B64.encode(v), "lease": lease } });
        let mut compare = vec![
            json!({ "key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }),
        ];
        if let Some((start, end)) = take.queue {
            // Over a range, etcd's compare holds when it holds for every
            // key in it, and for "none" when the range is empty.
            compare.push(json!({ "key": B64.encode(start), "range_end": B64.encode(end), "target": "CREATE", "result": "EQUAL", "create_revision": "0" }));
        }
        let mut success = vec![put(take.key, take.value)];
        if let Some((k, v)) = take.beside {
            success.push(put(k, v));
        }
        if let Some(q) = take.dequeue {
            success.push(json!({ "request_delete_range": { "key": B64.encode(q) } }));
        }
        let mut failure = vec![json!({ "request_range": { "key": key } })];
        if let Some(q) = take.enqueue {
            // The range after the put sees it (a transaction reads its own
            // writes): its create revision is the waiter's place.
            failure.push(put(q, take.value));
            failure.push(json!({ "request_range": { "key": B64.encode(q) } }));
        }
        let body = json!({ "compare": compare, "success": success, "failure": failure });
        let answer = self.call("/v3/kv/txn", &body, deadline, Resend::Safe)?;
        if succeeded(&answer) {
            // One transaction is one revision: the key's create revision.
            return match answer.get("header").map(|h| int(h, "revision")) {
                Some(rev) if rev > 0 => Ok(Taken::Taken(rev)),
                _ => {
                    Err(Error::new(ErrorKind::Protocol, "transaction answered without a revision"))
                }
            };
        }
        let existing =
            answer.pointer("/responses/0/response_range/kvs/0").map(key_value).transpose()?;
        if let Some(kv) = existing.filter(|kv| kv.value == take.value && kv.lease == take.lease) {
            if let Some(q) = take.enqueue {
                self.delete(q, deadline)?;
            }
            return Ok(Taken::Taken(kv.create_revision));
        }
        if take.enqueue.is_none() {
            return Ok(Taken::Held);
        }
        match answer.pointer("/responses/2/response_range/kvs/0").map(key_value).transpose()? {
            Some(kv) if kv.create_revision > 0 => Ok(Taken::Queued(kv.create_revision)),
            _ => Err(Error::new(ErrorKind::Protocol, "the queue key was not read back")),
        }
    }

    /// Who is ahead of a waiter: whether `key` exists, and the queue key in
    /// `[start, end)` with the highest create revision below `below` (the
    /// waiter's predecessor), read at one revision, which is returned too
    /// (a watch from the next one misses nothing).
    pub fn ahead(
        &self,
        key: &[u8],
        (start, end): (&[u8], &[u8]),
        below: i64,
        deadline: Instant,
    ) -> Result<Ahead, Error> {
        let body = json!({
            "success": [
                { "request_range": { "key": B64.encode(key), "keys_only": true } },
                { "request_range": {
                    "key": B64.encode(start), "range_end": B64.encode(end), "keys_only": true,
                    "max_create_revision": (below - 1).max(1).to_string(),
                    "sort_order": "DESCEND", "sort_target": "CREATE", "limit": "1",
                } },
            ],
        });
        let answer = self.call("/v3/kv/txn", &body, deadline, Resend::Safe)?;
        let held = answer.pointer("/responses/0/response_range/kvs/0").is_some();
        let predecessor =
            match answer
                .pointer("/responses/1/response_range/kvs/0")
                .filter(|kv| int(kv, "create_revision") < below)
                .and_then(|kv| kv.get("key"))
                .and_then(Value::as_str)
            {
                None => None,
                Some(k) => Some(B64.decode(k).map_err(|e| {
                    Error::new(ErrorKind::Protocol, format!("key is not base64: {e}"))
                })?),
            };
        let revision = answer.get("header").map(|h| int(h, "revision")).unwrap_or(0);
        if revision <= 0 {
            return Err(Error::new(ErrorKind::Protocol, "read answered without a revision"));
        }
        Ok(Ahead { held, predecessor, revision })
    }

    /// Deletes `key` in one transaction only if its value is `value`.
    /// Returns the deleted record, or `None` when the value differed or the
    /// key was gone (nothing was touched).
    pub fn delete_if_value(
        &self,
        key: &[u8],
        value: &[u8],
        deadline: Instant,
    ) -> Result<Option<KeyValue>, Error> {
        let key = B64.encode(key);
        let body = json!({
            "compare": [{ "key": key, "target": "VALUE", "result": "EQUAL", "value": B64.encode(value) }],
            "success": [{ "request_delete_range": { "key": key, "prev_kv": true } }],
        });
        // Sending it twice is harmless: the second one finds the value gone.
        let answer = self.call("/v3/kv/txn", &body, deadline, Resend::Safe)?;
        if !succeeded(&answer) {
            return Ok(None);
        }
        let prev = answer
            .pointer("/responses/0/response_delete_range/prev_kvs/0")
            .map(key_value)
            .transpose()?;
        Ok(prev)
    }

    /// Deletes `key` and `beside` in one transaction only if `key`'s create
    /// revision is `create_revision` (the incarnation a fence names).
    /// Returns `key`'s deleted record, or `None` when it was gone or
    /// re-created (nothing was touched).
    pub fn delete_if_created(
        &self,
        key: &[u8],
        create_revision: i64,
        beside: &[u8],
        deadline: Instant,
    ) -> Result<Option<KeyValue>, Error> {
        let key = B64.encode(key);
        let body = json!({
            "compare": [{ "key": key, "target": "CREATE", "result": "EQUAL", "create_revision": create_revision.to_string() }],
            "success": [
                { "request_delete_range": { "key": key, "prev_kv": true } },
                { "request_delete_range": { "key": B64.encode(beside) } },
            ],
        });
        // Sending it twice is harmless: the second one finds the key gone.
        let answer = self.call("/v3/kv/txn", &body, deadline, Resend::Safe)?;
        if !succeeded(&answer) {
            return Ok(None);
        }
        answer.pointer("/responses/0/response_delete_range/prev_kvs/0").map(key_value).transpose()
    }

    /// Moves a held lock from lease `from` to lease `to` in one
    /// transaction: only if `key` still has `value`, was created at
    /// `create_revision` and is on `from`; `beside` (the owner key and its
    /// value, when it is on `from` too) moves with it. A put keeps a key's
    /// create revision, so the fence is unchanged. Returns whether it
    /// moved; a re-send after a lost answer finds the key on `to` and
    /// answers false, which the caller checks by reading the key.
    pub fn move_lease(
        &self,
        key: &[u8],
        value: &[u8],
        create_revision: i64,
        beside: Option<(&[u8], &[u8])>,
        (from, to): (i64, i64),
        deadline: Instant,
    ) -> Result<bool, Error> {
        let k = B64.encode(key);
        let mut compare = vec![
            json!({ "key": k, "target": "VALUE", "result": "EQUAL", "value": B64.encode(value) }),
            json!({ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": create_revision.to_string() }),
            json!({ "key": k, "target": "LEASE", "result": "EQUAL", "lease": from.to_string() }),
        ];
        let mut success = vec![
            json!({ "request_put": { "key": k, "value": B64.encode(value), "lease": to.to_string() } }),
        ];
        if let Some((bk, bv)) = beside {
            let bk = B64.encode(bk);
            compare.push(json!({ "key": bk, "target": "LEASE", "result": "EQUAL", "lease": from.to_string() }));
            success.push(json!({ "request_put": { "key": bk, "value": B64.encode(bv), "lease": to.to_string() } }));
        }
        let body = json!({ "compare": compare, "success": success });
        let answer = self.call("/v3/kv/txn", &body, deadline, Resend::Safe)?;
        Ok(succeeded(&answer))
    }

    /// Reads `key` and `beside` at one revision (one transaction).
    #[allow(clippy::type_complexity)]
    pub fn get_pair(
        &self,
        key: &[u8],
        beside: &[u8],
        deadline: Instant,
    ) -> Result<(Option<KeyValue>, Option<KeyValue>), Error> {
        let body = json!({
            "success": [
                { "request_range": { "key": B64.encode(key) } },
                { "request_range": { "key": B64.encode(beside) } },
            ],
        });
        let answer = self.call("/v3/kv/txn", &body, deadline, Resend::Safe)?;
        let read = |i: usize| {
            answer
                .pointer(&format!("/responses/{i}/response_range/kvs/0"))
                .map(key_value)
                .transpose()
        };
        Ok((read(0)?, read(1)?))
    }

    /// The seconds a lease has left (etcd counts whole seconds), or `None`
    /// when it no longer exists.
    pub fn lease_time_to_live(&self, lease: i64, deadline: Instant) -> Result<Option<i64>, Error> {
        let body = json!({ "ID": lease.to_string() });
        let answer = self.call("/v3/lease/timetolive", &body, deadline, Resend::Safe)?;
        if let Some(e) = answer.get("error") {
            return Err(server_error(e, "lease time-to-live"));
        }
        // proto3 JSON omits a zero TTL; -1 means the lease is gone.
        match answer.get("TTL").map(|_| int(&answer, "TTL")) {
            Some(ttl) if ttl >= 0 => Ok(Some(ttl)),
            Some(_) => Ok(None),
            None => Ok(Some(0)),
        }
    }

    /// Reads `key` (linearizably: it needs a quorum).
    pub fn get(&self, key: &[u8], deadline: Instant) -> Result<Option<KeyValue>, Error> {
        let body = json!({ "key": B64.encode(key) });
        let answer = self.call("/v3/kv/range", &body, deadline, Resend::Safe)?;
        answer.pointer("/kvs/0").map(key_value).transpose()
    }

    /// Every key in `[start, end)` with its record, in key order.
    pub fn range(
        &self,
        start: &[u8],
        end: &[u8],
        deadline: Instant,
    ) -> Result<Vec<(Vec<u8>, KeyValue)>, Error> {
        let body = json!({ "key": B64.encode(start), "range_end": B64.encode(end) });
        let answer = self.call("/v3/kv/range", &body, deadline, Resend::Safe)?;
        let kvs = answer.get("kvs").and_then(Value::as_array).cloned().unwrap_or_default();
        kvs.iter()
            .map(|kv| {
                let key = B64.decode(kv.get("key").and_then(Value::as_str).unwrap_or("")).map_err(
                    |e| Error::new(ErrorKind::Protocol, format!("key is not base64: {e}")),
                )?;
                Ok((key, key_value(kv)?))
            })
            .collect()
    }

    /// Writes `key` unconditionally, attached to `lease` (0 for none).
    pub fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
        deadline: Instant,
    ) -> Result<(), Error> {
        let body = json!({ "key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string() });
        self.call("/v3/kv/put", &body, deadline, Resend::NeverTwice).map(drop)
    }

    /// Deletes `key` unconditionally; returns whether it existed.
    pub fn delete(&self, key: &[u8], deadline: Instant) -> Result<bool, Error> {
        let body = json!({ "key": B64.encode(key) });
        let answer = self.call("/v3/kv/deleterange", &body, deadline, Resend::Safe)?;
        Ok(int(&answer, "deleted") > 0)
    }

    /// The status of the first endpoint that answers.
    pub fn status(&self, deadline: Instant) -> Result<MemberStatus, Error> {
        let answer = self.call("/v3/maintenance/status", &json!({}), deadline, Resend::Safe)?;
        let header = answer.get("header").unwrap_or(&Value::Null);
        Ok(MemberStatus {
            member_id: uint(header, "member_id"),
            leader: uint(&answer, "leader"),
            raft_term: uint(&answer, "raftTerm").max(uint(header, "raft_term")),
        })
    }

    /// Sends one request (see [`Self::try_endpoints`]); its error message
    /// never carries the password.
    fn call(
        &self,
        path: &str,
        body: &Value,
        deadline: Instant,
        resend: Resend,
    ) -> Result<Value, Error> {
        self.try_endpoints(path, body, deadline, resend)
            .map_err(|e| Error { message: self.secrets.scrub(&e.message), ..e })
    }

    /// Sends one request, failing over between endpoints as its [`Resend`]
    /// allows, and re-authenticating once when the token was refused.
    ///
    /// A request that may be re-sent gets half the budget per attempt: a
    /// proposal that a follower forwarded to a leader that just died is never
    /// answered, and the second attempt, after the election, is.
    fn try_endpoints(
        &self,
        path: &str,
        body: &Value,
        deadline: Instant,
        resend: Resend,
    ) -> Result<Value, Error> {
        let payload = body.to_string();
        let n = self.endpoints.len();
        let budget = deadline.saturating_duration_since(Instant::now());
        let per_attempt =
            if resend == Resend::Safe { (budget / 2).max(MIN_ATTEMPT) } else { budget };
        let mut idx = self.preferred.load(Ordering::Relaxed) % n;
        let mut unreachable = Vec::new();
        loop {
            let endpoint = &self.endpoints[idx];
            let attempt_deadline = deadline.min(Instant::now() + per_attempt);
            let e = match self.send_authenticated(endpoint, path, &payload, attempt_deadline) {
                Ok(v) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => e,
            };
            let again = match e.kind {
                ErrorKind::Unreachable => true,
                ErrorKind::Ambiguous => resend == Resend::Safe,
                // "no leader", "leader changed", "request timed out": the
                // request did not take effect or is safe to repeat.
                ErrorKind::Server { code: CODE_UNAVAILABLE } => resend == Resend::Safe,
                _ => false,
            };
            if !again {
                return Err(e);
            }
            if e.kind == ErrorKind::Unreachable {
                unreachable.push(e.message.clone());
                if unreachable.len() >= n {
                    return Err(Error::new(
                        ErrorKind::Unreachable,
                        format!("no endpoint reachable: {}", unreachable.join("; ")),
                    ));
                }
            } else {
                unreachable.clear();
                if e.kind != ErrorKind::Ambiguous {
                    // Give an election a moment instead of spinning on it.
                    std::thread::sleep(
                        RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
            }
            if deadline.saturating_duration_since(Instant::now()) < MIN_ATTEMPT {
                return Err(e);
            }
            idx = (idx + 1) % n;
        }
    }

    fn send_authenticated(
        &self,
        endpoint: &str,
        path: &str,
        payload: &str,
        deadline: Instant,
    ) -> Result<Value, Error> {
        if self.credentials.is_none() {
            return self.send(endpoint, path, payload, None, deadline);
        }
        let token = match self.current_token() {
            Some(t) => t,
            None => self.authenticate(endpoint, deadline)?,
        };
        match self.send(endpoint, path, payload, Some(&token), deadline) {
            Err(Error { kind: ErrorKind::Server { code: CODE_UNAUTHENTICATED }, .. }) => {
                // Simple tokens expire after a few minutes of disuse: get a
                // fresh one and try once more.
                let token = self.authenticate(endpoint, deadline)?;
                self.send(endpoint, path, payload, Some(&token), deadline)
            }
            other => other,
        }
    }

    /// The endpoint calls start at, and the client's connect timeout and
    /// credentials state, for [`crate::watch`], which speaks to the same
    /// gateway over its own connection.
    pub(crate) fn preferred_endpoint(&self) -> (&str, Duration) {
        let idx = self.preferred.load(Ordering::Relaxed) % self.endpoints.len();
        (&self.endpoints[idx], self.connect_timeout)
    }

    /// The auth token to send to `endpoint` (fetching one, or a fresh one
    /// when `fresh`), or `None` without credentials.
    pub(crate) fn token_for(
        &self,
        endpoint: &str,
        fresh: bool,
        deadline: Instant,
    ) -> Result<Option<String>, Error> {
        if self.credentials.is_none() {
            return Ok(None);
        }
        match self.current_token() {
            Some(t) if !fresh => Ok(Some(t)),
            _ => self.authenticate(endpoint, deadline).map(Some),
        }
    }

    /// Removes the password from a message.
    pub(crate) fn scrub(&self, message: &str) -> String {
        self.secrets.scrub(message)
    }

    fn current_token(&self) -> Option<String> {
        self.token.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn authenticate(&self, endpoint: &str, deadline: Instant) -> Result<String, Error> {
        let Some((user, password)) = &self.credentials else {
            return Err(Error::new(ErrorKind::Protocol, "no credentials configured"));
        };
        let body = json!({ "name": user, "password": password.expose() }).to_string();
        let answer =
            self.send(endpoint, "/v3/auth/authenticate", &body, None, deadline).map_err(|e| {
                Error { message: format!("authentication as `{user}` failed: {}", e.message), ..e }
            })?;
        let token = answer
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("authentication as `{user}` on {endpoint} answered without a token (is auth enabled?)"),
                )
            })?
            .to_owned();
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        Ok(token)
    }

    /// One HTTP request to one endpoint, bounded by `deadline`.
    fn send(
        &self,
        endpoint: &str,
        path: &str,
        payload: &str,
        token: Option<&str>,
        deadline: Instant,
    ) -> Result<Value, Error> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::new(ErrorKind::Ambiguous, format!("{endpoint}{path}: timed out")));
        }
        let mut request = self
            .agent
            .post(format!("{endpoint}{path}"))
            .config()
            .timeout_global(Some(remaining))
            .timeout_connect(Some(self.connect_timeout.min(remaining)))
            .build()
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        let mut response = request.send(payload).map_err(|e| transport_error(endpoint, path, e))?;
        let status = response.status();
        let text =
            response.body_mut().read_to_string().map_err(|e| transport_error(endpoint, path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!(
                    "{endpoint}{path}: HTTP {} with a body that is not JSON ({e})",
                    status.as_u16()
                ),
            )
        })?;
        if status.is_success() {
            Ok(value)
        } else {
            let e = server_error(&value, &format!("{endpoint}{path}"));
            Err(Error { message: format!("{} (HTTP {})", e.message, status.as_u16()), ..e })
        }
    }
}

/// Sorts a transport failure into "never sent" and "maybe applied".
fn transport_error(endpoint: &str, path: &str, e: ureq::Error) -> Error {
    let kind = match &e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => ErrorKind::Unreachable,
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            ErrorKind::Unreachable
        }
        ureq::Error::Io(io) if not_connected(io) => ErrorKind::Unreachable,
        _ => ErrorKind::Ambiguous,
    };
    Error::new(kind, format!("{endpoint}{path}: {e}"))
}

fn not_connected(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable
    )
}

/// etcd's gateway error body: `{"error":"...","message":"...","code":N}`.
pub(crate) fn server_error(value: &Value, what: &str) -> Error {
    let message = value
        .get("message")
        .or_else(|| value.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("unknown error");
    let code = value.get("code").and_then(Value::as_i64).unwrap_or(2);
    Error::new(ErrorKind::Server { code }, format!("{what}: {message}"))
}

/// Whether a transaction took its success branch (proto3 JSON omits `false`).
fn succeeded(answer: &Value) -> bool {
    answer.get("succeeded").and_then(Value::as_bool).unwrap_or(false)
}

fn key_value(v: &Value) -> Result<KeyValue, Error> {
    let value = match v.get("value").and_then(Value::as_str) {
        None => Vec::new(),
        Some(s) => B64
            .decode(s)
            .map_err(|e| Error::new(ErrorKind::Protocol, format!("value is not base64: {e}")))?,
    };
    Ok(KeyValue { value, create_revision: int(v, "create_revision"), lease: int(v, "lease") })
}

/// An int64 field: proto3 JSON writes them as strings and omits zeros.
fn int(v: &Value, field: &str) -> i64 {
    match v.get(field) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// A uint64 field (member ids use the whole range).
fn uint(v: &Value, field: &str) -> u64 {
    match v.get(field) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_fields_read_as_strings_numbers_or_absent() {
        let v = json!({"a": "42", "b": 7, "big": "18446744073709551615"});
        assert_eq!(int(&v, "a"), 42);
        assert_eq!(int(&v, "b"), 7);
        assert_eq!(int(&v, "missing"), 0);
        assert_eq!(uint(&v, "big"), u64::MAX);
    }

    #[test]
    fn gateway_errors_keep_their_code() {
        let e = server_error(
            &json!({"error":"x","message":"etcdserver: requested lease not found","code":5}),
            "revoke",
        );
        assert_eq!(e.kind, ErrorKind::Server { code: 5 });
        assert!(e.message.contains("lease not found"));
    }

    #[test]
    fn nothing_listening_is_unreachable_and_fast() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = Client::new(vec![format!("http://127.0.0.1:{port}")], Duration::from_secs(1), None);
        let started = Instant::now();
        let e = c.get(b"k", Instant::now() + Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn a_server_that_echoes_the_password_is_scrubbed() {
        // Answers every request with an error quoting the request's body,
        // as a careless proxy might.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&request).contains("}") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "the client hung up");
                request.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&request).into_owned();
            let echoed = text[text.find('{').unwrap()..].to_owned();
            let body = json!({ "message": format!("refused {echoed}"), "code": 3 }).to_string();
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).unwrap();
        });
        let credentials = Some(("root".to_owned(), Password::new("hunter2-secret")));
        let c = Client::new(vec![url], Duration::from_secs(1), credentials);
        let e = c.put(b"k", b"v", 0, Instant::now() + Duration::from_secs(3)).unwrap_err();
        server.join().unwrap();
        assert_eq!(e.kind, ErrorKind::Server { code: 3 }, "{e}");
        assert!(e.message.contains("refused") && e.message.contains("***"), "{e}");
        assert!(!e.message.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_silent_server_times_out_at_the_deadline() {
        // Accepts connections (the kernel does) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let c = Client::new(vec![url], Duration::from_secs(1), None);
        let started = Instant::now();
        let e = c
            .put_if_absent(b"k", b"v", 1, Instant::now() + Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Ambiguous, "{e}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "{took:?}");
    }
}
