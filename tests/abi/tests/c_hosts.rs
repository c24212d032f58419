//! The C hosts in `hosts/c`, built with strict flags and run under valgrind:
//! the example program, the loader helper header, the ABI conformance
//! program (against every available backend, error paths included) and the
//! 8-thread stress test.

use std::process::Command;

use bext_locking_abi_tests::{
    CXX_FLAGS, Scratch, backend, compile, compile_c, describe, plugin, run, unknown_backends,
    valgrind,
};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A conformance run's failed checks and summary, without the passing ones.
fn failed_checks(out: &std::process::Output) -> String {
    let text: Vec<String> =
        stdout(out).lines().filter(|l| !l.starts_with("ok ")).map(str::to_owned).collect();
    format!(
        "{}
{}
--- stderr ---
{}",
        out.status,
        text.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn example_takes_renews_and_releases_under_valgrind() {
    let scratch = Scratch::new("example");
    let exe = compile_c(&scratch, &["hosts/c/example.c"], "example");
    let lib = plugin("memory");
    let out = valgrind(&exe, &[lib.to_str().unwrap(), "{}", "jobs/nightly"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for step in [
        "loaded memory",
        "try_lock jobs/nightly: acquired",
        "try_lock again from the same instance: BEXT_LOCKING_CONTENDED",
        "renew: the TTL restarted",
        "release: done",
        "destroyed the instance",
    ] {
        assert!(text.contains(step), "missing `{step}`: {}", describe(&out));
    }
}

#[test]
fn example_error_paths_are_clean_under_valgrind() {
    let scratch = Scratch::new("example-errors");
    let exe = compile_c(&scratch, &["hosts/c/example.c"], "example");
    let memory = plugin("memory");
    let memory = memory.to_str().unwrap();
    let missing = scratch.path().join("libbext_locking_nope.so");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![missing.display().to_string()], "cannot load library"),
        (vec![plugin("fixture-no-entry").display().to_string()], "not a bext-locking plugin"),
        (vec![plugin("fixture-null-slot").display().to_string()], "vtable field `renew` is NULL"),
        (vec![memory.into(), r#"{"colour":"blue"}"#.into()], "unknown config key `colour`"),
        (vec![memory.into(), "{not json".into()], "invalid_argument"),
        (
            vec![memory.into(), "{}".into(), String::new()],
            "try_lock failed: BEXT_LOCKING_ERR_INVALID",
        ),
        (
            vec![memory.into(), "{}".into(), "k".repeat(1025)],
            "try_lock failed: BEXT_LOCKING_ERR_INVALID",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = valgrind(&exe, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: want `{want}`: {}", describe(&out));
    }
}

#[test]
fn example_and_helper_compile_as_cxx() {
    let scratch = Scratch::new("example-cxx");
    let exe = compile(&scratch, "g++", CXX_FLAGS, &["hosts/c/example.c"], "example");
    let out = run(Command::new(&exe).arg(plugin("memory")));
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn helper_refuses_what_the_rust_loader_refuses() {
    let scratch = Scratch::new("helper");
    let exe = compile_c(&scratch, &["tests/abi/c/load_report.c"], "load_report");
    let cases = [
        ("memory", "OK memory "),
        ("fixture-panicky", "OK panicky 0.1.0"),
        ("fixture-bad-abi", "plugin is built for ABI version 2, this host speaks version 1"),
        (
            "fixture-small-struct",
            "vtable struct_size is 80 bytes, smaller than the 88 bytes of ABI v1",
        ),
        ("fixture-null-slot", "vtable field `renew` is NULL"),
        ("fixture-no-entry", "not a bext-locking plugin (no `bext_locking_plugin_entry` symbol): "),
    ];
    let paths: Vec<_> = cases.iter().map(|(name, _)| plugin(name)).collect();
    let args: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    let out = valgrind(&exe, &args);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{}", describe(&out));
    for ((line, (_, want)), path) in lines.iter().zip(cases).zip(&args) {
        assert!(line.contains(want), "want `{want}`, got `{line}`");
        if line.starts_with("ERR") {
            assert!(line.contains(path), "the error does not name the file: {line}");
        }
    }
    // dlerror() text is passed on: it names the missing symbol.
    assert!(lines[5].ends_with("undefined symbol: bext_locking_plugin_entry"), "{}", lines[5]);
}

#[test]
fn helper_applies_the_permission_rule_of_every_host() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let scratch = Scratch::new("helper-permissions");
    let exe = compile_c(&scratch, &["tests/abi/c/load_report.c"], "load_report");
    let private = scratch.path().join("private");
    let wide = scratch.path().join("wide");
    for d in [&private, &wide] {
        std::fs::create_dir(d).unwrap();
    }
    let memory = plugin("memory");
    let copy = |dir: &std::path::Path, name: &str, mode: u32| {
        let p = dir.join(name);
        std::fs::copy(&memory, &p).unwrap();
        chmod(&p, mode);
        p
    };
    let open_file = copy(&private, "open.so", 0o666);
    let group_file = copy(&private, "group.so", 0o775);
    let fine = copy(&private, "fine.so", 0o755);
    let in_wide = copy(&wide, "ok.so", 0o755);
    chmod(&wide, 0o777);
    let link = private.join("link.so");
    std::os::unix::fs::symlink(&in_wide, &link).unwrap();
    let cases = [
        (&open_file, "refused: the file is writable by group and others (mode 0666)".to_owned()),
        (&group_file, "refused: the file is writable by its group (mode 0775)".to_owned()),
        (&in_wide, format!("refused: folder {} is writable by group and others", wide.display())),
        (&link, format!("refused: folder {} is writable by group and others", wide.display())),
        (&fine, "OK memory ".to_owned()),
    ];
    let mut args: Vec<&str> = cases.iter().map(|(p, _)| p.to_str().unwrap()).collect();
    // The opt-out loads what was refused.
    args.extend(["--allow-insecure", open_file.to_str().unwrap(), link.to_str().unwrap()]);
    let out = run(Command::new(&exe).args(&args));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), cases.len() + 2, "{}", describe(&out));
    for (line, (path, want)) in lines.iter().zip(&cases) {
        assert!(line.contains(want.as_str()), "want `{want}`, got `{line}`");
        if line.starts_with("ERR") {
            assert!(line.contains(&format!("ERR {}: ", path.display())), "{line}");
            assert!(
                line.ends_with("only root or this user may be able to write a plugin"),
                "{line}"
            );
        }
    }
    assert!(lines[cases.len()..].iter().all(|l| l.starts_with("OK memory ")), "{text}");
}

#[test]
fn conformance_and_panic_boundary_with_the_panicky_fixture() {
    let scratch = Scratch::new("conformance-panicky");
    let exe = compile_c(&scratch, &["hosts/c/conformance.c"], "conformance");
    let lib = plugin("fixture-panicky");
    let out = valgrind(&exe, &[lib.to_str().unwrap(), r#"{"namespace":"c-panicky"}"#, "--panicky"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", failed_checks(&out));
    for check in [
        "ok   a panic in create is ERR_PANIC with code panic",
        "ok   a panic in try_lock is ERR_PANIC with code panic",
        "ok   try_lock works after a caught panic",
    ] {
        assert!(text.contains(check), "missing `{check}`: {}", describe(&out));
    }
}

#[test]
fn conformance_fails_a_plugin_whose_instances_do_not_share() {
    // The program must be able to fail: memory instances without a common
    // namespace do not see each other's locks, so contention checks fail.
    let scratch = Scratch::new("conformance-negative");
    let exe = compile_c(&scratch, &["hosts/c/conformance.c"], "conformance");
    let out = run(Command::new(&exe).arg(plugin("memory")).arg("{}"));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stdout(&out).contains("FAIL another instance gets CONTENDED"), "{}", describe(&out));
}

#[test]
fn stress_detects_overlap() {
    // Eight private memory instances never contend: the test must see the
    // overlap and fail, or it proves nothing.
    let scratch = Scratch::new("stress-negative");
    let exe = compile_c(&scratch, &["hosts/c/stress.c"], "stress");
    let out = run(Command::new(&exe).arg(plugin("memory")).args(["{}", "30"]));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stdout(&out).contains("FAIL: max holders"), "{}", describe(&out));
}

/// Error paths each backend's conformance run must have passed (issue 9:
/// the C host's error paths under valgrind, for every backend): bad config,
/// NULL pointers, invalid UTF-8, malformed JSON, out-of-range keys and TTLs,
/// forged and stale handles, huge and deeply nested inputs, calls after
/// cleanup; the bad inputs of the revision 1.1 slots and of `owner`; and
/// those of the revision 1.2 slots.
const ERROR_PATHS: &[&str] = &[
    "create with invalid UTF-8 is ERR_INVALID",
    "create with an unknown config key is invalid_argument naming it",
    "try_lock with a NULL request is ERR_INVALID",
    "try_lock with invalid UTF-8 in an ignored field is ERR_INVALID",
    "try_lock with JSON cut short by an interior NUL is ERR_INVALID",
    "a key one byte too long is ERR_INVALID",
    "ttl_ms past BEXT_LOCKING_MAX_TTL_MS is ERR_INVALID",
    "renew with a bad handle is ERR_INVALID (#13)",
    "release with a bad handle is ERR_INVALID (#13)",
    "renew with another lock_id is ERR_BACKEND",
    "release with another lock_id is OK",
    "forged renew/release calls leave the lock held",
    "renew of a stale handle is ERR_BACKEND",
    "a stale release leaves the new holder's lock alone",
    "a 1 MiB key is ERR_INVALID",
    "a request with a 1 MiB ignored field is served",
    "a key nested 100000 deep is ERR_INVALID",
    "a config nested 100000 deep is ERR_INVALID",
    "try_lock after cleanup is ERR_BACKEND",
    "release after cleanup is ERR_BACKEND",
    // Revision 1.1: the bad inputs of owner, inspect, force_release, stats.
    "an owner one byte over 256 bytes is ERR_INVALID naming owner",
    "an owner that is not UTF-8 is ERR_INVALID",
    "inspect with NULL out_json is ERR_INVALID",
    "inspect with a NULL instance is ERR_INVALID",
    "inspect with a NULL request is ERR_INVALID",
    "inspect with malformed JSON is ERR_INVALID",
    "inspect with no key is ERR_INVALID naming key",
    "inspect with a number key is ERR_INVALID naming key",
    "force_release with a NULL instance is ERR_INVALID",
    "force_release with a NULL request is ERR_INVALID",
    "force_release with malformed JSON is ERR_INVALID",
    "force_release with no key is ERR_INVALID naming key",
    "force_release with if_fence negative is ERR_INVALID naming if_fence",
    "force_release with if_fence fractional is ERR_INVALID naming if_fence",
    "force_release with if_fence a string is ERR_INVALID naming if_fence",
    "stats with NULL out_json is ERR_INVALID",
    "stats of a NULL instance is ERR_INVALID",
    // Revision 1.2: the bad inputs of lock_wait, cancel_wait, renew_for.
    "lock_wait with NULL out_json is ERR_INVALID",
    "lock_wait with a NULL instance is ERR_INVALID",
    "lock_wait with a NULL request is ERR_INVALID",
    "lock_wait with wait_ms missing is ERR_INVALID naming wait_ms",
    "lock_wait with wait_ms -1 is ERR_INVALID naming wait_ms",
    "lock_wait with wait_ms 1.5 is ERR_INVALID naming wait_ms",
    "lock_wait with wait_ms a string is ERR_INVALID naming wait_ms",
    "lock_wait with wait_ms over BEXT_LOCKING_MAX_TTL_MS is ERR_INVALID naming wait_ms",
    "lock_wait with a string wait_id is ERR_INVALID naming wait_id",
    "cancel_wait with a NULL instance is ERR_INVALID",
    "cancel_wait with wait_id missing is ERR_INVALID naming wait_id",
    "cancel_wait of an unknown wait id is OK and writes nothing",
    "renew_for with a NULL instance is ERR_INVALID",
    "renew_for with a NULL request is ERR_INVALID",
    "renew_for with ttl_ms 0 is ERR_INVALID",
];

/// The ABI conformance program against one backend, under valgrind.
fn conformance(name: &'static str) {
    let Some(backend) = backend(name, "c-conformance") else { return };
    let scratch = Scratch::new(&format!("conformance-{name}"));
    let exe = compile_c(&scratch, &["hosts/c/conformance.c"], "conformance");
    let out = valgrind(&exe, &[backend.library.to_str().unwrap(), &backend.config]);
    eprintln!("{}", stdout(&out).lines().last().unwrap_or(""));
    assert!(out.status.success(), "C conformance failed for {name}:\n{}", failed_checks(&out));
    let text = stdout(&out);
    for check in ERROR_PATHS {
        assert!(
            text.lines().any(|l| l == format!("ok   {check}")),
            "{name}: the error-path check `{check}` did not run: {}",
            describe(&out)
        );
    }
}

/// 8 pthreads on one key through one backend, under valgrind.
fn stress(name: &'static str) {
    let Some(backend) = backend(name, "c-stress") else { return };
    let scratch = Scratch::new(&format!("stress-{name}"));
    let exe = compile_c(&scratch, &["hosts/c/stress.c"], "stress");
    // valgrind runs one thread at a time: enough rounds to interleave, few
    // enough to stay quick on network backends.
    let rounds = match name {
        "memory" => "200",
        "etcd" | "nats" => "20",
        _ => "40",
    };
    let out = valgrind(&exe, &[backend.library.to_str().unwrap(), &backend.config, rounds]);
    eprintln!("{}", stdout(&out).trim());
    assert!(out.status.success(), "C stress failed for {name}: {}", describe(&out));
}

macro_rules! per_backend {
    ($($backend:ident),*) => {
        mod conformance {
            $(#[test]
            fn $backend() {
                super::conformance(stringify!($backend));
            })*
        }
        mod stress_eight_threads {
            $(#[test]
            fn $backend() {
                super::stress(stringify!($backend));
            })*
        }
    };
}

per_backend!(memory, sqlite, redis, pg, etcd, mysql, nats);

#[test]
fn every_built_backend_has_a_test_config() {
    let unknown = unknown_backends();
    assert!(
        unknown.is_empty(),
        "built plugins that the C conformance and stress tests do not cover: {unknown:?}; \
         add a config to tests/abi/src/lib.rs and a name to per_backend!"
    );
}
