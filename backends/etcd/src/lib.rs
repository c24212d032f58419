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
//! * **lock_wait**: a FIFO queue of keys `key 0xFE <lease>` ordered by
//!   create revision, each waiter watching only its predecessor (etcd's
//!   `concurrency.Mutex`); `try_lock` refuses while anyone queues, and a
//!   `try_lock` holder is the head of the queue. See `wait_in_queue`.
//! * **renew_for**: moves the lock to a new lease of the asked length in
//!   one transaction conditioned on the lock; the fence is unchanged.
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
pub mod watch;

use std::ffi::CStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bext_locking::{Acquired, ForceReleased, LockHandle, LockInfo, PluginError, Wait};
use bext_locking_kit::{Backend, message};

pub use config::EtcdConfig;
pub use gateway::Client;
use gateway::{Take, Taken};

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

    /// The key range that holds lock `key`'s wait queue: its lock key and
    /// `0xFE`, then anything (`[key 0xFE, key 0xFF)`). No UTF-8 lock name
    /// has that byte, so no other lock's keys fall in it.
    pub fn queue_range(&self, key: &str) -> (Vec<u8>, Vec<u8>) {
        let (mut start, mut end) = (self.etcd_key(key), self.etcd_key(key));
        start.push(0xFE);
        end.push(0xFF);
        (start, end)
    }

    /// The queue key of a waiter on `key` whose lease is `lease`.
    pub fn queue_key(&self, key: &str, lease: i64) -> Vec<u8> {
        let mut k = self.queue_range(key).0;
        k.extend_from_slice(format!("{lease:016x}").as_bytes());
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

    const CAPABILITIES: &'static [&'static str] =
        &["owner", "inspect", "force_release", "lock_wait", "fifo", "renew_ttl"];

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
        let (queue_start, queue_end) = self.queue_range(key);
        // Waiters queued for the key come first: a try_lock never takes
        // the lock from under them, even in the moment between a release
        // and the first waiter's take.
        let take = Take {
            key: &etcd_key,
            value: lock_id.as_bytes(),
            beside,
            lease,
            queue: Some((&queue_start, &queue_end)),
            enqueue: None,
            dequeue: None,
        };
        match client.take(&take, deadline) {
            Ok(Taken::Taken(revision)) => Ok(Some(LockHandle {
                key: key.to_owned(),
                lock_id,
                ttl_ms,
                fence: Some(revision.unsigned_abs()),
            })),
            Ok(Taken::Held | Taken::Queued(_)) => {
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
        if ttl < lease_seconds(handle.ttl_ms) {
            // A renew_for shortened the lease: renewals use the handle's
            // TTL again, which takes a lease of that length.
            return self.move_to_new_lease("renew", handle, handle.ttl_ms);
        }
        Ok(())
    }

    /// etcd's `concurrency.Mutex` queue, shared with `try_lock` (see
    /// `wait_in_queue` for the steps).
    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        if wait.timed_out() {
            // `wait_ms: 0`: one try, without joining the queue.
            let sent = Instant::now();
            return Ok(self
                .try_lock_owned(key, ttl_ms, owner)?
                .map(|handle| Acquired { handle, sent }));
        }
        self.wait_in_queue(key, ttl_ms, owner, wait)
    }

    /// A lease's TTL is fixed when it is granted, so the lock moves to a
    /// new lease of `ttl_ms` (see `move_to_new_lease`).
    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        self.move_to_new_lease("renew_for", handle, ttl_ms)
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

/// Revokes a waiter's lease when it goes away without the lock, deleting
/// its queue key with it: a wait that ends any other way leaves nothing.
struct QueuedLease<'a> {
    client: &'a Client,
    lease: i64,
    op_timeout: Duration,
    holds: bool,
}

impl Drop for QueuedLease<'_> {
    fn drop(&mut self) {
        if !self.holds {
            // One that fails leaves a lease (and a queue key) to run out
            // on its own within its TTL, no longer kept alive.
            let _ = self.client.lease_revoke(self.lease, Instant::now() + self.op_timeout);
        }
    }
}

impl Etcd {
    /// Moves the lock `handle` holds to a new lease of `ttl_ms`: grant it,
    /// then one transaction "if the key still has our lock id, our fence
    /// and the old lease, put it (and the owner key on the old lease) on
    /// the new one", then revoke the old lease. The fence (create
    /// revision) is unchanged. A renew racing it may find the old lease
    /// revoked and report the lock lost: the safe mistake.
    fn move_to_new_lease(
        &self,
        call: &str,
        handle: &LockHandle,
        ttl_ms: u64,
    ) -> Result<(), PluginError> {
        let client = self.client()?;
        let deadline = self.deadline();
        let key = &handle.key;
        let (etcd_key, owner_key) = (self.etcd_key(key), self.owner_key(key));
        let (kv, owner) = client.get_pair(&etcd_key, &owner_key, deadline).map_err(|e| {
            failed(format!("{call}(`{key}`): read failed, the lock may be lost: {e}"))
        })?;
        let kv = kv.ok_or_else(|| lost(key, "the key is gone: expired or released"))?;
        if kv.value != handle.lock_id.as_bytes() {
            return Err(lost(key, "another holder has it"));
        }
        if handle.fence.is_some_and(|f| i64::try_from(f).ok() != Some(kv.create_revision)) {
            return Err(lost(key, "the key was re-created since this handle was issued"));
        }
        if kv.lease == 0 {
            return Err(lost(key, "the key is attached to no lease"));
        }
        let lease = client
            .lease_grant(lease_seconds(ttl_ms), deadline)
            .map_err(|e| failed(format!("{call}(`{key}`): lease grant failed: {e}")))?;
        let owner = owner.filter(|o| o.lease == kv.lease);
        let beside = owner.as_ref().map(|o| (owner_key.as_slice(), o.value.as_slice()));
        let value = handle.lock_id.as_bytes();
        let moved = match client.move_lease(
            &etcd_key,
            value,
            kv.create_revision,
            beside,
            (kv.lease, lease),
            deadline,
        ) {
            Ok(true) => true,
            // Not moved, or moved by a first send whose answer was lost.
            Ok(false) => client
                .get(&etcd_key, deadline)
                .ok()
                .flatten()
                .is_some_and(|now| now.value == value && now.lease == lease),
            Err(e) => {
                let _ = client.lease_revoke(lease, deadline);
                return Err(failed(format!(
                    "{call}(`{key}`): transaction failed, the lock may be lost: {e}"
                )));
            }
        };
        if !moved {
            let _ = client.lease_revoke(lease, deadline);
            return Err(lost(key, "it changed hands or its lease ended meanwhile"));
        }
        // Nothing of ours is on the old lease now; one that fails to go
        // runs out on its own.
        let _ = client.lease_revoke(kv.lease, deadline);
        Ok(())
    }

    /// The waiting side of the lock: etcd's `concurrency.Mutex` algorithm,
    /// made to share the key with `try_lock`.
    ///
    /// 1. Grant a lease of the lock's TTL, then one transaction: "if the
    ///    lock key is absent and nobody queues, take it; else put our queue
    ///    key `key 0xFE <lease>` on the lease". The queue key's create
    ///    revision is our place.
    /// 2. Read (at one revision) whether the lock key exists and the queue
    ///    key with the highest create revision below ours.
    /// 3. A predecessor: watch it, from the next revision, until it is
    ///    deleted (taken, given up, or expired), then 2. None, and the lock
    ///    key exists (a holder, by `try_lock` or by an earlier waiter):
    ///    watch that. None and no lock key: refresh our lease and take the
    ///    lock key on it, deleting our queue key, in one transaction.
    ///
    /// The lease is kept alive while waiting and revoked on timeout,
    /// cancel or error. The lock ends up on the lease that queued, which
    /// `renew` and `release` treat as any other.
    fn wait_in_queue(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        let client = self.client()?;
        let fail =
            |what: &str, e: gateway::Error| failed(format!("lock_wait(`{key}`): {what}: {e}"));
        let etcd_key = self.etcd_key(key);
        let owner_key = self.owner_key(key);
        let beside = owner.map(|o| (owner_key.as_slice(), o.as_bytes()));
        let (queue_start, queue_end) = self.queue_range(key);
        let lock_id = uuid::Uuid::new_v4().to_string();
        let seconds = lease_seconds(ttl_ms);
        let handle = |revision: i64| LockHandle {
            key: key.to_owned(),
            lock_id: lock_id.clone(),
            ttl_ms,
            fence: Some(revision.unsigned_abs()),
        };
        // The lease starts no earlier than this, so neither can its end.
        let sent = Instant::now();
        let lease = client
            .lease_grant(seconds, self.deadline())
            .map_err(|e| fail("lease grant failed", e))?;
        let mut queued =
            QueuedLease { client: &client, lease, op_timeout: self.op_timeout, holds: false };
        let queue_key = self.queue_key(key, lease);
        let first = Take {
            key: &etcd_key,
            value: lock_id.as_bytes(),
            beside,
            lease,
            queue: Some((&queue_start, &queue_end)),
            enqueue: Some(&queue_key),
            dequeue: None,
        };
        let place = match client
            .take(&first, self.deadline())
            .map_err(|e| fail("transaction failed", e))?
        {
            Taken::Taken(revision) => {
                queued.holds = true;
                return Ok(Some(Acquired { handle: handle(revision), sent }));
            }
            Taken::Queued(revision) => revision,
            Taken::Held => {
                return Err(failed(format!("lock_wait(`{key}`): the queue key was not written")));
            }
        };
        let keep_alive = || match client.lease_keepalive(lease, self.deadline()) {
            Ok(ttl) if ttl > 0 => Ok(()),
            Ok(_) => Err(gateway::Error {
                kind: gateway::ErrorKind::Server { code: 5 },
                message: "the waiter's lease expired (etcd unreachable for longer than its TTL?), \
                          and its place in the queue with it"
                    .into(),
            }),
            Err(e) => Err(e),
        };
        // Three keep-alives per TTL: one lost one never costs the place.
        let tick_every = Duration::from_millis(u64::try_from(seconds).unwrap_or(1) * 1000 / 3);
        let mut pause = Duration::from_millis(20);
        loop {
            if wait.is_cancelled() {
                return Ok(None);
            }
            let ahead = client
                .ahead(&etcd_key, (&queue_start, &queue_end), place, self.deadline())
                .map_err(|e| fail("reading the queue failed", e))?;
            let watched = match ahead.predecessor {
                Some(p) => p,
                None if ahead.held => etcd_key.clone(),
                None => {
                    let sent = Instant::now();
                    // A full lease from here: it ends no earlier than
                    // `sent` plus its TTL, as the host will count.
                    keep_alive().map_err(|e| fail("keep-alive failed", e))?;
                    let take = Take {
                        key: &etcd_key,
                        value: lock_id.as_bytes(),
                        beside,
                        lease,
                        queue: None,
                        enqueue: None,
                        dequeue: Some(&queue_key),
                    };
                    match client
                        .take(&take, self.deadline())
                        .map_err(|e| fail("transaction failed", e))?
                    {
                        Taken::Taken(revision) => {
                            queued.holds = true;
                            return Ok(Some(Acquired { handle: handle(revision), sent }));
                        }
                        // An older build's try_lock, which does not look
                        // at the queue, took it meanwhile: watch it.
                        Taken::Held | Taken::Queued(_) => continue,
                    }
                }
            };
            if wait.timed_out() {
                return Ok(None);
            }
            let ended = watch::until_deleted(
                &client,
                &watched,
                ahead.revision + 1,
                wait,
                tick_every,
                keep_alive,
            )
            .map_err(|e| fail("watch failed", e))?;
            match ended {
                watch::Ended::Over => return Ok(None),
                watch::Ended::Deleted => pause = Duration::from_millis(20),
                watch::Ended::Again => {
                    // The server ended the watch: do not spin on one that
                    // keeps doing so.
                    if !wait.sleep(pause) {
                        return Ok(None);
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
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
