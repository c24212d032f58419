//! MySQL/MariaDB backend: pairs through the `.so` against the same
//! prepared SQL issued with the sync `mysql` crate on the same number of
//! connections, in both modes.

use bext_locking_mysql::Exported;
use bext_locking_mysql::keyhash::lock_name;
use mysql::prelude::Queryable;
use mysql::{Conn, Statement};

use bext_locking_bench::measure::{Entry, Kind, Lap, PerThread, Settings, TTL_MS, Tally, measure};
use bext_locking_bench::plugin::{self, Pair};
use bext_locking_bench::report::{Report, table};

/// The server: `BEXT_MYSQL_URL`, else the machine's test database.
fn server_url() -> String {
    bext_locking_test_support::mysql_url()
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    bext_locking::redact::redact_url(url, bext_locking::redact::LoneUser::Name)
}

/// `url` pointed at database `db`.
fn with_db(url: &str, db: &str) -> String {
    let (head, query) = url.split_once('?').map_or((url, ""), |(h, q)| (h, q));
    let start = head.find("://").map_or(0, |i| i + 3);
    let root = head[start..].find('/').map_or(head, |i| &head[..start + i]);
    if query.is_empty() { format!("{root}/{db}") } else { format!("{root}/{db}?{query}") }
}

fn connect(url: &str) -> Result<Conn, String> {
    let opts = mysql::Opts::from_url(url).map_err(|e| format!("bad URL: {e}"))?;
    // Over TCP like the plugin (the driver would switch to the Unix socket).
    let opts = mysql::OptsBuilder::from_opts(opts).prefer_socket(false).tcp_nodelay(true);
    Conn::new(opts).map_err(|e| format!("connect: {e}"))
}

/// A connection with the plugin's session setup run and a mode's
/// statements prepared, as each pooled connection of the plugin has them.
struct Raw {
    conn: Conn,
    statements: Vec<Statement>,
}

impl Raw {
    fn connect(url: &str, sql: &[String]) -> Result<Self, String> {
        let mut conn = connect(url)?;
        for q in bext_locking_mysql::sql::session_setup(5_000) {
            conn.query_drop(q).map_err(|e| format!("session setup: {e}"))?;
        }
        let statements = sql
            .iter()
            .map(|q| conn.prep(q))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("prepare: {e}"))?;
        Ok(Self { conn, statements })
    }

    /// Lease mode's acquire (the fence from the reply) and release.
    fn lease_pair(&mut self, key: &str) -> Result<(), String> {
        let id = uuid::Uuid::new_v4().as_bytes().to_vec();
        let ttl_us = TTL_MS * 1000;
        let owner: Option<Vec<u8>> = None;
        let params: Vec<mysql::Value> = vec![
            key.as_bytes().into(),
            id.clone().into(),
            owner.clone().into(),
            ttl_us.into(),
            id.clone().into(),
            owner.into(),
            id.clone().into(),
            id.clone().into(),
            id.clone().into(),
            id.clone().into(),
            id.clone().into(),
            ttl_us.into(),
        ];
        self.conn.exec_drop(&self.statements[0], params).map_err(|e| e.to_string())?;
        let _fence = match self.conn.affected_rows() {
            0 => return Err(format!("unexpected contention on `{key}`")),
            1 => 1,
            _ => self.conn.last_insert_id(),
        };
        self.conn
            .exec_drop(&self.statements[2], (key.as_bytes(), &id))
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// get_lock mode's try-lock and release of the key's name.
    fn get_lock_pair(&mut self, name: &str) -> Result<(), String> {
        let got: Option<Option<i64>> =
            self.conn.exec_first(&self.statements[0], (name,)).map_err(|e| e.to_string())?;
        if got != Some(Some(1)) {
            return Err("unexpected contention".into());
        }
        let _: Option<Option<i64>> =
            self.conn.exec_first(&self.statements[1], (name,)).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Drops the benchmark's database when the section ends, however it ends.
struct Database {
    url: String,
    name: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut c) = connect(&self.url) {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}

/// Runs the MySQL section.
pub fn run(settings: &Settings, report: &mut Report) -> Result<(), String> {
    let base = server_url();
    let mut admin =
        connect(&base).map_err(|e| format!("MySQL at {} is unreachable: {e}", redact(&base)))?;
    let version: String =
        admin.query_first("SELECT VERSION()").map_err(|e| e.to_string())?.unwrap_or_default();
    let flush: u64 = admin
        .query_first("SELECT @@innodb_flush_log_at_trx_commit")
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let lib = plugin::load("mysql")?;
    let db = Database {
        url: base.clone(),
        name: format!("bext_bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    };
    admin.query_drop(format!("CREATE DATABASE `{}`", db.name)).map_err(|e| e.to_string())?;
    let url = with_db(&base, &db.name);

    let mut all: Vec<(&str, Vec<Vec<Tally>>)> = Vec::new();
    for mode in ["lease", "get_lock"] {
        let sql = if mode == "lease" {
            bext_locking_mysql::sql::lease("`bext_locks`")
        } else {
            bext_locking_mysql::sql::get_lock()
        };
        let mut groups = Vec::new();
        for threads in [1, 8] {
            let config =
                serde_json::json!({ "url": url, "mode": mode, "pool_size": threads }).to_string();
            // The plugin creates the table; the raw clients prepare against it.
            let pair = Pair::create::<Exported>(&lib, &config)?;
            let raw = PerThread::new(threads, |_| Raw::connect(&url, &sql))?;
            let mut sides = pair.sides(&format!("bench/mysql/{mode}/{threads}"));
            sides.push(Entry::new("raw mysql", Kind::Raw, |t, lap: &mut Lap| {
                let key = format!("bench/mysql/{mode}/{threads}/raw/{t}");
                let name = lock_name(&key);
                raw.with(t, |r| {
                    if mode == "lease" {
                        lap.run(|| r.lease_pair(&key));
                    } else {
                        lap.run(|| r.get_lock_pair(&name));
                    }
                });
            }));
            groups.push(measure(&format!("mysql {mode}"), threads, &sides, settings));
        }
        all.push((mode, groups));
    }
    drop(db);

    let mut body = format!(
        "The machine's MySQL/MariaDB {version} at `{}`, in a database of the run's own. The \
         plugin gets `pool_size` = threads; the raw side is one sync `mysql` client per thread \
         with the plugin's session setup and its own statements prepared \
         (`bext_locking_mysql::sql`). The server runs with \
         `innodb_flush_log_at_trx_commit={flush}` (a global setting, so both sides alike): \
         with 1, every lease commit waits for the redo log's flush to disk.\n",
        redact(&base)
    );
    for (mode, groups) in &all {
        body.push_str(&format!("\n### {mode} mode\n\n"));
        let refs: Vec<&[Tally]> = groups.iter().map(Vec::as_slice).collect();
        body.push_str(&table(&refs, Kind::Raw, "threads"));
        for (g, threads) in groups.iter().zip([1, 8]) {
            report.chart_group(
                format!("mysql {mode}, {threads} thread(s)"),
                g,
                Kind::Raw,
                Some(0.95),
            );
            report.so_vs_raw_target(
                "mysql",
                format!("`.so` / mysql crate, {mode}, {threads} thread(s)"),
                g,
                0.95,
                if *mode == "lease" {
                    "a pool checkout and the C boundary's JSON (the in-process row shows which part is the boundary)"
                } else {
                    "a pool checkout, the TTL bookkeeping of held locks and the C boundary's JSON (the in-process row shows which part is the boundary)"
                },
            );
        }
    }
    report.section("mysql", body);
    Ok(())
}

fn main() {
    bext_locking_bench::section_main("mysql", run);
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_and_databases_swapped() {
        assert_eq!(super::redact("mysql://u:secret@h:3306/db"), "mysql://u:***@h:3306/db");
        assert_eq!(super::with_db("mysql://u@h:3306/test", "x"), "mysql://u@h:3306/x");
    }
}
