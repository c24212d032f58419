//! The Lua scripts. Each runs atomically on the server, so a check and the
//! write that depends on it can never be split by another client.
//!
//! Every script is idempotent for the token it is given: running it twice
//! (after a connection dropped before the reply arrived) returns what the
//! first run would have. That is what makes the one silent retry on a
//! reused connection safe.

use std::sync::LazyLock;

use bext_locking::LockInfo;
use redis::Value;

/// A script's source and its SHA-1, for `EVALSHA` with an `EVAL` fallback.
pub struct Lua {
    /// The Lua source.
    pub source: &'static str,
    /// Its SHA-1 in hex, as `EVALSHA` wants it.
    pub sha: String,
}

impl Lua {
    fn new(source: &'static str) -> Self {
        Self { source, sha: redis::Script::new(source).get_hash().to_owned() }
    }
}

/// What the waiters' acquires answer on contention: the lock's `PTTL`
/// (`-1` for a key without expiry), in a one-element array so it never
/// reads as a fence or a grant.
macro_rules! contended_pttl {
    () => {
        "return {redis.call('PTTL', KEYS[1])}\n"
    };
}

/// The fenced acquire up to its answer on contention, shared by
/// [`ACQUIRE_FENCED`] and [`ACQUIRE_FENCED_WAIT`].
macro_rules! acquire_fenced_body {
    () => {
        r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('TIME')
  local now = t[1] .. string.sub('00000' .. t[2], -6)
  if KEYS[3] then
    redis.call('DEL', KEYS[3])
    if ARGV[3] then
      redis.call('HSET', KEYS[3], 'tok', redis.sha1hex(ARGV[1]), 'since', now, 'owner', ARGV[3])
    else
      redis.call('HSET', KEYS[3], 'tok', redis.sha1hex(ARGV[1]), 'since', now)
    end
    redis.call('PEXPIRE', KEYS[3], ARGV[2])
  end
  local last = redis.call('SET', KEYS[2], now, 'GET')
  if last and (#last > #now or (#last == #now and last >= now)) then
    local fence = tonumber(last) + 1
    redis.call('SET', KEYS[2], string.format('%.0f', fence))
    return fence
  end
  return tonumber(now)
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return tonumber(redis.call('GET', KEYS[2]))
end
"#
    };
}

/// Single node and cluster: `SET NX PX`, then raise the never-expiring
/// fence counter to `max(counter + 1, server time in microseconds)`.
///
/// The clock floor is what keeps fences rising when the counter itself is
/// lost or rolled back: a restart without persistence, or one that loads an
/// older RDB snapshot or loses the last second of an `everysec` AOF. Every
/// fence handed out before the restart is at most (about) the server time
/// it was handed out at, so the first fence after it is larger, as long as
/// the server clock has not stepped back.
///
/// The server time nearly always wins (a script takes over a microsecond,
/// so the clock has moved on since the last fence), so the script writes it
/// first and reads the previous fence in the same `SET ... GET` (Redis 6.2
/// or later), comparing the two as digit strings; only a clock that has not
/// passed the counter costs a second write. That is one call and two
/// number conversions fewer than reading the counter, taking the maximum
/// and writing it back: the server's own `INFO commandstats` and an
/// instruction count both show the difference (docs/BENCHMARKS.md).
///
/// With a third key, the holder's record for `inspect` is written beside
/// the lock, on the same TTL: the SHA-1 of the token (so `inspect` can tell
/// the record belongs to the live lock without the token itself being
/// stored twice), the acquisition time by the server clock (the same
/// microseconds as the clock floor), and the owner when one is given.
///
/// KEYS: lock, fence, [info]. ARGV: token, ttl_ms, [owner]. Returns the
/// fence, or nil when someone else holds the lock (or, after a lost reply,
/// ours again).
pub static ACQUIRE_FENCED: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(acquire_fenced_body!(), "return false\n")));

/// [`ACQUIRE_FENCED`] for a waiter: on contention it answers `{pttl}`, the
/// holder's remaining time, so the waiter knows when an expiry could free
/// the lock without a second round trip.
pub static ACQUIRE_FENCED_WAIT: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(acquire_fenced_body!(), contended_pttl!())));

/// The fenced acquire as it was before [`ACQUIRE_FENCED`] learned to write
/// the clock first: read the counter, take the maximum, write it back (and,
/// with a third key, the same holder's record). Kept for the benchmark,
/// which measures the two side by side on the server; never sent by the
/// plugin.
#[doc(hidden)]
pub const ACQUIRE_FENCED_READ_MAX_WRITE: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local fence = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
  if now > fence then
    fence = now
  end
  redis.call('SET', KEYS[2], string.format('%.0f', fence))
  if KEYS[3] then
    redis.call('DEL', KEYS[3])
    redis.call('HSET', KEYS[3], 'tok', redis.sha1hex(ARGV[1]), 'since', string.format('%.0f', now))
    if ARGV[3] then
      redis.call('HSET', KEYS[3], 'owner', ARGV[3])
    end
    redis.call('PEXPIRE', KEYS[3], ARGV[2])
  end
  return fence
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return tonumber(redis.call('GET', KEYS[2]))
end
return false
"#;

/// A waiter's acquire of a lock without fences (single node, cluster, and
/// each master of a quorum): `SET NX PX`, answering contention with
/// `{pttl}`, the holder's remaining time, in the same call. The value
/// carries the owner (see `holder`), so no record is written. A plain
/// `try_lock` sends the bare `SET` instead. KEYS: lock. ARGV: value,
/// ttl_ms. Returns 1 when the value holds the lock (also when it did
/// already: a resent command after a lost reply).
pub static ACQUIRE_PLAIN_WAIT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
"#,
        contended_pttl!()
    ))
});

/// Compare-and-`PEXPIRE`: never creates a missing key. KEYS: lock,
/// [info], whose TTL follows the lock's. ARGV: token, ttl_ms, [channel]:
/// with a channel (`renew_for`, which may bring the expiry closer) the
/// waiters are told, so they read the new `PTTL`. Returns 1 when extended,
/// 0 when not ours.
///
/// An unfenced lock whose value carries its owner and TTL (see `holder`)
/// has no record until its first renew: until then `ttl_ms - PTTL` is how
/// long it has been held, and the renew is about to reset the `PTTL`, so it
/// first writes the acquisition time that gives into the record.
pub static RENEW: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if KEYS[2] then
    local ttl = string.match(ARGV[1], '^[^:]*:(%d+):')
    if ttl then
      local d = redis.sha1hex(ARGV[1])
      local pttl = redis.call('PTTL', KEYS[1])
      if pttl >= 0 and redis.call('HGET', KEYS[2], 'tok') ~= d then
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local since = now - (tonumber(ttl) - pttl) * 1000
        redis.call('DEL', KEYS[2])
        redis.call('HSET', KEYS[2], 'tok', d, 'since', string.format('%.0f', since))
      end
    end
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
  local n = redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if ARGV[3] then
    redis.call('PUBLISH', ARGV[3], '1')
  end
  return n
end
return 0
"#,
    )
});

/// Compare-and-delete. KEYS: lock, [info]. ARGV: token, [channel]: a
/// release publishes on the lock's channel in the same atomic step, so a
/// waiter subscribed before its last try always hears of it (a quorum's
/// undo of a failed attempt passes no channel). Returns 1 when deleted, 0
/// when the key was gone or held by another token.
pub static RELEASE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if KEYS[2] then
    redis.call('DEL', KEYS[2])
  end
  local n = redis.call('DEL', KEYS[1])
  if ARGV[2] then
    redis.call('PUBLISH', ARGV[2], '1')
  end
  return n
end
return 0
"#,
    )
});

/// Who holds a lock, by this server's clock, without the token: the SHA-1
/// of the token (only to tell the holders of a quorum's masters apart; the
/// plugin never shows it), the lock's remaining `PTTL`, the fence counter
/// (with a third key), how long ago the holder acquired it and its owner.
///
/// Those last two come from the record beside the lock when it is this
/// holder's, else from the value of an unfenced lock that carries its
/// owner and TTL (see `holder`: held for `ttl_ms - PTTL`, since no renew
/// has written a record yet). A holder that left neither, such as one
/// without an owner, shows neither.
///
/// KEYS: lock, info, [fence]. Returns nil when free, else
/// `{digest, pttl, fence or '', held_for_ms or -1, has_owner, owner}`.
pub static INSPECT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local v = redis.call('GET', KEYS[1])
if not v then
  return false
end
local d = redis.sha1hex(v)
local pttl = redis.call('PTTL', KEYS[1])
local fence = ''
if KEYS[3] then
  fence = redis.call('GET', KEYS[3]) or ''
end
local ttl, owner = string.match(v, '^[^:]*:(%d+):(.*)$')
local held = -1
local i = redis.call('HMGET', KEYS[2], 'tok', 'since', 'owner')
if i[1] == d and i[2] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  held = math.max(0, math.floor((now - tonumber(i[2])) / 1000))
  if i[3] then
    owner = i[3]
  end
elseif ttl and pttl >= 0 then
  held = math.max(0, tonumber(ttl) - pttl)
end
if owner then
  return {d, pttl, fence, held, 1, owner}
end
return {d, pttl, fence, held, 0, ''}
"#,
    )
});

/// Single node and cluster: break the lock whoever holds it, in one step,
/// so a racing renew runs wholly before (and is undone) or after (and finds
/// no lock). The fence counter stays, so the next fence is higher.
///
/// KEYS: lock, fence, info. ARGV: channel (published to when the lock is
/// broken, to wake waiters), [if_fence]. Returns nil when the key is free
/// (or its fence is not `if_fence`), else `{fence or ''}`.
///
/// Unlike the others its *answer* is not idempotent: if a reply is lost and
/// the call retried, the retry finds the key free and says so; the lock is
/// broken either way, and `inspect` shows it free.
pub static FORCE_RELEASE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if not redis.call('GET', KEYS[1]) then
  return false
end
local f = redis.call('GET', KEYS[2]) or ''
if ARGV[2] and ARGV[2] ~= f then
  return false
end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('PUBLISH', ARGV[1], '1')
return {f}
"#,
    )
});

/// Quorum: break the lock on one master, only if it is still held by the
/// token whose SHA-1 a majority agreed on, so a lock taken meanwhile by
/// someone else is never touched. KEYS: lock, info. ARGV: digest,
/// channel (published to when deleted). Returns 1 when deleted, 0
/// otherwise.
pub static FORCE_RELEASE_PLAIN: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local v = redis.call('GET', KEYS[1])
if v and redis.sha1hex(v) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('PUBLISH', ARGV[2], '1')
  return 1
end
return 0
"#,
    )
});

/// Whether a token holds a lock. KEYS: lock. ARGV: token. Returns 1 or 0.
/// Run after an unfenced `SET NX PX` answered nil, which is also what a
/// second send of our own successful `SET` answers.
pub static HOLDS: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
"#,
    )
});

/// Every script, for loading them on a new connection.
pub static ALL: [&LazyLock<Lua>; 9] = [
    &ACQUIRE_FENCED,
    &ACQUIRE_FENCED_WAIT,
    &ACQUIRE_PLAIN_WAIT,
    &RENEW,
    &RELEASE,
    &INSPECT,
    &FORCE_RELEASE,
    &FORCE_RELEASE_PLAIN,
    &HOLDS,
];

/// One server's answer to [`INSPECT`] for a held lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The SHA-1 of the holder's token: tells holders apart, never shown.
    pub digest: Vec<u8>,
    /// The lock's remaining TTL, `None` when the key has no expiry.
    pub pttl_ms: Option<u64>,
    /// The fence counter, when asked for and present.
    pub fence: Option<u64>,
    /// How long ago the holder acquired it, when its record is there.
    pub held_for_ms: Option<u64>,
    /// The holder's owner, when it gave one.
    pub owner: Option<String>,
}

impl Inspected {
    /// Reads [`INSPECT`]'s reply: `Some(None)` for a free key, `None` for a
    /// reply of another shape.
    pub fn parse(v: &Value) -> Option<Option<Self>> {
        let a = match v {
            Value::Nil => return Some(None),
            Value::Array(a) if a.len() == 6 => a,
            _ => return None,
        };
        let bytes = |v: &Value| match v {
            Value::BulkString(b) => Some(b.clone()),
            Value::SimpleString(s) => Some(s.clone().into_bytes()),
            _ => None,
        };
        let int = |v: &Value| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        let fence = bytes(&a[2])?;
        let owner = bytes(&a[5])?;
        Some(Some(Self {
            digest: bytes(&a[0])?,
            pttl_ms: u64::try_from(int(&a[1])?).ok(),
            fence: std::str::from_utf8(&fence).ok().and_then(|s| s.parse().ok()),
            held_for_ms: u64::try_from(int(&a[3])?).ok(),
            owner: match int(&a[4])? {
                1 => Some(String::from_utf8(owner).ok()?),
                _ => None,
            },
        }))
    }

    /// What `inspect` shows of it.
    pub fn into_info(self, key: &str) -> LockInfo {
        LockInfo {
            key: key.to_owned(),
            held: true,
            fence: self.fence,
            owner: self.owner,
            expires_in_ms: self.pttl_ms,
            held_for_ms: self.held_for_ms,
        }
    }
}
