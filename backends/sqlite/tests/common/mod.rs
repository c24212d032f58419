//! Helpers shared by this package's integration tests.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

use bext_locking::LockingPlugin;

/// A fresh folder for database files, removed on drop.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("bext-sqlite-test-").tempdir().expect("temp dir")
}

/// The built `libbext_locking_sqlite.so`.
pub fn so_path() -> PathBuf {
    bext_locking_test_support::plugin_path("sqlite")
}

/// The config JSON naming `path`.
pub fn config_json(path: &Path) -> String {
    serde_json::json!({ "path": path }).to_string()
}

/// An instance through the `.so`.
pub fn so_instance(path: &Path) -> Box<dyn LockingPlugin> {
    let plugin = bext_locking_loader::load(so_path()).expect("load the sqlite .so");
    plugin.create(&config_json(path)).expect("create through the .so")
}

/// A plain connection to the same file, for looking at rows.
pub fn raw(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("open raw connection");
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c
}

/// `(lock_id, expires_at_ms, fence)` of `key`'s row, if it has one.
pub fn row(path: &Path, key: &str) -> Option<(String, i64, i64)> {
    use rusqlite::OptionalExtension;
    raw(path)
        .query_row(
            "SELECT lock_id, expires_at_ms, fence FROM bext_locks WHERE key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .expect("read row")
}

/// The host's wall clock in milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}
