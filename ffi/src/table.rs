//! The static vtable of an exported backend.

use crate::abi::*;
use crate::export::Export;
use crate::slots;

/// Builds the static vtable of `E`. Used by
/// [`export_locking_plugin!`](crate::export_locking_plugin); test fixtures
/// use it with struct-update syntax to build deliberately broken tables.
pub const fn vtable<E: Export>() -> BextLockingVTable {
    BextLockingVTable {
        struct_size: BEXT_LOCKING_VTABLE_V1_2_SIZE,
        abi_version: BEXT_LOCKING_ABI_VERSION,
        name: E::NAME.as_ptr(),
        version: E::VERSION.as_ptr(),
        describe: Some(slots::describe::<E>),
        create: Some(slots::create::<E>),
        try_lock: Some(slots::try_lock::<E>),
        renew: Some(slots::renew::<E>),
        release: Some(slots::release::<E>),
        cleanup: Some(slots::cleanup::<E>),
        destroy: Some(slots::destroy::<E>),
        free_string: Some(slots::free_string),
        inspect: Some(slots::inspect::<E>),
        force_release: Some(slots::force_release::<E>),
        stats: Some(slots::stats::<E>),
        lock_wait: Some(slots::lock_wait::<E>),
        cancel_wait: Some(slots::cancel_wait::<E>),
        renew_for: Some(slots::renew_for::<E>),
    }
}
