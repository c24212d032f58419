//! The committed header compiles strictly as C11 and as C++, and describes
//! the same layout and constants as the Rust definitions in `bext-locking-ffi`.

use std::collections::HashMap;
use std::mem::offset_of;
use std::process::Command;

use bext_locking_abi_tests::{C_FLAGS, CXX_FLAGS, Scratch, compile, describe, repo_root, run};
use bext_locking_ffi::*;

fn layout_as_compiled_by(compiler: &str, flags: &[&str]) -> HashMap<String, i128> {
    let scratch = Scratch::new(&format!("layout-{compiler}"));
    let exe = compile(&scratch, compiler, flags, &["tests/abi/c/layout.c"], "layout");
    let output = run(&mut Command::new(&exe));
    assert!(output.status.success(), "{}", describe(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

fn expected() -> Vec<(&'static str, i128)> {
    type V = BextLockingVTable;
    vec![
        ("size", size_of::<V>() as i128),
        ("v1_size", BEXT_LOCKING_VTABLE_V1_SIZE as i128),
        ("struct_size", offset_of!(V, struct_size) as i128),
        ("abi_version", offset_of!(V, abi_version) as i128),
        ("name", offset_of!(V, name) as i128),
        ("version", offset_of!(V, version) as i128),
        ("describe", offset_of!(V, describe) as i128),
        ("create", offset_of!(V, create) as i128),
        ("try_lock", offset_of!(V, try_lock) as i128),
        ("renew", offset_of!(V, renew) as i128),
        ("release", offset_of!(V, release) as i128),
        ("cleanup", offset_of!(V, cleanup) as i128),
        ("destroy", offset_of!(V, destroy) as i128),
        ("free_string", offset_of!(V, free_string) as i128),
        ("inspect", offset_of!(V, inspect) as i128),
        ("force_release", offset_of!(V, force_release) as i128),
        ("stats", offset_of!(V, stats) as i128),
        ("lock_wait", offset_of!(V, lock_wait) as i128),
        ("cancel_wait", offset_of!(V, cancel_wait) as i128),
        ("renew_for", offset_of!(V, renew_for) as i128),
        ("v1_1_size", BEXT_LOCKING_VTABLE_V1_1_SIZE as i128),
        ("v1_2_size", BEXT_LOCKING_VTABLE_V1_2_SIZE as i128),
        ("BEXT_LOCKING_ABI_VERSION", BEXT_LOCKING_ABI_VERSION.into()),
        ("BEXT_LOCKING_OK", BEXT_LOCKING_OK.into()),
        ("BEXT_LOCKING_CONTENDED", BEXT_LOCKING_CONTENDED.into()),
        ("BEXT_LOCKING_CANCELLED", BEXT_LOCKING_CANCELLED.into()),
        ("BEXT_LOCKING_ERR_BACKEND", BEXT_LOCKING_ERR_BACKEND.into()),
        ("BEXT_LOCKING_ERR_INVALID", BEXT_LOCKING_ERR_INVALID.into()),
        ("BEXT_LOCKING_ERR_PANIC", BEXT_LOCKING_ERR_PANIC.into()),
        ("BEXT_LOCKING_ERR_UNSUPPORTED", BEXT_LOCKING_ERR_UNSUPPORTED.into()),
        ("BEXT_LOCKING_ABI_MINOR", BEXT_LOCKING_ABI_MINOR.into()),
        ("BEXT_LOCKING_MAX_OWNER_BYTES", BEXT_LOCKING_MAX_OWNER_BYTES.into()),
        ("BEXT_LOCKING_MAX_KEY_BYTES", BEXT_LOCKING_MAX_KEY_BYTES.into()),
        ("BEXT_LOCKING_MAX_TTL_MS", BEXT_LOCKING_MAX_TTL_MS.into()),
        ("BEXT_LOCKING_FUEL_TRY_LOCK", BEXT_LOCKING_FUEL_TRY_LOCK.into()),
        ("BEXT_LOCKING_FUEL_RENEW", BEXT_LOCKING_FUEL_RENEW.into()),
        ("BEXT_LOCKING_FUEL_RELEASE", BEXT_LOCKING_FUEL_RELEASE.into()),
        ("BEXT_LOCKING_FUEL_CLEANUP", BEXT_LOCKING_FUEL_CLEANUP.into()),
    ]
}

fn assert_matches_rust(compiler: &str, flags: &[&str]) {
    let seen = layout_as_compiled_by(compiler, flags);
    for (name, want) in expected() {
        assert_eq!(
            seen.get(name),
            Some(&want),
            "{compiler}: `{name}` differs from the Rust definition"
        );
    }
    // The ABI constants are also documented in docs/ABI.md; these are its numbers.
    assert_eq!(seen["BEXT_LOCKING_MAX_TTL_MS"], 31_536_000_000);
    assert_eq!(seen["BEXT_LOCKING_ERR_PANIC"], -3);
    assert_eq!(seen["BEXT_LOCKING_CANCELLED"], 2);
}

#[test]
fn header_compiles_as_strict_c11_with_the_rust_layout() {
    assert_matches_rust("gcc", C_FLAGS);
}

#[test]
fn header_compiles_as_strict_cxx_with_the_rust_layout() {
    assert_matches_rust("g++", CXX_FLAGS);
}

#[test]
fn header_declares_what_abi_md_fixes() {
    let text = std::fs::read_to_string(repo_root().join("include/bext_locking.h")).unwrap();
    for needle in [
        "#ifndef BEXT_LOCKING_H",
        "#define BEXT_LOCKING_H",
        "extern \"C\" {",
        "const struct BextLockingVTable *bext_locking_plugin_entry(uint32_t host_abi_version);",
        "typedef struct BextLockingInstance BextLockingInstance;",
        "typedef struct BextLockingVTable {",
        "} BextLockingVTable;",
        "#define BEXT_LOCKING_ABI_VERSION 1",
        "#define BEXT_LOCKING_MAX_KEY_BYTES 1024",
        "BextLockingCallFn try_lock;",
        "typedef int32_t (*BextLockingCallFn)(",
        "#define BEXT_LOCKING_CANCELLED 2",
        "BextLockingWaitFn lock_wait;",
        "BextLockingCallFn cancel_wait;",
        "BextLockingCallFn renew_for;",
        // Ownership and threading rules travel with the header.
        "free_string()",
        "never with free()",
        "may run concurrently on the same",
        "destroy must not race",
    ] {
        assert!(text.contains(needle), "include/bext_locking.h lacks `{needle}`");
    }
    for bad in ["Option_", "[0]", "_private"] {
        assert!(!text.contains(bad), "include/bext_locking.h contains `{bad}`");
    }
}
