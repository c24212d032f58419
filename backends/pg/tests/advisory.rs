//! Advisory mode specifics: the plugin enforces the TTL, one connection per
//! held lock, lost connections are reported, cleanup frees everything.

mod common;

use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_pg::PgPlugin;
use common::{Scratch, admin, base_url, free_on_server};

#[test]
fn the_plugin_unlocks_on_the_server_when_the_ttl_runs_out() {
    let scratch = Scratch::new("adv_ttl");
    let p = scratch.plugin("advisory");
    let key = format!("{}/k", scratch.schema);
    let mut db = admin(&base_url());
    let h = p.try_lock(&key, 300).unwrap().unwrap();
    assert!(h.fence.is_none(), "advisory handles carry no fence");
    assert!(!free_on_server(&mut db, &key), "held on the server");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!free_on_server(&mut db, &key), "held before its TTL");
    let started = Instant::now();
    while !free_on_server(&mut db, &key) {
        assert!(started.elapsed() < Duration::from_secs(2), "not unlocked after its TTL");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(p.renew(&h).is_err(), "renew after the TTL must fail");
    let again = p.try_lock(&key, 30_000).unwrap().expect("free again for its own instance");
    p.release(again).unwrap();
    assert!(free_on_server(&mut db, &key), "release unlocks on the server");
}

#[test]
fn renew_keeps_it_past_the_ttl() {
    let scratch = Scratch::new("adv_renew");
    let p = scratch.plugin("advisory");
    let key = format!("{}/k", scratch.schema);
    let mut db = admin(&base_url());
    let h = p.try_lock(&key, 200).unwrap().unwrap();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(80));
        p.renew(&h).unwrap();
    }
    assert!(!free_on_server(&mut db, &key));
    p.release(h).unwrap();
    assert!(free_on_server(&mut db, &key));
}

#[test]
fn each_held_lock_keeps_its_own_connection() {
    let scratch = Scratch::new("adv_conns");
    let config = scratch
        .config_with("advisory", serde_json::json!({"pool_size": 3, "connect_timeout_ms": 300}));
    let p = PgPlugin::from_json(&config).unwrap();
    let handles: Vec<_> = (0..3)
        .map(|i| p.try_lock(&format!("{}/{i}", scratch.schema), 30_000).unwrap().unwrap())
        .collect();
    assert_eq!(scratch.sessions(), 3);
    // Same-instance stacking would let a second try_lock of a held key win.
    assert!(p.try_lock(&handles[0].key, 30_000).unwrap().is_none());
    let err = p.try_lock(&format!("{}/3", scratch.schema), 30_000).unwrap_err();
    assert!(err.contains("pool_size"), "{err}");
    for h in handles {
        p.release(h).unwrap();
    }
    let h = p
        .try_lock(&format!("{}/3", scratch.schema), 30_000)
        .unwrap()
        .expect("connections came back");
    p.release(h).unwrap();
    assert!(scratch.sessions() <= 3);
}

#[test]
fn a_killed_connection_loses_the_lock_and_renew_says_so() {
    let scratch = Scratch::new("adv_killed");
    let (a, b) = (scratch.plugin("advisory"), scratch.plugin("advisory"));
    let key = format!("{}/k", scratch.schema);
    let h = a.try_lock(&key, 30_000).unwrap().unwrap();
    assert!(b.try_lock(&key, 30_000).unwrap().is_none());
    assert!(scratch.terminate_all() >= 1);
    let hb = common::acquire_within(&b, &key, 30_000, Duration::from_secs(2))
        .expect("the lock died with its session")
        .0;
    let err = a.renew(&h).unwrap_err();
    assert!(err.contains("lost"), "{err}");
    a.release(h).unwrap();
    assert!(a.try_lock(&key, 30_000).unwrap().is_none(), "B holds it now");
    b.release(hb).unwrap();
    let h = a.try_lock(&key, 30_000).unwrap().expect("A recovers");
    a.release(h).unwrap();
}
