//! `bext-lock plugins`, `describe`, `check` and `--help`, end to end.

mod common;

use std::path::Path;

use common::*;

fn copy_plugin(name: &str, dir: &Path, as_file: &str) {
    std::fs::copy(bext_locking_test_support::plugin_path(name), dir.join(as_file)).unwrap();
}

#[test]
fn check_passes_on_memory() {
    need(&["memory"]);
    let o = output(&["check", "memory", "--config", r#"{"namespace":"cli-check"}"#]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("conformance: memory"), "{out}");
    assert!(out.contains(" 0 failed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn check_passes_on_sqlite() {
    need(&["sqlite"]);
    let db = Db::new();
    let o = output(&["check", "sqlite", "--config", &db.config()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(" 0 failed"), "{}", stdout(&o));
}

#[test]
fn check_fails_on_the_careless_plugin() {
    need(&["fixture-careless"]);
    let o = output(&["check", "fixture-careless"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    // Each bug is caught by the check made for it.
    for check in ["stale_release_is_noop", "stale_renew_fails", "renew_after_expiry_fails"] {
        let line = out.lines().find(|l| l.starts_with(check)).unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("FAIL"), "{check} passed: {line}");
    }
    // ...while what it does right passes.
    let line = out.lines().find(|l| l.starts_with("contention_from_other_instance")).unwrap();
    assert!(line.contains("pass"), "{line}");
}

#[test]
fn check_json_is_machine_readable() {
    need(&["fixture-careless", "memory"]);
    let o = output(&["check", "fixture-careless", "--json", "--only", "stale_release_is_noop"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["passed"], false);
    assert_eq!(v["report"]["checks"].as_array().unwrap().len(), 1);
    assert_eq!(v["report"]["checks"][0]["name"], "stale_release_is_noop");
    assert_eq!(v["report"]["checks"][0]["passed"], false);

    let o = output(&[
        "check",
        "memory",
        "--json",
        "--config",
        r#"{"namespace":"j"}"#,
        "--only",
        "acquire",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passed"], true);

    let o = output(&["check", "memory", "--only", "no_such_check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such check"), "{}", stderr(&o));
}

#[test]
fn plugins_lists_what_loads_and_why_the_rest_was_skipped() {
    need(&["memory", "fixture-careless"]);
    let dir = tempfile::tempdir().unwrap();
    copy_plugin("memory", dir.path(), "libbext_locking_memory.so");
    copy_plugin("fixture-careless", dir.path(), "libcareless.so");
    std::fs::write(dir.path().join("libjunk.so"), b"not a library").unwrap();
    let d = dir.path().to_str().unwrap();

    let o = output(&["plugins", "--dir", d]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let memory = out.lines().find(|l| l.starts_with("memory ")).unwrap_or_else(|| panic!("{out}"));
    assert!(
        memory.contains("0.1.0") && memory.contains(" 1 ") && memory.contains("yes"),
        "{memory}"
    );
    assert!(memory.contains("libbext_locking_memory.so"), "{memory}");
    assert!(out.lines().any(|l| l.starts_with("careless ")), "{out}");
    let junk = out.lines().find(|l| l.contains("libjunk.so")).unwrap_or_else(|| panic!("{out}"));
    assert!(junk.contains("malformed") || junk.contains("load_failed"), "{junk}");

    let o = output(&["plugins", "--dir", d, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> =
        v["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    // In file name order.
    assert_eq!(names, ["memory", "careless"]);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 1);

    let o = output(&["plugins", "--dir", "/nonexistent-plugin-dir"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no such folder"), "{}", stderr(&o));
}

#[test]
fn plugins_default_to_the_search_path() {
    need(&["memory"]);
    let o = output(&["plugins"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let target = bext_locking_test_support::target_dir();
    assert!(stdout(&o).contains(&format!("searched: {}", target.display())), "{}", stdout(&o));
    assert!(stdout(&o).lines().any(|l| l.starts_with("memory ")), "{}", stdout(&o));
}

#[test]
fn names_are_found_along_the_search_path() {
    need(&["memory", "fixture-careless"]);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_plugin("memory", a.path(), "libbext_locking_mine.so");
    copy_plugin("fixture-careless", b.path(), "libsomething_else.so");
    let (a, b) = (a.path().to_str().unwrap(), b.path().to_str().unwrap());

    // By file name, in --plugin-dir.
    let o = output(&["describe", "mine", "--plugin-dir", a]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("name:        memory"), "{}", stdout(&o));
    // By file name, in BEXT_PLUGIN_DIR.
    let o = cmd().args(["describe", "mine"]).env("BEXT_PLUGIN_DIR", format!("/nope:{a}")).output();
    let o = o.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // By the name the plugin reports, when no file is named for it.
    let o = output(&["describe", "careless", "--plugin-dir", b]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("libsomething_else.so"), "{}", stdout(&o));
    // By path.
    let path = format!("{a}/libbext_locking_mine.so");
    let o = output(&["describe", &path, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], "memory");
    assert_eq!(v["fencing"], true);
    assert!(v["config_schema"]["properties"]["namespace"].is_object(), "{v}");
}

#[test]
fn describe_shows_capabilities_and_config_keys() {
    need(&["sqlite"]);
    let o = output(&["describe", "sqlite"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("name:        sqlite"), "{out}");
    assert!(out.contains("fencing:     yes"), "{out}");
    let path = out
        .lines()
        .find(|l| l.trim_start().starts_with("path "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(path.contains("required"), "{path}");
    // Each plugin's clock-drift allowance, stated or the default.
    assert!(out.contains("clock drift: 0 % of the TTL + 2 ms (stated by the plugin)"), "{out}");
    need(&["memory", "redis"]);
    let o = output(&["describe", "memory", "--json"]);
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(d["clock_drift"], serde_json::json!({"rate": 0.0, "fixed_ms": 0}), "{d}");
    let o = output(&["describe", "redis"]);
    assert!(
        stdout(&o).contains("clock drift: 1 % of the TTL + 2 ms (the default"),
        "{}",
        stdout(&o)
    );
    let o = output(&["describe", "redis", "--json"]);
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(d["clock_drift"].is_null(), "{d}");
}

#[test]
fn every_command_has_help_with_examples() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["plugins", "--help"],
        &["describe", "--help"],
        &["check", "--help"],
    ] {
        let o = output(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        let out = stdout(&o);
        assert!(out.contains("Examples:"), "{args:?} has no examples:\n{out}");
        assert!(out.contains("bext-lock"), "{args:?}");
    }
    let o = output(&["run", "--help"]);
    for code in ["75", "76", "69", "128+N"] {
        assert!(stdout(&o).contains(code), "exit code {code} undocumented");
    }
    let o = output(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn check_reports_a_plugin_that_cannot_start_without_its_secrets() {
    need(&["sqlite"]);
    let config = r#"{"path":"/nonexistent/file://app:hunter2@db/x.db"}"#;
    let o = output(&["check", "sqlite", "--config", config]);
    // A folder that does not exist is the config's fault: 78.
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("bext-lock: sqlite: create failed"), "{err}");
    assert!(err.contains("app:***@db") && !err.contains("hunter2"), "{err}");
}
