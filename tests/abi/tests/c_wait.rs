//! The ABI 1.2 calls of the C loader helper (`hosts/c/bext_locking_host.h`)
//! under valgrind: `bext_locking_host_lock_wait` times out, is cancelled
//! from another pthread (also before it started), hands the lock to the
//! waiter when the holder releases; on today's plugins through their
//! `lock_wait` slot (or by polling where the backend answers unsupported),
//! on the ABI 1.0 and 1.1 fixtures by polling, which the helper reports.

use bext_locking_abi_tests::{Scratch, compile_c, describe, plugin, valgrind};

/// Runs the helper program against `library` and returns its lines.
fn run_helper(what: &str, library: &str, config: &str) -> Vec<String> {
    let scratch = Scratch::new(what);
    let exe = compile_c(&scratch, &["tests/abi/c/wait_helper.c"], "wait_helper");
    let out = valgrind(&exe, &[library, config]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(text.lines().any(|l| l == "done"), "{}", describe(&out));
    text.lines().map(str::to_owned).collect()
}

/// The line that starts with `step: `.
fn line<'a>(lines: &'a [String], step: &str) -> &'a str {
    let prefix = format!("{step}: ");
    lines
        .iter()
        .find(|l| l.starts_with(&prefix))
        .map(|l| &l[prefix.len()..])
        .unwrap_or_else(|| panic!("no `{step}` line in {lines:#?}"))
}

/// What every plugin must give, whether the helper waits on the slot or
/// polls.
fn waits_as_promised(lines: &[String]) {
    assert_eq!(line(lines, "lock_wait on a free key"), "BEXT_LOCKING_OK: handle");
    assert_eq!(line(lines, "lock_wait times out"), "BEXT_LOCKING_CONTENDED: waited about wait_ms");
    assert_eq!(
        line(lines, "lock_wait cancelled from another thread"),
        "BEXT_LOCKING_CANCELLED: within 1 s, cancel BEXT_LOCKING_OK"
    );
    assert_eq!(
        line(lines, "lock_wait cancelled before it started"),
        "BEXT_LOCKING_CANCELLED: at once"
    );
    assert_eq!(
        line(lines, "a waiter gets the lock after release"),
        "BEXT_LOCKING_OK: before wait_ms, sent_ago within the wait"
    );
    assert_eq!(line(lines, "the old holder is refused"), "BEXT_LOCKING_CONTENDED");
    for (step, want) in [
        ("lock_wait with a NULL plugin", "the plugin is NULL"),
        ("lock_wait with a NULL key", "key is NULL"),
        ("lock_wait with a NULL out_json", "out_json is NULL"),
        (
            "lock_wait with wait_ms over the maximum",
            "`wait_ms` is 31536000001, over the longest wait",
        ),
        ("cancel_wait with a NULL wait", "the wait is NULL"),
        ("lock_wait with ttl_ms 0", "ttl_ms is 0"),
    ] {
        let got = line(lines, step);
        assert!(
            got.starts_with("BEXT_LOCKING_ERR_INVALID: ") && got.contains(want),
            "{step}: {got}"
        );
    }
}

#[test]
fn request_builders_and_wait_ids() {
    let lib = plugin("memory");
    let lines = run_helper("c-wait-builders", lib.to_str().unwrap(), r#"{"namespace":"c-wait-b"}"#);
    assert_eq!(
        line(&lines, "lock_wait request"),
        r#"{"key":"k\"1","ttl_ms":1000,"wait_ms":500,"wait_id":42,"owner":"me"}"#
    );
    assert_eq!(
        line(&lines, "lock_wait request without owner and id"),
        r#"{"key":"k","ttl_ms":1000,"wait_ms":0}"#
    );
    assert_eq!(
        line(&lines, "renew_for request"),
        r#"{"handle":{"key":"k","lock_id":"x","ttl_ms":9},"ttl_ms":5000}"#
    );
    assert_eq!(line(&lines, "NULL builders"), "-1 -1");
    assert_eq!(line(&lines, "wait ids differ"), "1");
}

#[test]
fn the_helper_waits_on_a_1_2_plugin() {
    let lib = plugin("memory");
    let lines = run_helper("c-wait-memory", lib.to_str().unwrap(), r#"{"namespace":"c-wait-m"}"#);
    assert_eq!(line(&lines, "loaded"), "memory, abi_minor 2");
    assert_eq!(line(&lines, "slots"), "lock_wait 1, cancel_wait 1, renew_for 1");
    waits_as_promised(&lines);
    // Through the slot, or by polling when this backend's slot says it
    // cannot wait; the helper says which.
    let polled = line(&lines, "polled");
    assert!(
        polled == "0: " || polled.starts_with("1: its lock_wait is unsupported here: memory: "),
        "{polled}"
    );
    let renew_for = line(&lines, "renew_for");
    assert!(
        renew_for == "BEXT_LOCKING_OK: (nothing)"
            || renew_for.starts_with("BEXT_LOCKING_OK: ")
            || renew_for.starts_with("BEXT_LOCKING_ERR_UNSUPPORTED: {\"code\":\"unsupported\""),
        "{renew_for}"
    );
    assert_eq!(
        line(&lines, "renew_for with a NULL handle"),
        "BEXT_LOCKING_ERR_INVALID: bext_locking_host_renew_for: handle_json is NULL"
    );
}

#[test]
fn the_helper_polls_a_1_1_and_a_1_0_plugin_and_says_so() {
    for (fixture, name, minor) in
        [("fixture-abi-1-1", "abi-1-1", 1), ("fixture-abi-1-0", "abi-1-0", 0)]
    {
        let lib = plugin(fixture);
        let lines = run_helper(
            &format!("c-wait-{name}"),
            lib.to_str().unwrap(),
            &format!(r#"{{"namespace":"c-wait-{name}"}}"#),
        );
        assert_eq!(line(&lines, "loaded"), format!("{name}, abi_minor {minor}"));
        assert_eq!(line(&lines, "slots"), "lock_wait 0, cancel_wait 0, renew_for 0");
        assert_eq!(line(&lines, "polled"), format!("1: it has no lock_wait slot (ABI 1.{minor})"));
        waits_as_promised(&lines);
        assert_eq!(
            line(&lines, "renew_for"),
            format!(
                "BEXT_LOCKING_ERR_UNSUPPORTED: plugin `{name}` (ABI 1.{minor}) has no `renew_for` slot"
            )
        );
    }
}
