//! The statistics of one instance, counted at the boundary.
//!
//! Counting here, in the slots every backend shares, gives every backend
//! and every host the same numbers for the same calls, and keeps the
//! backends free of bookkeeping. A counted call costs one relaxed atomic
//! add: each call keeps one latency histogram per outcome (OK, contended,
//! each error code), so the bucket it lands in is also its outcome's count,
//! and the totals (`acquired`, `errors`, the histograms `stats` shows) are
//! sums taken when a snapshot is asked for, which is rare. The counters are
//! independent, and a snapshot taken while calls run may be off by the
//! calls in flight (the ABI says so).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bext_locking::admin::bucket_of;
use bext_locking::{ErrorCounts, Latencies, STATS_BUCKETS, Stats};

use crate::abi::*;

/// The calls that are counted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Call {
    TryLock,
    Renew,
    Release,
    ForceRelease,
}

/// The outcomes a counted call is split by: OK, another non-negative
/// status (contended), then the four error codes, -1 to -4.
const OUTCOMES: usize = 6;
const OK: usize = 0;
const OTHER: usize = 1;
/// The first error column: status -1 (backend); -2 is `ERRORS + 1`, and so on.
const ERRORS: usize = 2;

/// The outcome column of `status`. A status this layer does not produce
/// (below -4) cannot occur; it is clamped into the last error column
/// rather than lost.
fn outcome(status: i32) -> usize {
    match status {
        BEXT_LOCKING_OK => OK,
        s if s > 0 => OTHER,
        s => ERRORS + usize::try_from(-i64::from(s) - 1).unwrap_or(0).min(3),
    }
}

/// One latency histogram.
struct Histogram([AtomicU64; STATS_BUCKETS]);

impl Histogram {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    fn record(&self, micros: u64) {
        self.0[bucket_of(micros)].fetch_add(1, Relaxed);
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Adds this histogram's counts into `into`, bucket by bucket.
    fn add_to(&self, into: &mut [u64]) {
        for (sum, c) in into.iter_mut().zip(&self.0) {
            *sum += c.load(Relaxed);
        }
    }
}

/// One call's histograms, one per outcome.
struct ByOutcome([Histogram; OUTCOMES]);

impl ByOutcome {
    fn new() -> Self {
        Self(std::array::from_fn(|_| Histogram::new()))
    }

    fn count(&self, column: usize) -> u64 {
        self.0[column].total()
    }

    /// Calls answered with any status but OK.
    fn not_ok(&self) -> u64 {
        (OTHER..OUTCOMES).map(|c| self.count(c)).sum()
    }

    /// The latency histogram over every outcome.
    fn latencies(&self) -> Vec<u64> {
        let mut all = vec![0; STATS_BUCKETS];
        for h in &self.0 {
            h.add_to(&mut all);
        }
        all
    }
}

/// The counters of one instance, from `create` on.
pub(crate) struct Counters {
    try_lock: ByOutcome,
    renew: ByOutcome,
    release: ByOutcome,
    /// `force_release` answers with an error, by code; it has no histogram.
    force_errors: [AtomicU64; 4],
    force_released: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            try_lock: ByOutcome::new(),
            renew: ByOutcome::new(),
            release: ByOutcome::new(),
            force_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            force_released: AtomicU64::new(0),
        }
    }

    /// Counts one answered call of `call` with `status`, which took
    /// `micros` (whole microseconds, rounded up).
    pub(crate) fn record(&self, call: Call, status: i32, micros: u64) {
        let column = outcome(status);
        let calls = match call {
            Call::TryLock => &self.try_lock,
            Call::Renew => &self.renew,
            Call::Release => &self.release,
            Call::ForceRelease => {
                if column >= ERRORS {
                    self.force_errors[column - ERRORS].fetch_add(1, Relaxed);
                }
                return;
            }
        };
        calls.0[column].record(micros);
    }

    /// Counts a `force_release` that broke a lock.
    pub(crate) fn broke_one(&self) {
        self.force_released.fetch_add(1, Relaxed);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> Stats {
        let e = |i: usize| {
            [&self.try_lock, &self.renew, &self.release]
                .iter()
                .map(|c| c.count(ERRORS + i))
                .sum::<u64>()
                + self.force_errors[i].load(Relaxed)
        };
        Stats {
            acquired: self.try_lock.count(OK),
            contended: self.try_lock.count(OTHER),
            errors: ErrorCounts {
                backend: e(0),
                invalid_argument: e(1),
                panic: e(2),
                unsupported: e(3),
            },
            renewed: self.renew.count(OK),
            renew_failures: self.renew.not_ok(),
            released: self.release.count(OK),
            force_released: self.force_released.load(Relaxed),
            latency_us: Latencies {
                bounds: bext_locking::STATS_BUCKET_BOUNDS_US.to_vec(),
                try_lock: self.try_lock.latencies(),
                renew: self.renew.latencies(),
                release: self.release.latencies(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_lands_in_its_column() {
        let c = Counters::new();
        let us = |n: u64| n;
        c.record(Call::TryLock, BEXT_LOCKING_OK, us(1));
        c.record(Call::TryLock, BEXT_LOCKING_CONTENDED, us(3));
        c.record(Call::TryLock, BEXT_LOCKING_ERR_INVALID, 2); // 1.001 µs, rounded up
        c.record(Call::Renew, BEXT_LOCKING_OK, us(6_000_000));
        c.record(Call::Renew, BEXT_LOCKING_ERR_BACKEND, us(10));
        c.record(Call::Release, BEXT_LOCKING_OK, us(0));
        c.record(Call::Release, BEXT_LOCKING_ERR_PANIC, us(0));
        c.record(Call::ForceRelease, BEXT_LOCKING_ERR_UNSUPPORTED, us(0));
        c.broke_one();
        let s = c.snapshot();
        assert_eq!((s.acquired, s.contended, s.renewed, s.renew_failures), (1, 1, 1, 1));
        assert_eq!((s.released, s.force_released), (1, 1));
        assert_eq!(
            s.errors,
            ErrorCounts { invalid_argument: 1, backend: 1, panic: 1, unsupported: 1 }
        );
        // 1 µs is bucket 0 (<= 1), 3 µs bucket 2 (<= 5), 1.001 µs (2, rounded up) into bucket 1.
        assert_eq!(&s.latency_us.try_lock[..3], &[1, 1, 1]);
        assert_eq!(s.latency_us.renew[STATS_BUCKETS - 1], 1);
        assert_eq!(s.latency_us.renew[3], 1);
        assert_eq!(s.latency_us.release[0], 2);
        assert_eq!(s.latency_us.try_lock.iter().sum::<u64>(), 3);
    }

    #[test]
    fn outcomes_sum_into_the_totals() {
        let c = Counters::new();
        let us = |n: u64| n;
        for _ in 0..3 {
            c.record(Call::TryLock, BEXT_LOCKING_OK, us(40));
        }
        c.record(Call::TryLock, BEXT_LOCKING_ERR_BACKEND, us(40));
        c.record(Call::Release, BEXT_LOCKING_ERR_BACKEND, us(2));
        c.record(Call::ForceRelease, BEXT_LOCKING_ERR_BACKEND, us(2));
        // A status no slot returns still counts, in the last error column.
        c.record(Call::Renew, -9, us(2));
        c.record(Call::ForceRelease, BEXT_LOCKING_OK, us(2));
        let s = c.snapshot();
        assert_eq!((s.acquired, s.errors.backend, s.errors.unsupported), (3, 3, 1));
        assert_eq!((s.renewed, s.renew_failures, s.released), (0, 1, 0));
        // Every outcome of a call is in its one histogram: 40 µs is bucket 5 (<= 50).
        assert_eq!(s.latency_us.try_lock[5], 4);
        assert_eq!(s.latency_us.release[1], 1);
        assert_eq!(s.latency_us.renew[1], 1);
    }

    #[test]
    fn each_status_has_its_column() {
        assert_eq!(outcome(BEXT_LOCKING_OK), OK);
        assert_eq!(outcome(BEXT_LOCKING_CONTENDED), OTHER);
        assert_eq!(outcome(BEXT_LOCKING_CANCELLED), OTHER);
        assert_eq!(outcome(BEXT_LOCKING_ERR_BACKEND), ERRORS);
        assert_eq!(outcome(BEXT_LOCKING_ERR_INVALID), ERRORS + 1);
        assert_eq!(outcome(BEXT_LOCKING_ERR_PANIC), ERRORS + 2);
        assert_eq!(outcome(BEXT_LOCKING_ERR_UNSUPPORTED), ERRORS + 3);
        assert_eq!(outcome(i32::MIN), ERRORS + 3);
    }
}
