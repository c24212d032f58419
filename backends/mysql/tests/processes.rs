//! Separate processes contending through the `.so`, and what happens to a
//! lock when its holder is SIGKILLed: freed at once in get_lock mode (its
//! connection closes), held until the TTL in lease mode.

mod common;

use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_test_support::hammer::{Holder, RunArgs, contend};
use bext_locking_test_support::plugin_path;
use common::Scratch;

fn two_processes_contend(mode: &str) {
    let scratch = Scratch::new(&format!("procs_{mode}"));
    let config = scratch.config(mode);
    let plugin = plugin_path("mysql");
    let records = bext_locking_test_support::TempDir::new("mysql-hammer");
    let out = records.path().join("records.jsonl");
    let key = format!("{}/contended", scratch.db);
    let args = RunArgs {
        plugin: &plugin,
        config: &config,
        key: &key,
        ttl_ms: 10_000,
        duration_ms: 2_000,
        threads: 2,
        hold_us: 300,
        out: &out,
    };
    let (summaries, stats) = contend(&args, 2, mode == "lease");
    drop(records);
    for s in &summaries {
        assert!(s.contended > 0, "no contention at all: {s:?}");
    }
    eprintln!("{mode}: {} intervals, per process {:?}", stats.intervals, stats.per_pid);
}

#[test]
fn lease_two_processes_never_overlap() {
    two_processes_contend("lease");
}

#[test]
fn get_lock_two_processes_never_overlap() {
    two_processes_contend("get_lock");
}

/// Starts a holder of `key` and waits until it says it holds it.
fn holder(config: &str, key: &str, ttl_ms: u64) -> Holder {
    let holder = Holder::spawn(&plugin_path("mysql"), config, key, ttl_ms, None);
    holder.acquired(Duration::from_secs(15));
    holder
}

#[test]
fn get_lock_sigkilled_holder_frees_the_lock_within_a_second() {
    let scratch = Scratch::new("kill_gl");
    let config = scratch.config("get_lock");
    let key = format!("{}/k", scratch.db);
    // A TTL far longer than the test: only the dead connection can free it.
    let mut holder = holder(&config, &key, 600_000);
    let so = bext_locking_loader::load(plugin_path("mysql")).unwrap();
    let other = so.create(&config).unwrap();
    assert!(other.try_lock(&key, 30_000).unwrap().is_none(), "held by the other process");
    holder.kill();
    let (h, took) = common::acquire_within(&*other, &key, 30_000, Duration::from_secs(5))
        .expect("never freed after the holder died");
    assert!(took < Duration::from_secs(1), "freed only after {took:?}");
    other.release(h).unwrap();
}

#[test]
fn lease_sigkilled_holder_keeps_the_lock_until_its_ttl() {
    let scratch = Scratch::new("kill_lease");
    let config = scratch.config("lease");
    let key = format!("{}/k", scratch.db);
    let ttl = Duration::from_millis(1_500);
    let spawned = Instant::now();
    let mut holder = holder(&config, &key, ttl.as_millis() as u64);
    let seen = Instant::now();
    let so = bext_locking_loader::load(plugin_path("mysql")).unwrap();
    let other = so.create(&config).unwrap();
    holder.kill();
    assert!(other.try_lock(&key, 30_000).unwrap().is_none(), "a dead holder's lease still holds");
    let (h, _) = common::acquire_within(&*other, &key, 30_000, Duration::from_secs(5))
        .expect("never freed after the TTL");
    let at = Instant::now();
    // The holder acquired after it was spawned and before it said so; its
    // lease (on the database clock) ran for the whole TTL from then.
    assert!(
        at - spawned >= ttl,
        "freed {:?} after the holder started, before its TTL",
        at - spawned
    );
    assert!(
        at - seen < ttl + Duration::from_secs(1),
        "freed only {:?} after acquisition",
        at - seen
    );
    assert!(h.fence > Some(1), "the takeover raised the fence: {h:?}");
    other.release(h).unwrap();
}
