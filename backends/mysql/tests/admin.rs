//! ABI 1.1 in each mode: owners in the row, inspect by the server's clock,
//! force_release as one conditioned statement (and what it leaves in the
//! table), and get_lock mode's `unsupported` answers with their reasons.

mod common;

use std::time::Duration;

use bext_locking::{ErrorKind, LockingPlugin};
use common::{Scratch, admin};
use mysql::prelude::Queryable;

fn so() -> bext_locking_loader::LoadedPlugin {
    bext_locking_loader::load(bext_locking_test_support::plugin_path("mysql")).unwrap()
}

/// `(hex lock_id, fence, owner, expired)` of a key's row.
fn row(scratch: &Scratch, key: &str) -> (String, u64, Option<Vec<u8>>, bool) {
    admin(&scratch.url)
        .exec_first(
            "SELECT HEX(lock_id), fence, owner, expires_at <= UTC_TIMESTAMP(6) \
               FROM bext_locks WHERE lock_key = ?",
            (key.as_bytes(),),
        )
        .unwrap()
        .map(|(id, f, o, e): (String, u64, Option<Vec<u8>>, i64)| (id, f, o, e == 1))
        .expect("the key has a row")
}

#[test]
fn describe_lists_the_capabilities() {
    let d = so().describe().unwrap();
    assert_eq!(d.abi_minor, 2);
    for c in ["owner", "inspect", "force_release", "stats", "lock_wait", "renew_ttl"] {
        assert!(d.capabilities.iter().any(|x| x == c), "{c} missing from {:?}", d.capabilities);
    }
}

#[test]
fn the_owner_is_stored_in_the_row_and_read_back() {
    let scratch = Scratch::new("admin_owner");
    let p = so().create_ffi(&scratch.config("lease")).unwrap();
    let h = p.try_lock_as("k", 30_000, Some("web-3:4411 ü")).unwrap().unwrap();
    let (_, fence, owner, _) = row(&scratch, "k");
    assert_eq!(owner.as_deref(), Some("web-3:4411 ü".as_bytes()));
    assert_eq!(Some(fence), h.fence);
    let info = p.inspect("k").unwrap();
    assert_eq!(info.owner.as_deref(), Some("web-3:4411 ü"));
    assert!(info.expires_in_ms.is_some_and(|ms| ms > 29_000 && ms <= 30_000), "{info:?}");
    assert!(info.held_for_ms.is_some_and(|ms| ms < 1_000), "{info:?}");
    let e = p.try_lock_as("k2", 30_000, Some(&"o".repeat(257))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("owner"), "{}", e.message);
    p.release(h).unwrap();
    // The seed call through the loader sends the default owner.
    let h = LockingPlugin::try_lock(&p, "k", 30_000).unwrap().unwrap();
    assert!(p.inspect("k").unwrap().owner.is_some_and(|o| o.contains(':')));
    p.release(h).unwrap();
}

#[test]
fn force_release_expires_the_row_replaces_its_id_and_keeps_its_fence() {
    let scratch = Scratch::new("admin_force");
    let (holder, op) = (scratch.plugin("lease"), scratch.plugin("lease"));
    let h = holder.try_lock("k", 60_000).unwrap().unwrap();
    let fence = h.fence.unwrap();
    let (id_before, ..) = row(&scratch, "k");

    let wrong = op.force_release_typed("k", Some(fence + 1)).unwrap();
    assert!(!wrong.released && wrong.fence.is_none(), "{wrong:?}");
    assert!(!row(&scratch, "k").3, "a refused break changed nothing");
    holder.renew(&h).unwrap();

    let broke = op.force_release_typed("k", Some(fence)).unwrap();
    assert!(broke.released && broke.fence == Some(fence), "{broke:?}");
    let (id_after, stored, _, expired) = row(&scratch, "k");
    assert!(expired && stored == fence && id_after != id_before);
    assert!(!op.inspect_typed("k").unwrap().held);
    assert!(holder.renew(&h).is_err(), "the broken holder renewed");
    holder.release(h.clone()).unwrap();
    // Nothing left to break.
    assert!(!op.force_release_typed("k", None).unwrap().released);
    let next = op.try_lock("k", 60_000).unwrap().unwrap();
    assert!(next.fence.unwrap() > fence);
    // The broken holder's stale release leaves the new holder alone.
    holder.release(h).unwrap();
    assert!(holder.try_lock("k", 60_000).unwrap().is_none());
    op.release(next).unwrap();
}

#[test]
fn inspect_reads_expiry_on_the_server_clock() {
    let scratch = Scratch::new("admin_inspect");
    let p = scratch.plugin("lease");
    assert!(!p.inspect_typed("never").unwrap().held);
    let h = p.try_lock("k", 400).unwrap().unwrap();
    let info = p.inspect_typed("k").unwrap();
    assert!(info.held && info.fence == h.fence && info.owner.is_none(), "{info:?}");
    std::thread::sleep(Duration::from_millis(600));
    let info = p.inspect_typed("k").unwrap();
    assert!(!info.held && info.fence.is_none(), "{info:?}");
}

#[test]
fn get_lock_mode_says_why_it_cannot_inspect_or_force_release() {
    let scratch = Scratch::new("admin_gl");
    let p = so().create_ffi(&scratch.config("get_lock")).unwrap();
    let h = p.try_lock_as("k", 30_000, Some("me")).unwrap().unwrap();
    let e = p.inspect("k").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{}", e.message);
    assert!(e.message.contains("get_lock mode") && e.message.contains("lease mode"), "{e}");
    let e = p.force_release("k", None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{}", e.message);
    assert!(e.message.contains("race-free"), "{}", e.message);
    // Still held: the refusals touched nothing.
    p.renew(&h).unwrap();
    p.release(h).unwrap();
}
