//! The Redis bext-locking backend.
//!
//! Three deployments, picked by the config:
//!
//! * `url`: one server. Acquire is one Lua script, `SET key token NX PX ttl`
//!   plus a bump of a never-expiring per-key fence counter, so handles carry
//!   fences that rise across acquisitions, releases, expiries and (because a
//!   fence is never below the server clock in microseconds) restarts that
//!   lost or rolled back the data.
//! * `urls`: Redlock over N independent masters, in parallel, kept only with
//!   a majority and positive validity. No fences: independent masters share
//!   no counter that could only rise.
//! * `cluster_urls`: one Redis Cluster; the single-node scripts, with the
//!   lock and its counter in one hash slot.
//!
//! With `"fencing": false` a single node or cluster acquires with a plain
//! `SET key token NX PX ttl`, the command a hand-written client sends, and
//! its handles carry no fence.
//!
//! Release is compare-and-delete and renew compare-and-`PEXPIRE`, so a stale
//! handle never touches a newer holder's lock and renew never re-creates a
//! lock that is gone. Every call is bounded by `op_timeout_ms`, connections
//! are pooled and reopened by themselves after a server restart, and no
//! message ever contains a password from a URL.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cluster;
mod config;
pub mod keys;
mod node;
mod quorum;
mod redact;
pub mod scripts;

use std::ffi::CStr;
use std::time::{Duration, Instant};

use bext_locking::{LockHandle, PluginError};
use bext_locking_kit::{Backend, Limits, message};
use redis::Value;

pub use config::{DEFAULT_KEY_PREFIX, RedisConfig, Settings, Topology};
pub use redact::redact_url;

use crate::cluster::Cluster;
use crate::keys::{fence_key, lock_key};
use crate::node::{Invocation, Node};
use crate::quorum::Quorum;
use crate::redact::secrets_of;
use crate::scripts::{ACQUIRE_FENCED, HOLDS, RELEASE, RENEW};

/// Where the locks live. One per instance, so variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Deployment {
    /// One server or one cluster: the single-node scripts.
    Fenced(Fenced),
    /// Independent masters.
    Quorum(Quorum),
}

/// Deployments that run the fenced scripts.
#[allow(clippy::large_enum_variant)]
enum Fenced {
    Single(Node),
    Cluster(Cluster),
}

impl Fenced {
    fn call(&self, inv: &Invocation<'_>, deadline: Instant) -> Result<Value, String> {
        match self {
            Fenced::Single(node) => node.call(inv, deadline),
            Fenced::Cluster(cluster) => cluster.call(inv, deadline),
        }
    }
}

/// The Redis backend: its deployment and where its keys live.
pub struct Redis {
    backend: Deployment,
    prefix: String,
    op_timeout: Duration,
    /// Single node or cluster with fences (false for a quorum).
    fencing: bool,
}

/// An instance of the Redis backend, in-process. Safe to share between
/// threads.
pub type RedisPlugin = bext_locking_kit::Plugin<Redis>;

impl Redis {
    /// Builds a backend from checked settings. Opens no connection: servers
    /// that are down, or a wrong password, show up as `Err` from the calls.
    pub fn new(s: Settings) -> Result<Self, PluginError> {
        let backend = match &s.topology {
            Topology::Single(url) => Deployment::Fenced(Fenced::Single(
                Node::new(url, s.pool_size, s.connect_timeout, secrets_of([url]))
                    .map_err(PluginError::invalid)?,
            )),
            Topology::Cluster(urls) => Deployment::Fenced(Fenced::Cluster(
                Cluster::new(urls, s.pool_size, s.connect_timeout, s.op_timeout, secrets_of(urls))
                    .map_err(PluginError::invalid)?,
            )),
            Topology::Quorum(urls) => {
                let secrets = secrets_of(urls);
                let nodes = urls
                    .iter()
                    .map(|u| Node::new(u, s.pool_size, s.connect_timeout, secrets.clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(PluginError::invalid)?;
                Deployment::Quorum(Quorum::new(nodes, s.clock_drift_factor, s.op_timeout))
            }
        };
        Ok(Self { backend, prefix: s.key_prefix, op_timeout: s.op_timeout, fencing: s.fencing })
    }

    /// Whether this instance's handles carry fences (single node and
    /// cluster: unless configured with `"fencing": false`; quorum: never).
    pub fn fencing(&self) -> bool {
        self.fencing
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.op_timeout
    }

    /// Runs a script (or the plain acquire) on a single node or cluster
    /// deployment.
    fn script(&self, inv: &Invocation<'_>) -> Result<Value, PluginError> {
        match &self.backend {
            Deployment::Fenced(f) => f.call(inv, self.deadline()).map_err(PluginError::backend),
            // Every caller answers a quorum deployment before building a script.
            Deployment::Quorum(_) => {
                Err(PluginError::backend("redis: no fenced script on a quorum"))
            }
        }
    }
}

impl Redis {
    /// `SET lock token NX PX ttl` and nothing else on the way to a held
    /// lock. A nil reply is someone else's lock, or ours when the command
    /// was sent again after its first reply was lost (a reconnect, or the
    /// cluster driver's retry): the `GET` that tells the two apart costs a
    /// round trip on contention only.
    fn try_lock_unfenced(
        &self,
        key: &str,
        ttl_ms: u64,
        token: String,
    ) -> Result<Option<LockHandle>, PluginError> {
        let lock = lock_key(&self.prefix, key);
        let ttl = ttl_ms.to_string();
        let inv = Invocation { lua: None, keys: &[&lock], args: &[&token, &ttl] };
        let held = match self.script(&inv)? {
            Value::Okay => true,
            Value::SimpleString(s) if s == "OK" => true,
            Value::Nil => {
                let check = Invocation { lua: Some(&HOLDS), keys: &[&lock], args: &[&token] };
                match self.script(&check)? {
                    Value::Int(n) => n == 1,
                    other => return Err(unexpected("acquire check", &other)),
                }
            }
            other => return Err(unexpected("acquire", &other)),
        };
        Ok(held.then(|| LockHandle { key: key.to_owned(), lock_id: token, ttl_ms, fence: None }))
    }
}

fn unexpected(what: &str, v: &Value) -> PluginError {
    PluginError::backend(format!("redis: unexpected reply to {what}: {v:?}"))
}

impl Backend for Redis {
    const NAME: &'static CStr = c"redis";
    type Config = RedisConfig;

    fn create(config: RedisConfig) -> Result<Self, PluginError> {
        Self::new(Settings::from_config(config)?)
    }

    /// A quorum serves only TTLs that can leave validity after its drift
    /// allowance; the other deployments serve the ABI's range.
    fn limits(&self) -> Limits {
        match &self.backend {
            Deployment::Quorum(q) => Limits::abi().with_min_ttl_ms(q.min_ttl_ms(), q.min_ttl_why()),
            Deployment::Fenced(_) => Limits::abi(),
        }
    }

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, PluginError> {
        if let Deployment::Quorum(q) = &self.backend {
            return q.try_lock(&self.prefix, key, ttl_ms).map_err(PluginError::backend);
        }
        let token = uuid::Uuid::new_v4().to_string();
        if !self.fencing {
            return self.try_lock_unfenced(key, ttl_ms, token);
        }
        let (lock, fence) = (lock_key(&self.prefix, key), fence_key(&self.prefix, key));
        let ttl = ttl_ms.to_string();
        let inv = Invocation {
            lua: Some(&ACQUIRE_FENCED),
            keys: &[&lock, &fence],
            args: &[&token, &ttl],
        };
        match self.script(&inv)? {
            Value::Int(f) if f > 0 => Ok(Some(LockHandle {
                key: key.to_owned(),
                lock_id: token,
                ttl_ms,
                fence: Some(f as u64),
            })),
            Value::Nil => Ok(None),
            other => Err(unexpected("acquire", &other)),
        }
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), PluginError> {
        if let Deployment::Quorum(q) = &self.backend {
            return q.renew(&self.prefix, handle).map_err(PluginError::backend);
        }
        let lock = lock_key(&self.prefix, &handle.key);
        let ttl = handle.ttl_ms.to_string();
        let inv = Invocation { lua: Some(&RENEW), keys: &[&lock], args: &[&handle.lock_id, &ttl] };
        match self.script(&inv)? {
            Value::Int(1) => Ok(()),
            Value::Int(0) => {
                Err(PluginError::backend(format!("redis: {}", message::not_held(&handle.key))))
            }
            other => Err(unexpected("renew", &other)),
        }
    }

    fn release(&self, handle: &LockHandle) -> Result<(), PluginError> {
        if let Deployment::Quorum(q) = &self.backend {
            return q.release(&self.prefix, handle).map_err(PluginError::backend);
        }
        let lock = lock_key(&self.prefix, &handle.key);
        let inv = Invocation { lua: Some(&RELEASE), keys: &[&lock], args: &[&handle.lock_id] };
        match self.script(&inv)? {
            Value::Int(_) => Ok(()),
            other => Err(unexpected("release", &other)),
        }
    }

    fn cleanup(&self) {
        match &self.backend {
            Deployment::Fenced(Fenced::Single(node)) => node.close(),
            Deployment::Fenced(Fenced::Cluster(cluster)) => cluster.close(),
            Deployment::Quorum(q) => q.close(),
        }
    }
}

/// The export description used by the `.so`.
pub struct Exported;

impl bext_locking_ffi::Export for Exported {
    type Backend = Redis;
    const VERSION: &'static CStr = bext_locking_ffi::crate_version_cstr!();
    const DESCRIPTION: &'static str = "Redis locks: one server with fencing tokens, Redlock over independent masters (no fences), or Redis Cluster; \"fencing\": false takes plain SET NX PX locks without fences";
    // The default deployment (one `url`) fences; quorum handles, and those of
    // `"fencing": false`, carry none.
    const FENCING: bool = true;
}

bext_locking_ffi::export_locking_plugin!(Exported);
