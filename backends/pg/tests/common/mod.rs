//! Helpers shared by the pg backend's integration tests: the shared server
//! and a schema per test. Throwaway clusters, for tests that stop servers,
//! are `bext_locking_test_support::servers::pg::Cluster`; the TCP proxy
//! that freezes a connection is `bext_locking_test_support::proxy`.

#![allow(dead_code)]

use bext_locking::LockingPlugin;

/// The shared test server: `BEXT_PG_URL`, or the machine's local server.
pub fn base_url() -> String {
    bext_locking_test_support::pg_url()
}

/// Adds a libpq parameter to a URL or key=value connection string.
pub fn with_param(url: &str, name: &str, value: &str) -> String {
    if !url.contains("://") {
        format!("{url} {name}={value}")
    } else if url.contains('?') {
        format!("{url}&{name}={value}")
    } else {
        format!("{url}?{name}={value}")
    }
}

/// A plain client for looking at and tampering with the server.
pub fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// Whether a plain session can take the advisory lock of `key` (and gives
/// it back at once).
pub fn free_on_server(db: &mut postgres::Client, key: &str) -> bool {
    let key = bext_locking_pg::keyhash::advisory_key(key);
    let got: bool = db.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).unwrap().get(0);
    if got {
        db.execute("SELECT pg_advisory_unlock($1)", &[&key]).unwrap();
    }
    got
}

/// A short random suffix.
pub fn rand() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// One test's own schema and `application_name` on the shared server,
/// dropped at the end.
pub struct Scratch {
    pub schema: String,
    pub app: String,
    pub url: String,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        Self::on(&base_url(), name)
    }

    pub fn on(base: &str, name: &str) -> Self {
        let schema = format!("bext_{name}_{}", rand());
        let url = with_param(base, "application_name", &schema);
        Self { app: schema.clone(), schema, url }
    }

    /// A config for `mode` in this test's schema, with short timeouts.
    pub fn config(&self, mode: &str) -> String {
        self.config_with(mode, serde_json::json!({}))
    }

    /// [`config`](Self::config) with more or different keys.
    pub fn config_with(&self, mode: &str, extra: serde_json::Value) -> String {
        let mut c = serde_json::json!({
            "url": self.url,
            "mode": mode,
            "schema": self.schema,
            "connect_timeout_ms": 2000,
            "statement_timeout_ms": 2000,
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c.to_string()
    }

    /// An in-process instance.
    pub fn plugin(&self, mode: &str) -> bext_locking_pg::PgPlugin {
        bext_locking_pg::PgPlugin::from_json(&self.config(mode)).unwrap()
    }

    /// Kills every server session of this test's instances; returns how many.
    pub fn terminate_all(&self) -> i64 {
        let mut c = admin(&base_url());
        c.query_one(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&self.app],
        )
        .unwrap()
        .get(0)
    }

    /// How many server sessions this test's instances have open.
    pub fn sessions(&self) -> i64 {
        let mut c = admin(&base_url());
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&self.app],
        )
        .unwrap()
        .get(0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&base_url(), postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema));
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
