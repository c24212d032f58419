//! The conformance suite against the mysql backend, in both modes,
//! in-process and through its `.so`, on the shared server.

mod common;

use bext_locking::LockingPlugin;
use bext_locking::conformance::{self, Options};
use bext_locking_mysql::MysqlPlugin;
use common::Scratch;

fn options(fencing: bool) -> Options {
    Options { short_ttl_ms: 200, settle_ms: 100, fencing: Some(fencing), ..Options::default() }
}

fn in_process(mode: &str) {
    let scratch = Scratch::new(&format!("conf_{mode}"));
    let config = scratch.config(mode);
    let factory = || {
        MysqlPlugin::from_json(&config)
            .map(|p| Box::new(p) as Box<dyn LockingPlugin>)
            .map_err(|e| e.message)
    };
    conformance::run(&factory, &options(mode == "lease")).assert_passed();
}

fn through_the_so(mode: &str) {
    let scratch = Scratch::new(&format!("conf_so_{mode}"));
    let config = scratch.config(mode);
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("mysql")).unwrap();
    let factory = || plugin.create(&config);
    conformance::run(&factory, &options(mode == "lease")).assert_passed();
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
