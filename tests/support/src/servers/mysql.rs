//! A throwaway MariaDB server on a free loopback port, for tests (and the
//! safety checker) that restart, crash or pause a server (never the shared
//! one). Killed and deleted on drop.
//!
//! Needs `mariadbd` (Debian's `mariadb-server` package). It starts on an
//! empty data folder with `--skip-grant-tables`: no users, no passwords, so
//! nothing to set up and any user name connects; InnoDB creates its files
//! on first start and keeps them across restarts. As root it runs as root
//! (`--user=root`), since the folder is root's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{signal, unique_dir};

/// Where Debian puts the server binary.
pub const MARIADBD: &str = "/usr/sbin/mariadbd";

/// A private server in a temporary folder, listening on 127.0.0.1 only.
pub struct Server {
    dir: PathBuf,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    child: Mutex<Option<Child>>,
}

impl Server {
    /// Starts a server on an empty data folder and waits until it accepts
    /// connections.
    pub fn start() -> Self {
        assert!(
            Path::new(MARIADBD).exists(),
            "{MARIADBD} is missing (apt-get install mariadb-server)"
        );
        let dir = unique_dir(&std::env::temp_dir(), "mariadb");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let s = Self { dir, port: crate::free_port(), child: Mutex::new(None) };
        s.start_server();
        s
    }

    /// Starts the server (after a stop or crash) and waits until it accepts
    /// connections, on the same port and data.
    pub fn start_server(&self) {
        let mut child = self.child.lock().unwrap();
        assert!(child.is_none(), "the server is running");
        let d = self.dir.display();
        let log = std::fs::File::create(self.dir.join("err.log")).unwrap();
        let mut cmd = Command::new(MARIADBD);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={d}/data"))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={d}/sock"))
            .arg(format!("--pid-file={d}/pid"))
            .args([
                "--skip-grant-tables",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=16M",
                "--innodb-log-file-size=8M",
                // Committed rows reach the OS at once, so they survive a
                // killed server process (not a machine crash).
                "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if nix::unistd::geteuid().is_root() {
            cmd.arg("--user=root");
        }
        let started = cmd.spawn().unwrap_or_else(|e| panic!("start {MARIADBD}: {e}"));
        *child = Some(started);
        drop(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            // The server answers the TCP handshake only once it is ready.
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::Read;
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut b = [0u8; 5];
                if s.read_exact(&mut b).is_ok() {
                    return;
                }
            }
            if let Some(c) = self.child.lock().unwrap().as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("mariadbd exited ({status}) on start:\n{}", self.log());
                }
            }
            assert!(Instant::now() < until, "mariadbd not ready in 30 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("err.log")).unwrap_or_default()
    }

    fn end(&self, sig: Signal) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            signal(c.id(), Signal::SIGCONT);
            signal(c.id(), sig);
            let _ = c.wait();
        }
    }

    /// Stops the server cleanly (SIGTERM: sessions are ended, InnoDB
    /// flushes) and waits for it to exit.
    pub fn stop_server(&self) {
        self.end(Signal::SIGTERM);
    }

    /// Stops the server the way a crash would (SIGKILL); the next start
    /// recovers from the redo log.
    pub fn crash_server(&self) {
        self.end(Signal::SIGKILL);
    }

    /// Pauses (SIGSTOP) or resumes (SIGCONT) the server process.
    pub fn pause(&self, on: bool) {
        if let Some(c) = self.child.lock().unwrap().as_ref() {
            signal(c.id(), if on { Signal::SIGSTOP } else { Signal::SIGCONT });
        }
    }

    /// The URL of database `db` on this server, as `root` (any user
    /// connects: there are no grant tables). Create the database first.
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's folder (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.end(Signal::SIGKILL);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
