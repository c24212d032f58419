//! A plugin instance behind the C ABI, wrapped as a `LockingPlugin`.

use std::ffi::{CStr, CString, c_char};
use std::ptr::{self, NonNull};

use bext_locking::{LockHandle, LockingPlugin};
use bext_locking_ffi::{
    BEXT_LOCKING_CONTENDED, BEXT_LOCKING_ERR_BACKEND, BEXT_LOCKING_ERR_INVALID,
    BEXT_LOCKING_ERR_PANIC, BEXT_LOCKING_OK, BextLockingCallFn, BextLockingInstance,
    BextLockingVTable,
};
use serde::{Deserialize, Serialize};

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

#[derive(Serialize)]
struct Request<'a> {
    key: &'a str,
    ttl_ms: u64,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: String,
    message: String,
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

    /// Calls one of the JSON-in, JSON-out slots; returns the status and the
    /// plugin's output, already copied and freed.
    fn call(&self, slot: BextLockingCallFn, input: &[u8]) -> (i32, Option<String>) {
        let Some(slot) = slot else { return (BEXT_LOCKING_ERR_INVALID, None) };
        let input = match CString::new(input) {
            Ok(c) => c,
            Err(_) => return (BEXT_LOCKING_ERR_INVALID, None),
        };
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: the instance is live (destroyed only in Drop), `input`
        // outlives the call, and `out` is a valid out-parameter.
        let status = unsafe { slot(self.instance.as_ptr(), input.as_ptr(), &mut out) };
        // SAFETY: `out` is NULL or a string from this plugin's slot.
        (status, unsafe { take_string(self.vtable, out) })
    }

    fn expect_empty(&self, what: &str, status: i32, out: Option<String>) -> Result<(), String> {
        match status {
            BEXT_LOCKING_OK => Ok(()),
            s if s < 0 => Err(error_message(s, out.as_deref())),
            s => Err(format!("{}: {what} returned unexpected status {s}", self.name)),
        }
    }
}

impl LockingPlugin for FfiPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        let request = serde_json::to_vec(&Request { key, ttl_ms }).map_err(|e| e.to_string())?;
        let (status, out) = self.call(self.vtable.try_lock, &request);
        match status {
            BEXT_LOCKING_OK => {
                let text = out.ok_or_else(|| {
                    format!("{}: try_lock returned OK without a handle", self.name)
                })?;
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| format!("{}: try_lock returned a bad handle: {e}", self.name))
            }
            BEXT_LOCKING_CONTENDED => Ok(None),
            s if s < 0 => Err(error_message(s, out.as_deref())),
            s => Err(format!("{}: try_lock returned unexpected status {s}", self.name)),
        }
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        let json = serde_json::to_vec(handle).map_err(|e| e.to_string())?;
        let (status, out) = self.call(self.vtable.renew, &json);
        self.expect_empty("renew", status, out)
    }

    fn release(&self, handle: LockHandle) -> Result<(), String> {
        let json = serde_json::to_vec(&handle).map_err(|e| e.to_string())?;
        let (status, out) = self.call(self.vtable.release, &json);
        self.expect_empty("release", status, out)
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
