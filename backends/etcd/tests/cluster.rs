//! A real three-member etcd cluster on loopback: losing one member keeps
//! locks working, losing a majority makes every call fail with `Err` within
//! `op_timeout_ms` (never contention, never a hang), and fences keep rising
//! across leader changes.

mod common;

use std::time::{Duration, Instant};

use bext_locking::{LockHandle, LockingPlugin};
use bext_locking_etcd::{EtcdConfig, EtcdPlugin};
use common::Cluster;

const OP_TIMEOUT_MS: u64 = 3_000;

fn plugin(etcd: &Cluster, prefix: &str) -> EtcdPlugin {
    let mut config = EtcdConfig::with_endpoints(etcd.endpoints());
    config.key_prefix = prefix.into();
    config.op_timeout_ms = OP_TIMEOUT_MS;
    config.connect_timeout_ms = 500;
    EtcdPlugin::from_config(config).unwrap()
}

fn must_lock(p: &dyn LockingPlugin, key: &str, etcd: &Cluster) -> LockHandle {
    match p.try_lock(key, 60_000) {
        Ok(Some(h)) => h,
        other => panic!("try_lock({key}) gave {other:?}, expected a handle\n{}", etcd.logs()),
    }
}

/// Runs `call`, asserting it fails and returns within the op timeout (plus
/// slack for a loaded machine: the bound, not the speed, is the point).
fn fails_in_time<T: std::fmt::Debug>(
    what: &str,
    call: impl FnOnce() -> Result<T, String>,
) -> String {
    let started = Instant::now();
    let outcome = call();
    let took = started.elapsed();
    let limit = Duration::from_millis(OP_TIMEOUT_MS + 1_500);
    assert!(took <= limit, "{what} took {took:?}, more than op_timeout_ms + slack ({limit:?})");
    match outcome {
        Err(e) => e,
        Ok(v) => panic!("{what} without quorum gave Ok({v:?}), expected Err"),
    }
}

#[test]
fn one_member_down_keeps_working_and_a_lost_majority_fails_in_time() {
    let mut etcd = Cluster::start(3);
    let (a, b) = (plugin(&etcd, "quorum/"), plugin(&etcd, "quorum/"));
    let held = must_lock(&a, "held", &etcd);

    // Kill the leader, the member whose loss costs the most (an election).
    let first = etcd.leader(Duration::from_secs(10));
    etcd.kill(first);
    let h = must_lock(&a, "after-one-down", &etcd);
    assert!(h.fence > held.fence, "{h:?} vs {held:?}");
    a.renew(&held).expect("renew with one member down");
    assert_eq!(b.try_lock("held", 60_000).unwrap(), None, "held must stay held");
    assert_eq!(b.try_lock("after-one-down", 60_000).unwrap(), None);
    a.release(h).unwrap();
    let h = must_lock(&b, "after-one-down", &etcd);
    b.release(h).unwrap();

    // Kill a second: no quorum. Every call is an error, in time.
    let second = (0..3).find(|&i| etcd.is_running(i)).unwrap();
    etcd.kill(second);
    let e = fails_in_time("try_lock", || a.try_lock("no-quorum", 60_000));
    assert!(e.contains("try_lock(`no-quorum`)"), "{e}");
    fails_in_time("try_lock on a held key", || b.try_lock("held", 60_000));
    fails_in_time("renew", || a.renew(&held));
    fails_in_time("release", || a.release(held.clone()));

    // Bring them back: the cluster recovers and so do the locks. The lease
    // of `held` outlived the outage (leases cannot expire without a leader).
    etcd.restart(first);
    etcd.restart(second);
    etcd.wait_ready(Duration::from_secs(30));
    a.renew(&held).expect("renew after the majority came back");
    assert_eq!(b.try_lock("held", 60_000).unwrap(), None);
    let h = must_lock(&b, "after-restart", &etcd);
    assert!(h.fence > held.fence);
    b.release(h).unwrap();
    a.release(held).unwrap();
    let h = must_lock(&b, "held", &etcd);
    b.release(h).unwrap();
}

#[test]
fn fences_rise_across_leader_changes() {
    let mut etcd = Cluster::start(3);
    let (a, b) = (plugin(&etcd, "leaders/"), plugin(&etcd, "leaders/"));
    let held = must_lock(&a, "across", &etcd);
    let mut fences = vec![held.fence.unwrap()];
    let mut leaders = Vec::new();
    for round in 0..3 {
        let h = must_lock(&a, "k", &etcd);
        fences.push(h.fence.unwrap());
        a.release(h).unwrap();

        let leader = etcd.leader(Duration::from_secs(10));
        let term = etcd.status(leader).unwrap().raft_term;
        leaders.push((leader, term));
        etcd.kill(leader);

        // The first call after the kill waits out the election.
        let h = must_lock(&b, "k", &etcd);
        fences.push(h.fence.unwrap());
        assert_eq!(a.try_lock("k", 60_000).unwrap(), None, "round {round}");
        b.release(h).unwrap();
        a.renew(&held).unwrap_or_else(|e| panic!("round {round}: renew across the change: {e}"));
        assert_eq!(b.try_lock("across", 60_000).unwrap(), None, "round {round}");

        let new_leader = etcd.leader(Duration::from_secs(10));
        let new_term = etcd.status(new_leader).unwrap().raft_term;
        assert!(new_leader != leader && new_term > term, "round {round}: no new leader");
        etcd.restart(leader);
        etcd.wait_ready(Duration::from_secs(30));
    }
    assert!(
        fences.windows(2).all(|w| w[1] > w[0]),
        "fences do not strictly increase: {fences:?} (leaders {leaders:?})"
    );
    a.release(held).unwrap();
}

#[test]
fn a_waiter_whose_member_dies_watches_through_another_and_gets_the_lock() {
    use bext_locking::{LockWait, Wait};
    let mut etcd = Cluster::start(3);
    let holder = plugin(&etcd, "waitfail/");
    // Member 0 first: the one the waiter's calls and watch start at.
    let waiter = std::sync::Arc::new(plugin(&etcd, "waitfail/"));
    let h = must_lock(&holder, "k", &etcd);
    let t = {
        let waiter = waiter.clone();
        std::thread::spawn(move || {
            waiter.lock_wait("k", 60_000, None, &Wait::new(Duration::from_secs(60)))
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    etcd.kill(0);
    etcd.leader(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!t.is_finished(), "the waiter returned while the lock was held");
    holder.release(h.clone()).unwrap();
    let got = t.join().unwrap().unwrap().expect("the waiter gets the lock after the failover");
    assert!(got.handle.fence > h.fence);
    waiter.release(got.handle).unwrap();
}
