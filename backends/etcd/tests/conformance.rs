//! The conformance suite against a real one-member etcd, in-process and
//! through the `.so`, with the ABI 1.1 checks (owner, inspect,
//! force_release, and, through the `.so`, stats).

mod common;

use bext_locking::conformance::{self, Options, Report};
use bext_locking::{LockAdmin, LockWait};
use bext_locking_etcd::{EtcdConfig, EtcdPlugin};
use common::Cluster;

/// etcd leases count whole seconds (1 s is the floor with the test cluster's
/// 500 ms election timeout) and the leader sweeps expired leases every
/// 500 ms, so expiry checks use a 1 s TTL and wait 1 s past it.
fn options() -> Options {
    Options { short_ttl_ms: 1_000, settle_ms: 1_000, fencing: Some(true), ..Options::default() }
}

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

#[test]
fn in_process() {
    let etcd = Cluster::single();
    let endpoints = etcd.endpoints();
    let factory = || {
        let mut config = EtcdConfig::with_endpoints(endpoints.clone());
        config.key_prefix = "in-process/".into();
        EtcdPlugin::from_config(config)
            .map(|p| Box::new(p) as Box<dyn LockAdmin>)
            .map_err(|e| e.message)
    };
    // Statistics are counted at the C boundary only.
    assert_all(&conformance::run_admin(&factory, &options()), &["stats_count_every_outcome"]);
    let factory = || {
        let mut config = EtcdConfig::with_endpoints(endpoints.clone());
        config.key_prefix = "in-process/".into();
        EtcdPlugin::from_config(config)
            .map(|p| Box::new(p) as Box<dyn LockWait>)
            .map_err(|e| e.message)
    };
    conformance::run_wait(&factory, &options()).assert_passed_skipping_only(&[]);
}

#[test]
fn through_the_so() {
    let etcd = Cluster::single();
    let plugin = bext_locking_loader::load(bext_locking_test_support::plugin_path("etcd")).unwrap();
    let config = common::config(&etcd.endpoints_json(), 5_000);
    let factory = || plugin.create_ffi(&config).map(|p| Box::new(p) as Box<dyn LockAdmin>);
    assert_all(&conformance::run_admin(&factory, &options()), &[]);
    let factory = || plugin.create_ffi(&config).map(|p| Box::new(p) as Box<dyn LockWait>);
    conformance::run_wait(&factory, &options()).assert_passed_skipping_only(&[]);
}
