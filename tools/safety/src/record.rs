//! What workers write down: one [`Record`] per holding interval, and a
//! [`WorkerSummary`] of every call they made.

use serde::{Deserialize, Serialize};

/// One holding interval, on `CLOCK_MONOTONIC` (which every process on the
/// host shares).
///
/// `start_ns` is taken after `try_lock` returned a handle and `end_ns`
/// before `release` is called, so the interval lies inside the time the
/// backend granted, and a correct lock never lets two of them overlap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The holder's process.
    pub pid: u32,
    /// The holder's thread within its process.
    pub thread: u32,
    /// Just before `try_lock` was called: the lease cannot have started
    /// earlier, so it lasts at least until about `call_ns + ttl`.
    pub call_ns: u64,
    /// When the holder knew it held the lock.
    pub start_ns: u64,
    /// When the holder stopped acting as the holder.
    pub end_ns: u64,
    /// The TTL it asked for.
    pub ttl_ms: u64,
    /// The handle's fence, if it had one.
    pub fence: Option<u64>,
    /// Writes the fenced storage refused (a correct holder within its lease
    /// has none).
    #[serde(default)]
    pub rejected_writes: u32,
    /// The holder that was frozen past its TTL on purpose.
    #[serde(default)]
    pub stalled: bool,
}

impl Record {
    /// The latest time at which the lock is still promised to this holder:
    /// `call_ns + ttl`, less the most any backend subtracts for clock drift
    /// (Redlock's 1 % + 2 ms), so the check never blames a backend for an
    /// overlap that begins after a lease it may have ended.
    pub fn lease_end_ns(&self) -> u64 {
        let ttl_ns = self.ttl_ms.saturating_mul(1_000_000);
        let drift_ns = ttl_ns / 100 + 2_000_000;
        self.call_ns.saturating_add(ttl_ns.saturating_sub(drift_ns))
    }

    /// Whether the holder kept acting after its lease could have ended
    /// (a frozen holder, or a thread descheduled for longer than the TTL).
    pub fn overran(&self) -> bool {
        self.end_ns > self.lease_end_ns()
    }

    /// The part of the interval the lock is responsible for.
    pub fn guaranteed_end_ns(&self) -> u64 {
        self.end_ns.min(self.lease_end_ns())
    }
}

/// What one worker process did, printed as its last stdout line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSummary {
    /// `try_lock` calls.
    pub operations: u64,
    /// `Ok(Some)` answers: holding intervals.
    pub acquired: u64,
    /// `Ok(None)` answers (someone else held the key): not errors.
    pub contended: u64,
    /// `Err` answers from `try_lock` or `release`.
    pub errors: u64,
    /// A few distinct error messages.
    pub error_samples: Vec<String>,
}

/// Distinct error messages kept per summary.
const SAMPLES: usize = 3;

impl WorkerSummary {
    /// Counts an error and keeps its message if it is new (ignoring digits,
    /// so ports and timings do not make every message distinct).
    pub fn error(&mut self, message: String) {
        self.errors += 1;
        self.sample(message);
    }

    fn sample(&mut self, mut message: String) {
        if self.error_samples.len() >= SAMPLES {
            return;
        }
        let shape = |m: &str| m.chars().filter(|c| !c.is_ascii_digit()).collect::<String>();
        if self.error_samples.iter().any(|s| shape(s) == shape(&message)) {
            return;
        }
        if message.len() > 240 {
            let mut cut = 240;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        self.error_samples.push(message);
    }

    /// Adds another summary's counts.
    pub fn add(&mut self, other: &WorkerSummary) {
        self.operations += other.operations;
        self.acquired += other.acquired;
        self.contended += other.contended;
        self.errors += other.errors;
        for s in &other.error_samples {
            self.sample(s.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_end_allows_for_drift() {
        let r = Record {
            pid: 1,
            thread: 0,
            call_ns: 1_000_000_000,
            start_ns: 1_001_000_000,
            end_ns: 1_002_000_000,
            ttl_ms: 500,
            fence: None,
            rejected_writes: 0,
            stalled: false,
        };
        assert_eq!(r.lease_end_ns(), 1_000_000_000 + 500_000_000 - 5_000_000 - 2_000_000);
        assert!(!r.overran());
        let late = Record { end_ns: 2_000_000_000, ..r.clone() };
        assert!(late.overran());
        assert_eq!(late.guaranteed_end_ns(), r.lease_end_ns());
    }

    #[test]
    fn error_samples_are_few_and_distinct() {
        let mut s = WorkerSummary::default();
        s.error("connect to 127.0.0.1:4001 refused".into());
        s.error("connect to 127.0.0.1:4002 refused".into());
        s.error("timeout".into());
        s.error("x".repeat(1000));
        s.error("one more".into());
        assert_eq!(s.errors, 5);
        assert_eq!(s.error_samples.len(), 3);
        assert!(s.error_samples[2].len() < 300);
    }
}
