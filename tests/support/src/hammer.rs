//! Cross-process contention: records of holding intervals, and the check
//! that no two of them overlap.
//!
//! The `bext-lock-hammer` binary (in this package) writes one [`Record`] per
//! holding interval; tests spawn several of them on one key and call
//! [`check_intervals`] over everything they wrote ([`contend`] does both,
//! with the checks every such test makes). Times come from
//! `CLOCK_MONOTONIC`, which every process on a Linux host shares.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bext_locking::LockHandle;

use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

/// One holding interval: recorded after `try_lock` returned a handle and
/// before `release` was called, so a correct lock never lets two overlap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The holder's process.
    pub pid: u32,
    /// The holder's thread number within its process.
    pub thread: u32,
    /// `CLOCK_MONOTONIC` nanoseconds when the lock was known held.
    pub start_ns: u64,
    /// `CLOCK_MONOTONIC` nanoseconds just before release.
    pub end_ns: u64,
    /// The handle's fence, if the backend fences.
    pub fence: Option<u64>,
}

/// What one hammer process did, printed as its last stdout line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Successful acquisitions.
    pub acquired: u64,
    /// `Ok(None)` answers.
    pub contended: u64,
    /// `Err` answers from try_lock or release.
    pub errors: u64,
    /// The first error's message.
    pub first_error: Option<String>,
}

/// What [`check_intervals`] found.
#[derive(Debug, Clone, Default)]
pub struct IntervalStats {
    /// Intervals checked.
    pub intervals: usize,
    /// Acquisitions per process id.
    pub per_pid: std::collections::BTreeMap<u32, usize>,
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// The built `bext-lock-hammer` binary next to the test binaries.
pub fn hammer_path() -> PathBuf {
    let path = crate::target_dir().join("bext-lock-hammer");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p bext-locking-test-support` (or `make build`)",
        path.display()
    );
    path
}

/// Reads the JSON-lines records a hammer wrote.
pub fn read_records(path: &Path) -> Vec<Record> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::io::BufReader::new(file)
        .lines()
        .map(|l| l.expect("read record"))
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad record {l:?}: {e}")))
        .collect()
}

/// Proves that no two intervals overlap and, when `fencing`, that fences
/// strictly increase in the order of the intervals.
pub fn check_intervals(records: &mut [Record], fencing: bool) -> Result<IntervalStats, String> {
    records.sort_by_key(|r| (r.start_ns, r.end_ns));
    let mut stats = IntervalStats { intervals: records.len(), ..Default::default() };
    for r in records.iter() {
        *stats.per_pid.entry(r.pid).or_default() += 1;
    }
    for w in records.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.start_ns < a.end_ns {
            return Err(format!("overlap: {a:?} and {b:?}"));
        }
        if fencing {
            match (a.fence, b.fence) {
                (Some(fa), Some(fb)) if fb > fa => {}
                _ => {
                    return Err(format!(
                        "fences do not increase in interval order: {a:?} then {b:?}"
                    ));
                }
            }
        }
    }
    Ok(stats)
}

/// Arguments of one `bext-lock-hammer run` process.
#[derive(Debug, Clone)]
pub struct RunArgs<'a> {
    /// The plugin library.
    pub plugin: &'a Path,
    /// Config JSON for `create`.
    pub config: &'a str,
    /// The contended key.
    pub key: &'a str,
    /// Lease length; keep it far above `hold_us`.
    pub ttl_ms: u64,
    /// How long to keep trying.
    pub duration_ms: u64,
    /// Threads in the process, each with its own instance.
    pub threads: u32,
    /// How long to hold each acquisition.
    pub hold_us: u64,
    /// Where to append records.
    pub out: &'a Path,
}

/// Starts `bext-lock-hammer run` with `args`; stdout is piped so the caller
/// can read its [`Summary`] with [`wait_summary`].
pub fn spawn_run(args: &RunArgs<'_>) -> Child {
    Command::new(hammer_path())
        .arg("run")
        .args(["--plugin".as_ref(), args.plugin.as_os_str()])
        .args(["--config", args.config, "--key", args.key])
        .args([
            "--ttl-ms",
            &args.ttl_ms.to_string(),
            "--duration-ms",
            &args.duration_ms.to_string(),
        ])
        .args(["--threads", &args.threads.to_string(), "--hold-us", &args.hold_us.to_string()])
        .args(["--out".as_ref(), args.out.as_os_str()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn bext-lock-hammer")
}

/// Waits for a `run` process and parses its summary line.
pub fn wait_summary(child: Child) -> Summary {
    let out = child.wait_with_output().expect("wait for bext-lock-hammer");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bext-lock-hammer failed ({}): {text}", out.status);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad summary {last:?}: {e}"))
}

/// Kills the children it still holds on drop, so a failing check leaves
/// none running.
struct Reaper(Vec<Option<Child>>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for mut child in self.0.iter_mut().filter_map(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `processes` `bext-lock-hammer run` processes with `args` at once,
/// and checks what every cross-process test needs: no process saw an error
/// and each acquired at least once, every acquisition left one record, no
/// two holding intervals overlap (and, with `fencing`, fences rise in their
/// order), and every process held the lock. Returns the summaries and the
/// interval counts for the caller's own checks.
///
/// Panics, naming what failed, on the first check that does not hold; the
/// processes still running are killed.
pub fn contend(
    args: &RunArgs<'_>,
    processes: usize,
    fencing: bool,
) -> (Vec<Summary>, IntervalStats) {
    let mut children = Reaper((0..processes).map(|_| Some(spawn_run(args))).collect());
    let summaries: Vec<Summary> =
        children.0.iter_mut().map(|c| wait_summary(c.take().expect("each child once"))).collect();
    for s in &summaries {
        assert_eq!(s.errors, 0, "a process saw errors: {:?} ({s:?})", s.first_error);
        assert!(s.acquired > 0, "a process never acquired: {s:?}");
    }
    let mut records = read_records(args.out);
    let acquired: u64 = summaries.iter().map(|s| s.acquired).sum();
    assert_eq!(records.len() as u64, acquired, "every acquisition left one record");
    let stats = check_intervals(&mut records, fencing).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stats.per_pid.len(),
        processes,
        "every process must have held the lock: {:?}",
        stats.per_pid
    );
    (summaries, stats)
}

/// A `bext-lock-hammer hold` process: it acquires one key (retrying for up
/// to 10 s), says so, then keeps the lock, renewing it if asked, until it
/// is killed. SIGKILLed on drop, so a failing test leaves none running.
pub struct Holder {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Holder {
    /// Starts a holder of `key` through the plugin library `plugin`,
    /// renewing every `renew_every_ms` when that is given.
    pub fn spawn(
        plugin: &Path,
        config: &str,
        key: &str,
        ttl_ms: u64,
        renew_every_ms: Option<u64>,
    ) -> Self {
        let ttl = ttl_ms.to_string();
        let mut cmd = Command::new(hammer_path());
        cmd.arg("hold").arg("--plugin").arg(plugin);
        cmd.args(["--config", config, "--key", key, "--ttl-ms", &ttl]);
        if let Some(every) = renew_every_ms {
            cmd.args(["--renew-every-ms", &every.to_string()]);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn bext-lock-hammer hold");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits up to `within` for the `ACQUIRED <handle>` line; the handle.
    pub fn acquired(&self, within: Duration) -> LockHandle {
        let line = self.lines.recv_timeout(within).expect("the holder printed nothing in time");
        let json = line
            .strip_prefix("ACQUIRED ")
            .unwrap_or_else(|| panic!("the holder said {line:?}, not ACQUIRED"));
        serde_json::from_str(json).unwrap_or_else(|e| panic!("bad handle {json:?}: {e}"))
    }

    /// SIGKILL (no release, no goodbye), and wait until it is gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the holder");
        self.child.wait().expect("reap the holder");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pid: u32, start_ns: u64, end_ns: u64, fence: u64) -> Record {
        Record { pid, thread: 0, start_ns, end_ns, fence: Some(fence) }
    }

    #[test]
    fn overlap_is_caught() {
        let mut r = vec![rec(1, 0, 10, 1), rec(2, 9, 20, 2)];
        assert!(check_intervals(&mut r, false).unwrap_err().contains("overlap"));
    }

    #[test]
    fn fence_order_is_checked() {
        let mut r = vec![rec(1, 0, 10, 5), rec(2, 10, 20, 4)];
        assert!(check_intervals(&mut r, false).is_ok());
        assert!(check_intervals(&mut r, true).unwrap_err().contains("fences"));
    }

    #[test]
    fn disjoint_intervals_pass_and_are_counted() {
        let mut r = vec![rec(2, 20, 30, 3), rec(1, 0, 10, 1), rec(1, 10, 19, 2)];
        let stats = check_intervals(&mut r, true).unwrap();
        assert_eq!(stats.intervals, 3);
        assert_eq!(stats.per_pid[&1], 2);
    }
}
