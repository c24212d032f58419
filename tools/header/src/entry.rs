//! The entry point, declared for the header.
//!
//! `bext-locking-ffi` cannot declare it: each plugin defines it through
//! `export_locking_plugin!`. cbindgen reads this file next to the ffi crate,
//! and the crate compiles it so that `lib.rs` can check the declaration
//! against `BextLockingEntryFn`.

use bext_locking_ffi::BextLockingVTable;

unsafe extern "C" {
    /// The one symbol every plugin exports. Look it up with
    /// `dlsym(handle, "bext_locking_plugin_entry")` and call it with
    /// `BEXT_LOCKING_ABI_VERSION`.
    ///
    /// Returns the plugin's static vtable, valid for as long as the library
    /// stays loaded (plugins are linked `-z nodelete`, so: for the life of the
    /// process), or NULL when the plugin cannot serve `host_abi_version`.
    /// Idempotent, cheap, and safe to call from any thread. Check the table
    /// before use: `abi_version == BEXT_LOCKING_ABI_VERSION`, `struct_size`
    /// at least the v1 size, and no NULL slot or string
    /// (`hosts/c/bext_locking_host.h` does all of this).
    pub fn bext_locking_plugin_entry(host_abi_version: u32) -> *const BextLockingVTable;
}
