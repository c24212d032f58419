//! The conformance suite against the nats backend, in-process and through
//! its `.so`, on the shared server.

mod common;

use bext_locking::LockingPlugin;
use bext_locking::conformance::{self, Options};
use bext_locking_nats::NatsPlugin;

fn options() -> Options {
    Options { short_ttl_ms: 300, settle_ms: 300, fencing: Some(true), ..Options::default() }
}

#[test]
fn in_process() {
    let config = common::config("conf");
    let factory = || {
        NatsPlugin::from_json(&config)
            .map(|p| Box::new(p) as Box<dyn LockingPlugin>)
            .map_err(|e| e.message)
    };
    conformance::run(&factory, &options()).assert_passed();
}

#[test]
fn through_the_so() {
    let config = common::config("conf_so");
    let plugin = bext_locking_loader::load(bext_locking_test_support::plugin_path("nats")).unwrap();
    let factory = || plugin.create(&config);
    conformance::run(&factory, &options()).assert_passed();
}
