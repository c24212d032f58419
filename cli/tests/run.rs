//! `bext-lock run` end to end: the real binary, real plugins, real children.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

/// `bext-lock run sqlite --config <db> --key KEY --ttl TTL [extra] -- CMD...`
fn run_sqlite(db: &Db, key: &str, ttl: &str, extra: &[&str], command: &[String]) -> Proc {
    let mut c = cmd();
    c.args(["run", "sqlite", "--config", &db.config(), "--key", key, "--ttl", ttl])
        .args(extra)
        .arg("--")
        .args(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Proc::spawn(&mut c)
}

#[test]
fn exit_status_is_the_commands() {
    need(&["memory"]);
    let o = output(&["run", "memory", "--key", "k", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let o = output(&["run", "memory", "--key", "k", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Killed by a signal: 128 + N, as a shell reports it.
    let o = output(&["run", "memory", "--key", "k", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(o.status.code(), Some(128 + 9), "{}", stderr(&o));
}

#[test]
fn the_child_gets_key_lock_id_and_fence() {
    need(&["sqlite"]);
    let db = Db::new();
    let print = sh("echo \"$BEXT_LOCK_KEY|$BEXT_LOCK_ID|${BEXT_LOCK_FENCE-unset}\"");
    let mut fences = Vec::new();
    for _ in 0..2 {
        let o = run_sqlite(&db, "jobs/env", "5s", &[], &print).wait_output();
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        let parts: Vec<&str> = out.trim().split('|').collect();
        assert_eq!(parts[0], "jobs/env");
        assert!(parts[1].len() >= 8, "lock id {:?}", parts[1]);
        fences.push(parts[2].parse::<u64>().expect("a numeric fence"));
    }
    assert!(fences[1] > fences[0], "fences must rise: {fences:?}");
}

#[test]
fn an_outer_fence_is_not_passed_on() {
    need(&["memory"]);
    // memory fences, so check the variable is replaced, not inherited.
    let o = cmd()
        .env("BEXT_LOCK_FENCE", "999999")
        .args(["run", "memory", "--key", "k", "--", "sh", "-c", "echo $BEXT_LOCK_FENCE"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "1");
}

#[test]
fn two_concurrent_runs_one_runs_the_other_exits_75() {
    need(&["sqlite"]);
    let db = Db::new();
    let (ready, stop) = (db.file("a-ready"), db.file("a-stop"));
    let mut a = run_sqlite(&db, "jobs/once", "5s", &[], &job_until(&ready, &stop));
    wait_for_file(&ready);

    let b_ran = db.file("b-ran");
    let b = run_sqlite(&db, "jobs/once", "5s", &[], &sh(&format!("touch '{}'", b_ran.display())));
    let o = b.wait_output();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(!b_ran.exists(), "the second run ran its command while the lock was held");
    assert!(stderr(&o).is_empty(), "contention is quiet without -v: {}", stderr(&o));

    // -E changes the code; -v says why.
    let o = run_sqlite(&db, "jobs/once", "5s", &["-E", "0", "-v"], &sh("exit 9")).wait_output();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("held elsewhere"), "{}", stderr(&o));

    std::fs::write(&stop, "").unwrap();
    assert_eq!(a.wait().code(), Some(0));
    // Released when the command ended: the next run gets the lock.
    let o = run_sqlite(&db, "jobs/once", "5s", &[], &sh("exit 0")).wait_output();
    assert_eq!(o.status.code(), Some(0), "not released: {}", stderr(&o));
}

#[test]
fn wait_gets_the_lock_once_the_holder_is_done() {
    need(&["sqlite"]);
    let db = Db::new();
    let (ready, stop) = (db.file("a-ready"), db.file("a-stop"));
    let mut a = run_sqlite(&db, "jobs/wait", "5s", &[], &job_until(&ready, &stop));
    wait_for_file(&ready);
    // B waits; its command checks that A's command has finished by then.
    let b = run_sqlite(
        &db,
        "jobs/wait",
        "5s",
        &["--wait", "15s"],
        &sh(&format!("[ -e '{}' ] && echo after", stop.display())),
    );
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&stop, "").unwrap();
    assert_eq!(a.wait().code(), Some(0));
    let o = b.wait_output();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "after");
}

#[test]
fn wait_gives_up_with_75() {
    need(&["sqlite"]);
    let db = Db::new();
    let (ready, stop) = (db.file("a-ready"), db.file("a-stop"));
    let mut a = run_sqlite(&db, "jobs/busy", "5s", &[], &job_until(&ready, &stop));
    wait_for_file(&ready);
    let b_ran = db.file("b-ran");
    let touch = sh(&format!("touch '{}'", b_ran.display()));
    let o = run_sqlite(&db, "jobs/busy", "5s", &["--wait", "400ms"], &touch).wait_output();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(!b_ran.exists());
    std::fs::write(&stop, "").unwrap();
    assert_eq!(a.wait().code(), Some(0));
}

/// Reads `p`'s stderr on a thread until a line containing `needle` (failing
/// the test after [`PATIENCE`]); the rest is drained and returned by the
/// handle.
fn said_line(p: &mut Proc, needle: &str) -> std::thread::JoinHandle<String> {
    use std::io::BufRead;
    let err = p.0.as_mut().unwrap().stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = needle.to_owned();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains(&wanted) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if rx.recv_timeout(PATIENCE).is_err() {
        panic!("bext-lock never said {needle:?}");
    }
    reader
}

#[test]
fn a_signal_during_the_wait_cancels_it_exits_128_plus_n_and_leaves_the_key_free() {
    need(&["sqlite"]);
    let db = Db::new();
    let (ready, stop) = (db.file("a-ready"), db.file("a-stop"));
    let mut a = run_sqlite(&db, "jobs/cancel", "5s", &[], &job_until(&ready, &stop));
    wait_for_file(&ready);
    for (sig, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let b_ran = db.file(&format!("b-ran-{code}"));
        let touch = sh(&format!("touch '{}'", b_ran.display()));
        let mut b = run_sqlite(&db, "jobs/cancel", "5s", &["--wait", "60s", "-v"], &touch);
        // B says so under -v once its signal handling is set up, as its
        // wait begins; a little later it is blocked in it.
        let said = said_line(&mut b, "waiting up to");
        std::thread::sleep(Duration::from_millis(200));
        b.signal(sig);
        let status = b.wait();
        let err = said.join().unwrap();
        assert_eq!(status.code(), Some(code), "{sig:?} during --wait: {status:?}\n{err}");
        assert!(!b_ran.exists(), "the command ran after {sig:?} cancelled the wait");
    }
    std::fs::write(&stop, "").unwrap();
    assert_eq!(a.wait().code(), Some(0));
    // Nothing of the cancelled waits is left: another process takes the key
    // at once, without waiting.
    let o = run_sqlite(&db, "jobs/cancel", "5s", &[], &sh("echo ran")).wait_output();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "ran");
}

#[test]
fn verbose_says_how_the_wait_waits() {
    need(&["memory", "sqlite"]);
    // The memory plugin has a notified, in-order wait.
    let o = output(&["run", "memory", "-v", "--key", "k", "--wait", "1s", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("waiting up to 1s for `k` by the plugin's lock_wait"), "{err}");
    assert!(err.contains("in arrival order"), "{err}");
    // Whatever SQLite's plugin has, the line says which way it waits.
    let db = Db::new();
    let o = run_sqlite(&db, "k", "5s", &["-v", "--wait", "1s"], &sh("true")).wait_output();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("by the plugin's lock_wait") || err.contains("by polling try_lock"),
        "{err}"
    );
    // Without --wait there is no wait to describe.
    let o = output(&["run", "memory", "-v", "--key", "k", "--", "true"]);
    assert!(!stderr(&o).contains("waiting up to"), "{}", stderr(&o));
}

/// A command that records a SIGTERM/SIGINT in `got` and exits 42 on it.
fn trapping(ready: &std::path::Path, got: &std::path::Path) -> Vec<String> {
    sh(&format!(
        "trap 'echo TERM > \"{g}\"; exit 42' TERM; trap 'echo INT > \"{g}\"; exit 43' INT; \
         touch '{r}'; i=0; while [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
        g = got.display(),
        r = ready.display()
    ))
}

#[test]
fn sigterm_and_sigint_are_forwarded_to_the_command() {
    need(&["sqlite"]);
    let db = Db::new();
    for (sig, word, code) in [(Signal::SIGTERM, "TERM", 42), (Signal::SIGINT, "INT", 43)] {
        let (ready, got) = (db.file(&format!("ready-{word}")), db.file(&format!("got-{word}")));
        let mut p = run_sqlite(&db, "jobs/sig", "5s", &[], &trapping(&ready, &got));
        wait_for_file(&ready);
        p.signal(sig);
        assert_eq!(p.wait().code(), Some(code), "{word} not forwarded");
        assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), word);
    }
    // The lock was released after the forwarded signal ended the command.
    let o = run_sqlite(&db, "jobs/sig", "5s", &[], &sh("exit 0")).wait_output();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_command_killed_by_a_forwarded_signal_reports_128_plus_n() {
    need(&["memory"]);
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = format!("touch '{}'; exec sleep 20", ready.display());
    let mut c = cmd();
    c.args(["run", "memory", "--key", "k", "--", "sh", "-c", &script]);
    let mut p = Proc::spawn(&mut c);
    wait_for_file(&ready);
    std::thread::sleep(Duration::from_millis(50)); // let `exec sleep` happen
    p.signal(Signal::SIGTERM);
    let status = p.wait();
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    assert_eq!(status.signal(), None, "bext-lock itself must exit, not die");
}

/// Takes the lock over in the database, behind the holder's back.
fn steal(db: &Db, key: &str) {
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let n = conn
        .execute("UPDATE bext_locks SET lock_id = 'stolen-by-the-test' WHERE key = ?1", [key])
        .unwrap();
    assert_eq!(n, 1, "no lock row for {key}");
}

#[test]
fn a_lost_lock_terminates_the_command_with_76() {
    need(&["sqlite"]);
    let db = Db::new();
    let (ready, got) = (db.file("ready"), db.file("got"));
    let p = run_sqlite(&db, "jobs/lost", "600ms", &[], &trapping(&ready, &got));
    wait_for_file(&ready);
    steal(&db, "jobs/lost");
    let o = p.wait_output();
    assert_eq!(o.status.code(), Some(76), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), "TERM", "no SIGTERM on loss");
    let err = stderr(&o);
    assert!(err.contains("was lost"), "{err}");
    // The thief's lock was not released by the loser.
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    let id: String = conn
        .query_row("SELECT lock_id FROM bext_locks WHERE key = 'jobs/lost'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(id, "stolen-by-the-test");
}

#[test]
fn a_command_that_ignores_sigterm_gets_sigkill_after_the_grace() {
    need(&["sqlite"]);
    let db = Db::new();
    let (ready, alive) = (db.file("ready"), db.file("alive"));
    // Ignores TERM, and would write `alive` if it lived 10 s.
    let script = format!(
        "trap '' TERM; touch '{r}'; i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; touch '{a}'",
        r = ready.display(),
        a = alive.display()
    );
    let p = run_sqlite(&db, "jobs/stubborn", "2s", &["--grace", "300ms"], &sh(&script));
    wait_for_file(&ready);
    steal(&db, "jobs/stubborn");
    let o = p.wait_output();
    assert_eq!(o.status.code(), Some(76), "{}", stderr(&o));
    assert!(stderr(&o).contains("SIGKILL"), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive.exists(), "the command outlived the lost lock");
}

#[test]
fn a_paused_holder_loses_the_lock_and_its_command_is_killed() {
    need(&["sqlite"]);
    let db = Db::new();
    let (ready, got) = (db.file("ready"), db.file("got"));
    let p = run_sqlite(&db, "jobs/paused", "1s", &[], &trapping(&ready, &got));
    wait_for_file(&ready);
    // Freeze bext-lock (not its command) well past the lease: its watchdog
    // kills the command by the lease end, without waiting for SIGCONT.
    // (No other process takes the key meanwhile: a process frozen in the
    // middle of a SQLite write would keep the whole file locked until it
    // resumes.)
    p.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1500));
    p.signal(Signal::SIGCONT);
    let o = p.wait_output();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(76), "{err}");
    assert!(err.contains("stopped by signal 9"), "{err}");
    assert!(err.contains("paused"), "{err}");
    assert!(err.contains("has not confirmed a renewal"), "the watchdog did not say why: {err}");
    assert!(!got.exists(), "SIGTERM after a pause: the command must be killed at once");
}

#[test]
fn commands_that_cannot_run() {
    need(&["memory"]);
    let o = output(&["run", "memory", "--key", "k", "--", "/nonexistent/command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("command not found"), "{}", stderr(&o));
    // The lock was released: memory is per process, so check via verbose output instead.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-executable");
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    let o = output(&["run", "memory", "--key", "k", "--", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
}

#[test]
fn errors_are_one_line_with_distinct_codes() {
    need(&["sqlite"]);
    let one_line = |o: &std::process::Output| {
        let err = stderr(o);
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        assert!(err.starts_with("bext-lock: "), "{err}");
        err
    };
    let o = output(&["run", "no-such-plugin", "--key", "k", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(one_line(&o).contains("no plugin named `no-such-plugin`"));

    let o = output(&["run", "sqlite", "--config", "{not json", "--key", "k", "--", "true"]);
    assert_eq!(o.status.code(), Some(78));
    assert!(one_line(&o).contains("not valid JSON"));

    // The plugin refuses its config (no such folder): 78, the command never ran.
    let o = output(&[
        "run",
        "sqlite",
        "--config",
        r#"{"path":"/nonexistent/dir/x.db"}"#,
        "--key",
        "k",
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(78));
    one_line(&o);

    let o = output(&["run", "sqlite", "--key", "k", "--ttl", "30", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no unit"), "{}", stderr(&o));
    let o = output(&["run", "sqlite", "--key", "k", "--ttl", "0s", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
    let o = output(&["run", "sqlite", "--key", "k"]);
    assert_eq!(o.status.code(), Some(2), "a command is required");
}

#[test]
fn passwords_in_configs_are_never_printed() {
    need(&["sqlite"]);
    let dir = tempfile::tempdir().unwrap();
    // A config whose value the backend echoes in its error: the URL's
    // password must be masked in whatever reaches the terminal.
    let config = serde_json::json!({
        "path": format!("{}/file://u:hunter2@host/x.db", dir.path().join("missing").display()),
    })
    .to_string();
    let o = output(&["run", "sqlite", "-v", "--config", &config, "--key", "k", "--", "true"]);
    assert_ne!(o.status.code(), Some(0));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!all.contains("hunter2"), "password printed: {all}");

    // Keys that name a secret are masked in the verbose config echo.
    need(&["memory"]);
    let o = cmd()
        .args(["run", "memory", "-v", "--key", "k", "--", "true"])
        .env("BEXT_LOCK_CONFIG", r#"{"namespace":"redis://:hunter2@h:1"}"#)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("redis://:***@h:1"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
}

#[test]
fn a_lost_lock_also_stops_what_the_command_started() {
    need(&["sqlite"]);
    let db = Db::new();
    let (ready, pidfile) = (db.file("ready"), db.file("pid"));
    // A shell that starts a long job in the background and waits for it:
    // killing the shell alone would leave the job running unprotected.
    let script = format!(
        "sleep 30 >/dev/null 2>&1 & echo $! > '{p}'; touch '{r}'; wait",
        p = pidfile.display(),
        r = ready.display()
    );
    let p = run_sqlite(&db, "jobs/tree", "6s", &["--grace", "2s"], &sh(&script));
    wait_for_file(&ready);
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let _reap = KillOnDrop(pid);
    steal(&db, "jobs/tree");
    let o = p.wait_output();
    assert_eq!(o.status.code(), Some(76), "{}", stderr(&o));
    let until = std::time::Instant::now() + PATIENCE;
    while !gone(pid) {
        assert!(std::time::Instant::now() < until, "the background job outlived the lost lock");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn foreground_keeps_the_command_in_our_process_group() {
    need(&["memory"]);
    let mine = nix::unistd::getpgrp().as_raw();
    let o = output(&[
        "run",
        "memory",
        "--key",
        "k",
        "--foreground",
        "--",
        "sh",
        "-c",
        "cut -d' ' -f5 /proc/$$/stat",
    ]);
    assert_eq!(stdout(&o).trim().parse::<i32>().unwrap(), mine, "{}", stderr(&o));
    let o =
        output(&["run", "memory", "--key", "k", "--", "sh", "-c", "cut -d' ' -f5 /proc/$$/stat"]);
    assert_ne!(stdout(&o).trim().parse::<i32>().unwrap(), mine, "{}", stderr(&o));
}
