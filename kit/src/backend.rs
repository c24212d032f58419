//! The trait a backend implements.

use std::ffi::CStr;

use bext_locking::{LockHandle, PluginError};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Limits;

/// A lock backend's algorithm, with typed errors.
///
/// Implement it, wrap the type in a [`Plugin`](crate::Plugin) for
/// in-process use, and export it with `bext-locking-ffi`. The wrapper has
/// already checked every request (key and TTL against the ABI limits and
/// [`limits`](Self::limits)) and that the instance is open before a method
/// here runs, so a backend never checks them again.
///
/// Errors carry their [`ErrorKind`](bext_locking::ErrorKind): return
/// [`PluginError::invalid`] for input this backend refuses (it reaches C and
/// Go hosts as `BEXT_LOCKING_ERR_INVALID`) and [`PluginError::backend`] for
/// everything else. `Ok(None)` from `try_lock` is contention only.
///
/// Capabilities added to the ABI later (inspecting a key, forced release,
/// waiting) arrive here as methods with a default body that refuses them,
/// so an existing backend keeps compiling and a new one overrides what it
/// supports.
pub trait Backend: Send + Sync + Sized + 'static {
    /// The backend's short name, e.g. `c"redis"`: the vtable's `name`, the
    /// trait's `name()`, and the prefix of the kit's messages.
    const NAME: &'static CStr;

    /// The config object. Its derived JSON Schema is what `describe` lists,
    /// and `create` accepts exactly its keys, in the ranges its
    /// `#[schemars(range(..))]`/`length(..)` attributes give, whether it
    /// arrives as JSON or is built in Rust (it is serialized to be checked,
    /// so `Serialize` must write what `Deserialize` reads).
    type Config: Serialize + DeserializeOwned + JsonSchema;

    /// Builds an instance from a config that passed the schema checks.
    /// Return [`PluginError::invalid`] for a bad value and
    /// [`PluginError::backend`] when the backend cannot be set up; never put
    /// credentials in messages.
    fn create(config: Self::Config) -> Result<Self, PluginError>;

    /// The requests this instance can serve, read once when it is wrapped.
    /// Narrower than the ABI's when the backend has a limit of its own (a
    /// Redlock quorum needs a TTL longer than its drift allowance).
    fn limits(&self) -> Limits {
        Limits::abi()
    }

    /// Tries once, without waiting, to acquire `key` for `ttl_ms`.
    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, PluginError>;

    /// Restarts the TTL of a lock this handle holds; never re-acquires.
    fn renew(&self, handle: &LockHandle) -> Result<(), PluginError>;

    /// Releases a lock this handle holds; a lock no longer ours is `Ok` and
    /// left untouched.
    fn release(&self, handle: &LockHandle) -> Result<(), PluginError>;

    /// Closes connections and stops background work. Called once by the
    /// wrapper; calls still in flight may then fail.
    fn cleanup(&self);
}
