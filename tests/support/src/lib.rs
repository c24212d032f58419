//! Helpers shared by the workspace's tests (and the safety checker in
//! `tools/safety`): built plugins, free ports, the cross-process hammer,
//! throwaway redis, etcd and PostgreSQL servers ([`servers`]), and a TCP
//! proxy that can freeze the path to one ([`proxy`]).
//!
//! Tests load plugins from the cargo target folder that built the test
//! binary itself, so `cargo test`, `cargo nextest` and `--release` all find
//! the matching `.so`. `make test` builds every plugin first.

#![deny(missing_docs)]

use std::net::TcpListener;
use std::path::PathBuf;

/// The target profile folder (`target/debug` or `target/release`) that holds
/// the running test binary.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    let deps = exe.parent().expect("test binary has a folder");
    let dir = if deps.ends_with("deps") { deps.parent().expect("profile folder") } else { deps };
    dir.to_path_buf()
}

/// The path of a built plugin library, by backend name (`"memory"`,
/// `"sqlite"`, …) or fixture crate name with `-` as `_`. Panics, naming the
/// command to run, when it has not been built.
pub fn plugin_path(name: &str) -> PathBuf {
    let file = format!("libbext_locking_{}.so", name.replace('-', "_"));
    let path = target_dir().join(&file);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` (or `make build`) before the tests",
        path.display()
    );
    path
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local_addr")
        .port()
}

pub mod hammer;
pub mod proxy;
pub mod servers;

/// A fresh folder under the temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `bext-<what>-<pid>-<n>` in the temporary directory.
    pub fn new(what: &str) -> Self {
        let dir = servers::unique_dir(&std::env::temp_dir(), what);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// The folder.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
