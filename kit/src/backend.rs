//! The trait a backend implements.

use std::ffi::CStr;

use bext_locking::{Acquired, ForceReleased, LockHandle, LockInfo, PluginError, Wait};
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

    /// What `describe` lists in `capabilities` besides `"stats"` (which the
    /// ffi layer provides for every backend): `"owner"`, `"inspect"`,
    /// `"force_release"` (1.1), `"lock_wait"`, `"fifo"`, `"renew_ttl"`
    /// (1.2), for the methods below this backend overrides in at least one
    /// of its modes.
    const CAPABILITIES: &'static [&'static str] = &[];

    /// [`try_lock`](Self::try_lock) recording who holds the lock, for
    /// [`inspect`](Self::inspect). The wrapper has checked `owner` (at most
    /// [`MAX_OWNER_BYTES`](bext_locking::MAX_OWNER_BYTES)). A backend that
    /// stores owners overrides this (and makes `try_lock` call it with
    /// `None`) and lists `"owner"` in [`CAPABILITIES`](Self::CAPABILITIES);
    /// by default the owner is dropped, as a 1.0 plugin ignores it.
    fn try_lock_owned(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        let _ = owner;
        self.try_lock(key, ttl_ms)
    }

    /// Who holds `key`, by the backend's clock; a key nobody holds is
    /// [`LockInfo::free`], not an error. Never returns the `lock_id`.
    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        let _ = key;
        Err(PluginError::unsupported(format!(
            "{}: this backend cannot inspect locks",
            crate::plugin::name::<Self>()
        )))
    }

    /// Frees `key` whoever holds it (only when its fence is `if_fence`, if
    /// given), so that the broken holder's renew fails, its release is a
    /// no-op, and the next fence is higher. Must be one compare-and-delete
    /// on the holder's identity, so a racing renew never revives the lock.
    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        let _ = (key, if_fence);
        Err(PluginError::unsupported(format!(
            "{}: this backend cannot force-release locks",
            crate::plugin::name::<Self>()
        )))
    }

    /// (ABI 1.2) Waits until `key` is ours, `wait` times out or it is
    /// cancelled (`Ok(None)` for both; the wrapper tells them apart). The
    /// wrapper has checked the request as for [`try_lock_owned`]
    /// (Self::try_lock_owned) and that `wait`'s timeout is in range.
    ///
    /// An override blocks on the backend's own notification (a condition
    /// variable, pub/sub, `LISTEN`, a watch) rather than polling, registers
    /// a [`Wait::on_cancel`] hook that wakes it (a cancel must end the wait
    /// within 100 ms), leaves nothing behind on the server when it gives up
    /// (no queue entry, subscription or lease), and lists `"lock_wait"` (and
    /// `"fifo"` when waiters are served in the order they came) in
    /// [`CAPABILITIES`](Self::CAPABILITIES). `Acquired::sent` is when the
    /// request that took the lock was sent. By default the backend cannot,
    /// and hosts poll [`try_lock`](Self::try_lock) instead.
    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        let _ = (key, ttl_ms, owner, wait);
        Err(PluginError::unsupported(format!(
            "{}: this backend cannot wait for a lock; poll try_lock instead",
            crate::plugin::name::<Self>()
        )))
    }

    /// (ABI 1.2) Sets the remaining time of a lock this handle holds to
    /// `ttl_ms` from now, once, without re-acquiring (an error means the
    /// lock is lost, as for [`renew`](Self::renew)); later renewals use the
    /// handle's TTL again. A backend that overrides it lists `"renew_ttl"`
    /// in [`CAPABILITIES`](Self::CAPABILITIES). The wrapper has checked
    /// `ttl_ms` against the ABI's limits and [`limits`](Self::limits).
    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        let _ = (handle, ttl_ms);
        Err(PluginError::unsupported(format!(
            "{}: this backend cannot set a lease's remaining time (no renew_ttl)",
            crate::plugin::name::<Self>()
        )))
    }

    /// Restarts the TTL of a lock this handle holds; never re-acquires.
    fn renew(&self, handle: &LockHandle) -> Result<(), PluginError>;

    /// Releases a lock this handle holds; a lock no longer ours is `Ok` and
    /// left untouched.
    fn release(&self, handle: &LockHandle) -> Result<(), PluginError>;

    /// Closes connections and stops background work. Called once by the
    /// wrapper; calls still in flight may then fail.
    fn cleanup(&self);
}
