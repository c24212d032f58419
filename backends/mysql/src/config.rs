//! The config object, its defaults and limits, and the checked settings
//! built from it.

use std::fmt;
use std::time::Duration;

use bext_locking::PluginError;
use bext_locking::redact::{LoneUser, Secrets, url_password};
use bext_locking_kit::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

/// The default lock table.
pub const DEFAULT_TABLE: &str = "bext_locks";
/// The default number of connections per instance.
pub const DEFAULT_POOL_SIZE: u32 = 10;
/// The default limit on opening one connection, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// The default limit on one statement, in milliseconds.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 5_000;
/// The largest `pool_size`.
pub const MAX_POOL_SIZE: u32 = 1_000;
/// The largest `connect_timeout_ms` and `statement_timeout_ms` (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// How locks are held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
// Plain comments on the variants: doc comments would turn the schema's
// `enum` into a `oneOf` of constants.
#[allow(missing_docs)]
pub enum Mode {
    // Rows in a lock table with an expiry on the database clock, and a fence.
    #[default]
    Lease,
    // GET_LOCK named locks, one dedicated connection per held lock.
    GetLock,
}

/// The mysql backend's config object, as `create` receives it.
///
/// Every field but `url` is optional. `Debug` never shows the password.
#[derive(Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// mysql://user:pass@host:3306/db (MySQL or MariaDB); the password never
    /// appears in errors.
    #[schemars(length(min = 1))]
    pub url: String,
    /// lease: lock table rows on the database clock, fenced; get_lock:
    /// GET_LOCK named locks on a dedicated connection per held lock, no
    /// fence.
    #[serde(default)]
    pub mode: Mode,
    /// Connections per instance; in get_lock mode also the most locks held
    /// at once.
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = 1, max = MAX_POOL_SIZE))]
    pub pool_size: u32,
    /// Limit on opening a connection and on waiting for a free one, in
    /// milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS))]
    pub connect_timeout_ms: u64,
    /// Limit on each wait for the server's answer to a statement, on the
    /// client (and, on MariaDB, on the server), in milliseconds.
    #[serde(default = "default_statement_timeout_ms")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS))]
    pub statement_timeout_ms: u64,
    /// The lock table (lease mode), in the URL's database.
    #[serde(default = "default_table")]
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_$]{0,63}$"))]
    pub table: String,
    /// Create the lock table when missing (lease mode).
    #[serde(default = "default_true")]
    pub create_table: bool,
}

fn default_pool_size() -> u32 {
    DEFAULT_POOL_SIZE
}
fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_statement_timeout_ms() -> u64 {
    DEFAULT_STATEMENT_TIMEOUT_MS
}
fn default_table() -> String {
    DEFAULT_TABLE.to_owned()
}
fn default_true() -> bool {
    true
}

impl MysqlConfig {
    /// A config with every default and the given URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            mode: Mode::default(),
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            statement_timeout_ms: DEFAULT_STATEMENT_TIMEOUT_MS,
            table: default_table(),
            create_table: true,
        }
    }
}

impl fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("url", &guess(&self.url).scrub(&self.url))
            .field("mode", &self.mode)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("table", &self.table)
            .field("create_table", &self.create_table)
            .finish()
    }
}

/// The password of a URL that may not even parse.
pub(crate) fn guess(url: &str) -> Secrets {
    let mut secrets = Secrets::new();
    if let Some(pass) = url_password(url, LoneUser::Name) {
        secrets.add(pass);
    }
    secrets
}

/// A checked config: what the rest of the crate works from.
#[derive(Clone)]
pub(crate) struct Settings {
    /// The driver's options, timeouts included.
    pub opts: mysql::Opts,
    /// `mysql://user@host:port/db`, never with the password: every error
    /// message names it.
    pub target: String,
    pub secrets: Secrets,
    pub mode: Mode,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// The lock table as written in SQL: `` `name` ``.
    pub table: String,
    /// The bare table name, for `information_schema`.
    pub table_name: String,
    pub create_table: bool,
}

impl Settings {
    /// Checks what the schema cannot (the URL, the identifier) and builds
    /// the driver's options; ranges were checked against the schema.
    pub fn from_config(c: &MysqlConfig) -> Result<Self, PluginError> {
        let mut secrets = guess(&c.url);
        let url = c.url.trim();
        if url.is_empty() {
            return Err(PluginError::invalid("url is empty; give mysql://user:pass@host:port/db"));
        }
        if !url.starts_with("mysql://") {
            return Err(PluginError::invalid(secrets.scrub(&format!(
                "url `{url}` is not a MySQL URL: give mysql://user:pass@host:port/db"
            ))));
        }
        let opts = mysql::Opts::from_url(url).map_err(|e| {
            PluginError::invalid(secrets.scrub(&format!("url is not a valid MySQL URL: {e}")))
        })?;
        if let Some(pass) = opts.get_pass() {
            secrets.add(pass);
        }
        if opts.get_socket().is_some() {
            return Err(PluginError::invalid(
                "url: `socket` is not supported; connect over TCP (host:port)",
            ));
        }
        let table = quote_ident("table", &c.table)?;
        let connect_timeout = Duration::from_millis(c.connect_timeout_ms);
        let statement_timeout = Duration::from_millis(c.statement_timeout_ms);
        let init = session_setup(c.statement_timeout_ms);
        let opts: mysql::Opts = mysql::OptsBuilder::from_opts(opts)
            // The driver would otherwise switch a loopback connection to the
            // server's Unix socket, around any timeout or proxy on TCP.
            .prefer_socket(false)
            .tcp_connect_timeout(Some(connect_timeout))
            .read_timeout(Some(statement_timeout))
            .write_timeout(Some(statement_timeout))
            .tcp_nodelay(true)
            .init(init)
            .into();
        let target = format!(
            "mysql://{}{}:{}/{}",
            opts.get_user().map(|u| format!("{u}@")).unwrap_or_default(),
            opts.get_ip_or_hostname(),
            opts.get_tcp_port(),
            opts.get_db_name().unwrap_or_default()
        );
        if opts.get_db_name().is_none_or(str::is_empty) && c.mode == Mode::Lease {
            return Err(PluginError::invalid(secrets.scrub(&format!(
                "url `{target}` names no database: lease mode keeps its table in the URL's \
                 database (mysql://user:pass@host:port/db)"
            ))));
        }
        Ok(Self {
            opts,
            target,
            secrets,
            mode: c.mode,
            pool_size: c.pool_size as usize,
            connect_timeout,
            statement_timeout,
            table,
            table_name: c.table.clone(),
            create_table: c.create_table,
        })
    }

    /// The longest a single call waits for a connection, then for its
    /// statement's answer.
    pub fn call_budget(&self) -> Duration {
        self.connect_timeout + self.statement_timeout
    }
}

/// What every connection runs once: READ COMMITTED (no gap locks, so two
/// first acquisitions of one key serialise on its index entry instead of
/// deadlocking), and the server's own limits on waiting for a row lock and
/// (MariaDB only, in a comment that MySQL skips) on running a statement.
pub(crate) fn session_setup(statement_timeout_ms: u64) -> Vec<String> {
    let lock_wait_s = statement_timeout_ms.div_ceil(1000).max(1);
    let statement_s = statement_timeout_ms as f64 / 1000.0;
    vec![
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned(),
        format!(
            "SET SESSION innodb_lock_wait_timeout = {lock_wait_s} \
             /*M!100101 , max_statement_time = {statement_s:.3} */"
        ),
    ]
}

/// The longest identifier MySQL and MariaDB keep.
const MAX_IDENT_CHARS: usize = 64;

/// Checks an identifier against a conservative alphabet, so it can never
/// change the SQL it is put into, and quotes it.
pub fn quote_ident(what: &str, name: &str) -> Result<String, PluginError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if !first_ok || !rest_ok || name.len() > MAX_IDENT_CHARS {
        return Err(PluginError::invalid(format!(
            "{what} {name:?} is not an accepted identifier: use 1 to {MAX_IDENT_CHARS} ASCII \
             letters, digits, `_` or `$`, starting with a letter or `_`"
        )));
    }
    Ok(format!("`{name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bext_locking::ErrorKind;

    fn settings(json: serde_json::Value) -> Result<Settings, PluginError> {
        let c: MysqlConfig = bext_locking_kit::config::parse_value(json)?;
        Settings::from_config(&c)
    }

    #[test]
    fn defaults() {
        let s = settings(serde_json::json!({"url": "mysql://u:pw@h/db"})).unwrap();
        assert_eq!(s.mode, Mode::Lease);
        assert_eq!(s.pool_size, 10);
        assert_eq!(s.table, "`bext_locks`");
        assert!(s.create_table);
        assert_eq!(s.target, "mysql://u@h:3306/db");
        assert!(!s.opts.get_prefer_socket());
        assert_eq!(s.opts.get_read_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(s.opts.get_tcp_connect_timeout(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn session_limits_follow_the_statement_timeout() {
        let init = session_setup(1500);
        assert!(init[1].contains("innodb_lock_wait_timeout = 2 "), "{}", init[1]);
        assert!(init[1].contains("max_statement_time = 1.500"), "{}", init[1]);
        assert!(session_setup(1)[1].contains("innodb_lock_wait_timeout = 1 "));
    }

    #[test]
    fn get_lock_needs_no_database() {
        let s = settings(serde_json::json!({"url": "mysql://u@h:3307", "mode": "get_lock"}));
        assert_eq!(s.unwrap().mode, Mode::GetLock);
        let e = settings(serde_json::json!({"url": "mysql://u@h:3307"})).err().unwrap();
        assert!(e.message.contains("names no database"), "{}", e.message);
    }

    #[test]
    fn hostile_identifiers_are_rejected() {
        for bad in ["x`; DROP TABLE y; --", "", "1abc", "a.b", "ключ", &"t".repeat(65)] {
            let err = settings(serde_json::json!({"url": "mysql://u@h/db", "table": bad}))
                .err()
                .unwrap_or_else(|| panic!("table={bad:?} accepted"));
            assert_eq!(err.kind, ErrorKind::InvalidArgument);
            assert!(err.message.starts_with("table"), "{}", err.message);
        }
        let ok = settings(serde_json::json!({"url": "mysql://u@h/db", "table": "t".repeat(64)}));
        assert!(ok.is_ok());
    }

    #[test]
    fn bad_urls_never_show_the_password() {
        for url in [
            "mysql://u:hunter2secret@h:notaport/db",
            "mysql://u:hunter2secret@h/db?bogus_option=1",
            "postgres://u:hunter2secret@h/db",
            "mysql://u:hunter2secret@h/db?socket=/tmp/x",
            "mysql://u:hunter2secret@h",
        ] {
            let err = settings(serde_json::json!({ "url": url })).err().unwrap();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{url}");
            assert!(!err.message.contains("hunter2"), "{url}: {}", err.message);
        }
        let c: MysqlConfig =
            serde_json::from_value(serde_json::json!({"url": "mysql://u:hunter2secret@h/db"}))
                .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
