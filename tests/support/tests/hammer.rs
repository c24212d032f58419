//! The hammer binary end to end, on the memory plugin shared by threads of
//! one process (the memory backend cannot lock across processes).

use bext_locking_test_support::hammer::{
    RunArgs, check_intervals, read_records, spawn_run, wait_summary,
};
use bext_locking_test_support::plugin_path;

#[test]
fn threads_of_one_hammer_never_overlap() {
    let dir = std::env::temp_dir().join(format!("hammer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("records.jsonl");
    let plugin = plugin_path("memory");
    let child = spawn_run(&RunArgs {
        plugin: &plugin,
        config: r#"{"namespace":"hammer"}"#,
        key: "hammer/key",
        ttl_ms: 5_000,
        duration_ms: 500,
        threads: 4,
        hold_us: 200,
        out: &out,
    });
    let summary = wait_summary(child);
    assert_eq!(summary.errors, 0, "{summary:?}");
    let mut records = read_records(&out);
    assert_eq!(records.len() as u64, summary.acquired);
    assert!(summary.acquired > 10, "{summary:?}");
    check_intervals(&mut records, true).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
