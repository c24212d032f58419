//! Waiting for a lock (ABI 1.2): hand-off on release, timeout, cancel from
//! another thread, FIFO order, expiry, cleanup, and `renew_for`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bext_locking::{LockAdmin, LockWait, LockingPlugin, Wait, WaitMode};
use bext_locking_memory::{Memory, MemoryPlugin};

const LONG: u64 = 60_000;

/// Two instances on one table, as two hosts in one process.
fn pair(name: &str) -> (Arc<MemoryPlugin>, Arc<MemoryPlugin>) {
    let ns = format!("wait-{name}-{}", std::process::id());
    (
        Arc::new(MemoryPlugin::new(Memory::shared(&ns))),
        Arc::new(MemoryPlugin::new(Memory::shared(&ns))),
    )
}

/// Blocks until `n` waiters are queued for `key` (they queue at once, so
/// this is short; the bound only keeps a broken build from hanging).
fn until_queued(p: &MemoryPlugin, key: &str, n: usize) {
    let give_up = Instant::now() + Duration::from_secs(30);
    while p.queued(key) != n {
        assert!(Instant::now() < give_up, "{} queued, expected {n}", p.queued(key));
        thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn the_plugin_says_it_waits_in_order() {
    let p = MemoryPlugin::default();
    assert_eq!(p.wait_mode(), WaitMode::Fifo);
    let caps = p.capabilities();
    for c in ["lock_wait", "fifo", "renew_ttl"] {
        assert!(caps.iter().any(|x| x == c), "{caps:?} lacks {c}");
    }
}

#[test]
fn a_release_hands_the_lock_to_the_waiter_and_try_lock_cannot_steal_it() {
    let (a, b) = pair("handoff");
    let held = a.try_lock("k", LONG).unwrap().unwrap();
    let waiter = {
        let b = b.clone();
        thread::spawn(move || {
            b.lock_wait("k", LONG, Some("waiter"), &Wait::new(Duration::from_secs(60)))
        })
    };
    until_queued(&a, "k", 1);
    a.release(held.clone()).unwrap();
    // The release itself gave the key to the waiter: nobody can take it
    // between the release and the waiter's waking.
    assert!(a.try_lock("k", LONG).unwrap().is_none());
    let got = waiter.join().unwrap().unwrap().expect("the waiter gets the lock");
    assert!(got.handle.fence > held.fence);
    assert!(got.sent <= Instant::now());
    let info = a.inspect("k").unwrap();
    assert!(info.held);
    assert_eq!(info.owner.as_deref(), Some("waiter"));
    assert_eq!(info.fence, got.handle.fence);
    b.release(got.handle).unwrap();
    assert!(!a.inspect("k").unwrap().held);
    assert_eq!(a.queued("k"), 0);
}

#[test]
fn a_free_key_is_taken_at_once_and_a_zero_wait_is_one_try() {
    let (a, b) = pair("free");
    let got = a.lock_wait("k", LONG, None, &Wait::new(Duration::ZERO)).unwrap().unwrap();
    let none = b.lock_wait("k", LONG, None, &Wait::new(Duration::ZERO)).unwrap();
    assert!(none.is_none());
    assert_eq!(a.queued("k"), 0);
    a.release(got.handle).unwrap();
}

#[test]
fn a_timed_out_wait_returns_none_and_leaves_no_queue_entry() {
    let (a, b) = pair("timeout");
    let held = a.try_lock("k", LONG).unwrap().unwrap();
    let wait = Wait::new(Duration::from_millis(100));
    assert!(b.lock_wait("k", LONG, None, &wait).unwrap().is_none());
    assert!(wait.timed_out() && !wait.is_cancelled());
    assert_eq!(a.queued("k"), 0);
    a.release(held).unwrap();
    // Nothing was handed to the gone waiter: the key is free.
    assert!(!a.inspect("k").unwrap().held);
    assert!(b.try_lock("k", LONG).unwrap().is_some());
}

#[test]
fn a_cancel_from_another_thread_ends_the_wait_and_leaves_nothing() {
    let (a, b) = pair("cancel");
    let held = a.try_lock("k", LONG).unwrap().unwrap();
    let wait = Wait::new(Duration::from_secs(60));
    let waiter = {
        let (b, wait) = (b.clone(), wait.clone());
        thread::spawn(move || {
            let r = b.lock_wait("k", LONG, None, &wait);
            (r, Instant::now())
        })
    };
    until_queued(&a, "k", 1);
    let cancelled_at = Instant::now();
    wait.cancel();
    let (result, returned) = waiter.join().unwrap();
    assert!(result.unwrap().is_none());
    assert!(wait.is_cancelled());
    let took = returned.saturating_duration_since(cancelled_at);
    assert!(took < Duration::from_secs(1), "the wait ended {took:?} after the cancel");
    assert_eq!(a.queued("k"), 0);
    a.release(held).unwrap();
    assert!(!a.inspect("k").unwrap().held, "the cancelled waiter was handed the lock");
}

#[test]
fn twenty_queued_waiters_are_served_in_arrival_order() {
    const WAITERS: usize = 20;
    const ROUNDS: usize = 50;
    let (main, _) = pair("fifo");
    let ns = format!("wait-fifo-{}", std::process::id());
    let turn = Arc::new(AtomicUsize::new(usize::MAX));
    let order = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..WAITERS)
        .map(|i| {
            let p = MemoryPlugin::new(Memory::shared(&ns));
            let (turn, order) = (turn.clone(), order.clone());
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    // Queue only when told, so the arrival order is known.
                    while turn.load(Ordering::Acquire) != round * WAITERS + i {
                        thread::sleep(Duration::from_micros(100));
                    }
                    let wait = Wait::new(Duration::from_secs(60));
                    let got = p.lock_wait("k", LONG, None, &wait).unwrap().expect("acquired");
                    order.lock().unwrap().push(i);
                    p.release(got.handle).unwrap();
                }
            })
        })
        .collect();
    for round in 0..ROUNDS {
        // Waits behind the last round's waiters, then holds the key while
        // this round's line up one by one.
        let wait = Wait::new(Duration::from_secs(60));
        let held = main.lock_wait("k", LONG, None, &wait).unwrap().expect("the main thread's turn");
        for i in 0..WAITERS {
            turn.store(round * WAITERS + i, Ordering::Release);
            until_queued(&main, "k", i + 1);
        }
        main.release(held.handle).unwrap();
    }
    for w in workers {
        w.join().unwrap();
    }
    let order = order.lock().unwrap();
    assert_eq!(order.len(), WAITERS * ROUNDS);
    let violations = order.iter().enumerate().filter(|(n, i)| n % WAITERS != **i).count();
    assert_eq!(violations, 0, "served out of order: {order:?}");
}

#[test]
fn an_expiry_wakes_the_waiter() {
    let (a, b) = pair("expiry");
    let held = a.try_lock("k", 200).unwrap().unwrap();
    // Nobody releases: only the lease's end can hand the key over, well
    // before the wait's own deadline.
    let wait = Wait::new(Duration::from_secs(30));
    let got = b.lock_wait("k", LONG, None, &wait).unwrap().expect("woken by the expiry");
    assert!(got.handle.fence > held.fence);
    assert!(a.renew(&held).is_err());
    assert_eq!(a.queued("k"), 0);
    b.release(got.handle).unwrap();
}

#[test]
fn cleanup_ends_the_instances_waits() {
    let (a, b) = pair("cleanup");
    let held = a.try_lock("k", LONG).unwrap().unwrap();
    let waiter = {
        let b = b.clone();
        thread::spawn(move || b.lock_wait("k", LONG, None, &Wait::new(Duration::from_secs(60))))
    };
    until_queued(&a, "k", 1);
    LockingPlugin::cleanup(&*b);
    let result = waiter.join().unwrap();
    assert!(!matches!(result, Ok(Some(_))), "a cleaned-up wait returned a lock");
    assert_eq!(a.queued("k"), 0);
    a.release(held).unwrap();
    assert!(!a.inspect("k").unwrap().held);
}

#[test]
fn renew_for_sets_the_remaining_time_once() {
    let (a, b) = pair("renew-for");
    let h = a.try_lock("k", LONG).unwrap().unwrap();
    a.renew_for(&h, 500).unwrap();
    let left = a.inspect("k").unwrap().expires_in_ms.unwrap();
    assert!(left <= 500, "{left} ms left after renew_for(500)");
    a.renew(&h).unwrap();
    let left = a.inspect("k").unwrap().expires_in_ms.unwrap();
    assert!(left > 500, "renew after renew_for kept the short lease ({left} ms)");
    // A shorter lease wakes a waiter to take it at the new end.
    let waiter = {
        let b = b.clone();
        thread::spawn(move || b.lock_wait("k", LONG, None, &Wait::new(Duration::from_secs(30))))
    };
    until_queued(&a, "k", 1);
    a.renew_for(&h, 100).unwrap();
    let got = waiter.join().unwrap().unwrap().expect("woken at the shortened lease's end");
    assert!(a.renew_for(&h, 1_000).is_err(), "renew_for of a lost lock succeeded");
    b.release(got.handle.clone()).unwrap();
    assert!(b.renew_for(&got.handle, 1_000).is_err(), "renew_for after release succeeded");
}
