//! The guard and `run_exclusive` on a real backend: the memory plugin, both
//! linked in and through its `.so`.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bext_locking::{LockGuard, LockingHint, LockingPlugin, ReleaseError, RunError, run_exclusive};
use bext_locking_memory::{Memory, MemoryPlugin};

/// The renewal due at 300 ms has until about 590 ms, room for a loaded machine.
const TTL: Duration = Duration::from_millis(900);
const PATIENCE: Duration = Duration::from_secs(10);

/// Two "hosts" sharing one lock table.
fn pair(ns: &str) -> (Arc<dyn LockingPlugin>, Arc<dyn LockingPlugin>) {
    let ns = format!("guard-{ns}-{}", std::process::id());
    (
        Arc::new(MemoryPlugin::new(Memory::shared(&ns))),
        Arc::new(MemoryPlugin::new(Memory::shared(&ns))),
    )
}

fn so_pair(ns: &str) -> (Arc<dyn LockingPlugin>, Arc<dyn LockingPlugin>) {
    let lib = bext_locking_loader::load(bext_locking_test_support::plugin_path("memory")).unwrap();
    let config = serde_json::json!({ "namespace": format!("guard-so-{ns}") }).to_string();
    (Arc::from(lib.create(&config).unwrap()), Arc::from(lib.create(&config).unwrap()))
}

fn holds_past_its_ttl_and_frees_on_drop(a: Arc<dyn LockingPlugin>, b: Arc<dyn LockingPlugin>) {
    let g = LockGuard::acquire(&a, "k", TTL).unwrap().expect("free");
    thread::sleep(TTL * 4);
    assert!(!g.is_lost(), "{:?}", g.lost());
    assert!(b.try_lock("k", 1000).unwrap().is_none(), "the lease ran out despite the guard");
    drop(g);
    let h = b.try_lock("k", 1000).unwrap().expect("drop did not release");
    b.release(h).unwrap();
}

#[test]
fn guard_renews_and_releases_on_memory() {
    let (a, b) = pair("renew");
    holds_past_its_ttl_and_frees_on_drop(a, b);
}

#[test]
fn guard_renews_and_releases_through_the_so() {
    let (a, b) = so_pair("renew");
    holds_past_its_ttl_and_frees_on_drop(a, b);
}

fn loss_is_reported_and_not_retried(a: Arc<dyn LockingPlugin>, b: Arc<dyn LockingPlugin>) {
    let g = LockGuard::acquire(&a, "k", TTL).unwrap().unwrap();
    let lost = g.lost_channel();
    // The instance stops working: every renew fails from now on.
    a.cleanup();
    let why = lost.recv_timeout(PATIENCE).expect("the loss was not reported");
    assert_eq!(why.key, "k");
    assert!(g.is_lost());
    // Nobody renews the lock any more: it frees itself at the TTL.
    thread::sleep(TTL * 2);
    let h = b.try_lock("k", 1000).unwrap().expect("the lost lease was kept alive");
    assert!(matches!(g.release(), Err(ReleaseError::Lost(_))));
    b.release(h).unwrap();
}

#[test]
fn renewal_failure_is_a_loss_on_memory() {
    let (a, b) = pair("loss");
    loss_is_reported_and_not_retried(a, b);
}

#[test]
fn renewal_failure_is_a_loss_through_the_so() {
    let (a, b) = so_pair("loss");
    loss_is_reported_and_not_retried(a, b);
}

#[test]
fn run_exclusive_runs_once_and_skips_on_contention() {
    let (a, b) = pair("exclusive");
    let out = run_exclusive(&a, "job", TTL, |_| {
        // While it runs, the other host skips.
        let inner = run_exclusive(&b, "job", TTL, |_| panic!("ran twice"));
        assert_eq!(inner, Ok(None));
        thread::sleep(TTL * 2);
        "done"
    });
    assert_eq!(out, Ok(Some("done")));
    // Released afterwards.
    assert_eq!(run_exclusive(&b, "job", TTL, |g| g.fence().is_some()), Ok(Some(true)));
    // A broken backend is an error, and the job does not run.
    b.cleanup();
    let out = run_exclusive(&b, "job", TTL, |_| panic!("ran without a lock"));
    assert!(matches!(out, Err(RunError::Backend(_))), "{out:?}");
    let out = LockingHint::RequireGlobal.run(Some(&b), "job", TTL, |_| panic!("ran"));
    assert!(matches!(out, Err(RunError::Backend(_))), "{out:?}");
    assert_eq!(LockingHint::Local.run(Some(&b), "job", TTL, |g| g.is_none()), Ok(Some(true)));
}
