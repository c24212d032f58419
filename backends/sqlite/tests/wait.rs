//! `lock_wait` and `renew_for`: hand-off within an instance, between
//! instances and between processes, expiry, timeout, cancellation.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bext_locking::{LockWait, LockingPlugin, Wait, WaitMode};
use bext_locking_sqlite::{Sqlite, SqlitePlugin};

const CHILD_ENV: &str = "BEXT_SQLITE_WAIT_CHILD";
const ROUNDS: usize = 10;

fn open(path: &std::path::Path) -> Arc<SqlitePlugin> {
    Arc::new(Sqlite::open(path).unwrap())
}

#[test]
fn a_release_by_another_connection_hands_the_lock_to_the_waiter() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let (holder, waiter) = (open(&path), open(&path));
    assert_eq!(waiter.wait_mode(), WaitMode::Notified);
    let h = holder.try_lock("k", 30_000).unwrap().unwrap();
    let w = waiter.clone();
    let t = std::thread::spawn(move || {
        w.lock_wait("k", 30_000, None, &Wait::new(Duration::from_secs(20)))
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!t.is_finished(), "the waiter returned while the lock was held");
    holder.release(h.clone()).unwrap();
    let got = t.join().unwrap().unwrap().expect("the waiter gets the lock");
    assert!(got.handle.fence > h.fence);
    assert!(holder.try_lock("k", 30_000).unwrap().is_none(), "the waiter holds it now");
}

#[test]
fn a_release_on_the_same_instance_wakes_its_own_waiter() {
    let dir = common::temp_dir();
    let p = open(&dir.path().join("locks.db"));
    let h = p.try_lock("k", 30_000).unwrap().unwrap();
    let w = p.clone();
    let t = std::thread::spawn(move || {
        w.lock_wait("k", 30_000, None, &Wait::new(Duration::from_secs(20)))
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!t.is_finished());
    p.release(h).unwrap();
    assert!(t.join().unwrap().unwrap().is_some());
}

#[test]
fn an_expiring_holder_wakes_the_waiter_without_any_commit() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let (holder, waiter) = (open(&path), open(&path));
    holder.try_lock("k", 400).unwrap().unwrap();
    let started = Instant::now();
    let wait = Wait::new(Duration::from_secs(20));
    let got = waiter.lock_wait("k", 30_000, None, &wait).unwrap();
    assert!(got.is_some(), "the waiter gets the expired lock");
    assert!(
        !wait.timed_out(),
        "the expiry did not wake the waiter: it got the lock only at its deadline"
    );
    assert!(started.elapsed() >= Duration::from_millis(350), "taken before the lease ended");
}

#[test]
fn a_timed_out_wait_returns_none_and_leaves_the_row_as_it_was() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let (holder, waiter) = (open(&path), open(&path));
    let h = holder.try_lock("k", 30_000).unwrap().unwrap();
    let before = common::row(&path, "k");
    let wait = Wait::new(Duration::from_millis(300));
    assert!(waiter.lock_wait("k", 30_000, None, &wait).unwrap().is_none());
    assert!(wait.timed_out() && !wait.is_cancelled());
    assert_eq!(common::row(&path, "k"), before, "a waiter that gave up changed the row");
    holder.renew(&h).unwrap();
}

#[test]
fn a_cancel_from_another_thread_ends_the_wait() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let (holder, waiter) = (open(&path), open(&path));
    holder.try_lock("k", 30_000).unwrap().unwrap();
    let wait = Wait::new(Duration::from_secs(60));
    let w = (waiter.clone(), wait.clone());
    let t = std::thread::spawn(move || w.0.lock_wait("k", 30_000, None, &w.1));
    std::thread::sleep(Duration::from_millis(200));
    let cancelled = Instant::now();
    wait.cancel();
    assert!(t.join().unwrap().unwrap().is_none());
    assert!(cancelled.elapsed() < Duration::from_secs(1), "{:?}", cancelled.elapsed());
    assert!(wait.is_cancelled());
}

#[test]
fn renew_for_sets_the_remaining_time_once_and_fails_when_lost() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let p = open(&path);
    let h = p.try_lock("k", 1_000).unwrap().unwrap();
    p.renew_for(&h, 60_000).unwrap();
    let (_, expires, _) = common::row(&path, "k").unwrap();
    let left = expires - common::wall_ms();
    assert!((55_000..=60_000).contains(&left), "{left} ms left after renew_for(60 s)");
    p.renew_for(&h, 100).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(p.renew_for(&h, 60_000).is_err(), "renew_for revived an expired lease");
    let other = p.try_lock("k", 1_000).unwrap().expect("the shortened lease ended");
    assert!(p.renew_for(&h, 60_000).is_err(), "renew_for of a stale handle succeeded");
    p.renew(&other).unwrap();
}

/// Through the `.so` in two processes: a child holds `handoff-i`, waits
/// 100 ms, releases it and says when (by the wall clock, which both
/// processes share); this process waits for it meanwhile. Prints the
/// hand-off latency, a rough figure for the docs, not a check.
#[test]
fn a_release_in_another_process_hands_the_lock_over() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let so = bext_locking_loader::load(common::so_path()).unwrap();
    let waiter = so.create_ffi(&common::config_json(&path)).unwrap();
    assert_eq!(waiter.wait_mode(), WaitMode::Notified);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_holds_and_releases", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let mut next = |prefix: &str| loop {
        let line = lines.next().expect("the child stopped talking");
        // libtest may print its own words before ours on the first line.
        if let Some((_, rest)) = line.split_once(prefix) {
            break rest.trim().to_owned();
        }
    };
    let mut latencies = Vec::new();
    for i in 0..ROUNDS {
        let key = format!("handoff-{i}");
        next(&format!("HELD {i}"));
        let got = waiter.lock_wait(&key, 30_000, Duration::from_secs(20)).unwrap();
        let got_at = wall_ns();
        let released_at: u128 = next(&format!("RELEASED {i} ")).parse().unwrap();
        let handle = got.expect("the waiter gets the lock the child released");
        assert_eq!(handle.fence, Some(2));
        assert!(got_at >= released_at, "taken before the child released it");
        latencies.push(Duration::from_nanos((got_at - released_at) as u64));
        waiter.release(handle).unwrap();
    }
    assert!(child.wait().unwrap().success());
    latencies.sort();
    eprintln!(
        "cross-process hand-off over {ROUNDS} rounds: p50 {:?}, max {:?}",
        latencies[ROUNDS / 2],
        latencies[ROUNDS - 1]
    );
}

/// The child side of the test above; does nothing unless started by it.
#[test]
fn child_holds_and_releases() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    let p = common::so_instance(std::path::Path::new(&path));
    for i in 0..ROUNDS {
        let h = p.try_lock(&format!("handoff-{i}"), 30_000).unwrap().unwrap();
        println!("HELD {i}");
        std::thread::sleep(Duration::from_millis(100));
        p.release(h).unwrap();
        println!("RELEASED {i} {}", wall_ns());
    }
}

fn wall_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}
