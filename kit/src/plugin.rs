//! A backend wrapped as a `LockingPlugin`: the lifecycle and request checks
//! every backend shares.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};

use std::collections::HashMap;
use std::sync::Mutex;

use bext_locking::{
    Acquired, ForceReleased, LockAdmin, LockHandle, LockInfo, LockWait, LockingPlugin, PluginError,
    Stats, Wait, WaitMode, validate_key, validate_owner, validate_ttl,
};

use crate::{Backend, Limits, message};

/// An instance of backend `B`, usable in-process as a
/// [`LockingPlugin`] and behind the C ABI alike (the `.so` slots hold one).
///
/// Before a call reaches `B` it checks the key and TTL against the ABI
/// limits and `B`'s [`Limits`] (a refusal is `invalid_argument`) and that
/// [`cleanup`](LockingPlugin::cleanup) has not run (a backend error saying
/// so). Cleanup runs `B`'s own once, however often it is called.
///
/// The `*_typed` methods return [`PluginError`] with its kind; the
/// [`LockingPlugin`] methods carry the same message as a `String`. It
/// dereferences to `B`, for the backend's own methods. Dropping it cleans
/// up first.
pub struct Plugin<B: Backend> {
    backend: B,
    limits: Limits,
    closed: AtomicBool,
    /// The waits in flight, so that cleanup ends them at once.
    waits: Mutex<Waits>,
}

/// The waits in flight on one instance, by a number of their own.
#[derive(Default)]
struct Waits {
    next: u64,
    live: HashMap<u64, Wait>,
}

/// The backend's name as text (names are ASCII constants).
pub(crate) fn name<B: Backend>() -> &'static str {
    B::NAME.to_str().unwrap_or("plugin")
}

impl<B: Backend> Plugin<B> {
    /// Wraps a backend instance, reading its limits once.
    pub fn new(backend: B) -> Self {
        let limits = backend.limits();
        Self { backend, limits, closed: AtomicBool::new(false), waits: Mutex::default() }
    }

    /// Builds an instance from a config built in Rust, after checking it
    /// against the config's schema exactly as a JSON config is checked.
    pub fn from_config(config: B::Config) -> Result<Self, PluginError> {
        crate::config::check_config(&config)?;
        B::create(config).map(Self::new)
    }

    /// Parses a config object exactly as the `.so` does (unknown keys and
    /// out-of-range values are `invalid_argument` errors naming them) and
    /// builds an instance.
    pub fn from_json(config: &str) -> Result<Self, PluginError> {
        B::create(crate::config::parse::<B::Config>(config)?).map(Self::new)
    }

    /// The wrapped backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The TTL bounds this instance serves.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn check_open(&self) -> Result<(), PluginError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PluginError::backend(format!("{}: {}", name::<B>(), message::CLOSED)));
        }
        Ok(())
    }

    /// Key and TTL against the ABI, then the TTL against this instance.
    fn check_request(&self, key: &str, ttl_ms: u64) -> Result<(), PluginError> {
        validate_key(key).map_err(PluginError::invalid)?;
        validate_ttl(ttl_ms).map_err(PluginError::invalid)?;
        // The name is only read for the message, off the hot path.
        if self.limits.serves(ttl_ms) {
            return Ok(());
        }
        self.limits.check_ttl(name::<B>(), ttl_ms)
    }

    /// [`LockingPlugin::try_lock`] with the error's kind.
    pub fn try_lock_typed(
        &self,
        key: &str,
        ttl_ms: u64,
    ) -> Result<Option<LockHandle>, PluginError> {
        self.check_request(key, ttl_ms)?;
        self.check_open()?;
        self.backend.try_lock(key, ttl_ms)
    }

    /// [`try_lock_typed`](Self::try_lock_typed) recording `owner` (at most
    /// [`MAX_OWNER_BYTES`](bext_locking::MAX_OWNER_BYTES), else
    /// `invalid_argument` naming `owner`) for [`inspect_typed`](Self::inspect_typed).
    pub fn try_lock_owned_typed(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        self.check_request(key, ttl_ms)?;
        if let Some(owner) = owner {
            validate_owner(owner).map_err(PluginError::invalid)?;
        }
        self.check_open()?;
        self.backend.try_lock_owned(key, ttl_ms, owner)
    }

    /// Who holds `key` ([`Backend::inspect`]), after checking the key and
    /// that the instance is open.
    pub fn inspect_typed(&self, key: &str) -> Result<LockInfo, PluginError> {
        validate_key(key).map_err(PluginError::invalid)?;
        self.check_open()?;
        self.backend.inspect(key)
    }

    /// Breaks the lock on `key` ([`Backend::force_release`]), after checking
    /// the key and that the instance is open.
    pub fn force_release_typed(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        validate_key(key).map_err(PluginError::invalid)?;
        self.check_open()?;
        self.backend.force_release(key, if_fence)
    }

    /// (ABI 1.2) Waits for `key` ([`Backend::lock_wait`]) after the checks
    /// of [`try_lock_owned_typed`](Self::try_lock_owned_typed); cleanup
    /// cancels the wait. `Ok(None)`: timed out or cancelled.
    pub fn lock_wait_typed(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        self.check_request(key, ttl_ms)?;
        if let Some(owner) = owner {
            validate_owner(owner).map_err(PluginError::invalid)?;
        }
        let id = {
            let mut waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
            waits.next += 1;
            let id = waits.next;
            waits.live.insert(id, wait.clone());
            id
        };
        // Checked after registering, so a cleanup racing this call either
        // sees the wait (and cancels it) or is seen here.
        let result = self.check_open().and_then(|()| {
            if wait.is_cancelled() {
                return Ok(None);
            }
            self.backend.lock_wait(key, ttl_ms, owner, wait)
        });
        self.waits.lock().unwrap_or_else(|p| p.into_inner()).live.remove(&id);
        result
    }

    /// (ABI 1.2) Sets a held lease's remaining time once
    /// ([`Backend::renew_for`]), after checking the handle as
    /// [`renew_typed`](Self::renew_typed) does and `ttl_ms` against the
    /// limits.
    pub fn renew_for_typed(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        self.check_request(&handle.key, handle.ttl_ms)?;
        self.check_request(&handle.key, ttl_ms)?;
        self.check_open()?;
        self.backend.renew_for(handle, ttl_ms)
    }

    /// [`LockingPlugin::renew`] with the error's kind.
    pub fn renew_typed(&self, handle: &LockHandle) -> Result<(), PluginError> {
        self.check_request(&handle.key, handle.ttl_ms)?;
        self.check_open()?;
        self.backend.renew(handle)
    }

    /// [`LockingPlugin::release`] with the error's kind. Only the ABI's
    /// limits apply: a handle this instance could not have issued is still
    /// released (or, not being ours, left alone) rather than refused.
    pub fn release_typed(&self, handle: &LockHandle) -> Result<(), PluginError> {
        validate_key(&handle.key).map_err(PluginError::invalid)?;
        validate_ttl(handle.ttl_ms).map_err(PluginError::invalid)?;
        self.check_open()?;
        self.backend.release(handle)
    }
}

impl<B: Backend + std::fmt::Debug> std::fmt::Debug for Plugin<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.backend.fmt(f)
    }
}

/// Dropping an instance cleans it up first (once), as `destroy` does
/// through the C ABI.
impl<B: Backend> Drop for Plugin<B> {
    fn drop(&mut self) {
        self.cleanup();
    }
}

impl<B: Backend + Default> Default for Plugin<B> {
    fn default() -> Self {
        Self::new(B::default())
    }
}

impl<B: Backend> Deref for Plugin<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.backend
    }
}

impl<B: Backend> LockingPlugin for Plugin<B> {
    fn name(&self) -> &str {
        name::<B>()
    }

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        self.try_lock_typed(key, ttl_ms).map_err(PluginError::into_message)
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        self.renew_typed(handle).map_err(PluginError::into_message)
    }

    fn release(&self, handle: LockHandle) -> Result<(), String> {
        self.release_typed(&handle).map_err(PluginError::into_message)
    }

    fn cleanup(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let waits: Vec<Wait> = {
                let waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
                waits.live.values().cloned().collect()
            };
            for wait in waits {
                wait.cancel();
            }
            self.backend.cleanup();
        }
    }
}

/// The 1.1 calls in-process. Statistics are counted at the C boundary (by
/// `bext-locking-ffi`), so an in-process instance has none to give.
impl<B: Backend> LockAdmin for Plugin<B> {
    fn capabilities(&self) -> Vec<String> {
        B::CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()
    }

    fn try_lock_as(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        self.try_lock_owned_typed(key, ttl_ms, owner)
    }

    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        self.inspect_typed(key)
    }

    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        self.force_release_typed(key, if_fence)
    }

    fn stats(&self) -> Result<Stats, PluginError> {
        Err(PluginError::unsupported(format!(
            "{}: statistics are counted at the C boundary; an in-process instance has none",
            name::<B>()
        )))
    }
}

/// The 1.2 calls in-process.
impl<B: Backend> LockWait for Plugin<B> {
    fn wait_mode(&self) -> WaitMode {
        WaitMode::of(B::CAPABILITIES)
    }

    /// A backend without a wait of its own is polled, as hosts poll a
    /// plugin without the slot.
    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        match self.lock_wait_typed(key, ttl_ms, owner, wait) {
            Err(e) if e.kind == bext_locking::ErrorKind::Unsupported => {
                bext_locking::wait::poll_wait(
                    wait,
                    bext_locking::wait::POLL_MAX,
                    || {
                        let sent = std::time::Instant::now();
                        Ok(self
                            .try_lock_owned_typed(key, ttl_ms, owner)?
                            .map(|handle| Acquired { handle, sent }))
                    },
                    || None,
                )
            }
            other => other,
        }
    }

    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        self.renew_for_typed(handle, ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use bext_locking::ErrorKind;

    use super::*;

    /// Counts calls; refuses TTLs under 10 ms.
    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
        cleanups: AtomicUsize,
    }

    impl Backend for Counting {
        const NAME: &'static std::ffi::CStr = c"counting";
        type Config = serde_json::Value;
        fn create(_: serde_json::Value) -> Result<Self, PluginError> {
            Ok(Self::default())
        }
        fn limits(&self) -> Limits {
            Limits::abi().with_min_ttl_ms(10, "test")
        }
        fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, PluginError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let lock_id = "id".to_owned();
            Ok(Some(LockHandle { key: key.to_owned(), lock_id, ttl_ms, fence: None }))
        }
        fn renew(&self, _: &LockHandle) -> Result<(), PluginError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err(PluginError::backend(message::not_held("k")))
        }
        fn release(&self, _: &LockHandle) -> Result<(), PluginError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn cleanup(&self) {
            self.cleanups.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn requests_are_checked_before_the_backend_sees_them() {
        let p = Plugin::<Counting>::default();
        for (key, ttl) in [("", 100), ("k", 0), ("k", 9), ("k", bext_locking::MAX_TTL_MS + 1)] {
            let e = p.try_lock_typed(key, ttl).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{key:?} {ttl}: {e}");
        }
        let h = LockHandle { key: "k".into(), lock_id: "id".into(), ttl_ms: 5, fence: None };
        assert_eq!(p.renew_typed(&h).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(p.calls.load(Ordering::SeqCst), 0);
        // Release checks the ABI's limits only.
        assert!(p.release_typed(&h).is_ok());
        assert!(p.try_lock("k", 10).unwrap().is_some());
        let lost = p.renew(&LockHandle { ttl_ms: 10, ..h }).unwrap_err();
        assert_eq!(
            lost,
            "lock on `k` is no longer held by this handle (expired, released or taken over)"
        );
    }

    #[test]
    fn cleanup_runs_once_and_closes_every_call() {
        let p = Plugin::<Counting>::default();
        p.cleanup();
        p.cleanup();
        assert_eq!(p.cleanups.load(Ordering::SeqCst), 1);
        let e = p.try_lock_typed("k", 100).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Backend, "counting: this instance was cleaned up")
        );
        let h = LockHandle { key: "k".into(), lock_id: "id".into(), ttl_ms: 100, fence: None };
        assert!(p.renew(&h).unwrap_err().contains("cleaned up"));
        assert!(p.release(h).unwrap_err().contains("cleaned up"));
        assert_eq!(p.calls.load(Ordering::SeqCst), 0);
        assert_eq!(p.name(), "counting");
    }
}
