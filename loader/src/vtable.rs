//! The one place a vtable is validated, and the checked slots it yields.

use std::ffi::c_char;

use bext_locking_ffi::{
    BEXT_LOCKING_ABI_VERSION, BEXT_LOCKING_VTABLE_V1_SIZE, BextLockingInstance, BextLockingVTable,
};

use crate::error::LoadErrorKind;

/// `describe(out_json)`.
pub type DescribeFn = unsafe extern "C" fn(*mut *mut c_char) -> i32;
/// `create(config_json, out_instance, out_error_json)`.
pub type CreateFn =
    unsafe extern "C" fn(*const c_char, *mut *mut BextLockingInstance, *mut *mut c_char) -> i32;
/// `try_lock`, `renew` and `release`: `(instance, input_json, out_json)`.
pub type CallFn =
    unsafe extern "C" fn(*mut BextLockingInstance, *const c_char, *mut *mut c_char) -> i32;
/// `cleanup(instance, out_json)`.
pub type CleanupFn = unsafe extern "C" fn(*mut BextLockingInstance, *mut *mut c_char) -> i32;
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
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots").finish_non_exhaustive()
    }
}

impl Slots {
    /// Validates a vtable as ABI v1 requires of a host: refuses another
    /// `abi_version`, a `struct_size` smaller than v1's, and any NULL
    /// mandatory field (the `name` and `version` strings included).
    ///
    /// Reading the fields is safe; calling the slots is what trusts the
    /// plugin, and that trust is placed when its library is loaded.
    pub fn check(v: &BextLockingVTable) -> Result<Self, LoadErrorKind> {
        if v.abi_version != BEXT_LOCKING_ABI_VERSION {
            return Err(LoadErrorKind::AbiMismatch { found: v.abi_version });
        }
        if v.struct_size < BEXT_LOCKING_VTABLE_V1_SIZE {
            return Err(LoadErrorKind::VTableTooSmall { found: v.struct_size });
        }
        if v.name.is_null() {
            return Err(LoadErrorKind::NullField("name"));
        }
        if v.version.is_null() {
            return Err(LoadErrorKind::NullField("version"));
        }
        fn slot<T>(f: Option<T>, name: &'static str) -> Result<T, LoadErrorKind> {
            f.ok_or(LoadErrorKind::NullField(name))
        }
        Ok(Self {
            describe: slot(v.describe, "describe")?,
            create: slot(v.create, "create")?,
            try_lock: slot(v.try_lock, "try_lock")?,
            renew: slot(v.renew, "renew")?,
            release: slot(v.release, "release")?,
            cleanup: slot(v.cleanup, "cleanup")?,
            destroy: slot(v.destroy, "destroy")?,
            free_string: slot(v.free_string, "free_string")?,
        })
    }
}
