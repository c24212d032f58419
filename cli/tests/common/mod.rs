//! Helpers for the end-to-end tests: the real `bext-lock` binary, plugins
//! from the same target folder, throwaway SQLite files, and children that
//! are killed even when a test fails.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_bext-lock");

/// How long any wait in these tests may take before the test fails: far
/// above what anything needs, so it only trips on a real hang.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Makes sure the plugins a test needs are built, naming the command if not.
pub fn need(plugins: &[&str]) {
    for p in plugins {
        bext_locking_test_support::plugin_path(p);
    }
}

/// A `bext-lock` command with no inherited plugin settings.
pub fn cmd() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("BEXT_PLUGIN_DIR")
        .env_remove("BEXT_LOCK_CONFIG")
        .env_remove("BEXT_LOCK_FENCE")
        .stdin(Stdio::null());
    c
}

/// Runs `bext-lock ARGS` to completion (bounded by [`PATIENCE`]).
pub fn output(args: &[&str]) -> Output {
    let child = cmd().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    Proc(Some(child)).wait_output()
}

/// [`output`] for a long run (`check` against a server), failing after
/// `patience`.
#[allow(dead_code)]
pub fn output_within(args: &[&str], patience: Duration) -> Output {
    let child = cmd().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    Proc(Some(child)).wait_output_within(patience)
}

/// A temporary folder with a SQLite lock database path in it.
pub struct Db {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Db {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.db");
        Self { dir, path }
    }

    /// The `--config` value for this database.
    pub fn config(&self) -> String {
        serde_json::json!({ "path": self.path }).to_string()
    }

    /// A file path in the temporary folder (for markers).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A child process killed on drop, so a failing test leaves nothing behind.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn spawn(c: &mut Command) -> Self {
        Self(Some(c.spawn().expect("spawn bext-lock")))
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    /// Waits for the exit (failing the test after [`PATIENCE`]).
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_within(PATIENCE)
    }

    /// Waits for the exit, failing the test after `patience`.
    pub fn wait_within(&mut self, patience: Duration) -> ExitStatus {
        let child = self.0.as_mut().unwrap();
        let until = Instant::now() + patience;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < until, "bext-lock did not exit within {patience:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits and collects piped stdout/stderr.
    pub fn wait_output(self) -> Output {
        self.wait_output_within(PATIENCE)
    }

    /// [`wait_output`](Self::wait_output), failing after `patience`.
    pub fn wait_output_within(mut self, patience: Duration) -> Output {
        // Drain the pipes on threads so a chatty child cannot block.
        let child = self.0.as_mut().unwrap();
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let t_out = std::thread::spawn(move || read_all(out.as_mut()));
        let t_err = std::thread::spawn(move || read_all(err.as_mut()));
        let status = self.wait_within(patience);
        Output { status, stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }
}

fn read_all(r: Option<&mut impl std::io::Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    buf
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Waits until `path` exists (failing the test after [`PATIENCE`]).
pub fn wait_for_file(path: &Path) {
    let until = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(Instant::now() < until, "{} did not appear within {PATIENCE:?}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A shell job that touches `ready`, then waits (at most ~[`PATIENCE`]) for
/// `stop` to appear, then exits 0. Its own processes never outlive a test
/// by more than that.
pub fn job_until(ready: &Path, stop: &Path) -> Vec<String> {
    let script = format!(
        "touch '{}'; i=0; while [ ! -e '{}' ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
        ready.display(),
        stop.display()
    );
    vec!["sh".into(), "-c".into(), script]
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `sh -c SCRIPT`.
pub fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// Whether a process is gone (or a zombie nobody reaped yet).
pub fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Kills a stray process if a test fails before it is gone.
pub struct KillOnDrop(pub i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
