//! The in-process bext-locking backend.
//!
//! Locks live in this process only, so it is for tests, single-process
//! services, and measuring the cost of the plugin boundary itself. State is
//! per instance unless instances name the same `namespace`, in which case
//! they share one lock table (two "hosts" in one process).
//!
//! Leases run on the monotonic clock, the table is sharded so threads on
//! different keys rarely meet on one mutex, expired entries are reclaimed as
//! the table grows, and fences come from one counter per table that never
//! goes backwards, so they rise across acquisitions of every key. Each
//! entry keeps its holder's `owner`, fence and acquisition instant for
//! `inspect`; `force_release` removes a live entry under the same shard
//! mutex as renew and release, so it cannot race them.
//!
//! Waiting (`lock_wait`) queues the waiter on its key under the shard
//! mutex and blocks on a condition variable: a release hands the key
//! straight to the first waiter, so waiters are served in arrival order and
//! a `try_lock` cannot take a key while anyone is queued for it; an expiry
//! wakes waiters at the holder's lease end.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod store;

use std::ffi::CStr;
use std::sync::Arc;

use bext_locking::{Acquired, ForceReleased, LockHandle, LockInfo, PluginError, Wait};
use bext_locking_kit::Backend;
use bext_locking_kit::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

pub use store::Store;

/// The memory backend's config.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct MemoryConfig {
    /// Instances in one process with the same namespace share their locks;
    /// default: private to the instance.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub namespace: Option<String>,
}

/// The memory backend: a lock table, private or shared by namespace.
pub struct Memory {
    store: Arc<Store>,
}

/// An instance of the memory backend, in-process.
pub type MemoryPlugin = bext_locking_kit::Plugin<Memory>;

impl Memory {
    /// A backend with its own private lock table.
    pub fn new() -> Self {
        Self { store: Arc::new(Store::new()) }
    }

    /// A backend sharing the process-wide table called `namespace`.
    pub fn shared(namespace: &str) -> Self {
        Self { store: store::named(namespace) }
    }

    /// Entries in this instance's table, including expired ones not yet
    /// reclaimed: lets tests and metrics see that memory stays bounded.
    pub fn store_len(&self) -> usize {
        self.store.len()
    }

    /// How many waiters are queued for `key` now: lets tests line waiters
    /// up in a known order, and shows that a wait that ended left nothing.
    pub fn queued(&self, key: &str) -> usize {
        self.store.queued(key)
    }
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

impl Backend for Memory {
    const NAME: &'static CStr = c"memory";
    type Config = MemoryConfig;

    fn create(config: MemoryConfig) -> Result<Self, PluginError> {
        Ok(match config.namespace {
            Some(ns) => Self::shared(&ns),
            None => Self::new(),
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
        Ok(self.store.try_lock(key, ttl_ms, owner))
    }

    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        Ok(self.store.inspect(key))
    }

    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        Ok(self.store.force_release(key, if_fence))
    }

    /// Blocks on a condition variable in the key's queue of waiters:
    /// served in arrival order, handed the lock by the release itself.
    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        Ok(self.store.lock_wait(key, ttl_ms, owner, wait))
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), PluginError> {
        if self.store.renew(handle) { Ok(()) } else { Err(not_held(handle)) }
    }

    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        if self.store.renew_for(handle, ttl_ms) { Ok(()) } else { Err(not_held(handle)) }
    }

    fn release(&self, handle: &LockHandle) -> Result<(), PluginError> {
        self.store.release(handle);
        Ok(())
    }

    fn cleanup(&self) {}
}

/// The lock is lost: what a failed renew says.
fn not_held(handle: &LockHandle) -> PluginError {
    PluginError::backend(format!("memory: {}", bext_locking_kit::message::not_held(&handle.key)))
}

/// The export description used by the `.so`.
pub struct Exported;

impl bext_locking_ffi::Export for Exported {
    type Backend = Memory;
    const VERSION: &'static CStr = bext_locking_ffi::crate_version_cstr!();
    const DESCRIPTION: &'static str =
        "In-process locks on the monotonic clock, for tests and single-process services";
    const FENCING: bool = true;
    /// Leases expire on the holder's own monotonic clock, counted from
    /// inside the call (after the holder's `sent`): nothing can drift.
    const CLOCK_DRIFT: Option<bext_locking::ClockDrift> = Some(bext_locking::ClockDrift::NONE);
}

bext_locking_ffi::export_locking_plugin!(Exported);
