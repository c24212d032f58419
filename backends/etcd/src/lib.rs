//! The etcd backend: locks on a consensus store.
//!
//! A lock is an etcd key (`key_prefix` + the lock key) whose value is the
//! acquisition's `lock_id`, attached to a lease of the lock's TTL:
//!
//! * **acquire**: grant a lease, then one transaction "if the key's create
//!   revision is 0 (it does not exist), put it on the lease". The key
//!   existing is contention; the unused lease is revoked. The fence is the
//!   key's create revision, which rises with every write to the cluster, so
//!   it strictly increases across acquisitions, holders and leader changes.
//! * **renew**: read the key (a linearizable read), check it still carries
//!   our `lock_id` (and our fence), then refresh the lease it is attached
//!   to; a missing key, another value, or a lease that is gone all fail.
//! * **release**: one transaction "if the value is our `lock_id`, delete
//!   it", then revoke the lease the deleted key was on.
//!
//! etcd leases count whole seconds and have a floor (1.5 × the election
//! timeout, rounded up), so a lease is `ceil(ttl_ms / 1000)` seconds or that
//! floor, whichever is longer: a lock may outlive its `ttl_ms` by up to a
//! second plus etcd's expiry sweep (≈0.5 s), never the other way round.
//!
//! The client speaks etcd's v3 JSON gateway over blocking HTTP/1.1, so the
//! plugin starts no runtime and no thread; every call is bounded by
//! `op_timeout_ms`. See `docs/backends/etcd.md` for why.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod gateway;

use std::ffi::CStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bext_locking::{LockHandle, LockingPlugin, PluginError, validate_lock_request};

pub use config::EtcdConfig;
pub use gateway::Client;

/// The lease length etcd is asked for: whole seconds, rounded up, at least 1.
pub fn lease_seconds(ttl_ms: u64) -> i64 {
    i64::try_from(ttl_ms.div_ceil(1000).max(1)).unwrap_or(i64::MAX)
}

/// An instance of the etcd backend.
pub struct EtcdPlugin {
    /// `None` once cleaned up; calls in flight keep their own `Arc`.
    client: RwLock<Option<Arc<Client>>>,
    key_prefix: String,
    op_timeout: Duration,
}

impl EtcdPlugin {
    /// Builds an instance from its config. No request is sent: an etcd that
    /// is down now makes calls fail, not creation.
    pub fn from_config(config: EtcdConfig) -> Result<Self, PluginError> {
        let c = config.check()?;
        let client = Client::new(c.endpoints, c.connect_timeout, c.credentials);
        Ok(Self {
            client: RwLock::new(Some(Arc::new(client))),
            key_prefix: c.key_prefix,
            op_timeout: c.op_timeout,
        })
    }

    /// The etcd key that holds lock `key`.
    pub fn etcd_key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.key_prefix.len() + key.len());
        k.extend_from_slice(self.key_prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    fn client(&self) -> Result<Arc<Client>, String> {
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| "etcd: this instance was cleaned up".to_owned())
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.op_timeout
    }
}

fn lost(key: &str, why: &str) -> String {
    format!("etcd: lock on `{key}` is no longer held by this handle ({why})")
}

impl LockingPlugin for EtcdPlugin {
    fn name(&self) -> &str {
        "etcd"
    }

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        validate_lock_request(key, ttl_ms)?;
        let client = self.client()?;
        let deadline = self.deadline();
        let etcd_key = self.etcd_key(key);
        let lease = client
            .lease_grant(lease_seconds(ttl_ms), deadline)
            .map_err(|e| format!("etcd: try_lock(`{key}`): lease grant failed: {e}"))?;
        let lock_id = uuid::Uuid::new_v4().to_string();
        match client.put_if_absent(&etcd_key, lock_id.as_bytes(), lease, deadline) {
            Ok(Some(revision)) => Ok(Some(LockHandle {
                key: key.to_owned(),
                lock_id,
                ttl_ms,
                fence: Some(revision.unsigned_abs()),
            })),
            Ok(None) => {
                // Contention is settled; a revoke that fails only leaves an
                // empty lease to run out on its own.
                let _ = client.lease_revoke(lease, deadline);
                Ok(None)
            }
            Err(e) => {
                // If the put was applied but its answer lost, revoking the
                // lease deletes the key with it, so nobody is left holding a
                // lock that no handle names.
                let _ = client.lease_revoke(lease, deadline);
                Err(format!("etcd: try_lock(`{key}`): transaction failed: {e}"))
            }
        }
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        validate_lock_request(&handle.key, handle.ttl_ms)?;
        let client = self.client()?;
        let deadline = self.deadline();
        let key = &handle.key;
        let kv = client
            .get(&self.etcd_key(key), deadline)
            .map_err(|e| format!("etcd: renew(`{key}`): read failed, the lock may be lost: {e}"))?
            .ok_or_else(|| lost(key, "the key is gone: expired or released"))?;
        if kv.value != handle.lock_id.as_bytes() {
            return Err(lost(key, "another holder has it"));
        }
        if handle.fence.is_some_and(|f| i64::try_from(f).ok() != Some(kv.create_revision)) {
            return Err(lost(key, "the key was re-created since this handle was issued"));
        }
        if kv.lease == 0 {
            return Err(lost(key, "the key is attached to no lease"));
        }
        let ttl = client.lease_keepalive(kv.lease, deadline).map_err(|e| {
            format!("etcd: renew(`{key}`): keep-alive failed, the lock may be lost: {e}")
        })?;
        if ttl <= 0 {
            return Err(lost(key, "its lease expired"));
        }
        Ok(())
    }

    fn release(&self, handle: LockHandle) -> Result<(), String> {
        bext_locking::limits::validate_key(&handle.key)?;
        let client = self.client()?;
        let deadline = self.deadline();
        let key = &handle.key;
        let deleted = client
            .delete_if_value(&self.etcd_key(key), handle.lock_id.as_bytes(), deadline)
            .map_err(|e| format!("etcd: release(`{key}`): transaction failed: {e}"))?;
        if let Some(prev) = deleted.filter(|kv| kv.lease != 0) {
            // The lock is already free; a lease left behind holds no key
            // and runs out on its own.
            let _ = client.lease_revoke(prev.lease, deadline);
        }
        Ok(())
    }

    fn cleanup(&self) {
        // Dropping the client closes its idle connections.
        self.client.write().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// The export description used by the `.so`.
pub struct Exported;

impl bext_locking_ffi::Export for Exported {
    type Plugin = EtcdPlugin;
    type Config = EtcdConfig;
    const NAME: &'static CStr = c"etcd";
    const VERSION: &'static CStr = bext_locking_ffi::crate_version_cstr!();
    const DESCRIPTION: &'static str = "Locks on an etcd v3 cluster: leases, create-if-absent transactions, and the key's create revision as fence";
    const FENCING: bool = true;

    fn config_schema() -> serde_json::Value {
        use config::*;
        serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["endpoints"],
            "properties": {
                "endpoints": {
                    "type": "array",
                    "items": { "type": "string" },
                    "minItems": 1,
                    "description": "client URLs of the cluster's members, http://host:port (or host:port); calls fail over between them. No TLS in this build"
                },
                "key_prefix": {
                    "type": "string",
                    "maxLength": MAX_KEY_PREFIX_BYTES,
                    "default": DEFAULT_KEY_PREFIX,
                    "description": "prepended to every lock key to form the etcd key"
                },
                "connect_timeout_ms": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TIMEOUT_MS,
                    "default": DEFAULT_CONNECT_TIMEOUT_MS,
                    "description": "TCP connect timeout per endpoint"
                },
                "op_timeout_ms": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TIMEOUT_MS,
                    "default": DEFAULT_OP_TIMEOUT_MS,
                    "description": "budget of one whole try_lock, renew or release, fail-over included; past it the call returns an error"
                },
                "user": {
                    "type": "string",
                    "minLength": 1,
                    "description": "etcd user, when the cluster has authentication enabled (needs `password`)"
                },
                "password": {
                    "type": "string",
                    "writeOnly": true,
                    "description": "that user's password; never printed"
                }
            }
        })
    }

    fn create(config: EtcdConfig) -> Result<EtcdPlugin, PluginError> {
        EtcdPlugin::from_config(config)
    }
}

bext_locking_ffi::export_locking_plugin!(Exported);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_round_up_to_whole_seconds() {
        assert_eq!(lease_seconds(1), 1);
        assert_eq!(lease_seconds(999), 1);
        assert_eq!(lease_seconds(1000), 1);
        assert_eq!(lease_seconds(1001), 2);
        assert_eq!(lease_seconds(bext_locking::MAX_TTL_MS), 31_536_000);
    }

    #[test]
    fn every_config_field_is_in_the_schema() {
        use bext_locking_ffi::Export;
        let schema = Exported::config_schema();
        let props = schema["properties"].as_object().unwrap();
        for key in
            ["endpoints", "key_prefix", "connect_timeout_ms", "op_timeout_ms", "user", "password"]
        {
            assert!(props.contains_key(key), "{key} missing from the schema");
        }
        assert_eq!(props.len(), 6);
    }

    #[test]
    fn calls_after_cleanup_fail_without_a_server() {
        let p = EtcdPlugin::from_config(EtcdConfig::with_endpoints(["127.0.0.1:1"])).unwrap();
        p.cleanup();
        p.cleanup();
        assert!(p.try_lock("k", 1000).unwrap_err().contains("cleaned up"));
    }
}
