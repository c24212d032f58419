//! Loads bext-locking plugins and hands them out as `Box<dyn LockingPlugin>`.
//!
//! ```no_run
//! let plugin = bext_locking_loader::load("target/release/libbext_locking_memory.so")?;
//! let locks = plugin.create("{}")?;
//! if let Some(handle) = locks.try_lock("jobs/nightly", 30_000)? {
//!     // ... run the job ...
//!     locks.release(handle)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Libraries are opened with `RTLD_NOW | RTLD_LOCAL` and never closed: a
//! Rust cdylib with live thread-local destructors cannot be unmapped safely,
//! and every instance keeps pointers into its library's code.
//!
//! [`FfiPlugin`] is a `LockingPlugin` and also offers every call with a
//! typed error ([`FfiPlugin::try_lock_typed`]), whose
//! [`kind`](bext_locking::PluginError::kind) tells a refused request from a
//! failed backend.
//!
//! A host with a folder of plugins uses [`scan`] (load them all once, with a
//! report of what was skipped and why) or a [`Registry`] (instances by
//! plugin name, following the folder as files are added, replaced and
//! removed). Both load each file from a private copy and refuse files that
//! others than root or this user could have written; `docs/LOADER.md` tells
//! the whole story.

#![deny(missing_docs)]

mod error;
mod instance;
mod library;
mod owner;
mod private_copy;
mod registry;
mod report;
mod scan;
mod security;
mod vtable;

pub use error::{LoadError, LoadErrorKind};
pub use instance::FfiPlugin;
pub use library::{Description, LoadedPlugin, load};
pub use owner::default_owner;
pub use registry::{Registry, RegistryEvent, RegistryOptions};
pub use report::{ScanReport, ScannedPlugin, SkipKind, Skipped};
pub use scan::{ScanOptions, scan};
pub use vtable::{
    CallFn, CleanupFn, CreateFn, DescribeFn, DestroyFn, FreeFn, OPTIONAL_SLOTS, Slots,
};
