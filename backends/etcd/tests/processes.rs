//! Two processes contending for one key through the `.so`: their holding
//! intervals never overlap and fences rise in the order of the intervals.

mod common;

use bext_locking_test_support::hammer::{RunArgs, contend};
use bext_locking_test_support::plugin_path;
use common::Cluster;

#[test]
fn two_processes_never_hold_at_once() {
    let etcd = Cluster::single();
    let dir = bext_locking_test_support::TempDir::new("etcd-hammer");
    let out = dir.path().join("records.jsonl");
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
    let (summaries, _) = contend(&args, 2, true);
    drop(dir);
    for s in &summaries {
        assert!(s.contended > 0, "{s:?}");
    }
}
