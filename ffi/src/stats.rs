//! The statistics of one instance, counted at the boundary.
//!
//! Counting here, in the slots every backend shares, gives every backend
//! and every host the same numbers for the same calls, and keeps the
//! backends free of bookkeeping. Each count is one relaxed atomic add: the
//! counters are independent, and a snapshot taken while calls run may be
//! off by the calls in flight (the ABI says so).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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

/// One latency histogram.
struct Histogram([AtomicU64; STATS_BUCKETS]);

impl Histogram {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    fn record(&self, took: Duration) {
        // In u64: `as_nanos` is a u128, and its division is a library call.
        let micros = took
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(took.subsec_nanos().div_ceil(1000)));
        self.0[bucket_of(micros)].fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> Vec<u64> {
        self.0.iter().map(|c| c.load(Relaxed)).collect()
    }
}

/// The counters of one instance, from `create` on.
pub(crate) struct Counters {
    acquired: AtomicU64,
    contended: AtomicU64,
    renewed: AtomicU64,
    renew_failures: AtomicU64,
    released: AtomicU64,
    force_released: AtomicU64,
    /// By status: -1 backend, -2 invalid_argument, -3 panic, -4 unsupported.
    errors: [AtomicU64; 4],
    try_lock: Histogram,
    renew: Histogram,
    release: Histogram,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            acquired: AtomicU64::new(0),
            contended: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            renew_failures: AtomicU64::new(0),
            released: AtomicU64::new(0),
            force_released: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            try_lock: Histogram::new(),
            renew: Histogram::new(),
            release: Histogram::new(),
        }
    }

    /// Counts one answered call of `call` with `status`, which took `took`.
    pub(crate) fn record(&self, call: Call, status: i32, took: Duration) {
        if status < 0 {
            // A status this layer does not produce cannot occur; clamp it
            // into the backend column rather than lose it.
            let column = usize::try_from(-i64::from(status) - 1).unwrap_or(0).min(3);
            self.errors[column].fetch_add(1, Relaxed);
        }
        match call {
            Call::TryLock => {
                match status {
                    BEXT_LOCKING_OK => self.acquired.fetch_add(1, Relaxed),
                    BEXT_LOCKING_CONTENDED => self.contended.fetch_add(1, Relaxed),
                    _ => 0,
                };
                self.try_lock.record(took);
            }
            Call::Renew => {
                let counter =
                    if status == BEXT_LOCKING_OK { &self.renewed } else { &self.renew_failures };
                counter.fetch_add(1, Relaxed);
                self.renew.record(took);
            }
            Call::Release => {
                if status == BEXT_LOCKING_OK {
                    self.released.fetch_add(1, Relaxed);
                }
                self.release.record(took);
            }
            Call::ForceRelease => {}
        }
    }

    /// Counts a `force_release` that broke a lock.
    pub(crate) fn broke_one(&self) {
        self.force_released.fetch_add(1, Relaxed);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> Stats {
        let e = |i: usize| self.errors[i].load(Relaxed);
        Stats {
            acquired: self.acquired.load(Relaxed),
            contended: self.contended.load(Relaxed),
            errors: ErrorCounts {
                backend: e(0),
                invalid_argument: e(1),
                panic: e(2),
                unsupported: e(3),
            },
            renewed: self.renewed.load(Relaxed),
            renew_failures: self.renew_failures.load(Relaxed),
            released: self.released.load(Relaxed),
            force_released: self.force_released.load(Relaxed),
            latency_us: Latencies {
                bounds: bext_locking::STATS_BUCKET_BOUNDS_US.to_vec(),
                try_lock: self.try_lock.snapshot(),
                renew: self.renew.snapshot(),
                release: self.release.snapshot(),
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
        let us = Duration::from_micros;
        c.record(Call::TryLock, BEXT_LOCKING_OK, us(1));
        c.record(Call::TryLock, BEXT_LOCKING_CONTENDED, us(3));
        c.record(Call::TryLock, BEXT_LOCKING_ERR_INVALID, Duration::from_nanos(1001));
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
        // 1 µs is bucket 0 (<= 1), 3 µs bucket 2 (<= 5), 1.001 µs rounds up into bucket 1.
        assert_eq!(&s.latency_us.try_lock[..3], &[1, 1, 1]);
        assert_eq!(s.latency_us.renew[STATS_BUCKETS - 1], 1);
        assert_eq!(s.latency_us.renew[3], 1);
        assert_eq!(s.latency_us.release[0], 2);
        assert_eq!(s.latency_us.try_lock.iter().sum::<u64>(), 3);
    }
}
