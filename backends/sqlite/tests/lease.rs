//! Lease semantics specific to the SQLite backend, checked against the rows
//! themselves: fences never reset, renew never re-creates, release expires in
//! place, time is the wall clock read once the lock is decided, and a busy
//! database is an error rather than an answer.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_sqlite::{Sqlite, SqliteConfig, SqlitePlugin};

fn open(path: &std::path::Path) -> SqlitePlugin {
    Sqlite::open(path).expect("open lock database")
}

#[test]
fn fence_keeps_rising_across_release_takeover_and_reopen() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let mut fences = Vec::new();
    {
        let a = open(&path);
        for _ in 0..3 {
            let h = a.try_lock("job", 30_000).unwrap().unwrap();
            fences.push(h.fence.unwrap());
            a.release(h).unwrap();
        }
        // Released rows stay, expired, so the fence is not reset.
        let (_, expires, fence) = common::row(&path, "job").expect("released row is kept");
        assert_eq!(expires, 0, "release expires the row in place");
        assert_eq!(fence, fences[2] as i64);
        // Takeover of an expired lease.
        let _stale = a.try_lock("job", 50).unwrap().unwrap();
        fences.push(_stale.fence.unwrap());
        std::thread::sleep(Duration::from_millis(120));
        let h = a.try_lock("job", 30_000).unwrap().unwrap();
        fences.push(h.fence.unwrap());
        a.release(h).unwrap();
        a.cleanup();
    }
    // A new instance (a restarted process) continues from the file.
    let b = Sqlite::open(&path).unwrap();
    let h = b.try_lock("job", 30_000).unwrap().unwrap();
    fences.push(h.fence.unwrap());
    assert_eq!(fences, vec![1, 2, 3, 4, 5, 6], "one step per acquisition, never reset");
    // Fences are per key: a new key starts at 1.
    assert_eq!(b.try_lock("other", 30_000).unwrap().unwrap().fence, Some(1));
}

#[test]
fn renew_never_creates_or_revives_a_row() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let a = open(&path);
    // A handle for a key that was never locked.
    let h = a.try_lock("real", 30_000).unwrap().unwrap();
    let ghost = bext_locking::LockHandle { key: "ghost".into(), ..h.clone() };
    assert!(a.renew(&ghost).is_err());
    assert!(common::row(&path, "ghost").is_none(), "renew inserted a row");

    // An expired lease stays expired after a failed renew.
    let short = a.try_lock("short", 50).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(120));
    let before = common::row(&path, "short").unwrap();
    let err = a.renew(&short).unwrap_err();
    assert!(err.contains("no longer held"), "{err}");
    assert_eq!(common::row(&path, "short").unwrap(), before, "failed renew changed the row");

    // A live renew moves the expiry forward by the handle's TTL from now.
    let (_, before, _) = common::row(&path, "real").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let t0 = common::wall_ms();
    a.renew(&h).unwrap();
    let t1 = common::wall_ms();
    let (_, after, _) = common::row(&path, "real").unwrap();
    assert!(after > before, "renew did not extend: {before} -> {after}");
    assert!(
        (t0 + 30_000..=t1 + 30_000).contains(&after),
        "expiry {after} is not the renew's time ({t0}..={t1}) + ttl"
    );
}

#[test]
fn expiry_is_wall_clock_milliseconds() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let a = open(&path);
    let before = common::wall_ms();
    let _h = a.try_lock("k", 12_345).unwrap().unwrap();
    let after = common::wall_ms();
    let (_, expires, _) = common::row(&path, "k").unwrap();
    assert!(
        (before + 12_345..=after + 12_345).contains(&expires),
        "expires_at_ms {expires} not within [{before}, {after}] + ttl"
    );
}

#[test]
fn database_is_in_wal_mode() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let _a = open(&path);
    let mode: String =
        common::raw(&path).query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

/// Holds the write lock of `path` from a plain connection until dropped.
struct WriteLock {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriteLock {
    fn take(path: &std::path::Path) -> Self {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let path = path.to_owned();
        let thread = std::thread::spawn(move || {
            let c = common::raw(&path);
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
            c.execute_batch("COMMIT").unwrap();
        });
        held_rx.recv().expect("writer thread took the lock");
        Self { release: Some(release_tx), thread: Some(thread) }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn busy_past_the_timeout_is_an_error_not_contention() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let config = SqliteConfig { busy_timeout_ms: Some(100), ..SqliteConfig::new(&path) };
    let a = SqlitePlugin::from_config(config).unwrap();
    let h = a.try_lock("held", 30_000).unwrap().unwrap();

    let writer = WriteLock::take(&path);
    let started = Instant::now();
    let err = a.try_lock("free", 30_000).expect_err("a busy database must be Err, not Ok(None)");
    assert!(err.contains("busy_timeout_ms (100 ms)"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(90), "gave up before the busy timeout");
    assert!(a.renew(&h).is_err(), "renew while busy must fail: the lease cannot be confirmed");
    assert!(a.release(h.clone()).is_err(), "release while busy must report the failure");
    drop(writer);

    // Once the writer is gone everything works again, and nothing was lost.
    a.renew(&h).unwrap();
    a.release(h).unwrap();
    a.release(a.try_lock("free", 30_000).unwrap().unwrap()).unwrap();
}

#[test]
fn lease_starts_when_the_lock_is_decided_not_when_the_call_began() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let (a, b) = (open(&path), open(&path));
    let writer = WriteLock::take(&path);
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let h = a.try_lock("k", 600).unwrap().expect("acquired after the wait");
        (started.elapsed(), h, a)
    });
    std::thread::sleep(Duration::from_millis(900));
    drop(writer);
    let (waited, _h, _a) = waiter.join().unwrap();
    assert!(waited >= Duration::from_millis(850), "try_lock did not wait for the writer");
    // Had the lease been measured from the call's start, it would have run
    // out before the call even returned.
    assert_eq!(b.try_lock("k", 600).unwrap(), None, "lease ended early: measured from the call");
}

#[test]
fn threads_on_one_instance_and_cleanup_under_load() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let a = Arc::new(open(&path));
    let holders = AtomicUsize::new(0);
    let acquired = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(7);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..6)
            .map(|_| {
                let (a, holders, acquired, stop, barrier) =
                    (&a, &holders, &acquired, &stop, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let mut errors_after_cleanup = 0;
                    while errors_after_cleanup < 3 {
                        match a.try_lock("shared", 30_000) {
                            Ok(Some(h)) => {
                                assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "overlap");
                                acquired.fetch_add(1, Ordering::Relaxed);
                                holders.fetch_sub(1, Ordering::SeqCst);
                                let _ = a.release(h);
                            }
                            Ok(None) => std::thread::yield_now(),
                            Err(e) => {
                                assert!(stop.load(Ordering::SeqCst), "error before cleanup: {e}");
                                assert!(e.contains("cleaned up"), "{e}");
                                errors_after_cleanup += 1;
                            }
                        }
                    }
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        a.cleanup();
        for w in workers {
            w.join().unwrap();
        }
    });
    assert!(acquired.into_inner() > 0);
    a.cleanup(); // idempotent
}

#[test]
fn tables_in_one_file_are_independent() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let one = open(&path);
    let two = SqlitePlugin::from_config(SqliteConfig {
        table: Some("other_locks".into()),
        ..SqliteConfig::new(&path)
    })
    .unwrap();
    let _h1 = one.try_lock("k", 30_000).unwrap().unwrap();
    let h2 = two.try_lock("k", 30_000).unwrap().expect("another table is another lock space");
    assert_eq!(h2.fence, Some(1));
}

#[test]
fn first_open_waits_for_a_writer_in_rollback_mode() {
    // Another program is writing to the (not yet WAL) file when the first
    // instance opens it: switching to WAL must wait for it, not fail.
    let dir = common::temp_dir();
    let path = dir.path().join("app.db");
    common::raw(&path).execute_batch("CREATE TABLE app (x); PRAGMA journal_mode=DELETE;").unwrap();
    let c = common::raw(&path);
    c.execute_batch("BEGIN IMMEDIATE; INSERT INTO app VALUES (1);").unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        c.execute_batch("COMMIT").unwrap();
    });
    let started = Instant::now();
    let p = Sqlite::open(&path).unwrap_or_else(|e| panic!("open during a write: {e}"));
    writer.join().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "did not wait for the writer");
    p.try_lock("k", 1_000).unwrap().unwrap();
}
