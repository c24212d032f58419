//! The SQLite bext-locking backend: the embedded default.
//!
//! Locks are rows in one table of one database file. Every process on the
//! host that opens the same file (directly or from containers sharing the
//! folder) gets real mutual exclusion with TTLs and fencing, with no server
//! to run. SQLite is compiled in (`rusqlite`'s `bundled` feature).
//!
//! * Acquire is one statement that inserts the key or takes over an expired
//!   row, and returns a fence that rises by one with every acquisition of
//!   the key. Release expires the row instead of deleting it, so the fence
//!   is never reset.
//! * Renew extends only an unexpired lease whose `lock_id` is ours; it never
//!   re-creates a row.
//! * Time is the host's wall clock as SQLite reads it, shared by every
//!   process on the host: this backend is for **one host**. A database file
//!   on a network file system is not supported (SQLite's WAL needs shared
//!   memory, and the hosts' clocks would differ).
//! * The file runs in WAL mode with a busy timeout. A call that cannot get
//!   the write lock within the timeout is `Err`, never a wrong answer.
//!
//! * `lock_wait` watches `PRAGMA data_version` (see [`wait`]), wakes at
//!   the holder's expiry and on this instance's own releases; `renew_for`
//!   is the renew statement with another length.
//!
//! One instance owns one connection behind a mutex: every operation writes,
//! and SQLite admits one writer per file at a time, so threads of one
//! instance queue on the mutex (which wakes them at once) rather than on
//! SQLite's sleeping busy handler.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod busy;
mod open;
pub mod sql;
pub mod wait;

use std::ffi::CStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bext_locking::{Acquired, ForceReleased, LockHandle, LockInfo, PluginError, Wait};
use bext_locking_kit::schemars::{self, JsonSchema};
use bext_locking_kit::{Backend, message};
use rusqlite::{Connection, ErrorCode, OptionalExtension};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use sql::{DEFAULT_TABLE, Statements, validate_table_name};

/// How long a call waits for another writer by default.
pub const DEFAULT_BUSY_TIMEOUT_MS: u64 = 5_000;

/// The longest accepted busy timeout: ten minutes.
pub const MAX_BUSY_TIMEOUT_MS: u64 = 600_000;

/// The SQLite backend's config.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct SqliteConfig {
    /// The database file, created with its table if missing; its directory
    /// must exist; on a local disk of this host.
    #[schemars(length(min = 1))]
    pub path: PathBuf,
    /// How long a call waits for another writer before it fails with a
    /// backend error, in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_BUSY_TIMEOUT_MS), extend("default" = DEFAULT_BUSY_TIMEOUT_MS))]
    pub busy_timeout_ms: Option<u64>,
    /// The lock table; ASCII letters, digits and underscores.
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"), extend("default" = DEFAULT_TABLE))]
    pub table: Option<String>,
}

impl SqliteConfig {
    /// A config for `path` with every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), busy_timeout_ms: None, table: None }
    }
}

/// The SQLite backend: one connection to the lock database.
pub struct Sqlite {
    /// `None` once cleaned up.
    conn: Mutex<Option<Connection>>,
    statements: Statements,
    busy_timeout_ms: u64,
    /// Wakes this instance's waiters on its own releases.
    releases: Arc<wait::Releases>,
}

/// An instance of the SQLite backend, in-process.
pub type SqlitePlugin = bext_locking_kit::Plugin<Sqlite>;

impl Sqlite {
    /// Opens (or creates) the lock database at `path` with default settings.
    pub fn open(path: impl Into<PathBuf>) -> Result<SqlitePlugin, PluginError> {
        SqlitePlugin::from_config(SqliteConfig::new(path))
    }

    /// Runs `f` on the connection, or fails when the instance was cleaned up.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, PluginError> {
        let guard = lock(&self.conn);
        let conn = guard
            .as_ref()
            .ok_or_else(|| PluginError::backend(format!("sqlite: {}", message::CLOSED)))?;
        busy::within(Duration::from_millis(self.busy_timeout_ms), || f(conn))
            .map_err(|e| PluginError::backend(self.describe(e)))
    }

    fn describe(&self, e: rusqlite::Error) -> String {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
                "sqlite: the database stayed locked by another writer for longer than \
                 busy_timeout_ms ({} ms); the lock state is unknown: {e}",
                self.busy_timeout_ms
            ),
            _ => format!("sqlite: {e}"),
        }
    }
}

impl Sqlite {
    /// Sets the lease of `handle` to end `ttl_ms` from now, if it is still
    /// ours and live; never re-creates a row.
    fn extend(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        let changed = self.with_conn(|c| {
            c.prepare_cached(&self.statements.renew)?.execute((
                &handle.key,
                &handle.lock_id,
                ttl_sql(ttl_ms),
            ))
        })?;
        if changed == 1 {
            Ok(())
        } else {
            Err(PluginError::backend(format!("sqlite: {}", message::not_held(&handle.key))))
        }
    }

    /// `PRAGMA data_version`: changes when another connection committed.
    fn data_version(&self) -> Result<i64, PluginError> {
        self.with_conn(|c| c.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0)))
    }

    /// How long the live lease on `key` has left by the database's clock
    /// (plus a millisecond, so a wake-up finds it over), or `None` when
    /// the key is free.
    fn expires_in(&self, key: &str) -> Result<Option<Duration>, PluginError> {
        let ms = self.with_conn(|c| {
            c.prepare_cached(&self.statements.inspect)?
                .query_row([key], |row| row.get::<_, i64>(2))
                .optional()
        })?;
        Ok(ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0) + 1)))
    }
}

/// A poisoned mutex only means a panic happened while it was held; the
/// connection rolls back any statement it was running, so it is still sound.
fn lock(m: &Mutex<Option<Connection>>) -> MutexGuard<'_, Option<Connection>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// TTLs are at most 365 days in milliseconds, far inside `i64`.
fn ttl_sql(ttl_ms: u64) -> i64 {
    i64::try_from(ttl_ms).unwrap_or(i64::MAX)
}

impl Backend for Sqlite {
    const NAME: &'static CStr = c"sqlite";
    type Config = SqliteConfig;

    /// Opens (or creates) the lock database a config names.
    ///
    /// A bad path or file, a hostile table name or a table of another shape
    /// is an [`invalid`](PluginError::invalid) error; a file that stays busy
    /// or fails to switch to WAL is a [`backend`](PluginError::backend) one.
    fn create(config: SqliteConfig) -> Result<Self, PluginError> {
        let table = config.table.as_deref().unwrap_or(DEFAULT_TABLE);
        validate_table_name(table).map_err(PluginError::invalid)?;
        let busy_timeout_ms = config.busy_timeout_ms.unwrap_or(DEFAULT_BUSY_TIMEOUT_MS);
        let statements = Statements::new(table);
        let conn =
            open::open(&config.path, table, Duration::from_millis(busy_timeout_ms), &statements)?;
        Ok(Self {
            conn: Mutex::new(Some(conn)),
            statements,
            busy_timeout_ms,
            releases: Arc::default(),
        })
    }

    const CAPABILITIES: &'static [&'static str] =
        &["owner", "inspect", "force_release", "lock_wait", "renew_ttl"];

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, PluginError> {
        self.try_lock_owned(key, ttl_ms, None)
    }

    fn try_lock_owned(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        let lock_id = Uuid::new_v4().to_string();
        let fence = self.with_conn(|c| {
            c.prepare_cached(&self.statements.acquire)?
                .query_row((key, &lock_id, ttl_sql(ttl_ms), owner), |row| row.get::<_, i64>(0))
                .optional()
        })?;
        Ok(fence.map(|fence| LockHandle {
            key: key.to_owned(),
            lock_id,
            ttl_ms,
            // Fences start at 1 and only ever grow.
            fence: Some(u64::try_from(fence).unwrap_or(0)),
        }))
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), PluginError> {
        self.extend(handle, handle.ttl_ms)
    }

    /// The renew statement with another length: one conditioned UPDATE
    /// that sets the live lease's end to `ttl_ms` from now.
    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        self.extend(handle, ttl_ms)
    }

    /// Waits on `PRAGMA data_version` and this instance's releases, waking
    /// at the holder's expiry; see [`wait`].
    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        let releases = self.releases.clone();
        let _hook = wait.on_cancel(move || releases.bump());
        loop {
            if wait.is_cancelled() {
                return Ok(None);
            }
            // Both read before the try, so a release after it is seen.
            let seen = self.releases.generation();
            let mut version = self.data_version()?;
            let sent = Instant::now();
            if let Some(handle) = self.try_lock_owned(key, ttl_ms, owner)? {
                return Ok(Some(Acquired { handle, sent }));
            }
            if wait.is_over() {
                return Ok(None);
            }
            // None: released between the try and this read; try again.
            let Some(ends) = self.expires_in(key)? else { continue };
            let mut wake_at = (Instant::now() + ends).min(wait.deadline());
            let mut pause = wait::WATCH_FIRST;
            loop {
                if self.releases.wait_past(seen, wait::next_pause(pause, wake_at))
                    || Instant::now() >= wake_at
                {
                    break;
                }
                pause = (pause * 2).min(wait::WATCH_MAX);
                let now = self.data_version()?;
                if now == version {
                    continue;
                }
                // Some connection committed: to this key, or to another.
                version = now;
                match self.expires_in(key)? {
                    None => break,
                    Some(ends) => {
                        wake_at = (Instant::now() + ends).min(wait.deadline());
                        pause = wait::WATCH_FIRST;
                    }
                }
            }
        }
    }

    fn release(&self, handle: &LockHandle) -> Result<(), PluginError> {
        self.with_conn(|c| {
            c.prepare_cached(&self.statements.release)?.execute((&handle.key, &handle.lock_id))
        })?;
        self.releases.bump();
        Ok(())
    }

    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        let row = self.with_conn(|c| {
            c.prepare_cached(&self.statements.inspect)?
                .query_row([key], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, Option<String>>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, Option<i64>>(3)?,
                    ))
                })
                .optional()
        })?;
        let non_negative = |ms: i64| u64::try_from(ms).unwrap_or(0);
        Ok(match row {
            None => LockInfo::free(key),
            Some((fence, owner, expires_in, held_for)) => LockInfo {
                key: key.to_owned(),
                held: true,
                fence: Some(non_negative(fence)),
                owner,
                expires_in_ms: Some(non_negative(expires_in)),
                held_for_ms: held_for.map(non_negative),
            },
        })
    }

    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        // A fence past i64 cannot be in the table: nothing to break.
        let Ok(if_fence) = if_fence.map(i64::try_from).transpose() else {
            return Ok(ForceReleased::default());
        };
        let fence = self.with_conn(|c| {
            c.prepare_cached(&self.statements.force_release)?
                .query_row((key, if_fence), |row| row.get::<_, i64>(0))
                .optional()
        })?;
        if fence.is_some() {
            self.releases.bump();
        }
        Ok(ForceReleased {
            released: fence.is_some(),
            fence: fence.map(|f| u64::try_from(f).unwrap_or(0)),
        })
    }

    fn cleanup(&self) {
        // Dropping the connection closes it; the last one to close
        // checkpoints the WAL into the main file.
        lock(&self.conn).take();
        self.releases.bump();
    }
}

/// The export description used by the `.so`.
pub struct Exported;

impl bext_locking_ffi::Export for Exported {
    type Backend = Sqlite;
    const VERSION: &'static CStr = bext_locking_ffi::crate_version_cstr!();
    const DESCRIPTION: &'static str = "Leases with fencing in a SQLite file shared by the \
                                       processes of one host; no server needed";
    const FENCING: bool = true;
    /// Expiry is this host's wall clock, which advances at the rate of the
    /// holder's monotonic clock (NTP slews both alike); 2 ms cover the
    /// rounding of `unixepoch('subsec')` to whole milliseconds at both ends.
    /// A step of the wall clock is not drift: see the backend's docs.
    const CLOCK_DRIFT: Option<bext_locking::ClockDrift> =
        Some(bext_locking::ClockDrift::new(0.0, 2));
}

bext_locking_ffi::export_locking_plugin!(Exported);
