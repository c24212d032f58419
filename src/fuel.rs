//! Fuel budgets for hosts that run plugins in a metering sandbox.
//!
//! A host that executes plugins under an instruction budget (a WebAssembly
//! runtime, for instance) grants each call at most this much fuel. Native
//! hosts ignore them. The values are part of ABI v1.

/// Fuel for one `try_lock` call.
pub const TRY_LOCK: u64 = 50_000_000;
/// Fuel for one `renew` call.
pub const RENEW: u64 = 50_000_000;
/// Fuel for one `release` call.
pub const RELEASE: u64 = 50_000_000;
/// Fuel for one `cleanup` call; larger because it may close many connections.
pub const CLEANUP: u64 = 100_000_000;
