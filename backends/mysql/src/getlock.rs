//! get_lock mode: a `GET_LOCK` named lock per held key, each on a pooled
//! connection lent to that lock alone until it is released or expires.
//!
//! The server keeps a named lock until the session releases it or ends, so
//! the TTL is the plugin's job: a reaper thread releases every lock whose
//! deadline passed without a renew and gives its connection back. A host
//! that dies loses its connections, and the server frees its locks at once.
//!
//! Since MySQL 5.7 (and in MariaDB) `GET_LOCK` is re-entrant within one
//! session: a second `GET_LOCK` of a name the session holds succeeds. Here
//! no session ever holds two (a connection goes back to the pool only after
//! its `RELEASE_LOCK`), and a key this instance already holds or is
//! acquiring answers "contended" without asking the server.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bext_locking::{Acquired, LockHandle, PluginError, Wait};
use bext_locking_kit::held::{HeldLocks, lock};
use uuid::Uuid;

use crate::config::Settings;
use crate::conn::Conn;
use crate::connections::{Pool, closed};
use crate::fail::{Fail, FailKind};
use crate::keyhash::lock_name;

/// How many times one wait replaces its session after losing it.
const MAX_LOST: u32 = 3;

/// How long an idle reaper sleeps before looking again.
const IDLE_NAP: Duration = Duration::from_secs(1);

const TRY_LOCK: usize = 0;
const UNLOCK: usize = 1;
const STILL_MINE: usize = 2;
const WAIT_LOCK: usize = 3;

/// Try-lock without waiting (1: taken, 0: held elsewhere, NULL: error),
/// release, whether this session still holds the name (its lock can
/// vanish only with the session, but `KILL` ends sessions), and the
/// waiting lock (timeout in seconds, fraction allowed).
pub(crate) fn statements() -> Vec<String> {
    vec![
        "SELECT GET_LOCK(?, 0)".to_owned(),
        "SELECT RELEASE_LOCK(?)".to_owned(),
        "SELECT IS_USED_LOCK(?) = CONNECTION_ID()".to_owned(),
        "SELECT GET_LOCK(?, ?)".to_owned(),
    ]
}

/// What a waiter's cancel hook needs to end the waiting session.
struct Kill {
    settings: Settings,
    /// The waiting session's `CONNECTION_ID()`.
    target: u32,
    state: Mutex<KillState>,
}

#[derive(Default)]
struct KillState {
    /// The waiter is in (or about to send) a `GET_LOCK`.
    waiting: bool,
    /// The hook ended the session.
    killed: bool,
}

impl Kill {
    /// Ends the waiting session if the waiter is in a `GET_LOCK`. Holding
    /// the state while killing, so a waiter that finds `killed` unset
    /// afterwards knows no kill can come later (the wait's cancel flag is
    /// set before this runs, and the waiter checks it under the same lock
    /// before every `GET_LOCK`).
    fn kill(&self) {
        let mut st = lock(&self.state);
        if !st.waiting {
            return;
        }
        let deadline = Instant::now() + self.settings.call_budget();
        if let Ok(mut c) = Conn::open(&self.settings, &[], deadline) {
            if c.text(&format!("KILL CONNECTION {}", self.target)).is_ok() {
                st.killed = true;
            }
        }
    }
}

/// A lock this instance holds: its token, and the session that holds it.
struct HeldLock {
    lock_id: Uuid,
    name: String,
    /// `None` once the connection was taken to unlock or discard it.
    conn: Mutex<Option<Conn>>,
}

struct Shared {
    pool: Pool,
    held: Mutex<HeldLocks<HeldLock>>,
    /// Wakes the reaper: a sooner expiry, or shutdown.
    wake: Condvar,
}

/// A get_lock-mode instance.
pub(crate) struct GetLock {
    shared: Arc<Shared>,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

/// Wrong or stale handle: the lock is not (or no longer) held here.
pub(crate) fn not_held(key: &str) -> Fail {
    Fail::new(FailKind::Server, bext_locking_kit::message::not_held(key))
}

impl GetLock {
    pub fn open(settings: Settings) -> Result<Self, PluginError> {
        let pool = Pool::new(settings, statements());
        let conn = pool.get(pool.deadline()).map_err(|e| {
            let s = pool.settings();
            PluginError::backend(s.secrets.scrub(&format!("mysql ({}): {}", s.target, e.message)))
        })?;
        pool.put(conn);
        let shared = Arc::new(Shared { pool, held: Mutex::default(), wake: Condvar::new() });
        let for_reaper = shared.clone();
        let reaper = std::thread::Builder::new()
            .name("bext-mysql-reaper".into())
            .spawn(move || for_reaper.reap())
            .map_err(|e| {
                PluginError::backend(format!("mysql: cannot start the reaper thread: {e}"))
            })?;
        Ok(Self { shared, reaper: Mutex::new(Some(reaper)) })
    }

    pub fn pool(&self) -> &Pool {
        &self.shared.pool
    }

    pub fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, Fail> {
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
        let name = lock_name(key);
        let deadline = self.shared.pool.deadline();
        let mut sent = Instant::now();
        let (won, conn) = self.shared.pool.attempt(deadline, |c| {
            sent = Instant::now();
            match c.first::<Option<i64>>(TRY_LOCK, (&name,))? {
                Some(Some(1)) => Ok(true),
                Some(Some(_)) => Ok(false),
                _ => Err(Fail::new(FailKind::Server, format!("GET_LOCK('{name}') failed"))),
            }
        })?;
        if !won {
            self.shared.pool.put(conn);
            return Ok(None);
        }
        let handle = self.keep(key, ttl_ms, name, conn, sent)?;
        pending.armed = false;
        Ok(Some(handle))
    }

    /// Records a lock this instance just took on `conn`, held until
    /// `started + ttl_ms` unless renewed.
    fn keep(
        &self,
        key: &str,
        ttl_ms: u64,
        name: String,
        conn: Conn,
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
        // For a try, measured from just before GET_LOCK was sent (after any
        // wait for a connection, which would otherwise eat into a short
        // TTL): the server cannot have granted the lock earlier, so the
        // caller, which counts from before its call, never believes it
        // holds the lock longer than this instance keeps it.
        let until = started.checked_add(Duration::from_millis(ttl_ms)).unwrap_or(started);
        let held = Arc::new(HeldLock { lock_id, name, conn: Mutex::new(Some(conn)) });
        let soonest = h.hold(key, held, until);
        drop(h);
        if soonest {
            self.shared.wake.notify_one();
        }
        Ok(LockHandle { key: key.to_owned(), lock_id: lock_id.to_string(), ttl_ms, fence: None })
    }

    /// Waits for `key` in the server's own queue of `GET_LOCK` waiters: one
    /// try, and when that is contended, `GET_LOCK(name, timeout)` on a
    /// pooled connection, which the server answers the moment the lock is
    /// freed. The timeout of one `GET_LOCK` is kept under the statement
    /// timeout (the connection's read timeout, and MariaDB's
    /// `max_statement_time`), so a long wait is several in a row.
    ///
    /// A cancel ends the waiting session from another connection
    /// (`KILL CONNECTION`), which the server applies whenever it arrives,
    /// even between two `GET_LOCK`s (a `KILL QUERY` arriving then would be
    /// forgotten), and which frees a lock granted at that very moment.
    /// The TTL starts when the grant arrives (this plugin enforces it), so
    /// that is `Acquired::sent`.
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
                other => return other,
            }
        }
    }

    /// One wait in the server's queue, on one session.
    fn queue(&self, key: &str, ttl_ms: u64, wait: &Wait) -> Result<Option<Acquired>, Fail> {
        let pool = &self.shared.pool;
        let name = lock_name(key);
        let mut conn = pool.get(pool.deadline())?;
        let kill = Arc::new(Kill {
            settings: pool.settings().clone(),
            target: conn.connection_id(),
            state: Mutex::new(KillState::default()),
        });
        let hook = {
            let kill = kill.clone();
            wait.on_cancel(move || kill.kill())
        };
        // Three quarters of the statement timeout per GET_LOCK (in seconds,
        // which the server takes with a fraction).
        let chunk = pool.settings().statement_timeout * 3 / 4;
        let outcome = loop {
            {
                let mut st = lock(&kill.state);
                if wait.is_over() {
                    break Ok(false);
                }
                st.waiting = true;
            }
            let secs = wait.remaining().min(chunk).as_secs_f64().max(0.001);
            let got = conn.first::<Option<i64>>(WAIT_LOCK, (&name, secs));
            let killed = {
                let mut st = lock(&kill.state);
                st.waiting = false;
                st.killed
            };
            if killed {
                // The session is gone, and with it a lock granted as the
                // kill came.
                pool.discard(conn);
                drop(hook);
                return Ok(None);
            }
            match got {
                Ok(Some(Some(1))) => break Ok(true),
                Ok(Some(Some(_))) => continue,
                Ok(_) => {
                    break Err(Fail::new(FailKind::Server, format!("GET_LOCK('{name}') failed")));
                }
                Err(e) => break Err(e),
            }
        };
        drop(hook);
        let granted_at = Instant::now();
        match outcome {
            Err(e) => {
                if e.keeps_connection() {
                    pool.put(conn);
                } else {
                    pool.discard(conn);
                }
                Err(e)
            }
            Ok(false) => {
                pool.put(conn);
                Ok(None)
            }
            Ok(true) if wait.is_cancelled() => {
                // Granted as the cancel came, before a kill was needed.
                match conn.first::<Option<i64>>(UNLOCK, (&name,)) {
                    Ok(_) => pool.put(conn),
                    Err(_) => pool.discard(conn),
                }
                Ok(None)
            }
            Ok(true) => {
                let handle = self.keep(key, ttl_ms, name, conn, granted_at)?;
                Ok(Some(Acquired { handle, sent: granted_at }))
            }
        }
    }

    /// Sets the lock's remaining time to `ttl_ms` once (the reaper is this
    /// instance's own timer), after the same check as [`renew`](Self::renew).
    pub fn renew_for(&self, handle: &LockHandle, ttl_ms: u64) -> Result<(), Fail> {
        self.renew(&LockHandle { ttl_ms, ..handle.clone() })
    }

    /// Restarts the TTL after checking on the lock's own connection that
    /// its session still holds the name.
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
        let check = conn.first::<Option<i64>>(STILL_MINE, (&held.name,));
        if let Ok(answer) = check.as_ref() {
            if *answer != Some(Some(1)) {
                // The session lives but lost the name: never happens unless
                // someone released it on this session's behalf. Close the
                // session so that it surely holds nothing.
                let conn = conn_slot.take();
                drop(conn_slot);
                self.forget(&handle.key, &held);
                if let Some(conn) = conn {
                    self.shared.pool.discard(conn);
                }
                return Err(not_held(&handle.key));
            }
        }
        if let Err(e) = check {
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

impl Drop for GetLock {
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
        // The connection's own timeouts bound the call.
        let _ = deadline;
        match conn.first::<Option<i64>>(UNLOCK, (&held.name,)) {
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
