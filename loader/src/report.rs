//! What a scan reports: the plugins loaded and the files skipped, with why.
//!
//! Kept apart from the scanner so that loading one file (the private copy)
//! and scanning a folder both speak these types without depending on each
//! other.

use std::path::PathBuf;

use serde::Serialize;

use crate::library::LoadedPlugin;

/// A plugin that was loaded.
#[derive(Debug, Clone, Serialize)]
pub struct ScannedPlugin {
    /// Its name, by which a [`Registry`](crate::Registry) hands out instances.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The ABI version it was built for.
    pub abi_version: u32,
    /// Whether its default configuration hands out fences.
    pub fencing: bool,
    /// Its one-sentence description.
    pub description: String,
    /// The file in the scanned folder it was loaded from (a symlink is named
    /// as such; its target was what got checked and loaded).
    pub path: PathBuf,
    /// The loaded library, to create instances from.
    #[serde(skip)]
    pub plugin: LoadedPlugin,
}

/// Why a file was skipped, as a category a program can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipKind {
    /// A shared library without the plugin entry symbol.
    NotAPlugin,
    /// The dynamic loader refused it (its message is in the reason), or
    /// no private copy could be written.
    LoadFailed,
    /// Built for another ABI version, or refused ours.
    AbiMismatch,
    /// A plugin whose vtable or `describe` answer is broken.
    InvalidPlugin,
    /// Another file earlier by file name already provides this name.
    Duplicate,
    /// Writable by group or others, owned by another non-root user, or in
    /// such a folder.
    Insecure,
    /// Cannot be resolved, opened or read, or is not a regular file.
    Unreadable,
    /// Not a shared library at all, or truncated.
    Malformed,
    /// The file kept changing while it was read.
    Changing,
}

/// A file that was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The file (or, when the folder itself cannot be read, the folder).
    pub path: PathBuf,
    /// The category of the reason.
    pub kind: SkipKind,
    /// What a person should read: the reason, without the path.
    pub reason: String,
}

/// What [`scan`](crate::scan) found.
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    /// The folder scanned.
    pub dir: PathBuf,
    /// The plugins loaded, in file name order; names are unique.
    pub loaded: Vec<ScannedPlugin>,
    /// Every shared library file that was not loaded, with the reason, in
    /// file name order.
    pub skipped: Vec<Skipped>,
}

impl ScanReport {
    /// The plugin called `name`, if one was loaded.
    pub fn get(&self, name: &str) -> Option<&ScannedPlugin> {
        self.loaded.iter().find(|p| p.name == name)
    }
}
