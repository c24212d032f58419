//! Loading every plugin in a folder, and saying why each other file was not.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::private_copy::{self, Failure, LIBRARY_SUFFIX, LoadRequest, Loaded};
use crate::report::{ScanReport, ScannedPlugin, SkipKind, Skipped};
use crate::security::{self, Refusal};

/// How to scan a plugin folder.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Load files (and folders) that group or others can write, or that
    /// another non-root user owns. Off by default: loading a library runs its
    /// code, so whoever can write the file can run code in this process.
    pub allow_insecure: bool,
    /// Where private copies are written just before they are loaded (and
    /// unlinked right after). Default: the system temp folder. It must not be
    /// mounted `noexec`, or every load fails with the loader's message.
    pub copy_dir: Option<PathBuf>,
}

impl ScanOptions {
    pub(crate) fn copy_dir(&self) -> PathBuf {
        self.copy_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// Whether `name` is a file the scanner considers: a shared library, not
/// hidden (so `.x.so` can be written and then renamed into place).
pub(crate) fn is_candidate(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    !name.starts_with('.') && name.ends_with(LIBRARY_SUFFIX) && name.len() > LIBRARY_SUFFIX.len()
}

/// The candidate file names in `dir`, sorted (byte order), which is the
/// order in which duplicate names are resolved.
pub(crate) fn candidates(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names: Vec<OsString> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| is_candidate(n))
        .collect();
    names.sort();
    Ok(names)
}

/// The folder's canonical path and the security verdict on it, reached
/// once per scan.
pub(crate) struct FolderVerdict {
    pub(crate) canonical: Option<PathBuf>,
    pub(crate) verdict: Result<(), String>,
}

impl FolderVerdict {
    pub(crate) fn of(dir: &Path, allow_insecure: bool) -> Self {
        let canonical = fs::canonicalize(dir).ok();
        let verdict = match (&canonical, allow_insecure) {
            (_, true) => Ok(()),
            (Some(c), false) => security::check_folder(c),
            (None, false) => Err(format!("cannot resolve folder {}", dir.display())),
        };
        Self { canonical, verdict }
    }
}

/// Checks, copies and loads one file.
pub(crate) fn load_one(
    req: &LoadRequest<'_>,
    folder: &FolderVerdict,
    allow_insecure: bool,
) -> Result<Loaded, Failure> {
    let checked = security::open_plugin_file(
        req.path,
        folder.canonical.as_deref(),
        &folder.verdict,
        allow_insecure,
    )
    .map_err(|r| match r {
        Refusal::Unreadable(m) => Failure::Skip(SkipKind::Unreadable, m),
        Refusal::Insecure(m) => Failure::Skip(
            SkipKind::Insecure,
            format!("refused: {m}; {}", security::ONLY_TRUSTED_WRITERS),
        ),
    })?;
    private_copy::load_checked(req, checked)
}

/// Loads every shared library in `dir` (`*.so`, `*.dylib` on macOS; hidden
/// files are ignored) and reports what was loaded and why each other file
/// was not.
///
/// Files are taken in file name order, and the first file to provide a name
/// wins: later files with the same plugin name are skipped as duplicates
/// (they are still loaded first, since the name is only known then).
/// Each file is loaded from a private copy, so the files may be replaced
/// while the loaded plugins are in use. Libraries are never unloaded: every
/// scan maps each file again (see `docs/LOADER.md`).
///
/// ```no_run
/// use bext_locking_loader::{ScanOptions, scan};
/// let report = scan("/usr/local/lib/bext-locking", &ScanOptions::default());
/// for s in &report.skipped {
///     println!("skipped {}: {}", s.path.display(), s.reason);
/// }
/// let redis = report.get("redis").ok_or("no redis plugin")?;
/// let locks = redis.plugin.create(r#"{"url":"redis://127.0.0.1:6379"}"#)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scan(dir: impl AsRef<Path>, options: &ScanOptions) -> ScanReport {
    let dir = dir.as_ref();
    let mut report = ScanReport { dir: dir.to_path_buf(), loaded: Vec::new(), skipped: Vec::new() };
    let names = match candidates(dir) {
        Ok(names) => names,
        Err(e) => {
            report.skipped.push(Skipped {
                path: dir.to_path_buf(),
                kind: SkipKind::Unreadable,
                reason: format!("cannot read the folder: {e}"),
            });
            return report;
        }
    };
    let folder = FolderVerdict::of(dir, options.allow_insecure);
    let copy_dir = options.copy_dir();
    let mut seen = HashSet::new();
    for name in names {
        let path = dir.join(&name);
        let req = LoadRequest {
            path: &path,
            copy_dir: &copy_dir,
            expect: None,
            want_hash: false,
            known_hash: None,
        };
        match load_one(&req, &folder, options.allow_insecure) {
            Ok(loaded) => {
                let info = loaded.info;
                if seen.insert(info.name.clone()) {
                    report.loaded.push(info);
                } else {
                    let first = report.get(&info.name).map(|p| p.path.display().to_string());
                    report.skipped.push(duplicate(&info, first.as_deref().unwrap_or("?")));
                }
            }
            Err(failure) => report.skipped.push(skipped(path, failure)),
        }
    }
    report
}

pub(crate) fn duplicate(info: &ScannedPlugin, first: &str) -> Skipped {
    Skipped {
        path: info.path.clone(),
        kind: SkipKind::Duplicate,
        reason: format!(
            "duplicate plugin name `{}` (version {}): {first} comes first by file name and provides it",
            info.name, info.version
        ),
    }
}

pub(crate) fn skipped(path: PathBuf, failure: Failure) -> Skipped {
    let (kind, reason) = match failure {
        Failure::Skip(kind, reason) => (kind, reason),
        Failure::Changing => {
            (SkipKind::Changing, "the file changed while it was read (still being written?)".into())
        }
        // Only asked for by the registry, which handles it itself.
        Failure::Unchanged => (SkipKind::Changing, "unchanged".into()),
    };
    Skipped { path, kind, reason }
}
