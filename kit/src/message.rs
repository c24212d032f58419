//! The texts every backend says the same way.
//!
//! Hosts and docs quote them ("no longer held by this handle" is what a
//! lost lock looks like in any backend's log), so they are written once.

/// The state of an instance after `cleanup`: every later call fails with
/// this (a backend error).
pub const CLOSED: &str = "this instance was cleaned up";

/// `renew` of a lock that expired, was released or was taken over.
pub fn not_held(key: &str) -> String {
    lost(key, "expired, released or taken over")
}

/// `renew` of a lock that is gone, with the backend's own reason.
pub fn lost(key: &str, why: &str) -> String {
    format!("lock on `{key}` is no longer held by this handle ({why})")
}

/// All `cap` pooled connections stayed busy until the call's deadline.
pub fn pool_exhausted(cap: usize) -> String {
    format!("all {cap} pooled connections stayed busy until the deadline")
}
