//! The conformance suite against the SQLite backend, in-process and through
//! its `.so`, each with every instance on one database file.

mod common;

use bext_locking::LockingPlugin;
use bext_locking::conformance::{self, Options};
use bext_locking_sqlite::SqlitePlugin;

/// Leases run on SQLite's millisecond wall clock: 100 ms is 100 ticks, and
/// 60 ms of settling covers a statement that waited on another writer.
fn options() -> Options {
    Options { short_ttl_ms: 100, settle_ms: 60, fencing: Some(true), ..Options::default() }
}

#[test]
fn in_process() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let factory = || {
        SqlitePlugin::open(&path)
            .map(|p| Box::new(p) as Box<dyn LockingPlugin>)
            .map_err(|e| e.message)
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
