//! Lease mode: one row per key in a lock table, with an expiry computed by
//! the database server's clock and a fence that rises with every
//! acquisition.
//!
//! Rows are never deleted: release moves the expiry to "now", so the next
//! acquisition of the key finds the row and raises its fence.

use std::time::Instant;

use bext_locking::{LockHandle, PluginError};
use uuid::Uuid;

use crate::config::Settings;
use crate::conn::Conn;
use crate::connections::Pool;
use crate::fail::Fail;

const ACQUIRE: usize = 0;
const RENEW: usize = 1;
const RELEASE: usize = 2;

/// The statements of lease mode, in the order of the constants above.
///
/// Acquire inserts the row or takes over an expired one in one statement;
/// `ON CONFLICT` serialises racing acquirers on the key's index entry, so
/// exactly one of them gets a row back. The `lock_id` match makes a retry of
/// the same attempt (after a lost connection) idempotent. Each statement
/// reads the server's clock once, so a lease lasts exactly its TTL, and is
/// compared with that same instant.
pub(crate) fn statements(table: &str) -> Vec<String> {
    const NOW: &str = "(SELECT clock_timestamp() AS t) AS now";
    const TTL: &str = "$3::bigint * interval '1 millisecond'";
    vec![
        format!(
            "INSERT INTO {table} AS l (key, lock_id, fence, acquired_at, expires_at) \
             SELECT $1, $2, 1, now.t, now.t + {TTL} FROM {NOW} \
             ON CONFLICT (key) DO UPDATE \
                SET lock_id = EXCLUDED.lock_id, fence = l.fence + 1, \
                    acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at \
              WHERE l.expires_at <= EXCLUDED.acquired_at OR l.lock_id = EXCLUDED.lock_id \
             RETURNING l.fence"
        ),
        format!(
            "UPDATE {table} AS l SET expires_at = now.t + {TTL} FROM {NOW} \
              WHERE l.key = $1 AND l.lock_id = $2 AND l.expires_at > now.t"
        ),
        format!(
            "UPDATE {table} AS l SET expires_at = now.t FROM {NOW} \
              WHERE l.key = $1 AND l.lock_id = $2 AND l.expires_at > now.t"
        ),
    ]
}

/// The lock table's layout; `key` is `bytea` so that any key (NUL
/// included) is stored byte for byte whatever the database's encoding.
pub(crate) fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
            key bytea PRIMARY KEY, \
            lock_id uuid NOT NULL, \
            fence bigint NOT NULL, \
            acquired_at timestamptz NOT NULL, \
            expires_at timestamptz NOT NULL)"
    )
}

/// A lease-mode instance.
pub(crate) struct Lease {
    pool: Pool,
}

impl Lease {
    pub fn open(settings: Settings) -> Result<Self, PluginError> {
        if settings.create_table {
            ensure_table(&settings, Instant::now() + settings.call_budget())?;
        }
        let statements = statements(&settings.table.quoted);
        let pool = Pool::new(settings, statements);
        // Opening one connection now prepares the statements, which proves
        // the table exists and has the expected columns.
        let conn = pool.get(pool.deadline()).map_err(|e| {
            let s = pool.settings();
            let mut message = format!("pg ({}): {}", s.target, e.message);
            if e.message.contains("42P01") {
                message.push_str(&format!(
                    "; the lock table {} does not exist: create it (see docs/backends/pg.md) or \
                     set \"create_table\": true",
                    s.table.quoted
                ));
            }
            PluginError::backend(s.secrets.scrub(&message))
        })?;
        pool.put(conn);
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, Fail> {
        let lock_id = Uuid::new_v4();
        let ttl = ttl_ms as i64;
        let deadline = self.pool.deadline();
        let row = self.pool.with_conn(deadline, |c: &mut Conn| {
            c.query_opt(ACQUIRE, &[&key.as_bytes(), &lock_id, &ttl], deadline)
        })?;
        Ok(row.map(|row| LockHandle {
            key: key.to_owned(),
            lock_id: lock_id.to_string(),
            ttl_ms,
            fence: Some(row.get::<_, i64>(0) as u64),
        }))
    }

    /// `Ok(false)`: the lease is no longer ours.
    pub fn renew(&self, handle: &LockHandle) -> Result<bool, Fail> {
        let Ok(lock_id) = Uuid::parse_str(&handle.lock_id) else { return Ok(false) };
        let ttl = handle.ttl_ms as i64;
        let key = handle.key.as_bytes();
        let deadline = self.pool.deadline();
        let n = self
            .pool
            .with_conn(deadline, |c| c.execute(RENEW, &[&key, &lock_id, &ttl], deadline))?;
        Ok(n == 1)
    }

    pub fn release(&self, handle: &LockHandle) -> Result<(), Fail> {
        let Ok(lock_id) = Uuid::parse_str(&handle.lock_id) else { return Ok(()) };
        let key = handle.key.as_bytes();
        let deadline = self.pool.deadline();
        self.pool.with_conn(deadline, |c| c.execute(RELEASE, &[&key, &lock_id], deadline))?;
        Ok(())
    }

    pub fn cleanup(&self) {
        self.pool.close();
    }
}

/// Creates the schema and table when missing, on a connection of its own.
///
/// Creators racing on a fresh database are serialised by a transaction-level
/// advisory lock (two `CREATE TABLE IF NOT EXISTS` can otherwise collide on
/// the catalog), and nothing is created that already exists, so a role
/// without CREATE rights works against a table made for it.
fn ensure_table(s: &Settings, deadline: Instant) -> Result<(), PluginError> {
    let fail = |what: &str, e: Fail| {
        PluginError::backend(s.secrets.scrub(&format!("pg ({}): {what}: {}", s.target, e.message)))
    };
    // `Conn::open` already says what failed ("cannot connect: ...",
    // "connecting took longer than ..."): no second prefix.
    let mut conn = Conn::open(s, &[], deadline).map_err(|e| {
        PluginError::backend(s.secrets.scrub(&format!("pg ({}): {}", s.target, e.message)))
    })?;
    // The two-integer form lives in a key space of its own, so no lock of
    // advisory mode (one bigint) can ever block table creation.
    let ddl = crate::keyhash::advisory_key("bext-locking-pg/create-table");
    let (ddl_hi, ddl_lo) = ((ddl >> 32) as i32, ddl as i32);
    let table = &s.table.quoted;
    let result = (|| {
        conn.query_sql("BEGIN", &[], deadline)?;
        conn.query_sql("SELECT pg_advisory_xact_lock($1, $2)", &[&ddl_hi, &ddl_lo], deadline)?;
        if let Some(schema) = &s.table.schema {
            let present = conn.query_sql(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                &[schema],
                deadline,
            )?;
            if present.is_empty() {
                conn.query_sql(
                    &format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""),
                    &[],
                    deadline,
                )?;
            }
        }
        let present = conn.query_sql("SELECT to_regclass($1) IS NOT NULL", &[table], deadline)?;
        if !present.first().is_some_and(|r| r.get::<_, bool>(0)) {
            conn.query_sql(&create_table_sql(table), &[], deadline)?;
        }
        conn.query_sql("COMMIT", &[], deadline)?;
        Ok(())
    })();
    conn.close(deadline);
    result.map_err(|e| fail(&format!("cannot create the lock table {table}"), e))
}
