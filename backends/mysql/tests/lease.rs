//! Lease mode specifics: the database clock, rows that outlive release,
//! fences that keep rising, handles usable from any instance, a table
//! created once by racing first users.

mod common;

use std::time::Duration;

use bext_locking::LockingPlugin;
use bext_locking_mysql::MysqlPlugin;
use common::{Scratch, admin};
use mysql::prelude::Queryable;

/// `(fence, expires_at - acquired_at in µs, expired)` of a key's row.
fn row(scratch: &Scratch, key: &str) -> (u64, i64, bool) {
    admin(&scratch.url)
        .exec_first(
            "SELECT fence, TIMESTAMPDIFF(MICROSECOND, acquired_at, expires_at), \
                    expires_at <= UTC_TIMESTAMP(6) \
               FROM bext_locks WHERE lock_key = ?",
            (key.as_bytes(),),
        )
        .unwrap()
        .map(|(f, us, e): (u64, i64, i64)| (f, us, e == 1))
        .expect("the key has a row")
}

#[test]
fn the_ttl_is_kept_on_the_database_clock_to_the_microsecond() {
    let scratch = Scratch::new("lease_clock");
    let p = scratch.plugin("lease");
    for ttl in [1, 250, 1_234, 86_400_000, bext_locking::MAX_TTL_MS] {
        let key = format!("ttl/{ttl}");
        let h = p.try_lock(&key, ttl).unwrap().unwrap();
        let (_, us, _) = row(&scratch, &key);
        assert_eq!(us, ttl as i64 * 1000, "ttl {ttl} ms: the row says {us} µs");
        p.release(h).unwrap();
    }
}

#[test]
fn expiry_reads_the_server_clock_in_utc_whatever_the_session_time_zone() {
    let scratch = Scratch::new("lease_tz");
    let p = scratch.plugin("lease");
    let h = p.try_lock("k", 60_000).unwrap().unwrap();
    let mut db = admin(&scratch.url);
    // A session far from UTC sees the same lease as unexpired: the table
    // holds UTC, never the session's local time.
    db.query_drop("SET time_zone = '+13:00'").unwrap();
    let left: i64 = db
        .exec_first(
            "SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) FROM bext_locks \
              WHERE lock_key = ?",
            (b"k".as_slice(),),
        )
        .unwrap()
        .unwrap();
    assert!(left > 50_000_000 && left <= 60_000_000, "{left} µs left");
    p.release(h).unwrap();
}

#[test]
fn release_expires_the_row_and_fences_keep_rising() {
    let scratch = Scratch::new("lease_fence");
    let (a, b) = (scratch.plugin("lease"), scratch.plugin("lease"));
    let mut last = 0;
    for i in 0..6 {
        let p = if i % 2 == 0 { &a } else { &b };
        let h = p.try_lock("k", 30_000).unwrap().unwrap();
        let fence = h.fence.expect("lease handles carry a fence");
        assert!(fence > last, "fence {fence} after {last}");
        last = fence;
        p.release(h).unwrap();
        let (stored, _, expired) = row(&scratch, "k");
        assert_eq!(stored, fence, "the row stays, with its fence");
        assert!(expired, "release expires the row");
    }
    // A stale release after a takeover leaves the new holder's row alone.
    let old = a.try_lock("k", 100).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let new = b.try_lock("k", 30_000).unwrap().unwrap();
    assert!(new.fence > old.fence);
    a.release(old.clone()).unwrap();
    let (stored, _, expired) = row(&scratch, "k");
    assert_eq!(stored, new.fence.unwrap());
    assert!(!expired);
    // And the stale holder cannot renew it either.
    assert!(a.renew(&old).is_err());
    b.release(new).unwrap();
}

#[test]
fn any_instance_can_renew_and_release_a_handle() {
    let scratch = Scratch::new("lease_any");
    let (a, b) = (scratch.plugin("lease"), scratch.plugin("lease"));
    let h = a.try_lock("k", 300).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    b.renew(&h).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(b.try_lock("k", 300).unwrap().is_none(), "renewed from another instance");
    b.release(h.clone()).unwrap();
    assert!(a.renew(&h).is_err(), "renew after release must fail");
    let h = a.try_lock("k", 300).unwrap().unwrap();
    a.release(h).unwrap();
}

#[test]
fn renews_in_quick_succession_all_succeed() {
    // Two renews in one microsecond change nothing the second time; that
    // must still read as "held".
    let scratch = Scratch::new("lease_quick");
    let p = scratch.plugin("lease");
    let h = p.try_lock("k", 30_000).unwrap().unwrap();
    for _ in 0..200 {
        p.renew(&h).unwrap();
    }
    p.release(h).unwrap();
}

#[test]
fn renew_never_resurrects_an_expired_lease() {
    let scratch = Scratch::new("lease_resurrect");
    let p = scratch.plugin("lease");
    let h = p.try_lock("k", 50).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let err = p.renew(&h).unwrap_err();
    assert!(err.contains("no longer held"), "{err}");
    let (_, _, expired) = row(&scratch, "k");
    assert!(expired, "a failed renew must not extend the row");
}

#[test]
fn racing_first_users_create_the_table_once_and_share_it() {
    let scratch = Scratch::new("lease_race");
    let config = scratch.config_with("lease", serde_json::json!({"table": "raced_locks"}));
    let won = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                let p = MysqlPlugin::from_json(&config).expect("concurrent first use");
                if let Some(h) = p.try_lock("k", 60_000).unwrap() {
                    won.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    std::mem::forget(h);
                }
            });
        }
    });
    assert_eq!(won.into_inner(), 1, "one table, one holder");
}

#[test]
fn racing_acquirers_of_a_new_key_get_one_holder_and_no_error() {
    let scratch = Scratch::new("lease_new_key");
    let p = scratch.plugin("lease");
    for round in 0..20 {
        let key = format!("fresh/{round}");
        let won = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    // A deadlock between the inserts would be an error here.
                    if p.try_lock(&key, 60_000).unwrap().is_some() {
                        won.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(won.into_inner(), 1, "round {round}");
    }
}

#[test]
fn keys_are_stored_byte_for_byte() {
    let scratch = Scratch::new("lease_keys");
    let p = scratch.plugin("lease");
    // Keys a case- or accent-insensitive collation, or a trailing-space
    // rule, would merge.
    let keys = ["a", "A", "a ", "é", "e", "nul\0byte", "ключ", &"k".repeat(1024)];
    let held: Vec<_> = keys.iter().map(|k| p.try_lock(k, 30_000).unwrap().expect(k)).collect();
    for k in keys {
        assert!(p.try_lock(k, 30_000).unwrap().is_none(), "{k:?} held");
    }
    for h in held {
        p.release(h).unwrap();
    }
}

#[test]
fn a_missing_table_without_create_table_is_a_clear_error() {
    let scratch = Scratch::new("lease_missing");
    let config = scratch
        .config_with("lease", serde_json::json!({"create_table": false, "table": "nowhere"}));
    let e = MysqlPlugin::from_json(&config).unwrap_err();
    assert_eq!(e.kind, bext_locking::ErrorKind::Backend);
    assert!(e.message.contains("`nowhere` does not exist"), "{}", e.message);
    assert!(e.message.contains("create_table"), "{}", e.message);
    // Created by hand (as a DBA would, from the docs), it is used as is.
    admin(&scratch.url).query_drop(bext_locking_mysql::sql::lease_table("`nowhere`")).unwrap();
    let p = MysqlPlugin::from_json(&config).unwrap();
    let h = p.try_lock("k", 1_000).unwrap().unwrap();
    p.release(h).unwrap();
}
