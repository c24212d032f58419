//! The NATS JetStream KV bext-locking backend.
//!
//! A lock is an entry in a KV bucket (`bucket_prefix`), keyed by the lock
//! key; its revision, a stream sequence that only rises, is the fence.
//! Expiry is the server's: NATS 2.9 has no per-message TTL, so each
//! acquisition also writes a lease entry into a bucket whose `max_age` is
//! the lock's TTL (`<prefix>_ttl_<ms>`, one bucket per distinct TTL), and
//! the lock is held while that lease exists. The server deletes a lease
//! whose age passes `max_age`; renewing rewrites it. See [`locks`] for the
//! calls and why two holders can never overlap.
//!
//! * **acquire**: write the lease, then create the lock entry (an update
//!   conditioned on "no message yet"). If an entry exists, its lease is
//!   looked up: alive is contention; gone means the lock expired, and the
//!   entry is taken over by an update conditioned on the revision read.
//! * **renew**: read the lease, check it is this key's, then update it
//!   conditioned on the revision read; gone (or changed) means lost, and
//!   renew never writes a lease that is not there.
//! * **release**: read the lock entry, compare the lock id, delete the
//!   lease, then delete the entry's message by its sequence (a delete
//!   conditioned on exactly the holder's revision).
//!
//! * **lock_wait**: while the lock is held, a core subscription to the
//!   holder's lease subject wakes the waiter on a release, and the lease's
//!   age wakes it at an expiry (see `locks::wait_turn`).
//!
//! The client is the official `async-nats`, on a one-worker runtime the
//! instance owns; every call is bounded by `op_timeout_ms`. No message
//! carries a password or token. See `docs/backends/nats.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
pub mod config;
pub mod keys;
mod locks;

use std::ffi::CStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bext_locking::{Acquired, ForceReleased, LockHandle, LockInfo, PluginError, Wait};
use bext_locking_kit::{Backend, message};

pub use client::bucket_stream;
pub use config::NatsConfig;

use crate::client::{Conn, Fail};
use crate::config::Settings;

/// The first least sleep of a waiter after an expiry wake-up.
const FLOOR_FIRST: Duration = Duration::from_millis(5);
/// The longest least sleep after expiry wake-ups that found the lock held.
const FLOOR_MAX: Duration = Duration::from_millis(250);

/// How long the clean-up after a failed or contended try_lock may take.
const CLEANUP_BUDGET: Duration = Duration::from_millis(500);

/// The nats backend: one connection and where its buckets are.
pub struct Nats {
    /// `None` once cleaned up; calls in flight keep their own `Arc`.
    conn: RwLock<Option<Arc<Conn>>>,
    settings: Settings,
    server_version: String,
}

/// An instance of the nats backend, in-process.
pub type NatsPlugin = bext_locking_kit::Plugin<Nats>;

impl Nats {
    fn conn(&self) -> Result<Arc<Conn>, PluginError> {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| PluginError::backend(format!("nats: {}", message::CLOSED)))
    }

    /// The version the server announced when this instance connected.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Whether that server has per-message TTLs (NATS 2.11 and later).
    /// This build uses lease buckets on every version; see
    /// `docs/backends/nats.md`.
    pub fn server_has_message_ttl(&self) -> bool {
        version_at_least(&self.server_version, (2, 11, 0))
    }

    fn failed(&self, call: &str, key: &str, fail: Fail) -> PluginError {
        let why = match fail {
            Fail::Timeout => format!(
                "no answer within op_timeout_ms ({} ms); the outcome is unknown",
                self.settings.op_timeout.as_millis()
            ),
            Fail::Other(s) | Fail::Refused(s) => s,
        };
        PluginError::backend(
            self.settings
                .secrets
                .scrub(&format!("nats ({}): {call}(`{key}`): {why}", self.settings.shown)),
        )
    }
}

/// Whether a `major.minor.patch[-x]` version is at least `at`.
pub fn version_at_least(version: &str, at: (u64, u64, u64)) -> bool {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    let mut next = || parts.next().and_then(|p| p.parse::<u64>().ok()).unwrap_or(0);
    (next(), next(), next()) >= at
}

/// The first server release whose replicated streams apply conditional
/// writes (`Nats-Expected-Last-Subject-Sequence`) one at a time. Before it
/// the check ran on the leader before consensus, so two concurrent
/// creates of one key could both succeed (nats-server issue 4320): on
/// those servers this backend refuses replicated buckets.
pub const SERIALIZED_CAS_VERSION: (u64, u64, u64) = (2, 9, 21);

/// Whether `version`'s replicated streams serialize conditional writes.
pub fn replicated_cas_is_safe(version: &str) -> bool {
    version_at_least(version, SERIALIZED_CAS_VERSION)
}

impl Backend for Nats {
    const NAME: &'static CStr = c"nats";
    type Config = NatsConfig;

    /// Connects and opens (or creates) the lock bucket. A bad value is
    /// `InvalidArgument`; an unreachable server or one without JetStream is
    /// `Backend`.
    fn create(config: NatsConfig) -> Result<Self, PluginError> {
        let settings = config.check()?;
        let conn = Conn::open(&settings).map_err(|fail| {
            let (invalid, why) = match fail {
                Fail::Timeout => (false, "no server answered within connect_timeout_ms".to_owned()),
                Fail::Other(s) => (false, s),
                Fail::Refused(s) => (true, s),
            };
            let message = settings.secrets.scrub(&format!("nats ({}): {why}", settings.shown));
            if invalid { PluginError::invalid(message) } else { PluginError::backend(message) }
        })?;
        let server_version = conn.server_version.clone();
        Ok(Self { conn: RwLock::new(Some(Arc::new(conn))), settings, server_version })
    }

    const CAPABILITIES: &'static [&'static str] =
        &["owner", "inspect", "force_release", "lock_wait"];

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, PluginError> {
        self.try_lock_owned(key, ttl_ms, None)
    }

    /// The owner is stored in the lock entry, beside the lock id.
    fn try_lock_owned(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        let conn = self.conn()?;
        let lock_id = uuid::Uuid::new_v4().to_string();
        let got = conn.run(locks::try_lock(&conn, key, &lock_id, ttl_ms, owner));
        match got {
            Ok(Some(fence)) => {
                Ok(Some(LockHandle { key: key.to_owned(), lock_id, ttl_ms, fence: Some(fence) }))
            }
            other => {
                // Not acquired, or not known to be: the lease must not keep
                // a lock entry alive that no handle names (deleting one that
                // was never written is harmless).
                let _ = conn.run_for(CLEANUP_BUDGET, locks::drop_lease(&conn, &lock_id, ttl_ms));
                other.map(|_| None).map_err(|f| self.failed("try_lock", key, f))
            }
        }
    }

    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        let conn = self.conn()?;
        conn.run(locks::inspect(&conn, key)).map_err(|f| self.failed("inspect", key, f))
    }

    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        let conn = self.conn()?;
        conn.run(locks::force_release(&conn, key, if_fence))
            .map_err(|f| self.failed("force_release", key, f))
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), PluginError> {
        let conn = self.conn()?;
        let key = &handle.key;
        match conn.run(locks::renew(&conn, key, &handle.lock_id, handle.ttl_ms)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(PluginError::backend(format!(
                "nats: {}",
                message::lost(key, "its lease expired, or it was released or taken over")
            ))),
            Err(f) => Err(self.failed("renew", key, f)),
        }
    }

    /// Tries, then sleeps on the holder's lease subject until a release
    /// deletes it or its age passes the TTL, and tries again; see
    /// `locks::wait_turn`.
    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        let conn = self.conn()?;
        let cancel = Arc::new(tokio::sync::Notify::new());
        let _hook = {
            let cancel = cancel.clone();
            // `notify_one` keeps a permit when nobody is waiting yet, so a
            // cancel between two sleeps is not lost.
            wait.on_cancel(move || cancel.notify_one())
        };
        // The least sleep after a wake-up that was not a release: a clock
        // ahead of the server's must not make a waiter spin on a lease it
        // believes over.
        let mut floor = FLOOR_FIRST;
        loop {
            if wait.is_cancelled() {
                return Ok(None);
            }
            let sent = Instant::now();
            if let Some(handle) = self.try_lock_owned(key, ttl_ms, owner)? {
                return Ok(Some(Acquired { handle, sent }));
            }
            if wait.is_over() {
                return Ok(None);
            }
            let deadline = tokio::time::Instant::from_std(wait.deadline());
            let budget = wait.remaining() + self.settings.op_timeout;
            match conn.run_for(budget, locks::wait_turn(&conn, key, floor, deadline, &cancel)) {
                None => return Err(self.failed("lock_wait", key, Fail::Timeout)),
                Some(Err(f)) => return Err(self.failed("lock_wait", key, f)),
                Some(Ok(locks::Woke::Changed)) => floor = FLOOR_FIRST,
                Some(Ok(locks::Woke::Expired)) => floor = (floor * 2).min(FLOOR_MAX),
                Some(Ok(locks::Woke::Over)) => {}
            }
        }
    }

    /// Leases live in one bucket per TTL, expired by the bucket's
    /// `max_age`: a lease's remaining time is its age against that.
    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        let _ = (handle, ttl_ms);
        Err(PluginError::unsupported(
            "nats: a lease's length is its bucket's max_age (one bucket per TTL), so a held \
             lock's remaining time cannot be set to another length (no renew_ttl)",
        ))
    }

    fn release(&self, handle: &LockHandle) -> Result<(), PluginError> {
        let conn = self.conn()?;
        conn.run(locks::release(&conn, &handle.key, &handle.lock_id))
            .map_err(|f| self.failed("release", &handle.key, f))
    }

    fn cleanup(&self) {
        // Dropping the last `Arc` closes the connection and stops its
        // runtime; calls in flight finish (or time out) on their own.
        self.conn.write().unwrap_or_else(PoisonError::into_inner).take();
    }
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsPlugin")
            .field("servers", &self.settings.shown)
            .field("bucket_prefix", &self.settings.bucket_prefix)
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

/// The export description used by the `.so`.
pub struct Exported;

impl bext_locking_ffi::Export for Exported {
    type Backend = Nats;
    const VERSION: &'static CStr = bext_locking_ffi::crate_version_cstr!();
    const DESCRIPTION: &'static str = "Locks on NATS JetStream KV: create-if-absent entries with \
        the revision as fence, and leases expired by the server (a bucket per TTL)";
    const FENCING: bool = true;
}

bext_locking_ffi::export_locking_plugin!(Exported);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare() {
        assert!(!version_at_least("2.9.10", (2, 11, 0)));
        assert!(version_at_least("2.11.0", (2, 11, 0)));
        assert!(version_at_least("v2.12.1-beta", (2, 11, 0)));
        assert!(version_at_least("3.0.0", (2, 11, 0)));
        assert!(!version_at_least("garbage", (2, 11, 0)));
        assert!(!replicated_cas_is_safe("2.9.10"));
        assert!(!replicated_cas_is_safe("2.9.20"));
        assert!(replicated_cas_is_safe("2.9.21"));
        assert!(replicated_cas_is_safe("2.10.0"));
    }

    #[test]
    fn every_config_field_is_in_the_schema() {
        let schema = bext_locking_kit::config::schema::<NatsConfig>();
        let props = schema["properties"].as_object().unwrap();
        for key in [
            "servers",
            "bucket_prefix",
            "user",
            "password",
            "token",
            "connect_timeout_ms",
            "op_timeout_ms",
            "replicas",
        ] {
            assert!(props.contains_key(key), "{key} missing from the schema");
        }
        assert_eq!(props.len(), 8);
    }

    #[test]
    fn an_unreachable_server_is_a_backend_error_without_secrets() {
        let mut c = NatsConfig::with_servers(["nats://u:hunter2pw@127.0.0.1:1"]);
        c.connect_timeout_ms = 200;
        c.op_timeout_ms = 200;
        let e = NatsPlugin::from_config(c).err().unwrap();
        assert_eq!(e.kind, bext_locking::ErrorKind::Backend);
        assert!(e.message.starts_with("nats (nats://u:***@127.0.0.1:1)"), "{}", e.message);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }
}
