//! Redlock: one lock over N independent masters, held while a majority
//! holds it.
//!
//! Each attempt starts a monotonic clock before its first request, puts the
//! request on the wire to every master before reading any answer (so the
//! masters work in parallel and a hung one costs one per-node timeout, not
//! one per master), and keeps the lock only when a majority granted it
//! *and* time is left on the lease after subtracting the elapsed time and
//! the clock-drift allowance. A failed attempt is undone on every master.
//!
//! `inspect` reports what a majority of masters agree on: the lock is held
//! when a majority hold the same token, and its times are those that
//! majority still covers. `force_release` deletes that token (only that
//! one) on every master and has broken the lock when a majority did.
//!
//! Quorum locks carry no fence: the masters share no counter, and a
//! per-master counter can go backwards when the majority that granted the
//! next lock is a different set of masters (one restarted without data).

use std::time::{Duration, Instant};

use bext_locking::{ForceReleased, LockHandle, LockInfo};
use redis::Value;

use crate::keys::{info_key, lock_key, wake_channel};
use crate::node::{Invocation, Node, Pending};
use crate::scripts::{ACQUIRE_PLAIN_WAIT, FORCE_RELEASE_PLAIN, INSPECT, Inspected, RELEASE, RENEW};
use crate::waiting::{Try, contended};

/// The fixed part of Redlock's drift allowance.
const DRIFT_FLOOR: Duration = Duration::from_millis(2);
/// The per-master timeout never drops below this, however short the TTL:
/// opening a connection on a loaded machine can take tens of milliseconds.
/// Waiting longer is never unsafe (validity is measured after the answers
/// are in); it only lets a dead master cost more of a short lease.
const MIN_NODE_TIMEOUT: Duration = Duration::from_millis(50);

/// N independent masters.
pub struct Quorum {
    nodes: Vec<Node>,
    drift_factor: f64,
    op_timeout: Duration,
}

/// How each master answered one fan-out.
struct Tally {
    yes: usize,
    no: usize,
    /// The holders' remaining times where a waiter's acquire was refused
    /// (`None`: that key has no expiry).
    held_for: Vec<Option<Duration>>,
    failures: Vec<String>,
}

impl Quorum {
    /// A quorum over `nodes`.
    pub fn new(nodes: Vec<Node>, drift_factor: f64, op_timeout: Duration) -> Self {
        Self { nodes, drift_factor, op_timeout }
    }

    /// A client per master, for a waiter's subscriptions.
    pub fn clients(&self) -> Vec<redis::Client> {
        self.nodes.iter().map(Node::client).collect()
    }

    /// Drops idle connections and refuses new calls on every master.
    pub fn close(&self) {
        self.nodes.iter().for_each(Node::close);
    }

    /// The shortest TTL that can leave any validity: the lease must outlast
    /// the drift allowance (`ttl * drift + 2 ms`) even with no time spent
    /// on the round trips. A shorter one is refused up front, as input this
    /// quorum cannot serve, rather than tried and lost.
    pub fn min_ttl_ms(&self) -> u64 {
        let floor = DRIFT_FLOOR.as_secs_f64() * 1000.0;
        (floor / (1.0 - self.drift_factor)).floor() as u64 + 1
    }

    /// Why [`min_ttl_ms`](Self::min_ttl_ms) is what it is, for the refusal.
    pub fn min_ttl_why(&self) -> String {
        format!(
            "a Redlock quorum keeps a lock only while validity is left after the clock drift \
             allowance ({} ms plus {} of the TTL), so a shorter lease has none",
            DRIFT_FLOOR.as_millis(),
            self.drift_factor
        )
    }

    fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// How long to wait for one master: far below the TTL so a dead master
    /// does not eat the lease, and at most half the call's budget so undoing
    /// a failed attempt still has time.
    fn node_timeout(&self, ttl_ms: u64) -> Duration {
        (Duration::from_millis(ttl_ms) / 10).max(MIN_NODE_TIMEOUT).min(self.op_timeout / 2)
    }

    /// The lease left after `elapsed`, in milliseconds (negative when gone):
    /// `ttl - elapsed - (ttl * drift + 2 ms)`.
    fn validity_ms(&self, ttl_ms: u64, elapsed: Duration) -> f64 {
        let ttl = ttl_ms as f64;
        ttl - elapsed.as_secs_f64() * 1000.0
            - (ttl * self.drift_factor + DRIFT_FLOOR.as_secs_f64() * 1000.0)
    }

    /// Sends `inv` to every master, then collects every answer.
    fn fan_out(&self, inv: &Invocation<'_>, deadline: Instant) -> Vec<Result<Value, String>> {
        let packed = inv.packed(true);
        let mut pending: Vec<Pending<'_>> = self.nodes.iter().map(|n| n.start(deadline)).collect();
        for p in pending.iter_mut().filter(|p| !p.needs_connect()) {
            p.send(&packed, deadline);
        }
        let mut fresh: Vec<&mut Pending<'_>> =
            pending.iter_mut().filter(|p| p.needs_connect()).collect();
        // Opening connections is the rare path (first use, after a restart).
        // A master that accepts TCP but never answers (SIGSTOP) blocks its
        // connect until the deadline, so connects run in parallel threads.
        if fresh.len() == 1 {
            let p = &mut fresh[0];
            p.connect(deadline);
            p.send(&packed, deadline);
        } else if !fresh.is_empty() {
            std::thread::scope(|s| {
                for p in fresh {
                    let packed = &packed;
                    let work = move || {
                        p.connect(deadline);
                        p.send(packed, deadline);
                    };
                    // If no thread can be made, `finish` connects in line:
                    // slower, still correct.
                    let _ = std::thread::Builder::new().spawn_scoped(s, work);
                }
            });
        }
        pending.into_iter().map(|p| p.finish(inv, deadline)).collect()
    }

    fn tally(&self, results: Vec<Result<Value, String>>) -> Tally {
        let mut t = Tally { yes: 0, no: 0, held_for: Vec::new(), failures: Vec::new() };
        for (node, r) in self.nodes.iter().zip(results) {
            match r {
                Ok(Value::Int(1) | Value::Okay) => t.yes += 1,
                Ok(Value::SimpleString(s)) if s == "OK" => t.yes += 1,
                Ok(Value::Int(0) | Value::Nil) => t.no += 1,
                Ok(v) if contended(&v).is_some() => {
                    t.no += 1;
                    t.held_for.extend(contended(&v));
                }
                Ok(other) => t
                    .failures
                    .push(format!("redis {}: unexpected script reply {other:?}", node.label())),
                Err(e) => t.failures.push(e),
            }
        }
        t
    }

    /// One Redlock attempt.
    pub fn try_lock(
        &self,
        prefix: &str,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Option<LockHandle>, String> {
        self.attempt(None, prefix, key, ttl_ms, owner).map(|(got, _)| got)
    }

    /// One Redlock attempt for a waiter: on contention, when the lock
    /// could be free again. A majority must be free, so that is when
    /// enough of the refusing masters' leases have run out to make one
    /// with the masters that granted this attempt; after a split (some
    /// masters granted, too few), other waiters' tokens are what blocked
    /// it and their owners undo them at once (publishing), so the retry
    /// comes after a short random pause instead.
    pub fn try_waiting(
        &self,
        prefix: &str,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Try, String> {
        let (got, t) = self.attempt(Some(&ACQUIRE_PLAIN_WAIT), prefix, key, ttl_ms, owner)?;
        if let Some(handle) = got {
            return Ok(Try::Got(handle));
        }
        let Some(t) = t else { return Ok(Try::Held(None)) };
        if t.yes > 0 {
            return Ok(Try::Held(Some(split_pause())));
        }
        let need = self.majority().saturating_sub(self.nodes.len() - t.no - t.failures.len());
        let mut ends: Vec<Duration> =
            t.held_for.iter().map(|d| d.unwrap_or(Duration::MAX)).collect();
        ends.sort_unstable();
        let hint = need.checked_sub(1).and_then(|i| ends.get(i)).copied();
        Ok(Try::Held(hint.filter(|d| *d != Duration::MAX)))
    }

    /// One attempt: `SET lock value NX PX ttl` on every master, or `script`
    /// (a waiter's, which answers contention with the holder's `PTTL`) on
    /// the lock's key alone. The value carries the owner (see [`holder`]),
    /// so nothing but the lock is written on the way to a held lock. The
    /// lock, or `None` and the tally that refused it (`None` too when only
    /// failures answered: that is `Err`).
    ///
    /// [`holder`]: crate::holder
    fn attempt(
        &self,
        script: Option<&crate::scripts::Lua>,
        prefix: &str,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<(Option<LockHandle>, Option<Tally>), String> {
        let token = crate::holder::unfenced_value(uuid::Uuid::new_v4().to_string(), ttl_ms, owner);
        let (lock, info) = (lock_key(prefix, key), info_key(prefix, key));
        let ttl = ttl_ms.to_string();
        let args = [token.as_str(), ttl.as_str()];
        let start = Instant::now();
        let inv = Invocation { lua: script, keys: &[&lock], args: &args };
        let t = self.tally(self.fan_out(&inv, start + self.node_timeout(ttl_ms)));
        let validity = self.validity_ms(ttl_ms, start.elapsed());
        if t.yes >= self.majority() && validity > 0.0 {
            let handle = LockHandle { key: key.to_owned(), lock_id: token, ttl_ms, fence: None };
            return Ok((Some(handle), None));
        }
        // Undo the attempt everywhere, also where the answer was lost: a
        // master that timed out may still have stored the token. What cannot
        // be undone now expires with the TTL. Where a token is deleted the
        // undo publishes, so waiters it blocked try again.
        let channel = wake_channel(prefix, key);
        let _ = self.release_token(&lock, &info, &token, Some(&channel), start + self.op_timeout);
        if t.no > 0 {
            return Ok((None, Some(t)));
        }
        let n = self.nodes.len();
        if t.yes >= self.majority() {
            return Err(format!(
                "redis quorum: {} of {n} masters granted `{key}` but no validity was left ({validity:.1} ms): ttl_ms {ttl_ms} is shorter than the round trips plus the clock drift allowance",
                t.yes
            ));
        }
        Err(format!(
            "redis quorum: only {} of {n} masters granted `{key}` ({} needed), the rest failed: {}",
            t.yes,
            self.majority(),
            t.failures.join("; ")
        ))
    }

    /// Compare-and-extend on every master; kept only with a majority of
    /// confirmations inside the new lease's validity.
    /// `ttl_ms` is the lease to set (the handle's own for a renew); with
    /// `notify` (`renew_for`) each master publishes to the lock's channel,
    /// so waiters read the new expiry.
    pub fn renew(
        &self,
        prefix: &str,
        handle: &LockHandle,
        ttl_ms: u64,
        notify: bool,
    ) -> Result<(), String> {
        let (lock, info) = (lock_key(prefix, &handle.key), info_key(prefix, &handle.key));
        let ttl = ttl_ms.to_string();
        let channel = wake_channel(prefix, &handle.key);
        let mut args = vec![handle.lock_id.as_str(), ttl.as_str()];
        if notify {
            args.push(&channel);
        }
        let start = Instant::now();
        let inv = Invocation { lua: Some(&RENEW), keys: &[&lock, &info], args: &args };
        let t = self.tally(self.fan_out(&inv, start + self.node_timeout(ttl_ms)));
        let validity = self.validity_ms(ttl_ms, start.elapsed());
        if t.yes >= self.majority() && validity > 0.0 {
            return Ok(());
        }
        let mut why = format!(
            "redis quorum: lock on `{}` is lost: {} of {} masters confirmed it ({} needed, validity {validity:.1} ms)",
            handle.key,
            t.yes,
            self.nodes.len(),
            self.majority()
        );
        if !t.failures.is_empty() {
            why.push_str("; failures: ");
            why.push_str(&t.failures.join("; "));
        }
        Err(why)
    }

    /// Compare-and-delete on every master.
    pub fn release(&self, prefix: &str, handle: &LockHandle) -> Result<(), String> {
        let (lock, info) = (lock_key(prefix, &handle.key), info_key(prefix, &handle.key));
        // The same per-master timeout as acquire and renew: a lock's calls
        // then share one socket timeout and need no `setsockopt` between them.
        let deadline = Instant::now() + self.node_timeout(handle.ttl_ms);
        let channel = wake_channel(prefix, &handle.key);
        self.release_token(&lock, &info, &handle.lock_id, Some(&channel), deadline)
    }

    /// OK when a majority answered: the rest expire with the TTL, and a
    /// minority can never keep anyone else from a quorum. Each master that
    /// deletes the token publishes to `channel`.
    fn release_token(
        &self,
        lock: &str,
        info: &str,
        token: &str,
        channel: Option<&str>,
        deadline: Instant,
    ) -> Result<(), String> {
        let mut args = vec![token];
        args.extend(channel);
        let inv = Invocation { lua: Some(&RELEASE), keys: &[lock, info], args: &args };
        let results = self.fan_out(&inv, deadline);
        let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if self.nodes.len() - failures.len() >= self.majority() {
            return Ok(());
        }
        Err(format!(
            "redis quorum: release reached only {} of {} masters: {}",
            self.nodes.len() - failures.len(),
            self.nodes.len(),
            failures.join("; ")
        ))
    }

    /// The majority view of `key`: held when a majority of masters hold
    /// one token. Its `expires_in_ms` is how long that majority still
    /// holds it (the majority-th longest `PTTL`: after that, fewer than a
    /// majority do), and its `held_for_ms` the same rank of the masters'
    /// own acquisition times, each by that master's clock. `Err` when too
    /// few masters answered to know.
    pub fn inspect(&self, prefix: &str, key: &str) -> Result<LockInfo, String> {
        match self.majority_view(prefix, key)? {
            None => Ok(LockInfo::free(key)),
            Some(agreed) => {
                let rank = |mut v: Vec<u64>| {
                    v.sort_unstable_by(|a, b| b.cmp(a));
                    v.get(self.majority() - 1).copied()
                };
                let pttl = agreed.iter().map(|i| i.pttl_ms.unwrap_or(u64::MAX)).collect();
                let held = agreed.iter().filter_map(|i| i.held_for_ms).collect();
                Ok(LockInfo {
                    key: key.to_owned(),
                    held: true,
                    fence: None,
                    owner: agreed.iter().find_map(|i| i.owner.clone()),
                    expires_in_ms: rank(pttl).filter(|&ms| ms != u64::MAX),
                    held_for_ms: rank(held),
                })
            }
        }
    }

    /// The masters' answers for the token a majority hold, if one is.
    fn majority_view(&self, prefix: &str, key: &str) -> Result<Option<Vec<Inspected>>, String> {
        let (lock, info) = (lock_key(prefix, key), info_key(prefix, key));
        let inv = Invocation { lua: Some(&INSPECT), keys: &[&lock, &info], args: &[] };
        let results = self.fan_out(&inv, Instant::now() + self.op_timeout);
        let mut held: Vec<Inspected> = Vec::new();
        let mut failures = Vec::new();
        for (node, r) in self.nodes.iter().zip(results) {
            match r.map(|v| (Inspected::parse(&v), v)) {
                Ok((Some(Some(i)), _)) => held.push(i),
                Ok((Some(None), _)) => {}
                Ok((None, v)) => {
                    failures.push(format!("redis {}: unexpected inspect reply {v:?}", node.label()))
                }
                Err(e) => failures.push(e),
            }
        }
        let answered = self.nodes.len() - failures.len();
        if answered < self.majority() {
            return Err(format!(
                "redis quorum: only {answered} of {} masters answered `inspect` ({} needed): {}",
                self.nodes.len(),
                self.majority(),
                failures.join("; ")
            ));
        }
        let Some(top) =
            held.iter().max_by_key(|i| held.iter().filter(|j| j.digest == i.digest).count())
        else {
            return Ok(None);
        };
        let digest = top.digest.clone();
        let agreed: Vec<Inspected> = held.into_iter().filter(|i| i.digest == digest).collect();
        Ok((agreed.len() >= self.majority()).then_some(agreed))
    }

    /// Breaks the lock a majority hold: deletes that token, and only it, on
    /// every master (one script each, so a racing renew of the broken
    /// holder cannot revive it on any of them), and has released it when
    /// a majority deleted it. The broken holder's next renew then finds at
    /// most a minority and fails.
    pub fn force_release(&self, prefix: &str, key: &str) -> Result<ForceReleased, String> {
        let Some(agreed) = self.majority_view(prefix, key)? else {
            return Ok(ForceReleased { released: false, fence: None });
        };
        let digest = String::from_utf8_lossy(&agreed[0].digest).into_owned();
        let (lock, info) = (lock_key(prefix, key), info_key(prefix, key));
        let channel = wake_channel(prefix, key);
        let inv = Invocation {
            lua: Some(&FORCE_RELEASE_PLAIN),
            keys: &[&lock, &info],
            args: &[&digest, &channel],
        };
        let t = self.tally(self.fan_out(&inv, Instant::now() + self.op_timeout));
        if t.yes >= self.majority() {
            return Ok(ForceReleased { released: true, fence: None });
        }
        if t.failures.is_empty() {
            // The holder released it (or it expired) between the two steps.
            return Ok(ForceReleased { released: false, fence: None });
        }
        Err(format!(
            "redis quorum: the lock on `{key}` was deleted on only {} of {} masters ({} needed), \
             the rest failed: {}",
            t.yes,
            self.nodes.len(),
            self.majority(),
            t.failures.join("; ")
        ))
    }
}

/// The pause before a waiter retries after a split: 2 to 20 ms, at random,
/// so waiters that split the masters between them do not collide again in
/// step (Redlock's "retry after a random delay").
fn split_pause() -> Duration {
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    Duration::from_micros(2_000 + r % 18_000)
}
