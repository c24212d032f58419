//! The config object, its defaults and limits, and the checked settings
//! built from it.

use std::fmt;
use std::time::Duration;

use bext_locking::PluginError;
use bext_locking::redact::Secrets;
use bext_locking_kit::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use crate::redact::{guess, url_shape};

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
#[serde(rename_all = "lowercase")]
// Plain comments on the variants: doc comments would turn the schema's
// `enum` into a `oneOf` of constants.
#[allow(missing_docs)]
pub enum Mode {
    // Rows in a lock table with an expiry on the database clock, and a fence.
    #[default]
    Lease,
    // Session advisory locks, one dedicated connection per held lock.
    Advisory,
}

/// The pg backend's config object, as `create` receives it.
///
/// Every field but `url` is optional. `Debug` never shows the password.
#[derive(Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgConfig {
    /// libpq connection string, URL (postgres://user:pass@host:5432/db) or
    /// key=value; the password never appears in errors.
    #[schemars(length(min = 1))]
    pub url: String,
    /// lease: lock table rows on the database clock, fenced; advisory:
    /// session advisory locks on a dedicated connection per held lock, no
    /// fence.
    #[serde(default)]
    pub mode: Mode,
    /// Connections per instance; in advisory mode also the most locks held
    /// at once.
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = 1, max = MAX_POOL_SIZE))]
    pub pool_size: u32,
    /// Limit on opening a connection and on waiting for a free one, in
    /// milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS))]
    pub connect_timeout_ms: u64,
    /// Limit on one statement, on the server and the client, in
    /// milliseconds.
    #[serde(default = "default_statement_timeout_ms")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS))]
    pub statement_timeout_ms: u64,
    /// Schema of the lock table (lease mode); default: the connection's
    /// search_path.
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$"))]
    pub schema: Option<String>,
    /// The lock table (lease mode).
    #[serde(default = "default_table")]
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$"))]
    pub table: String,
    /// Create the schema and lock table when missing (lease mode).
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

impl PgConfig {
    /// A config with every default and the given connection string.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            mode: Mode::default(),
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            statement_timeout_ms: DEFAULT_STATEMENT_TIMEOUT_MS,
            schema: None,
            table: default_table(),
            create_table: true,
        }
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secrets = guess(&self.url);
        f.debug_struct("PgConfig")
            .field("url", &secrets.scrub(&self.url))
            .field("mode", &self.mode)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("create_table", &self.create_table)
            .finish()
    }
}

/// The lock table's name, checked and quoted.
#[derive(Debug, Clone)]
pub struct TableName {
    /// `"schema"."table"` or `"table"`, ready to put into SQL.
    pub quoted: String,
    /// The schema as given, when one was.
    pub schema: Option<String>,
}

/// A checked config: what the rest of the crate works from.
pub(crate) struct Settings {
    pub pg: tokio_postgres::Config,
    /// `postgres://user@host:port/db`, never with the password: every error
    /// message names it.
    pub target: String,
    pub secrets: Secrets,
    pub mode: Mode,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub table: TableName,
    pub create_table: bool,
}

impl Settings {
    /// Checks what the schema cannot (the connection string, the
    /// identifiers) and builds the connection config; ranges were checked
    /// against the schema.
    pub fn from_config(c: &PgConfig) -> Result<Self, PluginError> {
        let secrets = guess(&c.url);
        if c.url.trim().is_empty() {
            return Err(PluginError::invalid("url is empty; give a PostgreSQL connection string"));
        }
        let mut pg: tokio_postgres::Config = c.url.parse().map_err(|e| {
            if let Some(port) = url_port_out_of_range(&c.url) {
                return PluginError::invalid(
                    secrets.scrub(&format!("url: port {port} is out of range (1 to 65535)")),
                );
            }
            PluginError::invalid(secrets.scrub(&format!(
                "url is not a valid PostgreSQL connection string: {}",
                crate::fail::describe_error(&e)
            )))
        })?;
        let mut secrets = secrets;
        if let Some(password) = pg.get_password() {
            secrets.add(&String::from_utf8_lossy(password));
        }
        if pg.get_hosts().is_empty() {
            return Err(PluginError::invalid(
                secrets.scrub(&format!("url `{}` names no host", url_shape(&pg))),
            ));
        }
        let table = table_name(c.schema.as_deref(), &c.table)?;

        let connect_timeout = Duration::from_millis(c.connect_timeout_ms);
        let statement_timeout = Duration::from_millis(c.statement_timeout_ms);
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(connect_timeout);
        }
        // The server cancels a statement that runs too long and keeps the
        // connection usable; the client's own deadline is the backstop.
        let mut options = pg.get_options().unwrap_or_default().to_owned();
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c statement_timeout={}", c.statement_timeout_ms));
        pg.options(&options);
        if pg.get_application_name().is_none() {
            pg.application_name("bext-locking-pg");
        }
        // Unacknowledged writes (a vanished server or network) fail the
        // socket instead of waiting for the kernel's 15-minute default.
        if pg.get_tcp_user_timeout().is_none() {
            pg.tcp_user_timeout(connect_timeout + statement_timeout);
        }
        let target = url_shape(&pg);
        Ok(Self {
            pg,
            target,
            secrets,
            mode: c.mode,
            pool_size: c.pool_size as usize,
            connect_timeout,
            statement_timeout,
            table,
            create_table: c.create_table,
        })
    }

    /// The longest a single call may take: waiting for or opening a
    /// connection, then one statement.
    pub fn call_budget(&self) -> Duration {
        self.connect_timeout + self.statement_timeout
    }
}

/// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_IDENT_BYTES: usize = 63;

/// Checks an identifier against a conservative alphabet, so it can never
/// change the SQL it is put into, and quotes it (keeping its case).
pub fn quote_ident(what: &str, name: &str) -> Result<String, PluginError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if !first_ok || !rest_ok || name.len() > MAX_IDENT_BYTES {
        return Err(PluginError::invalid(format!(
            "{what} {name:?} is not an accepted identifier: use 1 to {MAX_IDENT_BYTES} ASCII \
             letters, digits, `_` or `$`, starting with a letter or `_`"
        )));
    }
    Ok(format!("\"{name}\""))
}

fn table_name(schema: Option<&str>, table: &str) -> Result<TableName, PluginError> {
    let table_q = quote_ident("table", table)?;
    let quoted = match schema {
        Some(s) => format!("{}.{table_q}", quote_ident("schema", s)?),
        None => table_q,
    };
    Ok(TableName { quoted, schema: schema.map(str::to_owned) })
}

/// The port of a `postgres://[user@]host:port[/...]` URL when it is a
/// number too large for a port (the parser only says "invalid value").
fn url_port_out_of_range(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = host_port.rsplit_once(':')?.1;
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    (digits && port.parse::<u64>().map_or(true, |p| p > 65_535)).then_some(port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bext_locking::ErrorKind;

    fn settings(json: serde_json::Value) -> Result<Settings, PluginError> {
        let c: PgConfig = bext_locking_kit::config::parse_value(json)?;
        Settings::from_config(&c)
    }

    #[test]
    fn defaults() {
        let s = settings(serde_json::json!({"url": "postgres://u@h/db"})).unwrap();
        assert_eq!(s.mode, Mode::Lease);
        assert_eq!(s.pool_size, 10);
        assert_eq!(s.table.quoted, "\"bext_locks\"");
        assert!(s.create_table);
        assert_eq!(s.pg.get_options(), Some("-c statement_timeout=5000"));
        assert_eq!(s.pg.get_application_name(), Some("bext-locking-pg"));
        assert_eq!(s.target, "postgres://u@h:5432/db");
    }

    #[test]
    fn options_in_url_are_kept() {
        let s = settings(serde_json::json!({
            "url": "host=h user=u options='-c search_path=x' application_name=me",
            "statement_timeout_ms": 250,
            "schema": "Locks", "table": "my_locks$1"
        }))
        .unwrap();
        assert_eq!(s.pg.get_options(), Some("-c search_path=x -c statement_timeout=250"));
        assert_eq!(s.pg.get_application_name(), Some("me"));
        assert_eq!(s.table.quoted, "\"Locks\".\"my_locks$1\"");
    }

    #[test]
    fn hostile_identifiers_are_rejected() {
        for (field, bad) in [
            ("table", "x\"; DROP TABLE y; --"),
            ("table", ""),
            ("table", "1abc"),
            ("table", "a.b"),
            ("table", "ключ"),
            ("schema", "public\" --"),
            ("table", &"t".repeat(64)),
        ] {
            let err = settings(serde_json::json!({"url": "postgres://u@h/db", field: bad}))
                .err()
                .unwrap_or_else(|| panic!("{field}={bad:?} accepted"));
            assert_eq!(err.kind, ErrorKind::InvalidArgument);
            assert!(err.message.starts_with(field), "{}", err.message);
            assert!(err.message.contains("not an accepted identifier"), "{}", err.message);
        }
        assert!(
            settings(serde_json::json!({"url": "postgres://u@h/db", "table": &"t".repeat(63)}))
                .is_ok()
        );
    }

    #[test]
    fn ranges_are_checked() {
        for (field, bad) in [
            ("pool_size", 0u64),
            ("pool_size", 1001),
            ("connect_timeout_ms", 0),
            ("statement_timeout_ms", 600_001),
        ] {
            let err = settings(serde_json::json!({"url": "postgres://u@h/db", field: bad}))
                .err()
                .unwrap();
            assert!(err.message.starts_with(field), "{}", err.message);
        }
    }

    #[test]
    fn bad_urls_never_show_the_password() {
        for url in [
            "postgres://u:hunter2secret@h:notaport/db",
            "postgres://u:hunter2secret@h/db?bogus_option=1",
            "host=h user=u password=hunter2secret port=x",
            "host=h password='hunter2secret' nonsense",
            "postgres://u:hunter2secret@/db",
        ] {
            let err = settings(serde_json::json!({ "url": url })).err().unwrap();
            assert!(!err.message.contains("hunter2"), "{url}: {}", err.message);
        }
        let c: PgConfig =
            serde_json::from_value(serde_json::json!({"url": "postgres://u:hunter2secret@h/db"}))
                .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
