//! get_lock mode specifics: the plugin enforces the TTL, one connection per
//! held lock, the same instance never stacks a lock, lost sessions are
//! reported, cleanup frees everything.

mod common;

use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_mysql::MysqlPlugin;
use common::{Scratch, admin, base_url, free_on_server};

#[test]
fn the_plugin_releases_on_the_server_when_the_ttl_runs_out() {
    let scratch = Scratch::new("gl_ttl");
    let p = scratch.plugin("get_lock");
    let key = format!("{}/k", scratch.db);
    let mut db = admin(&base_url());
    let h = p.try_lock(&key, 300).unwrap().unwrap();
    assert!(h.fence.is_none(), "get_lock handles carry no fence");
    assert!(!free_on_server(&mut db, &key), "held on the server");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!free_on_server(&mut db, &key), "held before its TTL");
    let started = Instant::now();
    while !free_on_server(&mut db, &key) {
        assert!(started.elapsed() < Duration::from_secs(2), "not released after its TTL");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(p.renew(&h).is_err(), "renew after the TTL must fail");
    let again = p.try_lock(&key, 30_000).unwrap().expect("free again for its own instance");
    p.release(again).unwrap();
    assert!(free_on_server(&mut db, &key), "release frees it on the server");
}

#[test]
fn renew_keeps_it_past_the_ttl() {
    let scratch = Scratch::new("gl_renew");
    let p = scratch.plugin("get_lock");
    let key = format!("{}/k", scratch.db);
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
fn each_held_lock_keeps_its_own_connection_and_never_stacks() {
    let scratch = Scratch::new("gl_conns");
    let config = scratch
        .config_with("get_lock", serde_json::json!({"pool_size": 3, "connect_timeout_ms": 300}));
    let p = MysqlPlugin::from_json(&config).unwrap();
    let handles: Vec<_> = (0..3)
        .map(|i| p.try_lock(&format!("{}/{i}", scratch.db), 30_000).unwrap().unwrap())
        .collect();
    assert_eq!(scratch.sessions().len(), 3);
    // GET_LOCK is re-entrant per session: a second try_lock of a held key
    // from the same instance must still be contention.
    for h in &handles {
        assert!(p.try_lock(&h.key, 30_000).unwrap().is_none(), "{} stacked", h.key);
    }
    let err = p.try_lock(&format!("{}/3", scratch.db), 30_000).unwrap_err();
    assert!(err.contains("pool_size"), "{err}");
    for h in handles {
        p.release(h).unwrap();
    }
    let h =
        p.try_lock(&format!("{}/3", scratch.db), 30_000).unwrap().expect("connections came back");
    p.release(h).unwrap();
    assert!(scratch.sessions().len() <= 3);
}

#[test]
fn a_second_instance_is_contended_and_a_plain_session_sees_the_same_name() {
    let scratch = Scratch::new("gl_names");
    let (a, b) = (scratch.plugin("get_lock"), scratch.plugin("get_lock"));
    let key = format!("{}/Mixed Case Key", scratch.db);
    let h = a.try_lock(&key, 30_000).unwrap().unwrap();
    assert!(b.try_lock(&key, 30_000).unwrap().is_none());
    // The documented SQL finds the holder.
    let holder: Option<u64> = mysql::prelude::Queryable::exec_first(
        &mut admin(&base_url()),
        "SELECT IS_USED_LOCK(CONCAT('bext/', LEFT(SHA2(?, 256), 16)))",
        (&key,),
    )
    .unwrap()
    .flatten();
    assert!(holder.is_some(), "the documented name does not match");
    a.release(h).unwrap();
    let h = b.try_lock(&key, 30_000).unwrap().expect("released");
    b.release(h).unwrap();
}

#[test]
fn cleanup_frees_every_lock_at_once() {
    let scratch = Scratch::new("gl_cleanup");
    let p = scratch.plugin("get_lock");
    let keys: Vec<String> = (0..3).map(|i| format!("{}/{i}", scratch.db)).collect();
    for k in &keys {
        std::mem::forget(p.try_lock(k, 60_000).unwrap().unwrap());
    }
    p.cleanup();
    let mut db = admin(&base_url());
    for k in &keys {
        assert!(free_on_server(&mut db, k), "{k} still held after cleanup");
    }
    assert!(p.try_lock("x", 1000).is_err(), "calls after cleanup fail");
}
