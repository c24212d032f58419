//! A throwaway three-node JetStream cluster on loopback.
//!
//! * Replicated buckets are refused on servers whose replicated streams do
//!   not serialize conditional writes (before 2.9.21), and hammered with
//!   their stream leader killed mid-run where they do.
//! * Single-replica buckets spread over the cluster: the node that leads
//!   the lock bucket killed mid-run while threads hammer the same keys. No
//!   two holders ever overlap, calls fail with `Err` in time while it is
//!   down (never contention), fences keep rising, and locks work again, the
//!   held one still held, once it is back.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bext_locking::{ErrorKind, LockHandle, LockingPlugin};
use bext_locking_nats::NatsPlugin;
use bext_locking_test_support::servers::nats::Cluster;

const OP_TIMEOUT_MS: u64 = 2_000;

fn plugin(nats: &Cluster, prefix: &str, replicas: u32) -> NatsPlugin {
    NatsPlugin::from_json(&config(nats, prefix, replicas))
        .unwrap_or_else(|e| panic!("create: {e:?}\n{}", nats.logs()))
}

fn config(nats: &Cluster, prefix: &str, replicas: u32) -> String {
    serde_json::json!({
        "servers": nats.urls(),
        "bucket_prefix": prefix,
        "replicas": replicas,
        "connect_timeout_ms": 500,
        "op_timeout_ms": OP_TIMEOUT_MS,
    })
    .to_string()
}

fn must_lock(p: &dyn LockingPlugin, key: &str, nats: &Cluster) -> LockHandle {
    // The first calls after a restart may fail while the node catches up:
    // retry errors (never contention) for a while.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match p.try_lock(key, 60_000) {
            Ok(Some(h)) => return h,
            Err(e) if Instant::now() < until => {
                eprintln!("try_lock({key}): {e} (retrying)");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => panic!("try_lock({key}) gave {other:?}, expected a handle\n{}", nats.logs()),
        }
    }
}

/// Threads hammering two keys through four instances while the node that
/// leads the lock bucket is killed and, after `down`, restarted. Panics on
/// an overlap or a fence that does not rise; returns the errors seen.
fn hammer_through_a_kill(nats: &mut Cluster, prefix: &str, replicas: u32, down: Duration) -> usize {
    let plugins: Vec<Arc<NatsPlugin>> =
        (0..4).map(|_| Arc::new(plugin(nats, prefix, replicas))).collect();
    let keys = ["a", "b"];
    let inside: Arc<HashMap<&str, AtomicBool>> =
        Arc::new(keys.iter().map(|k| (*k, AtomicBool::new(false))).collect());
    // Fences per key in the order the holds happened (taken while inside).
    let fences: Arc<Mutex<HashMap<&str, Vec<u64>>>> = Arc::default();
    let overlaps = Arc::new(AtomicUsize::new(0));
    let acquired_after = Arc::new(AtomicUsize::new(0));
    let back = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..8 {
        let p = plugins[t % plugins.len()].clone();
        let (inside, fences, overlaps) = (inside.clone(), fences.clone(), overlaps.clone());
        let (after, back, stop) = (acquired_after.clone(), back.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut errors = 0usize;
            let mut i = t;
            while !stop.load(Ordering::SeqCst) {
                let key = keys[i % keys.len()];
                i += 1;
                match p.try_lock(key, 10_000) {
                    Ok(Some(h)) => {
                        if inside[key].swap(true, Ordering::SeqCst) {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        fences.lock().unwrap().entry(key).or_default().push(h.fence.unwrap());
                        if back.load(Ordering::SeqCst) {
                            after.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::sleep(Duration::from_millis(2));
                        inside[key].store(false, Ordering::SeqCst);
                        if p.release(h).is_err() {
                            errors += 1;
                        }
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                    Err(_) => errors += 1,
                }
            }
            errors
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    let stream = format!("KV_{prefix}");
    let leader = nats.stream_leader(&stream, Duration::from_secs(10));
    nats.kill(leader);
    std::thread::sleep(down);
    nats.restart(leader);
    back.store(true, Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(30);
    while acquired_after.load(Ordering::SeqCst) < 20 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let errors: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();

    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once\n{}", nats.logs());
    assert!(
        acquired_after.load(Ordering::SeqCst) >= 20,
        "locks did not work again after the restart ({errors} errors)\n{}",
        nats.logs()
    );
    for (key, f) in fences.lock().unwrap().iter() {
        assert!(f.len() > 10, "{key}: only {} holds", f.len());
        assert!(f.windows(2).all(|w| w[1] > w[0]), "{key}: fences do not rise: {f:?}");
    }
    errors
}

#[test]
fn replicated_buckets_need_a_server_that_serializes_conditional_writes() {
    let mut nats = Cluster::start(3);
    let prefix = format!("r3_{}", common::rand());
    match NatsPlugin::from_json(&config(&nats, &prefix, 3)) {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e:?}");
            assert!(e.message.contains("replicas is 3") && e.message.contains("2.9.21"), "{e:?}");
        }
        // A server with the fix: the stream leader itself may die.
        Ok(p) => {
            drop(p);
            let errors = hammer_through_a_kill(&mut nats, &prefix, 3, Duration::from_secs(1));
            eprintln!("errors across the leader change: {errors}");
        }
    }
}

#[test]
fn the_lock_buckets_node_killed_mid_run_never_lets_two_hold() {
    let mut nats = Cluster::start(3);
    let prefix = format!("hammer_{}", common::rand());
    let errors = hammer_through_a_kill(&mut nats, &prefix, 1, Duration::from_secs(2));
    // Two seconds without the lock bucket: calls failed rather than hung
    // or claimed contention.
    assert!(errors > 0, "no call failed while the lock bucket's node was down");
}

#[test]
fn while_the_lock_buckets_node_is_down_every_call_fails_in_time() {
    let mut nats = Cluster::start(3);
    let prefix = format!("down_{}", common::rand());
    let (a, b) = (plugin(&nats, &prefix, 1), plugin(&nats, &prefix, 1));
    let held = must_lock(&a, "held", &nats);
    let node = nats.stream_leader(&format!("KV_{prefix}"), Duration::from_secs(10));
    nats.kill(node);
    let limit = Duration::from_millis(OP_TIMEOUT_MS + 1_500);
    for (what, call) in [
        ("try_lock", Box::new(|| a.try_lock("other", 60_000).map(|_| ())) as Box<dyn Fn() -> _>),
        ("try_lock on a held key", Box::new(|| b.try_lock("held", 60_000).map(|_| ()))),
        ("release", Box::new(|| a.release(held.clone()))),
    ] {
        let started = Instant::now();
        let outcome: Result<(), String> = call();
        let took = started.elapsed();
        let e = outcome.expect_err(what);
        assert!(e.starts_with("nats ("), "{what}: {e}");
        assert!(took <= limit, "{what} took {took:?}");
    }
    // Renew touches only the lease, whose bucket may live on another node:
    // it answers in time either way, and says "lost" only if it is.
    let started = Instant::now();
    if let Err(e) = a.renew(&held) {
        assert!(e.starts_with("nats (") && !e.contains("no longer held"), "renew: {e}");
    }
    assert!(started.elapsed() <= limit, "renew took {:?}", started.elapsed());
    nats.restart(node);
    nats.wait_ready(Duration::from_secs(30));
    let h = must_lock(&b, "after-restart", &nats);
    assert!(h.fence > held.fence, "{h:?} vs {held:?}");
    b.release(h).unwrap();
    // File storage: the lock and its lease outlived the node's restart.
    let until = Instant::now() + Duration::from_secs(20);
    while let Err(e) = a.renew(&held) {
        assert!(Instant::now() < until, "renew after the restart: {e}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(b.try_lock("held", 60_000).unwrap(), None);
    a.release(held).unwrap();
    let h = must_lock(&b, "held", &nats);
    b.release(h).unwrap();
}
