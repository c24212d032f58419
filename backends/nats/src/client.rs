//! One connection to the server or cluster, driven on a runtime the
//! instance owns, with the bucket handles and a deadline on every call.
//!
//! The client's connection task (reads, pings, reconnects) must run between
//! calls, so the runtime has one worker thread of its own; a call runs on
//! the calling thread (`block_on`) and talks to that task through channels.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::{ConnectOptions, ServerAddr};
use tokio::runtime::Runtime;

use crate::config::{Auth, Settings};
use crate::keys;

/// How a call failed.
#[derive(Debug, Clone)]
pub(crate) enum Fail {
    /// The budget ran out: the call's outcome on the server is unknown.
    Timeout,
    /// The client or server said why.
    Other(String),
    /// The config asks for something this server cannot do safely.
    Refused(String),
}

impl Fail {
    pub fn other(what: &str, e: impl std::error::Error) -> Self {
        Self::Other(format!("{what}: {}", describe(&e)))
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("no answer within op_timeout_ms"),
            Self::Other(s) | Self::Refused(s) => f.write_str(s),
        }
    }
}

/// An error and its causes on one line (the client's `Display` often stops
/// at "publish failed").
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(&format!(": {c}"));
        }
        source = cause.source();
    }
    s
}

/// A live connection and the buckets it has opened.
pub(crate) struct Conn {
    pub js: Context,
    /// The bucket of the locks.
    pub locks: Store,
    /// Lease buckets by TTL, opened (or created) on first use.
    leases: Mutex<HashMap<u64, Store>>,
    prefix: String,
    replicas: usize,
    /// Whether the server's replicated streams serialize conditional
    /// writes; when not, a replicated bucket is refused.
    cas_safe: bool,
    op_timeout: Duration,
    /// The server's version, from its INFO at connect time.
    pub server_version: String,
    // Last: dropped after the client, so its tasks stop with it.
    rt: Option<Runtime>,
}

/// The stream of a KV bucket as this backend creates it: the layout of
/// `nats kv add` (so the CLI's tools read it), one message per key, and
/// reads from the stream leader only (`allow_direct: false`): a follower
/// could answer "no lease" for a lease it has not replicated yet.
pub fn bucket_stream(bucket: &str, max_age: Duration, replicas: usize) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(if max_age.is_zero() {
            "bext-locking: lock entries (fence = revision)".to_owned()
        } else {
            format!("bext-locking: leases of {} ms", max_age.as_millis())
        }),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        // Release removes the holder's message by its sequence: a delete
        // conditioned on exactly that revision, leaving no marker behind.
        deny_delete: false,
        deny_purge: false,
        allow_direct: false,
        discard: DiscardPolicy::New,
        duplicate_window: if max_age.is_zero() {
            Duration::from_secs(120)
        } else {
            max_age.min(Duration::from_secs(120))
        },
        ..Default::default()
    }
}

impl Conn {
    /// Connects, within the connect timeout per server, and opens (or
    /// creates) the lock bucket.
    pub fn open(s: &Settings) -> Result<Self, Fail> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bext-nats")
            .enable_all()
            .build()
            .map_err(|e| Fail::Other(format!("cannot start a runtime: {e}")))?;
        // The client spawns its connection task when it is built.
        let entered = rt.enter();
        let addrs = s
            .servers
            .iter()
            .map(|u| u.parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Fail::other("bad server address", e))?;
        let mut opts = ConnectOptions::new()
            .name("bext-locking-nats")
            .connection_timeout(s.connect_timeout)
            .request_timeout(Some(s.op_timeout))
            // Fail over fast: a lock call's budget is seconds, not the
            // client's default back-off of up to 4 s between rounds.
            .reconnect_delay_callback(|n| Duration::from_millis((n as u64 * 50).min(500)))
            .max_reconnects(None);
        match &s.auth {
            Auth::None => {}
            Auth::UserPassword(u, p) => {
                opts = opts.user_and_password(u.clone(), p.expose().to_owned());
            }
            Auth::Token(t) => opts = opts.token(t.expose().to_owned()),
        }
        let budget = s.connect_timeout * s.servers.len() as u32 + s.op_timeout;
        let client = rt
            .block_on(async { tokio::time::timeout(budget, opts.connect(addrs)).await })
            .map_err(|_| Fail::Timeout)?
            .map_err(|e| Fail::other("cannot connect", e))?;
        let server_version = client.server_info().version;
        let cas_safe = crate::replicated_cas_is_safe(&server_version);
        if s.replicas > 1 && !cas_safe {
            return Err(Fail::Refused(format!(
                "replicas is {}, but nats-server {server_version} does not serialize conditional \
                 writes on replicated streams (fixed in 2.9.21): two holders could win one lock; \
                 use replicas 1 or upgrade the server",
                s.replicas
            )));
        }
        let mut js = jetstream::new(client);
        js.set_timeout(s.op_timeout);
        let bucket = keys::lock_bucket(&s.bucket_prefix);
        let locks = rt
            .block_on(async {
                tokio::time::timeout(
                    s.op_timeout,
                    open_bucket(&js, &bucket, Duration::ZERO, s.replicas, cas_safe),
                )
                .await
            })
            .map_err(|_| Fail::Timeout)??;
        drop(entered);
        Ok(Self {
            js,
            locks,
            leases: Mutex::new(HashMap::new()),
            prefix: s.bucket_prefix.clone(),
            replicas: s.replicas,
            cas_safe,
            op_timeout: s.op_timeout,
            server_version,
            rt: Some(rt),
        })
    }

    /// Runs `fut` to completion on this thread within the call budget.
    pub fn run<T>(&self, fut: impl Future<Output = Result<T, Fail>>) -> Result<T, Fail> {
        let rt = self.rt.as_ref().expect("the runtime lives as long as the connection");
        rt.block_on(async { tokio::time::timeout(self.op_timeout, fut).await })
            .map_err(|_| Fail::Timeout)?
    }

    /// Runs `fut` with a budget of its own (best-effort clean-up after a
    /// failed call).
    pub fn run_for<T>(&self, budget: Duration, fut: impl Future<Output = T>) -> Option<T> {
        let rt = self.rt.as_ref().expect("the runtime lives as long as the connection");
        rt.block_on(async { tokio::time::timeout(budget, fut).await }).ok()
    }

    /// The lease bucket for `lease_ms`, opened or created once.
    pub async fn leases(&self, lease_ms: u64) -> Result<Store, Fail> {
        if let Some(s) = self.leases.lock().unwrap_or_else(PoisonError::into_inner).get(&lease_ms) {
            return Ok(s.clone());
        }
        let bucket = keys::lease_bucket(&self.prefix, lease_ms);
        let max_age = Duration::from_millis(lease_ms);
        let store = open_bucket(&self.js, &bucket, max_age, self.replicas, self.cas_safe).await?;
        self.leases.lock().unwrap_or_else(PoisonError::into_inner).insert(lease_ms, store.clone());
        Ok(store)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // The client's handles are dropped inside their runtime (they
            // may wake its tasks); a task stuck in a DNS lookup must not
            // hang the host's cleanup.
            {
                let _in = rt.enter();
                self.leases.lock().unwrap_or_else(PoisonError::into_inner).clear();
            }
            rt.shutdown_timeout(Duration::from_millis(500));
        }
    }
}

/// Opens bucket `name`, creating it when absent; an existing bucket whose
/// expiry is not `max_age` is refused (its leases would end at the wrong
/// time).
async fn open_bucket(
    js: &Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
    cas_safe: bool,
) -> Result<Store, Fail> {
    let config = bucket_stream(name, max_age, replicas);
    let stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| Fail::other(&format!("cannot open or create bucket `{name}`"), e))?;
    let have = &stream.cached_info().config;
    if have.max_age != max_age || have.max_messages_per_subject < 1 {
        return Err(Fail::Other(format!(
            "bucket `{name}` exists with max_age {} ms and history {}; this backend needs \
             max_age {} ms (0: none) and history 1",
            have.max_age.as_millis(),
            have.max_messages_per_subject,
            max_age.as_millis()
        )));
    }
    if have.num_replicas > 1 && !cas_safe {
        return Err(Fail::Other(format!(
            "bucket `{name}` has {} replicas, and this server does not serialize conditional \
             writes on replicated streams (fixed in nats-server 2.9.21): two holders could win \
             one lock; use a bucket with 1 replica or upgrade the server",
            have.num_replicas
        )));
    }
    Ok(Store {
        name: name.to_owned(),
        stream_name: have.name.clone(),
        prefix: format!("$KV.{name}."),
        put_prefix: None,
        use_jetstream_prefix: false,
        stream,
    })
}
