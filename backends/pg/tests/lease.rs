//! Lease mode specifics: the database clock, rows that outlive release,
//! fences that keep rising, handles usable from any instance.

mod common;

use std::time::Duration;

use bext_locking::LockingPlugin;
use common::{Scratch, admin, base_url};

/// `(fence, expires_at - acquired_at in ms, expired)` of a key's row.
fn row(scratch: &Scratch, key: &str) -> (i64, f64, bool) {
    let r = admin(&base_url())
        .query_one(
            &format!(
                "SELECT fence, (extract(epoch FROM expires_at - acquired_at) * 1000)::float8, \
                        expires_at <= clock_timestamp() \
                   FROM \"{}\".bext_locks WHERE key = $1",
                scratch.schema
            ),
            &[&key.as_bytes()],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[test]
fn the_ttl_is_kept_on_the_database_clock_to_the_millisecond() {
    let scratch = Scratch::new("lease_clock");
    let p = scratch.plugin("lease");
    for ttl in [1, 250, 1_234, 86_400_000, bext_locking::MAX_TTL_MS] {
        let key = format!("ttl/{ttl}");
        let h = p.try_lock(&key, ttl).unwrap().unwrap();
        let (_, ms, _) = row(&scratch, &key);
        assert!((ms - ttl as f64).abs() < 0.001, "ttl {ttl}: the row says {ms} ms");
        p.release(h).unwrap();
    }
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
        assert_eq!(stored as u64, fence, "the row stays, with its fence");
        assert!(expired, "release expires the row");
    }
    // A stale release after a takeover leaves the new holder's row alone.
    let old = a.try_lock("k", 100).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let new = b.try_lock("k", 30_000).unwrap().unwrap();
    assert!(new.fence > old.fence);
    a.release(old).unwrap();
    let (stored, _, expired) = row(&scratch, "k");
    assert_eq!(stored as u64, new.fence.unwrap());
    assert!(!expired);
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
