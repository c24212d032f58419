//! Lease mode: one row per key in a lock table, with an expiry computed by
//! the database server's clock and a fence that rises with every
//! acquisition.
//!
//! Rows are never deleted: release moves the expiry to "now", so the next
//! acquisition of the key finds the row and raises its fence, and fences
//! survive a restart with the table.

use std::cell::Cell;
use std::time::{Duration, Instant};

use bext_locking::{Acquired, ForceReleased, LockHandle, LockInfo, PluginError, Wait};
use uuid::Uuid;

use crate::config::Settings;
use crate::conn::Conn;
use crate::connections::Pool;
use crate::fail::{Fail, FailKind};

const ACQUIRE: usize = 0;
const RENEW: usize = 1;
const RELEASE: usize = 2;
const STILL_HELD: usize = 3;
const INSPECT: usize = 4;
const FORCE_RELEASE: usize = 5;

/// The server's clock, in UTC so that sessions with different `time_zone`
/// settings (or a daylight-saving change) agree. Within one statement it
/// reads the same instant every time.
const NOW: &str = "UTC_TIMESTAMP(6)";

/// The statements of lease mode, in the order of the constants above, with
/// their parameters.
///
/// * Acquire (`key, lock_id, owner, ttl_us`, then `lock_id, owner`,
///   `lock_id` three times, `lock_id, lock_id, ttl_us`): inserts the row, or takes over an expired one (or
///   one this very attempt already took: a retry after a lost connection)
///   in the same statement. The row lock of `ON DUPLICATE KEY UPDATE`
///   serialises racing acquirers, so one of them changes the row. Every
///   condition is the same test, and it gives the same answer whether the
///   server evaluates assignments left to right (MySQL, MariaDB) or
///   simultaneously (MariaDB's `SIMULTANEOUS_ASSIGNMENT`): `lock_id` and
///   `expires_at` are assigned last, and once `lock_id` holds this
///   attempt's id the test is true exactly when the row was taken. The
///   new fence comes back as `LAST_INSERT_ID()`, in the same reply.
/// * Renew (`ttl_us, key, lock_id`): extends an unexpired lease of this
///   lock id; never re-creates one.
/// * Release (`key, lock_id`): expires an unexpired lease of this lock id.
/// * Still held (`key, lock_id`): whether an unexpired lease of this lock
///   id exists, for a renew that changed nothing (the same microsecond).
/// * Inspect (`key`): the fence, owner, microseconds left and held of an
///   unexpired lease; never the lock id.
/// * Force release (`nobody, key, if_fence, if_fence`): expires an
///   unexpired lease (at that fence, when one is given) and replaces its
///   lock id, so that a renew of the broken holder that waited for the row
///   finds another id and fails; the broken fence comes back as
///   `LAST_INSERT_ID()`.
pub(crate) fn statements(table: &str) -> Vec<String> {
    let taken = format!("(expires_at <= {NOW} OR lock_id = ?)");
    vec![
        format!(
            "INSERT INTO {table} (lock_key, lock_id, owner, fence, acquired_at, expires_at) \
             VALUES (?, ?, ?, 1, {NOW}, {NOW} + INTERVAL ? MICROSECOND) \
             ON DUPLICATE KEY UPDATE \
                owner = IF({taken}, ?, owner), \
                fence = IF({taken}, LAST_INSERT_ID(fence + 1), fence), \
                acquired_at = IF({taken}, {NOW}, acquired_at), \
                lock_id = IF({taken}, ?, lock_id), \
                expires_at = IF({taken}, {NOW} + INTERVAL ? MICROSECOND, expires_at)"
        ),
        format!(
            "UPDATE {table} SET expires_at = {NOW} + INTERVAL ? MICROSECOND \
              WHERE lock_key = ? AND lock_id = ? AND expires_at > {NOW}"
        ),
        format!(
            "UPDATE {table} SET expires_at = {NOW} \
              WHERE lock_key = ? AND lock_id = ? AND expires_at > {NOW}"
        ),
        format!("SELECT 1 FROM {table} WHERE lock_key = ? AND lock_id = ? AND expires_at > {NOW}"),
        format!(
            "SELECT fence, owner, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at), \
                    TIMESTAMPDIFF(MICROSECOND, acquired_at, {NOW}) \
               FROM {table} WHERE lock_key = ? AND expires_at > {NOW}"
        ),
        format!(
            "UPDATE {table} SET lock_id = ?, expires_at = {NOW}, fence = LAST_INSERT_ID(fence) \
              WHERE lock_key = ? AND expires_at > {NOW} AND (? IS NULL OR fence = ?)"
        ),
    ]
}

/// The lock table's layout. `lock_key` is binary so that any key (NUL
/// included) is stored and compared byte for byte whatever the table's
/// character set and collation; `owner` is kept for tools that show who
/// holds a key.
pub(crate) fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
            lock_key VARBINARY({key_bytes}) NOT NULL PRIMARY KEY, \
            lock_id BINARY(16) NOT NULL, \
            owner VARBINARY(256) NULL, \
            fence BIGINT UNSIGNED NOT NULL, \
            acquired_at DATETIME(6) NOT NULL, \
            expires_at DATETIME(6) NOT NULL\
         ) ENGINE=InnoDB",
        key_bytes = bext_locking::MAX_KEY_BYTES
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
        let statements = statements(&settings.table);
        let pool = Pool::new(settings, statements);
        // Opening one connection now prepares the statements, which proves
        // the table exists and has the expected columns.
        let conn = pool.get(pool.deadline()).map_err(|e| {
            let s = pool.settings();
            let mut message = format!("mysql ({}): {}", s.target, e.message);
            if e.message.contains("ERROR 1146 ") {
                message.push_str(&format!(
                    "; the lock table {} does not exist: create it (see docs/backends/mysql.md) \
                     or set \"create_table\": true",
                    s.table
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

    pub fn try_lock(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, Fail> {
        let lock_id = Uuid::new_v4();
        let id = lock_id.as_bytes().to_vec();
        let ttl_us = ttl_ms * 1000;
        let owner: Option<Vec<u8>> = owner.map(|o| o.as_bytes().to_vec());
        let deadline = self.pool.deadline();
        let (changed, fence) = self.pool.with_conn(deadline, |c: &mut Conn| {
            let params: Vec<mysql::Value> = vec![
                key.as_bytes().into(),
                id.clone().into(),
                owner.clone().into(),
                ttl_us.into(),
                id.clone().into(),
                owner.clone().into(),
                id.clone().into(),
                id.clone().into(),
                id.clone().into(),
                id.clone().into(),
                id.clone().into(),
                ttl_us.into(),
            ];
            c.exec(ACQUIRE, params)
        })?;
        // 1: inserted (the first fence); 2: an expired row taken over (its
        // new fence is LAST_INSERT_ID()); 0: held by someone else.
        let fence = match changed {
            0 => return Ok(None),
            1 => 1,
            _ => fence,
        };
        Ok(Some(LockHandle {
            key: key.to_owned(),
            lock_id: lock_id.to_string(),
            ttl_ms,
            fence: Some(fence),
        }))
    }

    /// `Ok(false)`: the lease is no longer ours.
    pub fn renew(&self, handle: &LockHandle) -> Result<bool, Fail> {
        self.renew_for(handle, handle.ttl_ms)
    }

    /// Sets the lease's remaining time to `ttl_ms` (the handle's own TTL
    /// for a renew); `Ok(false)`: the lease is no longer ours.
    pub fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<bool, Fail> {
        let Ok(lock_id) = Uuid::parse_str(&handle.lock_id) else { return Ok(false) };
        let id = lock_id.as_bytes().to_vec();
        let key = handle.key.as_bytes();
        let ttl_us = ttl_ms * 1000;
        let deadline = self.pool.deadline();
        self.pool.with_conn(deadline, |c| {
            let (n, _) = c.exec(RENEW, (ttl_us, key, &id))?;
            if n == 1 {
                return Ok(true);
            }
            // Zero rows changed is also what a renew within the microsecond
            // of the previous one reports: ask whether the lease is there.
            Ok(c.first::<u8>(STILL_HELD, (key, &id))?.is_some())
        })
    }

    pub fn release(&self, handle: &LockHandle) -> Result<(), Fail> {
        let Ok(lock_id) = Uuid::parse_str(&handle.lock_id) else { return Ok(()) };
        let id = lock_id.as_bytes().to_vec();
        let key = handle.key.as_bytes();
        let deadline = self.pool.deadline();
        self.pool.with_conn(deadline, |c| c.exec(RELEASE, (key, &id)))?;
        Ok(())
    }

    /// Waits for `key` by polling: MySQL and MariaDB have no notification
    /// a release could send to another session (no `LISTEN`, and a
    /// `GET_LOCK` a waiter blocks on would have to be held by the lease's
    /// holder, which any instance may release). The floor is
    /// [`poll_wait`](bext_locking::wait::poll_wait)'s jittered backoff,
    /// with the next try never later than the holder's lease end, read
    /// from the server (by its clock) on each contended try.
    pub fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, Fail> {
        let ends: Cell<Option<Duration>> = Cell::new(None);
        let failed: Cell<Option<Fail>> = Cell::new(None);
        let got = bext_locking::wait::poll_wait(
            wait,
            bext_locking::wait::POLL_MAX,
            || {
                let sent = Instant::now();
                let tried = self.try_lock(key, ttl_ms, owner).and_then(|got| match got {
                    Some(handle) => Ok(Some(Acquired { handle, sent })),
                    None => {
                        ends.set(self.inspect(key)?.expires_in_ms.map(Duration::from_millis));
                        Ok(None)
                    }
                });
                tried.map_err(|e| {
                    failed.set(Some(e));
                    PluginError::backend("")
                })
            },
            || ends.take(),
        );
        match got {
            Ok(got) => Ok(got),
            Err(_) => Err(failed.take().unwrap_or_else(|| Fail::new(FailKind::Server, "failed"))),
        }
    }

    /// Who holds `key`, by the server's clock.
    pub fn inspect(&self, key: &str) -> Result<LockInfo, Fail> {
        type Row = (u64, Option<Vec<u8>>, i64, i64);
        let deadline = self.pool.deadline();
        let row: Option<Row> =
            self.pool.with_conn(deadline, |c| c.first(INSPECT, (key.as_bytes(),)))?;
        let Some((fence, owner, left_us, held_us)) = row else { return Ok(LockInfo::free(key)) };
        Ok(LockInfo {
            key: key.to_owned(),
            held: true,
            fence: Some(fence),
            owner: owner.map(|o| String::from_utf8_lossy(&o).into_owned()),
            // Rounded up: a lease with 300 µs left has not expired.
            expires_in_ms: Some((left_us.max(0) as u64).div_ceil(1000)),
            held_for_ms: Some(held_us.max(0) as u64 / 1000),
        })
    }

    /// Expires `key`'s lease whoever holds it (at `if_fence` only, when
    /// given), in one statement conditioned on the row being unexpired.
    pub fn force_release(&self, key: &str, if_fence: Option<u64>) -> Result<ForceReleased, Fail> {
        let nobody = Uuid::new_v4().as_bytes().to_vec();
        let deadline = self.pool.deadline();
        let (changed, fence) = self.pool.with_conn(deadline, |c| {
            c.exec(FORCE_RELEASE, (&nobody, key.as_bytes(), if_fence, if_fence))
        })?;
        Ok(if changed == 1 {
            ForceReleased { released: true, fence: Some(fence) }
        } else {
            ForceReleased { released: false, fence: None }
        })
    }

    pub fn cleanup(&self) {
        self.pool.close();
    }
}

/// Creates the table when missing, on a connection of its own.
///
/// Creators racing on a fresh database are serialised by a named lock (in a
/// namespace get_lock mode never uses), and nothing is created that already
/// exists, so a user without CREATE rights works against a table made for
/// it.
fn ensure_table(s: &Settings, deadline: Instant) -> Result<(), PluginError> {
    let fail = |what: &str, e: Fail| {
        PluginError::backend(
            s.secrets.scrub(&format!("mysql ({}): {what}: {}", s.target, e.message)),
        )
    };
    let mut conn = Conn::open(s, &[], deadline).map_err(|e| fail("cannot connect", e))?;
    let wait_s = s.connect_timeout.as_secs().max(1);
    let result = (|| {
        let got: Vec<Option<i64>> =
            conn.query("SELECT GET_LOCK('bext-locking-mysql/create-table', ?)", (wait_s,))?;
        if got.first().copied().flatten() != Some(1) {
            return Err(Fail::new(
                crate::fail::FailKind::Timeout,
                format!("another client kept the table-creation lock for {wait_s} s"),
            ));
        }
        let present: Vec<u8> = conn.query(
            "SELECT 1 FROM information_schema.tables \
              WHERE table_schema = DATABASE() AND table_name = ?",
            (&s.table_name,),
        )?;
        if present.is_empty() {
            conn.query::<u8>(&create_table_sql(&s.table), ())?;
        }
        conn.query::<Option<i64>>("SELECT RELEASE_LOCK('bext-locking-mysql/create-table')", ())?;
        Ok(())
    })();
    // Dropping the connection ends its session, and any lock it kept.
    drop(conn);
    result.map_err(|e| fail(&format!("cannot create the lock table {}", s.table), e))
}
