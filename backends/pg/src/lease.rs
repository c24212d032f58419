//! Lease mode: one row per key in a lock table, with an expiry computed by
//! the database server's clock and a fence that rises with every
//! acquisition.
//!
//! Rows are never deleted: release moves the expiry to "now", so the next
//! acquisition of the key finds the row and raises its fence.
//!
//! Each row also keeps its holder's `owner` (when the table has the column:
//! tables made before it gain it when `create_table` is on) and its
//! acquisition time, for `inspect`. A forced release is one `UPDATE` that
//! ends the lease *and* replaces the row's `lock_id`, so a renew of the
//! broken holder that was waiting on the row lock re-checks the row, finds
//! another `lock_id` and touches nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bext_locking::{Acquired, ForceReleased, LockHandle, LockInfo, PluginError, Wait};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::Settings;
use crate::conn::Conn;
use crate::connections::Pool;
use crate::deadlines::Watch;
use crate::fail::{Fail, FailKind};

const ACQUIRE: usize = 0;
const RENEW: usize = 1;
const RELEASE: usize = 2;
const INSPECT: usize = 3;
const FORCE_RELEASE: usize = 4;
const RENEW_FOR: usize = 5;
const WAIT_ACQUIRE: usize = 6;

/// How many times one wait replaces its session after losing it.
const MAX_LOST: u32 = 3;

/// How long a waiter's dedicated connection may take to say goodbye.
const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// The `LISTEN` channel of `key` in lock table `table` (an already quoted
/// name): `bext_` and 40 hex digits of the SHA-256 of the table's name, a
/// NUL and the key, so any key (of any length or bytes) fits an identifier
/// and tables do not wake each other's waiters. [`channel_sql`] computes
/// the same in SQL.
pub(crate) fn channel(table: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(table.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("bext_{hex}")
}

/// [`channel`] in SQL, for the key bytes in `key_expr`; `table` is a
/// checked, quoted identifier, so it can sit in a string literal.
fn channel_sql(table: &str, key_expr: &str) -> String {
    format!(
        "'bext_' || left(encode(sha256(convert_to('{table}', 'UTF8') || '\\x00'::bytea || \
         {key_expr}), 'hex'), 40)"
    )
}

/// The statements of lease mode, in the order of the constants above.
///
/// Acquire inserts the row or takes over an expired one in one statement;
/// `ON CONFLICT` serialises racing acquirers on the key's index entry, so
/// exactly one of them gets a row back. The `lock_id` match makes a retry of
/// the same attempt (after a lost connection) idempotent. Each statement
/// reads the server's clock once, so a lease lasts exactly its TTL, and is
/// compared with that same instant.
///
/// With `owner_column`, acquire takes the owner as `$4` (NULL for none) and
/// always writes it, so a holder without one never shows the last one's.
/// Inspect (`$1` key) returns fence, owner, milliseconds left (rounded up)
/// and milliseconds held, by the server's clock, for a live lease only.
/// Force release (`$1` key, `$2` the fence it must have or NULL, `$3` a
/// fresh lock id) returns the broken holder's fence. A row already
/// carrying `$3` was broken by this very call (a retry after a lost
/// connection), so the retry reports what the first run did.
///
/// Release, force release and renew-for (`$1`..`$3` as renew, setting the
/// remaining time once) notify the key's [`channel`] when they change the
/// row, in their own statement, so the notification is delivered exactly
/// when the change commits and waiters (which `LISTEN` on it) try again.
pub(crate) fn statements(table: &str, owner_column: bool) -> Vec<String> {
    const NOW: &str = "(SELECT clock_timestamp() AS t) AS now";
    const TTL: &str = "$3::bigint * interval '1 millisecond'";
    let notify = channel_sql(table, "key");
    let (owner_col, owner_val, owner_set, owner_read, owner_clear) = if owner_column {
        (", owner", ", $4::text", ", owner = EXCLUDED.owner", "l.owner", ", owner = NULL")
    } else {
        ("", "", "", "NULL::text", "")
    };
    let acquire = format!(
        "INSERT INTO {table} AS l (key, lock_id, fence, acquired_at, expires_at{owner_col}) \
         SELECT $1, $2, 1, now.t, now.t + {TTL}{owner_val} FROM {NOW} \
         ON CONFLICT (key) DO UPDATE \
            SET lock_id = EXCLUDED.lock_id, fence = l.fence + 1, \
                acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at{owner_set} \
          WHERE l.expires_at <= EXCLUDED.acquired_at OR l.lock_id = EXCLUDED.lock_id \
         RETURNING l.fence"
    );
    // The waiter's acquire: the same, and when it takes nothing, the
    // holder's milliseconds left (rounded up) from the row as the statement
    // found it, so a contended waiter learns when to wake in the same round
    // trip. That row may be older than the one `ON CONFLICT` saw (a renew
    // committed meanwhile): the waiter then wakes early and tries again.
    // No row at all (a first holder's insert it could not see): try again.
    let wait_acquire = format!(
        "WITH a AS ({acquire}) \
         SELECT a.fence, NULL::bigint FROM a \
         UNION ALL \
         SELECT NULL::bigint, ceil(extract(epoch FROM w.expires_at - now.t) * 1000)::bigint \
           FROM {table} AS w, {NOW} \
          WHERE w.key = $1 AND NOT EXISTS (SELECT 1 FROM a)"
    );
    vec![
        acquire,
        format!(
            "UPDATE {table} AS l SET expires_at = now.t + {TTL} FROM {NOW} \
              WHERE l.key = $1 AND l.lock_id = $2 AND l.expires_at > now.t"
        ),
        format!(
            "WITH r AS (UPDATE {table} AS l SET expires_at = now.t FROM {NOW} \
              WHERE l.key = $1 AND l.lock_id = $2 AND l.expires_at > now.t RETURNING l.key) \
             SELECT pg_notify({notify}, '') FROM r"
        ),
        format!(
            "SELECT l.fence, {owner_read}, \
                    ceil(extract(epoch FROM l.expires_at - now.t) * 1000)::bigint, \
                    greatest(0, floor(extract(epoch FROM now.t - l.acquired_at) * 1000))::bigint \
               FROM {table} AS l, {NOW} \
              WHERE l.key = $1 AND l.expires_at > now.t"
        ),
        format!(
            "WITH f AS (UPDATE {table} AS l SET expires_at = now.t, lock_id = $3{owner_clear} \
               FROM {NOW} \
              WHERE l.key = $1 \
                AND ((l.expires_at > now.t AND ($2::bigint IS NULL OR l.fence = $2)) \
                     OR l.lock_id = $3) \
             RETURNING l.fence, l.key) \
             SELECT f.fence, pg_notify({notify}, '') FROM f"
        ),
        format!(
            "WITH r AS (UPDATE {table} AS l SET expires_at = now.t + {TTL} FROM {NOW} \
              WHERE l.key = $1 AND l.lock_id = $2 AND l.expires_at > now.t RETURNING l.key) \
             SELECT pg_notify({notify}, '') FROM r"
        ),
        wait_acquire,
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
            expires_at timestamptz NOT NULL, \
            owner text)"
    )
}

/// A lease-mode instance.
pub(crate) struct Lease {
    pool: Pool,
    /// Whether the table has the `owner` column (one made by an older
    /// release that this role may not alter has not).
    owner_column: bool,
}

impl Lease {
    pub fn open(settings: Settings) -> Result<Self, PluginError> {
        let watch = Watch::start().map_err(|e| PluginError::backend(format!("pg: {e}")))?;
        if settings.create_table {
            ensure_table(&settings, Instant::now() + settings.call_budget(), &watch)?;
        }
        let owner_column =
            has_owner_column(&settings, Instant::now() + settings.call_budget(), &watch)?;
        let statements = statements(&settings.table.quoted, owner_column);
        let pool = Pool::new(settings, statements, watch);
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
        Ok(Self { pool, owner_column })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn try_lock(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, Fail> {
        let lock_id = Uuid::new_v4();
        let deadline = self.pool.deadline();
        self.pool.with_conn(deadline, |c| self.acquire(c, key, lock_id, ttl_ms, owner, deadline))
    }

    /// One acquire statement on `c`.
    fn acquire(
        &self,
        c: &mut Conn,
        key: &str,
        lock_id: Uuid,
        ttl_ms: u64,
        owner: Option<&str>,
        deadline: Instant,
    ) -> Result<Option<LockHandle>, Fail> {
        let ttl = ttl_ms as i64;
        let row = if self.owner_column {
            c.query_opt(ACQUIRE, &[&key.as_bytes(), &lock_id, &ttl, &owner], deadline)
        } else {
            c.query_opt(ACQUIRE, &[&key.as_bytes(), &lock_id, &ttl], deadline)
        }?;
        Ok(row.map(|row| LockHandle {
            key: key.to_owned(),
            lock_id: lock_id.to_string(),
            ttl_ms,
            fence: Some(row.get::<_, i64>(0) as u64),
        }))
    }

    /// Waits for `key`: one try on a pooled connection, and when that is
    /// contended, a connection of the wait's own that `LISTEN`s on the
    /// key's channel *before* trying again, then sleeps until a release
    /// notifies it or the holder's lease ends (read from the server when
    /// contended), whichever comes first, and tries again. The connection
    /// is closed when the wait ends, which ends its `LISTEN` with it.
    pub fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, Fail> {
        let sent = Instant::now();
        if let Some(handle) = self.try_lock(key, ttl_ms, owner)? {
            return Ok(Some(Acquired { handle, sent }));
        }
        if wait.is_over() {
            return Ok(None);
        }
        // A waiter's session that dies (a terminated backend, a dropped
        // connection) is replaced, a few times per wait: a long wait
        // should not fail on what a single call would retry. A server that
        // cannot be reached fails the reconnect, and so the wait.
        let mut lost = 0;
        loop {
            let mut conn = self.pool.open_dedicated(self.pool.deadline())?;
            let result = self.wait_on(&mut conn, key, ttl_ms, owner, wait);
            conn.close(Instant::now() + CLOSE_GRACE);
            match result {
                Err(e) if e.kind == FailKind::Connection && lost < MAX_LOST && !wait.is_over() => {
                    lost += 1;
                }
                other => return other,
            }
        }
    }

    fn wait_on(
        &self,
        conn: &mut Conn,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, Fail> {
        let table = &self.pool.settings().table.quoted;
        conn.batch(&format!("LISTEN \"{}\"", channel(table, key)), self.pool.deadline())?;
        let wake = Arc::new(Notify::new());
        let _hook = {
            let wake = wake.clone();
            wait.on_cancel(move || wake.notify_one())
        };
        let lock_id = Uuid::new_v4();
        loop {
            if wait.is_cancelled() {
                return Ok(None);
            }
            // A notification that came before this try is answered by it.
            conn.take_notices();
            let sent = Instant::now();
            let deadline = self.pool.deadline();
            let ttl = ttl_ms as i64;
            let row = if self.owner_column {
                conn.query_opt(WAIT_ACQUIRE, &[&key.as_bytes(), &lock_id, &ttl, &owner], deadline)
            } else {
                conn.query_opt(WAIT_ACQUIRE, &[&key.as_bytes(), &lock_id, &ttl], deadline)
            }?;
            let (fence, left) = match row {
                Some(r) => (r.get::<_, Option<i64>>(0), r.get::<_, Option<i64>>(1)),
                None => (None, None),
            };
            if let Some(fence) = fence {
                let handle = LockHandle {
                    key: key.to_owned(),
                    lock_id: lock_id.to_string(),
                    ttl_ms,
                    fence: Some(fence as u64),
                };
                return Ok(Some(Acquired { handle, sent }));
            }
            if wait.is_over() {
                return Ok(None);
            }
            // None: a row the statement could not see yet; try again.
            let Some(left) = left else { continue };
            let ends = Instant::now() + Duration::from_millis(left.max(0) as u64 + 1);
            conn.wait_notice(ends.min(wait.deadline()), &wake)?;
        }
    }

    /// Sets the remaining time of the lease to `ttl_ms` once; `Ok(false)`:
    /// the lease is no longer ours. Waiters are notified, as they sleep
    /// until the end they read before.
    pub fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<bool, Fail> {
        let Ok(lock_id) = Uuid::parse_str(&handle.lock_id) else { return Ok(false) };
        let ttl = ttl_ms as i64;
        let key = handle.key.as_bytes();
        let deadline = self.pool.deadline();
        let n = self
            .pool
            .with_conn(deadline, |c| c.execute(RENEW_FOR, &[&key, &lock_id, &ttl], deadline))?;
        Ok(n == 1)
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

    /// Who holds `key`, by the server's clock.
    pub fn inspect(&self, key: &str) -> Result<LockInfo, Fail> {
        let deadline = self.pool.deadline();
        let row = self
            .pool
            .with_conn(deadline, |c| c.query_opt(INSPECT, &[&key.as_bytes()], deadline))?;
        Ok(match row {
            None => LockInfo::free(key),
            Some(row) => LockInfo {
                key: key.to_owned(),
                held: true,
                fence: Some(row.get::<_, i64>(0) as u64),
                owner: row.get::<_, Option<String>>(1),
                expires_in_ms: u64::try_from(row.get::<_, i64>(2)).ok(),
                held_for_ms: u64::try_from(row.get::<_, i64>(3)).ok(),
            },
        })
    }

    /// Ends the live lease on `key` (only at fence `if_fence`, when given).
    pub fn force_release(&self, key: &str, if_fence: Option<u64>) -> Result<ForceReleased, Fail> {
        let Ok(if_fence) = if_fence.map(i64::try_from).transpose() else {
            // Above every bigint, so no row has it.
            return Ok(ForceReleased { released: false, fence: None });
        };
        let breaker = Uuid::new_v4();
        let deadline = self.pool.deadline();
        let row = self.pool.with_conn(deadline, |c| {
            c.query_opt(FORCE_RELEASE, &[&key.as_bytes(), &if_fence, &breaker], deadline)
        })?;
        Ok(match row {
            None => ForceReleased { released: false, fence: None },
            Some(row) => ForceReleased { released: true, fence: Some(row.get::<_, i64>(0) as u64) },
        })
    }

    pub fn cleanup(&self) {
        self.pool.close();
    }
}

/// Whether the lock table has the `owner` column.
fn has_owner_column(s: &Settings, deadline: Instant, watch: &Watch) -> Result<bool, PluginError> {
    let fail = |e: Fail| {
        PluginError::backend(s.secrets.scrub(&format!("pg ({}): {}", s.target, e.message)))
    };
    let mut conn = Conn::open(s, &[], deadline, watch).map_err(fail)?;
    let rows = conn.query_sql(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute \
          WHERE attrelid = to_regclass($1) AND attname = 'owner' AND NOT attisdropped)",
        &[&s.table.quoted],
        deadline,
    );
    conn.close(deadline);
    Ok(rows.map_err(fail)?.first().is_some_and(|r| r.get::<_, bool>(0)))
}

/// Creates the schema and table when missing, on a connection of its own.
///
/// Creators racing on a fresh database are serialised by a transaction-level
/// advisory lock (two `CREATE TABLE IF NOT EXISTS` can otherwise collide on
/// the catalog), and nothing is created that already exists, so a role
/// without CREATE rights works against a table made for it.
fn ensure_table(s: &Settings, deadline: Instant, watch: &Watch) -> Result<(), PluginError> {
    let fail = |what: &str, e: Fail| {
        PluginError::backend(s.secrets.scrub(&format!("pg ({}): {what}: {}", s.target, e.message)))
    };
    // `Conn::open` already says what failed ("cannot connect: ...",
    // "connecting took longer than ..."): no second prefix.
    let mut conn = Conn::open(s, &[], deadline, watch).map_err(|e| {
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
        } else {
            // A table made before owners were stored gains the column; a
            // role that cannot alter it fails here, as it would creating it.
            let has_owner = conn.query_sql(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute \
                  WHERE attrelid = to_regclass($1) AND attname = 'owner' AND NOT attisdropped)",
                &[table],
                deadline,
            )?;
            if !has_owner.first().is_some_and(|r| r.get::<_, bool>(0)) {
                conn.query_sql(
                    &format!("ALTER TABLE {table} ADD COLUMN owner text"),
                    &[],
                    deadline,
                )?;
            }
        }
        conn.query_sql("COMMIT", &[], deadline)?;
        Ok(())
    })();
    conn.close(deadline);
    result.map_err(|e| fail(&format!("cannot create the lock table {table}"), e))
}
