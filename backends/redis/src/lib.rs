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
//! Beside each lock, on its TTL, a small hash records the holder's owner
//! and acquisition time by the server clock for `inspect`; `force_release`
//! is one script (single node, cluster) or one per master, conditioned on
//! the holder's identity, so it never races a renew.
//!
//! With `"fencing": false` a single node or cluster acquires with a plain
//! `SET key token NX PX ttl`, the command a hand-written client sends, and
//! its handles carry no fence. An owner travels in the `SET`'s value
//! (`token:ttl_ms:owner`, the whole of it the handle's `lock_id`), so the
//! acquire stays that one command and `inspect` reads the owner, and how
//! long the lock has been held, from the value (see `holder`); without an
//! owner the value is the bare token, and `inspect` shows the lock held
//! with its TTL but no owner and no `held_for_ms`.
//!
//! `lock_wait` subscribes to the lock's pub/sub channel (on each server it
//! lives on) before its first try; release, force release and `renew_for`
//! publish to that channel in the same script as their write, and a
//! contended try answers the holder's `PTTL`, so a waiter sleeps until a
//! message or that expiry and never polls (see `waiting` and `wake`).
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
mod holder;
pub mod keys;
mod node;
mod quorum;
mod redact;
mod resp;
pub mod scripts;
mod waiting;
mod wake;

use std::ffi::CStr;
use std::time::{Duration, Instant};

use bext_locking::{Acquired, ForceReleased, LockHandle, LockInfo, PluginError, Wait};
use bext_locking_kit::{Backend, Limits, message};
use redis::Value;

pub use config::{DEFAULT_KEY_PREFIX, RedisConfig, Settings, Topology};
pub use redact::redact_url;

use crate::cluster::Cluster;
use crate::keys::{fence_key, info_key, lock_key, wake_channel};
use crate::node::{Invocation, Node};
use crate::quorum::Quorum;
use crate::redact::secrets_of;
use crate::scripts::{
    ACQUIRE_FENCED, ACQUIRE_FENCED_WAIT, ACQUIRE_PLAIN_WAIT, FORCE_RELEASE, HOLDS, INSPECT,
    RELEASE, RENEW,
};
use crate::waiting::{Listen, Try, contended, wait_for};

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
    /// Also bounds opening a waiter's subscription on each server.
    connect_timeout: Duration,
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
        Ok(Self {
            backend,
            prefix: s.key_prefix,
            op_timeout: s.op_timeout,
            connect_timeout: s.connect_timeout,
            fencing: s.fencing,
        })
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
    /// `SET lock value NX PX ttl` and nothing else on the way to a held
    /// lock, the value carrying the owner when one is given (see
    /// [`holder`]). A nil reply is someone else's lock, or ours when the
    /// command was sent again after its first reply was lost (a reconnect,
    /// or the cluster driver's retry): the `GET` that tells the two apart
    /// costs a round trip on contention only.
    fn try_lock_unfenced(
        &self,
        key: &str,
        ttl_ms: u64,
        token: String,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        let lock = lock_key(&self.prefix, key);
        let value = holder::unfenced_value(token, ttl_ms, owner);
        let ttl = ttl_ms.to_string();
        let inv = Invocation { lua: None, keys: &[&lock], args: &[&value, &ttl] };
        let held = match self.script(&inv)? {
            Value::Okay => true,
            Value::SimpleString(s) if s == "OK" => true,
            Value::Nil => {
                let check = Invocation { lua: Some(&HOLDS), keys: &[&lock], args: &[&value] };
                match self.script(&check)? {
                    Value::Int(n) => n == 1,
                    other => return Err(unexpected("acquire check", &other)),
                }
            }
            other => return Err(unexpected("acquire", &other)),
        };
        Ok(held.then(|| LockHandle { key: key.to_owned(), lock_id: value, ttl_ms, fence: None }))
    }
}

impl Redis {
    /// Where a waiter on `key` subscribes: the server, any of a cluster's
    /// seeds (a cluster `PUBLISH` reaches every node), or every master of
    /// a quorum.
    fn listen(&self, key: &str) -> Listen {
        let sources = match &self.backend {
            Deployment::Fenced(Fenced::Single(node)) => vec![vec![node.client()]],
            Deployment::Fenced(Fenced::Cluster(cluster)) => vec![cluster.seeds()],
            Deployment::Quorum(q) => q.clients().into_iter().map(|c| vec![c]).collect(),
        };
        Listen {
            sources,
            channel: wake_channel(&self.prefix, key),
            timeout: self.connect_timeout.min(self.op_timeout.max(Duration::from_millis(100))),
        }
    }

    /// A waiter's try on a single node or cluster: the acquire scripts'
    /// waiting variants, which answer contention with the holder's `PTTL`
    /// in the same round trip. Without fences the plain script stands in
    /// for `SET NX PX` (one command either way).
    fn try_waiting(&self, key: &str, ttl_ms: u64, owner: Option<&str>) -> Result<Try, PluginError> {
        let mut token = uuid::Uuid::new_v4().to_string();
        let (lock, info) = (lock_key(&self.prefix, key), info_key(&self.prefix, key));
        let fence = fence_key(&self.prefix, key);
        let ttl = ttl_ms.to_string();
        let reply = if self.fencing {
            let mut args = vec![token.as_str(), ttl.as_str()];
            args.extend(owner);
            let keys = [lock.as_str(), fence.as_str(), info.as_str()];
            self.script(&Invocation { lua: Some(&ACQUIRE_FENCED_WAIT), keys: &keys, args: &args })?
        } else {
            token = holder::unfenced_value(token, ttl_ms, owner);
            let args = [token.as_str(), ttl.as_str()];
            self.script(&Invocation {
                lua: Some(&ACQUIRE_PLAIN_WAIT),
                keys: &[&lock],
                args: &args,
            })?
        };
        let handle = |fence: Option<u64>| LockHandle {
            key: key.to_owned(),
            lock_id: token.clone(),
            ttl_ms,
            fence,
        };
        match (&reply, self.fencing) {
            (Value::Int(f), true) if *f > 0 => Ok(Try::Got(handle(Some(*f as u64)))),
            (Value::Int(1), false) => Ok(Try::Got(handle(None))),
            _ => match contended(&reply) {
                Some(hint) => Ok(Try::Held(hint)),
                None => Err(unexpected("acquire", &reply)),
            },
        }
    }

    /// Compare-and-`PEXPIRE` on a single node or cluster; with a channel
    /// the waiters are told.
    fn renew_fenced(
        &self,
        handle: &LockHandle,
        ttl_ms: u64,
        channel: Option<&str>,
    ) -> Result<(), PluginError> {
        let lock = lock_key(&self.prefix, &handle.key);
        let info = info_key(&self.prefix, &handle.key);
        let ttl = ttl_ms.to_string();
        let mut args = vec![handle.lock_id.as_str(), ttl.as_str()];
        args.extend(channel);
        let inv = Invocation { lua: Some(&RENEW), keys: &[&lock, &info], args: &args };
        match self.script(&inv)? {
            Value::Int(1) => Ok(()),
            Value::Int(0) => {
                Err(PluginError::backend(format!("redis: {}", message::not_held(&handle.key))))
            }
            other => Err(unexpected("renew", &other)),
        }
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

    /// `"lock_wait"`: a release publishes to the lock's channel and
    /// waiters also wake at the holder's expiry. Not `"fifo"`: every
    /// waiter woken by a release tries at once, and the fastest wins.
    const CAPABILITIES: &'static [&'static str] =
        &["owner", "inspect", "force_release", "lock_wait", "renew_ttl"];

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, PluginError> {
        self.try_lock_owned(key, ttl_ms, None)
    }

    fn try_lock_owned(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        if let Deployment::Quorum(q) = &self.backend {
            return q.try_lock(&self.prefix, key, ttl_ms, owner).map_err(PluginError::backend);
        }
        let token = uuid::Uuid::new_v4().to_string();
        if !self.fencing {
            return self.try_lock_unfenced(key, ttl_ms, token, owner);
        }
        let (lock, fence) = (lock_key(&self.prefix, key), fence_key(&self.prefix, key));
        let info = info_key(&self.prefix, key);
        let ttl = ttl_ms.to_string();
        let mut args = vec![token.as_str(), ttl.as_str()];
        args.extend(owner);
        let inv =
            Invocation { lua: Some(&ACQUIRE_FENCED), keys: &[&lock, &fence, &info], args: &args };
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

    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        if let Deployment::Quorum(q) = &self.backend {
            return q.inspect(&self.prefix, key).map_err(PluginError::backend);
        }
        let (lock, fence) = (lock_key(&self.prefix, key), fence_key(&self.prefix, key));
        let info = info_key(&self.prefix, key);
        // Without fences the counter is not read: one left by an earlier
        // fenced configuration on the same prefix belongs to no current lock.
        let keys: &[&str] = if self.fencing { &[&lock, &info, &fence] } else { &[&lock, &info] };
        let inv = Invocation { lua: Some(&INSPECT), keys, args: &[] };
        let reply = self.script(&inv)?;
        match scripts::Inspected::parse(&reply) {
            Some(None) => Ok(LockInfo::free(key)),
            Some(Some(i)) => Ok(i.into_info(key)),
            None => Err(unexpected("inspect", &reply)),
        }
    }

    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        if let Deployment::Quorum(q) = &self.backend {
            if if_fence.is_some() {
                return Err(PluginError::unsupported(
                    "redis quorum: quorum locks carry no fence, so `if_fence` cannot be checked; \
                     break the lock without it (after `inspect` shows the holder)",
                ));
            }
            return q.force_release(&self.prefix, key).map_err(PluginError::backend);
        }
        if !self.fencing && if_fence.is_some() {
            return Err(PluginError::unsupported(
                "redis: with \"fencing\": false locks carry no fence, so `if_fence` cannot be \
                 checked; break the lock without it (after `inspect` shows the holder)",
            ));
        }
        let (lock, fence) = (lock_key(&self.prefix, key), fence_key(&self.prefix, key));
        let info = info_key(&self.prefix, key);
        let wanted = if_fence.map(|f| f.to_string());
        let channel = wake_channel(&self.prefix, key);
        let mut args = vec![channel.as_str()];
        args.extend(wanted.as_deref());
        let inv =
            Invocation { lua: Some(&FORCE_RELEASE), keys: &[&lock, &fence, &info], args: &args };
        match self.script(&inv)? {
            Value::Nil => Ok(ForceReleased { released: false, fence: None }),
            Value::Array(a) if a.len() == 1 => {
                let fence = match &a[0] {
                    Value::BulkString(b) => {
                        std::str::from_utf8(b).ok().and_then(|s| s.parse().ok())
                    }
                    _ => None,
                };
                // A counter left by an earlier fenced configuration is no
                // fence of the unfenced lock just broken.
                Ok(ForceReleased { released: true, fence: fence.filter(|_| self.fencing) })
            }
            other => Err(unexpected("force_release", &other)),
        }
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), PluginError> {
        if let Deployment::Quorum(q) = &self.backend {
            return q
                .renew(&self.prefix, handle, handle.ttl_ms, false)
                .map_err(PluginError::backend);
        }
        self.renew_fenced(handle, handle.ttl_ms, None)
    }

    /// Compare-and-`PEXPIRE` to `ttl_ms` (on a quorum, on every master,
    /// kept with a majority inside the new lease's validity), publishing
    /// to the lock's channel so waiters read the new expiry: a lease cut
    /// short then passes on when it ends, not when it would have.
    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        if let Deployment::Quorum(q) = &self.backend {
            return q.renew(&self.prefix, handle, ttl_ms, true).map_err(PluginError::backend);
        }
        let channel = wake_channel(&self.prefix, &handle.key);
        self.renew_fenced(handle, ttl_ms, Some(&channel))
    }

    /// Subscribes to the lock's channel on every server it lives on, then
    /// tries; on contention sleeps until a release is published, the
    /// holder's `PTTL` runs out or the wait ends (see `waiting`).
    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        let listen = self.listen(key);
        match &self.backend {
            Deployment::Quorum(q) => wait_for(wait, listen, || {
                q.try_waiting(&self.prefix, key, ttl_ms, owner).map_err(PluginError::backend)
            }),
            Deployment::Fenced(_) => {
                wait_for(wait, listen, || self.try_waiting(key, ttl_ms, owner))
            }
        }
    }

    fn release(&self, handle: &LockHandle) -> Result<(), PluginError> {
        if let Deployment::Quorum(q) = &self.backend {
            return q.release(&self.prefix, handle).map_err(PluginError::backend);
        }
        let lock = lock_key(&self.prefix, &handle.key);
        let channel = wake_channel(&self.prefix, &handle.key);
        let args = [handle.lock_id.as_str(), channel.as_str()];
        // Without fences a record exists only once a renew wrote one, and
        // it expires with the lease it describes and describes no later
        // holder (its digest is this token's), so the release leaves it:
        // deleting a key that is nearly always absent is a server call
        // per release for nothing.
        let info;
        let keys: &[&str] = if self.fencing {
            info = info_key(&self.prefix, &handle.key);
            &[&lock, &info]
        } else {
            &[&lock]
        };
        match self.script(&Invocation { lua: Some(&RELEASE), keys, args: &args })? {
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
