//! The conformance suite against the mysql backend, in both modes,
//! in-process and through its `.so`, on the shared server, with the ABI 1.1
//! checks (owner, inspect, force_release, and, through the `.so`, stats).

mod common;

use bext_locking::conformance::{self, Options, Report};
use bext_locking::{LockAdmin, LockWait};
use bext_locking_mysql::MysqlPlugin;
use common::Scratch;

fn options(fencing: bool) -> Options {
    Options { short_ttl_ms: 300, settle_ms: 150, fencing: Some(fencing), ..Options::default() }
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

/// What get_lock mode answers `unsupported` to (see docs/backends/mysql.md).
const GET_LOCK_SKIPS: &[&str] = &[
    "owner_round_trip",
    "inspect_free_held_expired",
    "force_release_breaks_the_holder",
    "force_release_against_a_renewing_holder",
];

fn in_process(mode: &str) {
    let scratch = Scratch::new(&format!("conf_{mode}"));
    let config = scratch.config(mode);
    let factory = || {
        MysqlPlugin::from_json(&config)
            .map(|p| Box::new(p) as Box<dyn LockAdmin>)
            .map_err(|e| e.message)
    };
    let report = conformance::run_admin(&factory, &options(mode == "lease"));
    let factory = || {
        MysqlPlugin::from_json(&config)
            .map(|p| Box::new(p) as Box<dyn LockWait>)
            .map_err(|e| e.message)
    };
    conformance::run_wait(&factory, &options(mode == "lease"))
        .assert_passed_skipping_only(&["wait_fifo_order"]);
    // Statistics are counted at the C boundary only.
    let mut allowed = vec!["stats_count_every_outcome"];
    if mode == "get_lock" {
        allowed.extend_from_slice(GET_LOCK_SKIPS);
    }
    assert_skipped_only(&report, &allowed);
}

fn through_the_so(mode: &str) {
    let scratch = Scratch::new(&format!("conf_so_{mode}"));
    let config = scratch.config(mode);
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("mysql")).unwrap();
    let factory = || plugin.create_ffi(&config).map(|p| Box::new(p) as Box<dyn LockAdmin>);
    let report = conformance::run_admin(&factory, &options(mode == "lease"));
    let factory = || plugin.create_ffi(&config).map(|p| Box::new(p) as Box<dyn LockWait>);
    conformance::run_wait(&factory, &options(mode == "lease"))
        .assert_passed_skipping_only(&["wait_fifo_order"]);
    assert_skipped_only(&report, if mode == "get_lock" { GET_LOCK_SKIPS } else { &[] });
}

#[test]
fn lease_in_process() {
    in_process("lease");
}

#[test]
fn lease_through_the_so() {
    through_the_so("lease");
}

#[test]
fn get_lock_in_process() {
    in_process("get_lock");
}

#[test]
fn get_lock_through_the_so() {
    through_the_so("get_lock");
}
