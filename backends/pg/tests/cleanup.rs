//! Advisory-mode cleanup: held locks are free when it returns, and the
//! reaper thread is joined. Alone in its test binary because it counts the
//! process's threads.

mod common;

use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use common::{Scratch, admin, base_url, free_on_server};

/// Reaper threads once their number settles on `expected` (a new thread
/// names itself a moment after it starts), or the last count after 2 s.
fn reaper_threads_become(expected: usize) -> usize {
    let started = Instant::now();
    loop {
        let n = reaper_threads();
        if n == expected || started.elapsed() > Duration::from_secs(2) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn reaper_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "bext-pg-reaper")
        .count()
}

#[test]
fn cleanup_frees_locks_and_stops_the_reaper() {
    let scratch = Scratch::new("adv_cleanup");
    let key = format!("{}/k", scratch.schema);
    let mut db = admin(&base_url());
    let before = reaper_threads();
    for _ in 0..3 {
        let p = scratch.plugin("advisory");
        let _h = p.try_lock(&key, 30_000).unwrap().unwrap();
        assert_eq!(reaper_threads_become(before + 1), before + 1);
        drop(p);
        assert_eq!(reaper_threads(), before, "drop joins the reaper");
        assert!(free_on_server(&mut db, &key), "drop frees held locks at once");
    }
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
