//! Throwaway NATS JetStream servers: one, or a cluster of real
//! `nats-server` processes on free loopback ports, with their stores in a
//! fresh folder (on tmpfs when there is one), killed and removed on drop.
//!
//! Each member also serves its monitoring endpoint, which is how the
//! helpers learn who leads a stream without a NATS client of their own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{signal, unique_dir};

/// Where Debian's `nats-server` package puts the server.
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// Installs Debian's `nats-server` when it is missing, once per machine
/// even when test processes race (flock serialises apt).
pub fn ensure_nats_server() {
    if Path::new(NATS_SERVER).exists() {
        return;
    }
    let status = Command::new("flock")
        .args(["/tmp/bext-locking-nats-apt.lock", "sh", "-c"])
        .arg(format!(
            "test -x {NATS_SERVER} || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server)"
        ))
        .status()
        .expect("run flock + apt-get to install nats-server");
    assert!(
        status.success() && Path::new(NATS_SERVER).exists(),
        "could not install nats-server ({status})"
    );
}

fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

/// One member of a test cluster.
pub struct Member {
    /// `n0`, `n1`, … (also its JetStream server name).
    pub name: String,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    cluster_port: u16,
    http_port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Member {
    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// One server (`start(1)`) or a JetStream cluster; everything dies with it.
pub struct Cluster {
    /// The members, in start order.
    pub members: Vec<Member>,
    root: PathBuf,
    http: ureq::Agent,
}

impl Cluster {
    /// Starts `n` members (1 is a lone server, 3 or 5 a cluster) and waits
    /// until JetStream serves on every one.
    pub fn start(n: usize) -> Self {
        ensure_nats_server();
        let root = unique_dir(&scratch_root(), "nats");
        std::fs::create_dir_all(&root).expect("create scratch folder");
        let mut members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("n{i}");
                Member {
                    port: crate::free_port(),
                    cluster_port: crate::free_port(),
                    http_port: crate::free_port(),
                    conf: root.join(format!("{name}.conf")),
                    log: root.join(format!("{name}.log")),
                    name,
                    child: None,
                    paused: false,
                }
            })
            .collect();
        let routes: Vec<String> =
            members.iter().map(|m| format!("\"nats://127.0.0.1:{}\"", m.cluster_port)).collect();
        for m in &mut members {
            let store = root.join(&m.name);
            let mut conf = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{http}\"\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 64MB\n  \
                 max_file_store: 512MB\n}}\n",
                name = m.name,
                port = m.port,
                http = m.http_port,
                store = store.display(),
            );
            if n > 1 {
                conf.push_str(&format!(
                    "cluster {{\n  name: bext\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                    m.cluster_port,
                    routes.join(", ")
                ));
            }
            std::fs::write(&m.conf, conf).expect("write server config");
        }
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .new_agent();
        let mut cluster = Self { members, root, http };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_ready(Duration::from_secs(30));
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "{} is already running", m.name);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&m.log).expect("log file");
        let child = Command::new(NATS_SERVER)
            .arg("-c")
            .arg(&m.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn nats-server");
        m.child = Some(child);
        m.paused = false;
    }

    /// Client URLs of every member, running or not.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(Member::url).collect()
    }

    /// SIGKILLs member `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut child) = m.child.take() {
            if m.paused {
                signal(child.id(), Signal::SIGCONT);
                m.paused = false;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its store (it rejoins as itself).
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    /// SIGSTOPs member `i`: its ports accept connections, nothing answers.
    pub fn pause(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(child) = &m.child {
            signal(child.id(), Signal::SIGSTOP);
            m.paused = true;
        }
    }

    /// SIGCONTs member `i`.
    pub fn resume(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(child) = &m.child {
            signal(child.id(), Signal::SIGCONT);
            m.paused = false;
        }
    }

    /// Whether member `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Member `i`'s monitoring answer for `path`, if it answers within a
    /// second.
    fn monitor(&self, i: usize, path: &str) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.members[i].http_port);
        let mut response = self
            .http
            .get(url)
            .config()
            .timeout_global(Some(Duration::from_secs(1)))
            .build()
            .call()
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
    }

    /// Index of the member that leads stream `stream` (a KV bucket `b` is
    /// stream `KV_b`), waiting up to `within` for the running members to
    /// name one that runs.
    pub fn stream_leader(&self, stream: &str, within: Duration) -> usize {
        let until = Instant::now() + within;
        loop {
            for i in (0..self.members.len()).filter(|&i| self.is_running(i)) {
                let Some(jsz) = self.monitor(i, "/jsz?accounts=true&streams=true") else {
                    continue;
                };
                let leader = jsz["account_details"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
                    .find(|s| s["name"] == stream)
                    .and_then(|s| s["cluster"]["leader"].as_str().map(str::to_owned));
                if let Some(pos) = leader
                    .and_then(|l| self.members.iter().position(|m| m.name == l))
                    .filter(|&p| self.is_running(p))
                {
                    return pos;
                }
            }
            assert!(
                Instant::now() < until,
                "no leader of stream {stream} within {within:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running member reports JetStream enabled and, in a
    /// cluster, a meta leader.
    pub fn wait_ready(&self, within: Duration) {
        let until = Instant::now() + within;
        let clustered = self.members.len() > 1;
        for i in (0..self.members.len()).filter(|&i| self.is_running(i)) {
            loop {
                let ready = self.monitor(i, "/jsz").is_some_and(|j| {
                    let enabled = j["config"].is_object() && j["disabled"] != true;
                    let led = !clustered || j["meta_cluster"]["leader"].as_str().is_some();
                    enabled && led
                });
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < until,
                    "nats member {i} not ready within {within:?}\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The tail of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {} ({}) ---\n", m.name, m.url()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
