//! Throwaway etcd clusters: real `etcd` processes on free loopback ports,
//! data in a fresh folder (on tmpfs when there is one, so fsync costs
//! nothing), killed and removed on drop.
//!
//! Members use a 50 ms heartbeat and a 500 ms election timeout, so leaders
//! change in about a second and the lease floor is 1 s.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{signal, unique_dir};

const ETCD: &str = "/usr/bin/etcd";

/// Installs Debian's `etcd-server` when `/usr/bin/etcd` is missing, once
/// per machine even when test processes race (flock serialises apt).
pub fn ensure_etcd() {
    if Path::new(ETCD).exists() {
        return;
    }
    let status = Command::new("flock")
        .args(["/tmp/bext-locking-etcd-apt.lock", "sh", "-c"])
        .arg(format!(
            "test -x {ETCD} || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server)"
        ))
        .status()
        .expect("run flock + apt-get to install etcd-server");
    assert!(
        status.success() && Path::new(ETCD).exists(),
        "could not install etcd-server ({status})"
    );
}

fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

/// What a member says about itself (`/v3/maintenance/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    /// This member's id.
    pub member_id: u64,
    /// The member it believes leads; 0 when it knows none.
    pub leader: u64,
    /// The raft term it is in.
    pub raft_term: u64,
}

/// One member of a test cluster.
pub struct Member {
    /// `m0`, `m1`, …
    pub name: String,
    /// Its client URL, `http://127.0.0.1:PORT`.
    pub client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// A cluster of one or more etcd members; everything dies with it.
pub struct Cluster {
    /// The members, in start order.
    pub members: Vec<Member>,
    root: PathBuf,
    initial_cluster: String,
    extra_args: Vec<String>,
    http: ureq::Agent,
}

impl Cluster {
    /// Starts a one-member cluster and waits until it serves.
    pub fn single() -> Self {
        Self::start(1)
    }

    /// Starts an `n`-member cluster and waits until it has a leader.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, &[])
    }

    /// Starts an `n`-member cluster whose members get `extra_args` too.
    pub fn start_with(n: usize, extra_args: &[&str]) -> Self {
        ensure_etcd();
        let root = unique_dir(&scratch_root(), "etcd");
        std::fs::create_dir_all(&root).expect("create scratch folder");
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    client_url: format!("http://127.0.0.1:{}", crate::free_port()),
                    peer_url: format!("http://127.0.0.1:{}", crate::free_port()),
                    data_dir: root.join(&name),
                    log: root.join(format!("{name}.log")),
                    name,
                    child: None,
                    paused: false,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Members are dialled directly, never through an HTTP_PROXY.
            .proxy(None)
            .build()
            .new_agent();
        let mut cluster = Self { members, root, initial_cluster, extra_args, http };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_ready(Duration::from_secs(30));
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let cluster_arg = self.initial_cluster.clone();
        let token =
            self.root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "{} is already running", m.name);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&m.log).expect("log file");
        let child = Command::new(ETCD)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url, "--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url, "--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &cluster_arg, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd");
        m.child = Some(child);
        m.paused = false;
    }

    /// Client URLs of every member, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The endpoints as a JSON array, for plugin configs.
    pub fn endpoints_json(&self) -> String {
        serde_json::to_string(&self.endpoints()).unwrap()
    }

    /// Kills member `i` with SIGKILL and reaps it.
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

    /// Starts member `i` again on its data (it rejoins as the same member).
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    /// SIGSTOP member `i`: its ports accept connections, nothing answers.
    pub fn pause(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(child) = &m.child {
            signal(child.id(), Signal::SIGSTOP);
            m.paused = true;
        }
    }

    /// SIGCONT member `i`.
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

    /// Sends one JSON request to member `i`'s gateway; the answer's body.
    fn post(&self, i: usize, path: &str, body: &str, timeout: Duration) -> Option<Value> {
        let mut response = self
            .http
            .post(format!("{}{path}", self.members[i].client_url))
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("content-type", "application/json")
            .send(body)
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
    }

    /// Member `i`'s status, if it answers within a second.
    pub fn status(&self, i: usize) -> Option<MemberStatus> {
        let answer = self.post(i, "/v3/maintenance/status", "{}", Duration::from_secs(1))?;
        let header = answer.get("header").unwrap_or(&Value::Null);
        Some(MemberStatus {
            member_id: uint(header, "member_id"),
            leader: uint(&answer, "leader"),
            raft_term: uint(&answer, "raftTerm").max(uint(header, "raft_term")),
        })
    }

    /// Index of the member that every running member agrees leads, waiting
    /// up to `within` for one.
    pub fn leader(&self, within: Duration) -> usize {
        let until = Instant::now() + within;
        loop {
            let running: Vec<usize> =
                (0..self.members.len()).filter(|&i| self.is_running(i)).collect();
            let statuses: Vec<Option<MemberStatus>> =
                running.iter().map(|&i| self.status(i)).collect();
            if let Some(Some(first)) = statuses.first() {
                let leader = first.leader;
                let agreed = leader != 0
                    && statuses.iter().all(|s| s.as_ref().is_some_and(|s| s.leader == leader));
                if agreed {
                    if let Some(pos) = statuses
                        .iter()
                        .position(|s| s.as_ref().is_some_and(|s| s.member_id == leader))
                    {
                        return running[pos];
                    }
                }
            }
            assert!(Instant::now() < until, "no agreed leader within {within:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a write through every running member succeeds.
    pub fn wait_ready(&self, within: Duration) {
        // `bext-test/ready` = `1`, base64 as the gateway wants it.
        const PUT: &str = r#"{"key":"YmV4dC10ZXN0L3JlYWR5","value":"MQ=="}"#;
        let until = Instant::now() + within;
        for i in (0..self.members.len()).filter(|&i| self.is_running(i)) {
            while self.post(i, "/v3/kv/put", PUT, Duration::from_secs(1)).is_none() {
                assert!(
                    Instant::now() < until,
                    "etcd member {i} not ready within {within:?}\n{}",
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
            out.push_str(&format!("--- {} ({}) ---\n", m.name, m.client_url));
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

/// The gateway writes 64-bit integers as strings.
fn uint(v: &Value, field: &str) -> u64 {
    match v.get(field) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// A plugin config for these endpoints with a short op timeout.
pub fn config(endpoints_json: &str, op_timeout_ms: u64) -> String {
    format!(
        r#"{{"endpoints":{endpoints_json},"op_timeout_ms":{op_timeout_ms},"connect_timeout_ms":500}}"#
    )
}
