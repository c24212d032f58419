//! The conformance suite against the SQLite backend, in-process and through
//! its `.so`, each with every instance on one database file.

mod common;

use bext_locking::LockingPlugin;
use bext_locking::conformance::{self, Options};
use bext_locking_sqlite::Sqlite;

/// Leases run on SQLite's millisecond wall clock, so the default 200 ms
/// short TTL is 200 ticks; it also leaves a loaded CI machine room to renew
/// at half the TTL.
fn options() -> Options {
    Options { fencing: Some(true), ..Options::default() }
}

#[test]
fn in_process() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let factory = || {
        Sqlite::open(&path).map(|p| Box::new(p) as Box<dyn LockingPlugin>).map_err(|e| e.message)
    };
    conformance::run(&factory, &options()).assert_passed();
}

#[test]
fn through_the_so() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let plugin = bext_locking_loader::load(common::so_path()).unwrap();
    let config = common::config_json(&path);
    let factory = || plugin.create(&config);
    conformance::run(&factory, &options()).assert_passed();
}
