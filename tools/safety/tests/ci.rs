//! A short run of `bext-lock-safety` per backend, each with at least one
//! fault, as `make test` runs it. The runs need the plugins built next to
//! the checker (`cargo build --workspace`), `redis-server`, `etcd`, the
//! PostgreSQL server binaries and the shared server in `BEXT_PG_URL`.

use std::path::PathBuf;
use std::process::Command;

use bext_locking_safety::scenario::{Outcome, Status};
use bext_locking_test_support::TempDir;

/// Runs the checker with short runs; its exit code and outcomes.
fn safety(args: &[&str]) -> (Option<i32>, Vec<Outcome>) {
    let dir = TempDir::new("safety-ci");
    let json: PathBuf = dir.path().join("outcomes.json");
    let out = Command::new(env!("CARGO_BIN_EXE_bext-lock-safety"))
        .args(["--processes", "2", "--threads", "2", "--duration-ms", "1500"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run bext-lock-safety");
    let table = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}\n{table}");
    let outcomes = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no outcomes ({}):\n{log}", out.status));
    (out.status.code(), outcomes)
}

/// Every run safe, with acquisitions; every fault carried out, followed by
/// acquisitions; every frozen holder refused.
fn assert_safe(args: &[&str], expected_runs: usize) -> Vec<Outcome> {
    let (code, outcomes) = safety(args);
    assert_eq!(outcomes.len(), expected_runs, "{outcomes:#?}");
    for o in &outcomes {
        let what = format!("{} / {}", o.backend, o.fault);
        assert_eq!(o.status, Status::Safe, "{what}: {o:#?}");
        assert_eq!((o.overlaps, o.fence_violations), (0, 0), "{what}");
        assert!(o.acquisitions > 0, "{what}: no acquisition");
        assert!(o.processes >= 1 && o.operations >= o.acquisitions, "{what}");
        if o.fault != "none" {
            assert!(!o.actions.is_empty(), "{what}: the fault was not carried out");
            assert!(o.acquired_after_fault.unwrap_or(0) > 0, "{what}: no recovery");
        }
        if o.fault == "stall" {
            assert_eq!(o.stalls.len(), 1, "{what}");
            let st = &o.stalls[0];
            assert!(st.renew_error.is_some(), "{what}: the frozen holder renewed");
            assert!(!st.stale_write_accepted, "{what}: its stale write was accepted");
            assert!(st.takeover_fence > st.fence.unwrap(), "{what}: {st:?}");
            assert!(st.asleep_ms >= st.ttl_ms, "{what}: not frozen past its TTL: {st:?}");
            assert!(o.stale_writes_rejected >= 1 && o.overruns >= 1, "{what}");
        }
        if o.fault == "break" {
            assert_eq!(o.breaks.len(), 1, "{what}");
            let b = &o.breaks[0];
            assert!(b.released, "{what}: force_release broke nothing: {b:?}");
            assert_eq!(b.broken_fence, b.fence, "{what}: {b:?}");
            assert!(b.owner.is_some(), "{what}: inspect showed no owner: {b:?}");
            assert!(b.renew_error.is_some(), "{what}: the broken holder renewed");
            assert!(!b.stale_write_accepted, "{what}: its stale write was accepted");
            assert!(b.takeover_fence > b.fence.unwrap(), "{what}: {b:?}");
            // Someone took over while the broken holder still believed it
            // held the lock: that is what the refused write is about.
            assert!(b.overlapped_after_break >= 1, "{what}: {b:?}");
            assert!(o.stale_writes_rejected >= 1, "{what}");
        }
        if o.fault == "freeze" {
            assert_eq!(o.freezes.len(), 1, "{what}");
            let f = &o.freezes[0];
            assert_eq!(f.exit_code, Some(76), "{what}: {f:?}");
            assert!(f.writes_after_sigterm.is_some_and(|n| n > 0), "{what}: it stopped at SIGTERM");
            assert_eq!(f.writes_after_lease_end, 0, "{what}: {f:?}");
            assert!(f.last_write_before_lease_end_ms > 0.0, "{what}: {f:?}");
            assert!(f.last_write_before_takeover_ms.is_some_and(|m| m > 0.0), "{what}: {f:?}");
        }
    }
    assert_eq!(code, Some(0), "every run was safe, so the exit status must be 0");
    outcomes
}

fn errors_during(outcomes: &[Outcome], backend: &str, fault: &str) -> u64 {
    let o = outcomes.iter().find(|o| o.backend == backend && o.fault == fault).unwrap();
    o.errors
}

#[test]
fn memory_and_sqlite_with_a_frozen_holder() {
    assert_safe(&["--backends", "memory,sqlite", "--faults", "none,stall"], 3);
}

#[test]
fn sqlite_with_its_holder_broken_by_force_release() {
    assert_safe(&["--backends", "sqlite", "--faults", "break"], 1);
}

#[test]
fn redis_server_killed_holder_frozen_and_path_frozen() {
    let o = assert_safe(&["--backends", "redis", "--faults", "restart,stall,freeze"], 3);
    // The server was really down: calls failed while it was.
    assert!(errors_during(&o, "redis", "restart") > 0);
}

#[test]
fn redis_quorum_master_killed_and_redis_cluster_master_killed() {
    let o = assert_safe(&["--backends", "redis-quorum,redis-cluster", "--faults", "restart"], 2);
    assert!(errors_during(&o, "redis-cluster", "restart") > 0);
}

#[test]
fn pg_sessions_terminated_server_crashed_holder_frozen_and_path_frozen() {
    // Someone else's session on the shared server: terminating the plugin's
    // sessions must leave it alone.
    let url = std::env::var("BEXT_PG_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let sep = if url.contains('?') { '&' } else { '?' };
    let bystander_url = format!("{url}{sep}application_name=bystander_{}", std::process::id());
    let mut bystander = postgres::Client::connect(&bystander_url, postgres::NoTls)
        .expect("connect to the shared PostgreSQL server");
    let o = assert_safe(
        &[
            "--backends",
            "pg,pg-restart,pg-advisory",
            "--faults",
            "none,terminate,stall,restart,freeze",
        ],
        7,
    );
    assert!(errors_during(&o, "pg-restart", "restart") > 0);
    let one: i32 = bystander.query_one("SELECT 1", &[]).expect("the bystander survived").get(0);
    assert_eq!(one, 1);
}

#[test]
fn etcd_member_killed_holder_frozen_and_path_frozen() {
    let o = assert_safe(&["--backends", "etcd", "--faults", "restart,stall,freeze"], 3);
    assert!(errors_during(&o, "etcd", "restart") > 0);
}

#[test]
fn mysql_sessions_killed_server_crashed_holder_frozen_and_path_frozen() {
    let o = assert_safe(
        &[
            "--backends",
            "mysql,mysql-restart,mysql-get-lock",
            "--faults",
            "none,terminate,stall,restart,freeze",
        ],
        7,
    );
    assert!(errors_during(&o, "mysql-restart", "restart") > 0);
}

#[test]
fn nats_node_killed_holder_frozen_and_path_frozen() {
    // No check that the restart cost errors: the client reconnects and
    // resends within `op_timeout_ms`, so a 300 ms outage may cost none.
    // `assert_safe` still requires the restart carried out and locks
    // granted after it.
    assert_safe(&["--backends", "nats,nats-3", "--faults", "none,restart,stall,freeze"], 7);
}

#[test]
fn every_worker_waiting_with_lock_wait_instead_of_polling() {
    // The same checks with every acquisition a `lock_wait` through the
    // loader (the plugin's notified wait, or the host's polling fallback):
    // the baseline and a frozen holder on each main backend, about 15 s.
    let o = assert_safe(
        &[
            "--wait",
            "--wait-ms",
            "1000",
            "--backends",
            "memory,sqlite,redis,pg,etcd",
            "--faults",
            "none,stall",
        ],
        9,
    );
    for o in &o {
        assert!(o.acquire.starts_with("lock_wait"), "{} / {}: {}", o.backend, o.fault, o.acquire);
    }
}

#[test]
fn a_lock_that_does_not_exclude_is_caught() {
    // Memory instances without a shared namespace each have their own
    // table: every thread "holds" the key at once.
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_bext-lock-safety"));
    let so = dir.parent().unwrap().join("libbext_locking_memory.so");
    let so = so.to_str().unwrap();
    let (code, outcomes) = safety(&["--plugin", so, "--config", "{}", "--faults", "none"]);
    assert_eq!(code, Some(1), "overlaps must fail the checker");
    assert_eq!(outcomes.len(), 1);
    let o = &outcomes[0];
    assert_eq!(o.status, Status::Unsafe);
    assert!(o.overlaps > 0 && o.fence_violations > 0, "{o:#?}");
    assert!(o.problems.iter().any(|p| p.contains("overlap")), "{:?}", o.problems);
}

#[test]
fn a_lock_that_does_not_exclude_is_caught_when_workers_wait() {
    // The same broken lock, every acquisition a `lock_wait`: the waits
    // return at once, and the checker must still see the overlaps.
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_bext-lock-safety"));
    let so = dir.parent().unwrap().join("libbext_locking_memory.so");
    let so = so.to_str().unwrap();
    let (code, outcomes) =
        safety(&["--wait", "--plugin", so, "--config", "{}", "--faults", "none"]);
    assert_eq!(code, Some(1), "overlaps must fail the checker");
    let o = &outcomes[0];
    assert!(o.acquire.starts_with("lock_wait"), "{}", o.acquire);
    assert_eq!(o.status, Status::Unsafe);
    assert!(o.overlaps > 0 && o.fence_violations > 0, "{o:#?}");
}
