//! One attempt at the lock, with the kind of a failure deciding the exit
//! code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bext_locking::redact::Secrets;
use bext_locking::{ErrorKind, GuardOptions, LockGuard, LockingPlugin, PluginError};
use bext_locking_loader::FfiPlugin;

use crate::{CliError, exit};

/// Tries once to take `key` as `owner` (see [`crate::owner`]), guarding the lock with `options` on success. A request the
/// plugin refuses (`invalid_argument`: a TTL outside what this backend
/// serves, say) is a usage error (exit 2); any other failure is the
/// backend's (exit 69).
pub fn try_once(
    plugin: &Arc<FfiPlugin>,
    key: &str,
    owner: &str,
    ttl: Duration,
    options: GuardOptions,
    secrets: &Secrets,
) -> Result<Option<LockGuard>, CliError> {
    let ttl_ms = crate::millis(ttl);
    // Options that cannot guard this TTL must not take the lock at all.
    options.check(Duration::from_millis(ttl_ms)).map_err(CliError::usage)?;
    let started = Instant::now();
    match plugin.try_lock_as(key, ttl_ms, Some(owner)) {
        Ok(Some(handle)) => {
            let options = options.lease_started(started);
            let guarded: Arc<dyn LockingPlugin> = plugin.clone();
            Ok(Some(LockGuard::with_options(guarded, handle, options)))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(failed(key, &e, secrets)),
    }
}

/// The CLI error for a failed attempt at `key`: a request the plugin
/// refused is a usage error (exit 2), anything else the backend's (exit 69).
pub fn failed(key: &str, e: &PluginError, secrets: &Secrets) -> CliError {
    if e.kind == ErrorKind::InvalidArgument {
        CliError::usage(format!(
            "cannot lock `{key}`: the plugin refused --key/--ttl: {}",
            secrets.scrub(&e.message)
        ))
    } else {
        CliError::new(exit::BACKEND, format!("cannot lock `{key}`: {}", secrets.scrub(&e.message)))
    }
}
