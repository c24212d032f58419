//! Advisory mode: a session advisory lock per held key, each on a pooled
//! connection lent to that lock alone until it is released or expires.
//!
//! PostgreSQL keeps a session lock until the session unlocks it or ends, so
//! the TTL is the plugin's job: a reaper thread unlocks every lock whose
//! deadline passed without a renew and gives its connection back. A host
//! that dies loses its connections, and the server frees its locks at once.
//!
//! Advisory locks stack within one session; here no session ever holds two
//! (a connection goes back to the pool only after its unlock), and a key
//! this instance already holds or is acquiring answers "contended" without
//! asking the server.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bext_locking::{Acquired, LockHandle, PluginError, Wait};
use bext_locking_kit::held::{HeldLocks, lock};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::Settings;
use crate::conn::Conn;
use crate::connections::{Pool, closed};
use crate::deadlines::Watch;
use crate::fail::{Fail, FailKind};
use crate::keyhash::advisory_key;

/// Why advisory mode does not answer `inspect`: the server records only
/// which session holds a key's 64-bit hash (`pg_locks`), not the owner,
/// the lease's end (this plugin enforces the TTL in the holding process)
/// or a fence, so another instance could say little more than "held".
pub(crate) const INSPECT_UNSUPPORTED: &str = "pg advisory mode: the server records only which \
    session holds the key's hash, not its owner, lease end or fence (the holding process \
    enforces the TTL), so it cannot be inspected; use lease mode";

/// Why advisory mode does not answer `force_release`: the only way to take
/// a session lock from its holder is to end the session
/// (`pg_terminate_backend`), and between finding the session in `pg_locks`
/// and signalling it, the session can release the key and take another,
/// so the session ended might not be the one holding this key.
pub(crate) const FORCE_UNSUPPORTED: &str = "pg advisory mode: a session lock can only be taken \
    from its holder by terminating the session, and the session found holding the key may have \
    moved on to another lock before it is signalled, so the exact holder cannot be broken \
    safely; use lease mode";

/// The longest `lock_timeout` the server takes (an `int` of milliseconds,
/// about 24.8 days); a longer wait is several.
const MAX_LOCK_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// How many times one wait replaces its session after losing it.
const MAX_LOST: u32 = 3;

/// How long an idle reaper sleeps before looking again.
const IDLE_NAP: Duration = Duration::from_secs(1);

const TRY_LOCK: usize = 0;
const UNLOCK: usize = 1;
const PING: usize = 2;
const LOCK: usize = 3;

/// Try-lock, unlock, the liveness ping, and the waiting lock (which waits
/// in the server's queue up to the session's `lock_timeout`).
pub(crate) fn statements() -> Vec<String> {
    vec![
        "SELECT pg_try_advisory_lock($1)".to_owned(),
        "SELECT pg_advisory_unlock($1)".to_owned(),
        "SELECT 1".to_owned(),
        "SELECT pg_advisory_lock($1)".to_owned(),
    ]
}

/// A lock this instance holds: its token, and the session that holds it.
struct HeldLock {
    lock_id: Uuid,
    hash: i64,
    /// `None` once the connection was taken to unlock or discard it.
    conn: Mutex<Option<Box<Conn>>>,
}

struct Shared {
    pool: Pool,
    held: Mutex<HeldLocks<HeldLock>>,
    /// Wakes the reaper: a sooner expiry, or shutdown.
    wake: Condvar,
}

/// An advisory-mode instance.
pub(crate) struct Advisory {
    shared: Arc<Shared>,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

/// Wrong or stale handle: the lock is not (or no longer) held here.
pub(crate) fn not_held(key: &str) -> Fail {
    Fail::new(FailKind::Server, bext_locking_kit::message::not_held(key))
}

impl Advisory {
    pub fn open(settings: Settings) -> Result<Self, PluginError> {
        let watch = Watch::start().map_err(|e| PluginError::backend(format!("pg: {e}")))?;
        let pool = Pool::new(settings, statements(), watch);
        let conn = pool.get(pool.deadline()).map_err(|e| {
            let s = pool.settings();
            PluginError::backend(s.secrets.scrub(&format!("pg ({}): {}", s.target, e.message)))
        })?;
        pool.put(conn);
        let shared = Arc::new(Shared { pool, held: Mutex::default(), wake: Condvar::new() });
        let for_reaper = shared.clone();
        let reaper = std::thread::Builder::new()
            .name("bext-pg-reaper".into())
            .spawn(move || for_reaper.reap())
            .map_err(|e| {
                PluginError::backend(format!("pg: cannot start the reaper thread: {e}"))
            })?;
        Ok(Self { shared, reaper: Mutex::new(Some(reaper)) })
    }

    pub fn pool(&self) -> &Pool {
        &self.shared.pool
    }

    pub fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, Fail> {
        let started = Instant::now();
        {
            let mut h = lock(&self.shared.held);
            if h.is_closed() {
                return Err(closed());
            }
            if !h.start(key) {
                return Ok(None);
            }
        }
        let mut pending = Pending { shared: &self.shared, key, armed: true };
        let hash = advisory_key(key);
        let deadline = self.shared.pool.deadline();
        let (won, conn) = self.shared.pool.attempt(deadline, |c| {
            let row = c.query_opt(TRY_LOCK, &[&hash], deadline)?;
            Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
        })?;
        if !won {
            self.shared.pool.put(conn);
            return Ok(None);
        }
        let handle = self.keep(key, ttl_ms, hash, conn, started)?;
        pending.armed = false;
        Ok(Some(handle))
    }

    /// Records a lock this instance just took on `conn`, held until
    /// `started + ttl_ms` unless renewed.
    fn keep(
        &self,
        key: &str,
        ttl_ms: u64,
        hash: i64,
        conn: Box<Conn>,
        started: Instant,
    ) -> Result<LockHandle, Fail> {
        let lock_id = Uuid::new_v4();
        let mut h = lock(&self.shared.held);
        if h.is_closed() {
            drop(h);
            // Closing the session releases the lock.
            self.shared.pool.discard(conn);
            return Err(closed());
        }
        // Measured from before the request, so the local lease never
        // outlasts the one asked for.
        let until = started.checked_add(Duration::from_millis(ttl_ms)).unwrap_or(started);
        let held = Arc::new(HeldLock { lock_id, hash, conn: Mutex::new(Some(conn)) });
        let soonest = h.hold(key, held, until);
        drop(h);
        if soonest {
            self.shared.wake.notify_one();
        }
        Ok(LockHandle { key: key.to_owned(), lock_id: lock_id.to_string(), ttl_ms, fence: None })
    }

    /// Waits for `key` in the server's own lock queue: one try, and when
    /// that is contended, `pg_advisory_lock` on a pooled connection with
    /// the server's `lock_timeout` set to the time left, so the server
    /// hands the lock over the moment it is freed, in the order waiters
    /// queued. A cancel sends the server a cancel request for the waiting
    /// statement. The TTL starts when the grant arrives (this plugin
    /// enforces it), so that is `Acquired::sent`.
    pub fn lock_wait(&self, key: &str, ttl_ms: u64, wait: &Wait) -> Result<Option<Acquired>, Fail> {
        let sent = Instant::now();
        if let Some(handle) = self.try_lock(key, ttl_ms)? {
            return Ok(Some(Acquired { handle, sent }));
        }
        if wait.is_over() {
            return Ok(None);
        }
        // A waiting session that dies (terminated, a dropped connection)
        // is replaced, a few times per wait: a long wait should not fail
        // on what a single call would retry. The lost session held
        // nothing (closing it frees a lock granted as it died).
        let mut lost = 0;
        loop {
            match self.queue(key, ttl_ms, wait) {
                Err(e) if e.kind == FailKind::Connection && lost < MAX_LOST && !wait.is_over() => {
                    lost += 1;
                }
                // The server's lock timeout is at most `MAX_LOCK_TIMEOUT`:
                // a longer wait queues again.
                Ok(None) if !wait.is_over() => {}
                other => return other,
            }
        }
    }

    /// One wait in the server's queue, on one session.
    fn queue(&self, key: &str, ttl_ms: u64, wait: &Wait) -> Result<Option<Acquired>, Fail> {
        let pool = &self.shared.pool;
        let hash = advisory_key(key);
        let (_, mut conn) = pool.attempt(pool.deadline(), |c| {
            // Both limits for this one statement: the server gives up
            // waiting at the wait's deadline (55P03), and the session's
            // statement timeout must not end the wait first.
            let left = wait.remaining().min(MAX_LOCK_TIMEOUT).as_millis().max(1);
            c.batch(
                &format!("SET lock_timeout = {left}; SET statement_timeout = 0"),
                pool.deadline(),
            )
        })?;
        let wake = Arc::new(Notify::new());
        let hook = {
            let wake = wake.clone();
            wait.on_cancel(move || wake.notify_one())
        };
        if wait.is_cancelled() {
            drop(hook);
            self.reset_and_put(conn);
            return Ok(None);
        }
        // The server answers at its lock timeout; past that, it is not
        // answering at all.
        let until = wait.deadline().min(Instant::now() + MAX_LOCK_TIMEOUT)
            + pool.settings().statement_timeout;
        let (result, cancel_sent) = conn.query_opt_cancellable(LOCK, &[&hash], until, &wake);
        drop(hook);
        let granted_at = Instant::now();
        let granted = match result {
            Ok(_) => true,
            // The server's lock timeout: the wait is over.
            Err(e) if e.message.contains("55P03") => false,
            // Our cancel request; someone else's (pg_cancel_backend) is an
            // error below, not a wait that looks timed out early.
            Err(e) if cancel_sent && e.message.contains("57014") => false,
            Err(e) => {
                // The session's state (and whether it holds the lock) is
                // unknown: closing it frees whatever it holds.
                if e.keeps_connection() && !cancel_sent {
                    self.reset_and_put(conn);
                } else {
                    pool.discard(conn);
                }
                return Err(e);
            }
        };
        if cancel_sent {
            // A cancel that reaches the server after the grant would hit
            // the next statement: unlock (a cancel ends one statement at
            // most, hence two tries), and close the session in any case.
            if granted {
                for _ in 0..2 {
                    if conn.query_opt(UNLOCK, &[&hash], pool.deadline()).is_ok() {
                        break;
                    }
                }
            }
            pool.discard(conn);
            return Ok(None);
        }
        let deadline = pool.deadline();
        if let Err(e) = conn.batch("RESET lock_timeout; RESET statement_timeout", deadline) {
            // Closing the session frees the lock, if it was granted.
            pool.discard(conn);
            return Err(e);
        }
        if !granted {
            pool.put(conn);
            return Ok(None);
        }
        if wait.is_cancelled() {
            // Granted as the cancel came, before it could be sent.
            match conn.query_opt(UNLOCK, &[&hash], deadline) {
                Ok(_) => pool.put(conn),
                Err(_) => pool.discard(conn),
            }
            return Ok(None);
        }
        let handle = self.keep(key, ttl_ms, hash, conn, granted_at)?;
        Ok(Some(Acquired { handle, sent: granted_at }))
    }

    /// Puts the server's limits back as the session started and gives the
    /// connection back (or closes it, if that fails).
    fn reset_and_put(&self, mut conn: Box<Conn>) {
        let pool = &self.shared.pool;
        match conn.batch("RESET lock_timeout; RESET statement_timeout", pool.deadline()) {
            Ok(()) => pool.put(conn),
            Err(_) => pool.discard(conn),
        }
    }

    /// Sets the lock's remaining time to `ttl_ms` once (the reaper is this
    /// instance's own timer), after the same check as [`renew`](Self::renew).
    pub fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), Fail> {
        self.renew(&LockHandle { ttl_ms, ..handle.clone() })
    }

    /// Restarts the TTL after checking on the lock's own connection that
    /// the session (and so the lock) still exists.
    pub fn renew(&self, handle: &LockHandle) -> Result<(), Fail> {
        let started = Instant::now();
        let Ok(lock_id) = Uuid::parse_str(&handle.lock_id) else {
            return Err(not_held(&handle.key));
        };
        let held = {
            let h = lock(&self.shared.held);
            if h.is_closed() {
                return Err(closed());
            }
            match h.get(&handle.key) {
                Some((lock, until)) if lock.lock_id == lock_id && until > started => lock.clone(),
                _ => return Err(not_held(&handle.key)),
            }
        };
        let mut conn_slot = lock(&held.conn);
        let Some(conn) = conn_slot.as_mut() else { return Err(not_held(&handle.key)) };
        if let Err(e) = conn.query_opt(PING, &[], self.shared.pool.deadline()) {
            // The session may be gone (and the lock with it); make sure it
            // is, so that "renew failed" always means "not held".
            let conn = conn_slot.take();
            drop(conn_slot);
            self.forget(&handle.key, &held);
            if let Some(conn) = conn {
                self.shared.pool.discard(conn);
            }
            return Err(Fail::new(
                FailKind::Connection,
                format!("lock on `{}` is lost: its connection failed ({e})", handle.key),
            ));
        }
        drop(conn_slot);
        let until = started.checked_add(Duration::from_millis(handle.ttl_ms)).unwrap_or(started);
        // A shorter lease (renew_for) may end before the reaper next looks:
        // `extend` says when to wake it to sleep on the new soonest expiry.
        let extended = lock(&self.shared.held).extend(&handle.key, &held, until);
        match extended {
            Some(wake) => {
                if wake {
                    self.shared.wake.notify_one();
                }
                Ok(())
            }
            // Released or reaped while we checked.
            None => Err(not_held(&handle.key)),
        }
    }

    pub fn release(&self, handle: &LockHandle) -> Result<(), Fail> {
        let lock_id = Uuid::parse_str(&handle.lock_id).ok();
        let held = {
            let mut h = lock(&self.shared.held);
            if h.is_closed() {
                return Err(closed());
            }
            // Not ours (any more): touch nothing.
            match h.take(&handle.key, |l| Some(l.lock_id) == lock_id) {
                Some(lock) => lock,
                None => return Ok(()),
            }
        };
        self.shared.unlock(&held, self.shared.pool.deadline())
    }

    /// Drops `key`'s slot if it still belongs to `held`.
    fn forget(&self, key: &str, held: &Arc<HeldLock>) {
        lock(&self.shared.held).forget(key, held);
    }

    /// Ends every held lock, stops the reaper and closes the pool.
    /// Idempotent.
    pub fn cleanup(&self) {
        let locks = lock(&self.shared.held).close();
        self.shared.wake.notify_all();
        if let Some(reaper) = lock(&self.reaper).take() {
            let _ = reaper.join();
        }
        // Unlock explicitly, so that the locks are free when cleanup
        // returns (a closed session frees them too, but the server ends it
        // a moment later). One deadline for all: a dead server cannot make
        // cleanup take one timeout per lock.
        let deadline = self.shared.pool.deadline();
        for held in locks {
            if Instant::now() < deadline {
                let _ = self.shared.unlock(&held, deadline);
            } else if let Some(conn) = lock(&held.conn).take() {
                self.shared.pool.discard(conn);
            }
        }
        self.shared.pool.close();
    }
}

impl Drop for Advisory {
    fn drop(&mut self) {
        self.cleanup();
    }
}

impl Shared {
    /// The reaper: sleeps until the soonest expiry, unlocks what expired.
    fn reap(&self) {
        while let Some(expired) = HeldLocks::next_expired(&self.held, &self.wake, IDLE_NAP) {
            for held in expired {
                // An unlock that fails closed the session, which frees the
                // lock all the same; there is nobody to report it to.
                let _ = self.unlock(&held, self.pool.deadline());
            }
        }
    }

    /// Unlocks a lock removed from the map and gives its connection back.
    fn unlock(&self, held: &HeldLock, deadline: Instant) -> Result<(), Fail> {
        let Some(mut conn) = lock(&held.conn).take() else { return Ok(()) };
        match conn.query_opt(UNLOCK, &[&held.hash], deadline) {
            Ok(_) => {
                self.pool.put(conn);
                Ok(())
            }
            Err(e) => {
                let gone = e.kind == FailKind::Connection;
                self.pool.discard(conn);
                // A session that is gone holds nothing; otherwise closing
                // it frees the lock once the server sees it close.
                if gone {
                    Ok(())
                } else {
                    Err(Fail::new(
                        e.kind,
                        format!(
                            "could not confirm the unlock ({e}); its connection was closed, so \
                             the server frees the lock when it notices"
                        ),
                    ))
                }
            }
        }
    }
}

/// Removes an `Acquiring` slot unless the acquisition completed, so an
/// error or a panic never leaves the key looking held.
struct Pending<'a> {
    shared: &'a Shared,
    key: &'a str,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.shared.held).abandon(self.key);
        }
    }
}
