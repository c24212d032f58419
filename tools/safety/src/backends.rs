//! The backends the checker runs, and the faults each one gets.
//!
//! **Adding a backend is one line in [`BACKENDS`]**: its name, the plugin
//! library, the function that starts a deployment (a server, a file, a
//! cluster) and hands back its plugin config, and the faults that make
//! sense for it. The starters below share the throwaway servers of
//! `bext_locking_test_support::servers`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bext_locking_test_support::TempDir;
use bext_locking_test_support::servers::{etcd, nats, pg, redis};

use crate::Fault::{self, Break, Freeze, Restart, Stall, Terminate};

/// A backend as the checker knows it.
pub struct Backend {
    /// The name used on the command line and in the report.
    pub name: &'static str,
    /// The plugin library: `libbext_locking_<plugin>.so`.
    pub plugin: &'static str,
    /// Starts a deployment.
    pub start: Starter,
    /// The faults run besides the fault-free baseline.
    pub faults: &'static [Fault],
}

/// Every backend the checker knows, one line each: name, plugin library,
/// starter, faults besides the baseline.
pub const BACKENDS: &[Backend] = &[
    b("memory", "memory", memory, &[]),
    b("sqlite", "sqlite", sqlite, &[Stall, Break]),
    b("redis", "redis", redis_single, &[Restart, Stall, Freeze, Break]),
    b("redis-quorum", "redis", redis_quorum, &[Restart]),
    b("redis-cluster", "redis", redis_cluster, &[Restart, Stall]),
    b("pg", "pg", pg_shared_lease, &[Terminate, Stall, Freeze, Break]),
    b("pg-restart", "pg", pg_private_lease, &[Restart]),
    b("pg-advisory", "pg", pg_shared_advisory, &[]),
    b("etcd", "etcd", etcd_single, &[Restart, Stall, Freeze, Break]),
    b("etcd-3", "etcd", etcd_three, &[Restart, Stall]),
    b("mysql", "mysql", crate::mysql::shared_lease, &[Terminate, Stall, Freeze, Break]),
    b("mysql-restart", "mysql", crate::mysql::private_lease, &[Restart]),
    b("mysql-get-lock", "mysql", crate::mysql::shared_get_lock, &[]),
    b("nats", "nats", nats_single, &[Restart, Stall, Freeze, Break]),
    b("nats-3", "nats", nats_three, &[Restart, Stall]),
];

type Starter = fn(&Env) -> Result<Box<dyn Deployment>, String>;

/// A server's TCP address, and the plugin config that reaches it through a
/// proxy on the given loopback port instead.
pub type ViaProxy<'a> = (SocketAddr, Box<dyn Fn(u16) -> String + 'a>);

const fn b(
    name: &'static str,
    plugin: &'static str,
    start: Starter,
    faults: &'static [Fault],
) -> Backend {
    Backend { name, plugin, start, faults }
}

/// The backend called `name`.
pub fn find(name: &str) -> Option<&'static Backend> {
    BACKENDS.iter().find(|b| b.name == name)
}

/// What starters may need from the command line.
#[derive(Debug, Clone)]
pub struct Env {
    /// The shared PostgreSQL server (only the plugin's own schema and
    /// sessions are touched).
    pub pg_url: String,
    /// The TTL the hammer workers ask for; a delayed restart waits longer.
    pub ttl_ms: u64,
}

/// What a fault needs to know about the run.
#[derive(Debug, Clone)]
pub struct FaultContext {
    /// The contended key.
    pub key: String,
    /// The hammer workers' TTL.
    pub ttl_ms: u64,
    /// 0 for the first occurrence of the fault in a run, then 1, 2, …
    pub occurrence: usize,
}

/// A running deployment of one backend, torn down on drop.
pub trait Deployment {
    /// The plugin config JSON every instance gets.
    fn config(&self) -> String;
    /// Whether its handles must carry rising fences.
    fn fencing(&self) -> bool;
    /// How many processes can share one lock (the memory backend's
    /// namespaces live in one process).
    fn max_processes(&self) -> Option<u32> {
        None
    }
    /// The one server a holder talks to, for [`Fault::Freeze`]: its TCP
    /// address, and the config that reaches it through a proxy on a
    /// loopback port instead.
    fn via_proxy(&self) -> Option<ViaProxy<'_>> {
        None
    }
    /// Carries out one occurrence of a server-side fault (not
    /// [`Fault::Stall`] or [`Fault::Freeze`], which the runner does for
    /// every backend alike); returns what was done, for the report.
    fn inject(&mut self, fault: Fault, ctx: &FaultContext) -> Result<String, String> {
        let _ = ctx;
        Err(format!("{} does not apply here", fault.name()))
    }
}

/// Runs a server starter, turning its panic (the test-support helpers
/// assert) into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let why = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("could not start {what}: {why}")
    })
}

/// A random-enough suffix for names that concurrent runs must not share.
pub fn unique(prefix: &str) -> String {
    let n =
        bext_locking_test_support::hammer::monotonic_ns() ^ (u64::from(std::process::id()) << 40);
    format!("{prefix}{:x}", n & 0xffff_ffff_ffff)
}

// ---- memory ----------------------------------------------------------------

struct Memory;

impl Deployment for Memory {
    fn config(&self) -> String {
        r#"{"namespace":"bext-lock-safety"}"#.into()
    }
    fn fencing(&self) -> bool {
        true
    }
    fn max_processes(&self) -> Option<u32> {
        Some(1)
    }
}

fn memory(_: &Env) -> Result<Box<dyn Deployment>, String> {
    Ok(Box::new(Memory))
}

// ---- sqlite ----------------------------------------------------------------

struct Sqlite(TempDir);

impl Deployment for Sqlite {
    fn config(&self) -> String {
        serde_json::json!({ "path": self.0.path().join("locks.db") }).to_string()
    }
    fn fencing(&self) -> bool {
        true
    }
}

fn sqlite(_: &Env) -> Result<Box<dyn Deployment>, String> {
    Ok(Box::new(Sqlite(TempDir::new("safety-sqlite"))))
}

// ---- redis -----------------------------------------------------------------

/// How long a killed server stays down before it is started again.
const DOWN: Duration = Duration::from_millis(300);

/// Short enough that a killed server costs little time, long enough for a
/// loaded machine.
const REDIS_TIMEOUTS: &str = r#","op_timeout_ms":1000,"connect_timeout_ms":300"#;

struct RedisSingle(redis::Server);

impl Deployment for RedisSingle {
    fn config(&self) -> String {
        redis::single_config(&self.0, REDIS_TIMEOUTS)
    }
    fn fencing(&self) -> bool {
        true
    }
    fn via_proxy(&self) -> Option<ViaProxy<'_>> {
        let upstream = SocketAddr::from(([127, 0, 0, 1], self.0.port));
        Some((
            upstream,
            Box::new(|port| format!(r#"{{"url":"redis://127.0.0.1:{port}"{REDIS_TIMEOUTS}}}"#)),
        ))
    }
    fn inject(&mut self, fault: Fault, _: &FaultContext) -> Result<String, String> {
        match fault {
            Fault::Restart => {
                self.0.kill();
                std::thread::sleep(DOWN);
                guarded("redis-server", || self.0.start_again())?;
                Ok(format!(
                    "SIGKILL redis-server (appendfsync always), restarted after {} ms",
                    DOWN.as_millis()
                ))
            }
            _ => Err(format!("{} does not apply to redis", fault.name())),
        }
    }
}

fn redis_single(_: &Env) -> Result<Box<dyn Deployment>, String> {
    Ok(Box::new(RedisSingle(guarded("redis-server", redis::Server::start_persistent)?)))
}

struct RedisQuorum {
    nodes: Vec<redis::Server>,
}

impl Deployment for RedisQuorum {
    fn config(&self) -> String {
        redis::quorum_config(&self.nodes, REDIS_TIMEOUTS)
    }
    fn fencing(&self) -> bool {
        false
    }
    fn inject(&mut self, fault: Fault, ctx: &FaultContext) -> Result<String, String> {
        match fault {
            Fault::Restart => {
                // Without persistence a restarted master has forgotten the
                // locks it granted: Redlock is only safe if it stays out
                // until every lock it may have granted has expired.
                let i = ctx.occurrence % self.nodes.len();
                let down = Duration::from_millis(ctx.ttl_ms) + DOWN;
                self.nodes[i].kill();
                std::thread::sleep(down);
                guarded("redis-server", || self.nodes[i].start_again())?;
                Ok(format!(
                    "SIGKILL master {} of 3 (no persistence), restarted empty after {} ms (TTL + {} ms)",
                    i + 1,
                    down.as_millis(),
                    DOWN.as_millis()
                ))
            }
            _ => Err(format!("{} does not apply to redis-quorum", fault.name())),
        }
    }
}

fn redis_quorum(_: &Env) -> Result<Box<dyn Deployment>, String> {
    Ok(Box::new(RedisQuorum { nodes: guarded("redis-server", || redis::servers(3))? }))
}

struct RedisCluster(redis::Cluster);

impl Deployment for RedisCluster {
    fn config(&self) -> String {
        self.0.config(REDIS_TIMEOUTS)
    }
    fn fencing(&self) -> bool {
        true
    }
    fn inject(&mut self, fault: Fault, ctx: &FaultContext) -> Result<String, String> {
        match fault {
            Fault::Restart => {
                // The plugin's key is `bext:lock:{<key>}`: its hash tag picks
                // the slot, and so the master that holds every acquisition.
                let slot = redis::Cluster::key_slot(&format!("bext:lock:{{{}}}", ctx.key));
                let owner = self
                    .0
                    .owner_of_slot(slot)
                    .ok_or_else(|| format!("no master owns slot {slot}"))?;
                let started = std::time::Instant::now();
                self.0.nodes[owner].kill();
                std::thread::sleep(DOWN);
                guarded("redis-server", || self.0.nodes[owner].start_again())?;
                // A restarted master refuses writes ("cluster is down") for
                // about two seconds after it rejoins: wait for that, so the
                // recovery window starts when the cluster serves again.
                guarded("a redis cluster", || self.0.wait_ready(Duration::from_secs(30)))?;
                Ok(format!(
                    "SIGKILL the master owning the key's slot (appendfsync always), restarted after {} ms; \
                     the cluster served again after {} ms",
                    DOWN.as_millis(),
                    started.elapsed().as_millis()
                ))
            }
            _ => Err(format!("{} does not apply to redis-cluster", fault.name())),
        }
    }
}

fn redis_cluster(_: &Env) -> Result<Box<dyn Deployment>, String> {
    let cluster = guarded("a redis cluster", || {
        redis::Cluster::start_with(3, &["--appendonly", "yes", "--appendfsync", "always"])
    })?;
    Ok(Box::new(RedisCluster(cluster)))
}

// ---- pg --------------------------------------------------------------------

/// Rounds of `pg_terminate_backend` per occurrence of the fault.
const TERMINATE_ROUNDS: usize = 5;

/// A PostgreSQL error with the server's message (its `Display` alone says
/// only "db error").
fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Adds a libpq parameter to a URL.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={value}")
}

/// A lock table in a schema of its own on the shared server, reached with
/// an `application_name` of its own, so that terminating sessions and
/// dropping the schema touch nothing else.
struct PgShared {
    admin_url: String,
    name: String,
    mode: &'static str,
}

impl PgShared {
    fn start(env: &Env, mode: &'static str) -> Result<Box<dyn Deployment>, String> {
        let name = unique("bext_safety_");
        // Fail now, with a clear message, if the server is not there.
        postgres::Client::connect(&env.pg_url, postgres::NoTls)
            .map_err(|e| format!("PostgreSQL at {}: {e}", redact(&env.pg_url)))?;
        Ok(Box::new(Self { admin_url: env.pg_url.clone(), name, mode }))
    }
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn pg_config(url: &str, mode: &str, schema: Option<&str>) -> String {
    let mut c = serde_json::json!({
        "url": url,
        "mode": mode,
        "connect_timeout_ms": 2000,
        "statement_timeout_ms": 2000,
    });
    if let Some(s) = schema {
        c["schema"] = s.into();
    }
    c.to_string()
}

impl Deployment for PgShared {
    fn config(&self) -> String {
        let url = with_param(&self.admin_url, "application_name", &self.name);
        let schema = (self.mode == "lease").then_some(self.name.as_str());
        pg_config(&url, self.mode, schema)
    }
    fn fencing(&self) -> bool {
        self.mode == "lease"
    }
    fn via_proxy(&self) -> Option<ViaProxy<'_>> {
        let pg: postgres::Config = self.admin_url.parse().ok()?;
        let host = match pg.get_hosts().first()? {
            postgres::config::Host::Tcp(h) => h.clone(),
            _ => return None,
        };
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let upstream = (host.as_str(), port).to_socket_addrs().ok()?.next()?;
        let config = self.config();
        let from = format!(":{port}/");
        // The URL must name the port to be pointed elsewhere.
        config.contains(&from).then_some(())?;
        Some((upstream, Box::new(move |p| config.replacen(&from, &format!(":{p}/"), 1))))
    }
    fn inject(&mut self, fault: Fault, _: &FaultContext) -> Result<String, String> {
        match fault {
            Fault::Terminate => {
                let mut c = postgres::Client::connect(&self.admin_url, postgres::NoTls)
                    .map_err(|e| format!("connect: {e}"))?;
                let mut ended = Vec::new();
                // Several rounds: later ones end the sessions reopened after
                // the earlier ones, some of them in the middle of a call.
                for round in 0..TERMINATE_ROUNDS {
                    if round > 0 {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    // Signal them all at once, then wait for them to be gone
                    // (`pg_terminate_backend(pid, timeout)` would wait one
                    // session at a time, in 100 ms steps).
                    // The call sits in the select list, so it only runs for
                    // rows the WHERE clause kept (in the WHERE clause the
                    // planner may call it before testing the name).
                    let pids: Vec<i32> = c
                        .query(
                            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE application_name = $1 AND pid <> pg_backend_pid()",
                            &[&self.name],
                        )
                        .map_err(|e| format!("pg_terminate_backend: {}", pg_error(&e)))?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    let until = std::time::Instant::now() + Duration::from_secs(5);
                    loop {
                        let left: i64 = c
                            .query_one(
                                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                                &[&pids],
                            )
                            .map_err(|e| format!("pg_stat_activity: {}", pg_error(&e)))?
                            .get(0);
                        if left == 0 || std::time::Instant::now() > until {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let n = pids.len();
                    ended.push(n.to_string());
                }
                Ok(format!(
                    "pg_terminate_backend on the plugin's sessions (found by their own application_name), \
                     {TERMINATE_ROUNDS} rounds 100 ms apart: {} sessions",
                    ended.join(" + ")
                ))
            }
            _ => Err(format!("{} does not apply to pg", fault.name())),
        }
    }
}

impl Drop for PgShared {
    fn drop(&mut self) {
        if self.mode != "lease" {
            return;
        }
        if let Ok(mut c) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        }
    }
}

fn pg_shared_lease(env: &Env) -> Result<Box<dyn Deployment>, String> {
    PgShared::start(env, "lease")
}

fn pg_shared_advisory(env: &Env) -> Result<Box<dyn Deployment>, String> {
    PgShared::start(env, "advisory")
}

struct PgPrivate(pg::Cluster);

impl Deployment for PgPrivate {
    fn config(&self) -> String {
        pg_config(&self.0.url(), "lease", None)
    }
    fn fencing(&self) -> bool {
        true
    }
    fn inject(&mut self, fault: Fault, _: &FaultContext) -> Result<String, String> {
        match fault {
            Fault::Restart => {
                let started = std::time::Instant::now();
                guarded("pg_ctl stop -m immediate", || self.0.crash_server())?;
                guarded("pg_ctl start", || self.0.start_server())?;
                Ok(format!(
                    "immediate shutdown (a crash: no checkpoint, WAL replayed) of a private cluster, back after {} ms",
                    started.elapsed().as_millis()
                ))
            }
            _ => Err(format!("{} does not apply to pg-restart", fault.name())),
        }
    }
}

fn pg_private_lease(_: &Env) -> Result<Box<dyn Deployment>, String> {
    Ok(Box::new(PgPrivate(guarded("a private PostgreSQL cluster", pg::Cluster::start)?)))
}

// ---- etcd ------------------------------------------------------------------

struct Etcd(etcd::Cluster);

impl Deployment for Etcd {
    fn config(&self) -> String {
        etcd::config(&self.0.endpoints_json(), 2_000)
    }
    fn fencing(&self) -> bool {
        true
    }
    fn via_proxy(&self) -> Option<ViaProxy<'_>> {
        let [endpoint] = self.0.endpoints().try_into().ok()?;
        let authority = endpoint.strip_prefix("http://")?.trim_end_matches('/');
        let upstream = authority.to_socket_addrs().ok()?.next()?;
        Some((
            upstream,
            Box::new(|port| {
                let endpoints = serde_json::json!([format!("http://127.0.0.1:{port}")]);
                etcd::config(&endpoints.to_string(), 2_000)
            }),
        ))
    }
    fn inject(&mut self, fault: Fault, _: &FaultContext) -> Result<String, String> {
        match fault {
            Fault::Restart => {
                let n = self.0.members.len();
                let (i, which) = if n == 1 {
                    (0, "the only member".to_owned())
                } else {
                    let leader =
                        guarded("an etcd leader", || self.0.leader(Duration::from_secs(10)))?;
                    (leader, format!("the leader of {n}"))
                };
                let started = std::time::Instant::now();
                self.0.kill(i);
                std::thread::sleep(DOWN);
                self.0.restart(i);
                // The recovery window starts when the cluster serves again.
                guarded("etcd", || self.0.wait_ready(Duration::from_secs(30)))?;
                Ok(format!(
                    "SIGKILL etcd ({which}), restarted on its data after {} ms, serving again after {} ms",
                    DOWN.as_millis(),
                    started.elapsed().as_millis()
                ))
            }
            _ => Err(format!("{} does not apply to etcd", fault.name())),
        }
    }
}

fn etcd_single(_: &Env) -> Result<Box<dyn Deployment>, String> {
    Ok(Box::new(Etcd(guarded("etcd", etcd::Cluster::single)?)))
}

fn etcd_three(_: &Env) -> Result<Box<dyn Deployment>, String> {
    Ok(Box::new(Etcd(guarded("a 3-member etcd cluster", || etcd::Cluster::start(3))?)))
}

/// A throwaway NATS server or 3-node JetStream cluster; the buckets have
/// one replica (the machine's 2.9 server does not serialize conditional
/// writes on replicated streams, and the backend refuses them there).
struct Nats(nats::Cluster);

/// The bucket prefix of the checker's NATS deployments.
const NATS_PREFIX: &str = "bext_safety";

fn nats_config(servers: &[String]) -> String {
    serde_json::json!({
        "servers": servers,
        "bucket_prefix": NATS_PREFIX,
        "op_timeout_ms": 2_000,
        // A 3-node cluster that has just formed can take over half a
        // second to answer on a loaded machine; a run that cannot connect
        // proves nothing.
        "connect_timeout_ms": 2_000,
    })
    .to_string()
}

impl Deployment for Nats {
    fn config(&self) -> String {
        nats_config(&self.0.urls())
    }
    fn fencing(&self) -> bool {
        true
    }
    fn via_proxy(&self) -> Option<ViaProxy<'_>> {
        let [member] = self.0.members.as_slice() else { return None };
        let upstream = SocketAddr::from(([127, 0, 0, 1], member.port));
        Some((upstream, Box::new(|port| nats_config(&[format!("nats://127.0.0.1:{port}")]))))
    }
    fn inject(&mut self, fault: Fault, _: &FaultContext) -> Result<String, String> {
        match fault {
            Fault::Restart => {
                let n = self.0.members.len();
                let (i, which) = if n == 1 {
                    (0, "the only server".to_owned())
                } else {
                    let stream = format!("KV_{NATS_PREFIX}");
                    let leader = guarded("the lock bucket's leader", || {
                        self.0.stream_leader(&stream, Duration::from_secs(10))
                    })?;
                    (leader, format!("the node of {n} leading the lock bucket"))
                };
                let started = std::time::Instant::now();
                self.0.kill(i);
                std::thread::sleep(DOWN);
                self.0.restart(i);
                guarded("nats", || self.0.wait_ready(Duration::from_secs(30)))?;
                Ok(format!(
                    "SIGKILL nats-server ({which}), restarted on its store after {} ms, serving again after {} ms",
                    DOWN.as_millis(),
                    started.elapsed().as_millis()
                ))
            }
            _ => Err(format!("{} does not apply to nats", fault.name())),
        }
    }
}

fn nats_single(_: &Env) -> Result<Box<dyn Deployment>, String> {
    Ok(Box::new(Nats(guarded("nats-server", || nats::Cluster::start(1))?)))
}

fn nats_three(_: &Env) -> Result<Box<dyn Deployment>, String> {
    Ok(Box::new(Nats(guarded("a 3-node NATS cluster", || nats::Cluster::start(3))?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_faults_listed_once() {
        for (i, b) in BACKENDS.iter().enumerate() {
            assert!(BACKENDS[..i].iter().all(|o| o.name != b.name), "{} twice", b.name);
            for (j, f) in b.faults.iter().enumerate() {
                assert!(!b.faults[..j].contains(f), "{}: {} twice", b.name, f.name());
                assert_ne!(*f, Fault::None, "{}: the baseline is implicit", b.name);
            }
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(with_param("postgres://h/db", "a", "b"), "postgres://h/db?a=b");
        assert_eq!(with_param("postgres://h/db?x=1", "a", "b"), "postgres://h/db?x=1&a=b");
    }
}
