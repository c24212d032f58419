//! The conformance suite against the pg backend, in both modes, in-process
//! and through its `.so`, on the shared server, with the ABI 1.1 checks.

mod common;

use bext_locking::conformance::{self, Options, Report};
use bext_locking::{LockAdmin, LockWait};
use bext_locking_pg::PgPlugin;
use common::Scratch;

fn options(fencing: bool) -> Options {
    Options { short_ttl_ms: 200, settle_ms: 100, fencing: Some(fencing), ..Options::default() }
}

/// In-process there are no statistics (they are counted at the C boundary).
const STATS: &str = "stats_count_every_outcome";

/// What advisory mode answers as unsupported, and so skips: it stores no
/// owner, and cannot inspect or break a lock (see docs/backends/pg.md).
const ADVISORY_SKIPS: &[&str] = &[
    "owner_round_trip",
    "inspect_free_held_expired",
    "force_release_breaks_the_holder",
    "force_release_against_a_renewing_holder",
];

/// Fails unless every check ran and passed, and exactly `skipped` were
/// skipped.
fn assert_all(report: &Report, skipped: &[&str]) {
    report.assert_passed();
    let got: Vec<&str> = report.skipped().map(|c| c.name).collect();
    assert_eq!(got, skipped, "\n{}", report.table());
    assert_eq!(
        report.checks.len(),
        conformance::check_names().len() + conformance::admin_check_names().len()
    );
}

fn in_process(mode: &str) -> Report {
    let scratch = Scratch::new(&format!("conf_{mode}"));
    let config = scratch.config(mode);
    let factory = || {
        PgPlugin::from_json(&config)
            .map(|p| Box::new(p) as Box<dyn LockAdmin>)
            .map_err(|e| e.message)
    };
    let report = conformance::run_admin(&factory, &options(mode == "lease"));
    let factory = || {
        PgPlugin::from_json(&config)
            .map(|p| Box::new(p) as Box<dyn LockWait>)
            .map_err(|e| e.message)
    };
    conformance::run_wait(&factory, &options(mode == "lease"))
        .assert_passed_skipping_only(&["wait_fifo_order"]);
    report
}

fn through_the_so(mode: &str) -> Report {
    let scratch = Scratch::new(&format!("conf_so_{mode}"));
    let config = scratch.config(mode);
    let plugin = bext_locking_loader::load(bext_locking_test_support::plugin_path("pg")).unwrap();
    let factory = || plugin.create_ffi(&config).map(|p| Box::new(p) as Box<dyn LockAdmin>);
    let report = conformance::run_admin(&factory, &options(mode == "lease"));
    let factory = || plugin.create_ffi(&config).map(|p| Box::new(p) as Box<dyn LockWait>);
    conformance::run_wait(&factory, &options(mode == "lease"))
        .assert_passed_skipping_only(&["wait_fifo_order"]);
    report
}

#[test]
fn lease_in_process() {
    assert_all(&in_process("lease"), &[STATS]);
}

#[test]
fn lease_through_the_so() {
    assert_all(&through_the_so("lease"), &[]);
}

#[test]
fn advisory_in_process() {
    let mut skipped = ADVISORY_SKIPS.to_vec();
    skipped.push(STATS);
    assert_all(&in_process("advisory"), &skipped);
}

#[test]
fn advisory_through_the_so() {
    assert_all(&through_the_so("advisory"), ADVISORY_SKIPS);
}
