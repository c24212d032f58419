//! A server that stops answering (behind the freezable proxy, or
//! SIGSTOPped) makes every call fail with `Err` within `op_timeout_ms`,
//! never contention and never a hang; after the thaw, calls work again and
//! the held lock is still held.

mod common;

use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_nats::NatsPlugin;
use bext_locking_test_support::proxy::Proxy;
use bext_locking_test_support::servers::nats::Cluster;

const OP_TIMEOUT_MS: u64 = 1_000;

fn in_time<T>(what: &str, call: impl FnOnce() -> Result<T, String>) -> String {
    let started = Instant::now();
    let outcome = call();
    let took = started.elapsed();
    let limit = Duration::from_millis(OP_TIMEOUT_MS + 1_500);
    assert!(took <= limit, "{what} took {took:?}, more than op_timeout_ms + slack");
    match outcome {
        Err(e) => e,
        Ok(_) => panic!("{what} through a frozen path gave Ok, expected Err"),
    }
}

fn plugin(url: String) -> NatsPlugin {
    let config = common::config_on(
        &[url],
        "freeze",
        serde_json::json!({"op_timeout_ms": OP_TIMEOUT_MS, "connect_timeout_ms": 500}),
    );
    NatsPlugin::from_json(&config).unwrap()
}

#[test]
fn a_frozen_server_gives_err_within_the_timeout() {
    let nats = Cluster::start(1);
    let proxy = Proxy::start(format!("127.0.0.1:{}", nats.members[0].port).parse().unwrap());
    let p = plugin(format!("nats://127.0.0.1:{}", proxy.port));
    let held = p.try_lock("held", 60_000).unwrap().expect("free key");
    proxy.freeze(true);
    let e = in_time("try_lock", || p.try_lock("other", 60_000));
    assert!(e.starts_with("nats (") && e.contains("try_lock(`other`)"), "{e}");
    in_time("renew", || p.renew(&held));
    in_time("release", || p.release(held.clone()));
    proxy.freeze(false);
    let until = Instant::now() + Duration::from_secs(10);
    while let Err(e) = p.renew(&held) {
        assert!(Instant::now() < until, "no recovery after the thaw: {e}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(p.try_lock("held", 60_000).unwrap(), None, "still held after the thaw");
    p.release(held).unwrap();
}

#[test]
fn a_paused_server_gives_err_within_the_timeout() {
    let mut nats = Cluster::start(1);
    let p = plugin(nats.members[0].url());
    let held = p.try_lock("held", 60_000).unwrap().expect("free key");
    nats.pause(0);
    in_time("try_lock", || p.try_lock("other", 60_000));
    in_time("renew", || p.renew(&held));
    nats.resume(0);
    let until = Instant::now() + Duration::from_secs(10);
    while let Err(e) = p.renew(&held) {
        assert!(Instant::now() < until, "no recovery after SIGCONT: {e}");
        std::thread::sleep(Duration::from_millis(100));
    }
    p.release(held).unwrap();
}

#[test]
fn the_server_expires_a_crashed_holders_lock() {
    // The holder's instance is gone without a release: only the server's
    // lease expiry can free the key.
    let config = common::config("crash");
    let holder = NatsPlugin::from_json(&config).unwrap();
    let h = holder.try_lock("k", 500).unwrap().unwrap();
    std::mem::forget(holder);
    let other = NatsPlugin::from_json(&config).unwrap();
    assert_eq!(other.try_lock("k", 500).unwrap(), None);
    let until = Instant::now() + Duration::from_secs(10);
    let taken = loop {
        if let Some(t) = other.try_lock("k", 500).unwrap() {
            break t;
        }
        assert!(Instant::now() < until, "the server never expired the lease");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(taken.fence > h.fence, "{taken:?} vs {h:?}");
}
