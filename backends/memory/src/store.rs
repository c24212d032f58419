//! The sharded lock table.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use bext_locking::{ForceReleased, LockHandle, LockInfo};
use uuid::Uuid;

/// Enough shards that 2 to 32 threads on different keys rarely share one.
const SHARDS: usize = 64;

/// A shard sweeps expired entries when it grows past this many entries and
/// then waits until it has doubled again, so reclaiming costs O(1) amortised
/// per insert and memory stays within twice the live locks.
const FIRST_SWEEP: usize = 256;

struct Entry {
    lock_id: Uuid,
    expires: Instant,
    /// When this holder acquired the lock (renewals keep it).
    acquired: Instant,
    fence: u64,
    owner: Option<Box<str>>,
}

struct Shard {
    map: HashMap<String, Entry>,
    next_sweep: usize,
}

/// A lock table; shared between the instances of one namespace.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    fence: AtomicU64,
}

/// Named tables live as long as some instance uses them.
fn registry() -> &'static Mutex<HashMap<String, Weak<Store>>> {
    static NAMED: OnceLock<Mutex<HashMap<String, Weak<Store>>>> = OnceLock::new();
    NAMED.get_or_init(Default::default)
}

/// The process-wide table called `name`, created on first use.
pub(crate) fn named(name: &str) -> Arc<Store> {
    let mut named = registry().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(store) = named.get(name).and_then(Weak::upgrade) {
        return store;
    }
    named.retain(|_, weak| weak.strong_count() > 0);
    let store = Arc::new(Store::new());
    named.insert(name.to_owned(), Arc::downgrade(&store));
    store
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty table.
    pub fn new() -> Self {
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard { map: HashMap::new(), next_sweep: FIRST_SWEEP }))
            .collect();
        Self { shards, hasher: RandomState::new(), fence: AtomicU64::new(0) }
    }

    /// How many entries (live or not yet reclaimed) the table holds.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether the table holds no entries at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        lock(&self.shards[i])
    }

    pub(crate) fn try_lock(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Option<LockHandle> {
        let lock_id = Uuid::new_v4();
        let now = Instant::now();
        let mut shard = self.shard(key);
        if shard.map.get(key).is_some_and(|held| held.expires > now) {
            return None;
        }
        // Drawn while the shard is locked: the next holder of this key can only
        // draw after us, so fences follow the order of acquisitions.
        let fence = self.fence.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Entry {
            lock_id,
            expires: now + Duration::from_millis(ttl_ms),
            acquired: now,
            fence,
            owner: owner.map(Box::from),
        };
        match shard.map.get_mut(key) {
            Some(expired) => *expired = entry,
            None => {
                shard.sweep_if_grown(now);
                shard.map.insert(key.to_owned(), entry);
            }
        }
        drop(shard);
        Some(LockHandle {
            key: key.to_owned(),
            lock_id: lock_id.to_string(),
            ttl_ms,
            fence: Some(fence),
        })
    }

    pub(crate) fn renew(&self, handle: &LockHandle) -> bool {
        let Ok(id) = Uuid::parse_str(&handle.lock_id) else { return false };
        let now = Instant::now();
        let mut shard = self.shard(&handle.key);
        match shard.map.get_mut(&handle.key) {
            Some(e) if e.lock_id == id && e.expires > now => {
                e.expires = now + Duration::from_millis(handle.ttl_ms);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn release(&self, handle: &LockHandle) {
        let Ok(id) = Uuid::parse_str(&handle.lock_id) else { return };
        let mut shard = self.shard(&handle.key);
        if shard.map.get(&handle.key).is_some_and(|e| e.lock_id == id) {
            shard.map.remove(&handle.key);
        }
    }
}

impl Store {
    /// Who holds `key` now, by the monotonic clock the leases run on.
    pub(crate) fn inspect(&self, key: &str) -> LockInfo {
        let now = Instant::now();
        let shard = self.shard(key);
        match shard.map.get(key) {
            Some(e) if e.expires > now => LockInfo {
                key: key.to_owned(),
                held: true,
                fence: Some(e.fence),
                owner: e.owner.as_deref().map(str::to_owned),
                expires_in_ms: Some(millis(e.expires - now)),
                held_for_ms: Some(millis(now - e.acquired)),
            },
            _ => LockInfo::free(key),
        }
    }

    /// Removes the live entry of `key` (only at fence `if_fence`, when
    /// given). Under the shard's mutex, as renew and release are, so a
    /// renew of the broken holder runs wholly before (and is then undone
    /// here) or after (and finds no entry): it never revives the lease.
    /// Fences come from the table's counter, so the next one is higher.
    pub(crate) fn force_release(&self, key: &str, if_fence: Option<u64>) -> ForceReleased {
        let now = Instant::now();
        let mut shard = self.shard(key);
        match shard.map.get(key) {
            Some(e) if e.expires > now && if_fence.is_none_or(|f| f == e.fence) => {
                let fence = e.fence;
                shard.map.remove(key);
                ForceReleased { released: true, fence: Some(fence) }
            }
            _ => ForceReleased { released: false, fence: None },
        }
    }
}

/// Whole milliseconds, rounded up so a lease with time left never reads 0.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

impl Shard {
    fn sweep_if_grown(&mut self, now: Instant) {
        if self.map.len() >= self.next_sweep {
            self.map.retain(|_, e| e.expires > now);
            self.next_sweep = (self.map.len() * 2).max(FIRST_SWEEP);
        }
    }
}

/// A poisoned shard only means a panic happened while it was held; every
/// update above leaves an entry whole, so the data is still consistent.
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
