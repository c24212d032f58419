//! Helpers shared by the mysql backend's integration tests: the shared
//! server and a database per test. The throwaway server, for tests that
//! restart one, is `bext_locking_test_support::servers::mysql::Server`; the
//! TCP proxy that freezes a connection is `bext_locking_test_support::proxy`.

#![allow(dead_code)]

use bext_locking::LockingPlugin;
use mysql::prelude::Queryable;

/// The shared test server: `BEXT_MYSQL_URL`, or the machine's local one.
pub fn base_url() -> String {
    bext_locking_test_support::mysql_url()
}

/// `base` pointed at database `db`.
pub fn with_db(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base, String::new()),
    };
    let authority_end = head["mysql://".len()..].find('/').map(|i| i + "mysql://".len());
    let root = authority_end.map_or(head, |i| &head[..i]);
    format!("{root}/{db}{query}")
}

/// A plain client for looking at and tampering with the server.
pub fn admin(url: &str) -> mysql::Conn {
    let opts =
        mysql::OptsBuilder::from_opts(mysql::Opts::from_url(url).unwrap()).prefer_socket(false);
    mysql::Conn::new(opts).unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// Whether a plain session can take the named lock of `key` (and gives it
/// back at once).
pub fn free_on_server(db: &mut mysql::Conn, key: &str) -> bool {
    let name = bext_locking_mysql::keyhash::lock_name(key);
    let got: Option<i64> = db.exec_first("SELECT GET_LOCK(?, 0)", (&name,)).unwrap().flatten();
    if got == Some(1) {
        db.exec_drop("SELECT RELEASE_LOCK(?)", (&name,)).unwrap();
    }
    got == Some(1)
}

/// A short random suffix.
pub fn rand() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// One test's own database on the shared server, dropped at the end. Every
/// session of the test's instances is in it, which is how
/// [`kill_all`](Self::kill_all) finds them.
pub struct Scratch {
    pub db: String,
    pub url: String,
    base: String,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        Self::on(&base_url(), name)
    }

    pub fn on(base: &str, name: &str) -> Self {
        let db = format!("bext_{name}_{}", rand());
        admin(base).query_drop(format!("CREATE DATABASE `{db}`")).unwrap();
        Self { url: with_db(base, &db), db, base: base.to_owned() }
    }

    /// A config for `mode` in this test's database, with short timeouts.
    pub fn config(&self, mode: &str) -> String {
        self.config_with(mode, serde_json::json!({}))
    }

    /// [`config`](Self::config) with more or different keys.
    pub fn config_with(&self, mode: &str, extra: serde_json::Value) -> String {
        let mut c = serde_json::json!({
            "url": self.url,
            "mode": mode,
            "connect_timeout_ms": 2000,
            "statement_timeout_ms": 2000,
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c.to_string()
    }

    /// An in-process instance.
    pub fn plugin(&self, mode: &str) -> bext_locking_mysql::MysqlPlugin {
        bext_locking_mysql::MysqlPlugin::from_json(&self.config(mode)).unwrap()
    }

    /// The ids of this test's instances' sessions.
    pub fn sessions(&self) -> Vec<u64> {
        let mut c = admin(&self.base);
        c.exec(
            "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
            (&self.db,),
        )
        .unwrap()
    }

    /// Kills every server session of this test's instances; how many.
    pub fn kill_all(&self) -> usize {
        let mut c = admin(&self.base);
        let ids: Vec<u64> = c
            .exec(
                "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
                (&self.db,),
            )
            .unwrap();
        let mut killed = 0;
        for id in ids {
            // A session may end by itself meanwhile.
            if c.query_drop(format!("KILL {id}")).is_ok() {
                killed += 1;
            }
        }
        killed
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let opts = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(&self.base).unwrap())
            .prefer_socket(false);
        if let Ok(mut c) = mysql::Conn::new(opts) {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.db));
        }
    }
}

/// Tries to acquire `key` until `within` runs out; the time it took.
pub fn acquire_within(
    p: &dyn LockingPlugin,
    key: &str,
    ttl_ms: u64,
    within: std::time::Duration,
) -> Option<(bext_locking::LockHandle, std::time::Duration)> {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        match p.try_lock(key, ttl_ms) {
            Ok(Some(h)) => return Some((h, started.elapsed())),
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(e) => panic!("try_lock({key:?}) failed: {e}"),
        }
    }
    None
}
