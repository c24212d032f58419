//! The trait every lock backend implements.

use crate::LockHandle;

/// A lock backend: memory, SQLite, Redis, PostgreSQL, or a third party's.
///
/// Implementations are shared between threads (`Send + Sync`): every method
/// may be called concurrently on the same instance, as the C ABI allows.
///
/// # Errors versus contention
/// * [`try_lock`](Self::try_lock) returns `Ok(None)` when **someone else holds
///   the key** (including this very instance: locks are not reentrant). That
///   is the normal outcome for every host but one and is not an error.
/// * `Err(message)` always means **the backend failed** (unreachable,
///   timed out, protocol error, invalid input) and the caller cannot know
///   who holds the lock. A scheduler logs it and skips the run.
/// * [`renew`](Self::renew) returning `Err` means **you have lost the lock**
///   (it expired, was taken over, or the backend can no longer confirm it).
///   Stop the protected work; never retry a renew into a second holder.
pub trait LockingPlugin: Send + Sync {
    /// The backend's short name, e.g. `"redis"`; the same as its vtable name.
    fn name(&self) -> &str;

    /// Tries once, without waiting, to acquire `key` for `ttl_ms`
    /// milliseconds.
    ///
    /// `Ok(Some(handle))`: the lock is ours until the TTL runs out, unless
    /// renewed. `Ok(None)`: another holder has it. `Err`: the backend failed
    /// or the key/TTL is outside [`crate::limits`].
    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String>;

    /// Restarts the TTL of a lock we hold at `handle.ttl_ms`.
    ///
    /// Fails (and never re-acquires) when the lock expired, was taken over,
    /// or was released: an error here means the lock is lost.
    fn renew(&self, handle: &LockHandle) -> Result<(), String>;

    /// Releases a lock we hold.
    ///
    /// Releasing a lock that is no longer ours (expired, taken over, already
    /// released) succeeds and touches nothing, so it can never free another
    /// holder's lock. `Err` means the backend could not be reached: the lock
    /// then frees itself when its TTL runs out.
    fn release(&self, handle: LockHandle) -> Result<(), String>;

    /// Closes connections and stops background work. Idempotent; every later
    /// call on this instance returns `Err` instead of crashing.
    fn cleanup(&self);
}

impl<T: LockingPlugin + ?Sized> LockingPlugin for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        (**self).try_lock(key, ttl_ms)
    }
    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        (**self).renew(handle)
    }
    fn release(&self, handle: LockHandle) -> Result<(), String> {
        (**self).release(handle)
    }
    fn cleanup(&self) {
        (**self).cleanup()
    }
}

impl<T: LockingPlugin + ?Sized> LockingPlugin for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        (**self).try_lock(key, ttl_ms)
    }
    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        (**self).renew(handle)
    }
    fn release(&self, handle: LockHandle) -> Result<(), String> {
        (**self).release(handle)
    }
    fn cleanup(&self) {
        (**self).cleanup()
    }
}
