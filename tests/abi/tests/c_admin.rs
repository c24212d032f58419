//! The ABI 1.1 calls of the C loader helper (`hosts/c/bext_locking_host.h`)
//! under valgrind: the request builders, `inspect` / `force_release` /
//! `stats` through the helper against a 1.1 plugin, and against a plugin
//! built for ABI 1.0, for which the helper reports the slots as
//! unsupported without calling anything while the 1.0 slots keep working.

use bext_locking_abi_tests::{Scratch, compile_c, describe, plugin, valgrind};

/// Runs the helper program against `library` and returns its lines.
fn run_helper(what: &str, library: &str, config: &str) -> (Vec<String>, String) {
    let scratch = Scratch::new(what);
    let exe = compile_c(&scratch, &["tests/abi/c/admin_helper.c"], "admin_helper");
    let out = valgrind(&exe, &[library, config]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(text.lines().any(|l| l == "done"), "{}", describe(&out));
    (text.lines().map(str::to_owned).collect(), describe(&out))
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

#[test]
fn request_builders_escape_and_measure() {
    let lib = plugin("memory");
    let (lines, _) = run_helper("c-admin-builders", lib.to_str().unwrap(), "{}");
    assert_eq!(
        line(&lines, "request with owner"),
        r#"{"key":"k","ttl_ms":1000,"owner":"host\"1\":\u000942"}"#
    );
    assert_eq!(line(&lines, "request without owner"), r#"{"key":"k","ttl_ms":1000}"#);
    assert_eq!(line(&lines, "inspect request"), r#"{"key":"c-admin/\"quoted\"\u000a"}"#);
    assert_eq!(line(&lines, "force_release request"), r#"{"key":"k","if_fence":7}"#);
    assert_eq!(line(&lines, "force_release request without if_fence"), r#"{"key":"k"}"#);
    // snprintf-style: the full length is returned, the buffer holds a prefix.
    assert_eq!(line(&lines, "truncated"), r#"18 {"key":"#);
    assert_eq!(line(&lines, "NULL key"), "-1 -1 -1 0");
    let owner = line(&lines, "default owner");
    let (len, owner) = owner.split_once(' ').unwrap();
    assert_eq!(len.parse::<usize>().unwrap(), owner.len());
    let (host, pid) = owner.rsplit_once(':').expect("hostname:pid");
    assert!(!host.is_empty() && pid.parse::<u32>().is_ok(), "{owner}");
}

#[test]
fn the_helper_calls_the_1_1_slots_of_a_1_1_plugin() {
    let lib = plugin("memory");
    let (lines, out) = run_helper("c-admin-memory", lib.to_str().unwrap(), "{}");
    assert_eq!(line(&lines, "loaded"), "memory 0.1.0, abi_minor 2", "{out}");
    assert_eq!(
        line(&lines, "slots"),
        "inspect 1, force_release 1, stats 1, try_lock 1, nonsense 0"
    );
    let owner = line(&lines, "default owner").split_once(' ').unwrap().1.to_owned();
    let inspect = line(&lines, "inspect");
    assert!(inspect.starts_with("BEXT_LOCKING_OK: "), "{out}");
    let info: serde_json::Value =
        serde_json::from_str(&inspect["BEXT_LOCKING_OK: ".len()..]).unwrap();
    assert_eq!(info["held"], true, "{out}");
    assert_eq!(info["owner"], owner.as_str(), "the default owner is stored: {out}");
    assert_eq!(info["key"], "c-admin/\"quoted\"\n");
    assert!(info.get("lock_id").is_none(), "{out}");
    for step in ["inspect with a NULL instance", "inspect with a NULL request"] {
        assert!(
            line(&lines, step)
                .starts_with("BEXT_LOCKING_ERR_INVALID: {\"code\":\"invalid_argument\""),
            "{step}: {out}"
        );
    }
    assert_eq!(line(&lines, "inspect with a NULL out_json"), "BEXT_LOCKING_ERR_INVALID: (nothing)");
    for step in ["inspect with a NULL plugin", "stats with a NULL plugin"] {
        assert!(
            line(&lines, step).starts_with("BEXT_LOCKING_ERR_INVALID: bext_locking_host_"),
            "{out}"
        );
    }
    let stats = line(&lines, "stats");
    let stats: serde_json::Value =
        serde_json::from_str(stats.strip_prefix("BEXT_LOCKING_OK: ").expect("stats OK")).unwrap();
    assert_eq!(stats["acquired"], 1, "{out}");
    assert_eq!(line(&lines, "force_release"), r#"BEXT_LOCKING_OK: {"released":true,"fence":1}"#);
    assert!(line(&lines, "renew").starts_with("BEXT_LOCKING_ERR_BACKEND: "), "broken: {out}");
    assert_eq!(line(&lines, "release"), "BEXT_LOCKING_OK: (nothing)");
}

#[test]
fn the_helper_reports_the_1_1_slots_of_a_1_0_plugin_as_unsupported() {
    let lib = plugin("fixture-abi-1-0");
    let (lines, out) = run_helper("c-admin-abi-1-0", lib.to_str().unwrap(), "{}");
    assert!(line(&lines, "loaded").ends_with(", abi_minor 0"), "{out}");
    assert_eq!(
        line(&lines, "slots"),
        "inspect 0, force_release 0, stats 0, try_lock 1, nonsense 0"
    );
    assert_eq!(line(&lines, "try_lock"), "BEXT_LOCKING_OK", "{out}");
    let name = line(&lines, "loaded").split(' ').next().unwrap().to_owned();
    for slot in ["inspect", "force_release", "stats"] {
        assert_eq!(
            line(&lines, slot),
            format!("BEXT_LOCKING_ERR_UNSUPPORTED: plugin `{name}` (ABI 1.0) has no `{slot}` slot"),
            "{out}"
        );
    }
    // Nothing was called: NULL inputs are not the plugin's to refuse either.
    for step in [
        "inspect with a NULL instance",
        "inspect with a NULL request",
        "inspect with a NULL out_json",
    ] {
        assert!(line(&lines, step).starts_with("BEXT_LOCKING_ERR_UNSUPPORTED: "), "{step}: {out}");
    }
    // The 1.0 slots work: nothing broke the lock, so renew and release are OK.
    assert_eq!(line(&lines, "renew"), "BEXT_LOCKING_OK: (nothing)", "{out}");
    assert_eq!(line(&lines, "release"), "BEXT_LOCKING_OK: (nothing)", "{out}");
}

#[test]
fn the_1_1_conformance_program_passes_a_1_0_plugin() {
    // The new C host against an old plugin: the 1.0 checks pass, the 1.1
    // slot checks are said not to apply, nothing reads past struct_size.
    let scratch = Scratch::new("c-admin-conformance-abi-1-0");
    let exe = compile_c(&scratch, &["hosts/c/conformance.c"], "conformance");
    let lib = plugin("fixture-abi-1-0");
    let out = valgrind(&exe, &[lib.to_str().unwrap(), r#"{"namespace":"c-admin-1-0"}"#]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text.contains("revision 1.0: inspect no, force_release no, stats no"),
        "{}",
        describe(&out)
    );
    assert!(
        text.contains("no 1.1 slots: the inspect, force_release and stats checks do not apply"),
        "{}",
        describe(&out)
    );
    assert!(!text.lines().any(|l| l.starts_with("FAIL")), "{}", describe(&out));
}
