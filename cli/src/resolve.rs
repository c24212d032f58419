//! Finding plugins: by path, or by name along the plugin search path.
//!
//! The search path, first match wins:
//! 1. every `--plugin-dir DIR`, in the order given;
//! 2. every folder in `BEXT_PLUGIN_DIR` (`:`-separated, like `PATH`);
//! 3. the folder holding the `bext-lock` binary (`target/debug` or
//!    `target/release` in a checkout, where cargo puts the plugins too);
//! 4. `<folder of the binary>/../lib/bext-locking` (`make install
//!    PREFIX=/usr/local` puts the binary in `/usr/local/bin` and the plugins
//!    in `/usr/local/lib/bext-locking`).
//!
//! A name `N` is first looked for as the file `libbext_locking_N.so`
//! (dashes as underscores) in every folder, in order; only when no folder
//! has that file are the folders scanned, in order, for a plugin whose
//! vtable calls itself `N`. (Scanning opens every library in a folder: done
//! first, the binary's own folder would cost every `bext-lock run` a few
//! milliseconds before the install folder's file is found.)
//!
//! Every way goes through the loader's permission rule (`load` and `scan`
//! both check ownership and modes): a file others could have written is an
//! error naming it, never loaded.

use std::path::{Path, PathBuf};

use bext_locking_loader::{LoadedPlugin, ScanOptions};

/// The environment variable with extra plugin folders.
pub const ENV_DIR: &str = "BEXT_PLUGIN_DIR";

/// A folder on the search path, and why it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchDir {
    /// The folder.
    pub dir: PathBuf,
    /// Where it came from: `--plugin-dir`, `BEXT_PLUGIN_DIR`, `binary`, `install`.
    pub origin: &'static str,
}

/// The search path, in order, without repeats.
pub fn search_path(cli_dirs: &[PathBuf]) -> Vec<SearchDir> {
    let mut dirs: Vec<SearchDir> = Vec::new();
    let mut push = |dir: PathBuf, origin| {
        if !dir.as_os_str().is_empty() && !dirs.iter().any(|d| d.dir == dir) {
            dirs.push(SearchDir { dir, origin });
        }
    };
    for d in cli_dirs {
        push(d.clone(), "--plugin-dir");
    }
    if let Some(env) = std::env::var_os(ENV_DIR) {
        for d in std::env::split_paths(&env) {
            push(d, ENV_DIR);
        }
    }
    if let Some(bin) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let install = bin.parent().map(|p| p.join("lib").join("bext-locking"));
        push(bin, "binary");
        if let Some(install) = install {
            push(install, "install");
        }
    }
    dirs
}

/// The library file a plugin name maps to.
pub fn file_name(name: &str) -> String {
    format!("libbext_locking_{}.so", name.replace('-', "_"))
}

/// Whether PLUGIN names a file rather than a plugin.
fn is_path(plugin: &str) -> bool {
    plugin.contains('/') || plugin.ends_with(".so")
}

/// Loads PLUGIN: a path to a library, or a name on the search path.
pub fn load(plugin: &str, cli_dirs: &[PathBuf]) -> Result<LoadedPlugin, String> {
    if plugin.is_empty() {
        return Err("the plugin name is empty".to_owned());
    }
    if is_path(plugin) {
        let path = Path::new(plugin);
        if !path.exists() {
            return Err(format!("plugin file {plugin} does not exist"));
        }
        return bext_locking_loader::load(path).map_err(|e| e.to_string());
    }
    let dirs = search_path(cli_dirs);
    for d in &dirs {
        let candidate = d.dir.join(file_name(plugin));
        if candidate.is_file() {
            return bext_locking_loader::load(&candidate).map_err(|e| e.to_string());
        }
    }
    for d in &dirs {
        if d.dir.is_dir() {
            let report = bext_locking_loader::scan(&d.dir, &ScanOptions::default());
            if let Some(found) = report.get(plugin) {
                return Ok(found.plugin.clone());
            }
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.dir.display().to_string()).collect();
    Err(format!(
        "no plugin named `{plugin}` (looked for {} in {}); build it (`cargo build -p bext-locking-{plugin}`), pass a path, or set --plugin-dir / {ENV_DIR}; `bext-lock plugins` lists what is found",
        file_name(plugin),
        searched.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_files() {
        assert_eq!(file_name("sqlite"), "libbext_locking_sqlite.so");
        assert_eq!(file_name("fixture-careless"), "libbext_locking_fixture_careless.so");
    }

    #[test]
    fn paths_are_told_from_names() {
        assert!(is_path("./libx.so"));
        assert!(is_path("/opt/p/libbext_locking_redis.so"));
        assert!(is_path("libfoo.so"));
        assert!(!is_path("sqlite"));
    }

    #[test]
    fn cli_dirs_come_first_then_the_binary_folder() {
        let dirs = search_path(&[PathBuf::from("/a"), PathBuf::from("/b"), PathBuf::from("/a")]);
        assert_eq!(dirs[0].dir, PathBuf::from("/a"));
        assert_eq!(dirs[1].dir, PathBuf::from("/b"));
        assert_eq!(dirs.iter().filter(|d| d.dir == Path::new("/a")).count(), 1);
        let bin = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
        let at = dirs.iter().position(|d| d.dir == bin).expect("binary folder searched");
        assert_eq!(dirs[at + 1].dir, bin.parent().unwrap().join("lib/bext-locking"));
    }

    #[test]
    fn a_missing_plugin_says_where_it_looked() {
        let err = load("no-such-backend", &[PathBuf::from("/nonexistent-dir")]).unwrap_err();
        assert!(err.contains("libbext_locking_no_such_backend.so"), "{err}");
        assert!(err.contains("/nonexistent-dir"), "{err}");
        let err = load("/nonexistent/libx.so", &[]).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }
}
