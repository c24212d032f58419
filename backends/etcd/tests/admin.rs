//! ABI 1.1's calls on a real etcd, beyond the conformance suite: where the
//! owner lives, what inspect reads from the lease, `if_fence`, bad input,
//! and a lock written without an owner key.

mod common;

use std::time::{Duration, Instant};

use bext_locking::{ErrorKind, LockAdmin, LockingPlugin, MAX_OWNER_BYTES};
use bext_locking_etcd::{EtcdConfig, EtcdPlugin};
use common::{Clients, Cluster};

const TTL: u64 = 30_000;

fn plugin(etcd: &Cluster) -> EtcdPlugin {
    let mut config = EtcdConfig::with_endpoints(etcd.endpoints());
    config.key_prefix = "admin/".into();
    config.op_timeout_ms = 3_000;
    EtcdPlugin::from_config(config).unwrap()
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(3)
}

#[test]
fn the_owner_lives_on_the_locks_lease_and_goes_with_it() {
    let etcd = Cluster::single();
    let (p, op) = (plugin(&etcd), plugin(&etcd));
    let c = etcd.client();
    let h = p.try_lock_as("jobs/nightly", 10_000, Some("host-a:42")).unwrap().unwrap();
    let lock = c.get(&p.etcd_key("jobs/nightly"), deadline()).unwrap().unwrap();
    let owner = c.get(&p.owner_key("jobs/nightly"), deadline()).unwrap().unwrap();
    assert_eq!(owner.value, b"host-a:42");
    assert_eq!(owner.lease, lock.lease, "the owner key is on the lock's lease");
    let info = op.inspect("jobs/nightly").unwrap();
    assert!(info.held);
    assert_eq!((info.fence, info.owner.as_deref()), (h.fence, Some("host-a:42")));
    // Whole seconds of the lease, by etcd's clock; no acquisition time.
    assert!(
        info.expires_in_ms.is_some_and(|ms| ms % 1000 == 0 && ms > 5_000 && ms <= 10_000),
        "{info:?}"
    );
    assert_eq!(info.held_for_ms, None);
    assert!(!serde_json::to_string(&info).unwrap().contains(&h.lock_id));
    p.release(h).unwrap();
    assert!(c.get(&p.owner_key("jobs/nightly"), deadline()).unwrap().is_none());
    assert!(!op.inspect("jobs/nightly").unwrap().held);
    // A holder without an owner writes no owner key, and shows none.
    let h = p.try_lock("jobs/nightly", TTL).unwrap().unwrap();
    assert!(c.get(&p.owner_key("jobs/nightly"), deadline()).unwrap().is_none());
    assert_eq!(op.inspect("jobs/nightly").unwrap().owner, None);
    p.release(h).unwrap();
}

#[test]
fn an_owner_key_on_another_lease_is_not_the_holders() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let c = etcd.client();
    let h = p.try_lock("k", TTL).unwrap().unwrap();
    let other = c.lease_grant(30, deadline()).unwrap();
    c.put(&p.owner_key("k"), b"left-over", other, deadline()).unwrap();
    assert_eq!(p.inspect("k").unwrap().owner, None);
    p.release(h).unwrap();
}

#[test]
fn if_fence_breaks_only_that_holder_and_revokes_its_lease() {
    let etcd = Cluster::single();
    let (holder, op) = (plugin(&etcd), plugin(&etcd));
    let c = etcd.client();
    assert!(!op.force_release("never", None).unwrap().released);
    let h = holder.try_lock_as("k", TTL, Some("stuck")).unwrap().unwrap();
    let f = h.fence.unwrap();
    let lease = c.get(&holder.etcd_key("k"), deadline()).unwrap().unwrap().lease;
    for wrong in [f - 1, f + 1, 0, u64::MAX] {
        let r = op.force_release("k", Some(wrong)).unwrap();
        assert!(!r.released && r.fence.is_none(), "if_fence {wrong}: {r:?}");
    }
    holder.renew(&h).unwrap();
    let r = op.force_release("k", Some(f)).unwrap();
    assert!(r.released && r.fence == Some(f), "{r:?}");
    assert!(c.get(&holder.owner_key("k"), deadline()).unwrap().is_none());
    assert_eq!(c.lease_time_to_live(lease, deadline()).unwrap(), None, "the lease lives on");
    assert!(holder.renew(&h).is_err(), "the broken holder renewed");
    holder.release(h.clone()).unwrap();
    let next = op.try_lock("k", TTL).unwrap().unwrap();
    assert!(next.fence.unwrap() > f);
    holder.release(h).unwrap();
    assert!(op.inspect("k").unwrap().held, "a stale release freed the new holder");
}

#[test]
fn bad_input_names_the_field_and_touches_nothing() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
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
