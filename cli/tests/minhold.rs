//! `bext-lock run --min-hold`, end to end: the lock outlives the command
//! (and the `bext-lock` process) until the hold ends, then frees itself;
//! a plugin that cannot keep a lock is refused before anything runs.
//!
//! The lease-file fixture shares its leases between processes and has
//! `renew_ttl`; SQLite is covered too once it lists the capability.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn lease_file() -> String {
    bext_locking_test_support::plugin_path("fixture-lease-file").display().to_string()
}

/// The `--config` of a lease file in `db`'s folder.
fn lease_config(db: &Db) -> String {
    serde_json::json!({ "path": db.file("leases.json") }).to_string()
}

/// Whether `plugin` (with `config`) lists `renew_ttl`.
fn has_renew_ttl(plugin: &str) -> bool {
    let o = output(&["describe", plugin, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["capabilities"].as_array().is_some_and(|c| c.iter().any(|c| c == "renew_ttl"))
}

fn status_json(plugin: &str, config: &str, key: &str) -> serde_json::Value {
    let o = output(&["status", plugin, "--config", config, "--json", key]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0].clone()
}

/// A run that ends long before `--min-hold 4s`: it exits at once, the
/// key stays held (a second run is contended, `status` shows it), and is
/// free once the hold is over.
fn holds_until_the_hold_ends(plugin: &str, config: &str) {
    let hold = Duration::from_secs(4);
    let start = Instant::now();
    let o = output(&[
        "run",
        plugin,
        "--config",
        config,
        "-k",
        "cron",
        "--ttl",
        "1s",
        "--min-hold",
        "4s",
        "-v",
        "--",
        "true",
    ]);
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(took < hold, "bext-lock lingered for the hold: {took:?}");
    assert!(stderr(&o).contains("kept `cron` for the rest of --min-hold 4s"), "{}", stderr(&o));

    // Past the 1 s TTL, still held: the hold, not the TTL, decides.
    std::thread::sleep(Duration::from_millis(1500));
    let info = status_json(plugin, config, "cron");
    assert_eq!(info["held"], true, "{info}");
    let marker = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::remove_file(&marker).unwrap();
    let touch = format!("touch '{}'", marker.display());
    let o = output(&["run", plugin, "--config", config, "-k", "cron", "--", "sh", "-c", &touch]);
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(!marker.exists(), "a second run ran inside the hold");

    let left = Duration::from_millis(info["expires_in_ms"].as_u64().unwrap());
    std::thread::sleep(left + Duration::from_millis(200));
    let o = output(&["run", plugin, "--config", config, "-k", "cron", "--", "sh", "-c", &touch]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(marker.exists(), "the run after the hold did not run");
    assert_eq!(status_json(plugin, config, "cron")["held"], false, "a plain run kept the lock");
}

#[test]
fn min_hold_keeps_the_lock_after_an_early_exit_then_frees_it() {
    need(&["fixture-lease-file"]);
    let db = Db::new();
    holds_until_the_hold_ends(&lease_file(), &lease_config(&db));
}

#[test]
fn min_hold_on_sqlite_once_it_lists_renew_ttl() {
    need(&["sqlite"]);
    if !has_renew_ttl("sqlite") {
        eprintln!("skipped: the sqlite plugin does not list `renew_ttl` yet");
        return;
    }
    let db = Db::new();
    holds_until_the_hold_ends("sqlite", &db.config());
}

#[test]
fn a_command_longer_than_the_hold_releases_at_its_end() {
    need(&["fixture-lease-file"]);
    let db = Db::new();
    let (plugin, config) = (lease_file(), lease_config(&db));
    let o = output(&[
        "run",
        &plugin,
        "--config",
        &config,
        "-k",
        "k",
        "--min-hold",
        "100ms",
        "--",
        "sleep",
        "0.5",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(status_json(&plugin, &config, "k")["held"], false);
}

#[test]
fn min_hold_is_refused_with_exit_5_on_a_plugin_without_renew_ttl() {
    need(&["fixture-abi-1-0"]);
    let plugin = bext_locking_test_support::plugin_path("fixture-abi-1-0").display().to_string();
    let marker = tempfile::tempdir().unwrap();
    let ran = marker.path().join("ran");
    let touch = format!("touch '{}'", ran.display());
    let o = output(&["run", &plugin, "-k", "k", "--min-hold", "2s", "--", "sh", "-c", &touch]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("bext-lock: --min-hold: ") && err.contains("`renew_ttl`"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!ran.exists(), "the command ran although --min-hold was refused");
    // Zero is today's behaviour, on any plugin.
    let o = output(&["run", &plugin, "-k", "k", "--min-hold", "0", "--", "sh", "-c", &touch]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(ran.exists());
}

#[test]
fn a_min_hold_that_is_not_a_duration_is_a_one_line_usage_error() {
    for bad in ["soon", "5", "2x"] {
        let o = output(&["run", "memory", "-k", "k", "--min-hold", bad, "--", "true"]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--min-hold"), "{err}");
    }
}
