//! Why a file could not be loaded as a plugin.

use std::fmt;
use std::path::PathBuf;

/// The reason a library was refused. Scanners use it to tell "not a plugin"
/// apart from "a broken plugin".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadErrorKind {
    /// `dlopen` failed; holds the dynamic loader's message.
    Open(String),
    /// The library has no `bext_locking_plugin_entry`: not a plugin.
    NoEntrySymbol,
    /// The entry returned NULL for our ABI version.
    EntryRefused,
    /// The vtable was built for another ABI version.
    AbiMismatch {
        /// The version the plugin declares.
        found: u32,
    },
    /// `struct_size` is smaller than the v1 vtable.
    VTableTooSmall {
        /// The size the plugin declares.
        found: u32,
    },
    /// A mandatory slot or string is NULL.
    NullField(&'static str),
    /// `name` or `version` is empty or not UTF-8.
    BadString(&'static str),
    /// Someone other than root or this user could have written the file,
    /// the folder holding it, or a folder above (see `docs/LOADER.md`);
    /// holds which one and why. Not returned with
    /// [`LoadOptions::allow_insecure`](crate::LoadOptions::allow_insecure).
    Insecure(String),
}

/// A library that could not be loaded, with the file and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file that was being loaded.
    pub path: PathBuf,
    /// Why it was refused.
    pub kind: LoadErrorKind,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.kind {
            LoadErrorKind::Open(msg) => write!(f, "{path}: cannot load library: {msg}"),
            LoadErrorKind::NoEntrySymbol => write!(
                f,
                "{path}: not a bext-locking plugin (no `bext_locking_plugin_entry` symbol)"
            ),
            LoadErrorKind::EntryRefused => {
                write!(
                    f,
                    "{path}: plugin refused host ABI version {}",
                    bext_locking_ffi::BEXT_LOCKING_ABI_VERSION
                )
            }
            LoadErrorKind::AbiMismatch { found } => write!(
                f,
                "{path}: plugin is built for ABI version {found}, this host speaks version {}",
                bext_locking_ffi::BEXT_LOCKING_ABI_VERSION
            ),
            LoadErrorKind::VTableTooSmall { found } => write!(
                f,
                "{path}: vtable struct_size is {found} bytes, smaller than the {} bytes of ABI v1",
                bext_locking_ffi::BEXT_LOCKING_VTABLE_V1_SIZE
            ),
            LoadErrorKind::NullField(field) => write!(f, "{path}: vtable field `{field}` is NULL"),
            LoadErrorKind::BadString(field) => {
                write!(f, "{path}: vtable `{field}` is empty or not valid UTF-8")
            }
            LoadErrorKind::Insecure(why) => {
                write!(f, "{path}: refused: {why}; {}", crate::security::ONLY_TRUSTED_WRITERS)
            }
        }
    }
}

impl std::error::Error for LoadError {}
