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
//! goes backwards, so they rise across acquisitions of every key.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod store;

use std::ffi::CStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bext_locking::{LockHandle, LockingPlugin, PluginError, validate_lock_request};
use serde::Deserialize;

pub use store::Store;

/// The memory backend's config.
#[derive(Debug, Default, Deserialize)]
pub struct MemoryConfig {
    /// Instances with the same namespace share their locks; without one, an
    /// instance has its own private table.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// An instance of the memory backend.
pub struct MemoryPlugin {
    store: Arc<Store>,
    closed: AtomicBool,
}

impl MemoryPlugin {
    /// A plugin with its own private lock table.
    pub fn new() -> Self {
        Self::with_store(Arc::new(Store::new()))
    }

    /// A plugin sharing the process-wide table called `namespace`.
    pub fn shared(namespace: &str) -> Self {
        Self::with_store(store::named(namespace))
    }

    fn with_store(store: Arc<Store>) -> Self {
        Self { store, closed: AtomicBool::new(false) }
    }

    /// Builds an instance from its config.
    pub fn from_config(config: MemoryConfig) -> Result<Self, PluginError> {
        Ok(match config.namespace {
            Some(ns) if ns.is_empty() => {
                return Err(PluginError::invalid("namespace must not be empty"));
            }
            Some(ns) => Self::shared(&ns),
            None => Self::new(),
        })
    }

    /// Entries in this instance's table, including expired ones not yet
    /// reclaimed: lets tests and metrics see that memory stays bounded.
    pub fn store_len(&self) -> usize {
        self.store.len()
    }

    fn check_open(&self) -> Result<(), String> {
        if self.closed.load(Ordering::Acquire) {
            return Err("memory: this instance was cleaned up".to_owned());
        }
        Ok(())
    }
}

impl Default for MemoryPlugin {
    fn default() -> Self {
        Self::new()
    }
}

impl LockingPlugin for MemoryPlugin {
    fn name(&self) -> &str {
        "memory"
    }

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        validate_lock_request(key, ttl_ms)?;
        self.check_open()?;
        Ok(self.store.try_lock(key, ttl_ms))
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        validate_lock_request(&handle.key, handle.ttl_ms)?;
        self.check_open()?;
        if self.store.renew(handle) {
            Ok(())
        } else {
            Err(format!(
                "memory: lock on `{}` is no longer held by this handle (expired, released or taken over)",
                handle.key
            ))
        }
    }

    fn release(&self, handle: LockHandle) -> Result<(), String> {
        self.check_open()?;
        self.store.release(&handle);
        Ok(())
    }

    fn cleanup(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// The export description used by the `.so`.
pub struct Exported;

impl bext_locking_ffi::Export for Exported {
    type Plugin = MemoryPlugin;
    type Config = MemoryConfig;
    const NAME: &'static CStr = c"memory";
    const VERSION: &'static CStr = bext_locking_ffi::crate_version_cstr!();
    const DESCRIPTION: &'static str =
        "In-process locks on the monotonic clock, for tests and single-process services";
    const FENCING: bool = true;
    /// Leases expire on the holder's own monotonic clock, counted from
    /// inside the call (after the holder's `sent`): nothing can drift.
    const CLOCK_DRIFT: Option<bext_locking::ClockDrift> = Some(bext_locking::ClockDrift::NONE);

    fn config_schema() -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "namespace": {
                    "type": "string",
                    "minLength": 1,
                    "description": "instances in one process with the same namespace share their locks; default: private to the instance"
                }
            }
        })
    }

    fn create(config: MemoryConfig) -> Result<MemoryPlugin, PluginError> {
        MemoryPlugin::from_config(config)
    }
}

bext_locking_ffi::export_locking_plugin!(Exported);
