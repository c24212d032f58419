//! `scan`: what is loaded, what is skipped and why, and which files are
//! refused as unsafe.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use bext_locking_loader::{ScanOptions, SkipKind, scan};
use common::*;

fn kind_of(report: &bext_locking_loader::ScanReport, file: &str) -> Option<SkipKind> {
    report.skipped.iter().find(|s| s.path.file_name().is_some_and(|n| n == file)).map(|s| s.kind)
}

fn reason_of(report: &bext_locking_loader::ScanReport, file: &str) -> String {
    report
        .skipped
        .iter()
        .find(|s| s.path.file_name().is_some_and(|n| n == file))
        .map(|s| s.reason.clone())
        .unwrap_or_else(|| panic!("{file} not skipped: {report:#?}"))
}

#[test]
fn loads_plugins_and_gives_a_reason_for_every_other_library() {
    let dir = plugin_dir();
    let d = dir.path();
    install(&v1(), d, "a-reload.so");
    install(&v2(), d, "b-reload-again.so");
    install(&no_entry(), d, "no-entry.so");
    let system = system_library().map(|lib| install(&lib, d, "libz.so"));
    let full = fs::read(v2()).unwrap();
    write_file(d, "truncated.so", &full[..full.len() / 2]);
    write_file(d, "empty.so", b"");
    write_file(d, "text.so", b"#!/bin/sh\necho not a library\n");
    // Not candidates: other suffixes and hidden files.
    write_file(d, "notes.txt", b"hello");
    install(&v1(), d, ".hidden.so");

    let report = scan(d, &ScanOptions::default());

    assert_eq!(report.loaded.len(), 1, "{report:#?}");
    let p = &report.loaded[0];
    assert_eq!((p.name.as_str(), p.version.as_str(), p.abi_version), (NAME, "1.0.0", 1));
    assert!(!p.fencing);
    assert_eq!(p.path, d.join("a-reload.so"));
    assert_eq!(version_of(&*p.plugin.create("{}").unwrap()), "1.0.0");

    assert_eq!(kind_of(&report, "b-reload-again.so"), Some(SkipKind::Duplicate));
    assert!(reason_of(&report, "b-reload-again.so").contains("a-reload.so"));
    assert_eq!(kind_of(&report, "no-entry.so"), Some(SkipKind::NotAPlugin));
    assert!(reason_of(&report, "no-entry.so").contains("bext_locking_plugin_entry"));
    if system.is_some() {
        assert_eq!(kind_of(&report, "libz.so"), Some(SkipKind::NotAPlugin), "{report:#?}");
    }
    for broken in ["truncated.so", "empty.so", "text.so"] {
        assert_eq!(kind_of(&report, broken), Some(SkipKind::Malformed), "{broken}: {report:#?}");
    }
    assert!(reason_of(&report, "truncated.so").contains("truncated"), "{report:#?}");
    let expected = 5 + usize::from(system.is_some());
    assert_eq!(report.skipped.len(), expected, "hidden and non-.so files are not listed");

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["loaded"][0]["name"], NAME);
    assert_eq!(json["skipped"].as_array().unwrap().len(), expected);
    assert!(json["skipped"].as_array().unwrap().iter().any(|s| s["kind"] == "not_a_plugin"));
}

#[test]
fn the_dynamic_loaders_message_is_reported() {
    let dir = plugin_dir();
    // A complete image glibc refuses: an OS ABI byte it does not accept.
    let mut bytes = fs::read(v1()).unwrap();
    bytes[7] = 0x61;
    write_file(dir.path(), "foreign.so", &bytes);
    let report = scan(dir.path(), &ScanOptions::default());
    assert_eq!(kind_of(&report, "foreign.so"), Some(SkipKind::LoadFailed), "{report:#?}");
    let reason = reason_of(&report, "foreign.so");
    assert!(reason.starts_with("failed to load: ") && reason.contains("ABI"), "{reason}");
    assert!(!reason.contains(".bext-locking-plugin-"), "names the private copy: {reason}");
}

#[test]
fn a_copy_folder_that_cannot_be_written_is_reported() {
    let dir = plugin_dir();
    install(&v1(), dir.path(), "plugin.so");
    let options =
        ScanOptions { copy_dir: Some(dir.path().join("no-such-folder")), ..ScanOptions::default() };
    let report = scan(dir.path(), &options);
    assert_eq!(kind_of(&report, "plugin.so"), Some(SkipKind::LoadFailed), "{report:#?}");
    assert!(reason_of(&report, "plugin.so").contains("private copy"), "{report:#?}");
}

#[test]
fn a_rebuilt_file_at_the_same_path_is_loaded_anew() {
    // glibc hands back the already-loaded library for a path it has seen;
    // private copies make the second scan see the new build.
    let dir = plugin_dir();
    install(&v1(), dir.path(), "plugin.so");
    let first = scan(dir.path(), &ScanOptions::default());
    assert_eq!(first.loaded[0].version, "1.0.0");
    install(&v2(), dir.path(), "plugin.so");
    let second = scan(dir.path(), &ScanOptions::default());
    assert_eq!(second.loaded[0].version, "2.0.0");
    assert_eq!(version_of(&*second.loaded[0].plugin.create("{}").unwrap()), "2.0.0");
    assert_eq!(version_of(&*first.loaded[0].plugin.create("{}").unwrap()), "1.0.0");
}

#[test]
fn world_writable_file_is_refused_unless_insecure_is_allowed() {
    let dir = plugin_dir();
    let file = install(&v1(), dir.path(), "plugin.so");
    for (mode, who) in [(0o777, "group and others"), (0o757, "others"), (0o775, "its group")] {
        chmod(&file, mode);
        let report = scan(dir.path(), &ScanOptions::default());
        assert!(report.loaded.is_empty(), "{report:#?}");
        assert_eq!(kind_of(&report, "plugin.so"), Some(SkipKind::Insecure));
        let reason = reason_of(&report, "plugin.so");
        assert!(reason.contains(&format!("writable by {who} (mode 0{mode:o})")), "{reason}");
    }
    let allowed = scan(dir.path(), &ScanOptions { allow_insecure: true, ..Default::default() });
    assert_eq!(allowed.loaded.len(), 1, "{allowed:#?}");
}

#[test]
fn file_in_a_world_writable_folder_is_refused_unless_insecure_is_allowed() {
    let dir = plugin_dir();
    install(&v1(), dir.path(), "plugin.so");
    // Sticky or not: others could add files here that we would load.
    for mode in [0o777, 0o1777, 0o770] {
        chmod(dir.path(), mode);
        let report = scan(dir.path(), &ScanOptions::default());
        assert!(report.loaded.is_empty(), "{mode:o}: {report:#?}");
        let reason = reason_of(&report, "plugin.so");
        assert!(reason.contains("folder") && reason.contains("writable by"), "{reason}");
    }
    let allowed = scan(dir.path(), &ScanOptions { allow_insecure: true, ..Default::default() });
    assert_eq!(allowed.loaded.len(), 1, "{allowed:#?}");
    chmod(dir.path(), 0o755);
    assert_eq!(scan(dir.path(), &ScanOptions::default()).loaded.len(), 1);
}

#[test]
fn symlinks_are_resolved_and_their_target_checked() {
    let plugins = plugin_dir();
    let elsewhere = plugin_dir();
    let target = install(&v1(), elsewhere.path(), "real.so");
    symlink(&target, plugins.path().join("link.so")).unwrap();
    symlink(plugins.path().join("missing.so.real"), plugins.path().join("dangling.so")).unwrap();

    let report = scan(plugins.path(), &ScanOptions::default());
    assert_eq!(report.loaded.len(), 1, "{report:#?}");
    assert_eq!(report.loaded[0].path, plugins.path().join("link.so"));
    assert_eq!(kind_of(&report, "dangling.so"), Some(SkipKind::Unreadable));

    // The link's own folder is fine, but the code it points at is not.
    chmod(elsewhere.path(), 0o777);
    let report = scan(plugins.path(), &ScanOptions::default());
    assert!(report.loaded.is_empty(), "{report:#?}");
    assert!(reason_of(&report, "link.so").contains(&elsewhere.path().display().to_string()));
    chmod(elsewhere.path(), 0o700);
    chmod(&target, 0o666);
    let report = scan(plugins.path(), &ScanOptions::default());
    assert!(reason_of(&report, "link.so").contains("symlink's target"), "{report:#?}");
}

#[test]
fn file_owned_by_another_user_is_refused() {
    // Only root can give a file away; elsewhere this test has nothing to show.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("not root: cannot chown a file to another user; skipping");
        return;
    }
    let dir = plugin_dir();
    let file = install(&v1(), dir.path(), "plugin.so");
    std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
    let report = scan(dir.path(), &ScanOptions::default());
    assert_eq!(kind_of(&report, "plugin.so"), Some(SkipKind::Insecure), "{report:#?}");
    assert!(reason_of(&report, "plugin.so").contains("owned by uid 65534"), "{report:#?}");

    std::os::unix::fs::chown(&file, Some(0), None).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
    let report = scan(dir.path(), &ScanOptions::default());
    assert!(reason_of(&report, "plugin.so").contains("owned by uid 65534"), "{report:#?}");
    let allowed = scan(dir.path(), &ScanOptions { allow_insecure: true, ..Default::default() });
    assert_eq!(allowed.loaded.len(), 1);
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn an_unreadable_folder_is_reported_not_panicked_on() {
    let dir = plugin_dir();
    let missing = dir.path().join("nope");
    let report = scan(&missing, &ScanOptions::default());
    assert!(report.loaded.is_empty());
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].path, missing);
    assert_eq!(report.skipped[0].kind, SkipKind::Unreadable);
    assert!(report.skipped[0].reason.contains("cannot read the folder"));
}
