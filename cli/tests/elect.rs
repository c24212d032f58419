//! `bext-lock elect` and `bext-lock leader`, end to end: real processes
//! campaigning on one key of the lease-file fixture (leases shared by the
//! processes of this host, with owners, inspect and fences).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

fn lease_file() -> String {
    bext_locking_test_support::plugin_path("fixture-lease-file").display().to_string()
}

/// A folder with a lease file, and its `--config`.
struct Setup {
    db: Db,
    plugin: String,
    config: String,
}

impl Setup {
    fn new() -> Self {
        need(&["fixture-lease-file"]);
        let db = Db::new();
        let config = serde_json::json!({ "path": db.file("leases.json") }).to_string();
        Self { db, plugin: lease_file(), config }
    }

    /// `bext-lock elect` of a job that appends its term to `terms`, touches
    /// `<name>.ready`, then waits for `<name>.stop`.
    fn candidate(&self, name: &str, extra: &[&str]) -> Proc {
        let (ready, stop) =
            (self.db.file(&format!("{name}.ready")), self.db.file(&format!("{name}.stop")));
        let script = format!(
            "echo $$ > '{}'; echo \"$BEXT_LOCK_FENCE\" >> '{}'; touch '{}'; i=0; while [ ! -e '{}' ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
            self.db.file(&format!("{name}.pid")).display(),
            self.db.file("terms").display(),
            ready.display(),
            stop.display()
        );
        let mut c = cmd();
        c.args(["elect", &self.plugin, "--config", &self.config, "--key", "svc", "--ttl", "2s"])
            .args(extra)
            .args(["--", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Proc::spawn(&mut c)
    }

    fn leader(&self) -> serde_json::Value {
        let o =
            output(&["leader", &self.plugin, "--config", &self.config, "--key", "svc", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn terms(&self) -> Vec<u64> {
        std::fs::read_to_string(self.db.file("terms"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().expect("a term"))
            .collect()
    }

    fn ready(&self, name: &str) -> std::path::PathBuf {
        self.db.file(&format!("{name}.ready"))
    }

    fn stop(&self, name: &str) {
        std::fs::write(self.db.file(&format!("{name}.stop")), "").unwrap();
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < until, "{what} did not happen within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_leader_runs_the_other_waits_and_takes_over_on_resign_with_a_higher_term() {
    let s = Setup::new();
    let mut a = s.candidate("a", &[]);
    wait_for_file(&s.ready("a"));
    let mut b = s.candidate("b", &[]);
    std::thread::sleep(Duration::from_millis(600));
    assert!(!s.ready("b").exists(), "two leaders at once");
    let leader = s.leader();
    assert_eq!(leader["leader"], true, "{leader}");
    assert!(leader["owner"].as_str().unwrap().ends_with(&format!(":{}:sh", a.id())), "{leader}");
    assert_eq!(leader["term"].as_u64(), s.terms().first().copied(), "{leader}");

    s.stop("a");
    assert_eq!(a.wait().code(), Some(0), "the leader's command exit code is elect's");
    wait_for_file(&s.ready("b"));
    let terms = s.terms();
    assert_eq!(terms.len(), 2, "{terms:?}");
    assert!(terms[1] > terms[0], "terms did not rise: {terms:?}");
    s.stop("b");
    assert_eq!(b.wait().code(), Some(0));
    assert_eq!(s.leader()["leader"], false, "the last leader did not resign");
}

#[test]
fn a_killed_leader_is_replaced_once_its_lease_ends_and_its_command_is_gone() {
    let s = Setup::new();
    let mut a = s.candidate("a", &[]);
    wait_for_file(&s.ready("a"));
    let a_job: i32 = std::fs::read_to_string(s.db.file("a.pid")).unwrap().trim().parse().unwrap();
    let _stray = KillOnDrop(a_job);
    let mut b = s.candidate("b", &[]);
    a.signal(Signal::SIGKILL);
    let _ = a.wait();
    // The watchdog kills a's command; b leads after a's lease runs out.
    wait_for_file(&s.ready("b"));
    assert!(gone(a_job), "the killed leader's command outlived its leadership");
    let terms = s.terms();
    assert!(terms.len() == 2 && terms[1] > terms[0], "{terms:?}");
    s.stop("b");
    assert_eq!(b.wait().code(), Some(0));
}

#[test]
fn restart_campaigns_again_until_a_signal() {
    let s = Setup::new();
    let terms = s.db.file("terms");
    let script = format!("echo \"$BEXT_LOCK_FENCE\" >> '{}'", terms.display());
    let mut c = cmd();
    c.args(["elect", &s.plugin, "--config", &s.config, "-k", "svc", "--ttl", "1s", "--restart"])
        .args(["--", "sh", "-c", &script])
        .stderr(Stdio::piped());
    let mut e = Proc::spawn(&mut c);
    wait_until("three terms", || s.terms().len() >= 3);
    e.signal(Signal::SIGTERM);
    assert_eq!(e.wait().code(), Some(128 + 15));
    let t = s.terms();
    assert!(t.windows(2).all(|w| w[1] > w[0]), "terms did not rise: {t:?}");
}

#[test]
fn a_signal_ends_a_campaign_at_once() {
    let s = Setup::new();
    let _a = s.candidate("a", &[]);
    wait_for_file(&s.ready("a"));
    let mut b = s.candidate("b", &[]);
    std::thread::sleep(Duration::from_millis(300));
    b.signal(Signal::SIGINT);
    assert_eq!(b.wait().code(), Some(128 + 2));
    assert!(!s.ready("b").exists());
    s.stop("a");
}

#[test]
fn an_unfenced_backend_is_refused_unless_allowed() {
    let s = Setup::new();
    let config =
        serde_json::json!({ "path": s.db.file("leases.json"), "fences": false }).to_string();
    let ran = s.db.file("ran");
    let touch = format!("touch '{}'", ran.display());
    let o =
        output(&["elect", &s.plugin, "--config", &config, "-k", "svc", "--", "sh", "-c", &touch]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("does not fence") && err.contains("--allow-unfenced"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!ran.exists(), "ran without fences");
    let o = output(&[
        "elect",
        &s.plugin,
        "--config",
        &config,
        "-k",
        "svc",
        "--allow-unfenced",
        "--",
        "sh",
        "-c",
        &touch,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(ran.exists());
}

#[test]
fn elect_without_a_command_is_a_one_line_usage_error() {
    let o = output(&["elect", "memory", "-k", "k"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bext-lock elect --help"), "{err}");
    let o = output(&["elect", "memory", "-k", "k", "--ttl", "soon", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn leader_watch_prints_one_line_per_change() {
    let s = Setup::new();
    let mut c = cmd();
    c.args([
        "leader",
        &s.plugin,
        "--config",
        &s.config,
        "-k",
        "svc",
        "--watch",
        "--interval",
        "20ms",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let watch = Proc::spawn(&mut c);
    let mut a = s.candidate("a", &[]);
    wait_for_file(&s.ready("a"));
    // Renewals (every third of the 2 s TTL) must not show as changes.
    std::thread::sleep(Duration::from_millis(1500));
    s.stop("a");
    assert_eq!(a.wait().code(), Some(0));
    wait_until("the resign seen", || s.leader()["leader"] == false);
    std::thread::sleep(Duration::from_millis(200));
    watch.signal(Signal::SIGTERM);
    let out = watch.wait_output();
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let held: Vec<bool> = lines.iter().map(|l| l["leader"].as_bool().unwrap()).collect();
    assert_eq!(held, [false, true, false], "{lines:?}");
    assert_eq!(lines[1]["term"].as_u64(), s.terms().first().copied());
    assert!(lines[1]["owner"].as_str().is_some_and(|o| o.ends_with(":sh")), "{lines:?}");
}

#[test]
fn leader_on_a_plugin_without_inspect_exits_5() {
    need(&["fixture-abi-1-0"]);
    let plugin = bext_locking_test_support::plugin_path("fixture-abi-1-0");
    let plugin = plugin.to_str().unwrap();
    for extra in [&[][..], &["--watch"][..]] {
        let o = output(&[&["leader", plugin, "-k", "svc"][..], extra].concat());
        assert_eq!(o.status.code(), Some(5), "{extra:?}: {}", stderr(&o));
    }
}
