//! The Lua scripts. Each runs atomically on the server, so a check and the
//! write that depends on it can never be split by another client.
//!
//! Every script is idempotent for the token it is given: running it twice
//! (after a connection dropped before the reply arrived) returns what the
//! first run would have. That is what makes the one silent retry on a
//! reused connection safe.

use std::sync::LazyLock;

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
/// KEYS: lock, fence. ARGV: token, ttl_ms. Returns the fence, or nil when
/// someone else holds the lock (or, after a lost reply, ours again).
pub static ACQUIRE_FENCED: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('TIME')
  local now = t[1] .. string.sub('00000' .. t[2], -6)
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
return false
"#,
    )
});

/// The fenced acquire as it was before [`ACQUIRE_FENCED`] learned to write
/// the clock first: read the counter, take the maximum, write it back. Kept
/// for the benchmark, which measures the two side by side on the server;
/// never sent by the plugin.
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
  return fence
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return tonumber(redis.call('GET', KEYS[2]))
end
return false
"#;

/// Quorum: `SET NX PX` on one master. KEYS: lock. ARGV: token, ttl_ms.
/// Returns 1 when the token holds the lock, 0 when another does.
pub static ACQUIRE_PLAIN: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
"#,
    )
});

/// Compare-and-`PEXPIRE`: never creates a missing key. KEYS: lock.
/// ARGV: token, ttl_ms. Returns 1 when extended, 0 when not ours.
pub static RENEW: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#,
    )
});

/// Compare-and-delete. KEYS: lock. ARGV: token. Returns 1 when deleted, 0
/// when the key was gone or held by another token.
pub static RELEASE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
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
pub static ALL: [&LazyLock<Lua>; 5] = [&ACQUIRE_FENCED, &ACQUIRE_PLAIN, &RENEW, &RELEASE, &HOLDS];
