//! A database file made by the 1.0 backend keeps working: the owner
//! columns are added when it is opened, its live locks stay held, and a
//! 1.0 build's statements still run on the upgraded file.

mod common;

use bext_locking::{LockAdmin, LockHandle, LockingPlugin};
use bext_locking_sqlite::Sqlite;

/// The table exactly as the 1.0 backend created it.
const TABLE_1_0: &str = "CREATE TABLE bext_locks (
    key TEXT PRIMARY KEY NOT NULL,
    lock_id TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    fence INTEGER NOT NULL
) STRICT, WITHOUT ROWID";

/// The 1.0 backend's acquire statement (it names none of the new columns).
const ACQUIRE_1_0: &str = "INSERT INTO bext_locks (key, lock_id, expires_at_ms, fence)
    VALUES (?1, ?2, CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER) + ?3, 1)
    ON CONFLICT (key) DO UPDATE SET
        lock_id = excluded.lock_id, expires_at_ms = excluded.expires_at_ms,
        fence = bext_locks.fence + 1
    WHERE bext_locks.expires_at_ms <= CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)
    RETURNING fence";

fn columns(path: &std::path::Path) -> Vec<String> {
    let c = common::raw(path);
    let mut stmt = c.prepare("SELECT name FROM pragma_table_info('bext_locks')").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn a_1_0_file_gains_the_owner_columns_and_keeps_its_locks() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let old = common::raw(&path);
    old.execute_batch(TABLE_1_0).unwrap();
    let fence: i64 =
        old.query_row(ACQUIRE_1_0, ("jobs/old", "old-holder", 60_000), |r| r.get(0)).unwrap();
    assert_eq!(columns(&path), ["key", "lock_id", "expires_at_ms", "fence"]);

    let new = Sqlite::open(&path).expect("the 1.0 file opens");
    assert_eq!(
        columns(&path),
        ["key", "lock_id", "expires_at_ms", "fence", "owner", "owner_lock_id", "acquired_at_ms"]
    );
    // The 1.0 holder's lock is still held, and shows no owner.
    assert_eq!(new.try_lock("jobs/old", 1_000), Ok(None));
    let info = new.inspect("jobs/old").unwrap();
    assert!(info.held && info.owner.is_none() && info.held_for_ms.is_none(), "{info:?}");
    assert_eq!(info.fence, Some(fence as u64));
    // Its handle still renews and releases.
    let handle = LockHandle {
        key: "jobs/old".into(),
        lock_id: "old-holder".into(),
        ttl_ms: 60_000,
        fence: Some(fence as u64),
    };
    new.renew(&handle).unwrap();
    new.release(handle).unwrap();
    let mine = new.try_lock_as("jobs/old", 60_000, Some("new-build")).unwrap().unwrap();
    assert_eq!(mine.fence, Some(fence as u64 + 1));
    assert_eq!(new.inspect("jobs/old").unwrap().owner.as_deref(), Some("new-build"));
    new.release(mine).unwrap();

    // A 1.0 build still on the file takes a lock over: its holder shows no
    // stale owner from the previous one.
    let fence: i64 =
        old.query_row(ACQUIRE_1_0, ("jobs/old", "old-again", 60_000), |r| r.get(0)).unwrap();
    let info = new.inspect("jobs/old").unwrap();
    assert!(info.held && info.owner.is_none(), "{info:?}");
    assert_eq!(info.fence, Some(fence as u64));
    // Opening again does not try to add the columns twice.
    drop(new);
    Sqlite::open(&path).expect("reopen the upgraded file");
}

#[test]
fn force_release_is_compare_and_expire_on_the_fence() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let a = Sqlite::open(&path).unwrap();
    let h = a.try_lock_as("k", 60_000, Some("stuck")).unwrap().unwrap();
    let f = h.fence.unwrap();
    assert!(!a.force_release("k", Some(f + 1)).unwrap().released);
    assert!(!a.force_release("k", Some(u64::MAX)).unwrap().released);
    let broke = a.force_release("k", Some(f)).unwrap();
    assert_eq!((broke.released, broke.fence), (true, Some(f)));
    // The row stays, expired, so the fence keeps rising.
    let (lock_id, expires, fence) = common::row(&path, "k").unwrap();
    assert_eq!((lock_id.as_str(), expires, fence), (h.lock_id.as_str(), 0, f as i64));
    assert!(a.renew(&h).is_err());
    assert!(!a.force_release("k", None).unwrap().released);
    assert_eq!(a.try_lock("k", 1_000).unwrap().unwrap().fence, Some(f + 1));
}
