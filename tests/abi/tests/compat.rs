//! ABI 1.1 keeps its promise both ways.
//!
//! * Old plugin, new host: the `abi-1-0` fixture (a frozen copy of the 1.0
//!   vtable) loads in this loader, serves its 1.0 slots, passes the 1.0
//!   conformance checks, and its missing slots are reported as
//!   `unsupported` with a clear message, without anything being called.
//! * New plugin, old host: the 1.0 C conformance program, compiled against
//!   the frozen 1.0 header, loads every backend built today and passes.

use bext_locking::conformance::{self, Options};
use bext_locking::{ErrorKind, LockAdmin, LockingPlugin};
use bext_locking_abi_tests::{BACKENDS, Scratch, backend, compile_c, describe, plugin, valgrind};
use bext_locking_ffi::{BEXT_LOCKING_VTABLE_V1_2_SIZE, BEXT_LOCKING_VTABLE_V1_SIZE};
use bext_locking_loader::load;

const FIXTURE: &str = "fixture-abi-1-0";
const CONFIG: &str = r#"{"namespace":"compat-1-0"}"#;

#[test]
fn the_1_0_fixture_loads_with_the_1_0_size_and_no_new_slots() {
    let loaded = load(plugin(FIXTURE)).expect("the 1.0 plugin loads");
    assert_eq!(loaded.name(), "abi-1-0");
    assert_eq!(loaded.slots().struct_size, BEXT_LOCKING_VTABLE_V1_SIZE);
    assert_eq!(loaded.abi_minor(), 0);
    for slot in ["inspect", "force_release", "stats"] {
        assert!(!loaded.has_slot(slot), "{slot}");
    }
    assert!(loaded.has_slot("try_lock"));
    let d = loaded.describe().unwrap();
    assert_eq!((d.abi_version, d.abi_minor), (1, 0));
    assert!(d.capabilities.is_empty(), "{:?}", d.capabilities);

    // Today's plugins, by contrast, have all three (and the 1.2 slots).
    let memory = load(plugin("memory")).unwrap();
    assert_eq!(memory.slots().struct_size, BEXT_LOCKING_VTABLE_V1_2_SIZE);
    assert_eq!(memory.abi_minor(), 2);
    assert!(["inspect", "force_release", "stats"].iter().all(|s| memory.has_slot(s)));
    let d = memory.describe().unwrap();
    assert_eq!(d.abi_minor, 2);
    // The order is the backend's list, then "stats" from the ffi layer.
    let mut caps: Vec<&str> = d.capabilities.iter().map(String::as_str).collect();
    caps.sort_unstable();
    assert_eq!(
        caps,
        ["fifo", "force_release", "inspect", "lock_wait", "owner", "renew_ttl", "stats"],
        "{:?}",
        d.capabilities
    );
}

#[test]
fn the_1_0_fixture_serves_its_1_0_slots_and_reports_the_rest_unsupported() {
    let loaded = load(plugin(FIXTURE)).unwrap();
    let a = loaded.create_ffi(CONFIG).unwrap();
    let b = loaded.create_ffi(CONFIG).unwrap();
    // The owner a 1.1 host sends is ignored, as any unknown field is.
    let h = a.try_lock_as("compat/k", 30_000, Some("host:1")).unwrap().expect("free key");
    assert_eq!(b.try_lock("compat/k", 30_000), Ok(None));
    a.renew(&h).unwrap();
    a.release(h).unwrap();
    assert!(b.try_lock("compat/k", 30_000).unwrap().is_some());

    let cases = [
        ("inspect", a.inspect("compat/k").map(|_| ())),
        ("force_release", a.force_release("compat/k", None).map(|_| ())),
        ("stats", a.stats().map(|_| ())),
    ];
    for (slot, result) in cases {
        let e = result.expect_err(slot);
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{slot}: {e}");
        assert_eq!(e.message, format!("plugin `abi-1-0` (ABI 1.0) has no `{slot}` slot"));
    }
    // Nothing was called: the lock b holds is untouched.
    assert_eq!(a.try_lock("compat/k", 30_000), Ok(None));
}

#[test]
fn the_1_0_fixture_passes_the_1_0_checks_and_skips_the_1_1_ones() {
    let loaded = load(plugin(FIXTURE)).unwrap();
    let options = Options { fencing: Some(true), ..Options::default() };
    let config = r#"{"namespace":"compat-conformance"}"#;
    let factory = || loaded.create_ffi(config).map(|p| Box::new(p) as Box<dyn LockAdmin>);
    let report = conformance::run_admin(&factory, &options);
    report.assert_passed();
    let skipped: Vec<&str> = report.skipped().map(|c| c.name).collect();
    assert_eq!(skipped, conformance::admin_check_names(), "{}", report.table());
    for check in report.skipped() {
        // A 1.0 plugin lists no capabilities and has none of the new slots.
        let why = if check.name == "owner_round_trip" {
            "does not list the `owner` capability"
        } else {
            "(ABI 1.0) has no"
        };
        assert!(check.message.contains(why), "{}: {}", check.name, check.message);
    }
    assert_eq!(report.checks.len() - skipped.len(), conformance::check_names().len());
}

/// The 1.0 C host, built against the frozen 1.0 header only.
fn frozen_host(scratch: &Scratch) -> std::path::PathBuf {
    compile_c(scratch, &["tests/abi/frozen/conformance_1_0.c"], "conformance_1_0")
}

#[test]
fn the_frozen_1_0_header_is_a_prefix_of_today_s() {
    let root = bext_locking_abi_tests::repo_root();
    let frozen = std::fs::read_to_string(root.join("tests/abi/frozen/bext_locking_1_0.h")).unwrap();
    let current = std::fs::read_to_string(root.join("include/bext_locking.h")).unwrap();
    let fields = |text: &str| -> Vec<String> {
        let start = text.find("typedef struct BextLockingVTable {").expect("the vtable");
        let end = start + text[start..].find("} BextLockingVTable;").expect("its end");
        text[start..end]
            .lines()
            .map(str::trim)
            .filter(|l| l.ends_with(';') && !l.starts_with('*'))
            .map(str::to_owned)
            .collect()
    };
    let (old, new) = (fields(&frozen), fields(&current));
    assert_eq!(old.len(), 12, "{old:?}");
    assert_eq!(&new[..old.len()], &old[..], "the 1.0 fields changed");
    assert_eq!(
        &new[old.len()..],
        [
            "BextLockingCallFn inspect;",
            "BextLockingCallFn force_release;",
            "BextLockingCleanupFn stats;",
            "BextLockingWaitFn lock_wait;",
            "BextLockingCallFn cancel_wait;",
            "BextLockingCallFn renew_for;",
        ]
    );
}

fn old_host(name: &'static str) {
    let Some(backend) = backend(name, "c-compat") else { return };
    let scratch = Scratch::new(&format!("compat-{name}"));
    let exe = frozen_host(&scratch);
    let out = valgrind(&exe, &[backend.library.to_str().unwrap(), &backend.config]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{}", text.lines().last().unwrap_or(""));
    assert!(out.status.success(), "the 1.0 C host fails {name}:\n{}", describe(&out));
    assert!(text.contains(", 0 failed"), "{}", describe(&out));
    assert!(!text.lines().any(|l| l.starts_with("FAIL")), "{}", describe(&out));
}

macro_rules! old_host_per_backend {
    ($($backend:ident),*) => {
        mod a_1_0_c_host_runs {
            $(#[test]
            fn $backend() {
                super::old_host(stringify!($backend));
            })*
        }
        #[test]
        fn every_backend_is_covered_by_the_1_0_host() {
            let covered = [$(stringify!($backend)),*];
            assert_eq!(covered, BACKENDS);
        }
    };
}

old_host_per_backend!(memory, sqlite, redis, pg, etcd, mysql, nats);
