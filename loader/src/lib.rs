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

#![deny(missing_docs)]

mod error;
mod instance;
mod library;

pub use error::{LoadError, LoadErrorKind};
pub use instance::FfiPlugin;
pub use library::{Description, LoadedPlugin, load};
