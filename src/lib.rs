//! Pluggable distributed locks.
//!
//! This crate is what every part of bext-locking shares: the [`LockingPlugin`]
//! trait a backend implements, the [`LockHandle`] it hands out, the key and
//! TTL [`limits`] every backend enforces the same way, the typed
//! [`PluginError`] a backend reports, and the [`redact`] helpers that keep
//! passwords out of every message. Backends are compiled into
//! shared libraries by `bext-locking-ffi` and loaded back into a
//! `Box<dyn LockingPlugin>` by `bext-locking-loader`, so a host written
//! against this trait does not care whether a backend is linked in or
//! dlopen'd at deploy time.
//!
//! The one rule that runs through everything: `Ok(None)` from
//! [`LockingPlugin::try_lock`] means *someone else holds the lock* (skip the
//! job), while `Err` means *the backend is broken* (log it, alert, maybe
//! retry). Mixing the two up is how lock libraries either run a job twice or
//! silently stop running it.

#![deny(missing_docs)]

pub mod admin;
mod drift;
mod election;
mod error;
mod exclusive;
mod guard;
mod handle;
pub mod limits;
mod metrics;
mod plugin;
pub mod redact;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod testing_wait;
pub mod wait;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use admin::{
    ErrorCounts, ForceReleased, Latencies, LockAdmin, LockInfo, MAX_OWNER_BYTES,
    STATS_BUCKET_BOUNDS_US, STATS_BUCKETS, Stats, validate_owner,
};
pub use drift::ClockDrift;
pub use election::{Election, Leader, Leadership, Observer};
pub use error::{ErrorKind, PluginError};
pub use exclusive::{
    Finished, LockingHint, RENEW_TTL, RunError, check_min_hold, finish_min_hold, run_exclusive,
    run_exclusive_min_hold, run_exclusive_with,
};
pub use guard::{GuardOptions, LockGuard, LockLost, LossCause, ReleaseError};
pub use handle::LockHandle;
pub use limits::{MAX_KEY_BYTES, MAX_TTL_MS, validate_key, validate_lock_request, validate_ttl};
pub use plugin::LockingPlugin;
pub use wait::{Acquired, CancelHook, LockWait, Wait, WaitMode};

/// The README's Rust code, compiled by `cargo test --doc` (`make examples`)
/// so that what a new user copies keeps building.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
