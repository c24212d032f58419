//! `Registry`: hot reload without breaking instances in use.
//!
//! Deadlines here are generous bounds against hangs, not speed checks: the
//! detection latency is measured by `benches/loader.rs`.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use bext_locking_loader::{Registry, RegistryEvent, RegistryOptions, SkipKind};
use common::*;

const BOUND: Duration = Duration::from_secs(10);

fn open(dir: &std::path::Path) -> Registry {
    Registry::open(dir, RegistryOptions::default()).expect("open registry")
}

fn is_reload_to(version: &'static str) -> impl Fn(&RegistryEvent) -> bool {
    move |e| matches!(e, RegistryEvent::Reloaded { version: v, .. } if v == version)
}

/// Polls `create` until new instances run `version`; returns how long it took.
fn until_new_instances_run(registry: &Registry, version: &str) -> Duration {
    let start = Instant::now();
    loop {
        let fresh = registry.create(NAME, "{}").expect("create");
        if version_of(&*fresh) == version {
            return start.elapsed();
        }
        assert!(start.elapsed() < BOUND, "new instances never ran {version}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn rename_replaces_v1_with_v2_while_an_old_instance_keeps_working() {
    let dir = plugin_dir();
    install(&v1(), dir.path(), "reload.so");
    let registry = open(dir.path());
    let events = registry.subscribe();
    let old = registry.create(NAME, "{}").unwrap();
    assert_eq!(version_of(&*old), "1.0.0");
    let held = old.try_lock("held/across/reload", 60_000).unwrap().unwrap();

    install(&v2(), dir.path(), "reload.so");
    let took = until_new_instances_run(&registry, "2.0.0");
    eprintln!("v2 served to new instances {took:?} after the rename");

    let (event, before) = wait_for(&events, BOUND, is_reload_to("2.0.0"));
    assert!(before.is_empty(), "{before:#?}");
    assert_eq!(
        event,
        RegistryEvent::Reloaded {
            name: NAME.into(),
            previous_version: "1.0.0".into(),
            version: "2.0.0".into(),
            path: dir.path().join("reload.so"),
        }
    );
    assert_eq!(registry.get(NAME).unwrap().version, "2.0.0");
    // The old instance still runs v1 code, and its lock is still its own.
    assert_eq!(version_of(&*old), "1.0.0");
    assert!(old.try_lock("held/across/reload", 60_000).unwrap().is_none(), "still held");
    old.renew(&held).unwrap();
    old.release(held).unwrap();
    assert!(old.try_lock("held/across/reload", 60_000).unwrap().is_some());
}

#[test]
fn overwriting_a_loaded_file_in_place_while_calls_run_does_not_crash() {
    let dir = plugin_dir();
    let path = install(&v1(), dir.path(), "reload.so");
    let registry = open(dir.path());
    let old = Arc::new(registry.create(NAME, "{}").unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (old, stop, calls) = (Arc::clone(&old), Arc::clone(&stop), Arc::clone(&calls));
            thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("busy/{t}/{i}");
                    let h = old.try_lock(&key, 10_000).unwrap().expect("free key");
                    assert!(h.lock_id.starts_with("1.0.0-"), "old instance runs v1: {h:?}");
                    old.release(h).unwrap();
                    calls.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();

    // Rewrite the very inode the registry loaded from, several times, in
    // chunks: a library mapped from this file would take SIGBUS here.
    let (b1, b2) = (fs::read(v1()).unwrap(), fs::read(v2()).unwrap());
    for round in 0..4 {
        let bytes = if round % 2 == 0 { &b2 } else { &b1 };
        let mut f = OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
        for chunk in bytes.chunks(bytes.len() / 4 + 1) {
            f.write_all(chunk).unwrap();
            thread::sleep(Duration::from_millis(5));
        }
        drop(f);
        thread::sleep(Duration::from_millis(400));
    }
    let last = until_new_instances_run(&registry, "1.0.0");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker survived");
    }
    assert!(calls.load(Ordering::Relaxed) > 0);
    eprintln!(
        "{} calls on the old instance during the overwrites; final reload {last:?}",
        calls.load(Ordering::Relaxed)
    );
    assert_eq!(version_of(&**old), "1.0.0");
}

#[test]
fn a_slowly_written_file_gives_exactly_one_reload() {
    let dir = plugin_dir();
    let path = install(&v1(), dir.path(), "reload.so");
    // A longer settle than the default keeps the test from depending on
    // how promptly this writer thread gets the CPU on a loaded machine.
    let settle = Duration::from_millis(600);
    let options = RegistryOptions { settle, ..RegistryOptions::default() };
    let registry = Registry::open(dir.path(), options).unwrap();
    let events = registry.subscribe();

    let bytes = fs::read(v2()).unwrap();
    let mut f = OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
    let chunks = 30;
    for chunk in bytes.chunks(bytes.len() / chunks + 1) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        thread::sleep(Duration::from_millis(25));
    }
    drop(f);
    let done = Instant::now();

    let (event, before) = wait_for(&events, BOUND, is_reload_to("2.0.0"));
    assert!(before.is_empty(), "events while the file was written: {before:#?}");
    assert!(done.elapsed() >= settle, "loaded before the write had settled: {event:?}");
    let after = drain(&events, settle * 3);
    assert!(after.is_empty(), "more than one reload: {after:#?}");
    assert_eq!(version_of(&*registry.create(NAME, "{}").unwrap()), "2.0.0");
}

#[test]
fn a_broken_new_file_never_replaces_a_working_plugin() {
    let dir = plugin_dir();
    install(&v1(), dir.path(), "reload.so");
    let registry = open(dir.path());
    let events = registry.subscribe();
    let full = fs::read(v2()).unwrap();

    let staging = plugin_dir();
    let truncated = write_file(staging.path(), "t", &full[..full.len() * 2 / 3]);
    install(&truncated, dir.path(), "reload.so");
    let (event, _) = wait_for(&events, BOUND, |e| matches!(e, RegistryEvent::Rejected { .. }));
    let RegistryEvent::Rejected { kind, reason, kept, .. } = &event else { unreachable!() };
    assert_eq!(*kind, SkipKind::Malformed, "{event:?}");
    assert!(reason.contains("truncated"), "{reason}");
    assert_eq!(kept.as_deref(), Some("reload-test 1.0.0"));
    assert_eq!(version_of(&*registry.create(NAME, "{}").unwrap()), "1.0.0");
    let report = registry.report();
    assert_eq!(report.loaded.len(), 1);
    assert_eq!(report.skipped[0].kind, SkipKind::Malformed);

    install(&no_entry(), dir.path(), "reload.so");
    let (event, _) = wait_for(&events, BOUND, |e| matches!(e, RegistryEvent::Rejected { .. }));
    assert!(
        matches!(&event, RegistryEvent::Rejected { kind: SkipKind::NotAPlugin, .. }),
        "{event:?}"
    );
    assert_eq!(version_of(&*registry.create(NAME, "{}").unwrap()), "1.0.0");

    // Putting the serving build back clears the complaint, without a reload.
    install(&v1(), dir.path(), "reload.so");
    let quiet = drain(&events, Duration::from_millis(800));
    assert!(quiet.is_empty(), "{quiet:#?}");
    assert!(registry.report().skipped.is_empty(), "{:#?}", registry.report());

    // A good build after the broken ones goes through.
    install(&v2(), dir.path(), "reload.so");
    wait_for(&events, BOUND, is_reload_to("2.0.0"));
    assert_eq!(version_of(&*registry.create(NAME, "{}").unwrap()), "2.0.0");
    assert!(registry.report().skipped.is_empty());
}

#[test]
fn removing_a_file_removes_the_name_for_new_instances_only() {
    let dir = plugin_dir();
    let path = install(&v1(), dir.path(), "reload.so");
    let registry = open(dir.path());
    let events = registry.subscribe();
    let old = registry.create(NAME, "{}").unwrap();
    fs::remove_file(&path).unwrap();
    let (event, _) = wait_for(&events, BOUND, |e| matches!(e, RegistryEvent::Removed { .. }));
    assert_eq!(
        event,
        RegistryEvent::Removed { name: NAME.into(), version: "1.0.0".into(), path: path.clone() }
    );
    let err = registry.create(NAME, "{}").err().expect("name is gone");
    assert!(
        err.contains("no plugin named `reload-test`") && err.contains("available: none"),
        "{err}"
    );
    assert_eq!(version_of(&*old), "1.0.0");

    install(&v2(), dir.path(), "reload.so");
    let (event, _) = wait_for(&events, BOUND, |e| matches!(e, RegistryEvent::Loaded { .. }));
    assert!(matches!(&event, RegistryEvent::Loaded { version, .. } if version == "2.0.0"));
    assert_eq!(registry.names(), vec![NAME.to_owned()]);
}

#[test]
fn v1_with_thread_locals_on_a_running_thread_is_still_replaced_by_v2() {
    let dir = plugin_dir();
    install(&v1(), dir.path(), "reload.so");
    let registry = Arc::new(open(dir.path()));
    let events = registry.subscribe();

    // A thread that calls into v1 (its try_lock registers a thread-local
    // destructor inside v1's code) and keeps running across the reload.
    let (go_on, wait) = mpsc::channel::<()>();
    let (ready, is_ready) = mpsc::channel::<()>();
    let r = Arc::clone(&registry);
    let worker = thread::spawn(move || {
        let old = r.create(NAME, "{}").unwrap();
        assert_eq!(version_of(&*old), "1.0.0");
        ready.send(()).unwrap();
        wait.recv().unwrap();
        // Still v1 after the reload; then the thread ends and v1's TLS
        // destructor runs, from a library that was never unmapped.
        assert_eq!(version_of(&*old), "1.0.0");
    });
    is_ready.recv_timeout(BOUND).unwrap();

    install(&v2(), dir.path(), "reload.so");
    wait_for(&events, BOUND, is_reload_to("2.0.0"));
    assert_eq!(version_of(&*registry.create(NAME, "{}").unwrap()), "2.0.0");
    go_on.send(()).unwrap();
    worker.join().expect("thread with v1 thread-locals ended cleanly");
    // And the v2 thread-locals of a thread that ends now are fine too.
    let r = Arc::clone(&registry);
    thread::spawn(move || assert_eq!(version_of(&*r.create(NAME, "{}").unwrap()), "2.0.0"))
        .join()
        .unwrap();
}

#[test]
fn an_insecure_new_file_is_rejected_until_its_mode_is_fixed() {
    let dir = plugin_dir();
    let registry = open(dir.path());
    assert!(registry.names().is_empty());
    let events = registry.subscribe();
    let path = install(&v1(), dir.path(), "reload.so");
    chmod(&path, 0o777);
    let (event, before) = wait_for(&events, BOUND, |e| matches!(e, RegistryEvent::Rejected { .. }));
    assert!(before.is_empty(), "{before:#?}");
    assert!(
        matches!(&event, RegistryEvent::Rejected { kind: SkipKind::Insecure, .. }),
        "{event:?}"
    );
    assert!(registry.create(NAME, "{}").is_err());
    // chmod changes ctime: the file is looked at again.
    chmod(&path, 0o755);
    let (event, _) = wait_for(&events, BOUND, |e| matches!(e, RegistryEvent::Loaded { .. }));
    assert!(matches!(&event, RegistryEvent::Loaded { version, .. } if version == "1.0.0"));
}

#[test]
fn touching_a_file_without_changing_it_does_not_reload() {
    let dir = plugin_dir();
    let path = install(&v1(), dir.path(), "reload.so");
    let registry = open(dir.path());
    let events = registry.subscribe();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::now()).unwrap();
    drop(f);
    let seen = drain(&events, Duration::from_millis(800));
    assert!(seen.is_empty(), "{seen:#?}");
}

#[test]
fn the_first_file_by_name_wins_and_the_next_takes_over_when_it_goes() {
    let dir = plugin_dir();
    let first = install(&v1(), dir.path(), "a.so");
    install(&v2(), dir.path(), "b.so");
    let registry = open(dir.path());
    let events = registry.subscribe();
    assert_eq!(registry.get(NAME).unwrap().version, "1.0.0");
    let report = registry.report();
    assert_eq!(report.skipped.len(), 1, "{report:#?}");
    assert_eq!(report.skipped[0].kind, SkipKind::Duplicate);
    assert_eq!(report.skipped[0].path, dir.path().join("b.so"));

    fs::remove_file(first).unwrap();
    let (event, _) = wait_for(&events, BOUND, is_reload_to("2.0.0"));
    assert!(matches!(&event, RegistryEvent::Reloaded { path, .. } if path.ends_with("b.so")));
    assert!(registry.report().skipped.is_empty());
}

#[test]
fn without_watching_the_host_refreshes_itself() {
    let dir = plugin_dir();
    install(&v1(), dir.path(), "reload.so");
    let options = RegistryOptions { watch: false, ..RegistryOptions::default() };
    let registry = Registry::open(dir.path(), options).unwrap();
    let events = registry.subscribe();
    install(&v2(), dir.path(), "reload.so");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(registry.get(NAME).unwrap().version, "1.0.0", "nothing polls");
    registry.reload_now();
    assert!(matches!(events.try_recv(), Ok(RegistryEvent::Reloaded { .. })));
    assert_eq!(version_of(&*registry.create(NAME, "{}").unwrap()), "2.0.0");
}

#[test]
fn opening_a_missing_folder_fails_with_its_name() {
    let dir = plugin_dir();
    let err = Registry::open(dir.path().join("nope"), RegistryOptions::default()).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn files_refused_for_an_unsafe_folder_load_once_the_folder_is_fixed() {
    let dir = plugin_dir();
    install(&v1(), dir.path(), "reload.so");
    chmod(dir.path(), 0o777);
    let registry = open(dir.path());
    let report = registry.report();
    assert!(report.loaded.is_empty(), "{report:#?}");
    assert_eq!(report.skipped[0].kind, SkipKind::Insecure);
    let events = registry.subscribe();
    chmod(dir.path(), 0o755);
    let (event, _) = wait_for(&events, BOUND, |e| matches!(e, RegistryEvent::Loaded { .. }));
    assert!(matches!(&event, RegistryEvent::Loaded { version, .. } if version == "1.0.0"));
    assert!(registry.report().skipped.is_empty());
}
