//! Separate processes contending for one key through the `.so`, using the
//! workspace's `bext-lock-hammer` worker (build it with
//! `cargo build -p bext-locking-test-support`).

mod harness;

use bext_locking_test_support::hammer::{RunArgs, contend};
use harness::{Server, TempDir, quorum_config, servers, single_config};

fn hammer(config: &str, fencing: bool) {
    let dir = TempDir::new("hammer");
    let out = dir.path().join("records.jsonl");
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
    let (_, stats) = contend(&args, 3, fencing);
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
