//! `lock_wait` on the shared server: hand-off, expiry, a renewing holder
//! keeps its waiters waiting, timeout and cancel leaving no consumer.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bext_locking::{ErrorKind, LockWait, LockingPlugin, Wait, WaitMode};
use bext_locking_nats::NatsPlugin;

fn open(name: &str) -> (Arc<NatsPlugin>, Arc<NatsPlugin>, String) {
    let config = common::config(name);
    let prefix = serde_json::from_str::<serde_json::Value>(&config).unwrap()["bucket_prefix"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = Arc::new(NatsPlugin::from_json(&config).unwrap());
    let b = Arc::new(NatsPlugin::from_json(&config).unwrap());
    (a, b, prefix)
}

/// The consumers on the lock bucket's stream and on the lease bucket of
/// `ttl_ms`, asked of the server by a client of this test's own.
fn consumers(prefix: &str, ttl_ms: u64) -> usize {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(common::server()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut n = 0;
        for bucket in [prefix.to_owned(), format!("{prefix}_ttl_{ttl_ms}")] {
            let mut stream = js.get_stream(format!("KV_{bucket}")).await.unwrap();
            n += stream.info().await.unwrap().state.consumer_count;
        }
        n
    })
}

fn spawn_wait(
    p: &Arc<NatsPlugin>,
    wait: &Wait,
) -> std::thread::JoinHandle<Option<bext_locking::Acquired>> {
    let (p, wait) = (p.clone(), wait.clone());
    std::thread::spawn(move || p.lock_wait("k", 30_000, None, &wait).unwrap())
}

#[test]
fn a_release_hands_the_lock_to_the_waiter() {
    let (holder, waiter, _) = open("wait_handoff");
    assert_eq!(waiter.wait_mode(), WaitMode::Notified);
    let h = holder.try_lock("k", 30_000).unwrap().unwrap();
    let t = spawn_wait(&waiter, &Wait::new(Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished(), "the waiter returned while the lock was held");
    holder.release(h.clone()).unwrap();
    let got = t.join().unwrap().expect("the waiter gets the lock");
    assert!(got.handle.fence > h.fence);
    assert!(holder.try_lock("k", 30_000).unwrap().is_none(), "the waiter holds it");
    waiter.release(got.handle).unwrap();
}

#[test]
fn an_expiring_holder_wakes_the_waiter() {
    let (holder, waiter, _) = open("wait_expiry");
    let h = holder.try_lock("k", 500).unwrap().unwrap();
    let started = Instant::now();
    let wait = Wait::new(Duration::from_secs(20));
    let got = waiter.lock_wait("k", 30_000, None, &wait).unwrap().expect("the expired lock");
    assert!(!wait.timed_out(), "the expiry did not wake the waiter");
    assert!(started.elapsed() >= Duration::from_millis(400), "taken before the lease ended");
    assert!(got.handle.fence > h.fence);
}

#[test]
fn a_renewing_holder_keeps_the_waiter_waiting() {
    let (holder, waiter, _) = open("wait_renew");
    let h = holder.try_lock("k", 500).unwrap().unwrap();
    let renewer = {
        let (holder, h) = (holder.clone(), h.clone());
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_millis(2_000);
            while Instant::now() < until {
                holder.renew(&h).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let wait = Wait::new(Duration::from_millis(1_500));
    assert!(waiter.lock_wait("k", 30_000, None, &wait).unwrap().is_none(), "took a renewed lock");
    renewer.join().unwrap();
    holder.release(h).unwrap();
}

#[test]
fn a_timed_out_wait_returns_none_and_leaves_no_consumer() {
    let (holder, waiter, prefix) = open("wait_timeout");
    let _h = holder.try_lock("k", 30_000).unwrap().unwrap();
    let wait = Wait::new(Duration::from_millis(800));
    assert!(waiter.lock_wait("k", 30_000, None, &wait).unwrap().is_none());
    assert!(wait.timed_out() && !wait.is_cancelled());
    assert_eq!(consumers(&prefix, 30_000), 0, "a waiter left a consumer behind");
    assert!(holder.try_lock("k", 30_000).unwrap().is_none(), "the holder still holds it");
}

#[test]
fn a_cancel_from_another_thread_ends_the_wait() {
    let (holder, waiter, prefix) = open("wait_cancel");
    let _h = holder.try_lock("k", 30_000).unwrap().unwrap();
    let wait = Wait::new(Duration::from_secs(60));
    let t = spawn_wait(&waiter, &wait);
    std::thread::sleep(Duration::from_millis(300));
    let cancelled = Instant::now();
    wait.cancel();
    assert!(t.join().unwrap().is_none());
    assert!(cancelled.elapsed() < Duration::from_secs(1), "{:?}", cancelled.elapsed());
    assert_eq!(consumers(&prefix, 30_000), 0, "a waiter left a consumer behind");
}

#[test]
fn renew_for_is_unsupported_and_leaves_the_lock_alone() {
    let (p, _, _) = open("wait_renew_for");
    let h = p.try_lock("k", 30_000).unwrap().unwrap();
    let e = p.renew_for(&h, 60_000).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e:?}");
    p.renew(&h).unwrap();
}

#[test]
fn through_the_so_a_release_hands_over_and_a_cancel_ends_a_wait() {
    let config = common::config("wait_so");
    let so = bext_locking_loader::load(bext_locking_test_support::plugin_path("nats")).unwrap();
    let waiter = Arc::new(so.create_ffi(&config).unwrap());
    let holder = so.create_ffi(&config).unwrap();
    assert_eq!(waiter.wait_mode(), WaitMode::Notified);
    let h = holder.try_lock("so", 30_000).unwrap().unwrap();
    let run = |wait: &Wait| {
        let (waiter, wait) = (waiter.clone(), wait.clone());
        std::thread::spawn(move || waiter.lock_wait_with("so", 30_000, None, &wait).unwrap())
    };
    let t = run(&Wait::new(Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished());
    holder.release(h.clone()).unwrap();
    let got = t.join().unwrap().expect("handed over through the .so");
    assert!(got.handle.fence > h.fence);
    let wait = Wait::new(Duration::from_secs(60));
    let t = run(&wait);
    std::thread::sleep(Duration::from_millis(300));
    wait.cancel();
    assert!(t.join().unwrap().is_none());
}
