//! The conformance suite against the memory backend, in-process and through
//! its `.so`, with the ABI 1.1 checks (owner, inspect, force_release, and,
//! through the `.so`, stats).

use bext_locking::LockAdmin;
use bext_locking::conformance::{self, Options, Report};
use bext_locking_memory::{Memory, MemoryPlugin};

fn options() -> Options {
    Options { fencing: Some(true), ..Options::default() }
}

/// Fails unless every check passed and only the named ones were skipped.
fn assert_skipped_only(report: &Report, allowed: &[&str]) {
    report.assert_passed();
    let skipped: Vec<&str> = report.skipped().map(|c| c.name).collect();
    assert!(skipped.iter().all(|s| allowed.contains(s)), "skipped {skipped:?}\n{}", report.table());
    assert_eq!(
        report.checks.len(),
        conformance::check_names().len() + conformance::admin_check_names().len()
    );
}

#[test]
fn in_process() {
    let ns = format!("conformance-{}", std::process::id());
    let factory = || Ok(Box::new(MemoryPlugin::new(Memory::shared(&ns))) as Box<dyn LockAdmin>);
    let report = conformance::run_admin(&factory, &options());
    // Statistics are counted at the C boundary only.
    assert_skipped_only(&report, &["stats_count_every_outcome"]);
}

#[test]
fn through_the_so() {
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("memory")).unwrap();
    let config = r#"{"namespace":"so-conformance"}"#;
    let factory = || plugin.create_ffi(config).map(|p| Box::new(p) as Box<dyn LockAdmin>);
    assert_skipped_only(&conformance::run_admin(&factory, &options()), &[]);
}
