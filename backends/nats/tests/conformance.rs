//! The conformance suite against the nats backend, in-process and through
//! its `.so`, on the shared server.

mod common;

use bext_locking::conformance::{self, Options};
use bext_locking::{LockAdmin, LockWait};
use bext_locking_nats::NatsPlugin;

fn options() -> Options {
    Options { short_ttl_ms: 300, settle_ms: 300, fencing: Some(true), ..Options::default() }
}

#[test]
fn in_process() {
    let config = common::config("conf");
    let factory = || {
        NatsPlugin::from_json(&config)
            .map(|p| Box::new(p) as Box<dyn LockAdmin>)
            .map_err(|e| e.message)
    };
    let report = conformance::run_admin(&factory, &options());
    report.assert_passed();
    // Every 1.1 check ran: only stats (counted by the ffi layer) may skip
    // in-process.
    assert!(report.skipped().count() <= 1, "{}", report.table());
    let factory = || {
        NatsPlugin::from_json(&config)
            .map(|p| Box::new(p) as Box<dyn LockWait>)
            .map_err(|e| e.message)
    };
    conformance::run_wait(&factory, &options())
        .assert_passed_skipping_only(&["wait_fifo_order", "renew_for_sets_the_remaining_time"]);
}

#[test]
fn through_the_so() {
    let config = common::config("conf_so");
    let plugin = bext_locking_loader::load(bext_locking_test_support::plugin_path("nats")).unwrap();
    let factory = || plugin.create_ffi(&config).map(|p| Box::new(p) as Box<dyn LockAdmin>);
    let report = conformance::run_admin(&factory, &options());
    report.assert_passed();
    assert_eq!(report.skipped().count(), 0, "{}", report.table());
    let factory = || plugin.create_ffi(&config).map(|p| Box::new(p) as Box<dyn LockWait>);
    conformance::run_wait(&factory, &options())
        .assert_passed_skipping_only(&["wait_fifo_order", "renew_for_sets_the_remaining_time"]);
}
