//! Acquire+release pairs per second through the `.so` versus the same four
//! requests (lease grant, create-if-absent transaction, compare-and-delete
//! transaction, lease revoke) issued directly with the gateway client, in
//! one run against one throwaway etcd.
//!
//! ```text
//! cargo build --release -p bext-locking-etcd && cargo bench -p bext-locking-etcd
//! ```
//! `BENCH_ROUNDS` (default 8) rounds of `BENCH_PAIRS` (default 200) pairs
//! per side, alternating which side goes first, so drift in the machine's
//! load hits both sides alike.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_etcd::{Client, lease_seconds};

const TTL_MS: u64 = 30_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What the plugin does for one pair, minus the plugin: the same requests
/// on the same kind of client with the same budget.
fn direct_pair(c: &Client, key: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let lease = c.lease_grant(lease_seconds(TTL_MS), deadline).expect("grant");
    let id = uuid::Uuid::new_v4().to_string();
    let rev = c.put_if_absent(key, id.as_bytes(), lease, deadline).expect("txn");
    assert!(rev.is_some(), "direct: key was held");
    let prev = c.delete_if_value(key, id.as_bytes(), deadline).expect("delete txn");
    let lease = prev.expect("direct: key was not ours").lease;
    c.lease_revoke(lease, deadline).expect("revoke");
}

fn plugin_pair(p: &dyn LockingPlugin, key: &str) {
    let h = p.try_lock(key, TTL_MS).expect("try_lock").expect("plugin: key was held");
    p.release(h).expect("release");
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rounds = env("BENCH_ROUNDS", 8);
    let pairs = env("BENCH_PAIRS", 200);
    let etcd = common::Cluster::single();
    let so = bext_locking_test_support::plugin_path("etcd");
    let loaded = bext_locking_loader::load(&so).expect("load the plugin");
    let config = format!(r#"{{"endpoints":{},"key_prefix":"bench/"}}"#, etcd.endpoints_json());
    let plugin = loaded.create(&config).expect("create");
    let client = Client::new(etcd.endpoints(), Duration::from_millis(2_000), None);

    // Warm both paths up (connections, allocator, etcd's caches).
    for _ in 0..50 {
        direct_pair(&client, b"bench/direct");
        plugin_pair(&*plugin, "plugin");
    }

    let (mut direct, mut through) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let time_direct = || {
            let t = Instant::now();
            for _ in 0..pairs {
                direct_pair(&client, b"bench/direct");
            }
            t.elapsed()
        };
        let time_plugin = || {
            let t = Instant::now();
            for _ in 0..pairs {
                plugin_pair(&*plugin, "plugin");
            }
            t.elapsed()
        };
        let (d, p) = if round % 2 == 0 {
            let d = time_direct();
            (d, time_plugin())
        } else {
            let p = time_plugin();
            (time_direct(), p)
        };
        direct += d;
        through += p;
        ratios.push(d.as_secs_f64() / p.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let n = (rounds * pairs) as f64;
    let direct_rate = n / direct.as_secs_f64();
    let plugin_rate = n / through.as_secs_f64();
    println!(
        "etcd acquire+release, 1 thread, {rounds} rounds x {pairs} pairs per side, etcd {}",
        etcd.endpoints()[0]
    );
    println!(
        "  direct gateway client : {direct_rate:>8.0} pairs/s ({:.0} us/pair)",
        1e6 / direct_rate
    );
    println!(
        "  through the .so       : {plugin_rate:>8.0} pairs/s ({:.0} us/pair)",
        1e6 / plugin_rate
    );
    println!(
        "  ratio .so/direct      : {:.3} overall, {:.3} median round (min {:.3}, max {:.3})",
        plugin_rate / direct_rate,
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
