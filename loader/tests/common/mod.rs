//! Helpers shared by the folder tests: fixture files, a private plugin
//! folder, atomic installs, and reading which build an instance runs.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_loader::RegistryEvent;

/// The plugin name both reload fixtures export.
pub const NAME: &str = "reload-test";

/// The `.so` of the `reload-v1` fixture (version 1.0.0).
pub fn v1() -> PathBuf {
    bext_locking_test_support::plugin_path("fixture-reload-v1")
}

/// The `.so` of the `reload-v2` fixture (version 2.0.0).
pub fn v2() -> PathBuf {
    bext_locking_test_support::plugin_path("fixture-reload-v2")
}

/// A shared library without the entry symbol.
pub fn no_entry() -> PathBuf {
    bext_locking_test_support::plugin_path("fixture-no-entry")
}

/// A system shared library that is certainly not a plugin, if one is found.
pub fn system_library() -> Option<PathBuf> {
    [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/aarch64-linux-gnu/libz.so.1",
        "/usr/lib/aarch64-linux-gnu/libz.so.1",
        "/usr/lib64/libz.so.1",
        "/lib64/libz.so.1",
        "/usr/lib/libz.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A fresh plugin folder only we can write (tempdir makes it 0700).
pub fn plugin_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("bext-loader-test-").tempdir().expect("tempdir")
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Copies `src` to `dir/name` the way a careful deploy does: write a hidden
/// temporary file, set its mode, rename it into place.
pub fn install(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::copy(src, &tmp).expect("copy fixture");
    chmod(&tmp, 0o755);
    let dest = dir.join(name);
    fs::rename(&tmp, &dest).expect("rename into place");
    dest
}

/// Writes `bytes` to `dir/name` (mode 0755) directly.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let dest = dir.join(name);
    fs::write(&dest, bytes).expect("write");
    chmod(&dest, 0o755);
    dest
}

/// Which build an instance runs, read from the lock id it mints (the
/// fixtures start every lock id with their version). Also proves the
/// instance still locks and unlocks.
pub fn version_of(plugin: &dyn LockingPlugin) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let key = format!("version-probe/{}", N.fetch_add(1, Ordering::Relaxed));
    let handle = plugin.try_lock(&key, 5_000).expect("try_lock").expect("free key is granted");
    plugin.renew(&handle).expect("renew");
    let version = handle.lock_id.split('-').next().expect("lock id").to_owned();
    plugin.release(handle).expect("release");
    assert!(plugin.try_lock(&key, 5_000).expect("try_lock").is_some(), "released key is free");
    version
}

/// Waits (bounded) for an event matching `pred`, returning it and every
/// event seen before it.
pub fn wait_for(
    events: &Receiver<RegistryEvent>,
    within: Duration,
    pred: impl Fn(&RegistryEvent) -> bool,
) -> (RegistryEvent, Vec<RegistryEvent>) {
    let deadline = Instant::now() + within;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(e) if pred(&e) => return (e, before),
            Ok(e) => before.push(e),
            Err(_) => panic!("no matching event within {within:?}; saw {before:#?}"),
        }
    }
}

/// Every event that arrives within `window`.
pub fn drain(events: &Receiver<RegistryEvent>, window: Duration) -> Vec<RegistryEvent> {
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    while let Ok(e) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        seen.push(e);
    }
    seen
}
