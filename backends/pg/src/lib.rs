//! The PostgreSQL bext-locking backend.
//!
//! Two ways to hold a lock, chosen by `"mode"` in the config:
//!
//! * **`lease`** (default): a row per key in a lock table, whose expiry is
//!   computed by the database server's clock, so hosts with skewed clocks
//!   still agree. Acquiring is one statement that inserts the row or takes
//!   over an expired one and returns a fence that rises with every
//!   acquisition of the key. Any instance holding the handle can renew or
//!   release it; a crashed holder's lock frees itself when its TTL runs out.
//! * **`advisory`**: a session advisory lock on a connection kept for that
//!   lock alone, keyed by a stable 64-bit hash of the key. The plugin
//!   enforces the TTL; a crashed holder's lock frees at once because its
//!   connection closes. No fence, and only the acquiring instance can renew
//!   or release.
//!
//! Every statement takes its values as parameters; the only names put into
//! SQL are the schema and table, which must be plain identifiers and are
//! quoted. Every call returns within `connect_timeout_ms +
//! statement_timeout_ms` (a stale connection is retried once on a new one),
//! and no message ever contains the password. See `docs/backends/pg.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod advisory;
mod config;
mod conn;
pub mod keyhash;
mod lease;
mod pool;
mod redact;

use std::ffi::CStr;

use bext_locking::{LockHandle, LockingPlugin, PluginError, validate_lock_request};

pub use config::{
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT_MS, DEFAULT_TABLE,
    MAX_POOL_SIZE, MAX_TIMEOUT_MS, Mode, PgConfig,
};

/// The SQL each mode prepares on every connection, for tools (and the
/// benchmark) that issue the same statements directly.
pub mod sql {
    /// Lease mode's acquire (`$1` key bytes, `$2` lock id, `$3` TTL in ms;
    /// returns the fence), renew (same parameters) and release (`$1`, `$2`),
    /// on `table`, an already quoted name.
    pub fn lease(table: &str) -> Vec<String> {
        crate::lease::statements(table)
    }

    /// The `CREATE TABLE` of lease mode's lock table.
    pub fn lease_table(table: &str) -> String {
        crate::lease::create_table_sql(table)
    }

    /// Advisory mode's try-lock and unlock (`$1`: the key's
    /// [`advisory_key`](crate::keyhash::advisory_key)) and its liveness ping.
    pub fn advisory() -> Vec<String> {
        crate::advisory::statements()
    }
}

use crate::config::Settings;
use crate::conn::Fail;
use crate::pool::Pool;

enum Backend {
    // Boxed: a lease instance is much larger than an advisory one.
    Lease(Box<lease::Lease>),
    Advisory(advisory::Advisory),
}

/// An instance of the pg backend, in either mode.
pub struct PgPlugin {
    backend: Backend,
}

impl PgPlugin {
    /// Connects (creating the lock table when asked) and builds an
    /// instance. A bad value is `InvalidArgument`; an unreachable server or
    /// a missing table is `Backend`.
    pub fn new(config: &PgConfig) -> Result<Self, PluginError> {
        let settings = Settings::from_config(config)?;
        let backend = match settings.mode {
            Mode::Lease => Backend::Lease(Box::new(lease::Lease::open(settings)?)),
            Mode::Advisory => Backend::Advisory(advisory::Advisory::open(settings)?),
        };
        Ok(Self { backend })
    }

    /// Parses a config object exactly as the `.so` does (unknown keys are
    /// errors) and builds an instance.
    pub fn from_json(config: &str) -> Result<Self, PluginError> {
        use bext_locking_ffi::Export;
        let config: PgConfig = bext_locking_ffi::parse_config(config, &Exported::config_schema())?;
        Self::new(&config)
    }

    /// The mode this instance runs in.
    pub fn mode(&self) -> Mode {
        match self.backend {
            Backend::Lease(_) => Mode::Lease,
            Backend::Advisory(_) => Mode::Advisory,
        }
    }

    fn pool(&self) -> &Pool {
        match &self.backend {
            Backend::Lease(l) => l.pool(),
            Backend::Advisory(a) => a.pool(),
        }
    }

    /// The caller's message: which server, which call, what happened, with
    /// anything password-like removed.
    fn message(&self, call: &str, fail: &Fail) -> String {
        let s = self.pool().settings();
        s.secrets.scrub(&format!("pg ({}): {call}: {}", s.target, fail.message))
    }
}

impl LockingPlugin for PgPlugin {
    fn name(&self) -> &str {
        "pg"
    }

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        validate_lock_request(key, ttl_ms)?;
        match &self.backend {
            Backend::Lease(l) => l.try_lock(key, ttl_ms),
            Backend::Advisory(a) => a.try_lock(key, ttl_ms),
        }
        .map_err(|f| self.message("try_lock", &f))
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        validate_lock_request(&handle.key, handle.ttl_ms)?;
        match &self.backend {
            Backend::Lease(l) => match l.renew(handle) {
                Ok(true) => Ok(()),
                Ok(false) => Err(advisory::not_held(&handle.key)),
                Err(e) => Err(e),
            },
            Backend::Advisory(a) => a.renew(handle),
        }
        .map_err(|f| self.message("renew", &f))
    }

    fn release(&self, handle: LockHandle) -> Result<(), String> {
        validate_lock_request(&handle.key, handle.ttl_ms)?;
        match &self.backend {
            Backend::Lease(l) => l.release(&handle),
            Backend::Advisory(a) => a.release(&handle),
        }
        .map_err(|f| self.message("release", &f))
    }

    fn cleanup(&self) {
        match &self.backend {
            Backend::Lease(l) => l.cleanup(),
            Backend::Advisory(a) => a.cleanup(),
        }
    }
}

impl std::fmt::Debug for PgPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPlugin")
            .field("mode", &self.mode())
            .field("server", &self.pool().settings().target)
            .finish_non_exhaustive()
    }
}

impl Drop for PgPlugin {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// The export description used by the `.so`.
pub struct Exported;

impl bext_locking_ffi::Export for Exported {
    type Plugin = PgPlugin;
    type Config = PgConfig;
    const NAME: &'static CStr = c"pg";
    const VERSION: &'static CStr = bext_locking_ffi::crate_version_cstr!();
    const DESCRIPTION: &'static str = "PostgreSQL locks: fenced TTL leases on the database clock \
        (default), or session advisory locks on dedicated connections";
    const FENCING: bool = true;

    fn config_schema() -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["url"],
            "properties": {
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "description": "libpq connection string, URL (postgres://user:pass@host:5432/db) or key=value; the password never appears in errors"
                },
                "mode": {
                    "type": "string",
                    "enum": ["lease", "advisory"],
                    "default": "lease",
                    "description": "lease: lock table rows on the database clock, fenced; advisory: session advisory locks on a dedicated connection per held lock, no fence"
                },
                "pool_size": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_POOL_SIZE,
                    "default": DEFAULT_POOL_SIZE,
                    "description": "connections per instance; in advisory mode also the most locks held at once"
                },
                "connect_timeout_ms": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TIMEOUT_MS,
                    "default": DEFAULT_CONNECT_TIMEOUT_MS,
                    "description": "limit on opening a connection and on waiting for a free one"
                },
                "statement_timeout_ms": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TIMEOUT_MS,
                    "default": DEFAULT_STATEMENT_TIMEOUT_MS,
                    "description": "limit on one statement, on the server and the client"
                },
                "schema": {
                    "type": "string",
                    "pattern": "^[A-Za-z_][A-Za-z0-9_$]{0,62}$",
                    "description": "schema of the lock table (lease mode); default: the connection's search_path"
                },
                "table": {
                    "type": "string",
                    "pattern": "^[A-Za-z_][A-Za-z0-9_$]{0,62}$",
                    "default": DEFAULT_TABLE,
                    "description": "the lock table (lease mode)"
                },
                "create_table": {
                    "type": "boolean",
                    "default": true,
                    "description": "create the schema and lock table when missing (lease mode)"
                }
            }
        })
    }

    fn create(config: PgConfig) -> Result<PgPlugin, PluginError> {
        PgPlugin::new(&config)
    }
}

bext_locking_ffi::export_locking_plugin!(Exported);
