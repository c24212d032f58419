//! A throwaway PostgreSQL cluster on a free loopback port, for tests that
//! stop, crash and restart a server (never the shared one). Stopped and
//! deleted on drop.
//!
//! Needs the server binaries (`initdb`, `pg_ctl`) under
//! `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package). As
//! root, the cluster runs as the `postgres` user through `runuser`, since
//! PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::unique_dir;

/// A private cluster in a temporary folder, trust authentication, listening
/// on 127.0.0.1 only, `fsync=off`.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    as_postgres: bool,
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql (apt-get install postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0)
    });
    dirs.pop().expect("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Cluster {
    /// initdb + start; waits until it accepts connections.
    pub fn start() -> Self {
        let dir = unique_dir(&std::env::temp_dir(), "pg");
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir));
        }
        let c = Self { bin: bin_dir(), port: crate::free_port(), dir, as_postgres };
        let data = c.data();
        c.run_pg(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
        );
        c.start_server();
        c
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    fn run_pg(&self, tool: &str, args: &[&str]) {
        run(self.command(tool).args(args));
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.run_pg(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-o", &opts, "-w", "-t", "30", "start"],
        );
    }

    /// Stops the server (fast shutdown: sessions are ended, the server
    /// checkpoints).
    pub fn stop_server(&self) {
        self.run_pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "-t", "30", "stop"]);
    }

    /// Stops the server the way a crash would (immediate shutdown: every
    /// process quits at once, the next start replays the WAL).
    pub fn crash_server(&self) {
        self.run_pg("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "-t", "30", "stop"]);
    }

    /// The URL of the `postgres` database as the `postgres` user.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The cluster's folder (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ =
            self.command("pg_ctl").args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
