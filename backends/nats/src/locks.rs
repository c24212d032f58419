//! The algorithm: what each call sends, as async functions on one
//! connection. `lib.rs` runs them within the call budget.
//!
//! Two buckets take part in every lock:
//!
//! * the **lock bucket** holds one entry per key, `{id, lease_ms, ttl_ms,
//!   owner}`, whose revision (a stream sequence) is the fence. It has no
//!   `max_age`: nothing there ever expires.
//! * a **lease bucket** per lease length (`max_age` = that TTL) holds one
//!   entry per acquisition, keyed by its lock id, whose value is the lock
//!   key. The server deletes it when its age passes `max_age`; renewing
//!   rewrites it, which restarts its age.
//!
//! A lock is held while its lock entry names a lease that still exists. A
//! lease, once gone (expired or deleted), never comes back: renew is an
//! update conditioned on the lease's current revision, which fails once
//! the message is gone, and only acquire creates leases, each under a fresh
//! lock id. So "the lease is gone" is final, and taking over a lock whose
//! lease is gone is an update of the lock entry conditioned on the revision
//! that was read: two acquirers can never both win it.

use async_nats::jetstream::kv::{Store, UpdateErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bext_locking::{ForceReleased, LockInfo};
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

use crate::client::{Conn, Fail};
use crate::keys::{self, Holder};

/// The last message of one KV key.
pub(crate) struct Read {
    /// Its stream sequence: the entry's revision.
    pub revision: u64,
    pub value: Bytes,
    /// False for a delete or purge marker.
    pub live: bool,
    /// When the server stored it, by the server's clock.
    pub time: std::time::SystemTime,
}

/// Reads the last message of `kv_key` from the stream leader (never a
/// direct get, which a follower may answer from an older state).
pub(crate) async fn read(store: &Store, kv_key: &str) -> Result<Option<Read>, Fail> {
    let subject = format!("{}{}", store.prefix, kv_key);
    match store.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => {
            let op = m.headers.get("KV-Operation").map(|v| v.as_str().to_owned());
            let marker = m.headers.get("Nats-Marker-Reason").is_some();
            Ok(Some(Read {
                revision: m.sequence,
                live: op.is_none() && !marker,
                value: m.payload,
                time: m.time.into(),
            }))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(Fail::other(&format!("reading `{}`", store.name), e)),
    }
}

/// Whether `holder`'s lease on `key` still exists.
async fn lease_alive(c: &Conn, holder: &Holder, key: &str) -> Result<bool, Fail> {
    if !keys::is_lock_id(&holder.id) {
        return Err(Fail::Other(format!(
            "the lock entry of `{key}` names lease `{}`, which this backend never writes",
            holder.id
        )));
    }
    let leases = c.leases(holder.lease_ms).await?;
    Ok(read(&leases, &holder.id).await?.is_some_and(|r| r.live && r.value == key.as_bytes()))
}

/// Acquires `key` under `lock_id` with a lease of `ttl_ms`: the fence, or
/// `None` when a live lease holds it. The caller deletes the lease
/// `lock_id` after `Ok(None)` and after an error.
pub(crate) async fn try_lock(
    c: &Conn,
    key: &str,
    lock_id: &str,
    ttl_ms: u64,
    owner: Option<&str>,
) -> Result<Option<u64>, Fail> {
    let lease_ms = keys::lease_ms(ttl_ms);
    let leases = c.leases(lease_ms).await?;
    // The lease first: a lock entry never names a lease that was not
    // written yet, so no acquirer can take it for expired.
    leases
        .put(lock_id, Bytes::copy_from_slice(key.as_bytes()))
        .await
        .map_err(|e| Fail::other("writing the lease", e))?;
    let holder =
        Holder { id: lock_id.to_owned(), lease_ms, ttl_ms, owner: owner.map(str::to_owned) };
    let value = holder.encode();
    let k = keys::kv_key(key);
    // 0: "no message for this key", the usual case after a release.
    let mut expect = 0;
    for _ in 0..4 {
        match c.locks.update(&k, value.clone(), expect).await {
            Ok(revision) => return Ok(Some(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
            Err(e) => return Err(Fail::other("writing the lock entry", e)),
        }
        expect = match read(&c.locks, &k).await? {
            None => 0,
            Some(r) if !r.live => r.revision,
            Some(r) => {
                let Some(h) = Holder::decode(&r.value) else {
                    return Err(Fail::Other(format!(
                        "the lock entry of `{key}` is not this backend's (bucket shared with \
                         something else?)"
                    )));
                };
                if lease_alive(c, &h, key).await? {
                    return Ok(None);
                }
                r.revision
            }
        };
    }
    // Every attempt lost its compare to another acquirer.
    Ok(None)
}

/// Restarts the lease of `lock_id` on `key`. `Ok(false)`: it is gone.
pub(crate) async fn renew(c: &Conn, key: &str, lock_id: &str, ttl_ms: u64) -> Result<bool, Fail> {
    if !keys::is_lock_id(lock_id) {
        return Ok(false);
    }
    let leases = c.leases(keys::lease_ms(ttl_ms)).await?;
    let Some(r) = read(&leases, lock_id).await? else { return Ok(false) };
    if !r.live || r.value != key.as_bytes() {
        return Ok(false);
    }
    match leases.update(lock_id, r.value, r.revision).await {
        Ok(_) => Ok(true),
        // Expired (or deleted) between the read and the update.
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
        Err(e) => Err(Fail::other("rewriting the lease", e)),
    }
}

/// The lock entry of `key` when `lock_id` holds it (live lease or not).
pub(crate) async fn held_entry(c: &Conn, key: &str) -> Result<Option<(Read, Holder)>, Fail> {
    let Some(r) = read(&c.locks, &keys::kv_key(key)).await? else { return Ok(None) };
    if !r.live {
        return Ok(None);
    }
    Ok(Holder::decode(&r.value).map(|h| (r, h)))
}

/// Ends the hold described by the lock entry `(r, h)` of `key`: its lease
/// first (the lock is free from then on), then the entry itself, by its
/// sequence: that message is this hold's and nobody else's.
pub(crate) async fn end_hold(c: &Conn, r: &Read, h: &Holder) -> Result<(), Fail> {
    if keys::is_lock_id(&h.id) {
        let leases = c.leases(h.lease_ms).await?;
        leases.delete(&h.id).await.map_err(|e| Fail::other("deleting the lease", e))?;
    }
    // "Not found" means a later holder took the key over after the lease
    // was gone (the message is theirs now); any other failure leaves an
    // entry whose lease is gone, which the next acquirer takes over. The
    // lock is free either way.
    let _ = c.locks.stream.delete_message(r.revision).await;
    Ok(())
}

/// Releases `key` if `lock_id` holds it; anything else is left untouched.
pub(crate) async fn release(c: &Conn, key: &str, lock_id: &str) -> Result<(), Fail> {
    match held_entry(c, key).await? {
        Some((r, h)) if h.id == lock_id => end_hold(c, &r, &h).await,
        _ => Ok(()),
    }
}

/// Deletes lease `lock_id` of `ttl_ms` (clean-up after a try_lock that did
/// not acquire).
pub(crate) async fn drop_lease(c: &Conn, lock_id: &str, ttl_ms: u64) -> Result<(), Fail> {
    let leases = c.leases(keys::lease_ms(ttl_ms)).await?;
    leases.delete(lock_id).await.map_err(|e| Fail::other("deleting the lease", e))
}

/// Who holds `key`: the lock entry's fence and owner while its lease lives.
/// `expires_in_ms` and `held_for_ms` compare the server's timestamps of the
/// lease and lock entries with this host's clock (the server has no "now"
/// to ask for), so they are as good as the two clocks agree.
pub(crate) async fn inspect(c: &Conn, key: &str) -> Result<LockInfo, Fail> {
    let Some((r, h)) = held_entry(c, key).await? else { return Ok(LockInfo::free(key)) };
    if !keys::is_lock_id(&h.id) {
        return Ok(LockInfo::free(key));
    }
    let leases = c.leases(h.lease_ms).await?;
    let lease = match read(&leases, &h.id).await? {
        Some(l) if l.live && l.value == key.as_bytes() => l,
        _ => return Ok(LockInfo::free(key)),
    };
    let now = std::time::SystemTime::now();
    let since = |t: std::time::SystemTime| now.duration_since(t).unwrap_or_default();
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Ok(LockInfo {
        key: key.to_owned(),
        held: true,
        fence: Some(r.revision),
        owner: h.owner,
        expires_in_ms: Some(h.lease_ms.saturating_sub(ms(since(lease.time)))),
        held_for_ms: Some(ms(since(r.time))),
    })
}

/// Breaks the hold on `key` (only when its fence is `if_fence`, if given):
/// the lease is deleted, which a racing renew (an update conditioned on the
/// lease's revision) can never undo, then the lock entry.
pub(crate) async fn force_release(
    c: &Conn,
    key: &str,
    if_fence: Option<u64>,
) -> Result<ForceReleased, Fail> {
    let Some((r, h)) = held_entry(c, key).await? else {
        return Ok(ForceReleased { released: false, fence: None });
    };
    if if_fence.is_some_and(|f| f != r.revision) || !lease_alive(c, &h, key).await? {
        return Ok(ForceReleased { released: false, fence: None });
    }
    end_hold(c, &r, &h).await?;
    Ok(ForceReleased { released: true, fence: Some(r.revision) })
}

/// What ended a waiter's sleep in [`wait_turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// The holder's lease was deleted (release, force release), or the
    /// holder changed or went before the watch began: try again.
    Changed,
    /// The holder's lease should have run out by now: try again.
    Expired,
    /// The wait was cancelled or reached its deadline.
    Over,
}

/// Sleeps until `key`'s current hold ends: a message on the holder's
/// lease subject that deletes it, or the lease's end by its age (`max_age`
/// expiry publishes nothing), never sooner than `floor`. Subscribes to the
/// lease's subject itself, a core NATS subscription and no JetStream
/// consumer, so nothing is left on the server once it returns.
pub(crate) async fn wait_turn(
    c: &Conn,
    key: &str,
    floor: Duration,
    deadline: tokio::time::Instant,
    cancel: &Notify,
) -> Result<Woke, Fail> {
    let Some((_, h)) = held_entry(c, key).await? else { return Ok(Woke::Changed) };
    if !keys::is_lock_id(&h.id) {
        return Err(Fail::Other(format!(
            "the lock entry of `{key}` names lease `{}`, which this backend never writes",
            h.id
        )));
    }
    let leases = c.leases(h.lease_ms).await?;
    let client = c.js.client();
    let mut sub = client
        .subscribe(format!("{}{}", leases.prefix, h.id))
        .await
        .map_err(|e| Fail::other("subscribing to the holder's lease", e))?;
    let woke = async {
        // Read after subscribing (the server handles one connection's
        // commands in order): a delete in between is seen here, and any
        // later one arrives on the subscription.
        let lease = match read(&leases, &h.id).await? {
            Some(l) if l.live && l.value == key.as_bytes() => l,
            _ => return Ok(Woke::Changed),
        };
        let length = Duration::from_millis(h.lease_ms);
        let age = SystemTime::now().duration_since(lease.time).unwrap_or_default();
        // By the server's timestamp and this host's clock, but never later
        // than a whole lease from now (a clock behind the server's cannot
        // make a waiter oversleep).
        let mut ends =
            tokio::time::Instant::now() + length.saturating_sub(age).min(length).max(floor);
        loop {
            tokio::select! {
                m = sub.next() => match m {
                    None => return Ok(Woke::Changed),
                    Some(m) if is_removal(&m) => return Ok(Woke::Changed),
                    // A renew rewrote the lease: it lives a whole lease on.
                    Some(_) => ends = tokio::time::Instant::now() + length.max(floor),
                },
                () = tokio::time::sleep_until(ends) => return Ok(Woke::Expired),
                () = tokio::time::sleep_until(deadline) => return Ok(Woke::Over),
                () = cancel.notified() => return Ok(Woke::Over),
            }
        }
    }
    .await;
    // Dropping would unsubscribe too, from a task; this is at once.
    let _ = sub.unsubscribe().await;
    woke
}

/// Whether a KV message deletes its key.
fn is_removal(m: &async_nats::Message) -> bool {
    m.headers
        .as_ref()
        .and_then(|h| h.get("KV-Operation"))
        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
}
