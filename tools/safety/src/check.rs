//! The final check over every holding interval of a run.

use crate::record::Record;

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Intervals checked.
    pub intervals: usize,
    /// Intervals that began before an earlier one's guaranteed part ended.
    pub overlaps: usize,
    /// Fences missing on a fencing backend, not above every earlier
    /// interval's, or refused by the storage within a lease.
    pub fence_violations: usize,
    /// Intervals that ran past their lease (the frozen holder, or a thread
    /// the machine did not schedule for a whole TTL); only their guaranteed
    /// part is held against the lock.
    pub overruns: usize,
    /// Writes refused from holders whose lease had ended: the fence check
    /// doing its job.
    pub stale_writes_rejected: usize,
    /// The first few violations, described.
    pub problems: Vec<String>,
}

impl Verdict {
    /// No overlap and no fence violation.
    pub fn safe(&self) -> bool {
        self.overlaps == 0 && self.fence_violations == 0
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 5 {
            self.problems.push(text);
        }
    }
}

fn show(r: &Record) -> String {
    let fence = r.fence.map_or("none".to_owned(), |f| f.to_string());
    format!(
        "pid {} thread {} held [{} ns, {} ns] (lease from {} ns, ttl {} ms) fence {fence}",
        r.pid, r.thread, r.start_ns, r.end_ns, r.call_ns, r.ttl_ms
    )
}

/// Proves that no two intervals overlap and, when `fencing`, that every
/// interval carries a fence above those of all intervals before it, and
/// that the storage refused no write made within a lease.
///
/// Intervals are ordered by start. Each is held to the lock only up to its
/// [`Record::guaranteed_end_ns`]: a holder that kept going after its lease
/// could have ended is the case fences exist for, and is counted in
/// `overruns` instead.
pub fn check(records: &mut [Record], fencing: bool) -> Verdict {
    records.sort_by_key(|r| (r.start_ns, r.end_ns));
    let mut v = Verdict { intervals: records.len(), ..Default::default() };
    // The interval whose guaranteed part ends last so far: with intervals
    // sorted by start, any overlap shows up against it.
    let mut latest: Option<usize> = None;
    let mut top_fence: Option<(u64, usize)> = None;
    for i in 0..records.len() {
        let r = &records[i];
        let overran = r.overran();
        if overran {
            v.overruns += 1;
        }
        if let Some(l) = latest {
            let prev = &records[l];
            if r.start_ns < prev.guaranteed_end_ns() {
                v.overlaps += 1;
                v.problem(format!("overlap: {} began while {} held", show(r), show(prev)));
            }
        }
        if latest.is_none_or(|l| r.guaranteed_end_ns() > records[l].guaranteed_end_ns()) {
            latest = Some(i);
        }
        if r.rejected_writes > 0 {
            if overran {
                v.stale_writes_rejected += r.rejected_writes as usize;
            } else {
                v.fence_violations += 1;
                v.problem(format!(
                    "the storage refused a write made within the lease (a higher fence was \
                     already written): {}",
                    show(r)
                ));
            }
        }
        if !fencing {
            continue;
        }
        match (r.fence, top_fence) {
            (None, _) => {
                v.fence_violations += 1;
                v.problem(format!("no fence from a fencing backend: {}", show(r)));
            }
            (Some(f), Some((top, at))) if f <= top => {
                v.fence_violations += 1;
                v.problem(format!(
                    "fence does not rise in interval order: {} after {}",
                    show(r),
                    show(&records[at])
                ));
            }
            (Some(f), _) => top_fence = Some((f, i)),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Times in ms after an arbitrary origin; the lease was asked for half
    /// a millisecond before the start.
    fn rec(pid: u32, start_ms: u64, end_ms: u64, fence: u64) -> Record {
        const ORIGIN: u64 = 1_000 * MS;
        Record {
            pid,
            thread: 0,
            call_ns: ORIGIN + start_ms * MS - MS / 2,
            start_ns: ORIGIN + start_ms * MS,
            end_ns: ORIGIN + end_ms * MS,
            ttl_ms: 1_000,
            fence: Some(fence),
            rejected_writes: 0,
            stalled: false,
        }
    }

    #[test]
    fn disjoint_rising_intervals_pass() {
        let mut r = vec![rec(2, 20, 30, 3), rec(1, 0, 10, 1), rec(1, 10, 19, 2)];
        let v = check(&mut r, true);
        assert!(v.safe(), "{v:?}");
        assert_eq!(v.intervals, 3);
    }

    #[test]
    fn overlap_is_caught_even_behind_a_short_interval() {
        // 0..100 covers 10..20 and 30..40: both overlap it.
        let mut r = vec![rec(1, 0, 100, 1), rec(2, 10, 20, 2), rec(3, 30, 40, 3)];
        let v = check(&mut r, false);
        assert_eq!(v.overlaps, 2, "{v:?}");
        assert!(v.problems[0].contains("overlap"));
    }

    #[test]
    fn fences_must_rise_and_exist() {
        let mut r = vec![rec(1, 0, 10, 5), rec(2, 10, 20, 4), rec(3, 20, 30, 6)];
        assert!(check(&mut r, false).safe());
        let v = check(&mut r, true);
        assert_eq!(v.fence_violations, 1, "{v:?}");
        r[2].fence = None;
        assert_eq!(check(&mut r, true).fence_violations, 2);
    }

    #[test]
    fn an_overrun_counts_only_up_to_its_lease() {
        // Frozen for 5 s with a 1 s lease; the next holder came after the lease.
        let mut stalled = rec(1, 0, 5_000, 1);
        stalled.rejected_writes = 1;
        stalled.stalled = true;
        let mut r = vec![stalled, rec(2, 1_200, 1_210, 2)];
        let v = check(&mut r, true);
        assert!(v.safe(), "{v:?}");
        assert_eq!((v.overruns, v.stale_writes_rejected), (1, 1));
        // A takeover before the lease ended is an overlap all the same.
        r[1] = rec(2, 900, 910, 2);
        assert_eq!(check(&mut r, true).overlaps, 1);
    }

    #[test]
    fn a_refused_write_within_the_lease_is_a_violation() {
        let mut r = vec![rec(1, 0, 10, 1)];
        r[0].rejected_writes = 1;
        let v = check(&mut r, true);
        assert_eq!(v.fence_violations, 1);
        assert!(v.problems[0].contains("refused"));
    }
}
