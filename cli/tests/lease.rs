//! `bext-lock run` stops its command before the lease can pass to someone
//! else: a holder whose path to the server freezes, a holder that is itself
//! stopped past its TTL, a holder killed with SIGKILL. Each time a second
//! holder, connected directly to the same real server, waits for the lock;
//! the first command's last write (its file's modification time) must come
//! before the second holder started.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bext_locking::LockingPlugin;
use bext_locking_test_support::proxy::Proxy;
use bext_locking_test_support::servers::{pg, redis};
use common::*;
use nix::sys::signal::Signal;

/// A job that shuts down "cleanly" and slowly: it traps SIGTERM (noting it
/// in the file) and keeps appending a timestamp every 10 ms until killed.
fn stubborn_writer(file: &Path) -> Vec<String> {
    sh(&format!(
        "trap 'echo TERM >> \"{f}\"' TERM; while :; do date +%s%N >> \"{f}\"; sleep 0.01; done",
        f = file.display()
    ))
}

/// When `path` was last written (the kernel's record, not the job's).
fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn wait_for_lines(path: &Path, n: usize) {
    let until = Instant::now() + PATIENCE;
    while lines(path).len() < n {
        assert!(Instant::now() < until, "{} never had {n} lines", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A unique key, so runs never meet (also on a shared server).
fn key(what: &str) -> String {
    let n = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    format!("lease-test/{what}/{}-{n}", std::process::id())
}

/// The second holder: the same plugin, connected directly.
fn direct(plugin: &str, config: &str) -> Arc<dyn LockingPlugin> {
    let lib = bext_locking_loader::load(bext_locking_test_support::plugin_path(plugin)).unwrap();
    Arc::from(lib.create(config).unwrap())
}

/// Polls for `key` every 2 ms; returns the wall-clock time just before the
/// call that got it (no later than the acquisition itself).
fn take_over(
    b: &dyn LockingPlugin,
    key: &str,
    ttl_ms: u64,
) -> (SystemTime, bext_locking::LockHandle) {
    let until = Instant::now() + PATIENCE;
    loop {
        let before = SystemTime::now();
        match b.try_lock(key, ttl_ms) {
            Ok(Some(h)) => return (before, h),
            Ok(None) => {}
            Err(e) => panic!("the second holder's backend failed: {e}"),
        }
        assert!(Instant::now() < until, "the second holder never got {key}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn gap(first: SystemTime, then: SystemTime) -> String {
    match then.duration_since(first) {
        Ok(d) => format!("{d:?} before"),
        Err(e) => format!("{:?} AFTER", e.duration()),
    }
}

/// The holder reaches the server through `proxy`, which freezes while its
/// stubborn job writes; the second holder reaches it directly.
fn frozen_path(
    plugin: &str,
    via_proxy: &str,
    direct_config: &str,
    proxy: &Proxy,
    grace: Option<&str>,
) {
    need(&[plugin]);
    let dir = tempfile::tempdir().unwrap();
    let writes = dir.path().join("writes");
    let key = key(plugin);
    let mut c = cmd();
    c.args(["run", plugin, "--config", via_proxy, "--key", &key, "--ttl", "3s"]);
    if let Some(g) = grace {
        c.args(["--grace", g]);
    }
    c.arg("--").args(stubborn_writer(&writes)).stdout(Stdio::null()).stderr(Stdio::piped());
    let a = Proc::spawn(&mut c);
    wait_for_lines(&writes, 3);
    let b = direct(plugin, direct_config);
    assert!(b.try_lock(&key, 3000).unwrap().is_none(), "the second holder got a held lock");

    // Renewals now hang: nothing passes, nothing is closed.
    proxy.freeze(true);
    let (b_start, h) = take_over(&*b, &key, 3000);
    let o = a.wait_output();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(76), "{err}");
    assert!(err.contains("SIGTERM"), "no SIGTERM on the loss: {err}");
    let got = lines(&writes);
    let term = got.iter().position(|l| l == "TERM").unwrap_or_else(|| panic!("no TERM: {err}"));
    assert!(got.len() > term + 1, "the job did not keep writing after SIGTERM: {got:?}");
    let last = mtime(&writes);
    assert!(
        last < b_start,
        "the first holder's job wrote {} the second holder started ({err})",
        gap(last, b_start)
    );
    eprintln!("{plugin}, --grace {grace:?}: the last write came {}", gap(last, b_start));
    // Nothing of the job is left to write later.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(mtime(&writes), last, "the job wrote after bext-lock exited");
    b.release(h).unwrap();
    proxy.freeze(false);
}

fn redis_configs(server: &redis::Server, proxy: &Proxy) -> (String, String) {
    // Long timeouts: a renewal through the frozen proxy hangs rather than
    // failing fast, the harder case.
    let via = serde_json::json!({
        "url": format!("redis://127.0.0.1:{}", proxy.port),
        "op_timeout_ms": 60000,
    });
    let direct = serde_json::json!({ "url": server.url() });
    (via.to_string(), direct.to_string())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn redis_frozen_path_default_grace_stops_the_job_before_the_next_holder() {
    let server = redis::Server::start();
    let proxy = Proxy::start(loopback(server.port));
    let (via, direct) = redis_configs(&server, &proxy);
    frozen_path("redis", &via, &direct, &proxy, None);
}

#[test]
fn redis_frozen_path_with_the_largest_grace() {
    // --ttl 3s: half of it, less 32 ms of drift and the 100 ms kill margin.
    let server = redis::Server::start();
    let proxy = Proxy::start(loopback(server.port));
    let (via, direct) = redis_configs(&server, &proxy);
    frozen_path("redis", &via, &direct, &proxy, Some("1368ms"));
}

fn pg_configs(cluster: &pg::Cluster, proxy: &Proxy) -> (String, String) {
    let via = serde_json::json!({
        "url": format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port),
        "statement_timeout_ms": 60000,
    });
    let direct = serde_json::json!({ "url": cluster.url() });
    (via.to_string(), direct.to_string())
}

#[test]
fn pg_frozen_path_default_and_largest_grace_stop_the_job_before_the_next_holder() {
    // A throwaway cluster: nothing of the shared server is touched.
    let cluster = pg::Cluster::start();
    let proxy = Proxy::start(loopback(cluster.port));
    let (via, direct) = pg_configs(&cluster, &proxy);
    frozen_path("pg", &via, &direct, &proxy, None);
    frozen_path("pg", &via, &direct, &proxy, Some("1368ms"));
}

#[test]
fn bext_lock_stopped_past_its_ttl_never_lets_its_job_overlap_the_next_holder() {
    need(&["redis"]);
    let server = redis::Server::start();
    let config = serde_json::json!({ "url": server.url() }).to_string();
    let dir = tempfile::tempdir().unwrap();
    let writes = dir.path().join("writes");
    let key = key("stopped");
    let mut c = cmd();
    c.args(["run", "redis", "--config", &config, "--key", &key, "--ttl", "2s", "--"])
        .args(stubborn_writer(&writes))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let a = Proc::spawn(&mut c);
    wait_for_lines(&writes, 3);
    a.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    let b = direct("redis", &config);
    let (b_start, h) = take_over(&*b, &key, 2000);
    // Stopped for longer than the TTL, then woken.
    let ttl = Duration::from_secs(2);
    std::thread::sleep(
        (stopped + ttl + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
    );
    let woken = SystemTime::now();
    a.signal(Signal::SIGCONT);
    let mut a = a;
    let status = a.wait();
    let exited = SystemTime::now();
    let o = a.wait_output();
    let err = stderr(&o);
    assert_eq!(status.code(), Some(76), "{err}");
    assert!(err.contains("paused"), "the pause is not named: {err}");
    // Dead at once: within a second of SIGCONT (bext-lock exits only once
    // the command's group is gone), and in fact before the next holder.
    let after_wake = exited.duration_since(woken).unwrap_or_default();
    assert!(after_wake < Duration::from_secs(1), "took {after_wake:?} after SIGCONT");
    let last = mtime(&writes);
    assert!(last < b_start, "the job wrote {} the next holder started ({err})", gap(last, b_start));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(mtime(&writes), last, "the job wrote after bext-lock exited");
    b.release(h).unwrap();
}

#[test]
fn kill_9_of_bext_lock_takes_its_command_and_its_children_along() {
    need(&["sqlite"]);
    let db = Db::new();
    let (writes, child_writes, pids) =
        (db.file("writes"), db.file("child-writes"), db.file("pids"));
    let key = key("kill9");
    // The command starts a child that writes too, then writes itself.
    let script = format!(
        "(trap '' TERM; while :; do date +%s%N >> '{c}'; sleep 0.01; done) & \
         echo $$ $! > '{p}'; trap '' TERM; while :; do date +%s%N >> '{w}'; sleep 0.01; done",
        c = child_writes.display(),
        p = pids.display(),
        w = writes.display()
    );
    let mut c = cmd();
    c.args(["run", "sqlite", "--config", &db.config(), "--key", &key, "--ttl", "3s", "--"])
        .args(sh(&script))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut a = Proc::spawn(&mut c);
    wait_for_lines(&writes, 3);
    wait_for_lines(&child_writes, 3);
    let both: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let _reap: Vec<KillOnDrop> = both.iter().map(|&p| KillOnDrop(p)).collect();
    a.signal(Signal::SIGKILL);
    let killed = Instant::now();
    assert_eq!(a.wait().signal(), Some(9));
    while !both.iter().all(|&p| gone(p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "the command or its child outlived bext-lock by a second: {both:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = a.wait_output();
    assert!(stderr(&o).contains("watchdog"), "{}", stderr(&o));
    // A second holder gets the lock once the TTL has run out, and nothing
    // of the first command writes after that.
    let b = direct("sqlite", &db.config());
    let (b_start, h) = take_over(&*b, &key, 3000);
    for f in [&writes, &child_writes] {
        let last = mtime(f);
        assert!(last < b_start, "{} written {} the next holder", f.display(), gap(last, b_start));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(mtime(&writes) < b_start && mtime(&child_writes) < b_start);
    b.release(h).unwrap();
}

/// `bext-lock run sqlite --ttl TTL --grace GRACE -- CMD...` to completion.
fn with_grace(db: &Db, ttl: &str, grace: &str, command: &[&str]) -> std::process::Output {
    let config = db.config();
    let mut args = vec!["run", "sqlite", "--config", &config, "--key", "k", "--ttl", ttl];
    args.extend(["--grace", grace, "--"]);
    args.extend(command);
    output(&args)
}

#[test]
fn a_grace_that_cannot_fit_is_a_usage_error_naming_both_numbers_and_the_rule() {
    need(&["sqlite"]);
    let db = Db::new();
    let ran = db.file("ran");
    let touch = format!("touch '{}'", ran.display());
    // The sqlite plugin states a 2 ms allowance: the largest --grace for
    // 3 s is 1500 − 2 − 100 ms.
    for (ttl, grace, shown, largest) in [
        ("3s", "1399ms", "1s 399ms", "1s 398ms"),
        ("3s", "10s", "10s", "1s 398ms"),
        ("6s", "4s", "4s", "2s 898ms"),
    ] {
        let o = with_grace(&db, ttl, grace, &["sh", "-c", &touch]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{ttl} {grace}: {err}");
        assert!(err.contains(&format!("--grace {shown} does not fit --ttl {ttl}")), "{err}");
        assert!(
            err.contains(&format!("the largest --grace for --ttl {ttl} is {largest}")),
            "{err}"
        );
        assert!(err.contains("half-way through the lease"), "the rule is not named: {err}");
        assert!(!ran.exists(), "the command ran despite the usage error");
    }
    // The largest itself fits.
    let o = with_grace(&db, "3s", "1398ms", &["true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn the_default_grace_adapts_to_the_ttl() {
    need(&["memory"]);
    for (ttl, grace) in [("30s", "10s"), ("3s", "1s"), ("900ms", "300ms")] {
        let o = output(&["run", "memory", "-v", "--key", "k", "--ttl", ttl, "--", "true"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(err.contains(&format!("SIGKILL after --grace {grace}")), "{ttl}: {err}");
    }
    let o = output(&["run", "--help"]);
    let help = stdout(&o);
    assert!(help.contains("Default: 10s, or a third of the TTL"), "{help}");
}
