//! The one place a vtable is validated, and the checked slots it yields.

use std::ffi::c_char;

use std::mem::{offset_of, size_of};

use bext_locking_ffi::{
    BEXT_LOCKING_ABI_VERSION, BEXT_LOCKING_VTABLE_V1_1_SIZE, BEXT_LOCKING_VTABLE_V1_2_SIZE,
    BEXT_LOCKING_VTABLE_V1_SIZE, BextLockingInstance, BextLockingVTable,
};

use crate::error::LoadErrorKind;

/// `describe(out_json)`.
pub type DescribeFn = unsafe extern "C" fn(*mut *mut c_char) -> i32;
/// `create(config_json, out_instance, out_error_json)`.
pub type CreateFn =
    unsafe extern "C" fn(*const c_char, *mut *mut BextLockingInstance, *mut *mut c_char) -> i32;
/// `try_lock`, `renew`, `release`, `inspect` and `force_release`:
/// `(instance, input_json, out_json)`.
pub type CallFn =
    unsafe extern "C" fn(*mut BextLockingInstance, *const c_char, *mut *mut c_char) -> i32;
/// `cleanup(instance, out_json)`, and `stats(instance, out_json)`.
pub type CleanupFn = unsafe extern "C" fn(*mut BextLockingInstance, *mut *mut c_char) -> i32;
/// (1.2) `lock_wait(instance, request_json, out_json, out_sent_ago_us)`.
pub type WaitFn = unsafe extern "C" fn(
    *mut BextLockingInstance,
    *const c_char,
    *mut *mut c_char,
    *mut u64,
) -> i32;
/// `destroy(instance)`.
pub type DestroyFn = unsafe extern "C" fn(*mut BextLockingInstance);
/// `free_string(s)`.
pub type FreeFn = unsafe extern "C" fn(*mut c_char);

/// The slots of a vtable that passed [`Slots::check`]: version, size and
/// every mandatory field checked once, at load, so no call checks a slot
/// pointer again.
#[derive(Clone, Copy)]
pub struct Slots {
    /// `describe`.
    pub describe: DescribeFn,
    /// `create`.
    pub create: CreateFn,
    /// `try_lock`.
    pub try_lock: CallFn,
    /// `renew`.
    pub renew: CallFn,
    /// `release`.
    pub release: CallFn,
    /// `cleanup`.
    pub cleanup: CleanupFn,
    /// `destroy`.
    pub destroy: DestroyFn,
    /// `free_string`.
    pub free_string: FreeFn,
    /// (1.1) `inspect`, when the vtable has it: `None` for a 1.0 plugin.
    pub inspect: Option<CallFn>,
    /// (1.1) `force_release`, when the vtable has it.
    pub force_release: Option<CallFn>,
    /// (1.1) `stats`, when the vtable has it.
    pub stats: Option<CleanupFn>,
    /// (1.2) `lock_wait`, when the vtable has it.
    pub lock_wait: Option<WaitFn>,
    /// (1.2) `cancel_wait`, when the vtable has it.
    pub cancel_wait: Option<CallFn>,
    /// (1.2) `renew_for`, when the vtable has it.
    pub renew_for: Option<CallFn>,
    /// The vtable's `struct_size`.
    pub struct_size: u32,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots").finish_non_exhaustive()
    }
}

/// The optional slots, by the name the ABI gives them.
pub const OPTIONAL_SLOTS: [&str; 6] =
    ["inspect", "force_release", "stats", "lock_wait", "cancel_wait", "renew_for"];

impl Slots {
    /// Validates a vtable as ABI v1 requires of a host: refuses another
    /// `abi_version`, a `struct_size` smaller than v1's, and any NULL
    /// mandatory field (the `name` and `version` strings included). The
    /// slots of later revisions are read only when `struct_size` covers
    /// them.
    ///
    /// Reading the fields is safe; calling the slots is what trusts the
    /// plugin, and that trust is placed when its library is loaded.
    pub fn check(v: &BextLockingVTable) -> Result<Self, LoadErrorKind> {
        // SAFETY: a reference to the full struct is readable in full.
        unsafe { Self::check_raw(v) }
    }

    /// [`check`](Self::check) for a table that may be shorter than this
    /// crate's `BextLockingVTable` (a 1.0 plugin's): nothing past its
    /// `struct_size` is read.
    ///
    /// # Safety
    /// `v` must point to a readable vtable whose first `struct_size` bytes
    /// (at least its `struct_size` and `abi_version`) are valid, as
    /// `bext_locking_plugin_entry` promises.
    pub unsafe fn check_raw(v: *const BextLockingVTable) -> Result<Self, LoadErrorKind> {
        // SAFETY (every read below): the caller promises the table is
        // readable up to `struct_size`; each field is read by its own
        // place, without a reference to the whole struct, and only once
        // `struct_size` is known to cover it.
        let (abi_version, struct_size) =
            unsafe { ((&raw const (*v).abi_version).read(), (&raw const (*v).struct_size).read()) };
        if abi_version != BEXT_LOCKING_ABI_VERSION {
            return Err(LoadErrorKind::AbiMismatch { found: abi_version });
        }
        if struct_size < BEXT_LOCKING_VTABLE_V1_SIZE {
            return Err(LoadErrorKind::VTableTooSmall { found: struct_size });
        }
        // SAFETY: see above; the 1.0 fields are covered by the check just made.
        let (name, version) =
            unsafe { ((&raw const (*v).name).read(), (&raw const (*v).version).read()) };
        if name.is_null() {
            return Err(LoadErrorKind::NullField("name"));
        }
        if version.is_null() {
            return Err(LoadErrorKind::NullField("version"));
        }
        fn slot<T>(f: Option<T>, name: &'static str) -> Result<T, LoadErrorKind> {
            f.ok_or(LoadErrorKind::NullField(name))
        }
        let covers = |offset: usize| struct_size as usize >= offset + size_of::<usize>();
        // SAFETY: see above; all 1.0 fields are covered.
        let mandatory = unsafe {
            Self {
                describe: slot((&raw const (*v).describe).read(), "describe")?,
                create: slot((&raw const (*v).create).read(), "create")?,
                try_lock: slot((&raw const (*v).try_lock).read(), "try_lock")?,
                renew: slot((&raw const (*v).renew).read(), "renew")?,
                release: slot((&raw const (*v).release).read(), "release")?,
                cleanup: slot((&raw const (*v).cleanup).read(), "cleanup")?,
                destroy: slot((&raw const (*v).destroy).read(), "destroy")?,
                free_string: slot((&raw const (*v).free_string).read(), "free_string")?,
                inspect: None,
                force_release: None,
                stats: None,
                lock_wait: None,
                cancel_wait: None,
                renew_for: None,
                struct_size,
            }
        };
        // SAFETY: see above; each read is guarded by `covers`.
        unsafe {
            Ok(Self {
                inspect: if covers(offset_of!(BextLockingVTable, inspect)) {
                    (&raw const (*v).inspect).read()
                } else {
                    None
                },
                force_release: if covers(offset_of!(BextLockingVTable, force_release)) {
                    (&raw const (*v).force_release).read()
                } else {
                    None
                },
                stats: if covers(offset_of!(BextLockingVTable, stats)) {
                    (&raw const (*v).stats).read()
                } else {
                    None
                },
                lock_wait: if covers(offset_of!(BextLockingVTable, lock_wait)) {
                    (&raw const (*v).lock_wait).read()
                } else {
                    None
                },
                cancel_wait: if covers(offset_of!(BextLockingVTable, cancel_wait)) {
                    (&raw const (*v).cancel_wait).read()
                } else {
                    None
                },
                renew_for: if covers(offset_of!(BextLockingVTable, renew_for)) {
                    (&raw const (*v).renew_for).read()
                } else {
                    None
                },
                ..mandatory
            })
        }
    }

    /// The ABI revision the table's size covers: 2 when it has room for
    /// every 1.2 slot, 1 for every 1.1 slot, 0 for a 1.0 table.
    pub fn abi_minor(&self) -> u32 {
        if self.struct_size >= BEXT_LOCKING_VTABLE_V1_2_SIZE {
            2
        } else {
            u32::from(self.struct_size >= BEXT_LOCKING_VTABLE_V1_1_SIZE)
        }
    }

    /// Whether the optional slot `name` (`"inspect"`, `"force_release"`,
    /// `"stats"`) is there to call; the 1.0 slots always are.
    pub fn has_slot(&self, name: &str) -> bool {
        match name {
            "inspect" => self.inspect.is_some(),
            "force_release" => self.force_release.is_some(),
            "stats" => self.stats.is_some(),
            "lock_wait" => self.lock_wait.is_some(),
            "cancel_wait" => self.cancel_wait.is_some(),
            "renew_for" => self.renew_for.is_some(),
            "describe" | "create" | "try_lock" | "renew" | "release" | "cleanup" | "destroy"
            | "free_string" => true,
            _ => false,
        }
    }
}
