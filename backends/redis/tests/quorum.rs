//! Redlock over independent masters, in the style of redsync's quorum
//! test: for every subset of masters already holding the key for another
//! token, the lock is granted exactly when a majority is free, and a failed
//! attempt leaves none of our tokens behind.

mod harness;

use bext_locking::LockingPlugin;
use bext_locking_redis::DEFAULT_KEY_PREFIX;
use bext_locking_redis::keys::lock_key;
use harness::{Server, conn, plugin, quorum_config, servers};

const OTHER: &str = "someone-else's-token";

fn value(server: &Server, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(&mut conn(server)).unwrap()
}

fn every_subset(n: usize) {
    let nodes = servers(n);
    let locks = plugin(&quorum_config(&nodes, ""));
    let majority = n / 2 + 1;
    let mut granted = 0;
    for mask in 0u32..(1 << n) {
        let name = format!("subset-{n}-{mask}");
        let key = lock_key(DEFAULT_KEY_PREFIX, &name);
        let occupied = |i: usize| mask & (1 << i) != 0;
        for (i, s) in nodes.iter().enumerate().filter(|(i, _)| occupied(*i)) {
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(OTHER)
                .arg("PX")
                .arg(60_000)
                .query(&mut conn(s))
                .unwrap_or_else(|e| panic!("occupy node {i}: {e}"));
        }
        let free = n - mask.count_ones() as usize;
        let got = locks.try_lock(&name, 60_000);
        match got {
            Ok(Some(h)) => {
                assert!(free >= majority, "mask {mask:0n$b}: granted with only {free} of {n} free");
                granted += 1;
                for (i, s) in nodes.iter().enumerate() {
                    let want = if occupied(i) { OTHER } else { h.lock_id.as_str() };
                    assert_eq!(value(s, &key).as_deref(), Some(want), "mask {mask:0n$b} node {i}");
                }
                locks.release(h).unwrap();
            }
            Ok(None) => {
                assert!(free < majority, "mask {mask:0n$b}: refused with {free} of {n} free")
            }
            Err(e) => panic!("mask {mask:0n$b}: error instead of an answer: {e}"),
        }
        // Granted and released, or refused: either way none of our tokens
        // may remain, and the other holder's must be untouched.
        for (i, s) in nodes.iter().enumerate() {
            let want = occupied(i).then_some(OTHER);
            assert_eq!(value(s, &key).as_deref(), want, "mask {mask:0n$b} node {i} afterwards");
        }
    }
    let expected = (0u32..(1 << n)).filter(|m| n - m.count_ones() as usize >= majority).count();
    assert_eq!(granted, expected);
}

#[test]
fn three_masters_every_subset() {
    every_subset(3);
}

#[test]
fn five_masters_every_subset() {
    every_subset(5);
}

#[test]
fn too_short_ttl_is_an_error_not_contention() {
    let nodes = servers(3);
    let locks = plugin(&quorum_config(&nodes, ""));
    for ttl in [1, 2] {
        let err = locks.try_lock("short", ttl).expect_err("a 1-2 ms lease has no validity left");
        assert!(err.contains("validity"), "{err}");
        // Refused as input this quorum cannot serve, before any master is asked.
        let typed = locks.try_lock_typed("short", ttl).unwrap_err();
        assert_eq!(typed.kind, bext_locking::ErrorKind::InvalidArgument, "{typed}");
        assert!(typed.message.contains("ttl_ms is"), "{typed}");
        let key = lock_key(DEFAULT_KEY_PREFIX, "short");
        for s in &nodes {
            assert_eq!(value(s, &key), None, "the failed attempt was not undone");
        }
    }
    assert_eq!(locks.limits().min_ttl_ms(), 3);
    // The longest lease works, renews and releases.
    let h = locks.try_lock("long", bext_locking::MAX_TTL_MS).unwrap().unwrap();
    assert_eq!(h.fence, None, "quorum handles carry no fence");
    locks.renew(&h).unwrap();
    locks.release(h).unwrap();
}

#[test]
fn stale_handle_after_expiry_and_takeover() {
    let nodes = servers(3);
    let (a, b) = (plugin(&quorum_config(&nodes, "")), plugin(&quorum_config(&nodes, "")));
    let old = a.try_lock("stale", 150).unwrap().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(250));
    let new = b.try_lock("stale", 30_000).unwrap().unwrap();
    a.release(old.clone()).unwrap();
    assert!(a.renew(&old).is_err(), "a stale renew must fail");
    let key = lock_key(DEFAULT_KEY_PREFIX, "stale");
    for s in &nodes {
        assert_eq!(value(s, &key).as_deref(), Some(new.lock_id.as_str()));
    }
    b.renew(&new).unwrap();
    b.release(new).unwrap();
}

/// Through the `.so` the refusal is `BEXT_LOCKING_ERR_INVALID` (the typed
/// kind comes from the status code), so C and Go hosts see
/// `invalid_argument`, not a backend failure.
#[test]
fn too_short_ttl_through_the_so_is_invalid_argument() {
    let nodes = servers(3);
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("redis")).unwrap();
    let locks = plugin.create_ffi(&quorum_config(&nodes, "")).unwrap();
    let e = locks.try_lock_typed("short", 2).unwrap_err();
    assert_eq!(e.kind, bext_locking::ErrorKind::InvalidArgument, "{e}");
    assert!(e.message.contains("validity"), "{e}");
    assert!(locks.try_lock("short", 2).unwrap_err().starts_with("invalid_argument: "));
    assert!(locks.try_lock_typed("long", 10_000).unwrap().is_some());
}
