//! Separate processes on one database file, all through the `.so`, using
//! the workspace's `bext-lock-hammer` worker (build it with
//! `cargo build -p bext-locking-test-support`).

mod common;

use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_test_support::hammer::{Holder, RunArgs, contend};

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
    let (_, stats) = contend(&args, 4, true);
    eprintln!("acquisitions per process: {:?}", stats.per_pid);
    // A fair share: no process below a fifth of an equal split.
    let floor = stats.intervals / 20;
    for (pid, n) in &stats.per_pid {
        assert!(*n > floor.max(5), "process {pid} got {n} of {} acquisitions", stats.intervals);
    }
}

/// Starts `bext-lock-hammer hold` on the `.so`.
fn hold(config: &str, key: &str, ttl_ms: u64, renew_every_ms: Option<u64>) -> Holder {
    Holder::spawn(&common::so_path(), config, key, ttl_ms, renew_every_ms)
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
    let mut holder = hold(&config, "job", TTL, Some(RENEW_EVERY));
    let first = holder.acquired(Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(TTL + 300));
    assert_eq!(observer.try_lock("job", TTL).unwrap(), None, "renewed lease was lost");

    // SIGKILL: no release, no goodbye.
    holder.kill();
    let killed = Instant::now();

    // A second process polls until the dead holder's lease runs out.
    let next = hold(&config, "job", 30_000, None);
    let second = next.acquired(Duration::from_secs(15));
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
