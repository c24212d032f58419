//! The table layout and the three statements every lock operation is.
//!
//! Public so that benchmarks and tools issue exactly the statements the
//! backend issues. Each operation is a single autocommit statement: SQLite
//! takes the write lock at the start of a writing statement (waiting through
//! the busy handler), so one statement is as safe as a `BEGIN IMMEDIATE`
//! transaction around it, without the extra round trips; and it can never
//! hit the `SQLITE_BUSY_SNAPSHOT` a deferred read-then-write transaction
//! would, which no busy timeout can cure.

/// The table used when the config names none.
pub const DEFAULT_TABLE: &str = "bext_locks";

/// The host's wall clock in whole milliseconds since the Unix epoch, read by
/// SQLite itself.
///
/// SQLite reads `'now'` once per statement step, after the statement has
/// taken the write lock, so a lease is measured from the moment the lock was
/// decided, not from before a wait on the busy handler. `ROUND` undoes the
/// float error of `unixepoch('subsec')` (whole milliseconds in a double).
const NOW_MS: &str = "CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)";

/// Checks that `name` can be a table name: an ASCII identifier of 1 to 63
/// characters that does not start with SQLite's reserved `sqlite_`.
///
/// The name is also double-quoted in every statement, so this is the first
/// of two defences against a hostile config.
pub fn validate_table_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || !rest_ok || name.len() > 63 {
        return Err(format!(
            "table {name:?} is not a valid table name: use 1 to 63 ASCII letters, digits \
             and underscores, not starting with a digit"
        ));
    }
    if name.to_ascii_lowercase().starts_with("sqlite_") {
        return Err(format!(
            "table {name:?} is reserved: names starting with `sqlite_` belong to SQLite"
        ));
    }
    Ok(())
}

/// The SQL text of each operation on one table.
#[derive(Debug, Clone)]
pub struct Statements {
    /// Creates the table if it is missing.
    pub create_table: String,
    /// Acquire: `?1` key, `?2` lock_id, `?3` ttl_ms; returns the fence in one
    /// row when the lock was taken, no row when someone holds it.
    pub acquire: String,
    /// Renew: `?1` key, `?2` lock_id, `?3` ttl_ms; changes one row when the
    /// lease was still ours and unexpired, none otherwise.
    pub renew: String,
    /// Release: `?1` key, `?2` lock_id; changes one row when it was ours.
    pub release: String,
    /// Inspect: `?1` key; one row (fence, owner, expires_in_ms,
    /// held_for_ms) when the lease is live, none otherwise.
    pub inspect: String,
    /// Force release: `?1` key, `?2` the fence to break or NULL for any;
    /// returns the broken fence in one row, or no row.
    pub force_release: String,
}

/// The columns ABI 1.1 added, with their types: added to a table created
/// by an older version when it is opened (`ALTER TABLE … ADD COLUMN`), so
/// an old file keeps working, and older builds still on the file keep
/// working too (they never name these columns).
///
/// `owner_lock_id` is the `lock_id` the owner and acquisition time were
/// written for: an older build taking a lock over rewrites `lock_id` but
/// not these, and `inspect` then shows no owner rather than a stale one.
pub const ADDED_COLUMNS: [(&str, &str); 3] =
    [("owner", "TEXT"), ("owner_lock_id", "TEXT"), ("acquired_at_ms", "INTEGER")];

impl Statements {
    /// The statements for `table`, which must have passed
    /// [`validate_table_name`].
    pub fn new(table: &str) -> Self {
        debug_assert!(validate_table_name(table).is_ok());
        let t = format!("\"{table}\"");
        // Rows are never deleted: a released lease is expired in place, so
        // its fence keeps rising from where it was. One small row per key
        // ever locked is the price of fences that never go back.
        let create_table = format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                key TEXT PRIMARY KEY NOT NULL,
                lock_id TEXT NOT NULL,
                expires_at_ms INTEGER NOT NULL,
                fence INTEGER NOT NULL,
                owner TEXT,
                owner_lock_id TEXT,
                acquired_at_ms INTEGER
            ) STRICT, WITHOUT ROWID"
        );
        // Insert a new key, or take over a row whose lease has run out
        // (`expires_at_ms` on the right of the WHERE is the existing row's).
        // When the lease is live the DO UPDATE's WHERE is false, nothing
        // changes and RETURNING yields no row: that is contention.
        // `?4` is the owner (NULL for none), stored with the lock_id it
        // belongs to and the acquisition time, for `inspect`.
        let acquire = format!(
            "INSERT INTO {t} (key, lock_id, expires_at_ms, fence, owner, owner_lock_id, acquired_at_ms)
             VALUES (?1, ?2, {NOW_MS} + ?3, 1, ?4, ?2, {NOW_MS})
             ON CONFLICT (key) DO UPDATE SET
                 lock_id = excluded.lock_id,
                 expires_at_ms = excluded.expires_at_ms,
                 fence = {t}.fence + 1,
                 owner = excluded.owner,
                 owner_lock_id = excluded.owner_lock_id,
                 acquired_at_ms = excluded.acquired_at_ms
             WHERE {t}.expires_at_ms <= {NOW_MS}
             RETURNING fence"
        );
        // Only a live lease with our lock_id is extended: an expired or
        // taken-over one changes nothing, and nothing is ever inserted.
        let renew = format!(
            "UPDATE {t} SET expires_at_ms = {NOW_MS} + ?3
             WHERE key = ?1 AND lock_id = ?2 AND expires_at_ms > {NOW_MS}"
        );
        // Expire rather than delete, so the fence survives. A stale or forged
        // lock_id matches nothing and so touches nothing.
        let release = format!("UPDATE {t} SET expires_at_ms = 0 WHERE key = ?1 AND lock_id = ?2");
        // By the database's clock, as the leases are; the lock_id is never
        // selected. Owner and age only when written for this holder.
        let inspect = format!(
            "SELECT fence,
                    CASE WHEN owner_lock_id = lock_id THEN owner END,
                    expires_at_ms - {NOW_MS},
                    CASE WHEN owner_lock_id = lock_id THEN {NOW_MS} - acquired_at_ms END
             FROM {t} WHERE key = ?1 AND expires_at_ms > {NOW_MS}"
        );
        // Compare-and-expire on the fence, in one statement: a renew of the
        // broken holder runs wholly before it (and is undone) or after it
        // (and finds the lease over, as renew requires it live). Expiring
        // in place keeps the fence, so the next acquisition's is higher.
        let force_release = format!(
            "UPDATE {t} SET expires_at_ms = 0
             WHERE key = ?1 AND expires_at_ms > {NOW_MS} AND (?2 IS NULL OR fence = ?2)
             RETURNING fence"
        );
        Self { create_table, acquire, renew, release, inspect, force_release }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for good in ["bext_locks", "_x", "Locks2", &"a".repeat(63)] {
            assert!(validate_table_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "a b",
            "a\"; DROP TABLE x; --",
            "locks;",
            "ключ",
            "a-b",
            "a.b",
            &"a".repeat(64),
            "sqlite_master",
            "SQLITE_x",
        ] {
            assert!(validate_table_name(bad).is_err(), "{bad:?}");
        }
    }
}
