//! Hostile keys in both modes: stored and locked byte for byte, never
//! interpreted as SQL.

mod common;

use bext_locking::LockingPlugin;
use bext_locking_pg::keyhash::advisory_key;
use common::{Scratch, admin, base_url};

fn hostile_keys() -> Vec<String> {
    vec![
        "it's \"quoted\"".into(),
        "back\\slash\\\\".into(),
        "'; DROP TABLE bext_locks; --".into(),
        "$1 $2 ::text".into(),
        "%_ LIKE wildcards *?".into(),
        "ключ/鍵/🔒/é".into(),
        "nul\0inside".into(),
        "\0".into(),
        "ctrl\n\r\t\u{7f}\u{1b}[0m".into(),
        "k".repeat(1024),
        "é".repeat(512),                   // 1024 bytes of two-byte characters
        format!("{}🔒", "x".repeat(1020)), // 1024 bytes ending in a four-byte one
        format!("{}a", "x".repeat(1023)),
        format!("{}b", "x".repeat(1023)), // differs from the previous only in the last byte
    ]
}

fn exercise(a: &dyn LockingPlugin, b: &dyn LockingPlugin, key: &str) -> bext_locking::LockHandle {
    let h = a.try_lock(key, 30_000).unwrap().unwrap_or_else(|| panic!("{key:?} contended"));
    assert_eq!(h.key, key);
    assert!(b.try_lock(key, 30_000).unwrap().is_none(), "{key:?} acquired twice");
    a.renew(&h).unwrap();
    h
}

#[test]
fn lease_mode_stores_keys_byte_for_byte() {
    let scratch = Scratch::new("keys_lease");
    let (a, b) = (scratch.plugin("lease"), scratch.plugin("lease"));
    let keys = hostile_keys();
    // All held at once: keys that differ in one byte are distinct locks.
    let handles: Vec<_> = keys.iter().map(|k| exercise(&a, &b, k)).collect();
    let mut db = admin(&base_url());
    for k in &keys {
        let stored: Vec<u8> = db
            .query_one(
                &format!("SELECT key FROM \"{}\".bext_locks WHERE key = $1", scratch.schema),
                &[&k.as_bytes()],
            )
            .unwrap()
            .get(0);
        assert_eq!(stored, k.as_bytes());
    }
    for h in handles {
        a.release(h.clone()).unwrap();
        let again = b.try_lock(&h.key, 30_000).unwrap().expect("free after release");
        assert!(again.fence > h.fence);
        b.release(again).unwrap();
    }
    let rows: i64 = db
        .query_one(&format!("SELECT count(*) FROM \"{}\".bext_locks", scratch.schema), &[])
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, keys.len());
}

#[test]
fn advisory_mode_locks_keys_by_their_hash() {
    let scratch = Scratch::new("keys_adv");
    // Every held advisory lock keeps a connection of its own.
    let config = scratch.config_with("advisory", serde_json::json!({"pool_size": 32}));
    let a = bext_locking_pg::PgPlugin::from_json(&config).unwrap();
    let b = bext_locking_pg::PgPlugin::from_json(&config).unwrap();
    let keys = hostile_keys();
    let handles: Vec<_> = keys.iter().map(|k| exercise(&a, &b, k)).collect();
    let mut db = admin(&base_url());
    for k in &keys {
        // The documented formula, in SQL, finds the lock in pg_locks.
        let held: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_locks l, \
                   (SELECT ('x' || left(encode(sha256($1::bytea), 'hex'), 16))::bit(64)::bigint AS h) k \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                   AND l.classid::bigint = (k.h >> 32) & 4294967295 \
                   AND l.objid::bigint = k.h & 4294967295",
                &[&k.as_bytes()],
            )
            .unwrap()
            .get(0);
        assert_eq!(held, 1, "{k:?} not found in pg_locks");
        let sql_hash: i64 = db
            .query_one(
                "SELECT ('x' || left(encode(sha256(convert_to($1, 'UTF8')), 'hex'), 16))::bit(64)::bigint",
                &[&k.replace('\0', "")],
            )
            .unwrap()
            .get(0);
        assert_eq!(sql_hash, advisory_key(&k.replace('\0', "")));
    }
    for h in handles {
        a.release(h.clone()).unwrap();
        let again = b.try_lock(&h.key, 30_000).unwrap().expect("free after release");
        b.release(again).unwrap();
    }
}
