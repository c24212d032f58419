//! What a backend provides to be exported, and the macros that export it.

use std::ffi::CStr;

use bext_locking::ClockDrift;
use bext_locking_kit::Backend;

use crate::abi::*;

/// Everything `describe` and the vtable say about a backend beyond its
/// [`Backend`] implementation.
///
/// Implement it on a unit struct in the backend crate and pass that struct to
/// [`export_locking_plugin!`](crate::export_locking_plugin). The name comes
/// from [`Backend::NAME`], the config schema from [`Backend::Config`].
pub trait Export: 'static {
    /// The backend that `create` builds.
    type Backend: Backend;
    /// The vtable's `name`; [`Backend::NAME`] unless overridden.
    const NAME: &'static CStr = <Self::Backend as Backend>::NAME;
    /// The vtable's `version`: usually the crate version,
    /// [`crate_version_cstr!()`](crate::crate_version_cstr).
    const VERSION: &'static CStr;
    /// One sentence for `describe`.
    const DESCRIPTION: &'static str;
    /// Whether the default configuration hands out fences.
    const FENCING: bool;
    /// The clock-drift allowance `describe` states (its `clock_drift`
    /// field). `None` (the default) leaves the field out, and hosts use
    /// [`ClockDrift::REDLOCK`]: right for any backend that expires leases on
    /// a server's clock. State less only when leases expire on the holder's
    /// own clock or one that runs at its rate.
    const CLOCK_DRIFT: Option<ClockDrift> = None;
}

/// The body of `bext_locking_plugin_entry`: the table for ABI v1 hosts, NULL
/// for any other version (a host refuses a table of another major version
/// anyway, so answering NULL tells it early).
#[doc(hidden)]
pub fn entry(table: &'static BextLockingVTable, host_abi_version: u32) -> *const BextLockingVTable {
    if host_abi_version == BEXT_LOCKING_ABI_VERSION { table } else { std::ptr::null() }
}

/// Exports a backend as a bext-locking plugin.
///
/// ```ignore
/// struct Exported;
/// impl bext_locking_ffi::Export for Exported { /* ... */ }
/// bext_locking_ffi::export_locking_plugin!(Exported);
/// ```
///
/// Emits the static vtable and the `bext_locking_plugin_entry` symbol. Use it
/// once per `cdylib`.
#[macro_export]
macro_rules! export_locking_plugin {
    ($export:ty) => {
        static BEXT_LOCKING_VTABLE: $crate::BextLockingVTable = $crate::vtable::<$export>();

        /// The plugin's entry point (ABI v1): returns the static vtable for
        /// host ABI 1, NULL otherwise.
        #[unsafe(no_mangle)]
        pub extern "C" fn bext_locking_plugin_entry(
            host_abi_version: u32,
        ) -> *const $crate::BextLockingVTable {
            $crate::export::entry(&BEXT_LOCKING_VTABLE, host_abi_version)
        }
    };
}

/// The calling crate's `CARGO_PKG_VERSION` as a `&'static CStr`, built at
/// compile time: the usual [`Export::VERSION`].
///
/// ```
/// const VERSION: &std::ffi::CStr = bext_locking_ffi::crate_version_cstr!();
/// assert_eq!(VERSION.to_str(), Ok(env!("CARGO_PKG_VERSION")));
/// ```
#[macro_export]
macro_rules! crate_version_cstr {
    () => {
        const {
            match ::core::ffi::CStr::from_bytes_with_nul(
                ::core::concat!(::core::env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
            ) {
                ::core::result::Result::Ok(version) => version,
                // Cargo rejects such a version long before; fail the build
                // rather than export a wrong one.
                ::core::result::Result::Err(_) => ::core::panic!("CARGO_PKG_VERSION holds a NUL"),
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_the_crate_version_with_a_nul() {
        const VERSION: &std::ffi::CStr = crate::crate_version_cstr!();
        assert_eq!(VERSION.to_str(), Ok(env!("CARGO_PKG_VERSION")));
        assert_eq!(VERSION.to_bytes_with_nul().last(), Some(&0));
    }
}
