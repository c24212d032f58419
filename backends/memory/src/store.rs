//! The sharded lock table.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use bext_locking::{Acquired, ForceReleased, LockHandle, LockInfo, Wait};
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
    owner: Option<Arc<str>>,
}

/// A thread blocked in [`Store::lock_wait`], queued for its key.
struct Waiter {
    id: u64,
    ttl_ms: u64,
    owner: Option<Box<str>>,
    /// Notified, with the shard's mutex, when the waiter is handed the
    /// lock, cancelled, or its key's holder may have changed.
    wake: Arc<Condvar>,
}

struct Shard {
    map: HashMap<String, Entry>,
    next_sweep: usize,
    /// Waiters per key, in arrival order; a key with none has no entry.
    queues: HashMap<String, VecDeque<Waiter>>,
    /// Locks handed to waiters that have not woken to take them yet, by
    /// waiter id, with the instant their lease started.
    granted: HashMap<u64, (LockHandle, Instant)>,
    /// The owner of the last lease written here. A process usually gives
    /// every lock the same owner, so entries share this one string rather
    /// than each allocating a copy.
    last_owner: Option<Arc<str>>,
}

/// A lock table; shared between the instances of one namespace.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    fence: AtomicU64,
    /// Waiter ids, unique in the table.
    next_waiter: AtomicU64,
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
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::new(),
                    next_sweep: FIRST_SWEEP,
                    queues: HashMap::new(),
                    granted: HashMap::new(),
                    last_owner: None,
                })
            })
            .collect();
        Self {
            shards,
            hasher: RandomState::new(),
            fence: AtomicU64::new(0),
            next_waiter: AtomicU64::new(0),
        }
    }

    /// How many entries (live or not yet reclaimed) the table holds.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether the table holds no entries at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many waiters are queued for `key`.
    pub(crate) fn queued(&self, key: &str) -> usize {
        self.shard(key).queues.get(key).map_or(0, VecDeque::len)
    }

    fn shard_index(&self, key: &str) -> usize {
        self.hasher.hash_one(key) as usize % SHARDS
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        lock(&self.shards[self.shard_index(key)])
    }

    /// Takes `key` if it is free and no waiter is queued for it: queued
    /// waiters are served first (a key that has just expired goes to the
    /// head of its queue here), so a `try_lock` never overtakes them.
    pub(crate) fn try_lock(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Option<LockHandle> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        self.hand_off(&mut shard, key, now);
        if shard.map.get(key).is_some_and(|held| held.expires > now) {
            return None;
        }
        Some(self.install(&mut shard, key, ttl_ms, owner, now))
    }

    /// Writes a fresh lease of `key` (free or expired) into the shard.
    fn install(
        &self,
        shard: &mut Shard,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        now: Instant,
    ) -> LockHandle {
        let lock_id = Uuid::new_v4();
        // Drawn while the shard is locked: the next holder of this key can only
        // draw after us, so fences follow the order of acquisitions.
        let fence = self.fence.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Entry {
            lock_id,
            expires: now + Duration::from_millis(ttl_ms),
            acquired: now,
            fence,
            owner: owner.map(|o| shard.owner_of(o)),
        };
        match shard.map.get_mut(key) {
            Some(expired) => *expired = entry,
            None => {
                shard.sweep_if_grown(now);
                shard.map.insert(key.to_owned(), entry);
            }
        }
        LockHandle { key: key.to_owned(), lock_id: lock_id.to_string(), ttl_ms, fence: Some(fence) }
    }

    /// When `key` is free (absent or expired) and has waiters, hands it to
    /// the first of them and wakes it: the lock is the waiter's from this
    /// instant, so nobody can take it between a release and the waiter's
    /// waking. Called by every call that may free the key or look at it.
    fn hand_off(&self, shard: &mut Shard, key: &str, now: Instant) {
        // Nobody waits in this shard (the usual case): nothing to look up.
        if shard.queues.is_empty() {
            return;
        }
        if shard.map.get(key).is_some_and(|held| held.expires > now) {
            return;
        }
        let Some(queue) = shard.queues.get_mut(key) else { return };
        let Some(first) = queue.pop_front() else { return };
        if queue.is_empty() {
            shard.queues.remove(key);
        }
        let handle = self.install(shard, key, first.ttl_ms, first.owner.as_deref(), now);
        shard.granted.insert(first.id, (handle, now));
        first.wake.notify_one();
    }

    /// Wakes every waiter of `key`, so each recomputes how long to sleep
    /// (the holder, and so its lease end, changed).
    fn wake_all(shard: &Shard, key: &str) {
        for w in shard.queues.get(key).into_iter().flatten() {
            w.wake.notify_one();
        }
    }

    /// Waits until `key` is ours, in arrival order with the table's other
    /// waiters of `key`, or until `wait` times out or is cancelled
    /// (`None`; the waiter's queue entry is then gone).
    ///
    /// A release or force release hands the key straight to the first
    /// waiter; an expiry is noticed by the waiters, which sleep no longer
    /// than the holder's lease end. A cancel takes the shard's mutex to
    /// wake the waiter, so it cannot slip between the waiter's check of the
    /// flag and its sleep.
    pub(crate) fn lock_wait(
        self: &Arc<Self>,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &Wait,
    ) -> Option<Acquired> {
        let index = self.shard_index(key);
        let wake = Arc::new(Condvar::new());
        // Registered before the shard is locked and dropped after it is
        // unlocked: the hook takes the shard's mutex, and dropping a hook
        // that is running waits for it.
        let _hook = {
            let (store, wake) = (Arc::clone(self), Arc::clone(&wake));
            wait.on_cancel(move || {
                let _shard = lock(&store.shards[index]);
                wake.notify_all();
            })
        };
        let mut shard = lock(&self.shards[index]);
        let now = Instant::now();
        self.hand_off(&mut shard, key, now);
        if shard.map.get(key).is_none_or(|held| held.expires <= now) {
            // Free, and (hand_off having run) nobody queued.
            let handle = self.install(&mut shard, key, ttl_ms, owner, now);
            return Some(Acquired { handle, sent: now });
        }
        if wait.is_over() {
            return None;
        }
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed) + 1;
        shard.queues.entry(key.to_owned()).or_default().push_back(Waiter {
            id,
            ttl_ms,
            owner: owner.map(Box::from),
            wake: Arc::clone(&wake),
        });
        loop {
            if let Some((handle, sent)) = shard.granted.remove(&id) {
                if wait.is_cancelled() {
                    // A cancelled wait leaves nothing: pass the lock on.
                    self.release_locked(&mut shard, &handle, Instant::now());
                    return None;
                }
                return Some(Acquired { handle, sent });
            }
            let now = Instant::now();
            if wait.is_cancelled() || now >= wait.deadline() {
                self.leave(&mut shard, key, id, now);
                return None;
            }
            // Sleep until the deadline, or the holder's lease end if sooner,
            // when an expiry may make us (or the first waiter) the holder.
            let until = match shard.map.get(key) {
                Some(held) if held.expires > now => held.expires.min(wait.deadline()),
                _ => now,
            };
            if until > now {
                shard = match wake.wait_timeout(shard, until - now) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
            self.hand_off(&mut shard, key, Instant::now());
        }
    }

    /// Takes waiter `id` out of `key`'s queue (it timed out or was
    /// cancelled), and passes a free key on to the next waiter.
    fn leave(&self, shard: &mut Shard, key: &str, id: u64, now: Instant) {
        if let Some(queue) = shard.queues.get_mut(key) {
            queue.retain(|w| w.id != id);
            if queue.is_empty() {
                shard.queues.remove(key);
            }
        }
        self.hand_off(shard, key, now);
    }

    pub(crate) fn renew(&self, handle: &LockHandle) -> bool {
        self.renew_for(handle, handle.ttl_ms)
    }

    /// Sets the remaining time of the lease this handle holds to `ttl_ms`
    /// (`renew` is this with the handle's TTL). Waiters sleep until the
    /// old lease end, so a shorter lease wakes them to sleep less.
    pub(crate) fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> bool {
        let Ok(id) = Uuid::parse_str(&handle.lock_id) else { return false };
        let now = Instant::now();
        let mut shard = self.shard(&handle.key);
        match shard.map.get_mut(&handle.key) {
            Some(e) if e.lock_id == id && e.expires > now => {
                let expires = now + Duration::from_millis(ttl_ms);
                let sooner = expires < e.expires;
                e.expires = expires;
                if sooner {
                    Self::wake_all(&shard, &handle.key);
                }
                true
            }
            _ => false,
        }
    }

    pub(crate) fn release(&self, handle: &LockHandle) {
        let mut shard = self.shard(&handle.key);
        self.release_locked(&mut shard, handle, Instant::now());
    }

    /// Release under the shard's mutex: removes the entry if it carries
    /// this handle's `lock_id`, and hands the key to its first waiter.
    fn release_locked(&self, shard: &mut Shard, handle: &LockHandle, now: Instant) {
        let Ok(id) = Uuid::parse_str(&handle.lock_id) else { return };
        if shard.map.get(&handle.key).is_some_and(|e| e.lock_id == id) {
            shard.map.remove(&handle.key);
            self.hand_off(shard, &handle.key, now);
        }
    }
}

impl Store {
    /// Who holds `key` now, by the monotonic clock the leases run on.
    pub(crate) fn inspect(&self, key: &str) -> LockInfo {
        let now = Instant::now();
        let mut shard = self.shard(key);
        // An expired lease with waiters is already the first waiter's.
        self.hand_off(&mut shard, key, now);
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
                self.hand_off(&mut shard, key, now);
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
    /// `owner` as an entry keeps it: the shard's last owner again when it
    /// is the same.
    fn owner_of(&mut self, owner: &str) -> Arc<str> {
        match &self.last_owner {
            Some(last) if **last == *owner => Arc::clone(last),
            _ => Arc::clone(self.last_owner.insert(Arc::from(owner))),
        }
    }

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
