//! Advisory-mode cleanup: held locks are free when it returns, and the
//! reaper thread is joined; in both modes dropping an instance joins its
//! deadline thread. Alone in its test binary because it counts the
//! process's threads.

mod common;

use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use common::{Scratch, admin, base_url, free_on_server};

const REAPER: &str = "bext-pg-reaper";
const DEADLINES: &str = "bext-pg-timeout";

/// Threads named `name` once their number settles on `expected` (a new
/// thread names itself a moment after it starts), or the last count after
/// 2 s.
fn threads_become(name: &str, expected: usize) -> usize {
    let started = Instant::now();
    loop {
        let n = threads(name);
        if n == expected || started.elapsed() > Duration::from_secs(2) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn threads(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == name)
        .count()
}

#[test]
fn cleanup_frees_locks_and_stops_the_reaper() {
    let scratch = Scratch::new("adv_cleanup");
    let key = format!("{}/k", scratch.schema);
    let mut db = admin(&base_url());
    let (before, deadlines) = (threads(REAPER), threads(DEADLINES));
    for _ in 0..3 {
        let p = scratch.plugin("advisory");
        let _h = p.try_lock(&key, 30_000).unwrap().unwrap();
        assert_eq!(threads_become(REAPER, before + 1), before + 1);
        assert_eq!(threads_become(DEADLINES, deadlines + 1), deadlines + 1);
        drop(p);
        assert_eq!(threads(REAPER), before, "drop joins the reaper");
        assert_eq!(threads(DEADLINES), deadlines, "drop joins the deadline thread");
        assert!(free_on_server(&mut db, &key), "drop frees held locks at once");
    }
    let lease = scratch.plugin("lease");
    let h = lease.try_lock(&key, 30_000).unwrap().unwrap();
    lease.release(h).unwrap();
    assert_eq!(threads_become(DEADLINES, deadlines + 1), deadlines + 1);
    drop(lease);
    assert_eq!(threads(DEADLINES), deadlines, "drop joins a lease instance's deadline thread");
    // Through the .so: destroy joins it too.
    let so = bext_locking_loader::load(bext_locking_test_support::plugin_path("pg")).unwrap();
    let p = so.create(&scratch.config("advisory")).unwrap();
    let _h = p.try_lock(&key, 30_000).unwrap().unwrap();
    p.cleanup();
    assert!(free_on_server(&mut db, &key), "cleanup frees held locks at once");
    drop(p);
    // Sessions end a moment after their client says goodbye.
    let started = Instant::now();
    while scratch.sessions() > 0 {
        assert!(started.elapsed() < Duration::from_secs(2), "a connection survived cleanup");
        std::thread::sleep(Duration::from_millis(10));
    }
}
