//! A scriptable in-process backend for the guard's unit tests: correct lease
//! semantics, plus switches to make calls fail or hang, and a log of calls
//! so tests can check their order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{LockHandle, LockingPlugin};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    TryLock,
    RenewStart,
    RenewEnd(bool),
    Release,
}

#[derive(Default)]
pub(crate) struct TestPlugin {
    table: Mutex<HashMap<String, (String, Instant)>>,
    next_id: AtomicU64,
    pub(crate) fail_try_lock: AtomicBool,
    pub(crate) panic_renew: AtomicBool,
    renew_delay: Mutex<Duration>,
    log: Mutex<Vec<Call>>,
}

impl TestPlugin {
    fn record(&self, call: Call) {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    }

    pub(crate) fn log(&self) -> Vec<Call> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn count(&self, call: &Call) -> usize {
        self.log().iter().filter(|c| *c == call).count()
    }

    /// Completed renewals, successful or not.
    pub(crate) fn renews_ended(&self) -> usize {
        self.log().iter().filter(|c| matches!(c, Call::RenewEnd(_))).count()
    }

    pub(crate) fn set_renew_delay(&self, d: Duration) {
        *self.renew_delay.lock().unwrap() = d;
    }

    /// Another holder takes the key behind the current holder's back.
    pub(crate) fn steal(&self, key: &str) {
        let far = Instant::now() + Duration::from_secs(3600);
        self.table.lock().unwrap().insert(key.to_owned(), ("thief".to_owned(), far));
    }

    /// The lock_id holding `key` now, if any.
    pub(crate) fn holder(&self, key: &str) -> Option<String> {
        let table = self.table.lock().unwrap();
        table.get(key).filter(|(_, exp)| *exp > Instant::now()).map(|(id, _)| id.clone())
    }
}

impl LockingPlugin for TestPlugin {
    fn name(&self) -> &str {
        "test"
    }

    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        self.record(Call::TryLock);
        crate::validate_lock_request(key, ttl_ms)?;
        if self.fail_try_lock.load(Ordering::SeqCst) {
            return Err("test backend is down".to_owned());
        }
        let mut table = self.table.lock().unwrap();
        let now = Instant::now();
        if table.get(key).is_some_and(|(_, exp)| *exp > now) {
            return Ok(None);
        }
        let n = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let lock_id = format!("id-{n}");
        table.insert(key.to_owned(), (lock_id.clone(), now + Duration::from_millis(ttl_ms)));
        Ok(Some(LockHandle { key: key.to_owned(), lock_id, ttl_ms, fence: Some(n) }))
    }

    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        self.record(Call::RenewStart);
        let delay = *self.renew_delay.lock().unwrap();
        std::thread::sleep(delay);
        if self.panic_renew.load(Ordering::SeqCst) {
            panic!("renew blew up");
        }
        let ok = {
            let mut table = self.table.lock().unwrap();
            let now = Instant::now();
            match table.get_mut(&handle.key) {
                Some((id, exp)) if *id == handle.lock_id && *exp > now => {
                    *exp = now + Duration::from_millis(handle.ttl_ms);
                    true
                }
                _ => false,
            }
        };
        self.record(Call::RenewEnd(ok));
        if ok { Ok(()) } else { Err(format!("test: `{}` is no longer ours", handle.key)) }
    }

    fn release(&self, handle: LockHandle) -> Result<(), String> {
        self.record(Call::Release);
        let mut table = self.table.lock().unwrap();
        if table.get(&handle.key).is_some_and(|(id, _)| *id == handle.lock_id) {
            table.remove(&handle.key);
        }
        Ok(())
    }

    fn cleanup(&self) {}
}
