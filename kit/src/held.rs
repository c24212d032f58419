//! The locks an instance holds on server sessions that know no lease
//! (PostgreSQL advisory locks, MySQL `GET_LOCK`), by key, with the expiry
//! each lease gives them, and the reaper's wait for the next expiry.
//!
//! Such a server holds a lock for as long as the session lives, so the
//! lease is the instance's to enforce: a reaper thread unlocks what
//! expired. The table is shared by every call of the instance under one
//! mutex; each operation is one map lookup, and the reaper goes through
//! all entries only when it wakes, at the soonest expiry.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// One key of the table.
enum Slot<L> {
    /// A `try_lock` of this key is talking to the server.
    Acquiring,
    /// Held until `until` unless renewed.
    Held { lock: Arc<L>, until: Instant },
}

/// Every key held or being acquired, of one instance; `L` is the
/// backend's record of a held lock (its session, its lock id).
pub struct HeldLocks<L> {
    slots: HashMap<String, Slot<L>>,
    closed: bool,
    /// When the reaper will next look, unprompted. An acquisition wakes it
    /// only when its expiry comes sooner, so the common case (a TTL longer
    /// than the reaper's sleep) costs no thread switch.
    reaper_wakes_at: Option<Instant>,
}

impl<L> Default for HeldLocks<L> {
    fn default() -> Self {
        Self { slots: HashMap::new(), closed: false, reaper_wakes_at: None }
    }
}

/// Locks `m`, also after a panic elsewhere: every update keeps the table
/// consistent before it can panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<L> HeldLocks<L> {
    /// Whether [`close`](Self::close) ran: no call may start a lock then.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Marks `key` as being acquired; `false` when it is held or being
    /// acquired already (here, which is contention without asking the
    /// server).
    pub fn start(&mut self, key: &str) -> bool {
        match self.slots.entry(key.to_owned()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(Slot::Acquiring);
                true
            }
        }
    }

    /// Drops `key`'s slot if an acquisition of it is still in flight: it
    /// failed or was refused.
    pub fn abandon(&mut self, key: &str) {
        if matches!(self.slots.get(key), Some(Slot::Acquiring)) {
            self.slots.remove(key);
        }
    }

    /// Records `lock` as holding `key` until `until`. A slot still
    /// `Acquiring` is a `try_lock` of this key in flight, which the server
    /// is refusing: the lock is this one. Returns whether the reaper must
    /// be woken to sleep on this sooner expiry.
    pub fn hold(&mut self, key: &str, lock: Arc<L>, until: Instant) -> bool {
        let wake = self.sooner(until);
        match self.slots.get_mut(key) {
            Some(slot) => *slot = Slot::Held { lock, until },
            None => {
                self.slots.insert(key.to_owned(), Slot::Held { lock, until });
            }
        }
        wake
    }

    /// The lock holding `key` and its expiry, if any.
    pub fn get(&self, key: &str) -> Option<(&Arc<L>, Instant)> {
        match self.slots.get(key) {
            Some(Slot::Held { lock, until }) => Some((lock, *until)),
            _ => None,
        }
    }

    /// Moves the expiry of `key` to `until` if `lock` still holds it;
    /// `None` when it was released or reaped meanwhile, else whether the
    /// reaper must be woken (a shorter lease may end before it next looks).
    pub fn extend(&mut self, key: &str, lock: &Arc<L>, until: Instant) -> Option<bool> {
        let wake = self.sooner(until);
        match self.slots.get_mut(key) {
            Some(Slot::Held { lock: held, until: held_until }) if Arc::ptr_eq(held, lock) => {
                *held_until = until;
                Some(wake)
            }
            _ => None,
        }
    }

    /// Takes `key`'s lock out of the table when `ours` says it is the
    /// caller's; anything else is left as it was (one lookup either way).
    pub fn take(&mut self, key: &str, ours: impl FnOnce(&L) -> bool) -> Option<Arc<L>> {
        match self.slots.remove_entry(key) {
            Some((_, Slot::Held { lock, .. })) if ours(&lock) => Some(lock),
            Some((key, slot)) => {
                self.slots.insert(key, slot);
                None
            }
            None => None,
        }
    }

    /// Drops `key`'s slot if it still belongs to `lock`.
    pub fn forget(&mut self, key: &str, lock: &Arc<L>) {
        if self.get(key).is_some_and(|(held, _)| Arc::ptr_eq(held, lock)) {
            self.slots.remove(key);
        }
    }

    /// Refuses new locks from now on and hands out every held one, for
    /// the caller to unlock.
    pub fn close(&mut self) -> Vec<Arc<L>> {
        self.closed = true;
        self.slots
            .drain()
            .filter_map(|(_, s)| match s {
                Slot::Held { lock, .. } => Some(lock),
                Slot::Acquiring => None,
            })
            .collect()
    }

    fn sooner(&self, until: Instant) -> bool {
        self.reaper_wakes_at.is_none_or(|at| until < at)
    }

    /// Removes what expired by `now`; otherwise the soonest expiry left.
    fn expired(&mut self, now: Instant) -> (Vec<Arc<L>>, Option<Instant>) {
        let mut expired = Vec::new();
        let mut soonest: Option<Instant> = None;
        self.slots.retain(|_, slot| match slot {
            Slot::Held { lock, until } if *until <= now => {
                expired.push(Arc::clone(lock));
                false
            }
            Slot::Held { until, .. } => {
                soonest = Some(soonest.map_or(*until, |s| s.min(*until)));
                true
            }
            Slot::Acquiring => true,
        });
        (expired, soonest)
    }

    /// The reaper's wait: blocks until some locks expired and returns them
    /// (taken out of the table), or `None` once the table is closed. With
    /// nothing held it looks again after `idle_nap` anyway, so that
    /// acquisitions with longer TTLs need not wake it. `wake` is the
    /// condition variable every `true` from [`hold`](Self::hold) or
    /// [`extend`](Self::extend), and closing, must notify.
    pub fn next_expired(
        table: &Mutex<Self>,
        wake: &Condvar,
        idle_nap: Duration,
    ) -> Option<Vec<Arc<L>>> {
        let mut h = lock(table);
        loop {
            if h.closed {
                return None;
            }
            let now = Instant::now();
            let (expired, soonest) = h.expired(now);
            if !expired.is_empty() {
                return Some(expired);
            }
            let at = soonest.unwrap_or(now + idle_nap);
            h.reaper_wakes_at = Some(at);
            h = wake.wait_timeout(h, at - now).unwrap_or_else(PoisonError::into_inner).0;
            h.reaper_wakes_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HeldLocks<u32> {
        HeldLocks::default()
    }

    #[test]
    fn a_key_is_started_once_and_held_by_the_lock_recorded() {
        let mut t = table();
        assert!(t.start("a"));
        assert!(!t.start("a"), "a key being acquired is contention");
        let lock = Arc::new(7);
        let until = Instant::now() + Duration::from_secs(5);
        assert!(t.hold("a", Arc::clone(&lock), until), "the first expiry wakes the reaper");
        assert!(!t.start("a"), "a held key is contention");
        let (held, at) = t.get("a").unwrap();
        assert!(Arc::ptr_eq(held, &lock));
        assert_eq!(at, until);
        t.abandon("a");
        assert!(t.get("a").is_some(), "abandon leaves a held key alone");
    }

    #[test]
    fn take_and_forget_touch_only_the_callers_lock() {
        let mut t = table();
        let mine = Arc::new(1);
        let other = Arc::new(2);
        t.hold("a", Arc::clone(&mine), Instant::now() + Duration::from_secs(5));
        assert!(t.take("a", |l| *l == 2).is_none());
        t.forget("a", &other);
        assert!(t.get("a").is_some(), "someone else's take or forget changes nothing");
        assert!(t.extend("a", &other, Instant::now()).is_none());
        assert_eq!(t.take("a", |l| *l == 1).as_deref(), Some(&1));
        assert!(t.get("a").is_none());
        assert!(t.extend("a", &mine, Instant::now()).is_none(), "a released lock is not renewed");
    }

    #[test]
    fn the_reaper_returns_what_expired_and_stops_when_closed() {
        let t = Mutex::new(table());
        let wake = Condvar::new();
        let now = Instant::now();
        {
            let mut h = lock(&t);
            h.hold("soon", Arc::new(1), now + Duration::from_millis(20));
            h.hold("later", Arc::new(2), now + Duration::from_secs(60));
        }
        let expired = HeldLocks::next_expired(&t, &wake, Duration::from_secs(1)).unwrap();
        assert_eq!(expired.iter().map(|l| **l).collect::<Vec<_>>(), vec![1]);
        assert!(Instant::now() >= now + Duration::from_millis(20));
        assert!(lock(&t).get("later").is_some());
        let left = lock(&t).close();
        assert_eq!(left.iter().map(|l| **l).collect::<Vec<_>>(), vec![2]);
        assert!(lock(&t).is_closed());
        assert!(HeldLocks::next_expired(&t, &wake, Duration::from_secs(1)).is_none());
    }

    #[test]
    fn a_sooner_expiry_asks_to_wake_the_sleeping_reaper() {
        let t = Arc::new(Mutex::new(table()));
        let wake = Arc::new(Condvar::new());
        let reaper = {
            let (t, wake) = (Arc::clone(&t), Arc::clone(&wake));
            std::thread::spawn(move || HeldLocks::next_expired(&t, &wake, Duration::from_secs(30)))
        };
        // Once the reaper sleeps on its idle nap, a short lease must wake it.
        while lock(&t).reaper_wakes_at.is_none() {
            std::thread::yield_now();
        }
        let must_wake = lock(&t).hold("a", Arc::new(3), Instant::now() + Duration::from_millis(10));
        assert!(must_wake);
        wake.notify_one();
        let expired = reaper.join().unwrap().unwrap();
        assert_eq!(expired.iter().map(|l| **l).collect::<Vec<_>>(), vec![3]);
    }
}
