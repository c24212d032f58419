//! How late after `ttl_ms` the server frees an abandoned lock, on the
//! server at `BEXT_NATS_URL` (default the local one): a holder vanishes
//! without releasing, another instance polls every 5 ms.
//!
//! `cargo run --release -p bext-locking-nats --example expiry_probe`

use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_nats::NatsPlugin;

fn main() {
    let url = std::env::var("BEXT_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let prefix = format!("bext_probe_{}", std::process::id());
    let config = serde_json::json!({"servers": [url], "bucket_prefix": prefix}).to_string();
    let other = NatsPlugin::from_json(&config).expect("create");
    for ttl_ms in [100u64, 300, 1000, 3000] {
        let mut lates = Vec::new();
        for round in 0..5 {
            let holder = NatsPlugin::from_json(&config).expect("create");
            let key = format!("k{ttl_ms}-{round}");
            let started = Instant::now();
            let _h = holder.try_lock(&key, ttl_ms).unwrap().expect("free");
            drop(holder);
            loop {
                if other.try_lock(&key, ttl_ms).unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            lates.push(started.elapsed().as_millis() as i64 - ttl_ms as i64);
        }
        println!("ttl {ttl_ms} ms: freed {lates:?} ms after the TTL");
    }
}
