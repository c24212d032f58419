//! The two plugin sides every backend has: the backend crate linked in, and
//! its `.so` through the loader.

use std::path::PathBuf;

use bext_locking::LockingPlugin;
use bext_locking_ffi::Export;
use bext_locking_loader::LoadedPlugin;

use crate::measure::{Entry, Kind, TTL_MS};

/// An instance of backend `E` built in-process from the same config JSON
/// the `.so` gets (parsed by the same strict code).
pub fn in_process<E: Export>(config: &str) -> Result<Box<dyn LockingPlugin>, String> {
    let plugin = bext_locking_kit::Plugin::<E::Backend>::from_json(config)
        .map_err(|e| format!("create: {e}"))?;
    Ok(Box::new(plugin))
}

/// The release `.so` of backend `name`, next to this binary.
pub fn library_path(name: &str) -> PathBuf {
    bext_locking_test_support::target_dir().join(format!("libbext_locking_{name}.so"))
}

/// Loads backend `name`'s `.so`.
pub fn load(name: &str) -> Result<LoadedPlugin, String> {
    let path = library_path(name);
    if !path.exists() {
        return Err(format!(
            "{} is missing: `cargo build --release -p bext-locking-{name}` (make bench does it)",
            path.display()
        ));
    }
    bext_locking_loader::load(&path).map_err(|e| e.to_string())
}

/// One acquire+release on `key`; contention is an error here, since every
/// worker has a key of its own.
pub fn pair(p: &dyn LockingPlugin, key: &str) -> Result<(), String> {
    let h = p.try_lock(key, TTL_MS)?.ok_or_else(|| format!("unexpected contention on `{key}`"))?;
    p.release(h)
}

/// A side that runs pairs through `p`, worker `t` on key `{prefix}/{t}`.
pub fn side<'a>(label: &str, kind: Kind, p: &'a dyn LockingPlugin, prefix: &str) -> Entry<'a> {
    let prefix = prefix.to_owned();
    Entry::new(label, kind, move |t, lap| {
        let key = format!("{prefix}/{t}");
        lap.run(|| pair(p, &key));
    })
}

/// The in-process and `.so` sides of backend `E` (`.so` name `so_name`) on
/// one config, or the reason they could not be set up.
pub struct Pair {
    /// The backend linked in.
    pub native: Box<dyn LockingPlugin>,
    /// The backend through its `.so`.
    pub ffi: Box<dyn LockingPlugin>,
}

impl Pair {
    /// Creates both instances from `config`.
    pub fn create<E: Export>(lib: &LoadedPlugin, config: &str) -> Result<Self, String> {
        Ok(Self { native: in_process::<E>(config)?, ffi: lib.create(config)? })
    }

    /// The two sides, keys under `prefix`.
    pub fn sides(&self, prefix: &str) -> Vec<Entry<'_>> {
        vec![
            side("in-process", Kind::InProcess, &*self.native, &format!("{prefix}/native")),
            side(".so", Kind::So, &*self.ffi, &format!("{prefix}/so")),
        ]
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.native.cleanup();
        self.ffi.cleanup();
    }
}
