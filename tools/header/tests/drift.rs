//! The committed `include/bext_locking.h` is exactly what the pinned
//! cbindgen generates from `ffi/` today.

#[test]
fn committed_header_matches_the_rust_definitions() {
    let root = bext_locking_header::repo_root();
    if let Err(drift) = bext_locking_header::check(&root) {
        panic!("{drift}");
    }
}

#[test]
fn drift_is_reported_with_the_command_that_fixes_it() {
    // A copy of the tree's inputs with a stale header must fail, naming
    // `make header`: the check can fail, and says how to fix it.
    let root = bext_locking_header::repo_root();
    let tmp = std::env::temp_dir().join(format!("bext-header-drift-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("include")).unwrap();
    for dir in ["ffi/src", "tools/header/src"] {
        copy_tree(&root.join(dir), &tmp.join(dir));
    }
    let header = std::fs::read_to_string(bext_locking_header::header_path(&root)).unwrap();
    let stale = header.replace("BEXT_LOCKING_MAX_KEY_BYTES 1024", "BEXT_LOCKING_MAX_KEY_BYTES 512");
    std::fs::write(bext_locking_header::header_path(&tmp), stale).unwrap();
    let result = bext_locking_header::check(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    let message = result.expect_err("a stale header must be reported");
    assert!(message.contains("run `make header`"), "{message}");
    assert!(message.contains("BEXT_LOCKING_MAX_KEY_BYTES 512"), "{message}");
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
