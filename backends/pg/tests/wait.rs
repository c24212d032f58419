//! Waiting for a lock (`lock_wait`) and setting a lease's remaining time
//! (`renew_for`), in both modes, on the shared server: a release hands the
//! lock to a waiter, a lease that ends wakes one, and a wait that times out
//! or is cancelled leaves nothing on the server (no session listening, no
//! queued lock request).

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bext_locking::{LockAdmin, LockWait, LockingPlugin, Wait, WaitMode};
use common::{Scratch, admin, base_url, free_on_server};

/// A waiter's wait, long enough that only a notification (or a lease's
/// end) can explain a success well before it.
const LONG: Duration = Duration::from_secs(20);

/// Waits up to 5 s for `cond` (the server ends a closed session a moment
/// after the client said goodbye).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Lock requests of this test's sessions queued on the server (advisory
/// mode's waiters). Lease mode's waiters `LISTEN` on a session of their
/// own, which ends with the wait (the server keeps no other trace of a
/// listener), so for them the test counts sessions.
fn queued(scratch: &Scratch) -> i64 {
    admin(&base_url())
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
              WHERE a.application_name = $1 AND l.locktype = 'advisory' AND NOT l.granted",
            &[&scratch.app],
        )
        .unwrap()
        .get(0)
}

#[test]
fn both_modes_say_they_wait_on_a_notification_and_set_ttls() {
    let scratch = Scratch::new("wait_caps");
    for mode in ["lease", "advisory"] {
        let p = scratch.plugin(mode);
        assert_eq!(p.wait_mode(), WaitMode::Notified, "{mode}");
        let caps = <bext_locking_pg::Pg as bext_locking_kit::Backend>::CAPABILITIES;
        assert!(caps.contains(&"renew_ttl"), "{mode}: {caps:?}");
        assert!(!caps.contains(&"fifo"), "{mode}: {caps:?}");
    }
}

fn hand_off(mode: &str) {
    let scratch = Scratch::new(&format!("wait_handoff_{mode}"));
    let holder = scratch.plugin(mode);
    let waiter = Arc::new(scratch.plugin(mode));
    let key = format!("{}/k", scratch.schema);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let before = scratch.sessions();
    let w = {
        let (waiter, key) = (waiter.clone(), key.clone());
        thread::spawn(move || {
            let got = waiter.lock_wait(&key, 30_000, Some("waiter"), &Wait::new(LONG)).unwrap();
            (got, Instant::now())
        })
    };
    thread::sleep(Duration::from_millis(300));
    assert!(!w.is_finished(), "{mode}: the waiter must wait while the lock is held");
    let released = Instant::now();
    holder.release(held.clone()).unwrap();
    let (got, at) = w.join().unwrap();
    let got = got.unwrap_or_else(|| panic!("{mode}: the waiter timed out after a release"));
    assert!(at.duration_since(released) < LONG / 2, "{mode}: the release did not wake it");
    assert!(got.sent <= at);
    if mode == "lease" {
        assert!(got.handle.fence.unwrap() > held.fence.unwrap(), "fences rise across a hand-off");
    }
    assert!(holder.try_lock(&key, 1000).unwrap().is_none(), "{mode}: the waiter holds it");
    waiter.release(got.handle).unwrap();
    // Advisory mode's waiter holds the lock on its own session, from then
    // on the pool's; lease mode's waiter session is gone.
    let extra = if mode == "advisory" { 1 } else { 0 };
    eventually(&format!("{mode}: waiter leftovers"), || {
        queued(&scratch) == 0 && scratch.sessions() <= before + extra
    });
}

#[test]
fn lease_release_hands_the_lock_to_a_waiter() {
    hand_off("lease");
}

#[test]
fn advisory_release_hands_the_lock_to_a_waiter() {
    hand_off("advisory");
}

#[test]
fn lease_waiter_wakes_when_the_holders_lease_ends() {
    let scratch = Scratch::new("wait_expiry");
    let holder = scratch.plugin("lease");
    let waiter = scratch.plugin("lease");
    let key = format!("{}/k", scratch.schema);
    let held = holder.try_lock(&key, 600).unwrap().unwrap();
    let started = Instant::now();
    let got = waiter.lock_wait(&key, 30_000, None, &Wait::new(LONG)).unwrap().unwrap();
    assert!(started.elapsed() < LONG / 2, "the lease's end did not wake the waiter");
    assert!(holder.renew(&held).is_err(), "the old holder's lease is over");
    waiter.release(got.handle).unwrap();
}

#[test]
fn lease_force_release_wakes_a_waiter() {
    let scratch = Scratch::new("wait_force");
    let holder = scratch.plugin("lease");
    let waiter = Arc::new(scratch.plugin("lease"));
    let key = format!("{}/k", scratch.schema);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let w = {
        let (waiter, key) = (waiter.clone(), key.clone());
        thread::spawn(move || waiter.lock_wait(&key, 30_000, None, &Wait::new(LONG)).unwrap())
    };
    thread::sleep(Duration::from_millis(300));
    let broken = holder.force_release(&key, None).unwrap();
    assert!(broken.released);
    let got = w.join().unwrap().expect("a forced release wakes the waiter");
    assert!(got.handle.fence.unwrap() > held.fence.unwrap());
    waiter.release(got.handle).unwrap();
}

fn times_out_leaving_nothing(mode: &str) {
    let scratch = Scratch::new(&format!("wait_timeout_{mode}"));
    let holder = scratch.plugin(mode);
    let waiter = scratch.plugin(mode);
    let key = format!("{}/k", scratch.schema);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let before = scratch.sessions();
    let wait = Wait::new(Duration::from_millis(400));
    assert!(waiter.lock_wait(&key, 30_000, None, &wait).unwrap().is_none(), "{mode}");
    assert!(wait.timed_out() && !wait.is_cancelled());
    eventually(&format!("{mode}: timed-out waiter leftovers"), || {
        queued(&scratch) == 0 && scratch.sessions() <= before
    });
    // The holder is untouched, and the key frees normally.
    holder.renew(&held).unwrap();
    holder.release(held).unwrap();
    let again = waiter.lock_wait(&key, 30_000, None, &Wait::new(LONG)).unwrap().unwrap();
    waiter.release(again.handle).unwrap();
    if mode == "advisory" {
        assert!(free_on_server(&mut admin(&base_url()), &key));
    }
}

#[test]
fn lease_wait_times_out_leaving_nothing() {
    times_out_leaving_nothing("lease");
}

#[test]
fn advisory_wait_times_out_leaving_nothing() {
    times_out_leaving_nothing("advisory");
}

fn cancel_leaves_nothing(mode: &str) {
    let scratch = Scratch::new(&format!("wait_cancel_{mode}"));
    let holder = scratch.plugin(mode);
    let waiter = Arc::new(scratch.plugin(mode));
    let key = format!("{}/k", scratch.schema);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let before = scratch.sessions();
    let wait = Wait::new(LONG);
    let w = {
        let (waiter, key, wait) = (waiter.clone(), key.clone(), wait.clone());
        thread::spawn(move || {
            let got = waiter.lock_wait(&key, 30_000, None, &wait).unwrap();
            (got, Instant::now())
        })
    };
    // Until the waiter is really waiting on the server.
    eventually(&format!("{mode}: the waiter never waited"), || {
        if mode == "advisory" { queued(&scratch) == 1 } else { scratch.sessions() > before }
    });
    let cancelled = Instant::now();
    wait.cancel();
    let (got, at) = w.join().unwrap();
    assert!(got.is_none(), "{mode}: a cancelled wait returns nothing");
    assert!(
        at.duration_since(cancelled) < Duration::from_secs(1),
        "{mode}: cancel took {:?}",
        at.duration_since(cancelled)
    );
    // Advisory mode's waiter waited on a pooled session, which may stay.
    let extra = if mode == "advisory" { 1 } else { 0 };
    eventually(&format!("{mode}: cancelled waiter leftovers"), || {
        queued(&scratch) == 0 && scratch.sessions() <= before + extra
    });
    holder.release(held).unwrap();
    if mode == "advisory" {
        // Nothing of the cancelled wait holds the key now.
        eventually("advisory: the key frees", || free_on_server(&mut admin(&base_url()), &key));
    }
    let again = waiter.try_lock(&key, 30_000).unwrap().expect("free after the cancel");
    waiter.release(again).unwrap();
}

#[test]
fn lease_cancel_from_another_thread_leaves_nothing() {
    cancel_leaves_nothing("lease");
}

#[test]
fn advisory_cancel_from_another_thread_leaves_nothing() {
    cancel_leaves_nothing("advisory");
}

#[test]
fn a_wait_on_a_free_key_takes_it_at_once_and_zero_means_one_try() {
    let scratch = Scratch::new("wait_free");
    for mode in ["lease", "advisory"] {
        let p = scratch.plugin(mode);
        let key = format!("{}/{mode}", scratch.schema);
        let got = p.lock_wait(&key, 30_000, None, &Wait::new(Duration::ZERO)).unwrap().unwrap();
        assert!(p.lock_wait(&key, 30_000, None, &Wait::new(Duration::ZERO)).unwrap().is_none());
        p.release(got.handle).unwrap();
    }
}

#[test]
fn lease_renew_for_sets_the_remaining_time_once() {
    let scratch = Scratch::new("renew_for_lease");
    let p = scratch.plugin("lease");
    let other = scratch.plugin("lease");
    let key = format!("{}/k", scratch.schema);
    let h = p.try_lock(&key, 1_000).unwrap().unwrap();
    p.renew_for(&h, 60_000).unwrap();
    let left = p.inspect(&key).unwrap().expires_in_ms.unwrap();
    assert!(left > 30_000, "renew_for lengthened the lease: {left} ms left");
    // Shortening it wakes a waiter that sleeps until the old end (past
    // its wait) to read the new one.
    let other = Arc::new(other);
    let w = {
        let (other, key) = (other.clone(), key.clone());
        thread::spawn(move || other.lock_wait(&key, 30_000, None, &Wait::new(LONG)).unwrap())
    };
    thread::sleep(Duration::from_millis(300));
    p.renew_for(&h, 300).unwrap();
    let left = p.inspect(&key).unwrap().expires_in_ms.unwrap();
    assert!(left <= 300, "renew_for shortened the lease: {left} ms left");
    let got = w.join().unwrap().expect("the waiter woke for the new end");
    assert!(p.renew_for(&h, 60_000).is_err(), "renew_for of a lost lease fails");
    assert!(p.renew(&h).is_err());
    other.release(got.handle).unwrap();
}

#[test]
fn advisory_renew_for_moves_the_plugins_own_deadline() {
    let scratch = Scratch::new("renew_for_adv");
    let p = scratch.plugin("advisory");
    let key = format!("{}/k", scratch.schema);
    let mut db = admin(&base_url());
    let h = p.try_lock(&key, 60_000).unwrap().unwrap();
    p.renew_for(&h, 200).unwrap();
    assert!(!free_on_server(&mut db, &key));
    eventually("renew_for(200 ms) ended the lock", || free_on_server(&mut db, &key));
    assert!(p.renew_for(&h, 60_000).is_err(), "renew_for of a reaped lock fails");
}

#[test]
fn lease_waiter_survives_the_loss_of_its_session() {
    let scratch = Scratch::new("wait_lost");
    let holder = scratch.plugin("lease");
    let waiter = Arc::new(scratch.plugin("lease"));
    let key = format!("{}/k", scratch.schema);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let before = scratch.sessions();
    let w = {
        let (waiter, key) = (waiter.clone(), key.clone());
        thread::spawn(move || waiter.lock_wait(&key, 30_000, None, &Wait::new(LONG)))
    };
    eventually("the waiter never waited", || scratch.sessions() > before);
    assert!(scratch.terminate_all() >= 1);
    thread::sleep(Duration::from_millis(300));
    assert!(!w.is_finished(), "the waiter gave up on a lost session");
    holder.release(held).unwrap();
    let got = w.join().unwrap().unwrap().expect("handed over after a new session");
    waiter.release(got.handle).unwrap();
}

#[test]
fn through_the_so_a_wait_is_handed_the_lock_and_a_cancel_ends_it() {
    let scratch = Scratch::new("wait_so");
    let lib = bext_locking_loader::load(bext_locking_test_support::plugin_path("pg")).unwrap();
    for mode in ["lease", "advisory"] {
        let holder = lib.create_ffi(&scratch.config(mode)).unwrap();
        let waiter = Arc::new(lib.create_ffi(&scratch.config(mode)).unwrap());
        assert_eq!(waiter.wait_mode(), WaitMode::Notified, "{mode}");
        let key = format!("{}/{mode}", scratch.schema);
        let held = LockingPlugin::try_lock(&holder, &key, 60_000).unwrap().unwrap();
        // A cancel through the cancel_wait slot.
        let wait = Wait::new(LONG);
        let w = {
            let (waiter, key, wait) = (waiter.clone(), key.clone(), wait.clone());
            thread::spawn(move || waiter.lock_wait_with(&key, 30_000, None, &wait).unwrap())
        };
        thread::sleep(Duration::from_millis(300));
        let cancelled = Instant::now();
        wait.cancel();
        assert!(w.join().unwrap().is_none(), "{mode}");
        assert!(cancelled.elapsed() < Duration::from_secs(1), "{mode}: {:?}", cancelled.elapsed());
        eventually(&format!("{mode}: queued after a cancel"), || queued(&scratch) == 0);
        // A hand-off.
        let w = {
            let (waiter, key) = (waiter.clone(), key.clone());
            thread::spawn(move || waiter.lock_wait(&key, 30_000, LONG).unwrap())
        };
        thread::sleep(Duration::from_millis(300));
        holder.release(held).unwrap();
        let got = w.join().unwrap().expect("handed over through the .so");
        waiter.renew_for(&got, 60_000).unwrap();
        waiter.release(got).unwrap();
    }
}

/// A waiter behind a proxy that freezes mid-wait: the wait ends (with an
/// error, or "timed out" if the server's answer was not needed) within its
/// own time plus a call budget, never hanging on the silent server.
fn frozen_mid_wait(mode: &str) {
    use std::net::ToSocketAddrs;
    let scratch = Scratch::new(&format!("wait_frozen_{mode}"));
    let pg: postgres::Config = base_url().parse().unwrap();
    let host = match &pg.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("the proxy needs a TCP server, not {other:?}"),
    };
    let upstream = (host.as_str(), pg.get_ports().first().copied().unwrap_or(5432))
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = bext_locking_test_support::proxy::Proxy::start(upstream);
    let url =
        scratch.url.replacen(&format!(":{}/", upstream.port()), &format!(":{}/", proxy.port), 1);
    assert_ne!(url, scratch.url, "could not point {} at the proxy", scratch.url);
    let config = scratch.config_with(
        mode,
        serde_json::json!({"url": url, "connect_timeout_ms": 300, "statement_timeout_ms": 300}),
    );
    let waiter = Arc::new(bext_locking_pg::PgPlugin::from_json(&config).unwrap());
    let holder = scratch.plugin(mode);
    let key = format!("{}/k", scratch.schema);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let before = scratch.sessions();
    let wait = Duration::from_millis(1500);
    let started = Instant::now();
    let w = {
        let (waiter, key) = (waiter.clone(), key.clone());
        thread::spawn(move || waiter.lock_wait(&key, 30_000, None, &Wait::new(wait)))
    };
    eventually(&format!("{mode}: the waiter never waited"), || {
        if mode == "advisory" { queued(&scratch) == 1 } else { scratch.sessions() > before }
    });
    proxy.freeze(true);
    let got = w.join().unwrap();
    let took = started.elapsed();
    assert!(!matches!(got, Ok(Some(_))), "{mode}: the lock is held by another: {got:?}");
    assert!(took < wait + Duration::from_secs(3), "{mode}: the wait took {took:?}");
    proxy.freeze(false);
    holder.release(held).unwrap();
}

#[test]
fn lease_wait_on_a_frozen_server_ends_in_time() {
    frozen_mid_wait("lease");
}

#[test]
fn advisory_wait_on_a_frozen_server_ends_in_time() {
    frozen_mid_wait("advisory");
}

#[test]
fn advisory_waiters_are_served_in_the_order_they_queued() {
    let scratch = Scratch::new("wait_order");
    let holder = scratch.plugin("advisory");
    let key = format!("{}/k", scratch.schema);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let p = scratch.plugin("advisory");
        let (key, order) = (key.clone(), order.clone());
        waiters.push(thread::spawn(move || {
            let got = p.lock_wait(&key, 30_000, None, &Wait::new(LONG)).unwrap().unwrap();
            order.lock().unwrap().push(i);
            thread::sleep(Duration::from_millis(50));
            p.release(got.handle).unwrap();
        }));
        // Queued on the server before the next one starts.
        eventually("a waiter never queued", || queued(&scratch) == i + 1);
    }
    holder.release(held).unwrap();
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
}

#[test]
fn advisory_waiter_survives_the_loss_of_its_session() {
    let scratch = Scratch::new("wait_lost_adv");
    let holder = scratch.plugin("advisory");
    let waiter = Arc::new(scratch.plugin("advisory"));
    let key = format!("{}/k", scratch.schema);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let w = {
        let (waiter, key) = (waiter.clone(), key.clone());
        thread::spawn(move || waiter.lock_wait(&key, 30_000, None, &Wait::new(LONG)))
    };
    eventually("the waiter never queued", || queued(&scratch) == 1);
    // Only the waiting session: the holder's must live on.
    let killed: i64 = admin(&base_url())
        .query_one(
            "SELECT count(pg_terminate_backend(l.pid, 5000)) FROM pg_locks l \
               JOIN pg_stat_activity a ON a.pid = l.pid \
              WHERE a.application_name = $1 AND l.locktype = 'advisory' AND NOT l.granted",
            &[&scratch.app],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    eventually("the waiter did not queue again", || queued(&scratch) == 1);
    assert!(!w.is_finished(), "the waiter gave up on a lost session");
    holder.release(held).unwrap();
    let got = w.join().unwrap().unwrap().expect("handed over after a new session");
    waiter.release(got.handle).unwrap();
}

#[test]
fn advisory_wait_longer_than_the_servers_lock_timeout_range_works() {
    // 30 days: more milliseconds than `lock_timeout` (an int) can hold.
    let scratch = Scratch::new("wait_month");
    let holder = scratch.plugin("advisory");
    let waiter = Arc::new(scratch.plugin("advisory"));
    let key = format!("{}/k", scratch.schema);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let wait = Wait::new(Duration::from_secs(30 * 86_400));
    let w = {
        let (waiter, key, wait) = (waiter.clone(), key.clone(), wait.clone());
        thread::spawn(move || waiter.lock_wait(&key, 30_000, None, &wait))
    };
    eventually("the waiter never queued", || queued(&scratch) == 1 || w.is_finished());
    holder.release(held).unwrap();
    let got = w.join().unwrap().unwrap().expect("handed over");
    waiter.release(got.handle).unwrap();
}
