//! `"fencing": false`: what reaches the server, and what the handles and the
//! `.so`'s description say.

mod harness;

use std::time::Duration;

use bext_locking::LockingPlugin;
use bext_locking_redis::DEFAULT_KEY_PREFIX;
use bext_locking_redis::keys::{fence_key, lock_key};
use harness::{Server, conn, plugin, quorum_config, servers, single_config};

/// The server's own count of calls to `command` since the last reset.
fn calls(server: &Server, command: &str) -> u64 {
    let stats = server.command(&["INFO", "commandstats"]).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn acquire_is_one_plain_set_and_leaves_no_fence_counter() {
    let server = Server::start();
    let p = plugin(&single_config(&server, r#","fencing":false"#));
    server.command(&["CONFIG", "RESETSTAT"]).unwrap();
    let h = p.try_lock("plain", 30_000).unwrap().unwrap();
    assert_eq!(h.fence, None);
    assert_eq!(calls(&server, "set"), 1);
    assert_eq!(calls(&server, "evalsha") + calls(&server, "eval"), 0);

    let mut c = conn(&server);
    let lock = lock_key(DEFAULT_KEY_PREFIX, "plain");
    let value: Option<String> = redis::cmd("GET").arg(&lock).query(&mut c).unwrap();
    assert_eq!(value.as_deref(), Some(h.lock_id.as_str()));
    let pttl: i64 = redis::cmd("PTTL").arg(&lock).query(&mut c).unwrap();
    assert!(pttl > 0 && pttl <= 30_000, "{pttl}");
    let exists: i64 =
        redis::cmd("EXISTS").arg(fence_key(DEFAULT_KEY_PREFIX, "plain")).query(&mut c).unwrap();
    assert_eq!(exists, 0, "no fence counter is written");

    p.renew(&h).unwrap();
    p.release(h).unwrap();
    let value: Option<String> = redis::cmd("GET").arg(&lock).query(&mut c).unwrap();
    assert_eq!(value, None);
}

#[test]
fn contention_is_none_and_a_stale_handle_touches_nothing() {
    let server = Server::start();
    let config = single_config(&server, r#","fencing":false"#);
    let (a, b) = (plugin(&config), plugin(&config));
    let old = a.try_lock("stale", 150).unwrap().unwrap();
    assert!(b.try_lock("stale", 150).unwrap().is_none(), "held by a: contention");
    std::thread::sleep(Duration::from_millis(250));
    let new = b.try_lock("stale", 30_000).unwrap().unwrap();
    a.release(old.clone()).unwrap();
    assert!(a.renew(&old).is_err(), "renew of an expired lock never re-acquires it");
    let lock = lock_key(DEFAULT_KEY_PREFIX, "stale");
    let value: Option<String> = redis::cmd("GET").arg(&lock).query(&mut conn(&server)).unwrap();
    assert_eq!(value.as_deref(), Some(new.lock_id.as_str()), "the new holder's key is intact");
    b.release(new).unwrap();
}

#[test]
fn the_so_describes_the_option_and_its_handles_carry_no_fence() {
    let server = Server::start();
    let lib = bext_locking_loader::load(bext_locking_test_support::plugin_path("redis")).unwrap();
    let d = lib.describe().unwrap();
    assert!(d.description.contains("fencing"), "{}", d.description);
    let schema = serde_json::to_string(&d.config_schema).unwrap();
    assert!(schema.contains("\"fencing\""), "{schema}");
    let p = lib.create(&single_config(&server, r#","fencing":false"#)).unwrap();
    let h = p.try_lock("so", 30_000).unwrap().unwrap();
    assert_eq!(h.fence, None);
    p.release(h).unwrap();
    let fenced = lib.create(&single_config(&server, "")).unwrap();
    assert!(fenced.try_lock("so2", 30_000).unwrap().unwrap().fence.is_some());
}

#[test]
fn a_quorum_refuses_fencing_true() {
    let e = lib_error(r#"{"urls":["redis://127.0.0.1:1"],"fencing":true}"#);
    assert!(e.contains("fencing: true"), "{e}");
}

#[test]
fn a_quorum_acquire_is_one_plain_set_per_master_carrying_the_owner() {
    use bext_locking::LockAdmin;
    let nodes = servers(3);
    let p = plugin(&quorum_config(&nodes, ""));
    for n in &nodes {
        n.command(&["CONFIG", "RESETSTAT"]).unwrap();
    }
    let h = p.try_lock_as("qowned", 30_000, Some("host-q:7")).unwrap().unwrap();
    assert!(h.lock_id.ends_with(":30000:host-q:7"), "{}", h.lock_id);
    let lock = lock_key(DEFAULT_KEY_PREFIX, "qowned");
    for n in &nodes {
        assert_eq!(calls(n, "set"), 1, "one SET on each master");
        assert_eq!(calls(n, "evalsha") + calls(n, "eval") + calls(n, "hset"), 0);
        let value: Option<String> = redis::cmd("GET").arg(&lock).query(&mut conn(n)).unwrap();
        assert_eq!(value.as_deref(), Some(h.lock_id.as_str()));
    }
    let info = p.inspect("qowned").unwrap();
    assert!(info.held, "{info:?}");
    assert_eq!(info.owner.as_deref(), Some("host-q:7"));
    assert!(info.held_for_ms.is_some_and(|ms| ms < 5_000), "{info:?}");
    assert!(p.try_lock_as("qowned", 30_000, Some("host-r:1")).unwrap().is_none());
    p.renew(&h).unwrap();
    assert_eq!(p.inspect("qowned").unwrap().owner.as_deref(), Some("host-q:7"));
    p.release(h).unwrap();
    for n in &nodes {
        let value: Option<String> = redis::cmd("GET").arg(&lock).query(&mut conn(n)).unwrap();
        assert_eq!(value, None, "released on every master");
    }
    assert!(!p.inspect("qowned").unwrap().held);
}

fn lib_error(config: &str) -> String {
    let lib = bext_locking_loader::load(bext_locking_test_support::plugin_path("redis")).unwrap();
    lib.create(config).err().expect("refused")
}

#[test]
fn an_owner_is_recorded_and_inspect_and_force_release_need_no_fence() {
    use bext_locking::{ErrorKind, LockAdmin};
    let server = Server::start();
    let p = plugin(&single_config(&server, r#","fencing":false"#));
    let mut c = conn(&server);
    // A counter left by an earlier fenced configuration is no fence of
    // these locks.
    let _: () =
        redis::cmd("SET").arg(fence_key(DEFAULT_KEY_PREFIX, "owned")).arg(7).query(&mut c).unwrap();
    server.command(&["CONFIG", "RESETSTAT"]).unwrap();
    let h = p.try_lock_as("owned", 30_000, Some("host-a:42")).unwrap().unwrap();
    assert_eq!(h.fence, None);
    assert_eq!(calls(&server, "set"), 1, "the owner rides in the one plain SET");
    assert_eq!(calls(&server, "evalsha") + calls(&server, "eval"), 0);
    assert_eq!(calls(&server, "hset"), 0, "no record is written");
    let lock = lock_key(DEFAULT_KEY_PREFIX, "owned");
    let value: Option<String> = redis::cmd("GET").arg(&lock).query(&mut c).unwrap();
    assert_eq!(value.as_deref(), Some(h.lock_id.as_str()), "the lock id is the whole value");
    assert!(h.lock_id.ends_with(":30000:host-a:42"), "{}", h.lock_id);
    let info = p.inspect("owned").unwrap();
    assert!(info.held);
    assert_eq!(info.fence, None, "{info:?}");
    assert_eq!(info.owner.as_deref(), Some("host-a:42"));
    assert!(info.held_for_ms.is_some_and(|ms| ms < 5_000), "{info:?}");
    assert!(info.expires_in_ms.is_some_and(|ms| ms > 0 && ms <= 30_000), "{info:?}");
    assert!(p.try_lock_as("owned", 30_000, Some("host-b:1")).unwrap().is_none());
    assert_eq!(p.inspect("owned").unwrap().owner.as_deref(), Some("host-a:42"));

    let e = p.force_release("owned", Some(7)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e:?}");
    assert!(e.message.contains("if_fence"), "{e:?}");
    assert!(p.inspect("owned").unwrap().held, "a refused if_fence breaks nothing");
    let broken = p.force_release("owned", None).unwrap();
    assert!(broken.released);
    assert_eq!(broken.fence, None);
    assert!(!p.inspect("owned").unwrap().held);
    assert!(p.renew(&h).is_err(), "the broken holder's renew fails");

    // Without an owner: the plain SET, and no record to tell who or since when.
    let h = p.try_lock("anon", 30_000).unwrap().unwrap();
    let info = p.inspect("anon").unwrap();
    assert!(info.held && info.owner.is_none() && info.held_for_ms.is_none(), "{info:?}");
    assert!(info.expires_in_ms.is_some());
    p.release(h).unwrap();
    assert!(!p.force_release("anon", None).unwrap().released, "a free key");
}

#[test]
fn held_for_counts_from_the_acquisition_across_renewals() {
    use bext_locking::{LockAdmin, LockWait};
    let server = Server::start();
    let p = plugin(&single_config(&server, r#","fencing":false"#));
    let h = p.try_lock_as("long", 2_000, Some("host-c:7")).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = p.inspect("long").unwrap().held_for_ms.unwrap();
    assert!((300..2_000).contains(&before), "{before}");
    // A renew resets the PTTL the first answer was read from; the record
    // it writes keeps the acquisition time.
    p.renew(&h).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    p.renew_for(&h, 60_000).unwrap();
    let info = p.inspect("long").unwrap();
    let after = info.held_for_ms.unwrap();
    assert!(after >= before + 200 && after < 5_000, "{before} then {after}");
    assert_eq!(info.owner.as_deref(), Some("host-c:7"));
    assert!(info.expires_in_ms.is_some_and(|ms| ms > 2_000), "{info:?}");
    p.release(h.clone()).unwrap();
    assert!(!p.inspect("long").unwrap().held);
    // The release leaves the record to expire with the lease it described.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(bext_locking_redis::keys::info_key(DEFAULT_KEY_PREFIX, "long"))
        .query(&mut conn(&server))
        .unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");

    // A new holder's lock is not described by an earlier holder's record.
    let h2 = p.try_lock_as("long", 30_000, Some("host-d:8")).unwrap().unwrap();
    let info = p.inspect("long").unwrap();
    assert_eq!(info.owner.as_deref(), Some("host-d:8"));
    assert!(info.held_for_ms.is_some_and(|ms| ms < 200), "{info:?}");
    p.release(h2).unwrap();
}

#[test]
fn an_owner_with_colons_and_a_waiter_that_names_one() {
    use bext_locking::{LockAdmin, LockWait, Wait};
    let server = Server::start();
    let p = plugin(&single_config(&server, r#","fencing":false"#));
    let odd = "a:b::c: d";
    let h = p.try_lock_as("odd", 30_000, Some(odd)).unwrap().unwrap();
    assert_eq!(p.inspect("odd").unwrap().owner.as_deref(), Some(odd));
    let empty = p.try_lock_as("empty", 30_000, Some("")).unwrap().unwrap();
    assert_eq!(p.inspect("empty").unwrap().owner.as_deref(), Some(""));
    p.release(empty).unwrap();

    let waiter = std::thread::scope(|s| {
        let w = s.spawn(|| {
            p.lock_wait("odd", 30_000, Some("waiter:1"), &Wait::new(Duration::from_secs(5)))
                .unwrap()
                .expect("handed over")
        });
        std::thread::sleep(Duration::from_millis(100));
        p.release(h).unwrap();
        w.join().unwrap()
    });
    assert!(waiter.handle.lock_id.ends_with(":30000:waiter:1"), "{}", waiter.handle.lock_id);
    let info = p.inspect("odd").unwrap();
    assert_eq!(info.owner.as_deref(), Some("waiter:1"));
    assert!(info.held_for_ms.is_some(), "{info:?}");
    p.release(waiter.handle).unwrap();
    assert!(!p.inspect("odd").unwrap().held);
}
