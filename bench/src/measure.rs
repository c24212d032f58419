//! Interleaved measurement of acquire+release pairs.
//!
//! The contenders of one comparison ("sides": in-process, `.so`, raw
//! client, rslock) run in short slices, taking turns round after round, so
//! that load from other work on this shared machine falls on all of them
//! alike; ratios are only ever taken between sides of one group.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The TTL every benchmarked lock is taken with: long enough never to
/// expire during a pair.
pub const TTL_MS: u64 = 30_000;

/// What a side is, which decides its colour in the chart and which side is
/// the baseline of a group.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Kind {
    /// The backend linked in as a Rust library (no C boundary, no JSON).
    InProcess,
    /// The backend's `.so` through `bext-locking-loader`.
    So,
    /// The same `.so` in a second configuration (e.g. Redis without fences).
    SoAlt,
    /// The storage's own client doing the same work directly.
    Raw,
    /// A second raw variant (e.g. Redis: the backend's fenced script).
    RawAlt,
    /// The `rslock` crate (Redlock).
    Rslock,
    /// Another language's lock library (python-redis-lock, pottery).
    Peer,
}

/// Latency histogram: exact below 128 ns, then 64 buckets per power of two
/// (at most 1.6 % wide), so merging threads and rounds is exact.
#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
}

const LINEAR: u64 = 128;
const SUB: u64 = 64;

impl Default for Hist {
    fn default() -> Self {
        Self { counts: vec![0; (LINEAR + SUB * 57) as usize], total: 0 }
    }
}

impl Hist {
    fn index(ns: u64) -> usize {
        if ns < LINEAR {
            return ns as usize;
        }
        let e = 63 - u64::from(ns.leading_zeros()); // >= 7
        let sub = (ns >> (e - 6)) & (SUB - 1);
        (LINEAR + (e - 7) * SUB + sub) as usize
    }

    /// The middle of bucket `i`, in nanoseconds.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < LINEAR {
            return i;
        }
        let (e, sub) = ((i - LINEAR) / SUB + 7, (i - LINEAR) % SUB);
        let width = 1u64 << (e - 6);
        (SUB + sub) * width + width / 2
    }

    /// Counts one pair that took `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The `q` quantile (0 < q <= 1) in nanoseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i);
            }
        }
        Self::value(self.counts.len() - 1)
    }

    /// The non-empty buckets, to send a worker process's histogram home.
    pub fn sparse(&self) -> Vec<(usize, u64)> {
        self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| (i, *c)).collect()
    }

    /// Rebuilds a histogram from [`sparse`](Self::sparse) buckets.
    pub fn from_sparse(buckets: &[(usize, u64)]) -> Self {
        let mut h = Self::default();
        for &(i, c) in buckets {
            if let Some(slot) = h.counts.get_mut(i) {
                *slot += c;
                h.total += c;
            }
        }
        h
    }
}

/// One worker thread's share of a slice: runs pairs until the deadline,
/// timing each.
pub struct Lap {
    until: Instant,
    pairs: u64,
    hist: Hist,
    error: Option<String>,
}

impl Lap {
    /// A lap that ends at `until`.
    pub fn new(until: Instant) -> Self {
        Self { until, pairs: 0, hist: Hist::default(), error: None }
    }

    /// Runs `pair` until the deadline (the pair in flight finishes), timing
    /// each call; stops at the first error.
    pub fn run(&mut self, mut pair: impl FnMut() -> Result<(), String>) {
        let mut t0 = Instant::now();
        while t0 < self.until {
            if let Err(e) = pair() {
                self.error = Some(e);
                return;
            }
            let t1 = Instant::now();
            self.hist.record(t1.duration_since(t0).as_nanos() as u64);
            self.pairs += 1;
            t0 = t1;
        }
    }

    /// Pairs done, their latencies, and the error that stopped them.
    pub fn into_parts(self) -> (u64, Hist, Option<String>) {
        (self.pairs, self.hist, self.error)
    }

    /// Records a failure that kept the worker from running at all.
    pub fn fail(&mut self, e: impl Into<String>) {
        self.error = Some(e.into());
    }
}

/// The body a worker thread runs for one slice: `(thread index, lap)`.
pub type Body<'a> = Box<dyn Fn(usize, &mut Lap) + Sync + 'a>;

/// One contender of a group.
pub struct Entry<'a> {
    /// Its row label.
    pub label: String,
    /// What it is.
    pub kind: Kind,
    body: Body<'a>,
}

impl<'a> Entry<'a> {
    /// A side running `body` on each worker thread.
    pub fn new(
        label: impl Into<String>,
        kind: Kind,
        body: impl Fn(usize, &mut Lap) + Sync + 'a,
    ) -> Self {
        Self { label: label.into(), kind, body: Box::new(body) }
    }
}

/// Per-thread state of a raw side (a connection), created once and taken
/// by the worker of that index for each slice.
pub struct PerThread<T>(Vec<Mutex<T>>);

impl<T> PerThread<T> {
    /// `n` states made by `make(i)`.
    pub fn new(n: usize, make: impl FnMut(usize) -> Result<T, String>) -> Result<Self, String> {
        Ok(Self(
            (0..n)
                .map(make)
                .collect::<Result<Vec<T>, String>>()?
                .into_iter()
                .map(Mutex::new)
                .collect(),
        ))
    }

    /// Runs `f` on thread `t`'s state.
    pub fn with<R>(&self, t: usize, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = self.0[t].lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

/// How long each side runs in total, and in how many rounds.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Seconds per side per group.
    pub secs: f64,
    /// Rounds the time is cut into.
    pub rounds: usize,
}

impl Settings {
    /// `BENCH_SECS` (default 3) and `BENCH_ROUNDS` (default 30: slices of
    /// 0.1 s, short against the bursts of other work on a shared machine).
    pub fn from_env() -> Self {
        fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        }
        Self {
            secs: env_or("BENCH_SECS", 3.0f64).max(0.1),
            rounds: env_or("BENCH_ROUNDS", 30usize).max(1),
        }
    }

    /// The length of one slice.
    pub fn slice(&self) -> Duration {
        Duration::from_secs_f64(self.secs / self.rounds.max(1) as f64)
    }
}

/// One side's totals over a group's rounds.
#[derive(Clone)]
pub struct Tally {
    /// Row label.
    pub label: String,
    /// What it is.
    pub kind: Kind,
    /// Worker threads (or processes).
    pub threads: usize,
    /// Pairs done.
    pub pairs: u64,
    /// Wall seconds measured.
    pub secs: f64,
    /// CPU nanoseconds this process (or the workers) used meanwhile.
    pub cpu_ns: u64,
    /// Latency of each pair.
    pub hist: Hist,
    /// Pairs per second of each round, in round order.
    pub round_rates: Vec<f64>,
    /// Why the side stopped, if it failed.
    pub error: Option<String>,
}

impl Tally {
    /// An empty tally.
    pub fn new(label: &str, kind: Kind, threads: usize) -> Self {
        Self {
            label: label.to_owned(),
            kind,
            threads,
            pairs: 0,
            secs: 0.0,
            cpu_ns: 0,
            hist: Hist::default(),
            round_rates: Vec::new(),
            error: None,
        }
    }

    /// Pairs per second over all rounds.
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 { self.pairs as f64 / self.secs } else { 0.0 }
    }

    /// Median latency in microseconds.
    pub fn p50_us(&self) -> f64 {
        self.hist.quantile(0.50) as f64 / 1e3
    }

    /// 99th percentile latency in microseconds.
    pub fn p99_us(&self) -> f64 {
        self.hist.quantile(0.99) as f64 / 1e3
    }

    /// CPU microseconds per pair.
    pub fn cpu_us(&self) -> f64 {
        if self.pairs == 0 { 0.0 } else { self.cpu_ns as f64 / 1e3 / self.pairs as f64 }
    }

    /// Whether it produced figures.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.pairs > 0
    }

    /// Adds one slice.
    pub fn add(&mut self, s: &Slice) {
        self.pairs += s.pairs;
        self.secs += s.secs;
        self.cpu_ns += s.cpu_ns;
        self.hist.merge(&s.hist);
        self.round_rates.push(if s.secs > 0.0 { s.pairs as f64 / s.secs } else { 0.0 });
        if self.error.is_none() {
            self.error.clone_from(&s.error);
        }
    }
}

/// How two sides of one group compare.
#[derive(Clone, Copy, Debug)]
pub struct Ratio {
    /// `a`'s total rate over `b`'s.
    pub overall: f64,
    /// The median of the per-round ratios: each measured in the same
    /// round, so a burst of load in one round moves one sample, not the
    /// figure. Verdicts use this one.
    pub median_round: f64,
}

/// `a` against `b`, when both were measured.
pub fn ratio(a: &Tally, b: &Tally) -> Option<Ratio> {
    paired(a, b, |x, y| x / y)
        .map(|median_round| Ratio { overall: a.rate() / b.rate(), median_round })
}

/// The median over rounds of `f(a's rate, b's rate)`, when both were
/// measured.
pub fn paired(a: &Tally, b: &Tally, f: impl Fn(f64, f64) -> f64) -> Option<f64> {
    if !a.ok() || !b.ok() {
        return None;
    }
    let mut per_round: Vec<f64> = a
        .round_rates
        .iter()
        .zip(&b.round_rates)
        .filter(|(x, y)| **x > 0.0 && **y > 0.0)
        .map(|(x, y)| f(*x, *y))
        .collect();
    if per_round.is_empty() {
        return None;
    }
    per_round.sort_by(f64::total_cmp);
    Some(per_round[per_round.len() / 2])
}

/// What one slice of one side gave.
pub struct Slice {
    /// Pairs done.
    pub pairs: u64,
    /// Wall seconds from start to the last worker's end.
    pub secs: f64,
    /// CPU nanoseconds used meanwhile.
    pub cpu_ns: u64,
    /// Latency of each pair.
    pub hist: Hist,
    /// The first worker error.
    pub error: Option<String>,
}

/// CPU time (user + system) this process has used, in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let ns = |t: nix::sys::time::TimeVal| {
                t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1_000
            };
            ns(u.user_time()) + ns(u.system_time())
        })
        .unwrap_or(0)
}

/// Runs `entry` on `threads` threads for `len`.
fn run_slice(entry: &Entry<'_>, threads: usize, len: Duration) -> Slice {
    let cpu0 = process_cpu_ns();
    let start = Instant::now();
    let until = start + len;
    let laps: Vec<Lap> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut lap = Lap::new(until);
                    (entry.body)(t, &mut lap);
                    lap
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    let mut lap = Lap::new(until);
                    lap.fail("a worker thread panicked");
                    lap
                })
            })
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut hist = Hist::default();
    for lap in &laps {
        hist.merge(&lap.hist);
    }
    Slice {
        pairs: laps.iter().map(|l| l.pairs).sum(),
        secs,
        cpu_ns: process_cpu_ns().saturating_sub(cpu0),
        hist,
        error: laps.iter().find_map(|l| l.error.clone()),
    }
}

/// Measures every side of one group with `threads` workers each: a short
/// unrecorded warm-up, then `settings.rounds` rounds in which every side
/// runs one slice, the first side of each round rotating.
pub fn measure(
    title: &str,
    threads: usize,
    entries: &[Entry<'_>],
    settings: &Settings,
) -> Vec<Tally> {
    let slice = settings.slice();
    let mut tallies: Vec<Tally> =
        entries.iter().map(|e| Tally::new(&e.label, e.kind, threads)).collect();
    for (e, t) in entries.iter().zip(&mut tallies) {
        let warm = run_slice(e, threads, (slice / 4).max(Duration::from_millis(30)));
        t.error = warm.error;
    }
    let n = entries.len();
    for round in 0..settings.rounds {
        for k in 0..n {
            let i = (k + round) % n;
            if tallies[i].error.is_some() {
                continue;
            }
            let s = run_slice(&entries[i], threads, slice);
            tallies[i].add(&s);
        }
    }
    let line: Vec<String> = tallies
        .iter()
        .map(|t| match &t.error {
            Some(e) => format!("{}: ERROR {e}", t.label),
            None => format!("{}: {:.0}/s", t.label, t.rate()),
        })
        .collect();
    eprintln!(
        "  {}: {}",
        crate::report::plural(&format!("{title}, {threads} thread(s)")),
        line.join(" | ")
    );
    tallies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = Hist::default();
        for ns in 1..=100_000u64 {
            h.record(ns * 10);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.02, "p50 {p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.02, "p99 {p99}");
        assert_eq!(Hist::default().quantile(0.5), 0);
        let mut small = Hist::default();
        small.record(42);
        assert_eq!(small.quantile(0.99), 42);
    }

    #[test]
    fn sparse_round_trip_keeps_counts() {
        let mut h = Hist::default();
        for ns in [5, 500, 50_000, 5_000_000, u64::MAX / 2] {
            h.record(ns);
        }
        let back = Hist::from_sparse(&h.sparse());
        assert_eq!(back.total, 5);
        assert_eq!(back.quantile(1.0), h.quantile(1.0));
    }
}
