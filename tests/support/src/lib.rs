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
/// `"sqlite"`, …) or fixture name (`"fixture-panicky"`).
///
/// A missing one is built first under nextest, which holds no cargo lock
/// while tests run, so `cargo nextest run -p <crate>` works on a fresh
/// checkout. Under `cargo test` (which holds the lock, so a nested build
/// would wait forever) it panics with the one command to run instead.
pub fn plugin_path(name: &str) -> PathBuf {
    let file = format!("libbext_locking_{}.so", name.replace('-', "_"));
    let path = target_dir().join(&file);
    if !path.exists() && std::env::var_os("NEXTEST").is_some() {
        build_plugin(name);
    }
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` (or `make build`) before the tests",
        path.display()
    );
    path
}

/// Builds `bext-locking-<name>` in the profile of the running test binary.
fn build_plugin(name: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", &format!("bext-locking-{name}")]);
    if target_dir().ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.current_dir(root).status().expect("run cargo build");
    assert!(status.success(), "cargo build -p bext-locking-{name} failed");
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

/// The shared PostgreSQL server tests and benchmarks use: `BEXT_PG_URL`,
/// or the machine's local test database ([`DEFAULT_PG_URL`]).
pub fn pg_url() -> String {
    std::env::var("BEXT_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// The local test database when `BEXT_PG_URL` is not set.
pub const DEFAULT_PG_URL: &str = "postgres://root@127.0.0.1:5432/test";

/// The shared MySQL/MariaDB server tests and benchmarks use:
/// `BEXT_MYSQL_URL`, or the machine's local test database
/// ([`DEFAULT_MYSQL_URL`]).
pub fn mysql_url() -> String {
    std::env::var("BEXT_MYSQL_URL").unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_owned())
}

/// The local test database when `BEXT_MYSQL_URL` is not set.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";
/// The shared NATS server (with JetStream) tests and benchmarks use:
/// `BEXT_NATS_URL`, or the machine's local one ([`DEFAULT_NATS_URL`]).
pub fn nats_url() -> String {
    std::env::var("BEXT_NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.to_owned())
}

/// The local NATS server when `BEXT_NATS_URL` is not set.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// A fresh folder `bext-<what>-XXXXXX` under the temporary directory,
/// removed (with what is in it) on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// A new folder in the system's temporary directory.
    pub fn new(what: &str) -> Self {
        Self::in_dir(&std::env::temp_dir(), what)
    }

    /// A new folder in `root`, which must exist.
    pub fn in_dir(root: &std::path::Path, what: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bext-{what}-"))
            .tempdir_in(root)
            .unwrap_or_else(|e| {
                panic!("cannot create a temporary folder in {}: {e}", root.display())
            });
        Self(dir)
    }

    /// The folder.
    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}
