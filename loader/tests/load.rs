//! `load(path)`: one file, refused for the same ownership and mode reasons
//! as `scan` refuses a file of its folder, unless the caller opts out.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use bext_locking_loader::{LoadErrorKind, LoadOptions, load, load_with};
use common::*;

/// Loads `path`, which must be refused as insecure; returns the message.
fn refused(path: &Path) -> String {
    match load(path) {
        Ok(p) => panic!("{} loaded as `{}`; it must be refused", path.display(), p.name()),
        Err(e) => {
            assert!(matches!(e.kind, LoadErrorKind::Insecure(_)), "{e:?}");
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "names the file: {text}");
            assert!(
                text.contains("only root or this user may be able to write a plugin"),
                "{text}"
            );
            text
        }
    }
}

fn insecure_allowed() -> LoadOptions {
    LoadOptions { allow_insecure: true }
}

#[test]
fn a_file_others_can_write_is_refused_unless_insecure_is_allowed() {
    let dir = plugin_dir();
    for (mode, who) in [(0o777, "group and others"), (0o757, "others"), (0o775, "its group")] {
        // A new file each time: the dynamic loader hands back a library
        // already loaded from the same inode without reading it again.
        let file = install(&v1(), dir.path(), &format!("plugin-{mode:o}.so"));
        chmod(&file, mode);
        let text = refused(&file);
        assert!(
            text.contains(&format!("the file is writable by {who} (mode 0{mode:o})")),
            "{text}"
        );
        assert_eq!(load_with(&file, &insecure_allowed()).unwrap().name(), NAME);
    }
    let fine = install(&v1(), dir.path(), "fine.so");
    assert_eq!(load(&fine).unwrap().name(), NAME);
}

#[test]
fn a_file_in_a_folder_others_can_write_is_refused() {
    for mode in [0o777, 0o1777, 0o770] {
        let dir = plugin_dir();
        let file = install(&v1(), dir.path(), "plugin.so");
        chmod(dir.path(), mode);
        let text = refused(&file);
        assert!(text.contains(&format!("folder {}", dir.path().display())), "{text}");
        assert!(text.contains("is writable by"), "{text}");
        assert_eq!(load_with(&file, &insecure_allowed()).unwrap().name(), NAME);
    }
}

#[test]
fn a_relative_path_checks_the_current_folder_too() {
    // `load("plugin.so")` names a file in the current folder: that folder is
    // the one holding it, and is checked like any other.
    let err = load("no-such-plugin-here.so").unwrap_err();
    assert!(matches!(err.kind, LoadErrorKind::Open(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-plugin-here.so"), "{err}");
}

#[test]
fn symlinks_are_resolved_and_both_folders_checked() {
    // A link in a private folder to a file in a folder others can write.
    let links = plugin_dir();
    let open = plugin_dir();
    let target = install(&v1(), open.path(), "real.so");
    chmod(open.path(), 0o777);
    let link = links.path().join("link.so");
    symlink(&target, &link).unwrap();
    let text = refused(&link);
    assert!(text.contains(&format!("folder {}", open.path().display())), "{text}");

    // A link in a folder others can write, to a file in a private one.
    let private = plugin_dir();
    let target = install(&v1(), private.path(), "real.so");
    let shared = plugin_dir();
    chmod(shared.path(), 0o777);
    let link = shared.path().join("link.so");
    symlink(&target, &link).unwrap();
    let text = refused(&link);
    assert!(text.contains(&format!("folder {}", shared.path().display())), "{text}");

    // A link to a world-writable target names the target.
    let dir = plugin_dir();
    let target = install(&v1(), dir.path(), "real.so");
    chmod(&target, 0o666);
    let link = dir.path().join("link.so");
    symlink(&target, &link).unwrap();
    let text = refused(&link);
    assert!(text.contains(&format!("the symlink's target {}", target.display())), "{text}");
}

#[test]
fn a_file_owned_by_another_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("skipped: only root can give a file to another user");
        return;
    }
    let dir = plugin_dir();
    let file = install(&v1(), dir.path(), "plugin.so");
    std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
    let text = refused(&file);
    assert!(text.contains("owned by uid 65534"), "{text}");
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
