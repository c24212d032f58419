//! What a new user meets when something is wrong: one permission rule for
//! every way a plugin is named, one `bext-lock: ` line per error, exit codes
//! that tell a typo from an outage, durations, and pasteable examples.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// stderr must be exactly one line, starting with `bext-lock: `.
fn one_line(o: &Output) -> String {
    let err = stderr(o);
    assert!(err.starts_with("bext-lock: "), "not a bext-lock line: {err:?}");
    assert_eq!(err.trim_end_matches('\n').lines().count(), 1, "more than one line: {err:?}");
    err
}

/// A copy of the memory plugin at `dir/file`, with `mode`.
fn plugin_copy(dir: &Path, file: &str, mode: u32) -> PathBuf {
    let path = dir.join(file);
    std::fs::copy(bext_locking_test_support::plugin_path("memory"), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn a_world_writable_plugin_is_refused_however_it_is_named() {
    need(&["memory"]);
    let dir = tempfile::tempdir().unwrap();
    let file = plugin_copy(dir.path(), "libbext_locking_mine.so", 0o666);
    let (d, f) = (dir.path().to_str().unwrap(), file.to_str().unwrap());
    let marker = dir.path().join("ran");
    let job = format!("touch {}", marker.display());
    let runs: Vec<Vec<&str>> = vec![
        // By path, and by name through --plugin-dir.
        vec!["run", f, "-k", "k", "--", "sh", "-c", &job],
        vec!["--plugin-dir", d, "run", "mine", "-k", "k", "--", "sh", "-c", &job],
        vec!["describe", f],
        vec!["describe", "mine", "--plugin-dir", d],
        vec!["check", "mine", "--plugin-dir", d, "--only", "acquire"],
    ];
    for args in runs {
        let o = output(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = one_line(&o);
        assert!(
            err.contains("refused: the file is writable by group and others (mode 0666)"),
            "{args:?}: {err}"
        );
        assert!(!marker.exists(), "{args:?} ran the command with a refused plugin");
    }
    // Through BEXT_PLUGIN_DIR too.
    let o = cmd().args(["describe", "mine"]).env("BEXT_PLUGIN_DIR", d).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
    // `plugins` says the same about the same file.
    let o = output(&["plugins", "--dir", d]);
    assert!(stdout(&o).contains("writable by group and others (mode 0666)"), "{}", stdout(&o));

    // A plugin found by the name it reports, in a folder others can write.
    let open = tempfile::tempdir().unwrap();
    plugin_copy(open.path(), "libother_name.so", 0o755);
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = output(&["describe", "memory", "--plugin-dir", open.path().to_str().unwrap()]);
    // Refused there, so the one beside the binary is the one found.
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains(&open.path().display().to_string()), "{}", stdout(&o));

    // Fixed, it loads.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = output(&["run", f, "-k", "k", "--", "sh", "-c", &job]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(marker.exists());
}

#[test]
fn plugins_dir_must_be_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let o = output(&["plugins", "--dir", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(one_line(&o).contains("not a folder"), "{}", stderr(&o));
    let o = output(&["plugins", "--dir", dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(one_line(&o).contains("no such folder"));
}

#[test]
fn plugins_lists_test_fixtures_apart_from_the_backends() {
    need(&["memory", "fixture-careless", "fixture-panicky"]);
    let o = output(&["plugins"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.lines().any(|l| l.starts_with("memory ")), "{out}");
    for fixture in ["careless", "panicky", "reload-test"] {
        assert!(!out.lines().any(|l| l.starts_with(&format!("{fixture} "))), "{fixture}: {out}");
    }
    assert!(!out.contains("libbext_locking_fixture_bad_abi.so ("), "fixtures among skipped: {out}");
    let fixtures =
        out.lines().find(|l| l.starts_with("test fixtures")).unwrap_or_else(|| panic!("{out}"));
    assert!(fixtures.contains("careless") && fixtures.contains("panicky"), "{fixtures}");
    let o = output(&["plugins", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> =
        v["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(!names.contains(&"careless") && names.contains(&"memory"), "{names:?}");
    assert!(v["fixtures"].as_array().unwrap().len() >= 2, "{v}");
    // A fixture can still be named.
    let o = output(&["describe", "fixture-careless"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_bad_config_exits_78_and_a_backend_down_69() {
    need(&["memory", "redis", "sqlite"]);
    let cases: &[(&str, &str, &str)] = &[
        ("redis", r#"{"url":"#, "not valid JSON"),
        ("redis", "[1]", "not an object"),
        ("redis", r#"{"bogus":1}"#, "unknown config key `bogus`"),
        ("redis", r#"{"url":"redis://127.0.0.1:6379","pool_size":0}"#, "pool_size"),
        ("memory", r#"{"nmespace":"x"}"#, "unknown config key `nmespace`"),
        ("redis", r#"{"url":"redis://127.0.0.1:99999"}"#, "port 99999 is out of range"),
    ];
    for &(plugin, config, want) in cases {
        for sub in ["run", "check"] {
            let mut args = vec![sub, plugin, "--config", config];
            if sub == "run" {
                args.extend(["-k", "k", "--", "true"]);
            }
            let o = output(&args);
            assert_eq!(o.status.code(), Some(78), "{args:?}: {}", stderr(&o));
            let err = one_line(&o);
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
    // The JSON hint is the same for every plugin: no SQLite example for redis.
    let o = output(&["run", "redis", "--config", "{", "-k", "k", "--", "true"]);
    let err = one_line(&o);
    assert!(err.contains("`bext-lock describe redis` lists its keys"), "{err}");
    assert!(!err.contains("locks.db"), "{err}");
    // An unreadable @FILE is a config error too.
    let o = output(&["run", "sqlite", "--config", "@/nonexistent/c.json", "-k", "k", "--", "true"]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    // A backend that is down is not a config error.
    let o = output(&[
        "run",
        "redis",
        "--config",
        r#"{"url":"redis://127.0.0.1:1"}"#,
        "-k",
        "k",
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    one_line(&o);
}

#[test]
fn a_ten_megabyte_value_is_cut_in_the_message() {
    need(&["sqlite"]);
    let dir = tempfile::tempdir().unwrap();
    let long = format!("/nonexistent/{}", "a".repeat(10 * 1024 * 1024));
    let file = dir.path().join("c.json");
    std::fs::write(&file, serde_json::json!({ "path": long }).to_string()).unwrap();
    let config = format!("@{}", file.display());
    let o = output(&["run", "sqlite", "--config", &config, "-k", "k", "--", "true"]);
    assert_ne!(o.status.code(), Some(0));
    let err = one_line(&o);
    assert!(err.len() < 2000, "{} bytes: {}", err.len(), &err[..300]);
    assert!(err.contains("/nonexistent/aaaa"), "the start is shown: {err}");
    assert!(err.contains(" bytes]"), "the length is shown: {err}");

    // A 10 MB unknown key, through the kit's config check.
    std::fs::write(&file, format!(r#"{{"{}":1}}"#, "k".repeat(10 * 1024 * 1024))).unwrap();
    let o = output(&["check", "sqlite", "--config", &config]);
    assert_eq!(o.status.code(), Some(78), "{}", &stderr(&o)[..200.min(stderr(&o).len())]);
    let err = one_line(&o);
    assert!(err.len() < 2000 && err.contains("unknown config key"), "{err}");
}

#[test]
fn check_says_the_backend_is_unreachable_not_that_instances_do_not_share() {
    need(&["redis", "memory"]);
    let o = output(&["check", "redis", "--config", r#"{"url":"redis://u:hunter2@127.0.0.1:1"}"#]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("hint: the backend is unreachable"), "{err}");
    assert!(!err.contains("do not share locks"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // Where instances really do not share, that is still the hint.
    let o = output(&["check", "memory", "--only", "contention_from_other_instance"]);
    assert!(stderr(&o).contains("do not share locks"), "{}", stderr(&o));
}

#[test]
fn clap_usage_errors_are_one_line_with_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["run", "memory"],
        &["run", "memory", "-k", "k", "--bogus", "--", "true"],
        &["plugins", "--dir"],
        &["check"],
    ] {
        let o = output(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = one_line(&o);
        assert!(err.contains("--help"), "{args:?}: {err}");
        assert!(!err.contains("Usage:"), "{args:?}: {err}");
    }
}

#[test]
fn backends_errors_are_one_line_and_name_the_problem() {
    need(&["redis", "pg"]);
    // Redis pointed at a port that speaks HTTP.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = http.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in http.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\n\r\n<html></html>");
        }
    });
    let config = format!(r#"{{"url":"redis://127.0.0.1:{port}"}}"#);
    let o = output(&["run", "redis", "--config", &config, "-k", "k", "--", "true"]);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    let err = one_line(&o);
    assert!(err.contains("not the Redis protocol"), "{err}");
    drop(server);

    // PostgreSQL down: said once.
    let o = output(&["check", "pg", "--config", r#"{"url":"postgres://127.0.0.1:1/test"}"#]);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    let err = one_line(&o);
    assert_eq!(err.matches("cannot connect").count(), 1, "{err}");
    let o = output(&["check", "pg", "--config", r#"{"url":"postgres://127.0.0.1:99999/test"}"#]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(one_line(&o).contains("port 99999 is out of range"));
}

#[test]
fn durations_give_coherent_messages() {
    need(&["memory"]);
    let cases: &[(&str, &str)] = &[
        ("0", "`0` is zero"),
        ("0s", "`0s` is zero"),
        ("500us", "`500us` is finer than a millisecond"),
        ("1000d", "`1000d` is longer than the longest lease, 365d"),
        ("10x", "`x` is not a unit; the units are ms, s, m, h and d"),
        ("30", "`30` has no unit"),
    ];
    for (ttl, want) in cases {
        let o = output(&["run", "memory", "-k", "k", "--ttl", ttl, "--", "true"]);
        assert_eq!(o.status.code(), Some(2), "--ttl {ttl}: {}", stderr(&o));
        let err = one_line(&o);
        assert!(err.contains(want), "--ttl {ttl}: {err}");
        for foreign in ["ttl_ms", "weeks", "months", "supported units"] {
            assert!(!err.contains(foreign), "--ttl {ttl}: {err}");
        }
    }
    need(&["redis"]);
    let o = output(&["run", "redis", "-k", "k", "--ttl", "1ms", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = one_line(&o);
    assert!(err.contains("--ttl 1ms is too short") && err.contains("or more"), "{err}");
    let o = output(&["run", "memory", "-k", "k", "--ttl", "2s", "--wait", "0", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "--wait 0 is no wait: {}", stderr(&o));
}

#[test]
fn run_help_examples_paste_as_whole_commands() {
    // A narrow terminal must not break the examples' lines.
    let o = cmd().args(["run", "--help"]).env("COLUMNS", "40").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    let examples = &help[help.find("Examples:").expect("examples")..];
    let wait = examples.find("bext-lock run redis").expect("the --wait example");
    let block: Vec<&str> = examples[wait..].lines().take_while(|l| !l.trim().is_empty()).collect();
    assert!(block.len() > 1, "{block:?}");
    for line in &block[..block.len() - 1] {
        assert!(line.ends_with(" \\"), "a line without its continuation: {line:?}");
    }
    // Pasted into a shell, it is one call of bext-lock with every argument.
    let script =
        format!("bext-lock() {{ printf '%s\\n' \"$@\"; echo END; }}\n{}\n", block.join("\n"));
    let sh = std::process::Command::new("bash").arg("-c").arg(&script).output().unwrap();
    assert!(sh.status.success(), "{}", String::from_utf8_lossy(&sh.stderr));
    let words = String::from_utf8_lossy(&sh.stdout).to_string();
    let words: Vec<&str> = words.lines().collect();
    assert_eq!(words.iter().filter(|w| **w == "END").count(), 1, "{words:?}");
    let tail = ["--wait", "2m", "--", "./deploy.sh", "END"];
    assert!(words.ends_with(&tail), "{words:?}");
    assert_eq!(words[0], "run");
}
