//! Opening the database file without ever damaging a file that is not ours.
//!
//! Every check that can refuse a file runs before anything is written to
//! it: a file that is not a SQLite database is refused before SQLite opens
//! it, a read-only file or a table of another shape is refused before the
//! journal mode or the schema is touched.

use std::fs::File;
use std::io::{ErrorKind as IoKind, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use bext_locking::PluginError;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::sql::Statements;

/// The first 16 bytes of every SQLite 3 database.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The columns the lock table must have, whoever created it.
const COLUMNS: [&str; 4] = ["key", "lock_id", "expires_at_ms", "fence"];

/// A refusal while setting up, and whether it was only another connection
/// being in the way (worth another try).
struct Failure {
    error: PluginError,
    busy: bool,
}

impl From<PluginError> for Failure {
    fn from(error: PluginError) -> Self {
        Self { error, busy: false }
    }
}

/// Maps a SQLite error, with what was being done, to a [`Failure`].
fn sqlite(what: String) -> impl FnOnce(rusqlite::Error) -> Failure {
    move |e| {
        let busy = matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        );
        Failure { error: classify(e, &what), busy }
    }
}

/// Opens (creating if needed) the lock database at `path`, ready for the
/// statements of `table`.
pub(crate) fn open(
    path: &Path,
    table: &str,
    busy_timeout: Duration,
    statements: &Statements,
) -> Result<Connection, PluginError> {
    check_file(path)?;
    // Processes that create the file at the same moment can meet where SQLite
    // answers "busy" without calling the busy handler (a read lock that wants
    // to become a write lock while another connection waits to write), so
    // setup as a whole is retried, from a fresh connection, until the busy
    // timeout runs out.
    let deadline = Instant::now() + busy_timeout;
    let mut attempt = 0u64;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match crate::busy::within(left, || setup(path, table, statements)) {
            Ok(conn) => return Ok(conn),
            Err(f) if f.busy && Instant::now() < deadline => {
                attempt += 1;
                // 0.2 to 2 ms, spread so that rivals do not retry in step.
                let spread = (attempt * 7_919 + u64::from(std::process::id())) % 1_800;
                std::thread::sleep(Duration::from_micros(200 + spread).min(left));
            }
            Err(f) => return Err(folder_hint(f.error, path)),
        }
    }
}

/// SQLite's "attempt to write a readonly database" or "unable to open
/// database file" for a file we may write usually means its folder is
/// read-only: WAL mode creates `-wal` and `-shm` files beside the database.
/// Says so when the folder indeed refuses a new file.
fn folder_hint(e: PluginError, path: &Path) -> PluginError {
    let lower = e.message.to_ascii_lowercase();
    if !["readonly", "read-only", "unable to open"].iter().any(|w| lower.contains(w)) {
        return e;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Only asked on this error path; the probe is removed at once.
    let probe = dir.join(format!(".bext-locking-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            e
        }
        Err(_) => PluginError::new(
            e.kind,
            format!(
                "{}; the folder `{}` must be writable too: SQLite's WAL mode keeps `-wal` and \
                 `-shm` files beside the database",
                e.message,
                dir.display()
            ),
        ),
    }
}

fn setup(path: &Path, table: &str, statements: &Statements) -> Result<Connection, Failure> {
    let shown = path.display();

    // No SQLITE_OPEN_URI: the path is a file name, never `file:…?mode=…`.
    // NO_MUTEX: the plugin serialises use of each connection itself.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(sqlite(format!("cannot open `{shown}`")))?;
    conn.busy_handler(Some(crate::busy::handler))
        .map_err(sqlite(format!("cannot set the busy handler on `{shown}`")))?;
    // SQLite quietly opens a file it may not write read-only; locks need writes.
    if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
        return Err(PluginError::invalid(format!(
            "`{shown}` is read-only for this process; the lock database must be writable"
        ))
        .into());
    }

    let columns = check_layout(&conn, table, path)?;

    // Only the first process to open the file switches it (a write); the
    // mode is stored in the file, so the others just read it.
    let current: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(sqlite(format!("cannot read the journal mode of `{shown}`")))?;
    if !current.eq_ignore_ascii_case("wal") {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sqlite(format!("cannot switch `{shown}` to WAL mode")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(PluginError::backend(format!(
                "`{shown}` stays in journal mode `{mode}` instead of WAL (is it on a network \
                 file system? this backend needs a local disk)"
            ))
            .into());
        }
    }
    // FULL: a committed fence survives a power loss too, so a fence is never
    // handed out twice. Without it, WAL may roll back the last commits on an
    // OS crash.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite(format!("cannot set synchronous=FULL on `{shown}`")))?;
    // A table that has every column already needs neither (the common case:
    // every open but the first), and skipping them spares parsing the SQL.
    if columns.is_empty() {
        conn.execute_batch(&statements.create_table)
            .map_err(sqlite(format!("cannot create table `{table}` in `{shown}`")))?;
    }
    if columns.is_empty() || lacks_added_columns(&columns) {
        add_columns(&conn, table)
            .map_err(sqlite(format!("cannot add the owner columns to `{table}` in `{shown}`")))?;
    }
    // Preparing now proves the table takes the writes every caller makes
    // (not, say, a view of the same columns), and warms the cache for the
    // first lock. The statements only some callers use are prepared when
    // first used: the columns they name were checked above.
    for sql in [&statements.acquire, &statements.release] {
        conn.prepare_cached(sql)
            .map_err(sqlite(format!("table `{table}` in `{shown}` does not fit this backend")))?;
    }
    Ok(conn)
}

/// Refuses, before SQLite sees it, a path that cannot be a lock database.
fn check_file(path: &Path) -> Result<(), PluginError> {
    let shown = path.display();
    let text = path.as_os_str().to_string_lossy();
    if text.is_empty() {
        return Err(PluginError::invalid("`path` is empty; give the database file to use"));
    }
    if text == ":memory:" {
        return Err(PluginError::invalid(
            "`path` is \":memory:\", which would be private to one instance and lock nothing; \
             give a file shared by the processes, or use the memory backend",
        ));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match parent.metadata() {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(PluginError::invalid(format!(
                "`{}` (the folder of `path`) is not a directory",
                parent.display()
            )));
        }
        Err(e) if e.kind() == IoKind::NotFound => {
            return Err(PluginError::invalid(format!(
                "directory `{}` does not exist; create it before using `{shown}`",
                parent.display()
            )));
        }
        Err(e) => {
            return Err(PluginError::invalid(format!(
                "cannot reach directory `{}`: {e}",
                parent.display()
            )));
        }
    }
    let meta = match path.metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(()), // created on open
        Err(e) => return Err(PluginError::invalid(format!("cannot access `{shown}`: {e}"))),
    };
    if meta.is_dir() {
        return Err(PluginError::invalid(format!(
            "`{shown}` is a directory; `path` must name the database file"
        )));
    }
    // A device or pipe (`/dev/null`) would swallow the locks, and SQLite
    // would create `-wal` and `-shm` files beside it.
    if !meta.is_file() {
        return Err(PluginError::invalid(format!(
            "`{shown}` is not a regular file; `path` must name the database file"
        )));
    }
    let mut head = Vec::with_capacity(16);
    File::open(path)
        .and_then(|f| f.take(16).read_to_end(&mut head))
        .map_err(|e| PluginError::invalid(format!("cannot read `{shown}`: {e}")))?;
    // An empty file is an empty database to SQLite (e.g. made by `touch`).
    if !head.is_empty() && head.as_slice() != SQLITE_HEADER {
        return Err(PluginError::invalid(format!(
            "`{shown}` is not a SQLite database (its header is not \"SQLite format 3\"); \
             refusing to touch it"
        )));
    }
    Ok(())
}

/// Adds the columns of [`crate::sql::ADDED_COLUMNS`] that a table made by an
/// older version lacks. In one immediate transaction, so two processes
/// opening an old file at once do not both add a column (the second waits,
/// then finds it there).
fn add_columns(conn: &Connection, table: &str) -> rusqlite::Result<()> {
    let has = |conn: &Connection| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
        let names = stmt.query_map([table], |row| row.get::<_, String>(0))?;
        names.collect()
    };
    if !lacks_added_columns(&has(conn)?) {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let have = has(conn)?;
        for (column, kind) in crate::sql::ADDED_COLUMNS {
            if !have.iter().any(|h| h == column) {
                conn.execute_batch(&format!("ALTER TABLE \"{table}\" ADD COLUMN {column} {kind}"))?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Whether a table with `columns` lacks one of [`crate::sql::ADDED_COLUMNS`].
fn lacks_added_columns(columns: &[String]) -> bool {
    crate::sql::ADDED_COLUMNS.iter().any(|(c, _)| !columns.iter().any(|h| h == c))
}

/// Refuses an existing table of the same name that has other columns, before
/// anything is written. Returns the table's columns: none when it does not
/// exist yet.
fn check_layout(conn: &Connection, table: &str, path: &Path) -> Result<Vec<String>, Failure> {
    let shown = path.display();
    let read = || -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
        let names = stmt.query_map([table], |row| row.get::<_, String>(0))?;
        names.collect()
    };
    let columns = read().map_err(sqlite(format!("cannot read `{shown}`")))?;
    if columns.is_empty() {
        return Ok(columns);
    }
    let missing: Vec<&str> =
        COLUMNS.iter().copied().filter(|c| !columns.iter().any(|have| have == c)).collect();
    if !missing.is_empty() {
        return Err(PluginError::invalid(format!(
            "table `{table}` in `{shown}` already exists with other columns ({}), missing {}; \
             choose another `table`",
            columns.join(", "),
            missing.join(", ")
        ))
        .into());
    }
    Ok(columns)
}

/// Sorts a SQLite failure while opening into bad config versus broken backend.
fn classify(e: rusqlite::Error, what: &str) -> PluginError {
    let message = format!("{what}: {e}");
    match e.sqlite_error_code() {
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::NotADatabase
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::AuthorizationForStatementDenied,
        ) => PluginError::invalid(message),
        _ => PluginError::backend(message),
    }
}
