//! What ABI 1.1 adds beside the lock calls: who holds a key, breaking a
//! stuck lock, and the statistics of an instance.
//!
//! These are the typed forms of the JSON the `inspect`, `force_release` and
//! `stats` slots exchange (see `docs/ABI.md`), shared by the backend kit,
//! the ffi layer and the loader so all three read and write the same thing.

use serde::{Deserialize, Serialize};

use crate::{LockHandle, LockingPlugin, PluginError};

/// ABI 1.1's calls, beside the seed [`LockingPlugin`] trait (which stays
/// as it is): implemented by the loader's instances (through the `.so`)
/// and by the backend kit's in-process wrapper, and used by the
/// conformance suite and the CLI.
///
/// A call the plugin cannot serve (a 1.0 plugin has none of these slots; a
/// backend mode may refuse one) is an error of kind
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) saying why.
pub trait LockAdmin: LockingPlugin {
    /// What the plugin lists in `describe`'s `capabilities` (`"owner"`,
    /// `"inspect"`, `"force_release"`, `"stats"`); empty for a 1.0 plugin.
    fn capabilities(&self) -> Vec<String>;

    /// `try_lock` recording `owner` (at most [`MAX_OWNER_BYTES`]) for
    /// [`inspect`](Self::inspect); `None` sends none.
    fn try_lock_as(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError>;

    /// Who holds `key`, by the backend's clock; never the `lock_id`.
    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError>;

    /// Breaks the lock on `key` (only at fence `if_fence`, when given).
    fn force_release(&self, key: &str, if_fence: Option<u64>)
    -> Result<ForceReleased, PluginError>;

    /// The instance's statistics since it was created.
    fn stats(&self) -> Result<Stats, PluginError>;
}

impl<T: LockAdmin + ?Sized> LockAdmin for Box<T> {
    fn capabilities(&self) -> Vec<String> {
        (**self).capabilities()
    }
    fn try_lock_as(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        (**self).try_lock_as(key, ttl_ms, owner)
    }
    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        (**self).inspect(key)
    }
    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        (**self).force_release(key, if_fence)
    }
    fn stats(&self) -> Result<Stats, PluginError> {
        (**self).stats()
    }
}

/// The longest `owner` a `try_lock` request may carry, in bytes of UTF-8.
pub const MAX_OWNER_BYTES: usize = 256;

/// Checks an `owner`: at most [`MAX_OWNER_BYTES`] bytes. (A `&str` is
/// UTF-8 already; the ffi layer reports bytes that are not as an error
/// naming `owner` before it gets here.)
pub fn validate_owner(owner: &str) -> Result<(), String> {
    if owner.len() > MAX_OWNER_BYTES {
        return Err(format!(
            "owner is {} bytes; an owner is at most {MAX_OWNER_BYTES} bytes of UTF-8",
            owner.len()
        ));
    }
    Ok(())
}

/// What `inspect` says about a key, by the backend's clock.
///
/// It never holds the lock's `lock_id`: that token is the right to renew
/// and release, and whoever can look must not be able to release.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockInfo {
    /// The key asked about.
    pub key: String,
    /// Whether some holder's lease is running now.
    pub held: bool,
    /// The holder's fence, when the backend fences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
    /// The holder's `owner`, as it gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// How long the lease still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
    /// How long ago the holder acquired the lock (renewals do not reset it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_for_ms: Option<u64>,
}

impl LockInfo {
    /// A key nobody holds.
    pub fn free(key: &str) -> Self {
        Self { key: key.to_owned(), ..Self::default() }
    }
}

/// What `force_release` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ForceReleased {
    /// Whether a lock was broken.
    pub released: bool,
    /// The fence of the holder that was broken, when the backend fences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
}

/// The fixed upper bounds of the latency buckets, in microseconds. Each
/// histogram has one count per bound plus one for slower calls (+Inf).
pub const STATS_BUCKET_BOUNDS_US: [u64; 21] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    200_000, 500_000, 1_000_000, 2_000_000, 5_000_000,
];

/// How many counts a histogram holds: one per bound, plus +Inf.
pub const STATS_BUCKETS: usize = STATS_BUCKET_BOUNDS_US.len() + 1;

/// The index of the bucket a call of `micros` µs counts in: the first
/// whose bound is at least `micros`, or the last (+Inf).
///
/// Every plugin runs this twice per pair of calls, so it is a table lookup
/// by the number's bit length and one comparison rather than a search:
/// consecutive bounds are at least 2× apart, so the values of one bit
/// length, `[2^(n-1), 2^n)`, span at most one bound.
pub fn bucket_of(micros: u64) -> usize {
    let bits = (u64::BITS - micros.leading_zeros()) as usize;
    let first = FIRST_BUCKET_BY_BITS[bits];
    match STATS_BUCKET_BOUNDS_US.get(first) {
        Some(&bound) if bound < micros => first + 1,
        _ => first,
    }
}

/// For each bit length `n`, the first bucket whose bound is at least the
/// smallest number of that length (`2^(n-1)`, or 0 for `n = 0`).
const FIRST_BUCKET_BY_BITS: [usize; 65] = {
    let mut table = [0; 65];
    let mut bits = 0;
    while bits <= 64 {
        let smallest: u64 = if bits == 0 { 0 } else { 1 << (bits - 1) };
        let mut i = 0;
        while i < STATS_BUCKET_BOUNDS_US.len() && STATS_BUCKET_BOUNDS_US[i] < smallest {
            i += 1;
        }
        table[bits] = i;
        bits += 1;
    }
    table
};

// The lookup above relies on each bound being at least twice the one before.
const _: () = {
    let mut i = 1;
    while i < STATS_BUCKET_BOUNDS_US.len() {
        assert!(STATS_BUCKET_BOUNDS_US[i] >= 2 * STATS_BUCKET_BOUNDS_US[i - 1]);
        i += 1;
    }
};

/// Failed calls by their error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// `BEXT_LOCKING_ERR_INVALID`.
    #[serde(default)]
    pub invalid_argument: u64,
    /// `BEXT_LOCKING_ERR_BACKEND`.
    #[serde(default)]
    pub backend: u64,
    /// `BEXT_LOCKING_ERR_PANIC`.
    #[serde(default)]
    pub panic: u64,
    /// `BEXT_LOCKING_ERR_UNSUPPORTED`.
    #[serde(default)]
    pub unsupported: u64,
}

/// Latency histograms of the three lock calls, with their bucket bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latencies {
    /// The upper bounds in microseconds; [`STATS_BUCKET_BOUNDS_US`] for
    /// the project's plugins.
    pub bounds: Vec<u64>,
    /// `try_lock`: one count per bound, then +Inf; not cumulative.
    pub try_lock: Vec<u64>,
    /// `renew`, as `try_lock`.
    pub renew: Vec<u64>,
    /// `release`, as `try_lock`.
    pub release: Vec<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            bounds: STATS_BUCKET_BOUNDS_US.to_vec(),
            try_lock: vec![0; STATS_BUCKETS],
            renew: vec![0; STATS_BUCKETS],
            release: vec![0; STATS_BUCKETS],
        }
    }
}

/// What `stats` counts for one instance since `create`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// `try_lock` calls answered OK.
    pub acquired: u64,
    /// `try_lock` calls answered `BEXT_LOCKING_CONTENDED`.
    pub contended: u64,
    /// `try_lock`, `renew`, `release` and `force_release` calls answered
    /// with an error, by code.
    pub errors: ErrorCounts,
    /// `renew` calls answered OK.
    pub renewed: u64,
    /// `renew` calls answered with an error (also counted in `errors`).
    pub renew_failures: u64,
    /// `release` calls answered OK.
    pub released: u64,
    /// `force_release` calls that broke a lock.
    pub force_released: u64,
    /// Time spent in each call.
    pub latency_us: Latencies,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_limited_in_bytes() {
        assert!(validate_owner("").is_ok());
        assert!(validate_owner(&"o".repeat(MAX_OWNER_BYTES)).is_ok());
        let e = validate_owner(&"€".repeat(86)).unwrap_err();
        assert!(e.starts_with("owner is 258 bytes"), "{e}");
    }

    #[test]
    fn the_bucket_lookup_agrees_with_a_search() {
        let search = |m: u64| STATS_BUCKET_BOUNDS_US.partition_point(|&b| b < m);
        let mut probes: Vec<u64> = (0..=12_000).collect();
        for &b in &STATS_BUCKET_BOUNDS_US {
            probes.extend([b - 1, b, b + 1]);
        }
        for bits in 0..64 {
            probes.extend([(1u64 << bits) - 1, 1 << bits, (1 << bits) + 1]);
        }
        probes.push(u64::MAX);
        for m in probes {
            assert_eq!(bucket_of(m), search(m), "{m} µs");
        }
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(5_000_000), STATS_BUCKETS - 2);
        assert_eq!(bucket_of(5_000_001), STATS_BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), STATS_BUCKETS - 1);
    }

    #[test]
    fn info_omits_what_is_unknown() {
        let free = serde_json::to_string(&LockInfo::free("k")).unwrap();
        assert_eq!(free, r#"{"key":"k","held":false}"#);
        let json =
            r#"{"key":"k","held":true,"fence":3,"owner":"o","expires_in_ms":5,"held_for_ms":1}"#;
        let info: LockInfo = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&info).unwrap(), json);
        assert_eq!(
            serde_json::to_string(&ForceReleased { released: false, fence: None }).unwrap(),
            r#"{"released":false}"#
        );
    }
}
