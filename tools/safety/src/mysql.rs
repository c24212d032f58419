//! The mysql backend's deployments: the shared server (a database of the
//! run's own, whose sessions are killed with `KILL`) and a throwaway
//! `mariadbd` that is crashed and restarted. Listed in
//! [`BACKENDS`](crate::backends::BACKENDS).

use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use bext_locking_test_support::servers::mysql::Server;
use mysql::prelude::Queryable;

use crate::Fault;
use crate::backends::{Deployment, Env, FaultContext, ViaProxy, unique};

/// Rounds of `KILL` per occurrence of the fault.
const KILL_ROUNDS: usize = 5;

/// How long a crashed server stays down before it is started again.
const DOWN: Duration = Duration::from_millis(300);

fn connect(url: &str) -> Result<mysql::Conn, String> {
    let opts = mysql::Opts::from_url(url).map_err(|e| format!("bad MySQL URL: {e}"))?;
    let opts = mysql::OptsBuilder::from_opts(opts)
        .prefer_socket(false)
        .tcp_connect_timeout(Some(Duration::from_secs(5)));
    mysql::Conn::new(opts).map_err(|e| format!("MySQL: {e}"))
}

/// `url` pointed at database `db`.
fn with_db(url: &str, db: &str) -> String {
    let (head, query) = url.split_once('?').map_or((url, ""), |(h, q)| (h, q));
    let start = head.find("://").map_or(0, |i| i + 3);
    let root = head[start..].find('/').map_or(head, |i| &head[..start + i]);
    if query.is_empty() { format!("{root}/{db}") } else { format!("{root}/{db}?{query}") }
}

fn config(url: &str, mode: &str) -> String {
    serde_json::json!({
        "url": url,
        "mode": mode,
        "connect_timeout_ms": 2000,
        "statement_timeout_ms": 2000,
    })
    .to_string()
}

/// A database of the run's own on the shared server: the lock table lives
/// there, and every session of the plugin's instances names it, which is
/// how `KILL` finds exactly those sessions.
pub(crate) struct MysqlShared {
    admin_url: String,
    db: String,
    mode: &'static str,
}

impl MysqlShared {
    fn start(mode: &'static str) -> Result<Box<dyn Deployment>, String> {
        let admin_url = bext_locking_test_support::mysql_url();
        let db = unique("bext_safety_");
        connect(&admin_url)?
            .query_drop(format!("CREATE DATABASE `{db}`"))
            .map_err(|e| format!("CREATE DATABASE: {e}"))?;
        Ok(Box::new(Self { admin_url, db, mode }))
    }
}

impl Deployment for MysqlShared {
    fn config(&self) -> String {
        config(&with_db(&self.admin_url, &self.db), self.mode)
    }
    fn fencing(&self) -> bool {
        self.mode == "lease"
    }
    fn via_proxy(&self) -> Option<ViaProxy<'_>> {
        let opts = mysql::Opts::from_url(&self.admin_url).ok()?;
        let port = opts.get_tcp_port();
        let upstream = (opts.get_ip_or_hostname().as_ref(), port).to_socket_addrs().ok()?.next()?;
        let config = self.config();
        let from = format!(":{port}/");
        // The URL must name the port to be pointed elsewhere.
        config.contains(&from).then_some(())?;
        Some((upstream, Box::new(move |p| config.replacen(&from, &format!(":{p}/"), 1))))
    }
    fn inject(&mut self, fault: Fault, _: &FaultContext) -> Result<String, String> {
        match fault {
            Fault::Terminate => {
                let mut c = connect(&self.admin_url)?;
                let mut ended = Vec::new();
                // Several rounds: later ones end the sessions reopened after
                // the earlier ones, some of them in the middle of a call.
                for round in 0..KILL_ROUNDS {
                    if round > 0 {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let ids: Vec<u64> = c
                        .exec(
                            "SELECT id FROM information_schema.processlist \
                              WHERE db = ? AND id <> CONNECTION_ID()",
                            (&self.db,),
                        )
                        .map_err(|e| format!("processlist: {e}"))?;
                    let mut n = 0;
                    for id in ids {
                        // A session may have ended by itself meanwhile.
                        if c.query_drop(format!("KILL {id}")).is_ok() {
                            n += 1;
                        }
                    }
                    ended.push(n.to_string());
                }
                Ok(format!(
                    "KILL on the plugin's sessions (found by their own database), {KILL_ROUNDS} \
                     rounds 100 ms apart: {} sessions",
                    ended.join(" + ")
                ))
            }
            _ => Err(format!("{} does not apply to mysql", fault.name())),
        }
    }
}

impl Drop for MysqlShared {
    fn drop(&mut self) {
        if let Ok(mut c) = connect(&self.admin_url) {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.db));
        }
    }
}

/// The shared server, lease mode.
pub fn shared_lease(_: &Env) -> Result<Box<dyn Deployment>, String> {
    MysqlShared::start("lease")
}

/// The shared server, get_lock mode.
pub fn shared_get_lock(_: &Env) -> Result<Box<dyn Deployment>, String> {
    MysqlShared::start("get_lock")
}

/// A throwaway MariaDB server, lease mode.
pub(crate) struct MysqlPrivate(Server);

impl Deployment for MysqlPrivate {
    fn config(&self) -> String {
        config(&self.0.url("bext"), "lease")
    }
    fn fencing(&self) -> bool {
        true
    }
    fn inject(&mut self, fault: Fault, _: &FaultContext) -> Result<String, String> {
        match fault {
            Fault::Restart => {
                let started = Instant::now();
                self.0.crash_server();
                std::thread::sleep(DOWN);
                guarded(|| self.0.start_server())?;
                Ok(format!(
                    "SIGKILL mariadbd (a crash; innodb_flush_log_at_trx_commit=2), restarted on \
                     its data after {} ms, serving again after {} ms",
                    DOWN.as_millis(),
                    started.elapsed().as_millis()
                ))
            }
            _ => Err(format!("{} does not apply to mysql-restart", fault.name())),
        }
    }
}

fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        let why = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("could not start a private MariaDB server: {why}")
    })
}

/// A throwaway MariaDB server, lease mode, crashed and restarted.
pub fn private_lease(_: &Env) -> Result<Box<dyn Deployment>, String> {
    let server = guarded(Server::start)?;
    connect(&server.url(""))?
        .query_drop("CREATE DATABASE bext")
        .map_err(|e| format!("CREATE DATABASE: {e}"))?;
    Ok(Box::new(MysqlPrivate(server)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_pointed_at_the_run_database() {
        assert_eq!(with_db("mysql://u@h:3306/test", "x"), "mysql://u@h:3306/x");
        assert_eq!(with_db("mysql://u@h:3306", "x"), "mysql://u@h:3306/x");
        assert_eq!(with_db("mysql://u@h/test?a=b", "x"), "mysql://u@h/x?a=b");
    }
}
