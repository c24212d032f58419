//! The conformance suite against a real one-member etcd, in-process and
//! through the `.so`.

mod common;

use bext_locking::LockingPlugin;
use bext_locking::conformance::{self, Options};
use bext_locking_etcd::{EtcdConfig, EtcdPlugin};
use common::Cluster;

/// etcd leases count whole seconds (1 s is the floor with the test cluster's
/// 500 ms election timeout) and the leader sweeps expired leases every
/// 500 ms, so expiry checks use a 1 s TTL and wait 1 s past it.
fn options() -> Options {
    Options { short_ttl_ms: 1_000, settle_ms: 1_000, fencing: Some(true), ..Options::default() }
}

#[test]
fn in_process() {
    let etcd = Cluster::single();
    let endpoints = etcd.endpoints();
    let factory = || {
        let mut config = EtcdConfig::with_endpoints(endpoints.clone());
        config.key_prefix = "in-process/".into();
        EtcdPlugin::from_config(config)
            .map(|p| Box::new(p) as Box<dyn LockingPlugin>)
            .map_err(|e| e.message)
    };
    conformance::run(&factory, &options()).assert_passed();
}

#[test]
fn through_the_so() {
    let etcd = Cluster::single();
    let plugin = bext_locking_loader::load(bext_locking_test_support::plugin_path("etcd")).unwrap();
    let config = common::config(&etcd.endpoints_json(), 5_000);
    let factory = || plugin.create(&config);
    conformance::run(&factory, &options()).assert_passed();
}
