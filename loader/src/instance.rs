//! A plugin instance behind the C ABI, wrapped as a `LockingPlugin`, with
//! typed errors beside the trait.

use std::ffi::{CStr, c_char};
use std::ptr::{self, NonNull};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bext_locking::wait::{POLL_MAX, poll_wait};
use bext_locking::{
    Acquired, ErrorKind, ForceReleased, LockAdmin, LockHandle, LockInfo, LockWait, LockingPlugin,
    PluginError, Stats, Wait, WaitMode, validate_owner,
};
use bext_locking_ffi::{
    BEXT_LOCKING_CANCELLED, BEXT_LOCKING_CONTENDED, BEXT_LOCKING_OK, BextLockingInstance, kind_of,
    wire,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::vtable::{CallFn, Slots};

/// An instance created by a loaded plugin. Dropping it calls `destroy`.
///
/// It is a [`LockingPlugin`], whose errors are strings, and it also offers
/// the same calls with typed errors ([`try_lock_typed`](Self::try_lock_typed)
/// and friends): their [`PluginError::kind`] tells a refused request
/// (`InvalidArgument`) from a failed backend (`Backend`), a caught panic
/// (`Panic`) and a plugin that broke the ABI (`Protocol`).
///
/// Its library is never unloaded, so the instance can outlive the
/// [`LoadedPlugin`](crate::LoadedPlugin) it came from, and keeps running the
/// code it was created with even after a newer build is loaded.
pub struct FfiPlugin {
    slots: Slots,
    instance: NonNull<BextLockingInstance>,
    name: String,
    /// Whether the line saying that waits poll has been logged.
    polling_noted: std::sync::atomic::AtomicBool,
}

// SAFETY: ABI v1 requires instances to accept calls from any thread, and
// `try_lock`/`renew`/`release`/`cleanup` to run concurrently; `destroy` runs
// only from `Drop`, when no other reference exists.
unsafe impl Send for FfiPlugin {}
// SAFETY: see `Send`.
unsafe impl Sync for FfiPlugin {}

#[derive(Deserialize)]
struct ErrorObject {
    message: String,
}

/// Runs `f` with this thread's reusable buffer for outgoing JSON, so a call
/// allocates nothing for its input. A call made from inside `f` (a plugin
/// that re-enters the host on the same thread) gets a fresh buffer instead.
fn with_buffer<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

/// Copies a plugin-owned string and frees it with the plugin's `free_string`.
///
/// # Safety
/// `s` must be NULL or a string returned by a slot of `slots`, not yet freed.
pub(crate) unsafe fn take_string(slots: &Slots, s: *mut c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller: a live NUL-terminated plugin string.
    let text = unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned();
    // SAFETY: returned by this plugin and not freed yet.
    unsafe { (slots.free_string)(s) };
    Some(text)
}

/// The typed error of a negative status and its error object: the kind
/// from the status (a status this ABI does not define is `Protocol`), the
/// message from the object.
pub(crate) fn call_error(status: i32, json: Option<&str>) -> PluginError {
    let kind = kind_of(status).unwrap_or(ErrorKind::Protocol);
    let parsed = json.and_then(|j| serde_json::from_str::<ErrorObject>(j).ok());
    let message = match (parsed, json) {
        (Some(e), _) if kind != ErrorKind::Protocol => e.message,
        (Some(e), _) => format!("unknown status {status}: {}", e.message),
        (None, Some(raw)) => format!("status {status}: {raw}"),
        (None, None) => match kind {
            ErrorKind::Protocol => format!("unknown status {status}"),
            _ => "(no message)".to_owned(),
        },
    };
    PluginError::new(kind, message)
}

/// How a typed error reads through the string-typed trait: the message
/// alone for a backend failure (the common case, already self-explaining),
/// prefixed with its code otherwise, so the kind survives in the text.
pub(crate) fn as_text(e: PluginError) -> String {
    match e.kind {
        ErrorKind::Backend | ErrorKind::Protocol => e.message,
        kind => format!("{}: {}", kind.code(), e.message),
    }
}

impl FfiPlugin {
    /// # Safety
    /// `instance` must come from `slots.create` and not have been destroyed.
    pub(crate) unsafe fn from_raw(
        slots: Slots,
        instance: *mut BextLockingInstance,
        name: String,
    ) -> Self {
        let instance = NonNull::new(instance).expect("checked non-NULL by the caller");
        Self { slots, instance, name, polling_noted: std::sync::atomic::AtomicBool::new(false) }
    }

    /// Calls one of the JSON-in, JSON-out slots with a NUL-terminated input
    /// (see `bext_locking_ffi::wire`); returns the status and the plugin's
    /// output string, which the caller must pass to [`Self::finish`].
    fn call(&self, slot: CallFn, input_nul: &[u8]) -> (i32, *mut c_char) {
        debug_assert_eq!(input_nul.last(), Some(&0));
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: the instance is live (destroyed only in Drop), `input_nul`
        // is NUL-terminated and outlives the call, `out` is a valid
        // out-parameter.
        let status = unsafe { slot(self.instance.as_ptr(), input_nul.as_ptr().cast(), &mut out) };
        (status, out)
    }

    /// Reads a plugin string with `read` and frees it with the plugin's
    /// `free_string`, without copying it first.
    fn finish<T>(&self, out: *mut c_char, read: impl FnOnce(Option<&[u8]>) -> T) -> T {
        if out.is_null() {
            return read(None);
        }
        // SAFETY: a non-NULL output is a live NUL-terminated string returned
        // by this plugin's slot; it is freed below, after its last use.
        let value = read(Some(unsafe { CStr::from_ptr(out) }.to_bytes()));
        // SAFETY: returned by this plugin and not freed yet.
        unsafe { (self.slots.free_string)(out) };
        value
    }

    fn error(&self, status: i32, out: *mut c_char) -> PluginError {
        self.finish(out, |b| call_error(status, b.map(String::from_utf8_lossy).as_deref()))
    }

    fn protocol(&self, what: String) -> PluginError {
        PluginError::new(ErrorKind::Protocol, format!("{}: {what}", self.name))
    }

    fn expect_empty(
        &self,
        what: &str,
        (status, out): (i32, *mut c_char),
    ) -> Result<(), PluginError> {
        match status {
            BEXT_LOCKING_OK => self.finish(out, |_| Ok(())),
            s if s < 0 => Err(self.error(s, out)),
            s => self.finish(out, |_| {
                Err(self.protocol(format!("{what} returned unexpected status {s}")))
            }),
        }
    }

    /// [`LockingPlugin::try_lock`] with the error's kind: `InvalidArgument`
    /// when the plugin refused the key or TTL (its own limits included),
    /// `Backend` when the backend failed, `Panic`, or `Protocol`. Sends the
    /// [`default_owner`](crate::default_owner), `hostname:pid`.
    pub fn try_lock_typed(
        &self,
        key: &str,
        ttl_ms: u64,
    ) -> Result<Option<LockHandle>, PluginError> {
        // The default owner is valid (cut to the limit when it was made)
        // and escaped once, so neither is done again per call.
        let owner = crate::owner::default_owner_json();
        self.try_lock_with(|buf| wire::write_request_owner_json_nul(buf, key, ttl_ms, owner))
    }

    /// [`try_lock_typed`](Self::try_lock_typed) naming the holder: `owner`
    /// (at most 256 bytes, else `InvalidArgument` naming `owner`) is stored
    /// with the lock by a plugin with the `"owner"` capability and shown by
    /// [`inspect`](Self::inspect); a 1.0 plugin ignores it. `None` sends no
    /// owner at all.
    pub fn try_lock_as(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        if let Some(owner) = owner {
            validate_owner(owner).map_err(PluginError::invalid)?;
        }
        self.try_lock_with(|buf| wire::write_owned_request_nul(buf, key, ttl_ms, owner))
    }

    /// Calls `try_lock` with the request `write` puts in the buffer.
    fn try_lock_with(
        &self,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Option<LockHandle>, PluginError> {
        let (status, out) = with_buffer(|buf| {
            write(buf);
            self.call(self.slots.try_lock, buf)
        });
        match status {
            BEXT_LOCKING_OK => self.finish(out, |json| {
                let json = json
                    .ok_or_else(|| self.protocol("try_lock returned OK without a handle".into()))?;
                if let Some(h) = wire::parse_canonical_handle(json) {
                    return Ok(Some(h));
                }
                serde_json::from_slice(json)
                    .map(Some)
                    .map_err(|e| self.protocol(format!("try_lock returned a bad handle: {e}")))
            }),
            BEXT_LOCKING_CONTENDED => self.finish(out, |_| Ok(None)),
            s if s < 0 => Err(self.error(s, out)),
            s => self.finish(out, |_| {
                Err(self.protocol(format!("try_lock returned unexpected status {s}")))
            }),
        }
    }

    /// [`LockingPlugin::renew`] with the error's kind; `Backend` includes
    /// "no longer held by this handle".
    pub fn renew_typed(&self, handle: &LockHandle) -> Result<(), PluginError> {
        self.expect_empty(
            "renew",
            with_buffer(|buf| {
                wire::write_handle_nul(buf, handle);
                self.call(self.slots.renew, buf)
            }),
        )
    }

    /// [`LockingPlugin::release`] with the error's kind.
    pub fn release_typed(&self, handle: &LockHandle) -> Result<(), PluginError> {
        self.expect_empty(
            "release",
            with_buffer(|buf| {
                wire::write_handle_nul(buf, handle);
                self.call(self.slots.release, buf)
            }),
        )
    }
}

impl FfiPlugin {
    /// The ABI revision the plugin's vtable covers: 0 for a 1.0 plugin,
    /// which has none of the 1.1 slots.
    pub fn abi_minor(&self) -> u32 {
        self.slots.abi_minor()
    }

    /// Whether the plugin has the slot `name` (`"inspect"`,
    /// `"force_release"`, `"stats"`; the 1.0 slots always).
    pub fn has_slot(&self, name: &str) -> bool {
        self.slots.has_slot(name)
    }

    /// The error for a slot the plugin does not have, reported without
    /// calling anything.
    fn absent(&self, slot: &str) -> PluginError {
        PluginError::unsupported(format!(
            "plugin `{}` (ABI 1.{}) has no `{slot}` slot",
            self.name,
            self.abi_minor()
        ))
    }

    /// Reads the JSON answer of an optional slot.
    fn answer<T: DeserializeOwned>(
        &self,
        what: &str,
        (status, out): (i32, *mut c_char),
    ) -> Result<T, PluginError> {
        match status {
            BEXT_LOCKING_OK => self.finish(out, |json| {
                let json =
                    json.ok_or_else(|| self.protocol(format!("{what} returned OK without JSON")))?;
                serde_json::from_slice(json)
                    .map_err(|e| self.protocol(format!("{what} returned bad JSON: {e}")))
            }),
            s if s < 0 => Err(self.error(s, out)),
            s => self.finish(out, |_| {
                Err(self.protocol(format!("{what} returned unexpected status {s}")))
            }),
        }
    }

    /// Who holds `key`, by the backend's clock (ABI 1.1 `inspect`). A key
    /// nobody holds is `held: false`, not an error. `Unsupported` when the
    /// plugin has no `inspect` slot (a 1.0 plugin) or its mode cannot
    /// inspect.
    pub fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        let slot = self.slots.inspect.ok_or_else(|| self.absent("inspect"))?;
        let mut input = serde_json::json!({ "key": key }).to_string().into_bytes();
        input.push(0);
        self.answer("inspect", self.call(slot, &input))
    }

    /// Breaks the lock on `key` whoever holds it, or only when its fence is
    /// `if_fence` (ABI 1.1 `force_release`). Afterwards the broken holder's
    /// renew fails and the next fence is higher. `Unsupported` when the
    /// plugin has no such slot or its mode cannot break locks.
    pub fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        let slot = self.slots.force_release.ok_or_else(|| self.absent("force_release"))?;
        let mut request = serde_json::json!({ "key": key });
        if let Some(fence) = if_fence {
            request["if_fence"] = fence.into();
        }
        let mut input = request.to_string().into_bytes();
        input.push(0);
        self.answer("force_release", self.call(slot, &input))
    }

    /// This instance's counters and latency histograms since `create`
    /// (ABI 1.1 `stats`). `Unsupported` for a plugin without the slot.
    pub fn stats(&self) -> Result<Stats, PluginError> {
        let slot = self.slots.stats.ok_or_else(|| self.absent("stats"))?;
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: the instance is live (destroyed only in Drop), `out` is a
        // valid out-parameter.
        let status = unsafe { slot(self.instance.as_ptr(), &mut out) };
        self.answer("stats", (status, out))
    }
}

/// The host's wait ids: unique in this process, so unique per instance.
static NEXT_WAIT_ID: AtomicU64 = AtomicU64::new(1);

/// The instance pointer, for a cancel hook that runs on another thread.
struct CancelTarget {
    slot: CallFn,
    instance: NonNull<BextLockingInstance>,
    free_string: crate::vtable::FreeFn,
    id: u64,
}

// SAFETY: the ABI lets any thread call an instance's slots; the hook that
// holds this runs only while its guard lives, inside `lock_wait_slot`, so the
// instance outlives it.
unsafe impl Send for CancelTarget {}

impl CancelTarget {
    fn cancel(self) {
        let input = format!("{{\"wait_id\":{}}}\0", self.id);
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: live instance (see `Send`), NUL-terminated input that
        // outlives the call, valid out-parameter.
        unsafe { (self.slot)(self.instance.as_ptr(), input.as_ptr().cast(), &mut out) };
        if !out.is_null() {
            // SAFETY: returned by this plugin's slot and not freed yet.
            unsafe { (self.free_string)(out) };
        }
    }
}

impl FfiPlugin {
    /// How [`lock_wait`](Self::lock_wait) waits on this plugin: by the
    /// plugin's own notification when it has the 1.2 slot and lists
    /// `"lock_wait"`, else by polling.
    pub fn wait_mode(&self) -> WaitMode {
        if self.slots.lock_wait.is_none() {
            return WaitMode::Polling;
        }
        WaitMode::of(&self.capabilities())
    }

    /// Waits up to `timeout` for `key` (ABI 1.2 `lock_wait`), sending the
    /// [`default_owner`](crate::default_owner). `Ok(None)` when the time
    /// passes; see [`lock_wait_with`](Self::lock_wait_with) to cancel the
    /// wait from another thread.
    pub fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        timeout: Duration,
    ) -> Result<Option<LockHandle>, PluginError> {
        let wait = Wait::new(timeout);
        Ok(self.lock_wait_with(key, ttl_ms, Some(crate::default_owner()), &wait)?.map(|a| a.handle))
    }

    /// Waits for `key` until `wait` times out or is cancelled
    /// ([`Wait::cancel`], from any thread: the plugin's wait ends within
    /// 100 ms and leaves nothing on the server). A plugin without the
    /// `lock_wait` slot (1.0, 1.1), or whose mode answers `unsupported`, is
    /// polled with jittered backoff instead, and a line saying so is
    /// logged (`log` at info level) once per instance.
    pub fn lock_wait_with(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        if let Some(owner) = owner {
            validate_owner(owner).map_err(PluginError::invalid)?;
        }
        if let Some(slot) = self.slots.lock_wait {
            match self.lock_wait_slot(slot, key, ttl_ms, owner, wait) {
                Err(e) if e.kind == ErrorKind::Unsupported => {
                    self.note_polling(&format!("its lock_wait is unsupported here: {}", e.message))
                }
                other => return other,
            }
        } else {
            self.note_polling(&format!("it has no lock_wait slot (ABI 1.{})", self.abi_minor()));
        }
        poll_wait(
            wait,
            POLL_MAX,
            || {
                let sent = Instant::now();
                Ok(self.try_lock_as(key, ttl_ms, owner)?.map(|handle| Acquired { handle, sent }))
            },
            || None,
        )
    }

    /// Says once per instance that its waits poll.
    fn note_polling(&self, why: &str) {
        if !self.polling_noted.swap(true, Ordering::Relaxed) {
            log::info!("plugin `{}`: waiting by polling try_lock: {why}", self.name);
        }
    }

    fn lock_wait_slot(
        &self,
        slot: crate::vtable::WaitFn,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        if wait.is_cancelled() {
            return Ok(None);
        }
        let id = NEXT_WAIT_ID.fetch_add(1, Ordering::Relaxed);
        let wait_ms = u64::try_from(wait.remaining().as_millis()).unwrap_or(u64::MAX);
        let mut request = serde_json::json!({
            "key": key, "ttl_ms": ttl_ms, "wait_ms": wait_ms.min(bext_locking::MAX_TTL_MS),
            "wait_id": id,
        });
        if let Some(owner) = owner {
            request["owner"] = owner.into();
        }
        let mut input = request.to_string().into_bytes();
        input.push(0);
        // Without a cancel slot the wait still ends at its deadline.
        let _hook = self.slots.cancel_wait.map(|cancel| {
            let target = CancelTarget {
                slot: cancel,
                instance: self.instance,
                free_string: self.slots.free_string,
                id,
            };
            wait.on_cancel(move || target.cancel())
        });
        let mut out: *mut c_char = ptr::null_mut();
        let mut sent_ago_us = 0u64;
        // SAFETY: live instance, NUL-terminated input that outlives the
        // call, valid out-parameters.
        let status = unsafe {
            slot(self.instance.as_ptr(), input.as_ptr().cast(), &mut out, &mut sent_ago_us)
        };
        let returned = Instant::now();
        match status {
            BEXT_LOCKING_OK => self.finish(out, |json| {
                let json = json.ok_or_else(|| {
                    self.protocol("lock_wait returned OK without a handle".into())
                })?;
                let handle = match wire::parse_canonical_handle(json) {
                    Some(h) => h,
                    None => serde_json::from_slice(json).map_err(|e| {
                        self.protocol(format!("lock_wait returned a bad handle: {e}"))
                    })?,
                };
                let sent =
                    returned.checked_sub(Duration::from_micros(sent_ago_us)).unwrap_or(returned);
                Ok(Some(Acquired { handle, sent }))
            }),
            BEXT_LOCKING_CONTENDED | BEXT_LOCKING_CANCELLED => self.finish(out, |_| Ok(None)),
            s if s < 0 => Err(self.error(s, out)),
            s => self.finish(out, |_| {
                Err(self.protocol(format!("lock_wait returned unexpected status {s}")))
            }),
        }
    }

    /// Sets the remaining time of a held lock to `ttl_ms` once (ABI 1.2
    /// `renew_for`, capability `"renew_ttl"`). `Unsupported` when the
    /// plugin has no such slot or cannot; an error of another kind means
    /// the lock is lost.
    pub fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        let slot = self.slots.renew_for.ok_or_else(|| self.absent("renew_for"))?;
        let mut handle_json = Vec::new();
        wire::write_handle_nul(&mut handle_json, handle);
        handle_json.pop();
        let handle_json = String::from_utf8_lossy(&handle_json);
        let mut input = format!("{{\"handle\":{handle_json},\"ttl_ms\":{ttl_ms}}}").into_bytes();
        input.push(0);
        self.expect_empty("renew_for", self.call(slot, &input))
    }
}

impl LockWait for FfiPlugin {
    fn wait_mode(&self) -> WaitMode {
        FfiPlugin::wait_mode(self)
    }

    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        self.lock_wait_with(key, ttl_ms, owner, wait)
    }

    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        FfiPlugin::renew_for(self, handle, ttl_ms)
    }
}

impl FfiPlugin {
    /// What the plugin's `describe` lists in `capabilities` (empty for a
    /// 1.0 plugin, or when `describe` fails).
    pub fn capabilities(&self) -> Vec<String> {
        #[derive(Deserialize)]
        struct Caps {
            #[serde(default)]
            capabilities: Vec<String>,
        }
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: `out` is a valid out-parameter; describe may run any time.
        let status = unsafe { (self.slots.describe)(&mut out) };
        // SAFETY: the string (if any) was returned by this plugin's slot.
        let text = unsafe { take_string(&self.slots, out) };
        match (status, text) {
            (BEXT_LOCKING_OK, Some(text)) => {
                serde_json::from_str::<Caps>(&text).map(|c| c.capabilities).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }
}

impl LockAdmin for FfiPlugin {
    fn capabilities(&self) -> Vec<String> {
        FfiPlugin::capabilities(self)
    }

    fn try_lock_as(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        FfiPlugin::try_lock_as(self, key, ttl_ms, owner)
    }

    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        FfiPlugin::inspect(self, key)
    }

    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        FfiPlugin::force_release(self, key, if_fence)
    }

    fn stats(&self) -> Result<Stats, PluginError> {
        FfiPlugin::stats(self)
    }
}

impl LockingPlugin for FfiPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        self.try_lock_typed(key, ttl_ms).map_err(as_text)
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        self.renew_typed(handle).map_err(as_text)
    }

    fn release(&self, handle: LockHandle) -> Result<(), String> {
        self.release_typed(&handle).map_err(as_text)
    }

    fn cleanup(&self) {
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: live instance, valid out-parameter.
        unsafe { (self.slots.cleanup)(self.instance.as_ptr(), &mut out) };
        // SAFETY: `out` is NULL or a string from this plugin.
        // A failed cleanup leaves nothing for the caller to do.
        let _ = unsafe { take_string(&self.slots, out) };
    }
}

impl Drop for FfiPlugin {
    fn drop(&mut self) {
        // SAFETY: we own the instance, and `&mut self` proves no call is
        // running on it; it is destroyed exactly once.
        unsafe { (self.slots.destroy)(self.instance.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds_and_keep_the_message() {
        let e = call_error(-2, Some(r#"{"code":"invalid_argument","message":"ttl_ms is 0"}"#));
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::InvalidArgument, "ttl_ms is 0"));
        assert_eq!(as_text(e), "invalid_argument: ttl_ms is 0");
        let e = call_error(-1, Some(r#"{"code":"backend","message":"down"}"#));
        assert_eq!((e.kind, as_text(e)), (ErrorKind::Backend, "down".to_owned()));
        assert_eq!(call_error(-3, None).kind, ErrorKind::Panic);
        let e = call_error(-9, Some(r#"{"code":"future","message":"m"}"#));
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::Protocol, "unknown status -9: m"));
        assert_eq!(call_error(-1, Some("not json")).message, "status -1: not json");
        assert_eq!(call_error(-7, None).message, "unknown status -7");
    }
}
