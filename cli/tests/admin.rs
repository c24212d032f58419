//! `bext-lock status`, `break` and `check`'s ABI 1.1 checks, end to end:
//! the real binary against SQLite (shared between processes, so a second
//! `bext-lock` sees the first one's lock), memory, and an ABI 1.0 plugin.

mod common;

use std::process::Stdio;

use common::*;

fn run_holding(db: &Db, key: &str, ready: &std::path::Path, stop: &std::path::Path) -> Proc {
    let mut c = cmd();
    c.args(["run", "sqlite", "--config", &db.config(), "--key", key, "--ttl", "10s", "--"])
        .args(job_until(ready, stop))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Proc::spawn(&mut c)
}

fn abi_1_0() -> String {
    bext_locking_test_support::plugin_path("fixture-abi-1-0").display().to_string()
}

#[test]
fn status_shows_the_holder_of_a_run_and_free_keys() {
    need(&["sqlite"]);
    let db = Db::new();
    let (ready, stop) = (db.file("ready"), db.file("stop"));
    let mut holder = run_holding(&db, "jobs/nightly", &ready, &stop);
    wait_for_file(&ready);

    let o = output(&["status", "sqlite", "--config", &db.config(), "jobs/nightly", "never/locked"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for column in ["key", "held", "owner", "fence", "expires in", "held for"] {
        assert!(lines[0].contains(column), "no `{column}` column: {out}");
    }
    // The owner of a `run` acquisition is hostname:pid:program.
    let owner = format!(":{}:sh", holder.id());
    assert!(lines[1].starts_with("jobs/nightly") && lines[1].contains(" yes "), "{out}");
    assert!(lines[1].contains(&owner), "owner {owner} not shown: {out}");
    assert!(lines[2].starts_with("never/locked") && lines[2].contains(" no "), "{out}");

    let o = output(&["status", "sqlite", "--config", &db.config(), "--json", "jobs/nightly", "x"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    let all = v.as_array().expect("an array, one object per key");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["key"], "jobs/nightly");
    assert_eq!(all[0]["held"], true);
    assert!(all[0]["owner"].as_str().unwrap().ends_with(&owner), "{v}");
    assert!(all[0]["fence"].as_u64().is_some(), "{v}");
    let expires = all[0]["expires_in_ms"].as_u64().unwrap();
    assert!(expires > 0 && expires <= 10_000, "{v}");
    assert!(all[0]["held_for_ms"].as_u64().is_some(), "{v}");
    assert!(all[0].get("lock_id").is_none(), "the lock id must never be shown: {v}");
    assert_eq!(all[1], serde_json::json!({"key": "x", "held": false}));

    std::fs::write(&stop, "").unwrap();
    assert!(holder.wait().success());
}

#[test]
fn break_refuses_without_a_fence_breaks_by_fence_and_stops_the_holder() {
    need(&["sqlite"]);
    let db = Db::new();
    let (ready, stop) = (db.file("ready"), db.file("stop"));
    let holder = run_holding(&db, "jobs/stuck", &ready, &stop);
    wait_for_file(&ready);
    let config = db.config();
    let status = || {
        let o = output(&["status", "sqlite", "--config", &config, "--json", "jobs/stuck"]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0].clone()
    };
    let fence = status()["fence"].as_u64().expect("sqlite fences");

    let o = output(&["break", "sqlite", "--config", &config, "jobs/stuck"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--if-fence") && stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(status()["held"], true, "refusing must not break");

    let wrong = (fence + 5).to_string();
    let o = output(&["break", "sqlite", "--config", &config, "jobs/stuck", "--if-fence", &wrong]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("fence {fence}")), "{}", stderr(&o));
    assert_eq!(status()["held"], true, "a fence mismatch must not break");

    let right = fence.to_string();
    let o = output(&["break", "sqlite", "--config", &config, "jobs/stuck", "--if-fence", &right]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with(&format!("broke `jobs/stuck` (fence {fence}, owner ")), "{out}");
    assert!(out.contains(&format!(":{}:sh", holder.id())), "{out}");
    assert_eq!(status()["held"], false);

    // The broken holder's next renewal fails: its command is stopped (76).
    let o = holder.wait_output();
    assert_eq!(o.status.code(), Some(76), "{}", stderr(&o));

    let o = output(&["break", "sqlite", "--config", &config, "jobs/stuck", "--force"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to break"), "{}", stderr(&o));
    // The next holder's fence is above the broken one's.
    let o = output(&[
        "run",
        "sqlite",
        "--config",
        &config,
        "--key",
        "jobs/stuck",
        "--",
        "sh",
        "-c",
        "echo $BEXT_LOCK_FENCE",
    ]);
    assert!(stdout(&o).trim().parse::<u64>().unwrap() > fence, "{}", stdout(&o));
}

#[test]
fn break_force_breaks_whoever_holds_it() {
    need(&["sqlite"]);
    let db = Db::new();
    let (ready, stop) = (db.file("ready"), db.file("stop"));
    let holder = run_holding(&db, "k", &ready, &stop);
    wait_for_file(&ready);
    let o = output(&["break", "sqlite", "--config", &db.config(), "k", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("broke `k` (fence "), "{}", stdout(&o));
    assert_eq!(holder.wait_output().status.code(), Some(76));
}

#[test]
fn memory_is_per_process_so_a_fresh_cli_sees_every_key_free() {
    need(&["memory"]);
    let o = output(&["status", "memory", "--config", r#"{"namespace":"cli"}"#, "k"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).lines().nth(1).unwrap().starts_with("k    no "), "{}", stdout(&o));
    let o = output(&["break", "memory", "k", "--force"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn bad_keys_and_configs_are_named() {
    need(&["sqlite"]);
    let db = Db::new();
    let long = "k".repeat(2000);
    let o = output(&["status", "sqlite", "--config", &db.config(), "ok", &long]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("key `kkk"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    let o = output(&["status", "sqlite", "--config", "{not json", "k"]);
    assert_ne!(o.status.code(), Some(0));
    let o = output(&["break", "sqlite", "--config", &db.config(), "k", "--if-fence", "-1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = output(&["status", "sqlite", "--config", &db.config()]);
    assert_eq!(o.status.code(), Some(2), "a KEY is required: {}", stderr(&o));
}

#[test]
fn an_abi_1_0_plugin_is_told_unsupported_with_exit_5() {
    need(&["fixture-abi-1-0"]);
    let plugin = abi_1_0();
    let o = output(&["status", &plugin, "k"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("ABI 1.0") && err.contains("`inspect`"), "{err}");
    let o = output(&["break", &plugin, "k", "--force"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("`force_release`"), "{}", stderr(&o));
}

#[test]
fn check_runs_the_1_2_checks_on_a_plugin_that_waits() {
    need(&["memory"]);
    let o = output(&["check", "memory", "--config", r#"{"namespace":"cli-wait"}"#, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    let checks = v["report"]["checks"].as_array().unwrap();
    for name in
        ["wait_hands_off_after_release", "wait_fifo_order", "renew_for_sets_the_remaining_time"]
    {
        let c = checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name}: {v}"));
        assert_eq!((&c["passed"], &c["skipped"]), (&true.into(), &false.into()), "{c}");
    }
    // --only takes their names too.
    let o = output(&[
        "check",
        "memory",
        "--config",
        r#"{"namespace":"cli-wait"}"#,
        "--only",
        "wait_cancel_from_another_thread",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("1 passed, 0 skipped, 0 failed"), "{}", stdout(&o));
}

#[test]
fn check_runs_the_1_1_checks_and_skips_them_for_a_1_0_plugin() {
    need(&["sqlite", "fixture-abi-1-0"]);
    let names = [
        "owner_round_trip",
        "inspect_free_held_expired",
        "force_release_breaks_the_holder",
        "force_release_against_a_renewing_holder",
        "stats_count_every_outcome",
    ];
    let db = Db::new();
    let o = output(&["check", "sqlite", "--config", &db.config(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    let checks = v["report"]["checks"].as_array().unwrap();
    for name in names {
        let c = checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name}: {v}"));
        assert_eq!(c["skipped"], false, "{c}");
        assert_eq!(c["passed"], true, "{c}");
    }

    let o = output(&["check", &abi_1_0(), "--config", r#"{"namespace":"cli-1-0"}"#]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    // Its five 1.1 checks and the seven 1.2 ones.
    assert!(out.contains(" 12 skipped, 0 failed"), "{out}");
    for name in names {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("skip"), "{line}");
    }

    // --only takes the new names too.
    let o = output(&["check", "sqlite", "--config", &db.config(), "--only", "owner_round_trip"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("1 passed"), "{}", stdout(&o));
}
