//! Separate processes on one database file, all through the `.so`, using
//! the workspace's `bext-lock-hammer` worker (build it with
//! `cargo build -p bext-locking-test-support`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bext_locking::{LockHandle, LockingPlugin};
use bext_locking_test_support::hammer::{
    RunArgs, check_intervals, hammer_path, read_records, spawn_run, wait_summary,
};

/// Kills a child on drop, so a failing assertion never leaves it running.
struct Reaper(Option<Child>);

impl Reaper {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child")
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn four_processes_never_overlap_and_share_fairly() {
    let dir = common::temp_dir();
    // Not created beforehand: the four processes also race to create it.
    let path = dir.path().join("locks.db");
    let out = dir.path().join("records.jsonl");
    let config = common::config_json(&path);
    let so = common::so_path();
    let args = RunArgs {
        plugin: &so,
        config: &config,
        key: "hammer",
        ttl_ms: 10_000,
        duration_ms: 3_000,
        threads: 1,
        hold_us: 300,
        out: &out,
    };
    let children: Vec<Child> = (0..4).map(|_| spawn_run(&args)).collect();
    let summaries: Vec<_> = children.into_iter().map(wait_summary).collect();
    for s in &summaries {
        assert_eq!(s.errors, 0, "a process saw errors: {:?}", s.first_error);
        assert!(s.acquired > 0, "a process never acquired: {s:?}");
    }
    let mut records = read_records(&out);
    let acquired: u64 = summaries.iter().map(|s| s.acquired).sum();
    assert_eq!(records.len() as u64, acquired, "every acquisition left one record");
    let stats = check_intervals(&mut records, true).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.per_pid.len(), 4, "{:?}", stats.per_pid);
    eprintln!("acquisitions per process: {:?}", stats.per_pid);
    // A fair share: no process below a fifth of an equal split.
    let floor = stats.intervals / 20;
    for (pid, n) in &stats.per_pid {
        assert!(*n > floor.max(5), "process {pid} got {n} of {} acquisitions", stats.intervals);
    }
}

/// Starts `bext-lock-hammer hold` and returns it with a channel of its
/// stdout lines.
fn hold(
    config: &str,
    key: &str,
    ttl_ms: u64,
    renew_every_ms: Option<u64>,
) -> (Reaper, mpsc::Receiver<String>) {
    let mut cmd = Command::new(hammer_path());
    cmd.arg("hold").args(["--plugin".as_ref(), common::so_path().as_os_str()]).args([
        "--config",
        config,
        "--key",
        key,
        "--ttl-ms",
        &ttl_ms.to_string(),
    ]);
    if let Some(every) = renew_every_ms {
        cmd.args(["--renew-every-ms", &every.to_string()]);
    }
    let mut child = Reaper(Some(cmd.stdout(Stdio::piped()).spawn().expect("spawn hammer hold")));
    let stdout = child.child().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for the `ACQUIRED <handle>` line.
fn acquired(rx: &mpsc::Receiver<String>, within: Duration) -> LockHandle {
    let line = rx.recv_timeout(within).expect("holder printed nothing in time");
    let json = line.strip_prefix("ACQUIRED ").unwrap_or_else(|| panic!("unexpected line {line:?}"));
    serde_json::from_str(json).expect("handle JSON")
}

#[test]
fn killed_holder_frees_the_lock_after_its_ttl_with_a_higher_fence() {
    const TTL: u64 = 1_000;
    const RENEW_EVERY: u64 = 200;
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let config = common::config_json(&path);
    let observer = common::so_instance(&path);

    // The holder keeps its lease alive by renewing, well past one TTL.
    let (mut holder, rx) = hold(&config, "job", TTL, Some(RENEW_EVERY));
    let first = acquired(&rx, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(TTL + 300));
    assert_eq!(observer.try_lock("job", TTL).unwrap(), None, "renewed lease was lost");

    // SIGKILL: no release, no goodbye.
    holder.child().kill().unwrap();
    holder.child().wait().unwrap();
    let killed = Instant::now();

    // A second process polls until the dead holder's lease runs out.
    let (_next, rx) = hold(&config, "job", 30_000, None);
    let second = acquired(&rx, Duration::from_secs(15));
    let waited = killed.elapsed();
    // The last renew was at most RENEW_EVERY (plus a little) before the kill.
    assert!(
        waited >= Duration::from_millis(TTL - RENEW_EVERY - 100),
        "taken {waited:?} after the kill: before the dead holder's lease (TTL {TTL} ms, \
         renewed every {RENEW_EVERY} ms) could have run out"
    );
    assert!(second.fence > first.fence, "fence {:?} after {:?}", second.fence, first.fence);
    assert_eq!(observer.try_lock("job", TTL).unwrap(), None, "the new holder must hold it");
}
