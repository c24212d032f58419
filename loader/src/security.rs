//! Refusing plugin files that someone other than root or this process's
//! user could have written.
//!
//! Loading a library runs its code inside the host, so the stance is sshd's
//! `StrictModes`: the file, the folder it sits in and every folder above
//! must belong to root or to us, and the file and its folder must not be
//! writable by group or others. Folders further up may be group/other
//! writable only when their sticky bit is set (like `/tmp`), because then
//! nobody else can rename or replace what we own inside them.

use std::fs::{self, File, Metadata};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Group- or other-writable bits.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// The sticky bit on a folder: only an entry's owner may rename or delete it.
const STICKY: u32 = 0o1000;

/// The end of every refusal: what the rule is.
pub(crate) const ONLY_TRUSTED_WRITERS: &str =
    "only root or this user may be able to write a plugin";

/// Why a file was not opened.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// It cannot be resolved, opened or is not a regular file.
    Unreadable(String),
    /// Its permissions or ownership (or a folder's) let others change it.
    Insecure(String),
}

/// A plugin file that passed the checks, opened for reading. Reading it
/// through this handle means the bytes loaded are the bytes checked, even
/// if the path is replaced a moment later.
pub(crate) struct CheckedFile {
    pub(crate) file: File,
    pub(crate) meta: Metadata,
    /// The file's canonical path (a symlink's target).
    pub(crate) target: PathBuf,
}

/// The process's effective user id.
fn euid() -> u32 {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn mode(meta: &Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Checks who owns `meta` and whether others may write it. `what` names it
/// in the message ("file /x/y.so", "folder /x").
fn check_owner_and_mode(what: &str, meta: &Metadata, sticky_ok: bool) -> Result<(), String> {
    let me = euid();
    let owner = meta.uid();
    if owner != 0 && owner != me {
        return Err(format!(
            "{what} is owned by uid {owner}, which is neither root nor this process's user (uid {me})"
        ));
    }
    let mode = mode(meta);
    if mode & WRITABLE_BY_OTHERS != 0 && !(sticky_ok && mode & STICKY != 0) {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        return Err(format!("{what} is writable by {who} (mode {mode:04o})"));
    }
    Ok(())
}

/// Checks a folder that holds plugin files and every folder above it.
/// `dir` should be canonical (no symlinks), so the chain checked is the one
/// the kernel walks.
pub(crate) fn check_folder(dir: &Path) -> Result<(), String> {
    let mut sticky_ok = false;
    for folder in dir.ancestors() {
        let meta = fs::metadata(folder)
            .map_err(|e| format!("cannot inspect folder {}: {e}", folder.display()))?;
        check_owner_and_mode(&format!("folder {}", folder.display()), &meta, sticky_ok)?;
        // Only the folder holding the plugins must be strictly private: a
        // sticky folder further up cannot have our folder renamed away.
        sticky_ok = true;
    }
    Ok(())
}

/// Resolves `path` (following symlinks), opens the target and, unless
/// `allow_insecure`, checks the target, the folder holding it and every
/// folder above. `dir_ok` is the verdict already reached for the scanned
/// folder itself (checked once per scan rather than once per file).
pub(crate) fn open_plugin_file(
    path: &Path,
    dir_canonical: Option<&Path>,
    dir_ok: &Result<(), String>,
    allow_insecure: bool,
) -> Result<CheckedFile, Refusal> {
    let target: PathBuf = fs::canonicalize(path)
        .map_err(|e| Refusal::Unreadable(format!("cannot resolve the file: {e}")))?;
    let file = File::open(&target)
        .map_err(|e| Refusal::Unreadable(format!("cannot open the file: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| Refusal::Unreadable(format!("cannot inspect the file: {e}")))?;
    if !meta.is_file() {
        return Err(Refusal::Unreadable("not a regular file".to_owned()));
    }
    if allow_insecure {
        return Ok(CheckedFile { file, meta, target });
    }
    dir_ok.clone().map_err(Refusal::Insecure)?;
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let described = if is_link {
        format!("the symlink's target {}", target.display())
    } else {
        "the file".to_owned()
    };
    check_owner_and_mode(&described, &meta, false).map_err(Refusal::Insecure)?;
    // A symlink may lead out of the scanned folder: the folder that really
    // holds the code must pass the same checks.
    match target.parent() {
        Some(parent) if Some(parent) != dir_canonical => {
            check_folder(parent).map_err(Refusal::Insecure)?;
        }
        _ => {}
    }
    Ok(CheckedFile { file, meta, target })
}

/// Checks one plugin file the way a scan checks each file of its folder:
/// the folder the path names (a symlink's own folder) and its ancestors,
/// then the file, its real folder and that folder's ancestors.
pub(crate) fn check_single_file(path: &Path) -> Result<CheckedFile, Refusal> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = fs::canonicalize(parent).map_err(|e| {
        Refusal::Unreadable(format!("cannot resolve folder {}: {e}", parent.display()))
    })?;
    let verdict = check_folder(&dir);
    open_plugin_file(path, Some(&dir), &verdict, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_writable_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o664)).unwrap();
        let err = check_owner_and_mode("file x", &fs::metadata(&f).unwrap(), false).unwrap_err();
        assert!(err.contains("writable by its group (mode 0664)"), "{err}");
    }

    #[test]
    fn sticky_folder_above_is_accepted_but_not_as_the_plugin_folder() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let meta = fs::metadata(dir.path()).unwrap();
        assert!(check_owner_and_mode("folder", &meta, true).is_ok());
        let err = check_owner_and_mode("folder", &meta, false).unwrap_err();
        assert!(err.contains("writable by group and others (mode 1777)"), "{err}");
    }
}
