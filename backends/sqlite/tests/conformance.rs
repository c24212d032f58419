//! The conformance suite against the SQLite backend, in-process and through
//! its `.so`, each with every instance on one database file, with the ABI
//! 1.1 checks (owner, inspect, force_release, and, through the `.so`, stats).

mod common;

use bext_locking::conformance::{self, Options, Report};
use bext_locking::{LockAdmin, LockWait};
use bext_locking_sqlite::Sqlite;

/// Leases run on SQLite's millisecond wall clock, so the default 200 ms
/// short TTL is 200 ticks; it also leaves a loaded CI machine room to renew
/// at half the TTL.
fn options() -> Options {
    Options { fencing: Some(true), ..Options::default() }
}

/// Fails unless every check passed and only the named ones were skipped.
fn assert_skipped_only(report: &Report, allowed: &[&str]) {
    report.assert_passed();
    let skipped: Vec<&str> = report.skipped().map(|c| c.name).collect();
    assert!(skipped.iter().all(|s| allowed.contains(s)), "skipped {skipped:?}\n{}", report.table());
    let all = conformance::check_names().len() + conformance::admin_check_names().len();
    assert_eq!(report.checks.len(), all);
}

#[test]
fn in_process() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let factory =
        || Sqlite::open(&path).map(|p| Box::new(p) as Box<dyn LockAdmin>).map_err(|e| e.message);
    // Statistics are counted at the C boundary only.
    assert_skipped_only(
        &conformance::run_admin(&factory, &options()),
        &["stats_count_every_outcome"],
    );
    let factory =
        || Sqlite::open(&path).map(|p| Box::new(p) as Box<dyn LockWait>).map_err(|e| e.message);
    conformance::run_wait(&factory, &options()).assert_passed_skipping_only(&["wait_fifo_order"]);
}

#[test]
fn through_the_so() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let plugin = bext_locking_loader::load(common::so_path()).unwrap();
    let config = common::config_json(&path);
    let factory = || plugin.create_ffi(&config).map(|p| Box::new(p) as Box<dyn LockAdmin>);
    assert_skipped_only(&conformance::run_admin(&factory, &options()), &[]);
    let factory = || plugin.create_ffi(&config).map(|p| Box::new(p) as Box<dyn LockWait>);
    conformance::run_wait(&factory, &options()).assert_passed_skipping_only(&["wait_fifo_order"]);
}
