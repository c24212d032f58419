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
//! Waiting for a lock (`lock_wait`) blocks on the server in both modes: in
//! lease mode a `LISTEN` on the key's channel, which release, force release
//! and `renew_for` notify in their own statements, plus a wake-up at the
//! holder's lease end; in advisory mode `pg_advisory_lock` with the
//! server's `lock_timeout`, in the server's own queue. A cancel wakes the
//! first and sends a cancel request for the second.
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
mod connections;
mod deadlines;
mod fail;
pub mod keyhash;
mod lease;
mod redact;

use std::ffi::CStr;

use bext_locking::{Acquired, ForceReleased, LockHandle, LockInfo, PluginError, Wait};
use bext_locking_kit::Backend;

pub use config::{
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT_MS, DEFAULT_TABLE,
    MAX_POOL_SIZE, MAX_TIMEOUT_MS, Mode, PgConfig,
};

/// The SQL each mode prepares on every connection, for tools (and the
/// benchmark) that issue the same statements directly.
pub mod sql {
    /// Lease mode's acquire (`$1` key bytes, `$2` lock id, `$3` TTL in ms,
    /// `$4` owner or NULL; returns the fence), renew (`$1`..`$3`), release
    /// (`$1`, `$2`), inspect (`$1`), force release (`$1`, `$2` fence or
    /// NULL, `$3` a fresh lock id), renew-for (`$1`..`$3`) and a waiter's
    /// acquire (as acquire; returns the fence, or the holder's milliseconds
    /// left), on `table`, an already quoted name. Release, force release
    /// and renew-for notify the key's `LISTEN` channel.
    pub fn lease(table: &str) -> Vec<String> {
        crate::lease::statements(table, true)
    }

    /// The `CREATE TABLE` of lease mode's lock table.
    pub fn lease_table(table: &str) -> String {
        crate::lease::create_table_sql(table)
    }

    /// Advisory mode's try-lock and unlock (`$1`: the key's
    /// [`advisory_key`](crate::keyhash::advisory_key)), its liveness ping,
    /// and a waiter's blocking lock (`$1`).
    pub fn advisory() -> Vec<String> {
        crate::advisory::statements()
    }
}

use crate::config::Settings;
use crate::connections::Pool;
use crate::fail::Fail;

enum Held {
    // Boxed: a lease instance is much larger than an advisory one.
    Lease(Box<lease::Lease>),
    Advisory(advisory::Advisory),
}

/// The pg backend, in either mode.
pub struct Pg {
    backend: Held,
}

/// An instance of the pg backend, in-process.
pub type PgPlugin = bext_locking_kit::Plugin<Pg>;

impl Pg {
    /// The mode this instance runs in.
    pub fn mode(&self) -> Mode {
        match self.backend {
            Held::Lease(_) => Mode::Lease,
            Held::Advisory(_) => Mode::Advisory,
        }
    }

    fn pool(&self) -> &Pool {
        match &self.backend {
            Held::Lease(l) => l.pool(),
            Held::Advisory(a) => a.pool(),
        }
    }

    /// The caller's message: which server, which call, what happened, with
    /// anything password-like removed.
    fn fail<'a>(&'a self, call: &'a str) -> impl FnOnce(Fail) -> PluginError + 'a {
        move |fail| {
            let s = self.pool().settings();
            PluginError::backend(
                s.secrets.scrub(&format!("pg ({}): {call}: {}", s.target, fail.message)),
            )
        }
    }
}

impl Backend for Pg {
    const NAME: &'static CStr = c"pg";
    type Config = PgConfig;

    /// Connects (creating the lock table when asked). A bad value is
    /// `InvalidArgument`; an unreachable server or a missing table is
    /// `Backend`.
    fn create(config: PgConfig) -> Result<Self, PluginError> {
        let settings = Settings::from_config(&config)?;
        let backend = match settings.mode {
            Mode::Lease => Held::Lease(Box::new(lease::Lease::open(settings)?)),
            Mode::Advisory => Held::Advisory(advisory::Advisory::open(settings)?),
        };
        Ok(Self { backend })
    }

    /// Lease mode serves the first three; advisory mode stores no owner
    /// and answers `inspect` and `force_release` as unsupported (saying
    /// why, see `docs/backends/pg.md`). Both modes wait on a notification
    /// (`LISTEN`, or the server's lock queue) and set a lease's remaining
    /// time.
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
        match &self.backend {
            Held::Lease(l) => l.try_lock(key, ttl_ms, owner),
            Held::Advisory(a) => a.try_lock(key, ttl_ms),
        }
        .map_err(self.fail("try_lock"))
    }

    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        match &self.backend {
            Held::Lease(l) => l.inspect(key).map_err(self.fail("inspect")),
            Held::Advisory(_) => Err(PluginError::unsupported(advisory::INSPECT_UNSUPPORTED)),
        }
    }

    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        match &self.backend {
            Held::Lease(l) => l.force_release(key, if_fence).map_err(self.fail("force_release")),
            Held::Advisory(_) => Err(PluginError::unsupported(advisory::FORCE_UNSUPPORTED)),
        }
    }

    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        match &self.backend {
            Held::Lease(l) => l.lock_wait(key, ttl_ms, owner, wait),
            Held::Advisory(a) => a.lock_wait(key, ttl_ms, wait),
        }
        .map_err(self.fail("lock_wait"))
    }

    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        match &self.backend {
            Held::Lease(l) => match l.renew_for(handle, ttl_ms) {
                Ok(true) => Ok(()),
                Ok(false) => Err(advisory::not_held(&handle.key)),
                Err(e) => Err(e),
            },
            Held::Advisory(a) => a.renew_for(handle, ttl_ms),
        }
        .map_err(self.fail("renew_for"))
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), PluginError> {
        match &self.backend {
            Held::Lease(l) => match l.renew(handle) {
                Ok(true) => Ok(()),
                Ok(false) => Err(advisory::not_held(&handle.key)),
                Err(e) => Err(e),
            },
            Held::Advisory(a) => a.renew(handle),
        }
        .map_err(self.fail("renew"))
    }

    fn release(&self, handle: &LockHandle) -> Result<(), PluginError> {
        match &self.backend {
            Held::Lease(l) => l.release(handle),
            Held::Advisory(a) => a.release(handle),
        }
        .map_err(self.fail("release"))
    }

    fn cleanup(&self) {
        match &self.backend {
            Held::Lease(l) => l.cleanup(),
            Held::Advisory(a) => a.cleanup(),
        }
    }
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPlugin")
            .field("mode", &self.mode())
            .field("server", &self.pool().settings().target)
            .finish_non_exhaustive()
    }
}

/// The export description used by the `.so`.
pub struct Exported;

impl bext_locking_ffi::Export for Exported {
    type Backend = Pg;
    const VERSION: &'static CStr = bext_locking_ffi::crate_version_cstr!();
    const DESCRIPTION: &'static str = "PostgreSQL locks: fenced TTL leases on the database clock \
        (default), or session advisory locks on dedicated connections";
    const FENCING: bool = true;
}

bext_locking_ffi::export_locking_plugin!(Exported);
