//! ABI 1.1's calls on real servers, beyond the conformance suite: what is
//! stored beside a lock, locks written by an older plugin, `if_fence`,
//! bad input, and a quorum's majority view.

mod harness;

use bext_locking::{ErrorKind, LockAdmin, LockingPlugin, MAX_OWNER_BYTES};
use harness::{Server, conn, plugin, quorum_config, servers, single_config};
use redis::Commands;

const TTL: u64 = 30_000;

#[test]
fn the_owner_lives_beside_the_lock_on_its_ttl_and_goes_with_it() {
    let server = Server::start();
    let p = plugin(&single_config(&server, ""));
    let mut raw = conn(&server);
    let h = p.try_lock_as("jobs/nightly", 10_000, Some("host-a:42")).unwrap().unwrap();
    let info_key = "bext:lock:info:{jobs/nightly}";
    let owner: String = raw.hget(info_key, "owner").unwrap();
    assert_eq!(owner, "host-a:42");
    let tok: String = raw.hget(info_key, "tok").unwrap();
    assert_ne!(tok, h.lock_id, "the record holds a digest, never the token");
    let pttl: i64 = raw.pttl(info_key).unwrap();
    assert!(pttl > 0 && pttl <= 10_000, "the record expires with the lock: {pttl}");
    // Renewal keeps both alive.
    let _: () = raw.pexpire(info_key, 500).unwrap();
    p.renew(&h).unwrap();
    let pttl: i64 = raw.pttl(info_key).unwrap();
    assert!(pttl > 5_000, "renew extends the record too: {pttl}");
    let info = p.inspect("jobs/nightly").unwrap();
    assert_eq!(info.owner.as_deref(), Some("host-a:42"));
    assert_eq!(info.fence, h.fence);
    assert!(info.expires_in_ms.is_some_and(|ms| ms > 5_000 && ms <= 10_000), "{info:?}");
    assert!(info.held_for_ms.is_some_and(|ms| ms < 5_000), "{info:?}");
    let json = serde_json::to_string(&info).unwrap();
    assert!(!json.contains(&h.lock_id), "inspect shows the token: {json}");
    p.release(h).unwrap();
    let exists: bool = raw.exists(info_key).unwrap();
    assert!(!exists, "release deletes the record");
    assert!(!p.inspect("jobs/nightly").unwrap().held);
}

#[test]
fn a_lock_written_without_a_record_is_held_with_no_owner() {
    // What a 1.0 plugin (or the benchmark's raw script) leaves: the token
    // and the fence counter, no record.
    let server = Server::start();
    let p = plugin(&single_config(&server, ""));
    let mut raw = conn(&server);
    let _: () = raw.set_ex("bext:lock:{old}", "some-token", 30).unwrap();
    let _: () = raw.set("bext:lock:fence:{old}", 77).unwrap();
    let info = p.inspect("old").unwrap();
    assert!(info.held);
    assert_eq!((info.fence, info.owner, info.held_for_ms), (Some(77), None, None));
    assert!(info.expires_in_ms.is_some_and(|ms| ms > 20_000));
    // A record left by an earlier holder is not this holder's.
    let _: () = raw.hset("bext:lock:info:{old}", "tok", "not-the-digest").unwrap();
    let _: () = raw.hset("bext:lock:info:{old}", "owner", "previous").unwrap();
    assert_eq!(p.inspect("old").unwrap().owner, None);
    assert!(p.force_release("old", Some(76)).unwrap() == Default::default());
    let broke = p.force_release("old", Some(77)).unwrap();
    assert!(broke.released && broke.fence == Some(77), "{broke:?}");
    let exists: bool = raw.exists("bext:lock:{old}").unwrap();
    assert!(!exists);
    let next = p.try_lock("old", TTL).unwrap().unwrap();
    assert!(next.fence.unwrap() > 77);
}

#[test]
fn if_fence_breaks_only_that_holder() {
    let server = Server::start();
    let config = single_config(&server, "");
    let (holder, op) = (plugin(&config), plugin(&config));
    let h = holder.try_lock_as("k", TTL, Some("stuck")).unwrap().unwrap();
    let f = h.fence.unwrap();
    for wrong in [f - 1, f + 1, 0, u64::MAX] {
        let r = op.force_release("k", Some(wrong)).unwrap();
        assert!(!r.released && r.fence.is_none(), "if_fence {wrong}: {r:?}");
    }
    holder.renew(&h).unwrap();
    let r = op.force_release("k", Some(f)).unwrap();
    assert!(r.released && r.fence == Some(f));
    assert!(holder.renew(&h).is_err(), "the broken holder renewed");
    holder.release(h.clone()).unwrap();
    // Breaking again finds nothing.
    assert!(!op.force_release("k", None).unwrap().released);
    assert!(!op.force_release("k", Some(f)).unwrap().released);
}

#[test]
fn bad_input_names_the_field_and_touches_nothing() {
    let server = Server::start();
    let p = plugin(&single_config(&server, ""));
    for r in [p.inspect("").map(drop), p.force_release("", None).map(drop)] {
        let e = r.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("key"), "{}", e.message);
    }
    let long = "é".repeat(MAX_OWNER_BYTES / 2 + 1);
    let e = p.try_lock_as("k", TTL, Some(&long)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("owner"), "{}", e.message);
    assert!(!p.inspect("k").unwrap().held, "a refused owner took the lock");
    let longest = "é".repeat(MAX_OWNER_BYTES / 2);
    p.try_lock_as("k", TTL, Some(&longest)).unwrap().unwrap();
    assert_eq!(p.inspect("k").unwrap().owner.as_deref(), Some(longest.as_str()));
}

#[test]
fn a_quorum_reports_what_a_majority_agree_on() {
    let nodes = servers(3);
    let p = plugin(&quorum_config(&nodes, ""));
    assert!(!p.inspect("q").unwrap().held, "never locked");
    // A minority holding some token is not a held lock.
    let mut first = conn(&nodes[0]);
    let _: () = first.set_ex("bext:lock:{q}", "minority", 30).unwrap();
    assert!(!p.inspect("q").unwrap().held);
    assert!(!p.force_release("q", None).unwrap().released);
    let still: String = first.get("bext:lock:{q}").unwrap();
    assert_eq!(still, "minority", "a break touched a token no majority holds");
    let _: () = first.del("bext:lock:{q}").unwrap();

    let h = p.try_lock_as("q", TTL, Some("quorum-owner")).unwrap().unwrap();
    // One master loses it: the majority still agrees.
    let _: () = first.del("bext:lock:{q}").unwrap();
    let info = p.inspect("q").unwrap();
    assert!(info.held && info.fence.is_none(), "{info:?}");
    assert_eq!(info.owner.as_deref(), Some("quorum-owner"));
    assert!(info.expires_in_ms.is_some_and(|ms| ms > 20_000 && ms <= TTL), "{info:?}");
    let e = p.force_release("q", Some(1)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("if_fence"), "{}", e.message);
    let r = p.force_release("q", None).unwrap();
    assert!(r.released && r.fence.is_none(), "{r:?}");
    for n in &nodes {
        let exists: bool = conn(n).exists("bext:lock:{q}").unwrap();
        assert!(!exists, "the lock is left on a master");
    }
    assert!(p.renew(&h).is_err(), "the broken holder renewed");
    p.release(h).unwrap();
    assert!(p.try_lock("q", TTL).unwrap().is_some());
}

#[test]
fn a_quorum_with_too_few_masters_answering_cannot_say() {
    let mut nodes = servers(3);
    let p = plugin(&quorum_config(&nodes, r#","op_timeout_ms":500"#));
    nodes[0].kill();
    nodes[1].kill();
    let e = p.inspect("q").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Backend);
    assert!(e.message.contains("1 of 3"), "{}", e.message);
    assert_eq!(p.force_release("q", None).unwrap_err().kind, ErrorKind::Backend);
}
