//! Waiting for a lock (`lock_wait`) and setting a lease's remaining time
//! (`renew_for`), in both modes, on the shared server: get_lock mode waits
//! in the server's `GET_LOCK` queue (over several `GET_LOCK`s when the wait
//! outlasts the statement timeout), lease mode polls with the holder's
//! lease end as a bound; a wait that times out or is cancelled leaves no
//! waiting statement and no lock on the server.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bext_locking::{LockAdmin, LockWait, LockingPlugin, Wait};
use bext_locking_mysql::MysqlPlugin;
use common::{Scratch, admin, base_url, free_on_server};
use mysql::prelude::Queryable;

const LONG: Duration = Duration::from_secs(20);

/// Waits up to 5 s for `cond` (the server ends a killed or closed session a
/// moment later).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sessions of this test running a waiting `GET_LOCK`.
fn waiting(scratch: &Scratch) -> usize {
    let ids: Vec<u64> = admin(&base_url())
        .exec(
            "SELECT id FROM information_schema.processlist \
              WHERE db = ? AND id <> CONNECTION_ID() AND info LIKE '%GET_LOCK(%'",
            (&scratch.db,),
        )
        .unwrap();
    ids.len()
}

/// An instance whose statement timeout is short, so that a wait of a few
/// seconds is several `GET_LOCK`s in a row.
fn short(scratch: &Scratch, mode: &str) -> MysqlPlugin {
    let config = scratch.config_with(mode, serde_json::json!({"statement_timeout_ms": 800}));
    MysqlPlugin::from_json(&config).unwrap()
}

#[test]
fn capabilities_list_the_wait_and_renew_ttl() {
    let caps = <bext_locking_mysql::Mysql as bext_locking_kit::Backend>::CAPABILITIES;
    assert!(caps.contains(&"lock_wait") && caps.contains(&"renew_ttl"), "{caps:?}");
    assert!(!caps.contains(&"fifo"), "{caps:?}");
}

fn hand_off(mode: &str) {
    let scratch = Scratch::new(&format!("wait_handoff_{mode}"));
    let holder = short(&scratch, mode);
    let waiter = Arc::new(short(&scratch, mode));
    let key = format!("{}/k", scratch.db);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let w = {
        let (waiter, key) = (waiter.clone(), key.clone());
        thread::spawn(move || {
            let got = waiter.lock_wait(&key, 30_000, Some("waiter"), &Wait::new(LONG)).unwrap();
            (got, Instant::now())
        })
    };
    // Longer than one GET_LOCK of an 800 ms statement timeout.
    thread::sleep(Duration::from_millis(1500));
    assert!(!w.is_finished(), "{mode}: the waiter must wait while the lock is held");
    let released = Instant::now();
    holder.release(held.clone()).unwrap();
    let (got, at) = w.join().unwrap();
    let got = got.unwrap_or_else(|| panic!("{mode}: the waiter timed out after a release"));
    assert!(at.duration_since(released) < LONG / 2);
    if mode == "lease" {
        assert!(got.handle.fence.unwrap() > held.fence.unwrap(), "fences rise across a hand-off");
    }
    assert!(holder.try_lock(&key, 1000).unwrap().is_none(), "{mode}: the waiter holds it");
    waiter.release(got.handle).unwrap();
    assert_eq!(waiting(&scratch), 0);
}

#[test]
fn get_lock_release_hands_the_lock_to_a_waiter() {
    hand_off("get_lock");
}

#[test]
fn lease_release_hands_the_lock_to_a_waiter() {
    hand_off("lease");
}

#[test]
fn lease_waiter_takes_the_lock_when_the_holders_lease_ends() {
    let scratch = Scratch::new("wait_expiry");
    let holder = scratch.plugin("lease");
    let waiter = scratch.plugin("lease");
    let key = format!("{}/k", scratch.db);
    let held = holder.try_lock(&key, 600).unwrap().unwrap();
    let got = waiter.lock_wait(&key, 30_000, None, &Wait::new(LONG)).unwrap().unwrap();
    assert!(holder.renew(&held).is_err(), "the old holder's lease is over");
    waiter.release(got.handle).unwrap();
}

fn times_out_leaving_nothing(mode: &str) {
    let scratch = Scratch::new(&format!("wait_timeout_{mode}"));
    let holder = short(&scratch, mode);
    let waiter = short(&scratch, mode);
    let key = format!("{}/k", scratch.db);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let wait = Wait::new(Duration::from_millis(1200));
    assert!(waiter.lock_wait(&key, 30_000, None, &wait).unwrap().is_none(), "{mode}");
    assert!(wait.timed_out() && !wait.is_cancelled());
    assert_eq!(waiting(&scratch), 0, "{mode}: a GET_LOCK still waits");
    holder.renew(&held).unwrap();
    holder.release(held).unwrap();
    let again = waiter.lock_wait(&key, 30_000, None, &Wait::new(LONG)).unwrap().unwrap();
    waiter.release(again.handle).unwrap();
    if mode == "get_lock" {
        assert!(free_on_server(&mut admin(&base_url()), &key));
    }
}

#[test]
fn get_lock_wait_times_out_leaving_nothing() {
    times_out_leaving_nothing("get_lock");
}

#[test]
fn lease_wait_times_out_leaving_nothing() {
    times_out_leaving_nothing("lease");
}

fn cancel_leaves_nothing(mode: &str) {
    let scratch = Scratch::new(&format!("wait_cancel_{mode}"));
    let holder = scratch.plugin(mode);
    let waiter = Arc::new(scratch.plugin(mode));
    let key = format!("{}/k", scratch.db);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let wait = Wait::new(LONG);
    let w = {
        let (waiter, key, wait) = (waiter.clone(), key.clone(), wait.clone());
        thread::spawn(move || {
            let got = waiter.lock_wait(&key, 30_000, None, &wait).unwrap();
            (got, Instant::now())
        })
    };
    if mode == "get_lock" {
        eventually("the waiter never waited", || waiting(&scratch) == 1);
    } else {
        thread::sleep(Duration::from_millis(300));
    }
    let cancelled = Instant::now();
    wait.cancel();
    let (got, at) = w.join().unwrap();
    assert!(got.is_none(), "{mode}: a cancelled wait returns nothing");
    assert!(
        at.duration_since(cancelled) < Duration::from_secs(1),
        "{mode}: cancel took {:?}",
        at.duration_since(cancelled)
    );
    eventually(&format!("{mode}: a GET_LOCK still waits"), || waiting(&scratch) == 0);
    holder.release(held).unwrap();
    if mode == "get_lock" {
        eventually("the key frees", || free_on_server(&mut admin(&base_url()), &key));
    }
    let again = waiter.try_lock(&key, 30_000).unwrap().expect("free after the cancel");
    waiter.release(again).unwrap();
}

#[test]
fn get_lock_cancel_from_another_thread_leaves_nothing() {
    cancel_leaves_nothing("get_lock");
}

#[test]
fn lease_cancel_from_another_thread_leaves_nothing() {
    cancel_leaves_nothing("lease");
}

#[test]
fn get_lock_wait_on_a_free_key_takes_it_at_once_and_zero_means_one_try() {
    let scratch = Scratch::new("wait_free");
    for mode in ["lease", "get_lock"] {
        let p = scratch.plugin(mode);
        let key = format!("{}/{mode}", scratch.db);
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
    let key = format!("{}/k", scratch.db);
    let h = p.try_lock(&key, 1_000).unwrap().unwrap();
    p.renew_for(&h, 60_000).unwrap();
    let left = p.inspect(&key).unwrap().expires_in_ms.unwrap();
    assert!(left > 30_000, "renew_for lengthened the lease: {left} ms left");
    p.renew_for(&h, 300).unwrap();
    let left = p.inspect(&key).unwrap().expires_in_ms.unwrap();
    assert!(left <= 300, "renew_for shortened the lease: {left} ms left");
    let got = other.lock_wait(&key, 30_000, None, &Wait::new(LONG)).unwrap().unwrap();
    assert!(p.renew_for(&h, 60_000).is_err(), "renew_for of a lost lease fails");
    other.release(got.handle).unwrap();
}

#[test]
fn get_lock_renew_for_moves_the_plugins_own_deadline() {
    let scratch = Scratch::new("renew_for_gl");
    let p = scratch.plugin("get_lock");
    let key = format!("{}/k", scratch.db);
    let mut db = admin(&base_url());
    let h = p.try_lock(&key, 60_000).unwrap().unwrap();
    p.renew_for(&h, 200).unwrap();
    assert!(!free_on_server(&mut db, &key));
    eventually("renew_for(200 ms) ended the lock", || free_on_server(&mut db, &key));
    assert!(p.renew_for(&h, 60_000).is_err(), "renew_for of a reaped lock fails");
}

#[test]
fn through_the_so_a_wait_is_handed_the_lock_and_a_cancel_ends_it() {
    let scratch = Scratch::new("wait_so");
    let lib = bext_locking_loader::load(bext_locking_test_support::plugin_path("mysql")).unwrap();
    for mode in ["lease", "get_lock"] {
        let holder = lib.create_ffi(&scratch.config(mode)).unwrap();
        let waiter = Arc::new(lib.create_ffi(&scratch.config(mode)).unwrap());
        let key = format!("{}/{mode}", scratch.db);
        let held = LockingPlugin::try_lock(&holder, &key, 60_000).unwrap().unwrap();
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
        eventually(&format!("{mode}: a GET_LOCK still waits"), || waiting(&scratch) == 0);
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
/// error, or "timed out") within its own time plus a call budget, never
/// hanging on the silent server.
fn frozen_mid_wait(mode: &str) {
    let scratch = Scratch::new(&format!("wait_frozen_{mode}"));
    let opts = mysql::Opts::from_url(&base_url()).unwrap();
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(&(
        opts.get_ip_or_hostname().as_ref(),
        opts.get_tcp_port(),
    ))
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
    let waiter = Arc::new(MysqlPlugin::from_json(&config).unwrap());
    let holder = scratch.plugin(mode);
    let key = format!("{}/k", scratch.db);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let wait = Duration::from_millis(1500);
    let started = Instant::now();
    let w = {
        let (waiter, key) = (waiter.clone(), key.clone());
        thread::spawn(move || waiter.lock_wait(&key, 30_000, None, &Wait::new(wait)))
    };
    thread::sleep(Duration::from_millis(200));
    proxy.freeze(true);
    let got = w.join().unwrap();
    let took = started.elapsed();
    assert!(!matches!(got, Ok(Some(_))), "{mode}: the lock is held by another: {got:?}");
    assert!(took < wait + Duration::from_secs(3), "{mode}: the wait took {took:?}");
    proxy.freeze(false);
    holder.release(held).unwrap();
}

#[test]
fn get_lock_wait_on_a_frozen_server_ends_in_time() {
    frozen_mid_wait("get_lock");
}

#[test]
fn lease_wait_on_a_frozen_server_ends_in_time() {
    frozen_mid_wait("lease");
}

#[test]
fn get_lock_waiter_survives_the_loss_of_its_session() {
    let scratch = Scratch::new("wait_lost");
    let holder = scratch.plugin("get_lock");
    let waiter = Arc::new(scratch.plugin("get_lock"));
    let key = format!("{}/k", scratch.db);
    let held = holder.try_lock(&key, 60_000).unwrap().unwrap();
    let w = {
        let (waiter, key) = (waiter.clone(), key.clone());
        thread::spawn(move || waiter.lock_wait(&key, 30_000, None, &Wait::new(LONG)))
    };
    eventually("the waiter never waited", || waiting(&scratch) == 1);
    // Only the waiting session: the holder's must live on.
    let mut db = admin(&base_url());
    let ids: Vec<u64> = db
        .exec(
            "SELECT id FROM information_schema.processlist \
              WHERE db = ? AND id <> CONNECTION_ID() AND info LIKE '%GET_LOCK(%'",
            (&scratch.db,),
        )
        .unwrap();
    assert_eq!(ids.len(), 1);
    db.query_drop(format!("KILL {}", ids[0])).unwrap();
    eventually("the waiter did not wait again", || {
        let now: Vec<u64> = admin(&base_url())
            .exec(
                "SELECT id FROM information_schema.processlist \
                  WHERE db = ? AND id <> CONNECTION_ID() AND info LIKE '%GET_LOCK(%'",
                (&scratch.db,),
            )
            .unwrap();
        now.len() == 1 && now[0] != ids[0]
    });
    assert!(!w.is_finished(), "the waiter gave up on a lost session");
    holder.release(held).unwrap();
    let got = w.join().unwrap().unwrap().expect("handed over after a new session");
    waiter.release(got.handle).unwrap();
}
