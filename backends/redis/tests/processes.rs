//! Separate processes contending for one key through the `.so`, using the
//! workspace's `bext-lock-hammer` worker (build it with
//! `cargo build -p bext-locking-test-support`).

mod harness;

use std::process::Child;

use bext_locking_test_support::hammer::{
    RunArgs, check_intervals, read_records, spawn_run, wait_summary,
};
use harness::{Server, TempDir, quorum_config, servers, single_config};

/// Kills the children on drop, so a failing assertion leaves none running.
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn hammer(config: &str, fencing: bool) {
    let dir = TempDir::new("hammer");
    let out = dir.0.join("records.jsonl");
    let so = bext_locking_test_support::plugin_path("redis");
    let args = RunArgs {
        plugin: &so,
        config,
        key: "hammer",
        ttl_ms: 10_000,
        duration_ms: 2_000,
        threads: 2,
        hold_us: 200,
        out: &out,
    };
    let mut children = Reaper((0..3).map(|_| spawn_run(&args)).collect());
    let summaries: Vec<_> = std::mem::take(&mut children.0).into_iter().map(wait_summary).collect();
    for s in &summaries {
        assert_eq!(s.errors, 0, "a process saw errors: {:?}", s.first_error);
        assert!(s.acquired > 0, "a process never acquired: {s:?}");
    }
    let mut records = read_records(&out);
    let acquired: u64 = summaries.iter().map(|s| s.acquired).sum();
    assert_eq!(records.len() as u64, acquired, "every acquisition left one record");
    let stats = check_intervals(&mut records, fencing).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.per_pid.len(), 3, "{:?}", stats.per_pid);
    eprintln!("{} acquisitions, per process: {:?}", stats.intervals, stats.per_pid);
}

#[test]
fn three_processes_on_one_node_never_overlap_and_fences_rise() {
    let server = Server::start();
    hammer(&single_config(&server, ""), true);
}

#[test]
fn three_processes_on_a_quorum_never_overlap() {
    let nodes = servers(3);
    hammer(&quorum_config(&nodes, ""), false);
}
