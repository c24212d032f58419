//! Every plugin library in the target folder is linked `-z nodelete`, so a
//! host's `dlclose` can never unmap a Rust cdylib under live thread-local
//! destructors.

use std::path::Path;
use std::process::Command;

use bext_locking_abi_tests::{Scratch, compile_c, describe, plugin, run, target_dir};

/// Whether the library defines (exports) the plugin entry symbol.
fn exports_entry(lib: &Path) -> bool {
    let out = run(Command::new("readelf").args(["--dyn-syms", "-W"]).arg(lib));
    assert!(out.status.success(), "readelf --dyn-syms {}: {}", lib.display(), describe(&out));
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        // Num: Value Size Type Bind Vis Ndx Name; Ndx is UND for imports.
        cols.len() >= 8 && cols[7] == "bext_locking_plugin_entry" && cols[6] != "UND"
    })
}

fn flags_1(lib: &Path) -> String {
    let out = run(Command::new("readelf").arg("-d").arg(lib));
    assert!(out.status.success(), "readelf -d {}: {}", lib.display(), describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("(FLAGS_1)"))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn every_plugin_library_is_linked_nodelete() {
    // Make sure the ones this crate owns are there, whatever else is built.
    for name in [
        "memory",
        "fixture-panicky",
        "fixture-bad-abi",
        "fixture-small-struct",
        "fixture-null-slot",
        "fixture-abi-1-0",
    ] {
        plugin(name);
    }
    let mut checked = Vec::new();
    let mut missing = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(target_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let f = p.file_name().unwrap().to_string_lossy();
            f.starts_with("libbext_locking_") && f.ends_with(".so")
        })
        .collect();
    entries.sort();
    for lib in entries {
        let file = lib.file_name().unwrap().to_string_lossy().into_owned();
        if !exports_entry(&lib) {
            eprintln!("skip {file}: not a plugin (no bext_locking_plugin_entry)");
            continue;
        }
        let flags = flags_1(&lib);
        eprintln!("{file}: {}", if flags.is_empty() { "no FLAGS_1" } else { flags.trim() });
        if !flags.contains("NODELETE") {
            missing.push(file.clone());
        }
        checked.push(file);
    }
    assert!(
        missing.is_empty(),
        "plugins without NODELETE in FLAGS_1 (add `println!(\"cargo::rustc-cdylib-link-arg=-Wl,-z,nodelete\");` to their build.rs): {missing:?}"
    );
    for must in ["libbext_locking_memory.so", "libbext_locking_fixture_panicky.so"] {
        assert!(checked.iter().any(|f| f == must), "{must} was not checked: {checked:?}");
    }
}

#[test]
fn dlclose_leaves_a_plugin_mapped() {
    let scratch = Scratch::new("dlclose");
    let exe = compile_c(&scratch, &["tests/abi/c/load_report.c"], "load_report");
    let out = run(Command::new(&exe).arg("--dlclose-keeps-it").arg(plugin("memory")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("MAPPED after dlclose"), "{}", describe(&out));
}
