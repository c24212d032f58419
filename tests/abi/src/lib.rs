//! Helpers for the cross-crate ABI tests in `tests/`: finding (and, under
//! nextest, building) plugin libraries, compiling the C programs in
//! `hosts/c` and `tests/abi/c` with strict flags, running them under
//! valgrind, and picking the backends that are available here.

#![deny(missing_docs)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub use bext_locking_test_support::{free_port, target_dir};

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Strict flags every C program is built with.
pub const C_FLAGS: &[&str] = &["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];
/// Strict flags for the C++ builds of the same sources.
pub const CXX_FLAGS: &[&str] = &["-x", "c++", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];

/// The library file of a plugin or fixture in the target folder.
pub fn library_file(name: &str) -> PathBuf {
    target_dir().join(format!("libbext_locking_{}.so", name.replace('-', "_")))
}

/// The path of a plugin the tests always need: the memory backend or a
/// fixture (`"fixture-panicky"`), built first when missing (see
/// [`bext_locking_test_support::plugin_path`]).
pub fn plugin(name: &str) -> PathBuf {
    bext_locking_test_support::plugin_path(name)
}

/// A folder for one test's build outputs, removed when dropped. It lives
/// under the target folder (the system's temporary folder may be mounted
/// `noexec`, and these folders hold programs to run).
pub struct Scratch(bext_locking_test_support::TempDir);

impl Scratch {
    /// A fresh folder under the target folder, named after `what`.
    pub fn new(what: &str) -> Self {
        let root = target_dir().join("abi-tests");
        std::fs::create_dir_all(&root).expect("create the scratch root");
        Self(bext_locking_test_support::TempDir::in_dir(&root, what))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Runs a command, returning its output; panics (with the command) when it
/// cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Text of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Compiles C sources (paths relative to the repo root) with `compiler` and
/// `flags`, against `include/` and `hosts/c/`, linking `-ldl -pthread`.
pub fn compile(
    scratch: &Scratch,
    compiler: &str,
    flags: &[&str],
    sources: &[&str],
    out: &str,
) -> PathBuf {
    let root = repo_root();
    let exe = scratch.path().join(out);
    let mut cmd = Command::new(compiler);
    cmd.args(flags)
        .arg("-pthread")
        .arg("-I")
        .arg(root.join("include"))
        .arg("-I")
        .arg(root.join("hosts/c"))
        .args(sources.iter().map(|s| root.join(s)))
        .arg("-ldl")
        .arg("-o")
        .arg(&exe);
    let output = run(&mut cmd);
    assert!(output.status.success(), "{compiler} {sources:?} failed: {}", describe(&output));
    exe
}

/// Compiles a C program with [`C_FLAGS`].
pub fn compile_c(scratch: &Scratch, sources: &[&str], out: &str) -> PathBuf {
    compile(scratch, "gcc", C_FLAGS, sources, out)
}

/// The exit code valgrind uses for memory errors and definite or indirect leaks.
pub const VALGRIND_ERROR: i32 = 99;

/// Runs `exe args` under valgrind (memcheck, full leak check). Panics when
/// valgrind reports an error or a definite/indirect leak; returns the output
/// for the caller to check the program's own exit code.
pub fn valgrind(exe: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "-q",
        "--error-exitcode=99",
        "--leak-check=full",
        "--show-leak-kinds=definite,indirect",
        "--errors-for-leak-kinds=definite,indirect",
    ])
    .arg(exe)
    .args(args)
    // Panics in the panicky fixture print; keep it to one line each.
    .env("RUST_BACKTRACE", "0");
    let output = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run valgrind ({e}): install it (apt-get install -y valgrind)")
    });
    assert_ne!(
        output.status.code(),
        Some(VALGRIND_ERROR),
        "valgrind found memory errors or leaks in {} {args:?}: {}",
        exe.display(),
        describe(&output)
    );
    output
}

/// A backend the C programs can be run against.
pub struct Backend {
    /// Its name: `memory`, `sqlite`, `redis`, `pg`, `etcd`, `mysql`, `nats`.
    pub name: &'static str,
    /// Its library file.
    pub library: PathBuf,
    /// A config whose instances see each other's locks.
    pub config: String,
    /// Keeps what the config points at alive: sqlite's folder, an etcd server.
    _keep: Option<Box<dyn Send>>,
}

fn reachable(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().expect("socket address");
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// A server process started for one test; killed when dropped.
struct Server {
    child: Child,
    _dir: Scratch,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a private single-member etcd on free loopback ports, or says why not.
fn start_etcd(test: &str) -> Result<(Server, u16), String> {
    let dir = Scratch::new(&format!("{test}-etcd"));
    let (client, peer) = (free_port(), free_port());
    let child = Command::new("etcd")
        .args(["--name", "abi", "--log-level", "error", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-cluster=abi=http://127.0.0.1:{peer}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start etcd ({e})"))?;
    let server = Server { child, _dir: dir };
    // Readiness, not a timing assertion: give a slow machine 20 s to start it.
    for _ in 0..200 {
        if reachable(&format!("127.0.0.1:{client}")) {
            return Ok((server, client));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("etcd did not start listening within 20 s".to_owned())
}

/// The backends these tests know how to configure.
pub const BACKENDS: [&str; 7] = ["memory", "sqlite", "redis", "pg", "etcd", "mysql", "nats"];

/// A backend built in this target folder (built first when missing, see
/// [`plugin`]) whose server answers, with a config that makes instances
/// share locks and timeouts that allow for valgrind's slowness; `None`,
/// after printing why, when its server is not available here.
pub fn backend(name: &'static str, test: &str) -> Option<Backend> {
    if name == "memory" {
        let config = format!(r#"{{"namespace":"{test}-{}"}}"#, std::process::id());
        return Some(Backend { name, library: plugin("memory"), config, _keep: None });
    }
    let library = plugin(name);
    let (config, keep): (String, Option<Box<dyn Send>>) = match name {
        "sqlite" => {
            let scratch = Scratch::new(&format!("{test}-sqlite"));
            let db = scratch.path().join("locks.db");
            let config = format!(r#"{{"path":"{}","busy_timeout_ms":20000}}"#, db.display());
            (config, Some(Box::new(scratch)))
        }
        "redis" if reachable("127.0.0.1:6379") => (
            r#"{"url":"redis://127.0.0.1:6379","connect_timeout_ms":20000,"op_timeout_ms":20000}"#
                .to_owned(),
            None,
        ),
        "pg" if reachable("127.0.0.1:5432") => (
            serde_json::json!({ "url": bext_locking_test_support::pg_url(), "connect_timeout_ms": 20000 })
                .to_string(),
            None,
        ),
        "mysql" if reachable("127.0.0.1:3306") => (
            serde_json::json!({
                "url": bext_locking_test_support::mysql_url(),
                "connect_timeout_ms": 20000,
                "statement_timeout_ms": 20000,
            })
            .to_string(),
            None,
        ),
        "etcd" => match start_etcd(test) {
            Ok((server, port)) => (
                format!(
                    r#"{{"endpoints":["http://127.0.0.1:{port}"],"connect_timeout_ms":20000,"op_timeout_ms":20000}}"#
                ),
                Some(Box::new(server)),
            ),
            Err(why) => {
                eprintln!("SKIP etcd: {why}");
                return None;
            }
        },
        "nats" if reachable("127.0.0.1:4222") => (
            serde_json::json!({
                "servers": [bext_locking_test_support::nats_url()],
                "bucket_prefix": format!("bext_c_{test}_{}", std::process::id()).replace('-', "_"),
                "connect_timeout_ms": 20000,
                "op_timeout_ms": 20000,
            })
            .to_string(),
            None,
        ),
        "redis" | "pg" | "mysql" | "nats" => {
            eprintln!("SKIP {name}: its server on 127.0.0.1 does not answer");
            return None;
        }
        other => panic!("no test config for backend `{other}`"),
    };
    Some(Backend { name, library, config, _keep: keep })
}

/// Plugin libraries in the target folder that are neither fixtures nor in
/// [`BACKENDS`]: built, but not covered by the C tests until given a config.
pub fn unknown_backends() -> Vec<String> {
    let mut unknown: Vec<String> = std::fs::read_dir(target_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let name = file.strip_prefix("libbext_locking_")?.strip_suffix(".so")?.to_owned();
            (!name.starts_with("fixture_") && !BACKENDS.contains(&name.as_str())).then_some(name)
        })
        .collect();
    unknown.sort();
    unknown
}
