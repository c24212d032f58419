//! Throwaway `redis-server` processes: one server, independent masters for
//! a quorum, or a Redis Cluster.
//!
//! Servers run without persistence unless started with
//! [`Server::start_persistent`] (`appendonly yes`, `appendfsync always`), in
//! which case a [`Server::restart`] brings back every acquisition that was
//! answered before the kill.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{signal, unique_dir};

/// One `redis-server` on a loopback port, with its own folder.
pub struct Server {
    /// The port it listens on (kept across restarts).
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
    password: Option<String>,
    paused: bool,
}

impl Server {
    /// A server without persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server that syncs every write to its append-only file before
    /// answering, so a SIGKILL loses nothing it acknowledged.
    pub fn start_persistent() -> Self {
        Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// A server with extra `redis-server` arguments (they come last, so they
    /// override the defaults: `--appendonly yes` turns persistence on).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(crate::free_port(), extra)
    }

    /// A server without persistence on `port` (which must be free).
    pub fn start_on_port(port: u16) -> Self {
        Self::start_on(port, &[])
    }

    /// A server on `port` with extra arguments. Should another process take
    /// the port before the server binds it, a few other free ports are
    /// tried before giving up.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let password =
            extra.iter().position(|a| a == "--requirepass").and_then(|i| extra.get(i + 1).cloned());
        let dir = unique_dir(&std::env::temp_dir(), &format!("redis-{port}"));
        std::fs::create_dir_all(&dir).expect("create server dir");
        let mut s = Self { port, child: None, dir, extra, password, paused: false };
        for attempt in 0..5 {
            if s.spawn() {
                return s;
            }
            assert!(attempt < 4, "redis-server would not start (is it installed?)");
            s.port = crate::free_port();
        }
        unreachable!()
    }

    /// Starts the process and waits until it answers PING. False when it
    /// exited (port taken).
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let dir = self.dir.display().to_string();
        let mut args: Vec<&str> = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ];
        args.extend(self.extra.iter().map(String::as_str));
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

    /// Whether it answers PING within 200 ms.
    pub fn ping(&self) -> bool {
        self.command_within(&["PING"], Duration::from_millis(200)).is_ok_and(|r| r == "PONG")
    }

    /// Runs one command on a fresh connection (authenticating first when
    /// the server has a password) and returns its reply: a status, an
    /// integer or a bulk string, as text. Replies that are arrays are not
    /// supported. An error reply is an `Err` holding its message.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        self.command_within(args, Duration::from_secs(2))
    }

    fn command_within(&self, args: &[&str], timeout: Duration) -> std::io::Result<String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        if let Some(p) = &self.password {
            writer.write_all(&resp_array(&["AUTH", p]))?;
            read_reply(&mut reader)?;
        }
        writer.write_all(&resp_array(args))?;
        read_reply(&mut reader)
    }

    /// The URL a plugin config uses (with the password, if any).
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The server's folder (append-only file, cluster `nodes.conf`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs (it may be paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                signal(child.id(), Signal::SIGCONT);
                self.paused = false;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed server again on the same port and folder: with no
    /// data, or with what its append-only file kept.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server on port {} still runs", self.port);
        assert!(self.spawn(), "redis-server could not restart on port {}", self.port);
    }

    /// [`kill`](Self::kill), then [`start_again`](Self::start_again).
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// SIGSTOP: the port still accepts TCP connections, nothing answers.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), Signal::SIGSTOP);
            self.paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), Signal::SIGCONT);
            self.paused = false;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn resp_array(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<String> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(std::io::Error::other(rest.to_owned())),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad(format!("bad bulk length {rest:?}")))?;
            if len < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; len as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(len as usize);
            String::from_utf8(buf).map_err(|_| bad("bulk reply is not UTF-8".into()))
        }
        _ => Err(bad(format!("unsupported reply {line:?}"))),
    }
}

/// `n` independent servers without persistence.
pub fn servers(n: usize) -> Vec<Server> {
    (0..n).map(|_| Server::start()).collect()
}

/// A plugin config JSON for one server, with `extra` (`,"key":value`) appended.
pub fn single_config(s: &Server, extra: &str) -> String {
    format!(r#"{{"url":"{}"{extra}}}"#, s.url())
}

/// A plugin config JSON for a quorum over `servers`.
pub fn quorum_config(servers: &[Server], extra: &str) -> String {
    let urls: Vec<String> = servers.iter().map(|s| format!("\"{}\"", s.url())).collect();
    format!(r#"{{"urls":[{}]{extra}}}"#, urls.join(","))
}

/// A Redis Cluster of masters on loopback ports, slots split evenly, no
/// replicas.
pub struct Cluster {
    /// The masters.
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// `n` (at least 3) masters without persistence.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, &[])
    }

    /// `n` masters whose servers also get `extra` (e.g. persistence).
    pub fn start_with(n: usize, extra: &[&str]) -> Self {
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "3000",
        ];
        args.extend_from_slice(extra);
        let nodes: Vec<Server> = (0..n)
            .map(|_| {
                // The cluster bus listens on port + 10000: that must be free too.
                let port = loop {
                    let p = crate::free_port();
                    if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
                    {
                        break p;
                    }
                };
                Server::start_on(port, &args)
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
        cluster.wait_ready(Duration::from_secs(20));
        cluster
    }

    /// Whether every running node reports `cluster_state:ok`.
    pub fn ready(&self) -> bool {
        self.nodes.iter().filter(|s| s.is_running()).all(|s| {
            s.command(&["CLUSTER", "INFO"]).is_ok_and(|info| info.contains("cluster_state:ok"))
        })
    }

    /// Waits until [`ready`](Self::ready), panicking after `within`.
    pub fn wait_ready(&self, within: Duration) {
        let started = Instant::now();
        while !self.ready() {
            assert!(started.elapsed() < within, "cluster not in state ok within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the master serving `slot`, by asking each node.
    pub fn owner_of_slot(&self, slot: u16) -> Option<usize> {
        // `CLUSTER COUNTKEYSINSLOT` answers on any node; `CLUSTER NODES`
        // (one bulk string) names the owner with its port.
        let nodes =
            self.nodes.iter().find(|s| s.is_running())?.command(&["CLUSTER", "NODES"]).ok()?;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let port: u16 = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
            let owns = fields[8..].iter().any(|range| {
                let mut ends = range.split('-').map(|n| n.parse::<u16>());
                match (ends.next(), ends.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false,
                }
            });
            if owns {
                return self.nodes.iter().position(|s| s.port == port);
            }
        }
        None
    }

    /// The hash slot of a Redis key (CRC16 of its hash tag, or of the whole
    /// key when it has none), as the cluster computes it.
    pub fn key_slot(key: &str) -> u16 {
        let b = key.as_bytes();
        let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
            let close = b[open + 1..].iter().position(|&c| c == b'}')?;
            (close > 0).then(|| &b[open + 1..open + 1 + close])
        });
        crc16(tagged.unwrap_or(b)) % 16_384
    }

    /// A plugin config JSON (`cluster_urls`) with `extra` appended.
    pub fn config(&self, extra: &str) -> String {
        let urls: Vec<String> = self.nodes.iter().map(|s| format!("\"{}\"", s.url())).collect();
        format!(r#"{{"cluster_urls":[{}]{extra}}}"#, urls.join(","))
    }
}

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(Cluster::key_slot("foo"), 12_182);
        assert_eq!(Cluster::key_slot("{user1000}.following"), Cluster::key_slot("user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(Cluster::key_slot("{}foo"), crc16(b"{}foo") % 16_384);
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    #[test]
    fn replies_are_parsed() {
        let mut r = &b"+OK\r\n:42\r\n$3\r\nabc\r\n$-1\r\n-ERR no\r\n"[..];
        assert_eq!(read_reply(&mut r).unwrap(), "OK");
        assert_eq!(read_reply(&mut r).unwrap(), "42");
        assert_eq!(read_reply(&mut r).unwrap(), "abc");
        assert_eq!(read_reply(&mut r).unwrap(), "");
        assert_eq!(read_reply(&mut r).unwrap_err().to_string(), "ERR no");
    }
}
