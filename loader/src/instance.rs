//! A plugin instance behind the C ABI, wrapped as a `LockingPlugin`.

use std::ffi::{CStr, c_char};
use std::ptr::{self, NonNull};

use bext_locking::{LockHandle, LockingPlugin};
use bext_locking_ffi::{
    BEXT_LOCKING_CONTENDED, BEXT_LOCKING_ERR_BACKEND, BEXT_LOCKING_ERR_INVALID,
    BEXT_LOCKING_ERR_PANIC, BEXT_LOCKING_OK, BextLockingCallFn, BextLockingInstance,
    BextLockingVTable, wire,
};
use serde::Deserialize;

/// An instance created by a loaded plugin. Dropping it calls `destroy`.
///
/// Its library is never unloaded, so the instance can outlive the
/// [`LoadedPlugin`](crate::LoadedPlugin) it came from, and keeps running the
/// code it was created with even after a newer build is loaded.
pub struct FfiPlugin {
    vtable: &'static BextLockingVTable,
    instance: NonNull<BextLockingInstance>,
    name: String,
}

// SAFETY: ABI v1 requires instances to accept calls from any thread, and
// `try_lock`/`renew`/`release`/`cleanup` to run concurrently; `destroy` runs
// only from `Drop`, when no other reference exists.
unsafe impl Send for FfiPlugin {}
// SAFETY: see `Send`.
unsafe impl Sync for FfiPlugin {}

#[derive(Deserialize)]
struct ErrorObject {
    code: String,
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
/// `s` must be NULL or a string returned by a slot of `vtable`, not yet freed.
pub(crate) unsafe fn take_string(vtable: &BextLockingVTable, s: *mut c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller: a live NUL-terminated plugin string.
    let text = unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned();
    if let Some(free) = vtable.free_string {
        // SAFETY: returned by this plugin and not freed yet.
        unsafe { free(s) };
    }
    Some(text)
}

/// Turns a negative status and its error JSON into the message a Rust caller sees.
pub(crate) fn error_message(status: i32, json: Option<&str>) -> String {
    let parsed = json.and_then(|j| serde_json::from_str::<ErrorObject>(j).ok());
    match (parsed, json) {
        (Some(e), _) => match status {
            BEXT_LOCKING_ERR_BACKEND => e.message,
            _ => format!("{}: {}", e.code, e.message),
        },
        (None, Some(raw)) => format!("status {status}: {raw}"),
        (None, None) => match status {
            BEXT_LOCKING_ERR_BACKEND => "backend error (no message)".to_owned(),
            BEXT_LOCKING_ERR_INVALID => "invalid_argument (no message)".to_owned(),
            BEXT_LOCKING_ERR_PANIC => "the plugin panicked (no message)".to_owned(),
            other => format!("unknown status {other}"),
        },
    }
}

impl FfiPlugin {
    /// # Safety
    /// `instance` must come from `vtable.create` and not have been destroyed.
    pub(crate) unsafe fn from_raw(
        vtable: &'static BextLockingVTable,
        instance: *mut BextLockingInstance,
        name: String,
    ) -> Self {
        let instance = NonNull::new(instance).expect("checked non-NULL by the caller");
        Self { vtable, instance, name }
    }

    /// Calls one of the JSON-in, JSON-out slots with a NUL-terminated input
    /// (see `bext_locking_ffi::wire`); returns the status and the plugin's
    /// output string, which the caller must pass to [`Self::finish`].
    fn call(&self, slot: BextLockingCallFn, input_nul: &[u8]) -> (i32, *mut c_char) {
        let Some(slot) = slot else { return (BEXT_LOCKING_ERR_INVALID, ptr::null_mut()) };
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
        if let Some(free) = self.vtable.free_string {
            // SAFETY: returned by this plugin and not freed yet.
            unsafe { free(out) };
        }
        value
    }

    fn error(&self, status: i32, out: *mut c_char) -> String {
        self.finish(out, |b| error_message(status, b.map(String::from_utf8_lossy).as_deref()))
    }

    fn expect_empty(&self, what: &str, (status, out): (i32, *mut c_char)) -> Result<(), String> {
        match status {
            BEXT_LOCKING_OK => self.finish(out, |_| Ok(())),
            s if s < 0 => Err(self.error(s, out)),
            s => self.finish(out, |_| {
                Err(format!("{}: {what} returned unexpected status {s}", self.name))
            }),
        }
    }
}

impl LockingPlugin for FfiPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        let (status, out) = with_buffer(|buf| {
            wire::write_request_nul(buf, key, ttl_ms);
            self.call(self.vtable.try_lock, buf)
        });
        match status {
            BEXT_LOCKING_OK => self.finish(out, |json| {
                let json = json.ok_or_else(|| {
                    format!("{}: try_lock returned OK without a handle", self.name)
                })?;
                if let Some(h) = wire::parse_canonical_handle(json) {
                    return Ok(Some(h));
                }
                serde_json::from_slice(json)
                    .map(Some)
                    .map_err(|e| format!("{}: try_lock returned a bad handle: {e}", self.name))
            }),
            BEXT_LOCKING_CONTENDED => self.finish(out, |_| Ok(None)),
            s if s < 0 => Err(self.error(s, out)),
            s => self.finish(out, |_| {
                Err(format!("{}: try_lock returned unexpected status {s}", self.name))
            }),
        }
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        self.expect_empty(
            "renew",
            with_buffer(|buf| {
                wire::write_handle_nul(buf, handle);
                self.call(self.vtable.renew, buf)
            }),
        )
    }

    fn release(&self, handle: LockHandle) -> Result<(), String> {
        self.expect_empty(
            "release",
            with_buffer(|buf| {
                wire::write_handle_nul(buf, &handle);
                self.call(self.vtable.release, buf)
            }),
        )
    }

    fn cleanup(&self) {
        if let Some(cleanup) = self.vtable.cleanup {
            let mut out: *mut c_char = ptr::null_mut();
            // SAFETY: live instance, valid out-parameter.
            unsafe { cleanup(self.instance.as_ptr(), &mut out) };
            // SAFETY: `out` is NULL or a string from this plugin.
            // A failed cleanup leaves nothing for the caller to do.
            let _ = unsafe { take_string(self.vtable, out) };
        }
    }
}

impl Drop for FfiPlugin {
    fn drop(&mut self) {
        if let Some(destroy) = self.vtable.destroy {
            // SAFETY: we own the instance, and `&mut self` proves no call is
            // running on it; it is destroyed exactly once.
            unsafe { destroy(self.instance.as_ptr()) };
        }
    }
}
