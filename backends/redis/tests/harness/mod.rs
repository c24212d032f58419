//! Throwaway `redis-server` processes on free loopback ports, for tests that
//! kill, pause and restart them. Never the shared server on 6379.
//!
//! Every server is killed (after a SIGCONT, should it be paused) and its
//! folder removed when its guard drops, also when the test fails.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_redis::RedisPlugin;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// One `redis-server` without persistence.
pub struct Server {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
    password: Option<String>,
    paused: bool,
}

impl Server {
    /// A plain server.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(bext_locking_test_support::free_port(), extra)
    }

    /// A plain server on `port` (which must be free).
    pub fn start_on_port(port: u16) -> Self {
        Self::start_on(port, &[])
    }

    fn start_on(port: u16, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let password =
            extra.iter().position(|a| a == "--requirepass").and_then(|i| extra.get(i + 1).cloned());
        let dir = std::env::temp_dir().join(format!(
            "bext-redis-test-{}-{}-{port}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create server dir");
        let mut s = Self { port, child: None, dir, extra, password, paused: false };
        // Another process may take the port between `free_port` and the
        // server's bind: try a few others before giving up.
        for attempt in 0..5 {
            if s.spawn() {
                return s;
            }
            assert!(attempt < 4, "redis-server would not start (is it installed?)");
            s.port = bext_locking_test_support::free_port();
        }
        unreachable!()
    }

    /// Starts the process and waits until it answers PING. False when it
    /// exited (port taken).
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port,
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            self.dir.display().to_string(),
            "--daemonize".into(),
            "no".into(),
            "--loglevel".into(),
            "warning".into(),
        ];
        args.extend(self.extra.iter().cloned());
        let child = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (install the redis-server package)");
        self.child = Some(child);
        self.paused = false;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer within 10 s", self.port);
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.admin_url()) else { return false };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut c).is_ok()
    }

    /// The URL a plugin config uses (with the password, if any).
    pub fn url(&self) -> String {
        self.admin_url()
    }

    fn admin_url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// A raw connection, for looking at keys behind the plugin's back.
    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(self.admin_url()).unwrap();
        let c = client.get_connection_with_timeout(Duration::from_secs(2)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                signal(child.id(), "CONT");
                self.paused = false;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with no data.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server could not restart on port {}", self.port);
    }

    /// SIGSTOP: the port still accepts TCP connections, nothing answers.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), "STOP");
            self.paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), "CONT");
            self.paused = false;
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let status =
        Command::new("kill").args([format!("-{sig}"), pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// N independent servers.
pub fn servers(n: usize) -> Vec<Server> {
    (0..n).map(|_| Server::start()).collect()
}

/// A config JSON for one server.
pub fn single_config(s: &Server, extra: &str) -> String {
    format!(r#"{{"url":"{}"{extra}}}"#, s.url())
}

/// A config JSON for a quorum over `servers`.
pub fn quorum_config(servers: &[Server], extra: &str) -> String {
    let urls: Vec<String> = servers.iter().map(|s| format!("\"{}\"", s.url())).collect();
    format!(r#"{{"urls":[{}]{extra}}}"#, urls.join(","))
}

/// An in-process plugin from a config JSON.
pub fn plugin(config: &str) -> RedisPlugin {
    let config = bext_locking_ffi::parse_config(config, &bext_locking_redis_schema()).unwrap();
    RedisPlugin::from_config(config).unwrap()
}

fn bext_locking_redis_schema() -> serde_json::Value {
    <bext_locking_redis::Exported as bext_locking_ffi::Export>::config_schema()
}

/// The same, boxed, for conformance factories.
pub fn boxed(config: &str) -> Result<Box<dyn LockingPlugin>, String> {
    Ok(Box::new(plugin(config)))
}

/// A Redis Cluster of `n` masters on loopback ports, slots split evenly.
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub fn start(n: usize) -> Self {
        let nodes: Vec<Server> = (0..n)
            .map(|_| {
                // The cluster bus listens on port + 10000: that must be free too.
                let port = loop {
                    let p = bext_locking_test_support::free_port();
                    if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
                    {
                        break p;
                    }
                };
                Server::start_on(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "3000",
                    ],
                )
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|s| format!("127.0.0.1:{}", s.port)));
        args.extend(["--cluster-replicas".into(), "0".into(), "--cluster-yes".into()]);
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create (install redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        let started = Instant::now();
        while !cluster.ready() {
            assert!(started.elapsed() < Duration::from_secs(20), "cluster never reached state ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn ready(&self) -> bool {
        self.nodes.iter().all(|s| {
            let info: String =
                redis::cmd("CLUSTER").arg("INFO").query(&mut s.conn()).unwrap_or_default();
            info.contains("cluster_state:ok")
        })
    }

    pub fn config(&self, extra: &str) -> String {
        let urls: Vec<String> = self.nodes.iter().map(|s| format!("\"{}\"", s.url())).collect();
        format!(r#"{{"cluster_urls":[{}]{extra}}}"#, urls.join(","))
    }
}

/// A folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "bext-redis-{what}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
