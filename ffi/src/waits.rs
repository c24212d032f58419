//! The `lock_wait` calls in flight on one instance, by the host's wait id,
//! so that `cancel_wait` from another thread can reach them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bext_locking::Wait;

/// How long a cancel that arrived before its wait started is remembered: a
/// host may cancel from another thread just before the waiting thread gets
/// into `lock_wait`, and that wait must still end at once.
const EARLY_CANCEL_KEPT: Duration = Duration::from_secs(10);
/// At most this many early cancels are kept; the oldest go first. Bounds
/// what a host cancelling unknown ids in a loop can make us hold.
const EARLY_CANCELS_MAX: usize = 4096;

/// The waits of one instance by id, and the recent cancels of ids no wait
/// had (yet).
#[derive(Default)]
pub(crate) struct WaitIds {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    live: HashMap<u64, Wait>,
    early: HashMap<u64, Instant>,
}

impl WaitIds {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `wait` under `id` until the returned guard drops; a wait
    /// whose cancel came early is cancelled here at once.
    pub(crate) fn register(&self, id: u64, wait: &Wait) -> Registered<'_> {
        let mut inner = self.inner();
        if inner.early.remove(&id).is_some() {
            wait.cancel();
        }
        inner.live.insert(id, wait.clone());
        Registered { ids: self, id }
    }

    /// Cancels the wait with `id`; an id no wait has is remembered for a
    /// while (see [`EARLY_CANCEL_KEPT`]) and is otherwise a no-op.
    pub(crate) fn cancel(&self, id: u64) {
        let mut inner = self.inner();
        if let Some(wait) = inner.live.get(&id).cloned() {
            drop(inner);
            wait.cancel();
            return;
        }
        let now = Instant::now();
        inner.early.retain(|_, at| now.duration_since(*at) < EARLY_CANCEL_KEPT);
        if inner.early.len() >= EARLY_CANCELS_MAX
            && let Some(oldest) = inner.early.iter().min_by_key(|(_, at)| **at).map(|(id, _)| *id)
        {
            inner.early.remove(&oldest);
        }
        inner.early.insert(id, now);
    }
}

/// A wait registered under its id; dropping it unregisters it.
pub(crate) struct Registered<'a> {
    ids: &'a WaitIds,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.ids.inner().live.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_reaches_a_live_wait_and_an_early_one_is_kept() {
        let ids = WaitIds::default();
        let wait = Wait::new(Duration::from_secs(60));
        {
            let _r = ids.register(1, &wait);
            ids.cancel(1);
        }
        assert!(wait.is_cancelled());
        ids.cancel(2);
        let late = Wait::new(Duration::from_secs(60));
        let _r = ids.register(2, &late);
        assert!(late.is_cancelled(), "a cancel that came first must still end the wait");
        let other = Wait::new(Duration::from_secs(60));
        let _o = ids.register(3, &other);
        assert!(!other.is_cancelled());
    }

    #[test]
    fn early_cancels_are_bounded() {
        let ids = WaitIds::default();
        for id in 0..(EARLY_CANCELS_MAX as u64 + 100) {
            ids.cancel(id);
        }
        assert!(ids.inner().early.len() <= EARLY_CANCELS_MAX);
    }
}
