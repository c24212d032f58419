//! ABI 1.1's calls on the shared server, beyond the conformance suite:
//! the owner in the lock table, a table made before owners were stored,
//! `if_fence`, bad input, and what advisory mode refuses.

mod common;

use std::time::{Duration, Instant};

use bext_locking::{ErrorKind, LockAdmin, LockingPlugin, MAX_OWNER_BYTES};
use bext_locking_pg::PgPlugin;
use common::{Scratch, admin};
use serde_json::json;

const TTL: u64 = 30_000;

/// The layout of the lock table before owners were stored.
const OLD_TABLE: &str = "CREATE TABLE {t} (key bytea PRIMARY KEY, lock_id uuid NOT NULL, \
    fence bigint NOT NULL, acquired_at timestamptz NOT NULL, expires_at timestamptz NOT NULL)";

#[test]
fn the_owner_is_in_the_row_and_inspect_uses_the_server_clock() {
    let scratch = Scratch::new("admin_owner");
    let (p, op) = (scratch.plugin("lease"), scratch.plugin("lease"));
    let h = p.try_lock_as("jobs/nightly", 10_000, Some("host-a:42")).unwrap().unwrap();
    let mut db = admin(&scratch.url);
    let row = db
        .query_one(
            &format!("SELECT owner FROM \"{}\".bext_locks WHERE key = $1", scratch.schema),
            &[&"jobs/nightly".as_bytes()],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("host-a:42"));
    let info = op.inspect("jobs/nightly").unwrap();
    assert!(info.held);
    assert_eq!((info.fence, info.owner.as_deref()), (h.fence, Some("host-a:42")));
    assert!(info.expires_in_ms.is_some_and(|ms| ms > 5_000 && ms <= 10_000), "{info:?}");
    assert!(info.held_for_ms.is_some_and(|ms| ms < 5_000), "{info:?}");
    assert!(!serde_json::to_string(&info).unwrap().contains(&h.lock_id));
    // Renewals keep the acquisition time; a new holder without an owner
    // shows none, not the last one's.
    std::thread::sleep(std::time::Duration::from_millis(300));
    p.renew(&h).unwrap();
    assert!(op.inspect("jobs/nightly").unwrap().held_for_ms.is_some_and(|ms| ms >= 300));
    p.release(h).unwrap();
    assert!(!op.inspect("jobs/nightly").unwrap().held);
    let h = p.try_lock("jobs/nightly", TTL).unwrap().unwrap();
    assert_eq!(op.inspect("jobs/nightly").unwrap().owner, None);
    p.release(h).unwrap();
}

#[test]
fn if_fence_breaks_only_that_holder() {
    let scratch = Scratch::new("admin_fence");
    let (holder, op) = (scratch.plugin("lease"), scratch.plugin("lease"));
    assert!(!op.force_release("never", None).unwrap().released);
    let h = holder.try_lock_as("k", TTL, Some("stuck")).unwrap().unwrap();
    let f = h.fence.unwrap();
    for wrong in [f + 1, 0, i64::MAX as u64, u64::MAX] {
        let r = op.force_release("k", Some(wrong)).unwrap();
        assert!(!r.released && r.fence.is_none(), "if_fence {wrong}: {r:?}");
    }
    holder.renew(&h).unwrap();
    let r = op.force_release("k", Some(f)).unwrap();
    assert!(r.released && r.fence == Some(f), "{r:?}");
    assert!(holder.renew(&h).is_err(), "the broken holder renewed");
    holder.release(h.clone()).unwrap();
    assert!(!op.force_release("k", Some(f)).unwrap().released);
    let next = op.try_lock("k", TTL).unwrap().unwrap();
    assert!(next.fence.unwrap() > f);
    // The broken holder's late calls leave the new holder alone.
    holder.release(h.clone()).unwrap();
    assert!(holder.renew(&h).is_err());
    assert!(op.inspect("k").unwrap().held);
}

#[test]
fn bad_input_names_the_field_and_touches_nothing() {
    let scratch = Scratch::new("admin_bad");
    let p = scratch.plugin("lease");
    for r in [p.inspect("").map(drop), p.force_release("", None).map(drop)] {
        let e = r.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("key"), "{}", e.message);
    }
    let e = p.try_lock_as("k", TTL, Some(&"o".repeat(MAX_OWNER_BYTES + 1))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("owner"), "{}", e.message);
    assert!(!p.inspect("k").unwrap().held, "a refused owner took the lock");
}

#[test]
fn a_table_made_before_owners_gains_the_column_or_works_without_it() {
    let scratch = Scratch::new("admin_old");
    let mut db = admin(&scratch.url);
    let table = format!("\"{}\".bext_locks", scratch.schema);
    db.batch_execute(&format!("CREATE SCHEMA \"{}\"", scratch.schema)).unwrap();
    db.batch_execute(&OLD_TABLE.replace("{t}", &table)).unwrap();
    // Not allowed to alter it: owners are not stored, the rest works.
    let fixed =
        PgPlugin::from_json(&scratch.config_with("lease", json!({"create_table": false}))).unwrap();
    let h = fixed.try_lock_as("k", TTL, Some("lost")).unwrap().unwrap();
    let info = fixed.inspect("k").unwrap();
    assert!(info.held && info.owner.is_none() && info.fence == h.fence, "{info:?}");
    assert!(fixed.force_release("k", h.fence).unwrap().released);
    // Allowed: the column is added, and owners are kept from then on.
    let grown = scratch.plugin("lease");
    grown.try_lock_as("k", TTL, Some("kept")).unwrap().unwrap();
    assert_eq!(grown.inspect("k").unwrap().owner.as_deref(), Some("kept"));
    let has: bool = db
        .query_one(
            "SELECT count(*) = 1 FROM information_schema.columns \
              WHERE table_schema = $1 AND table_name = 'bext_locks' AND column_name = 'owner'",
            &[&scratch.schema],
        )
        .unwrap()
        .get(0);
    assert!(has);
}

#[test]
fn advisory_mode_refuses_inspect_and_force_release_saying_why() {
    let scratch = Scratch::new("admin_adv");
    let p = scratch.plugin("advisory");
    let h = p.try_lock_as("k", TTL, Some("ignored")).unwrap().unwrap();
    let e = p.inspect("k").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("advisory") && e.message.contains("lease mode"), "{}", e.message);
    let e = p.force_release("k", None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("terminat"), "{}", e.message);
    // The refusals touched nothing.
    p.renew(&h).unwrap();
    p.release(h).unwrap();
}

/// The interleaving a plain "expire the row" break would lose: a renew of
/// the broken holder reads the clock, then waits for the row lock while
/// the break (with a later clock) updates and commits. The renew then
/// re-checks its `WHERE` on the broken row; its own clock is still before
/// the new `expires_at`, so only the replaced `lock_id` stops it from
/// reviving the lease.
#[test]
fn a_renew_waiting_on_the_row_lock_does_not_revive_a_broken_lease() {
    let scratch = Scratch::new("admin_race");
    let holder = scratch.plugin("lease");
    let h = holder.try_lock("k", TTL).unwrap().unwrap();
    let table = format!("\"{}\".\"bext_locks\"", scratch.schema);
    let force = bext_locking_pg::sql::lease(&table)[4].clone();
    let mut db = admin(&bext_locking_test_support::pg_url());
    let mut tx = db.transaction().unwrap();
    tx.execute(&format!("SELECT 1 FROM {table} WHERE key = $1 FOR UPDATE"), &[&b"k".as_slice()])
        .unwrap();
    std::thread::scope(|s| {
        let renew = s.spawn(|| holder.renew(&h));
        // Wait until the renew is queued on the row lock, its clock read.
        let mut watch = admin(&bext_locking_test_support::pg_url());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting: i64 = watch
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                      WHERE application_name = $1 AND wait_event_type = 'Lock'",
                    &[&scratch.app],
                )
                .unwrap()
                .get(0);
            if waiting == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the renew never waited on the row lock");
            std::thread::sleep(Duration::from_millis(10));
        }
        let broke =
            tx.query_opt(&force, &[&b"k".as_slice(), &None::<i64>, &uuid::Uuid::new_v4()]).unwrap();
        assert_eq!(broke.map(|r| r.get::<_, i64>(0) as u64), h.fence);
        tx.commit().unwrap();
        assert!(renew.join().unwrap().is_err(), "the waiting renew revived the broken lease");
    });
    assert!(!holder.inspect("k").unwrap().held);
    let next = holder.try_lock("k", TTL).unwrap().unwrap();
    assert!(next.fence > h.fence);
}
