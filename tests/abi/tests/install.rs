//! `make install PREFIX=...` lays out headers, plugins and a pkg-config file
//! that a C program builds against with nothing but `pkg-config`.

use std::path::Path;
use std::process::Command;

use bext_locking_abi_tests::{C_FLAGS, Scratch, describe, plugin, repo_root, run, target_dir};

fn make_install(prefix: &Path) {
    let mut cmd = Command::new("make");
    cmd.current_dir(repo_root())
        .args(["-s", "install"])
        .arg(format!("PREFIX={}", prefix.display()))
        .arg(format!("INSTALL_FROM={}", target_dir().display()))
        .arg("INSTALL_NO_BUILD=1")
        // Run from `make test`: do not inherit the outer make's jobserver.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL");
    let out = run(&mut cmd);
    assert!(out.status.success(), "make install failed: {}", describe(&out));
}

fn pkg_config(prefix: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("pkg-config");
    cmd.args(args).arg("bext-locking").env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run pkg-config ({e}): apt-get install -y pkg-config"));
    assert!(out.status.success(), "pkg-config {args:?}: {}", describe(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn installed_files_build_and_run_a_c_host_via_pkg_config() {
    plugin("memory");
    plugin("fixture-panicky");
    let scratch = Scratch::new("install");
    let prefix = scratch.path().join("prefix");
    make_install(&prefix);

    for file in
        ["include/bext_locking.h", "include/bext_locking_host.h", "lib/pkgconfig/bext-locking.pc"]
    {
        assert!(prefix.join(file).is_file(), "{file} was not installed");
    }
    let plugins = prefix.join("lib/bext-locking");
    let memory = plugins.join("libbext_locking_memory.so");
    assert!(memory.is_file(), "the memory plugin was not installed");
    assert!(
        !plugins.join("libbext_locking_fixture_panicky.so").exists(),
        "test fixtures must not be installed"
    );
    // Installed stripped, with the debug info beside it where debuggers
    // look (objcopy comes with binutils, which the C toolchain brings).
    let debug = plugins.join(".debug/libbext_locking_memory.so.debug");
    assert!(debug.is_file(), "no {} next to the stripped plugin", debug.display());
    let built = std::fs::metadata(target_dir().join("libbext_locking_memory.so")).unwrap().len();
    let installed = std::fs::metadata(&memory).unwrap().len();
    assert!(
        installed < built,
        "installed plugin ({installed} B) is not smaller than built ({built} B)"
    );
    let library = std::fs::read(&memory).unwrap();
    assert!(
        library.windows(b".gnu_debuglink".len()).any(|w| w == b".gnu_debuglink"),
        "the stripped plugin has no .gnu_debuglink to its debug file"
    );
    if target_dir().join("bext-lock").is_file() {
        assert!(prefix.join("bin/bext-lock").is_file(), "the CLI was built but not installed");
    }

    let flags = pkg_config(&prefix, &["--cflags", "--libs"]);
    assert!(flags.contains(&format!("-I{}", prefix.join("include").display())), "{flags}");
    assert!(flags.contains("-ldl"), "{flags}");
    assert_eq!(pkg_config(&prefix, &["--variable=plugindir"]), plugins.display().to_string());

    // Build the example from a folder of its own, so only the installed
    // headers can be found.
    let src = scratch.path().join("host.c");
    std::fs::copy(repo_root().join("hosts/c/example.c"), &src).unwrap();
    let exe = scratch.path().join("host");
    let mut cc = Command::new("sh");
    cc.arg("-c")
        .arg(format!(
            "gcc {} {} -o {} $(pkg-config --cflags --libs bext-locking)",
            C_FLAGS.join(" "),
            src.display(),
            exe.display()
        ))
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"));
    let out = run(&mut cc);
    assert!(
        out.status.success(),
        "building against the installed files failed: {}",
        describe(&out)
    );

    let out = run(Command::new(&exe).arg(&memory).arg("{}").arg("installed/check"));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("release: done"), "{}", describe(&out));
}
