//! `lock_wait`: the queue by create revision, shared with `try_lock`;
//! hand-off, expiry, timeout and cancel leaving nothing, FIFO order.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bext_locking::{LockAdmin, LockWait, LockingPlugin, Wait, WaitMode};
use bext_locking_etcd::{EtcdConfig, EtcdPlugin};
use common::{Clients, Cluster};

fn plugin(etcd: &Cluster) -> Arc<EtcdPlugin> {
    let mut config = EtcdConfig::with_endpoints(etcd.endpoints());
    config.key_prefix = "wait/".into();
    config.op_timeout_ms = 3_000;
    Arc::new(EtcdPlugin::from_config(config).unwrap())
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(3)
}

/// The queue keys of lock `key` and the leases they are on.
fn queue(etcd: &Cluster, p: &EtcdPlugin, key: &str) -> Vec<i64> {
    let (start, end) = p.queue_range(key);
    etcd.client()
        .range(&start, &end, deadline())
        .unwrap()
        .into_iter()
        .map(|(_, kv)| kv.lease)
        .collect()
}

/// Waits (up to 10 s) until `key` has `n` queue keys; their leases.
fn queued(etcd: &Cluster, p: &EtcdPlugin, key: &str, n: usize) -> Vec<i64> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let q = queue(etcd, p, key);
        if q.len() == n || Instant::now() > until {
            assert_eq!(q.len(), n, "queue of `{key}`");
            return q;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lease_gone(etcd: &Cluster, lease: i64) -> bool {
    etcd.client().lease_time_to_live(lease, deadline()).unwrap().is_none()
}

fn spawn_wait(
    p: &Arc<EtcdPlugin>,
    key: &str,
    wait: &Wait,
) -> std::thread::JoinHandle<Option<bext_locking::Acquired>> {
    let (p, key, wait) = (p.clone(), key.to_owned(), wait.clone());
    std::thread::spawn(move || p.lock_wait(&key, 30_000, None, &wait).unwrap())
}

#[test]
fn a_release_hands_the_lock_to_the_waiter_which_renews_and_releases_it() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    assert_eq!(p.wait_mode(), WaitMode::Fifo);
    let h = p.try_lock("k", 30_000).unwrap().unwrap();
    let t = spawn_wait(&p, "k", &Wait::new(Duration::from_secs(20)));
    queued(&etcd, &p, "k", 1);
    assert!(!t.is_finished());
    p.release(h.clone()).unwrap();
    let got = t.join().unwrap().expect("the waiter gets the lock");
    assert!(got.handle.fence > h.fence);
    assert!(queue(&etcd, &p, "k").is_empty(), "the waiter left the queue when it took the lock");
    assert!(p.try_lock("k", 30_000).unwrap().is_none(), "the waiter holds it");
    p.renew(&got.handle).unwrap();
    p.release(got.handle).unwrap();
    assert!(p.try_lock("k", 30_000).unwrap().is_some(), "the waiter's release freed it");
}

#[test]
fn an_expiring_holder_wakes_the_waiter() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let h = p.try_lock("k", 1_000).unwrap().unwrap();
    let wait = Wait::new(Duration::from_secs(20));
    let got = p.lock_wait("k", 30_000, None, &wait).unwrap().expect("the expired lock");
    assert!(!wait.timed_out(), "the expiry did not wake the waiter");
    assert!(got.handle.fence > h.fence);
}

#[test]
fn a_timed_out_wait_leaves_no_queue_key_and_no_lease() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let _h = p.try_lock("k", 30_000).unwrap().unwrap();
    let wait = Wait::new(Duration::from_millis(1_500));
    let t = spawn_wait(&p, "k", &wait);
    let lease = queued(&etcd, &p, "k", 1)[0];
    assert!(t.join().unwrap().is_none());
    assert!(wait.timed_out() && !wait.is_cancelled());
    assert!(queue(&etcd, &p, "k").is_empty(), "a queue key was left behind");
    assert!(lease_gone(&etcd, lease), "the waiter's lease was left behind");
}

#[test]
fn a_cancel_from_another_thread_ends_the_wait_and_leaves_nothing() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let _h = p.try_lock("k", 30_000).unwrap().unwrap();
    let wait = Wait::new(Duration::from_secs(60));
    let t = spawn_wait(&p, "k", &wait);
    let lease = queued(&etcd, &p, "k", 1)[0];
    std::thread::sleep(Duration::from_millis(100));
    let cancelled = Instant::now();
    wait.cancel();
    assert!(t.join().unwrap().is_none());
    assert!(cancelled.elapsed() < Duration::from_secs(1), "{:?}", cancelled.elapsed());
    assert!(queue(&etcd, &p, "k").is_empty(), "a queue key was left behind");
    assert!(lease_gone(&etcd, lease), "the waiter's lease was left behind");
}

#[test]
fn ten_waiters_get_the_lock_in_the_order_they_queued() {
    const N: usize = 10;
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let h = p.try_lock("k", 30_000).unwrap().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..N {
        let (w, order) = (p.clone(), order.clone());
        threads.push(std::thread::spawn(move || {
            let got = w.lock_wait("k", 30_000, None, &Wait::new(Duration::from_secs(60))).unwrap();
            let got = got.expect("every waiter gets its turn");
            order.lock().unwrap().push(i);
            w.release(got.handle).unwrap();
        }));
        // The next one starts only once this one is in the queue.
        queued(&etcd, &p, "k", i + 1);
    }
    p.release(h).unwrap();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..N).collect::<Vec<_>>());
}

#[test]
fn try_lock_and_waiters_take_turns_and_never_overlap() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let c = etcd.client();
    // A waiter that holds blocks try_lock; its release lets try_lock in.
    let w = p.lock_wait("k", 30_000, None, &Wait::new(Duration::from_secs(5))).unwrap().unwrap();
    assert!(p.try_lock("k", 30_000).unwrap().is_none(), "try_lock took a waiter's lock");
    p.release(w.handle).unwrap();
    let h = p.try_lock("k", 30_000).unwrap().expect("free after the waiter's release");
    // A try_lock holder blocks waiters.
    assert!(
        p.lock_wait("k", 30_000, None, &Wait::new(Duration::from_millis(500))).unwrap().is_none()
    );
    p.release(h).unwrap();
    // Someone queued (a waiter of another process, here written by hand)
    // comes before try_lock, even while the lock key is free.
    let lease = c.lease_grant(30, deadline()).unwrap();
    c.put(&p.queue_key("k", lease), b"waiter", lease, deadline()).unwrap();
    assert!(p.try_lock("k", 30_000).unwrap().is_none(), "try_lock jumped the queue");
    assert!(c.lease_revoke(lease, deadline()).unwrap());
    assert!(p.try_lock("k", 30_000).unwrap().is_some(), "free once the queue is empty");
}

#[test]
fn wait_ms_zero_is_one_try_without_queueing() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let _h = p.try_lock("k", 30_000).unwrap().unwrap();
    let wait = Wait::new(Duration::ZERO);
    assert!(p.lock_wait("k", 30_000, None, &wait).unwrap().is_none());
    assert!(queue(&etcd, &p, "k").is_empty());
    assert!(p.lock_wait("free", 30_000, None, &wait).unwrap().is_some());
}

#[test]
fn through_the_so_a_waiter_gets_the_lock_a_release_frees() {
    let etcd = Cluster::single();
    let so = bext_locking_loader::load(bext_locking_test_support::plugin_path("etcd")).unwrap();
    let config = common::config(&etcd.endpoints_json(), 3_000);
    let waiter = Arc::new(so.create_ffi(&config).unwrap());
    let holder = so.create_ffi(&config).unwrap();
    assert_eq!(waiter.wait_mode(), WaitMode::Fifo);
    let h = holder.try_lock("so", 30_000).unwrap().unwrap();
    let wait = Wait::new(Duration::from_secs(20));
    let t = {
        let (waiter, wait) = (waiter.clone(), wait.clone());
        std::thread::spawn(move || waiter.lock_wait_with("so", 30_000, None, &wait).unwrap())
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished());
    holder.release(h.clone()).unwrap();
    let got = t.join().unwrap().expect("handed over through the .so");
    assert!(got.handle.fence > h.fence);
    // A cancel through the slot ends a second wait.
    let wait = Wait::new(Duration::from_secs(60));
    let t = {
        let (waiter, wait) = (waiter.clone(), wait.clone());
        std::thread::spawn(move || {
            let other = waiter.lock_wait_with("so", 30_000, None, &wait);
            other.unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    wait.cancel();
    assert!(t.join().unwrap().is_none());
}

/// The lease `key` is on and the seconds it has left.
fn lease_left(etcd: &Cluster, p: &EtcdPlugin, key: &str) -> (i64, i64, i64) {
    let kv = etcd.client().get(&p.etcd_key(key), deadline()).unwrap().expect("the key exists");
    let left = etcd.client().lease_time_to_live(kv.lease, deadline()).unwrap().expect("lease");
    (kv.lease, left, kv.create_revision)
}

#[test]
fn renew_for_moves_the_lock_to_a_lease_of_that_length_keeping_fence_and_owner() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let h = p.try_lock_owned_typed("k", 30_000, Some("me")).unwrap().unwrap();
    let (first, left, created) = lease_left(&etcd, &p, "k");
    assert!(left > 20, "{left}");
    p.renew_for(&h, 3_000).unwrap();
    let (second, left, still) = lease_left(&etcd, &p, "k");
    assert!(second != first && left <= 3, "lease {second} with {left} s left");
    assert_eq!(still, created, "the fence changed");
    assert!(lease_gone(&etcd, first), "the old lease was left behind");
    assert_eq!(p.inspect("k").unwrap().owner.as_deref(), Some("me"), "the owner key stayed behind");
    // A renew goes back to the handle's TTL.
    p.renew(&h).unwrap();
    let (third, left, _) = lease_left(&etcd, &p, "k");
    assert!(third != second && left > 20, "lease {third} with {left} s left after renew");
    // Longer than the TTL is allowed (a minimum hold).
    p.renew_for(&h, 120_000).unwrap();
    assert!(lease_left(&etcd, &p, "k").1 > 100);
    assert_eq!(p.inspect("k").unwrap().fence, h.fence);
    p.release(h.clone()).unwrap();
    assert!(p.renew_for(&h, 3_000).is_err(), "renew_for of a released lock succeeded");
    assert!(p.try_lock("k", 30_000).unwrap().is_some());
}

#[test]
fn each_waiter_sees_only_the_queue_key_just_ahead_of_it() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let c = etcd.client();
    let lease = c.lease_grant(30, deadline()).unwrap();
    // Queue keys whose names sort against their creation order, so only
    // the sort by create revision can find the predecessor.
    let mut places = Vec::new();
    for id in [3_i64, 1, 2] {
        let q = p.queue_key("k", id);
        let rev = c.put_if_absent(&q, b"w", lease, deadline()).unwrap().unwrap();
        places.push((q, rev));
    }
    let range = p.queue_range("k");
    let ahead = |rev| c.ahead(&p.etcd_key("k"), (&range.0, &range.1), rev, deadline()).unwrap();
    assert_eq!(ahead(places[0].1).predecessor, None, "the first in line has nobody ahead");
    assert_eq!(ahead(places[1].1).predecessor.as_ref(), Some(&places[0].0));
    assert_eq!(ahead(places[2].1).predecessor.as_ref(), Some(&places[1].0));
    assert!(!ahead(places[2].1).held);
    c.lease_revoke(lease, deadline()).unwrap();
}
