//! Servers that die, hang, restart and refuse passwords, under one plugin
//! instance that must keep answering in time and recover by itself.

mod harness;

use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use harness::{Server, conn, plugin, quorum_config, servers, single_config};

const OP_TIMEOUT_MS: u64 = 300;
/// Scheduling and process start-up on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(250);

fn within_op_timeout<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(OP_TIMEOUT_MS) + SLACK,
        "{what} took {took:?}, op_timeout_ms is {OP_TIMEOUT_MS}"
    );
    out
}

fn timeouts() -> String {
    format!(r#","op_timeout_ms":{OP_TIMEOUT_MS},"connect_timeout_ms":200"#)
}

#[test]
fn quorum_survives_one_killed_master() {
    let mut nodes = servers(3);
    let locks = plugin(&quorum_config(&nodes, &timeouts()));
    let h = locks.try_lock("k", 5_000).unwrap().expect("all masters up");
    locks.release(h).unwrap();
    nodes[0].kill();
    let h = within_op_timeout("try_lock", || locks.try_lock("k", 5_000))
        .unwrap()
        .expect("2 of 3 masters are a majority");
    within_op_timeout("renew", || locks.renew(&h)).unwrap();
    within_op_timeout("release", || locks.release(h)).unwrap();
}

#[test]
fn quorum_fails_with_two_killed_masters_then_recovers() {
    let mut nodes = servers(3);
    let locks = plugin(&quorum_config(&nodes, &timeouts()));
    let held = locks.try_lock("held", 30_000).unwrap().unwrap();
    nodes[0].kill();
    nodes[1].kill();
    let got = within_op_timeout("try_lock", || locks.try_lock("k", 5_000));
    let err = got.expect_err("one master of 3 is no majority: an error, never Ok(None)");
    assert!(err.contains("only 0 of 3") || err.contains("only 1 of 3"), "{err}");
    assert!(within_op_timeout("renew", || locks.renew(&held)).is_err());
    assert!(within_op_timeout("release", || locks.release(held.clone())).is_err());
    nodes[0].restart();
    nodes[1].restart();
    // The same instance, without being recreated.
    let h = locks.try_lock("k", 5_000).unwrap().expect("majority is back");
    locks.release(h).unwrap();
}

#[test]
fn paused_single_node_calls_return_within_op_timeout() {
    let mut server = Server::start();
    let config = single_config(&server, &timeouts());
    let locks = plugin(&config);
    let h = locks.try_lock("k", 30_000).unwrap().unwrap();
    server.pause();
    assert!(within_op_timeout("try_lock", || locks.try_lock("other", 30_000)).is_err());
    assert!(within_op_timeout("renew", || locks.renew(&h)).is_err());
    assert!(within_op_timeout("release", || locks.release(h.clone())).is_err());
    // A new instance has to connect to the hung server: also bounded.
    let fresh = plugin(&config);
    assert!(within_op_timeout("first call", || fresh.try_lock("k", 30_000)).is_err());
    server.resume();
    locks.renew(&h).expect("the lock survived the pause");
    locks.release(h).unwrap();
    let h = fresh.try_lock("k", 30_000).unwrap().expect("works again after SIGCONT");
    fresh.release(h).unwrap();
}

#[test]
fn paused_master_in_a_quorum() {
    let mut nodes = servers(3);
    let locks = plugin(&quorum_config(&nodes, &timeouts()));
    let h = locks.try_lock("k", 30_000).unwrap().unwrap();
    locks.release(h).unwrap();
    nodes[1].pause();
    let h = within_op_timeout("try_lock", || locks.try_lock("k", 30_000))
        .unwrap()
        .expect("2 of 3 masters answer");
    within_op_timeout("renew", || locks.renew(&h)).unwrap();
    within_op_timeout("release", || locks.release(h)).unwrap();
    nodes[2].pause();
    assert!(within_op_timeout("try_lock", || locks.try_lock("gone", 30_000)).is_err());
    nodes[1].resume();
    nodes[2].resume();
    // The paused masters run the queued `SET NX` for "gone" when they wake,
    // after the attempt gave up and could not undo it there: that token
    // blocks "gone" until its TTL runs out, as Redlock documents. Other keys
    // work at once.
    let h = locks.try_lock("k", 30_000).unwrap().expect("all answer again");
    locks.release(h).unwrap();
}

#[test]
fn restart_without_persistence_keeps_fences_rising() {
    let mut server = Server::start();
    let locks = plugin(&single_config(&server, ""));
    let mut last = 0;
    for _ in 0..3 {
        let h = locks.try_lock("fenced", 30_000).unwrap().unwrap();
        let f = h.fence.expect("single node fences");
        assert!(f > last, "{f} after {last}");
        last = f;
        locks.release(h).unwrap();
    }
    // Hold it across the restart, as a paused holder would.
    let held = locks.try_lock("fenced", 30_000).unwrap().unwrap();
    let n = held.fence.unwrap();
    server.restart();
    // Same instance: its pooled connections died with the server.
    let h = locks.try_lock("fenced", 30_000).unwrap().expect("the restart forgot the lock");
    let f = h.fence.unwrap();
    assert!(f > n, "fence after restart {f} must exceed {n}");
    assert!(locks.renew(&held).is_err(), "the forgotten lock is lost");
    locks.release(h).unwrap();
}

#[test]
fn fences_rise_past_a_rolled_back_counter() {
    // What loading an older RDB snapshot, or losing the last second of an
    // `appendfsync everysec` AOF, does to the counter.
    let server = Server::start();
    let locks = plugin(&single_config(&server, ""));
    let h = locks.try_lock("rollback", 30_000).unwrap().unwrap();
    let n = h.fence.unwrap();
    locks.release(h).unwrap();
    let fence_key =
        bext_locking_redis::keys::fence_key(bext_locking_redis::DEFAULT_KEY_PREFIX, "rollback");
    for old in [1, n / 2, n - 1] {
        let _: () = redis::cmd("SET").arg(&fence_key).arg(old).query(&mut conn(&server)).unwrap();
        let h = locks.try_lock("rollback", 30_000).unwrap().unwrap();
        assert!(h.fence.unwrap() > n, "fence {:?} after rollback to {old}, was {n}", h.fence);
        locks.release(h).unwrap();
    }
}

#[test]
fn a_counter_ahead_of_the_clock_still_rises_by_one() {
    // A server clock that stepped back (or a counter written by a faster
    // clock) leaves the counter ahead of the time: fences go on from the
    // counter, one at a time, never back to the clock. Ahead by a longer
    // number (more digits) and by a larger one of the same length.
    let server = Server::start();
    let locks = plugin(&single_config(&server, ""));
    let h = locks.try_lock("ahead", 30_000).unwrap().unwrap();
    let n = h.fence.unwrap();
    locks.release(h).unwrap();
    let fence_key =
        bext_locking_redis::keys::fence_key(bext_locking_redis::DEFAULT_KEY_PREFIX, "ahead");
    for ahead in [n * 4, n + 3_600_000_000] {
        let _: () = redis::cmd("SET").arg(&fence_key).arg(ahead).query(&mut conn(&server)).unwrap();
        for step in 1..=2 {
            let h = locks.try_lock("ahead", 30_000).unwrap().unwrap();
            assert_eq!(h.fence, Some(ahead + step), "counter was {ahead}");
            locks.release(h).unwrap();
        }
    }
    // The re-acquire path after a lost reply returns the stored fence.
    let stored: String = redis::cmd("GET").arg(&fence_key).query(&mut conn(&server)).unwrap();
    assert_eq!(stored, (n + 3_600_000_002).to_string());
}

#[test]
fn stale_handle_after_expiry_and_takeover() {
    let server = Server::start();
    let (a, b) = (plugin(&single_config(&server, "")), plugin(&single_config(&server, "")));
    let old = a.try_lock("stale", 150).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(250));
    let new = b.try_lock("stale", 30_000).unwrap().unwrap();
    assert!(new.fence > old.fence);
    a.release(old.clone()).unwrap();
    assert!(a.renew(&old).is_err());
    let key = bext_locking_redis::keys::lock_key(bext_locking_redis::DEFAULT_KEY_PREFIX, "stale");
    let value: Option<String> = redis::cmd("GET").arg(&key).query(&mut conn(&server)).unwrap();
    assert_eq!(value.as_deref(), Some(new.lock_id.as_str()), "the new holder's key is intact");
    b.renew(&new).unwrap();
    b.release(new).unwrap();
}

#[test]
fn wrong_password_is_never_shown() {
    let right = "right-S3cret-pw";
    let wrong = "wr0ng-S3cret-pw";
    let server = Server::start_with(&["--requirepass", right]);
    let good = single_config(&server, "");
    let bad = good.replace(right, wrong);
    let check = |message: &str| {
        assert!(!message.contains(wrong) && !message.contains(right), "leaked: {message}");
        assert!(message.contains("***"), "the URL should show, redacted: {message}");
    };

    let err = plugin(&bad).try_lock("k", 1_000).expect_err("wrong password");
    check(&err);
    let so = bext_locking_loader::load(bext_locking_test_support::plugin_path("redis")).unwrap();
    let err = so.create(&bad).unwrap().try_lock("k", 1_000).expect_err("wrong password");
    check(&err);
    // A config error naming a URL redacts it too.
    let err = so.create(&bad.replace("redis://", "http://")).err().expect("bad scheme");
    check(&err);
    // Two of three quorum URLs wrong: the error lists each failure, redacted.
    let others = servers(2);
    let urls = format!(
        r#"{{"urls":["{}","{}","{}"]}}"#,
        server.url().replace(right, wrong),
        others[0].url(),
        others[1].url().replace("redis://", &format!("redis://:{wrong}@"))
    );
    let quorum = plugin(&urls);
    let err = quorum.try_lock("k", 5_000).expect_err("only one master accepts us");
    check(&err);

    let h = plugin(&good).try_lock("k", 1_000).unwrap().expect("right password works");
    assert!(h.fence.is_some());
}

#[test]
fn unreachable_server_is_an_error_and_recovers_once_started() {
    let port = bext_locking_test_support::free_port();
    let locks = plugin(&format!(r#"{{"url":"redis://127.0.0.1:{port}"{}}}"#, timeouts()));
    let err =
        within_op_timeout("try_lock", || locks.try_lock("k", 1_000)).expect_err("nobody listens");
    assert!(err.contains("127.0.0.1"), "{err}");
    let _server = harness::Server::start_on_port(port);
    let h = locks.try_lock("k", 1_000).unwrap().expect("server is up now");
    locks.release(h).unwrap();
}

#[test]
fn paused_cluster_master_calls_return_within_op_timeout() {
    let mut cluster = harness::Cluster::start(3);
    let locks = plugin(&cluster.config(&timeouts()));
    // Find which master owns the key's slot, from behind the plugin's back.
    let key = bext_locking_redis::keys::lock_key(bext_locking_redis::DEFAULT_KEY_PREFIX, "k");
    let h = locks.try_lock("k", 30_000).unwrap().unwrap();
    let owner = cluster
        .nodes
        .iter()
        .position(|s| {
            let v: redis::RedisResult<Option<String>> =
                redis::cmd("GET").arg(&key).query(&mut conn(s));
            matches!(v, Ok(Some(ref t)) if *t == h.lock_id)
        })
        .expect("one master holds the key");
    cluster.nodes[owner].pause();
    assert!(within_op_timeout("try_lock", || locks.try_lock("k", 30_000)).is_err());
    assert!(within_op_timeout("renew", || locks.renew(&h)).is_err());
    cluster.nodes[owner].resume();
    locks.renew(&h).expect("the lock survived the pause");
    locks.release(h).unwrap();
}
