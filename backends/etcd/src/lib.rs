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
//! * **owner**: when a `try_lock` names one, the same transaction writes it
//!   to a second key on the same lease: the lock's etcd key followed by the
//!   byte `0xFF`, which no UTF-8 lock name contains, so it can never be
//!   another lock's key.
//! * **inspect**: reads both keys at one revision and asks etcd how long
//!   the lease has left: whole seconds, by etcd's clock. etcd keeps no
//!   wall-clock time a client can read, so `held_for_ms` is not given.
//! * **force_release**: one transaction "if the key's create revision is
//!   the holder's fence, delete it (and its owner key)", then revoke the
//!   lease, so the broken holder's renew finds no key or no lease.
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

use bext_locking::{ForceReleased, LockHandle, LockInfo, PluginError};
use bext_locking_kit::{Backend, message};

pub use config::EtcdConfig;
pub use gateway::Client;

/// The lease length etcd is asked for: whole seconds, rounded up, at least 1.
pub fn lease_seconds(ttl_ms: u64) -> i64 {
    i64::try_from(ttl_ms.div_ceil(1000).max(1)).unwrap_or(i64::MAX)
}

/// The etcd backend: a gateway client and where its keys live.
pub struct Etcd {
    /// `None` once cleaned up; calls in flight keep their own `Arc`.
    client: RwLock<Option<Arc<Client>>>,
    key_prefix: String,
    op_timeout: Duration,
}

/// An instance of the etcd backend, in-process.
pub type EtcdPlugin = bext_locking_kit::Plugin<Etcd>;

impl Etcd {
    /// The etcd key that holds lock `key`.
    pub fn etcd_key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.key_prefix.len() + key.len());
        k.extend_from_slice(self.key_prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The etcd key that holds the owner of lock `key`: its lock key and
    /// `0xFF`, a byte no UTF-8 string has.
    pub fn owner_key(&self, key: &str) -> Vec<u8> {
        let mut k = self.etcd_key(key);
        k.push(0xFF);
        k
    }

    fn client(&self) -> Result<Arc<Client>, PluginError> {
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| PluginError::backend(format!("etcd: {}", message::CLOSED)))
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.op_timeout
    }
}

fn lost(key: &str, why: &str) -> PluginError {
    PluginError::backend(format!("etcd: {}", message::lost(key, why)))
}

fn failed(what: String) -> PluginError {
    PluginError::backend(format!("etcd: {what}"))
}

impl Backend for Etcd {
    const NAME: &'static CStr = c"etcd";
    type Config = EtcdConfig;

    /// No request is sent: an etcd that is down now makes calls fail, not
    /// creation.
    fn create(config: EtcdConfig) -> Result<Self, PluginError> {
        let c = config.check()?;
        let client = Client::new(c.endpoints, c.connect_timeout, c.credentials);
        Ok(Self {
            client: RwLock::new(Some(Arc::new(client))),
            key_prefix: c.key_prefix,
            op_timeout: c.op_timeout,
        })
    }

    const CAPABILITIES: &'static [&'static str] = &["owner", "inspect", "force_release"];

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, PluginError> {
        self.try_lock_owned(key, ttl_ms, None)
    }

    fn try_lock_owned(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        let client = self.client()?;
        let deadline = self.deadline();
        let etcd_key = self.etcd_key(key);
        let lease = client
            .lease_grant(lease_seconds(ttl_ms), deadline)
            .map_err(|e| failed(format!("try_lock(`{key}`): lease grant failed: {e}")))?;
        let lock_id = uuid::Uuid::new_v4().to_string();
        let owner_key = self.owner_key(key);
        let beside = owner.map(|o| (owner_key.as_slice(), o.as_bytes()));
        match client.put_if_absent_with(&etcd_key, lock_id.as_bytes(), beside, lease, deadline) {
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
                Err(failed(format!("try_lock(`{key}`): transaction failed: {e}")))
            }
        }
    }

    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        let client = self.client()?;
        let deadline = self.deadline();
        let (lock, owner) = client
            .get_pair(&self.etcd_key(key), &self.owner_key(key), deadline)
            .map_err(|e| failed(format!("inspect(`{key}`): read failed: {e}")))?;
        let Some(lock) = lock else { return Ok(LockInfo::free(key)) };
        let expires_in_ms = match lock.lease {
            0 => None,
            lease => match client
                .lease_time_to_live(lease, deadline)
                .map_err(|e| failed(format!("inspect(`{key}`): lease read failed: {e}")))?
            {
                // The lease ran out after the read: so did the key.
                None => return Ok(LockInfo::free(key)),
                Some(s) => Some(u64::try_from(s).unwrap_or(0).saturating_mul(1000)),
            },
        };
        // An owner key is this holder's only when it is on the same lease
        // (a left-over one from an earlier holder is on another).
        let owner = owner
            .filter(|o| o.lease == lock.lease && lock.lease != 0)
            .and_then(|o| String::from_utf8(o.value).ok());
        Ok(LockInfo {
            key: key.to_owned(),
            held: true,
            fence: u64::try_from(lock.create_revision).ok(),
            owner,
            expires_in_ms,
            held_for_ms: None,
        })
    }

    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        let client = self.client()?;
        let deadline = self.deadline();
        let etcd_key = self.etcd_key(key);
        let not_released = ForceReleased { released: false, fence: None };
        let revision = match if_fence {
            // Create revisions are positive int64s: nothing else can match.
            Some(f) => match i64::try_from(f) {
                Ok(r) if r > 0 => r,
                _ => return Ok(not_released),
            },
            None => match client
                .get(&etcd_key, deadline)
                .map_err(|e| failed(format!("force_release(`{key}`): read failed: {e}")))?
            {
                Some(kv) => kv.create_revision,
                None => return Ok(not_released),
            },
        };
        let deleted = client
            .delete_if_created(&etcd_key, revision, &self.owner_key(key), deadline)
            .map_err(|e| failed(format!("force_release(`{key}`): transaction failed: {e}")))?;
        let Some(prev) = deleted else { return Ok(not_released) };
        if prev.lease != 0 {
            // The key is gone already; revoking the lease also makes the
            // broken holder's keep-alive fail at once. One that fails only
            // leaves a lease holding no key to run out on its own.
            let _ = client.lease_revoke(prev.lease, deadline);
        }
        Ok(ForceReleased { released: true, fence: u64::try_from(prev.create_revision).ok() })
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), PluginError> {
        let client = self.client()?;
        let deadline = self.deadline();
        let key = &handle.key;
        let kv = client
            .get(&self.etcd_key(key), deadline)
            .map_err(|e| failed(format!("renew(`{key}`): read failed, the lock may be lost: {e}")))?
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
            failed(format!("renew(`{key}`): keep-alive failed, the lock may be lost: {e}"))
        })?;
        if ttl <= 0 {
            return Err(lost(key, "its lease expired"));
        }
        Ok(())
    }

    fn release(&self, handle: &LockHandle) -> Result<(), PluginError> {
        let client = self.client()?;
        let deadline = self.deadline();
        let key = &handle.key;
        let deleted = client
            .delete_if_value(&self.etcd_key(key), handle.lock_id.as_bytes(), deadline)
            .map_err(|e| failed(format!("release(`{key}`): transaction failed: {e}")))?;
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
    type Backend = Etcd;
    const VERSION: &'static CStr = bext_locking_ffi::crate_version_cstr!();
    const DESCRIPTION: &'static str = "Locks on an etcd v3 cluster: leases, create-if-absent transactions, and the key's create revision as fence";
    const FENCING: bool = true;
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
        let schema = bext_locking_kit::config::schema::<EtcdConfig>();
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
        use bext_locking::LockingPlugin;
        let p = EtcdPlugin::from_config(EtcdConfig::with_endpoints(["127.0.0.1:1"])).unwrap();
        p.cleanup();
        p.cleanup();
        assert!(p.try_lock("k", 1000).unwrap_err().contains("cleaned up"));
    }
}
