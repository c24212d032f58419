//! Two processes contending for one key through the `.so`: their holding
//! intervals never overlap and fences rise in the order of the intervals.

mod common;

use bext_locking_test_support::hammer::{
    RunArgs, check_intervals, read_records, spawn_run, wait_summary,
};
use bext_locking_test_support::plugin_path;
use common::Cluster;

#[test]
fn two_processes_never_hold_at_once() {
    let etcd = Cluster::single();
    let dir = std::env::temp_dir().join(format!("etcd-hammer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("records.jsonl");
    let plugin = plugin_path("etcd");
    let config = common::config(&etcd.endpoints_json(), 5_000);
    let args = RunArgs {
        plugin: &plugin,
        config: &config,
        key: "hammer/key",
        ttl_ms: 10_000,
        duration_ms: 2_000,
        threads: 2,
        hold_us: 500,
        out: &out,
    };
    let children = [spawn_run(&args), spawn_run(&args)];
    let summaries: Vec<_> = children.into_iter().map(wait_summary).collect();
    let mut records = read_records(&out);
    std::fs::remove_dir_all(&dir).ok();
    for s in &summaries {
        assert_eq!(s.errors, 0, "{s:?}");
        assert!(s.acquired > 0 && s.contended > 0, "{s:?}");
    }
    let total: u64 = summaries.iter().map(|s| s.acquired).sum();
    assert_eq!(records.len() as u64, total);
    let stats = check_intervals(&mut records, true).unwrap();
    assert_eq!(
        stats.per_pid.len(),
        2,
        "both processes must have held the lock: {:?}",
        stats.per_pid
    );
}
