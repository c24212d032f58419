//! What every bext-locking backend shares, written once.
//!
//! A backend implements [`Backend`]: its config type, how to build an
//! instance from it, and its algorithm (`try_lock`, `renew`, `release`,
//! `cleanup`) with typed errors. Everything around the algorithm lives here:
//!
//! * [`Plugin`] wraps a backend into a [`bext_locking::LockingPlugin`]: it
//!   checks every request against the ABI limits and the backend's own
//!   [`Limits`] (a refusal is [`ErrorKind::InvalidArgument`]), refuses calls
//!   after `cleanup`, and runs the backend's cleanup once. The `.so` slots
//!   of `bext-locking-ffi` call the same wrapper, so a request is checked in
//!   one place whichever way it arrives.
//! * [`message`]: the standard texts (cleaned up, no longer held).
//! * [`config`]: the JSON Schema `describe` lists is derived from the
//!   config type, and `create` checks keys and ranges against that schema,
//!   so the three can never disagree.
//! * [`pool`]: one bounded connection pool whose waits end at a deadline.
//!
//! [`ErrorKind::InvalidArgument`]: bext_locking::ErrorKind::InvalidArgument

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
pub mod config;
pub mod held;
mod limits;
pub mod message;
mod plugin;
pub mod pool;

pub use backend::Backend;
pub use limits::Limits;
pub use plugin::Plugin;

/// Re-exported so backends derive [`schemars::JsonSchema`] on their config
/// with the version the kit reads.
pub use schemars;
