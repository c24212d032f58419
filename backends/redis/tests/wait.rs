//! `lock_wait` and `renew_for` against real servers: a release (or force
//! release, or a `renew_for` that brings the expiry closer) wakes a waiter
//! through the lock's pub/sub channel, a holder that never releases is
//! noticed at its expiry, and a wait that times out or is cancelled leaves
//! no subscription behind. On one node, a cluster (with the lock on
//! another master than the one the waiter listens on) and a quorum.

mod harness;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bext_locking::{LockWait, LockingPlugin, Wait, WaitMode};
use bext_locking_redis::keys::{lock_key, wake_channel};
use bext_locking_redis::{DEFAULT_KEY_PREFIX, RedisPlugin};
use harness::{Cluster, Server, conn, plugin, quorum_config, servers, single_config};

/// Long enough that only a notification (never the holder's expiry) can
/// end a wait within it.
const HELD_TTL_MS: u64 = 60_000;
const WAIT: Duration = Duration::from_secs(20);

fn channel(name: &str) -> String {
    wake_channel(DEFAULT_KEY_PREFIX, name)
}

/// Subscribers of `name`'s channel on `server`.
fn numsub(server: &Server, name: &str) -> i64 {
    let (_, n): (String, i64) =
        redis::cmd("PUBSUB").arg("NUMSUB").arg(channel(name)).query(&mut conn(server)).unwrap();
    n
}

/// Waits (bounded) until `name`'s channel has `n` subscribers over
/// `servers`, so a test releases only once its waiters listen. Not a
/// condition of correctness (a waiter subscribes before its first try),
/// only of what the test shows: that the release, not the try, woke it.
fn until_subscribed(servers: &[&Server], name: &str, n: i64) {
    let start = Instant::now();
    while servers.iter().map(|s| numsub(s, name)).sum::<i64>() < n {
        assert!(start.elapsed() < Duration::from_secs(10), "waiters never subscribed");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until no one listens on `name`'s channel: a waiter that
/// got the lock closes its subscriptions just after returning, so as not
/// to delay the hand-off.
fn until_unsubscribed(servers: &[&Server], name: &str) {
    let start = Instant::now();
    while servers.iter().map(|s| numsub(s, name)).sum::<i64>() != 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "a subscription was left behind");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a waiter on its own thread.
fn waiter(
    locks: &Arc<RedisPlugin>,
    name: &str,
    wait: &Wait,
) -> thread::JoinHandle<Option<bext_locking::Acquired>> {
    let (locks, name, wait) = (locks.clone(), name.to_owned(), wait.clone());
    thread::spawn(move || locks.lock_wait(&name, 5_000, None, &wait).unwrap())
}

fn assert_hand_off(locks: RedisPlugin, servers: &[&Server], fenced: bool) {
    let locks = Arc::new(locks);
    assert_eq!(locks.wait_mode(), WaitMode::Notified);
    let held = locks.try_lock("handoff", HELD_TTL_MS).unwrap().unwrap();
    let wait = Wait::new(WAIT);
    let w = waiter(&locks, "handoff", &wait);
    until_subscribed(servers, "handoff", servers.len().min(3) as i64);
    let first_fence = held.fence;
    locks.release(held).unwrap();
    let got = w.join().unwrap().expect("the release hands the lock to the waiter");
    assert!(!wait.is_over(), "woken by the release, not by the wait's end");
    if fenced {
        assert!(got.handle.fence > first_fence, "{:?} after {first_fence:?}", got.handle.fence);
    } else {
        assert_eq!(got.handle.fence, None);
    }
    until_unsubscribed(servers, "handoff");
    locks.release(got.handle).unwrap();
}

#[test]
fn a_release_hands_the_lock_to_a_waiter() {
    let server = Server::start();
    assert_hand_off(plugin(&single_config(&server, "")), &[&server], true);
}

#[test]
fn a_release_hands_the_lock_to_a_waiter_unfenced() {
    let server = Server::start();
    assert_hand_off(plugin(&single_config(&server, r#","fencing":false"#)), &[&server], false);
}

#[test]
fn a_waiter_wakes_at_the_holders_expiry_without_polling() {
    let server = Server::start();
    let locks = plugin(&single_config(&server, ""));
    let _held = locks.try_lock("expiry", 800).unwrap().unwrap();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn(&server)).unwrap();
    let wait = Wait::new(WAIT);
    let got = locks.lock_wait("expiry", 5_000, None, &wait).unwrap();
    assert!(got.is_some(), "the holder's expiry frees the lock for the waiter");
    // One try that read the PTTL, one at the expiry: a poll every 10 to
    // 250 ms would have sent several.
    let calls = evalsha_calls(&server);
    assert!(calls <= 3, "{calls} acquire calls for one wait");
}

/// `EVALSHA` calls since the last `CONFIG RESETSTAT`.
fn evalsha_calls(server: &Server) -> u64 {
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut conn(server)).unwrap();
    command_calls(&stats, "evalsha")
}

fn command_calls(stats: &str, command: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_timed_out_wait_returns_none_and_leaves_no_subscription() {
    let server = Server::start();
    let locks = plugin(&single_config(&server, ""));
    let held = locks.try_lock("timeout", HELD_TTL_MS).unwrap().unwrap();
    let wait = Wait::new(Duration::from_millis(300));
    assert!(locks.lock_wait("timeout", 5_000, None, &wait).unwrap().is_none());
    assert!(!wait.is_cancelled());
    assert_eq!(numsub(&server, "timeout"), 0, "a subscription outlived the wait");
    // The holder is untouched, and no other key was left.
    let key = lock_key(DEFAULT_KEY_PREFIX, "timeout");
    let v: Option<String> = redis::cmd("GET").arg(&key).query(&mut conn(&server)).unwrap();
    assert_eq!(v.as_deref(), Some(held.lock_id.as_str()));
    // `wait_ms: 0` is one try.
    assert!(locks.lock_wait("timeout", 5_000, None, &Wait::new(Duration::ZERO)).unwrap().is_none());
}

#[test]
fn a_cancel_from_another_thread_ends_the_wait_and_leaves_nothing() {
    let server = Server::start();
    let locks = Arc::new(plugin(&single_config(&server, "")));
    let _held = locks.try_lock("cancel", HELD_TTL_MS).unwrap().unwrap();
    let wait = Wait::new(Duration::from_secs(60));
    let w = waiter(&locks, "cancel", &wait);
    until_subscribed(&[&server], "cancel", 1);
    let cancelled_at = Instant::now();
    wait.cancel();
    assert!(w.join().unwrap().is_none());
    let took = cancelled_at.elapsed();
    assert!(took < Duration::from_secs(1), "the cancel took {took:?} to end the wait");
    assert!(wait.is_cancelled());
    assert_eq!(numsub(&server, "cancel"), 0);
}

#[test]
fn a_force_release_wakes_a_waiter() {
    let server = Server::start();
    let locks = Arc::new(plugin(&single_config(&server, "")));
    let _held = locks.try_lock("forced", HELD_TTL_MS).unwrap().unwrap();
    let wait = Wait::new(WAIT);
    let w = waiter(&locks, "forced", &wait);
    until_subscribed(&[&server], "forced", 1);
    assert!(bext_locking::LockAdmin::force_release(&*locks, "forced", None).unwrap().released);
    assert!(w.join().unwrap().is_some());
}

#[test]
fn a_cluster_release_wakes_a_waiter_listening_on_another_master() {
    let cluster = Cluster::start(3);
    // A lock whose slot is not on the first seed, where waiters listen: the
    // release's PUBLISH must cross the cluster bus.
    let name = (0..)
        .map(|i| format!("handoff-{i}"))
        .find(|n| {
            cluster.owner_of_slot(Cluster::key_slot(&lock_key(DEFAULT_KEY_PREFIX, n))) != Some(0)
        })
        .unwrap();
    let locks = Arc::new(plugin(&cluster.config("")));
    let held = locks.try_lock(&name, HELD_TTL_MS).unwrap().unwrap();
    let wait = Wait::new(WAIT);
    let w = waiter(&locks, &name, &wait);
    until_subscribed(&[&cluster.nodes[0]], &name, 1);
    locks.release(held).unwrap();
    let got = w.join().unwrap().expect("the release hands the lock to the waiter");
    assert!(!wait.is_over());
    assert!(got.handle.fence.is_some());
    until_unsubscribed(&cluster.nodes.iter().collect::<Vec<_>>(), &name);
}

#[test]
fn a_quorum_release_wakes_a_waiter_and_a_timeout_leaves_nothing() {
    let nodes = servers(3);
    let refs: Vec<&Server> = nodes.iter().collect();
    assert_hand_off(plugin(&quorum_config(&nodes, "")), &refs, false);

    let locks = plugin(&quorum_config(&nodes, ""));
    let _held = locks.try_lock("q-timeout", HELD_TTL_MS).unwrap().unwrap();
    let wait = Wait::new(Duration::from_millis(300));
    assert!(locks.lock_wait("q-timeout", 5_000, None, &wait).unwrap().is_none());
    for s in &nodes {
        assert_eq!(numsub(s, "q-timeout"), 0);
    }
}

#[test]
fn a_quorum_waiter_wakes_at_the_majoritys_expiry() {
    let nodes = servers(3);
    let locks = plugin(&quorum_config(&nodes, ""));
    let _held = locks.try_lock("q-expiry", 800).unwrap().unwrap();
    let got = locks.lock_wait("q-expiry", 5_000, None, &Wait::new(WAIT)).unwrap();
    assert!(got.is_some());
}

#[test]
fn renew_for_sets_the_remaining_time_once_and_wakes_waiters() {
    let server = Server::start();
    let locks = Arc::new(plugin(&single_config(&server, "")));
    let held = locks.try_lock("renew-for", HELD_TTL_MS).unwrap().unwrap();
    let key = lock_key(DEFAULT_KEY_PREFIX, "renew-for");
    let pttl = || -> i64 { redis::cmd("PTTL").arg(&key).query(&mut conn(&server)).unwrap() };
    // A waiter read the 60 s expiry; cutting the lease to 300 ms must wake
    // it to read the new one, so it gets the lock when that ends.
    let wait = Wait::new(WAIT);
    let w = waiter(&locks, "renew-for", &wait);
    until_subscribed(&[&server], "renew-for", 1);
    locks.renew_for(&held, 300).unwrap();
    assert!(pttl() <= 300, "{}", pttl());
    let got = w.join().unwrap().expect("the cut lease ends and passes on");
    assert!(!wait.is_over());
    // The old handle no longer holds it: renew_for fails and never
    // re-acquires.
    assert!(locks.renew_for(&held, 10_000).is_err());
    // Lengthening works too, and the next renew uses the handle's TTL.
    locks.renew_for(&got.handle, 30_000).unwrap();
    assert!(pttl() > 5_000);
    LockingPlugin::renew(&*locks, &got.handle).unwrap();
    assert!(pttl() <= 5_000);
}

#[test]
fn renew_for_on_a_quorum_needs_a_majority() {
    let nodes = servers(3);
    let locks = plugin(&quorum_config(&nodes, ""));
    let held = locks.try_lock("q-renew-for", 5_000).unwrap().unwrap();
    locks.renew_for(&held, 20_000).unwrap();
    let key = lock_key(DEFAULT_KEY_PREFIX, "q-renew-for");
    for s in &nodes {
        let p: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn(s)).unwrap();
        assert!(p > 5_000, "{p}");
    }
    // Two masters lose the key: a minority confirms, so the lock is lost.
    for s in &nodes[..2] {
        let _: () = redis::cmd("DEL").arg(&key).query(&mut conn(s)).unwrap();
    }
    assert!(locks.renew_for(&held, 20_000).is_err());
}

/// A measurement, not a limit: what 10 waiters on a held key cost the
/// server, printed (`--nocapture`) for the docs. The only assertion is
/// that they did not poll: each sends its first try and one at its
/// deadline.
#[test]
fn ten_waiters_on_a_held_key_send_few_commands() {
    let server = Server::start();
    let locks = Arc::new(plugin(&single_config(&server, r#","pool_size":10"#)));
    let _held = locks.try_lock("herd", HELD_TTL_MS).unwrap().unwrap();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn(&server)).unwrap();
    let waiting = Duration::from_secs(2);
    let deadline = Instant::now() + waiting;
    let waiters: Vec<_> = (0..10).map(|_| waiter(&locks, "herd", &Wait::until(deadline))).collect();
    for w in waiters {
        assert!(w.join().unwrap().is_none());
    }
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut conn(&server)).unwrap();
    let calls: Vec<(String, u64)> = stats
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(":calls=")?;
            Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
        })
        .collect();
    println!("10 waiters, {waiting:?} on a held key: {calls:?}");
    let acquires = command_calls(&stats, "evalsha");
    assert!(acquires <= 20, "{acquires} acquire calls from 10 waiters: they polled");
}

/// Through the `.so`: `describe` lists the wait and `renew_ttl` (not
/// `fifo`), a release hands off, and a cancel through the `cancel_wait`
/// slot ends the wait and leaves no subscription.
#[test]
fn through_the_so_a_wait_hands_off_and_cancels() {
    let server = Server::start();
    let lib = bext_locking_loader::load(bext_locking_test_support::plugin_path("redis")).unwrap();
    let locks = Arc::new(lib.create_ffi(&single_config(&server, "")).unwrap());
    let caps = locks.capabilities();
    assert!(caps.iter().any(|c| c == "lock_wait") && caps.iter().any(|c| c == "renew_ttl"));
    assert!(!caps.iter().any(|c| c == "fifo"), "{caps:?}");
    assert_eq!(locks.wait_mode(), WaitMode::Notified);

    let held = locks.try_lock("so-wait", HELD_TTL_MS).unwrap().unwrap();
    let start = |wait: &Wait| {
        let (locks, wait) = (locks.clone(), wait.clone());
        thread::spawn(move || locks.lock_wait_with("so-wait", 5_000, None, &wait).unwrap())
    };
    let wait = Wait::new(WAIT);
    let w = start(&wait);
    until_subscribed(&[&server], "so-wait", 1);
    locks.release(held).unwrap();
    let got = w.join().unwrap().expect("handed off through the .so");
    assert!(!wait.is_over());
    until_unsubscribed(&[&server], "so-wait");

    let wait = Wait::new(Duration::from_secs(60));
    let w = start(&wait);
    until_subscribed(&[&server], "so-wait", 1);
    let cancelled_at = Instant::now();
    wait.cancel();
    assert!(w.join().unwrap().is_none());
    assert!(cancelled_at.elapsed() < Duration::from_secs(1), "{:?}", cancelled_at.elapsed());
    assert_eq!(numsub(&server, "so-wait"), 0);
    locks.renew_for(&got.handle, 1_000).unwrap();
    locks.release(got.handle).unwrap();
}

/// A server that accepts connections but never answers (SIGSTOP): a cancel
/// still ends the wait at once, and once the server runs again nothing the
/// waiter started is left subscribed.
#[test]
fn a_cancel_ends_a_wait_on_a_hung_server() {
    let mut server = Server::start();
    let locks = Arc::new(plugin(&single_config(
        &server,
        r#","connect_timeout_ms":5000,"op_timeout_ms":5000"#,
    )));
    server.pause();
    let wait = Wait::new(Duration::from_secs(60));
    let w = waiter(&locks, "hung", &wait);
    thread::sleep(Duration::from_millis(300));
    let cancelled_at = Instant::now();
    wait.cancel();
    let got = w.join().unwrap();
    let took = cancelled_at.elapsed();
    server.resume();
    assert!(got.is_none());
    assert!(took < Duration::from_secs(1), "the cancel took {took:?}");
    let start = Instant::now();
    while numsub(&server, "hung") != 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "a subscription was left behind");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Six waiters, each holding the lock briefly and releasing it: every one
/// gets it in turn, never two at once, long before any lease could expire
/// (so each hand-off came from a release). On a quorum this is also where
/// waiters split the masters between them and must sort it out.
fn every_waiter_gets_it_in_turn(locks: RedisPlugin) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let locks = Arc::new(locks);
    let held = locks.try_lock("turns", HELD_TTL_MS).unwrap().unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let wait = Wait::new(WAIT);
    let waiters: Vec<_> = (0..6)
        .map(|_| {
            let (locks, inside, wait) = (locks.clone(), inside.clone(), wait.clone());
            thread::spawn(move || {
                let got = locks.lock_wait("turns", HELD_TTL_MS, None, &wait).unwrap();
                let got = got.expect("every waiter gets the lock before the wait ends");
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                thread::sleep(Duration::from_millis(20));
                inside.fetch_sub(1, Ordering::SeqCst);
                locks.release(got.handle).unwrap();
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    locks.release(held).unwrap();
    for w in waiters {
        w.join().unwrap();
    }
    assert!(!wait.is_over());
}

#[test]
fn every_waiter_gets_the_lock_in_turn_on_one_node() {
    let server = Server::start();
    every_waiter_gets_it_in_turn(plugin(&single_config(&server, "")));
}

#[test]
fn every_waiter_gets_the_lock_in_turn_on_a_quorum() {
    let nodes = servers(3);
    every_waiter_gets_it_in_turn(plugin(&quorum_config(&nodes, "")));
}

/// A quorum with one master down: the waiter listens on the other two
/// (its subscription to the dead one keeps retrying in the background)
/// and a release still hands the lock on.
#[test]
fn a_quorum_with_a_master_down_still_hands_off() {
    let mut nodes = servers(3);
    nodes[2].kill();
    let locks = Arc::new(plugin(&quorum_config(&nodes, "")));
    let held = locks.try_lock("q-down", HELD_TTL_MS).unwrap().unwrap();
    let wait = Wait::new(WAIT);
    let w = waiter(&locks, "q-down", &wait);
    until_subscribed(&[&nodes[0], &nodes[1]], "q-down", 2);
    locks.release(held).unwrap();
    assert!(w.join().unwrap().is_some());
    assert!(!wait.is_over());
}
