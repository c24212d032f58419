//! The MySQL/MariaDB bext-locking backend.
//!
//! Two ways to hold a lock, chosen by `"mode"` in the config:
//!
//! * **`lease`** (default): a row per key in a lock table, whose expiry is
//!   computed by the database server's clock, so hosts with skewed clocks
//!   still agree. Acquiring is one statement that inserts the row or takes
//!   over an expired one and returns a fence that rises with every
//!   acquisition of the key. Any instance holding the handle can renew or
//!   release it; a crashed holder's lock frees itself when its TTL runs out.
//! * **`get_lock`**: a `GET_LOCK` named lock on a connection kept for that
//!   lock alone, named by a stable 64-bit hash of the key. The plugin
//!   enforces the TTL; a crashed holder's lock frees at once because its
//!   connection closes. No fence, and only the acquiring instance can renew
//!   or release.
//!
//! Waiting for a lock (`lock_wait`): get_lock mode waits in the server's
//! `GET_LOCK` queue (a cancel ends the waiting session with `KILL
//! CONNECTION` from another one); lease mode has no server notification to
//! wait on and polls, never later than the holder's lease end.
//!
//! Every statement takes its values as parameters; the only name put into
//! SQL is the table's, which must be a plain identifier and is quoted. Each
//! wait for the server ends after `statement_timeout_ms` (connecting after
//! `connect_timeout_ms`), and no message ever contains the password. See
//! `docs/backends/mysql.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod conn;
mod connections;
mod fail;
mod getlock;
pub mod keyhash;
mod lease;

use std::ffi::CStr;

use bext_locking::{Acquired, ForceReleased, LockHandle, LockInfo, PluginError, Wait};
use bext_locking_kit::Backend;

pub use config::{
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT_MS, DEFAULT_TABLE,
    MAX_POOL_SIZE, MAX_TIMEOUT_MS, Mode, MysqlConfig,
};

/// The SQL each mode prepares on every connection, for tools (and the
/// benchmark) that issue the same statements directly.
pub mod sql {
    /// Lease mode's acquire, renew, release and still-held check on
    /// `table`, an already quoted name (parameters in
    /// `docs/backends/mysql.md`).
    pub fn lease(table: &str) -> Vec<String> {
        crate::lease::statements(table)
    }

    /// The `CREATE TABLE` of lease mode's lock table.
    pub fn lease_table(table: &str) -> String {
        crate::lease::create_table_sql(table)
    }

    /// get_lock mode's try-lock, release and holder check (parameter: the
    /// key's [`lock_name`](crate::keyhash::lock_name)).
    pub fn get_lock() -> Vec<String> {
        crate::getlock::statements()
    }

    /// What every connection runs once it is open.
    pub fn session_setup(statement_timeout_ms: u64) -> Vec<String> {
        crate::config::session_setup(statement_timeout_ms)
    }
}

use crate::connections::Pool;
use crate::fail::Fail;

enum Held {
    // Boxed: a lease instance is much larger than a get_lock one.
    Lease(Box<lease::Lease>),
    GetLock(getlock::GetLock),
}

/// The mysql backend, in either mode.
pub struct Mysql {
    backend: Held,
}

/// An instance of the mysql backend, in-process.
pub type MysqlPlugin = bext_locking_kit::Plugin<Mysql>;

impl Mysql {
    /// The mode this instance runs in.
    pub fn mode(&self) -> Mode {
        match self.backend {
            Held::Lease(_) => Mode::Lease,
            Held::GetLock(_) => Mode::GetLock,
        }
    }

    fn pool(&self) -> &Pool {
        match &self.backend {
            Held::Lease(l) => l.pool(),
            Held::GetLock(a) => a.pool(),
        }
    }

    /// The caller's message: which server, which call, what happened, with
    /// anything password-like removed.
    fn fail<'a>(&'a self, call: &'a str) -> impl FnOnce(Fail) -> PluginError + 'a {
        move |fail| {
            let s = self.pool().settings();
            PluginError::backend(
                s.secrets.scrub(&format!("mysql ({}): {call}: {}", s.target, fail.message)),
            )
        }
    }
}

impl Backend for Mysql {
    const NAME: &'static CStr = c"mysql";
    type Config = MysqlConfig;

    /// Connects (creating the lock table when asked). A bad value is
    /// `InvalidArgument`; an unreachable server or a missing table is
    /// `Backend`.
    fn create(config: MysqlConfig) -> Result<Self, PluginError> {
        let settings = config::Settings::from_config(&config)?;
        let backend = match settings.mode {
            Mode::Lease => Held::Lease(Box::new(lease::Lease::open(settings)?)),
            Mode::GetLock => Held::GetLock(getlock::GetLock::open(settings)?),
        };
        Ok(Self { backend })
    }

    /// Owners are stored in lease mode; get_lock mode keeps none (see
    /// [`inspect`](Self::inspect)).
    ///
    /// `"lock_wait"` is get_lock mode's: its waiters wait in the server's
    /// `GET_LOCK` queue. Lease mode answers `lock_wait` too, but by polling
    /// (the server has no notification it could wait on), with the next
    /// try no later than the holder's lease end. Both modes set a lease's
    /// remaining time (`"renew_ttl"`).
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
            Held::GetLock(a) => a.try_lock(key, ttl_ms),
        }
        .map_err(self.fail("try_lock"))
    }

    /// Lease mode reads the row by the server's clock. get_lock mode cannot
    /// answer honestly: the server knows only which session holds a name,
    /// not the owner, and the TTL lives in the holding instance.
    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        match &self.backend {
            Held::Lease(l) => l.inspect(key).map_err(self.fail("inspect")),
            Held::GetLock(_) => Err(PluginError::unsupported(
                "mysql (get_lock mode): inspect is not supported: the server knows only which \
                 session holds a GET_LOCK name, not its owner or expiry (the TTL is kept by the \
                 holding instance); use lease mode",
            )),
        }
    }

    /// Lease mode expires the row in one conditioned statement. get_lock
    /// mode cannot: a named lock ends only with its session, and by the
    /// time another session is killed it may hold a different lock.
    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        match &self.backend {
            Held::Lease(l) => l.force_release(key, if_fence).map_err(self.fail("force_release")),
            Held::GetLock(_) => Err(PluginError::unsupported(
                "mysql (get_lock mode): force_release is not supported: a GET_LOCK lock ends only \
                 with the session holding it, and killing that session cannot be made race-free \
                 (by then it may hold another key's lock); use lease mode",
            )),
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
            Held::GetLock(a) => a.lock_wait(key, ttl_ms, wait),
        }
        .map_err(self.fail("lock_wait"))
    }

    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        match &self.backend {
            Held::Lease(l) => match l.renew_for(handle, ttl_ms) {
                Ok(true) => Ok(()),
                Ok(false) => Err(getlock::not_held(&handle.key)),
                Err(e) => Err(e),
            },
            Held::GetLock(a) => a.renew_for(handle, ttl_ms),
        }
        .map_err(self.fail("renew_for"))
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), PluginError> {
        match &self.backend {
            Held::Lease(l) => match l.renew(handle) {
                Ok(true) => Ok(()),
                Ok(false) => Err(getlock::not_held(&handle.key)),
                Err(e) => Err(e),
            },
            Held::GetLock(a) => a.renew(handle),
        }
        .map_err(self.fail("renew"))
    }

    fn release(&self, handle: &LockHandle) -> Result<(), PluginError> {
        match &self.backend {
            Held::Lease(l) => l.release(handle),
            Held::GetLock(a) => a.release(handle),
        }
        .map_err(self.fail("release"))
    }

    fn cleanup(&self) {
        match &self.backend {
            Held::Lease(l) => l.cleanup(),
            Held::GetLock(a) => a.cleanup(),
        }
    }
}

impl std::fmt::Debug for Mysql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlPlugin")
            .field("mode", &self.mode())
            .field("server", &self.pool().settings().target)
            .finish_non_exhaustive()
    }
}

/// The export description used by the `.so`.
pub struct Exported;

impl bext_locking_ffi::Export for Exported {
    type Backend = Mysql;
    const VERSION: &'static CStr = bext_locking_ffi::crate_version_cstr!();
    const DESCRIPTION: &'static str = "MySQL/MariaDB locks: fenced TTL leases on the database \
        clock (default), or GET_LOCK named locks on dedicated connections (mode get_lock: no \
        fence)";
    const FENCING: bool = true;
}

bext_locking_ffi::export_locking_plugin!(Exported);
