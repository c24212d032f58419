//! ABI 1.2 keeps its promise to plugins built before it: the `abi-1-1`
//! fixture (a frozen copy of the 1.1 vtable, ending at `stats`) and the
//! `abi-1-0` one load in today's loader; their 1.1 slots (for `abi-1-1`)
//! work; a wait on them falls back to polling `try_lock` and still hands the
//! lock to the waiter when the holder releases, times out and can be
//! cancelled; and `renew_for`, which they lack, is reported as unsupported
//! with a clear message, without anything being called.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bext_locking::{ErrorKind, LockWait, LockingPlugin, Wait, WaitMode};
use bext_locking_abi_tests::plugin;
use bext_locking_ffi::{BEXT_LOCKING_VTABLE_V1_1_SIZE, BEXT_LOCKING_VTABLE_V1_SIZE};
use bext_locking_loader::{FfiPlugin, load};

/// Two instances of a fixture that see each other's locks.
fn pair(fixture: &str, namespace: &str) -> (Arc<FfiPlugin>, Arc<FfiPlugin>) {
    let loaded = load(plugin(fixture)).expect("the fixture loads");
    let config = format!(r#"{{"namespace":"{namespace}"}}"#);
    (Arc::new(loaded.create_ffi(&config).unwrap()), Arc::new(loaded.create_ffi(&config).unwrap()))
}

#[test]
fn the_1_1_fixture_loads_with_the_1_1_size_and_no_1_2_slots() {
    let loaded = load(plugin("fixture-abi-1-1")).expect("the 1.1 plugin loads");
    assert_eq!(loaded.name(), "abi-1-1");
    assert_eq!(loaded.slots().struct_size, BEXT_LOCKING_VTABLE_V1_1_SIZE);
    assert_eq!(loaded.abi_minor(), 1);
    for slot in ["inspect", "force_release", "stats", "try_lock"] {
        assert!(loaded.has_slot(slot), "{slot}");
    }
    for slot in ["lock_wait", "cancel_wait", "renew_for"] {
        assert!(!loaded.has_slot(slot), "{slot}");
    }
    let d = loaded.describe().unwrap();
    assert_eq!((d.abi_version, d.abi_minor), (1, 1));
    // What the fixtures' small lock has: statistics, counted by the ffi.
    assert_eq!(d.capabilities, ["stats"]);
}

#[test]
fn the_1_1_fixture_serves_its_1_1_slots() {
    let (a, b) = pair("fixture-abi-1-1", "compat-1-1-slots");
    let h = a.try_lock_as("compat11/k", 30_000, Some("host:1")).unwrap().expect("free key");
    assert_eq!(b.try_lock("compat11/k", 30_000), Ok(None));
    let stats = a.stats().expect("the stats slot is called");
    assert_eq!(stats.acquired, 1, "{stats:?}");
    // The inspect slot is there and called: the answer comes from the
    // plugin (its small lock cannot inspect), not from the host.
    let e = b.inspect("compat11/k").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(!e.message.contains("has no `inspect` slot"), "{e}");
    a.release(h).unwrap();
}

/// A waiter on `fixture` polls, and gets the lock once the holder releases.
fn a_waiter_gets_the_lock_after_release(fixture: &str, minor: u32) {
    let (a, b) = pair(fixture, &format!("{fixture}-handoff"));
    assert_eq!(b.wait_mode(), WaitMode::Polling);
    assert_eq!(LockWait::wait_mode(&*b), WaitMode::Polling);
    let key = "compat/handoff";
    let held = a.try_lock(key, 30_000).unwrap().expect("free key");
    let waiter = {
        let b = Arc::clone(&b);
        thread::spawn(move || {
            let start = Instant::now();
            let got = b.lock_wait(key, 30_000, Duration::from_secs(20));
            (got, start.elapsed())
        })
    };
    // The waiter is polling a held key meanwhile.
    thread::sleep(Duration::from_millis(150));
    assert!(!waiter.is_finished(), "the wait ended while the key was held");
    a.release(held).unwrap();
    let (got, waited) = waiter.join().unwrap();
    let handle = got.expect("no error").expect("the waiter gets the lock after the release");
    assert!(waited < Duration::from_secs(20), "it waited for the whole timeout");
    assert_eq!(handle.key, key);
    // The waiter holds it now: the old holder is refused.
    assert_eq!(a.try_lock(key, 30_000), Ok(None), "{fixture} (ABI 1.{minor})");
    b.release(handle).unwrap();
}

#[test]
fn a_wait_on_the_1_1_fixture_polls_and_is_handed_the_lock() {
    a_waiter_gets_the_lock_after_release("fixture-abi-1-1", 1);
}

#[test]
fn a_wait_on_the_1_0_fixture_polls_and_is_handed_the_lock() {
    let loaded = load(plugin("fixture-abi-1-0")).unwrap();
    assert_eq!(loaded.slots().struct_size, BEXT_LOCKING_VTABLE_V1_SIZE);
    a_waiter_gets_the_lock_after_release("fixture-abi-1-0", 0);
}

#[test]
fn a_polling_wait_times_out_and_can_be_cancelled() {
    let (a, b) = pair("fixture-abi-1-1", "compat-1-1-timeout");
    let key = "compat/timeout";
    let held = a.try_lock(key, 30_000).unwrap().expect("free key");
    assert_eq!(b.lock_wait(key, 30_000, Duration::from_millis(100)), Ok(None), "a timed-out wait");

    let wait = Wait::new(Duration::from_secs(60));
    let waiter = {
        let (b, wait) = (Arc::clone(&b), wait.clone());
        thread::spawn(move || b.lock_wait_with(key, 30_000, None, &wait))
    };
    thread::sleep(Duration::from_millis(100));
    wait.cancel();
    let got = waiter.join().unwrap();
    assert!(matches!(got, Ok(None)), "a cancelled wait: {got:?}");
    assert!(wait.is_cancelled() && !wait.timed_out());
    // Nothing was taken: the holder still holds the key and can release it.
    assert_eq!(b.try_lock(key, 30_000), Ok(None));
    a.release(held).unwrap();
    assert!(b.try_lock(key, 30_000).unwrap().is_some());
}

#[test]
fn renew_for_on_a_plugin_without_the_slot_is_unsupported_and_calls_nothing() {
    for (fixture, minor) in [("fixture-abi-1-1", 1), ("fixture-abi-1-0", 0)] {
        let (a, b) = pair(fixture, &format!("{fixture}-renew-for"));
        let h = a.try_lock("compat/renew-for", 30_000).unwrap().expect("free key");
        let e = a.renew_for(&h, 5_000).expect_err("no renew_for slot");
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        let name = fixture.trim_start_matches("fixture-");
        assert_eq!(e.message, format!("plugin `{name}` (ABI 1.{minor}) has no `renew_for` slot"));
        // The same through the LockWait trait.
        let e = LockWait::renew_for(&*a, &h, 5_000).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        // The lease is untouched and still ours.
        assert_eq!(b.try_lock("compat/renew-for", 30_000), Ok(None));
        a.renew(&h).unwrap();
        a.release(h).unwrap();
    }
}
