//! Calling a plugin's slots with arbitrary bytes, for fuzzers and ABI checks.
//!
//! A crate of its own, beside the loader rather than in its API: only the
//! fuzz harness and ABI tests need it. The loader's
//! [`FfiPlugin`](bext_locking_loader::FfiPlugin) only ever sends well-formed JSON; a fuzzer
//! needs to send anything: invalid UTF-8, malformed or huge JSON, a NULL
//! input, a NULL instance. [`RawPlugin`] does that without the caller
//! writing `unsafe`: it copies each input into a NUL-terminated buffer (so an
//! interior NUL ends the C string there, as it would for a C host), puts a
//! non-NULL sentinel in every out-parameter to see whether the slot cleared
//! it, copies every returned string and frees it with the plugin's
//! `free_string`, and destroys instances when they are dropped.
//!
//! Three ways to get one: [`RawPlugin::from_loaded`] for a loaded library,
//! [`RawPlugin::from_export`] for a backend crate linked into the program
//! (its code is then compiled, and coverage-instrumented, with the
//! program), and the `unsafe` [`RawPlugin::from_vtable`] for any other
//! vtable.

#![deny(missing_docs)]

use std::ffi::{CStr, c_char};
use std::ptr::{self, NonNull};

use bext_locking_ffi::{BextLockingInstance, BextLockingVTable, Export};
use bext_locking_loader::{CallFn, LoadErrorKind, LoadedPlugin, Slots};

/// The slots that take an instance and one JSON input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawSlot {
    /// `try_lock(instance, request_json, out_json)`.
    TryLock,
    /// `renew(instance, handle_json, out_json)`.
    Renew,
    /// `release(instance, handle_json, out_json)`.
    Release,
}

/// The ABI 1.1 slots that take an instance and one JSON input. A plugin
/// may lack them (an ABI 1.0 plugin does): the calls then answer `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminSlot {
    /// `inspect(instance, {"key":…}, out_json)`.
    Inspect,
    /// `force_release(instance, {"key":…,"if_fence"?:N}, out_json)`.
    ForceRelease,
}

/// What a slot returned: its status and a copy of its output string (already
/// freed with the plugin's `free_string`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOutput {
    /// The status code.
    pub status: i32,
    /// The bytes of `*out_json` (without the NUL), or `None` when it was NULL.
    pub json: Option<Vec<u8>>,
    /// False when the slot left the non-NULL sentinel this wrapper stored in
    /// `*out_json` before the call: the ABI says a slot clears it on entry.
    /// The sentinel is never freed, and `json` is then `None`.
    pub cleared: bool,
}

impl RawOutput {
    /// The output as text, when there is one and it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        self.json.as_deref().and_then(|j| std::str::from_utf8(j).ok())
    }
}

/// What `create` returned.
#[derive(Debug)]
pub struct RawCreated {
    /// The status and `*out_error_json`.
    pub output: RawOutput,
    /// The instance, whenever `*out_instance` held one, whatever the status
    /// (a plugin that returned an error *and* an instance broke the ABI, and
    /// the instance is still destroyed when dropped).
    pub instance: Option<RawInstance>,
    /// False when the slot left the sentinel in `*out_instance`.
    pub instance_cleared: bool,
}

/// A plugin's slots, callable with arbitrary bytes. Cheap to copy.
#[derive(Clone, Copy)]
pub struct RawPlugin {
    slots: Slots,
}

impl std::ops::Deref for RawPlugin {
    type Target = Slots;

    fn deref(&self) -> &Slots {
        &self.slots
    }
}

impl std::fmt::Debug for RawPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPlugin").finish_non_exhaustive()
    }
}

/// The loader's refusal, worded for a fuzz harness.
fn describe(kind: LoadErrorKind) -> String {
    match kind {
        LoadErrorKind::AbiMismatch { found } => format!("vtable abi_version is {found}"),
        LoadErrorKind::VTableTooSmall { found } => format!("vtable struct_size is {found}"),
        LoadErrorKind::NullField(name) => format!("vtable slot `{name}` is NULL"),
        other => format!("{other:?}"),
    }
}

/// A non-NULL address no plugin returns: shows whether a slot cleared its
/// out-parameter. Never dereferenced or freed.
fn sentinel<T>() -> *mut T {
    NonNull::dangling().as_ptr()
}

/// `bytes` followed by a NUL, so the plugin sees a C string that ends at the
/// first NUL of `bytes`, if any.
fn c_string(bytes: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    buf.extend_from_slice(bytes);
    buf.push(0);
    buf
}

impl RawPlugin {
    /// The slots of a library the loader has opened and validated.
    pub fn from_loaded(plugin: &LoadedPlugin) -> Self {
        Self { slots: plugin.slots() }
    }

    /// The slots of backend `E` as `export_locking_plugin!` would export them,
    /// from a backend crate linked into this program. Safe: the slots are the
    /// ones `bext-locking-ffi` writes, and `E` is safe Rust.
    pub fn from_export<E: Export>() -> Self {
        let table = bext_locking_ffi::vtable::<E>();
        let slots = Slots::check(&table).map_err(describe).expect("the ffi crate fills every slot");
        Self { slots }
    }

    /// The slots of any ABI v1 vtable, e.g. one returned by a linked plugin
    /// crate's `bext_locking_plugin_entry(1)`, checked as the loader checks
    /// a library's. Returns an error naming the problem when the version,
    /// size or a field is wrong.
    ///
    /// # Safety
    /// Every slot of `vtable` must behave as ABI v1 says (`docs/ABI.md`):
    /// accept the pointers it documents, write only through its
    /// out-parameters, return strings that `free_string` frees, and so on.
    /// The wrapper relies on that to call them with arbitrary bytes.
    pub unsafe fn from_vtable(vtable: &'static BextLockingVTable) -> Result<Self, String> {
        Slots::check(vtable).map(|slots| Self { slots }).map_err(describe)
    }

    fn slot(&self, slot: RawSlot) -> CallFn {
        match slot {
            RawSlot::TryLock => self.try_lock,
            RawSlot::Renew => self.renew,
            RawSlot::Release => self.release,
        }
    }

    fn admin_slot(&self, slot: AdminSlot) -> Option<CallFn> {
        match slot {
            AdminSlot::Inspect => self.inspect,
            AdminSlot::ForceRelease => self.force_release,
        }
    }

    /// Calls an ABI 1.1 slot with a NULL instance; `None` when the plugin
    /// has no such slot.
    pub fn call_admin_without_instance(
        &self,
        slot: AdminSlot,
        input: Option<&[u8]>,
    ) -> Option<RawOutput> {
        let f = self.admin_slot(slot)?;
        let input = input.map(c_string);
        let input_ptr = input.as_ref().map_or(ptr::null(), |c| c.as_ptr().cast());
        let mut out: *mut c_char = sentinel();
        // SAFETY: a NULL instance is a documented input (ERR_INVALID); the
        // input is NULL or NUL-terminated; `out` is valid.
        let status = unsafe { f(ptr::null_mut(), input_ptr, &mut out) };
        Some(self.take(status, out))
    }

    /// Calls `stats(NULL, &out_json)`; `None` when the plugin has no `stats`.
    pub fn stats_without_instance(&self) -> Option<RawOutput> {
        let f = self.stats?;
        let mut out: *mut c_char = sentinel();
        // SAFETY: a NULL instance is a documented input; `out` is valid.
        let status = unsafe { f(ptr::null_mut(), &mut out) };
        Some(self.take(status, out))
    }

    /// Copies a returned string and frees it; reports whether the slot
    /// cleared the sentinel.
    fn take(&self, status: i32, out: *mut c_char) -> RawOutput {
        if out == sentinel() {
            return RawOutput { status, json: None, cleared: false };
        }
        if out.is_null() {
            return RawOutput { status, json: None, cleared: true };
        }
        // SAFETY: a non-NULL, non-sentinel output is a NUL-terminated string
        // the slot just returned (ABI v1); it is freed right after the copy,
        // exactly once, with this plugin's `free_string`.
        let json = unsafe { CStr::from_ptr(out) }.to_bytes().to_vec();
        // SAFETY: as above.
        unsafe { (self.free_string)(out) };
        RawOutput { status, json: Some(json), cleared: true }
    }

    /// Calls `describe(&out_json)`.
    pub fn describe(&self) -> RawOutput {
        let mut out: *mut c_char = sentinel();
        // SAFETY: `out` is a valid out-parameter; describe may run any time.
        let status = unsafe { (self.describe)(&mut out) };
        self.take(status, out)
    }

    /// Calls `describe(NULL)` and returns the status.
    pub fn describe_without_out(&self) -> i32 {
        // SAFETY: a NULL out-parameter is a documented input (ERR_INVALID).
        unsafe { (self.describe)(ptr::null_mut()) }
    }

    /// Calls `create(config, &instance, &error)`; `None` passes a NULL
    /// config (which means `{}`).
    pub fn create(&self, config: Option<&[u8]>) -> RawCreated {
        let config = config.map(c_string);
        let mut instance: *mut BextLockingInstance = sentinel();
        let mut out: *mut c_char = sentinel();
        let config_ptr = config.as_ref().map_or(ptr::null(), |c| c.as_ptr().cast());
        // SAFETY: the config is NULL or NUL-terminated and outlives the call;
        // both out-parameters are valid.
        let status = unsafe { (self.create)(config_ptr, &mut instance, &mut out) };
        let output = self.take(status, out);
        let instance_cleared = instance != sentinel();
        let instance = NonNull::new(instance)
            .filter(|_| instance_cleared)
            .map(|instance| RawInstance { plugin: *self, instance });
        RawCreated { output, instance, instance_cleared }
    }

    /// Calls `create` with a NULL `out_instance` (`instance_out: false`) or a
    /// NULL `out_error_json` (`instance_out: true`), and returns the status
    /// and whatever the other out-parameter received (an instance is
    /// destroyed when dropped, a string already freed). The NULL one reads
    /// as cleared and empty.
    pub fn create_with_null_out(&self, config: Option<&[u8]>, instance_out: bool) -> RawCreated {
        let config = config.map(c_string);
        let config_ptr = config.as_ref().map_or(ptr::null(), |c| c.as_ptr().cast());
        let mut instance: *mut BextLockingInstance = sentinel();
        let mut out: *mut c_char = sentinel();
        let (instance_ptr, out_ptr) = if instance_out {
            (&mut instance as *mut _, ptr::null_mut())
        } else {
            (ptr::null_mut(), &mut out as *mut _)
        };
        // SAFETY: the config is NULL or NUL-terminated; each out-parameter is
        // NULL (a documented input) or valid.
        let status = unsafe { (self.create)(config_ptr, instance_ptr, out_ptr) };
        // Nothing to read behind a NULL out-parameter.
        let output = if instance_out {
            RawOutput { status, json: None, cleared: true }
        } else {
            self.take(status, out)
        };
        let instance_cleared = instance != sentinel();
        let instance = NonNull::new(instance)
            .filter(|_| instance_cleared)
            .map(|instance| RawInstance { plugin: *self, instance });
        RawCreated { output, instance, instance_cleared: instance_cleared || !instance_out }
    }

    /// Calls a slot with a NULL instance.
    pub fn call_without_instance(&self, slot: RawSlot, input: Option<&[u8]>) -> RawOutput {
        let input = input.map(c_string);
        let input_ptr = input.as_ref().map_or(ptr::null(), |c| c.as_ptr().cast());
        let mut out: *mut c_char = sentinel();
        // SAFETY: a NULL instance is a documented input (ERR_INVALID); the
        // input is NULL or NUL-terminated; `out` is valid.
        let status = unsafe { (self.slot(slot))(ptr::null_mut(), input_ptr, &mut out) };
        self.take(status, out)
    }

    /// Calls `cleanup(NULL, &out_json)`.
    pub fn cleanup_without_instance(&self) -> RawOutput {
        let mut out: *mut c_char = sentinel();
        // SAFETY: a NULL instance is a documented input; `out` is valid.
        let status = unsafe { (self.cleanup)(ptr::null_mut(), &mut out) };
        self.take(status, out)
    }

    /// Calls `free_string(NULL)`, which must do nothing.
    pub fn free_null(&self) {
        // SAFETY: NULL is a documented no-op.
        unsafe { (self.free_string)(ptr::null_mut()) }
    }
}

/// An instance made by [`RawPlugin::create`]; dropping it calls `destroy`.
pub struct RawInstance {
    plugin: RawPlugin,
    instance: NonNull<BextLockingInstance>,
}

// SAFETY: ABI v1 lets `try_lock`, `renew`, `release` and `cleanup` run on one
// instance from any threads at once; `destroy` runs only in `Drop`, when no
// other reference exists.
unsafe impl Send for RawInstance {}
// SAFETY: see `Send`.
unsafe impl Sync for RawInstance {}

impl std::fmt::Debug for RawInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawInstance").field("instance", &self.instance).finish()
    }
}

impl RawInstance {
    /// Calls `slot(instance, input, &out_json)`; `None` passes a NULL input.
    /// The input is copied with a NUL appended: an interior NUL ends it.
    pub fn call(&self, slot: RawSlot, input: Option<&[u8]>) -> RawOutput {
        let input = input.map(c_string);
        let input_ptr = input.as_ref().map_or(ptr::null(), |c| c.as_ptr().cast());
        let mut out: *mut c_char = sentinel();
        // SAFETY: the instance is live until Drop; the input is NULL or
        // NUL-terminated and outlives the call; `out` is valid.
        let status =
            unsafe { (self.plugin.slot(slot))(self.instance.as_ptr(), input_ptr, &mut out) };
        self.plugin.take(status, out)
    }

    /// Calls `slot(instance, input, NULL)` and returns the status.
    pub fn call_without_out(&self, slot: RawSlot, input: Option<&[u8]>) -> i32 {
        let input = input.map(c_string);
        let input_ptr = input.as_ref().map_or(ptr::null(), |c| c.as_ptr().cast());
        // SAFETY: a NULL out-parameter is a documented input (ERR_INVALID);
        // the instance is live and the input NULL or NUL-terminated.
        unsafe { (self.plugin.slot(slot))(self.instance.as_ptr(), input_ptr, ptr::null_mut()) }
    }

    /// Calls an ABI 1.1 slot `slot(instance, input, &out_json)`; `None`
    /// passes a NULL input. `None` when the plugin has no such slot.
    pub fn call_admin(&self, slot: AdminSlot, input: Option<&[u8]>) -> Option<RawOutput> {
        let f = self.plugin.admin_slot(slot)?;
        let input = input.map(c_string);
        let input_ptr = input.as_ref().map_or(ptr::null(), |c| c.as_ptr().cast());
        let mut out: *mut c_char = sentinel();
        // SAFETY: the instance is live until Drop; the input is NULL or
        // NUL-terminated and outlives the call; `out` is valid.
        let status = unsafe { f(self.instance.as_ptr(), input_ptr, &mut out) };
        Some(self.plugin.take(status, out))
    }

    /// Calls an ABI 1.1 slot with a NULL `out_json`; `None` when absent.
    pub fn call_admin_without_out(&self, slot: AdminSlot, input: Option<&[u8]>) -> Option<i32> {
        let f = self.plugin.admin_slot(slot)?;
        let input = input.map(c_string);
        let input_ptr = input.as_ref().map_or(ptr::null(), |c| c.as_ptr().cast());
        // SAFETY: a NULL out-parameter is a documented input (ERR_INVALID);
        // the instance is live and the input NULL or NUL-terminated.
        Some(unsafe { f(self.instance.as_ptr(), input_ptr, ptr::null_mut()) })
    }

    /// Calls `stats(instance, &out_json)`; `None` when the plugin has none.
    pub fn stats(&self) -> Option<RawOutput> {
        let f = self.plugin.stats?;
        let mut out: *mut c_char = sentinel();
        // SAFETY: live instance, valid out-parameter.
        let status = unsafe { f(self.instance.as_ptr(), &mut out) };
        Some(self.plugin.take(status, out))
    }

    /// Calls `stats(instance, NULL)`; `None` when the plugin has none.
    pub fn stats_without_out(&self) -> Option<i32> {
        let f = self.plugin.stats?;
        // SAFETY: a NULL out-parameter is a documented input (ERR_INVALID).
        Some(unsafe { f(self.instance.as_ptr(), ptr::null_mut()) })
    }

    /// Calls `cleanup(instance, &out_json)`. Later calls must fail with
    /// `BEXT_LOCKING_ERR_BACKEND`, never crash.
    pub fn cleanup(&self) -> RawOutput {
        let mut out: *mut c_char = sentinel();
        // SAFETY: live instance, valid out-parameter.
        let status = unsafe { (self.plugin.cleanup)(self.instance.as_ptr(), &mut out) };
        self.plugin.take(status, out)
    }
}

impl Drop for RawInstance {
    fn drop(&mut self) {
        // SAFETY: the instance came from this plugin's `create` and `&mut
        // self` proves no call is running on it; destroyed exactly once.
        unsafe { (self.plugin.destroy)(self.instance.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use bext_locking_ffi::{
        BEXT_LOCKING_CONTENDED, BEXT_LOCKING_ERR_BACKEND, BEXT_LOCKING_ERR_INVALID,
        BEXT_LOCKING_ERR_PANIC, BEXT_LOCKING_OK,
    };

    use super::*;

    fn plugin(name: &str) -> RawPlugin {
        let loaded =
            bext_locking_loader::load(bext_locking_test_support::plugin_path(name)).expect("load");
        RawPlugin::from_loaded(&loaded)
    }

    fn code(out: &RawOutput) -> String {
        let v: serde_json::Value = serde_json::from_slice(out.json.as_deref().expect("error json"))
            .expect("error json parses");
        v["code"].as_str().expect("code").to_owned()
    }

    #[test]
    fn interior_nul_ends_the_input_and_outputs_are_copied() {
        let memory = plugin("memory");
        let created = memory.create(Some(b"{}\0garbage"));
        assert_eq!(
            created.output,
            RawOutput { status: BEXT_LOCKING_OK, json: None, cleared: true }
        );
        let inst = created.instance.expect("instance");
        let ok = inst.call(RawSlot::TryLock, Some(br#"{"key":"k","ttl_ms":60000}"#));
        assert_eq!(ok.status, BEXT_LOCKING_OK);
        let handle = ok.json.expect("handle");
        let again = inst.call(RawSlot::TryLock, Some(br#"{"key":"k","ttl_ms":60000}"#));
        assert_eq!(again, RawOutput { status: BEXT_LOCKING_CONTENDED, json: None, cleared: true });
        // Everything after the NUL is invisible: the handle is whole.
        let mut with_tail = handle.clone();
        with_tail.extend_from_slice(b"\0\xff trailing");
        let renew = inst.call(RawSlot::Renew, Some(&with_tail));
        assert_eq!(renew.status, BEXT_LOCKING_OK, "{:?}", renew.text());
        // A NUL inside it truncates the JSON: malformed.
        let mut cut = handle.clone();
        cut[5] = 0;
        let bad = inst.call(RawSlot::Release, Some(&cut));
        assert_eq!(bad.status, BEXT_LOCKING_ERR_INVALID);
        assert_eq!(code(&bad), "invalid_argument");
        assert_eq!(inst.call(RawSlot::Release, Some(&handle)).status, BEXT_LOCKING_OK);
        assert_eq!(inst.cleanup().status, BEXT_LOCKING_OK);
        let after = inst.call(RawSlot::TryLock, Some(br#"{"key":"k","ttl_ms":60000}"#));
        assert_eq!(after.status, BEXT_LOCKING_ERR_BACKEND);
        assert_eq!(code(&after), "backend");
    }

    #[test]
    fn null_pointers_are_invalid() {
        let memory = plugin("memory");
        assert_eq!(memory.describe_without_out(), BEXT_LOCKING_ERR_INVALID);
        assert_eq!(memory.describe().status, BEXT_LOCKING_OK);
        memory.free_null();
        for slot in [RawSlot::TryLock, RawSlot::Renew, RawSlot::Release] {
            let out = memory.call_without_instance(slot, Some(b"{}"));
            assert_eq!(out.status, BEXT_LOCKING_ERR_INVALID, "{slot:?}");
            assert_eq!(code(&out), "invalid_argument");
        }
        assert_eq!(memory.cleanup_without_instance().status, BEXT_LOCKING_ERR_INVALID);
        let no_instance = memory.create_with_null_out(Some(b"{}"), false);
        assert_eq!(no_instance.output.status, BEXT_LOCKING_ERR_INVALID);
        assert!(no_instance.output.cleared && no_instance.output.json.is_none());
        let no_error = memory.create_with_null_out(Some(b"{}"), true);
        assert_eq!(
            no_error.output,
            RawOutput { status: BEXT_LOCKING_ERR_INVALID, json: None, cleared: true }
        );
        assert!(no_error.instance.is_none() && no_error.instance_cleared);
        let inst = memory.create(None).instance.expect("NULL config means {}");
        for slot in [RawSlot::TryLock, RawSlot::Renew, RawSlot::Release] {
            assert_eq!(inst.call(slot, None).status, BEXT_LOCKING_ERR_INVALID, "{slot:?}");
            let valid = br#"{"key":"k","lock_id":"x","ttl_ms":1000}"#;
            assert_eq!(inst.call_without_out(slot, Some(valid)), BEXT_LOCKING_ERR_INVALID);
        }
    }

    #[test]
    fn a_caught_panic_is_reported() {
        let panicky = plugin("fixture-panicky");
        let created = panicky.create(Some(br#"{"panic_in_create":true}"#));
        assert_eq!(created.output.status, BEXT_LOCKING_ERR_PANIC);
        assert_eq!(code(&created.output), "panic");
        assert!(created.instance.is_none() && created.instance_cleared);
    }

    #[test]
    fn bad_tables_are_refused() {
        static NULL_SLOT: BextLockingVTable =
            BextLockingVTable { release: None, ..bext_locking_ffi::vtable::<Dummy>() };
        static OLD: BextLockingVTable =
            BextLockingVTable { abi_version: 0, ..bext_locking_ffi::vtable::<Dummy>() };
        // SAFETY: the tables are refused before any slot is called.
        let err = unsafe { RawPlugin::from_vtable(&NULL_SLOT) }.unwrap_err();
        assert!(err.contains("`release`"), "{err}");
        // SAFETY: as above.
        let err = unsafe { RawPlugin::from_vtable(&OLD) }.unwrap_err();
        assert!(err.contains("abi_version is 0"), "{err}");
        let ok = RawPlugin::from_export::<Dummy>();
        assert_eq!(ok.create(Some(b"{}")).output.status, BEXT_LOCKING_ERR_BACKEND);
    }

    /// A backend whose `create` always fails: enough to build tables.
    struct Dummy;

    impl Export for Dummy {
        type Backend = Never;
        const VERSION: &'static CStr = c"0.0.0";
        const DESCRIPTION: &'static str = "never creates an instance";
        const FENCING: bool = false;
    }

    /// An uninhabited backend type.
    enum Never {}

    impl bext_locking_kit::Backend for Never {
        const NAME: &'static CStr = c"dummy";
        type Config = serde_json::Value;
        fn create(_: serde_json::Value) -> Result<Never, bext_locking::PluginError> {
            Err(bext_locking::PluginError::backend("dummy: no instances"))
        }
        fn try_lock(
            &self,
            _: &str,
            _: u64,
        ) -> Result<Option<bext_locking::LockHandle>, bext_locking::PluginError> {
            match *self {}
        }
        fn renew(&self, _: &bext_locking::LockHandle) -> Result<(), bext_locking::PluginError> {
            match *self {}
        }
        fn release(&self, _: &bext_locking::LockHandle) -> Result<(), bext_locking::PluginError> {
            match *self {}
        }
        fn cleanup(&self) {
            match *self {}
        }
    }
}
