//! An in-process backend with ABI 1.2's calls, for the unit tests of the
//! minimum hold and of elections: correct leases with fences and owners,
//! `inspect`, `force_release`, `renew_for` (switchable, to test a plugin
//! without `renew_ttl`) and a polling `lock_wait`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::wait::{POLL_MAX, poll_wait};
use crate::{
    Acquired, ForceReleased, LockAdmin, LockHandle, LockInfo, LockWait, LockingPlugin, PluginError,
    Stats, Wait, WaitMode,
};

struct Held {
    lock_id: String,
    owner: Option<String>,
    fence: u64,
    since: Instant,
    expires: Instant,
}

#[derive(Default)]
struct Table {
    held: HashMap<String, Held>,
    fence: u64,
    next_id: u64,
}

/// See the module docs. `no_renew_ttl` makes it a plugin without the
/// `renew_ttl` capability.
#[derive(Default)]
pub(crate) struct WaitPlugin {
    table: Mutex<Table>,
    pub(crate) no_renew_ttl: AtomicBool,
    pub(crate) no_fences: AtomicBool,
}

impl WaitPlugin {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long `key`'s lease still runs, if it is held.
    pub(crate) fn expires_in(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        self.table().held.get(key).filter(|h| h.expires > now).map(|h| h.expires - now)
    }

    fn held<'t>(table: &'t mut Table, handle: &LockHandle) -> Option<&'t mut Held> {
        let now = Instant::now();
        table.held.get_mut(&handle.key).filter(|h| h.lock_id == handle.lock_id && h.expires > now)
    }
}

impl LockingPlugin for WaitPlugin {
    fn name(&self) -> &str {
        "wait-test"
    }

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        self.try_lock_as(key, ttl_ms, None).map_err(|e| e.message)
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        let mut table = self.table();
        match Self::held(&mut table, handle) {
            Some(h) => {
                h.expires = Instant::now() + Duration::from_millis(handle.ttl_ms);
                Ok(())
            }
            None => Err(format!("`{}` is not held by this handle", handle.key)),
        }
    }

    fn release(&self, handle: LockHandle) -> Result<(), String> {
        let mut table = self.table();
        if Self::held(&mut table, &handle).is_some() {
            table.held.remove(&handle.key);
        }
        Ok(())
    }

    fn cleanup(&self) {}
}

impl LockAdmin for WaitPlugin {
    fn capabilities(&self) -> Vec<String> {
        let mut caps = vec!["owner".to_owned(), "inspect".to_owned(), "force_release".to_owned()];
        if !self.no_renew_ttl.load(Ordering::SeqCst) {
            caps.push("renew_ttl".to_owned());
        }
        caps
    }

    fn try_lock_as(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, PluginError> {
        let mut table = self.table();
        let now = Instant::now();
        if table.held.get(key).is_some_and(|h| h.expires > now) {
            return Ok(None);
        }
        table.fence += 1;
        table.next_id += 1;
        let (fence, lock_id) = (table.fence, format!("id-{}", table.next_id));
        let held = Held {
            lock_id: lock_id.clone(),
            owner: owner.map(str::to_owned),
            fence,
            since: now,
            expires: now + Duration::from_millis(ttl_ms),
        };
        table.held.insert(key.to_owned(), held);
        let fence = (!self.no_fences.load(Ordering::SeqCst)).then_some(fence);
        Ok(Some(LockHandle { key: key.to_owned(), lock_id, ttl_ms, fence }))
    }

    fn inspect(&self, key: &str) -> Result<LockInfo, PluginError> {
        let now = Instant::now();
        let table = self.table();
        Ok(match table.held.get(key).filter(|h| h.expires > now) {
            None => LockInfo::free(key),
            Some(h) => LockInfo {
                key: key.to_owned(),
                held: true,
                fence: (!self.no_fences.load(Ordering::SeqCst)).then_some(h.fence),
                owner: h.owner.clone(),
                expires_in_ms: Some((h.expires - now).as_millis() as u64),
                held_for_ms: Some((now - h.since).as_millis() as u64),
            },
        })
    }

    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<ForceReleased, PluginError> {
        let mut table = self.table();
        let now = Instant::now();
        let fence = match table.held.get(key).filter(|h| h.expires > now) {
            Some(h) if if_fence.is_none_or(|f| f == h.fence) => h.fence,
            _ => return Ok(ForceReleased::default()),
        };
        table.held.remove(key);
        table.fence += 1;
        Ok(ForceReleased { released: true, fence: Some(fence) })
    }

    fn stats(&self) -> Result<Stats, PluginError> {
        Err(PluginError::unsupported("no stats in the test plugin"))
    }
}

impl LockWait for WaitPlugin {
    fn wait_mode(&self) -> WaitMode {
        WaitMode::Polling
    }

    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Result<Option<Acquired>, PluginError> {
        poll_wait(
            wait,
            POLL_MAX.min(Duration::from_millis(20)),
            || {
                let sent = Instant::now();
                Ok(self.try_lock_as(key, ttl_ms, owner)?.map(|handle| Acquired { handle, sent }))
            },
            || None,
        )
    }

    fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), PluginError> {
        if self.no_renew_ttl.load(Ordering::SeqCst) {
            return Err(PluginError::unsupported("no renew_ttl in this test plugin"));
        }
        let mut table = self.table();
        match Self::held(&mut table, handle) {
            Some(h) => {
                h.expires = Instant::now() + Duration::from_millis(ttl_ms);
                Ok(())
            }
            None => {
                Err(PluginError::backend(format!("`{}` is not held by this handle", handle.key)))
            }
        }
    }
}
