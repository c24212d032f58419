//! The JSON of the hot path, written by hand into NUL-terminated buffers.
//!
//! Every `try_lock` and `release` crosses the boundary with a request or a
//! handle in each direction. Building them with a generic serializer and then
//! copying into a `CString` cost more than the lock itself, so both the
//! plugin slots and the Rust loader use these writers: one allocation, sized
//! up front, with the terminating NUL already in place.

use bext_locking::LockHandle;

/// Eight copies of a byte value, one per byte of a `u64`.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The top bit of every byte of a `u64`.
const HIGH_BITS: u64 = splat(0x80);

/// One flag (the byte's top bit) per byte of `word` that is a control
/// character, `"` or `\`. A flag can also be set above a flagged byte
/// (a borrow carries up), never below one, so the lowest flag marks
/// exactly the first such byte.
#[inline]
fn specials(word: u64) -> u64 {
    let zero = |x: u64| x.wrapping_sub(splat(1)) & !x;
    let below_space = word.wrapping_sub(splat(0x20)) & !word;
    (below_space | zero(word ^ splat(b'"')) | zero(word ^ splat(b'\\'))) & HIGH_BITS
}

/// Scans a JSON string's bytes: the index of the first byte that a plain
/// string cannot hold (a control character, `"` or `\\`; `s.len()` when
/// there is none), and whether any byte before it is not ASCII. Sixteen
/// bytes at a time where SSE2 is part of the target (every x86-64), then
/// eight at a time.
fn scan(s: &[u8]) -> (usize, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let Some(last) = s.len().checked_sub(16) else {
            // Shorter than a block: scan a copy padded with a byte that is
            // neither special nor high; the padding is never reported.
            let mut block = [b'a'; 16];
            block[..s.len()].copy_from_slice(s);
            return match block16(&block) {
                (0, top) => (s.len(), top != 0),
                (special, top) => first_special(0, special, 0, top),
            };
        };
        let mut high = 0u32;
        let mut at = 0;
        loop {
            // The last block may overlap the one before: its bytes up to
            // there hold nothing special, and were counted for `high`.
            let start = at.min(last);
            let (special, top) = block16(&s[start..start + 16]);
            if special != 0 {
                return first_special(start, special, high, top);
            }
            high |= top;
            if start == last {
                return (s.len(), high != 0);
            }
            at += 16;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    scan8(s)
}

/// The answer of [`scan`] when block `special`, at `start`, holds a
/// special byte: the first one, and whether a byte before it is not ASCII.
#[cfg(target_arch = "x86_64")]
fn first_special(start: usize, special: u32, high: u32, top: u32) -> (usize, bool) {
    let byte = special.trailing_zeros();
    let before = (1u32 << byte) - 1;
    (start + byte as usize, (high | (top & before)) != 0)
}

/// One bit per byte of a 16-byte block: which bytes a plain string
/// cannot hold, and which are not ASCII.
#[cfg(target_arch = "x86_64")]
fn block16(block: &[u8]) -> (u32, u32) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    assert!(block.len() >= 16);
    // SAFETY: SSE2 is part of the x86-64 baseline, so these instructions
    // exist; the unaligned load reads 16 bytes of `block`, which has them.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        // A byte is below 0x20 exactly when max(byte, 0x1f) is 0x1f.
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        let special = _mm_or_si128(control, _mm_or_si128(quote, backslash));
        (_mm_movemask_epi8(special) as u32, _mm_movemask_epi8(v) as u32)
    }
}

/// [`scan`], eight bytes at a time in a `u64`: for targets without SSE2.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn scan8(s: &[u8]) -> (usize, bool) {
    let mut high = 0;
    let mut at = 0;
    while at < s.len() {
        let rest = &s[at..];
        let word = match rest.first_chunk::<8>() {
            Some(chunk) => u64::from_le_bytes(*chunk),
            None => {
                // The tail, padded with a byte that is neither special nor
                // high; the padding is past the end, so it is never reported.
                let mut chunk = [b'a'; 8];
                for (c, &b) in chunk.iter_mut().zip(rest) {
                    *c = b;
                }
                u64::from_le_bytes(chunk)
            }
        };
        let found = specials(word);
        if found != 0 {
            let byte = (found.trailing_zeros() / 8) as usize;
            let before = (1u64 << (8 * byte)) - 1;
            return ((at + byte).min(s.len()), (high | (word & HIGH_BITS & before)) != 0);
        }
        high |= word & HIGH_BITS;
        at += 8;
    }
    (s.len(), high != 0)
}

/// True when some byte of `s` must be escaped inside a JSON string.
fn needs_escape(s: &[u8]) -> bool {
    scan(s).0 < s.len()
}

/// Appends `s` as a JSON string literal (quoted and escaped).
fn push_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // serde_json's escaper is the reference one; writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        push_plain(out, s);
    }
}

/// Appends `s`, which needs no escaping, as a JSON string literal.
fn push_plain(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes `{"key":…,"ttl_ms":…}` and a NUL byte into `out`, replacing what
/// it held (so a caller can reuse one buffer for every call).
pub fn write_request_nul(out: &mut Vec<u8>, key: &str, ttl_ms: u64) {
    out.clear();
    out.reserve(key.len() + 40);
    push_request_head(out, key, ttl_ms);
    out.extend_from_slice(b"}\0");
}

/// Appends `{"key":…,"ttl_ms":…` to `out`.
fn push_request_head(out: &mut Vec<u8>, key: &str, ttl_ms: u64) {
    out.extend_from_slice(b"{\"key\":");
    push_str(out, key);
    out.extend_from_slice(b",\"ttl_ms\":");
    push_u64(out, ttl_ms);
}

/// Writes `{"key":…,"ttl_ms":…,"owner":…}` (ABI 1.1; without `owner` when
/// `None`) and a NUL byte into `out`, replacing what it held.
pub fn write_owned_request_nul(out: &mut Vec<u8>, key: &str, ttl_ms: u64, owner: Option<&str>) {
    match owner {
        None => write_request_nul(out, key, ttl_ms),
        Some(owner) => {
            out.clear();
            out.reserve(key.len() + owner.len() + 54);
            push_request_head(out, key, ttl_ms);
            out.extend_from_slice(b",\"owner\":");
            push_str(out, owner);
            out.extend_from_slice(b"}\0");
        }
    }
}

/// `s` as a JSON string literal, quoted and escaped: for a host that
/// sends the same owner with every request and escapes it once, for
/// [`write_request_owner_json_nul`].
pub fn json_string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    push_str(&mut out, s);
    out
}

/// [`write_owned_request_nul`] with the owner already written as a JSON
/// string literal by [`json_string`], so it is not scanned again on every
/// call. `owner_json` must come from [`json_string`]: it is copied as it is.
pub fn write_request_owner_json_nul(out: &mut Vec<u8>, key: &str, ttl_ms: u64, owner_json: &[u8]) {
    out.clear();
    out.reserve(key.len() + owner_json.len() + 52);
    push_request_head(out, key, ttl_ms);
    out.extend_from_slice(b",\"owner\":");
    out.extend_from_slice(owner_json);
    out.extend_from_slice(b"}\0");
}

/// `{"key":…,"ttl_ms":…}` followed by a NUL byte.
pub fn request_json_nul(key: &str, ttl_ms: u64) -> Vec<u8> {
    let mut out = Vec::new();
    write_request_nul(&mut out, key, ttl_ms);
    out
}

/// Writes the handle's JSON (fence omitted when `None`) and a NUL byte into
/// `out`, replacing what it held.
pub fn write_handle_nul(out: &mut Vec<u8>, h: &LockHandle) {
    out.clear();
    out.reserve(h.key.len() + h.lock_id.len() + 64);
    push_handle_nul(out, h);
}

/// Appends the handle's JSON and a NUL byte to `out`.
fn push_handle_nul(out: &mut Vec<u8>, h: &LockHandle) {
    out.extend_from_slice(b"{\"key\":");
    push_str(out, &h.key);
    out.extend_from_slice(b",\"lock_id\":");
    push_str(out, &h.lock_id);
    push_numbers_nul(out, h);
}

/// Appends the handle's `ttl_ms` and `fence` fields, the closing brace and
/// a NUL byte to `out`.
fn push_numbers_nul(out: &mut Vec<u8>, h: &LockHandle) {
    out.extend_from_slice(b",\"ttl_ms\":");
    push_u64(out, h.ttl_ms);
    if let Some(fence) = h.fence {
        out.extend_from_slice(b",\"fence\":");
        push_u64(out, fence);
    }
    out.extend_from_slice(b"}\0");
}

/// The handle's JSON (fence omitted when `None`) followed by a NUL byte.
///
/// Allocated at its exact length when nothing needs escaping (the usual
/// case), so that handing it to C as a `CString` keeps the allocation as
/// it is instead of shrinking it.
pub fn handle_json_nul(h: &LockHandle) -> Vec<u8> {
    let plain = |s: &str| (!needs_escape(s.as_bytes())).then_some(s.len() + 2);
    let Some((key, lock_id)) = plain(&h.key).zip(plain(&h.lock_id)) else {
        let mut out = Vec::with_capacity(h.key.len() + h.lock_id.len() + 64);
        push_handle_nul(&mut out, h);
        return out;
    };
    let fence = h.fence.map_or(0, |f| b",\"fence\":".len() + digits(f));
    let frame = b"{\"key\":,\"lock_id\":,\"ttl_ms\":}\0".len();
    let mut out = Vec::with_capacity(frame + key + lock_id + digits(h.ttl_ms) + fence);
    out.extend_from_slice(b"{\"key\":");
    push_plain(&mut out, &h.key);
    out.extend_from_slice(b",\"lock_id\":");
    push_plain(&mut out, &h.lock_id);
    push_numbers_nul(&mut out, h);
    debug_assert_eq!(out.len(), out.capacity());
    out
}

/// How many decimal digits `n` is written with.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// A cursor over canonical JSON, as written by the functions above.
struct Canonical<'a> {
    rest: &'a [u8],
}

impl<'a> Canonical<'a> {
    fn tag(&mut self, tag: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(tag)?;
        Some(())
    }

    /// A string without escapes or control characters, up to its closing quote.
    fn plain_str(&mut self) -> Option<&'a str> {
        let (end, non_ascii) = scan(self.rest);
        if self.rest.get(end) != Some(&b'"') {
            return None;
        }
        let body = &self.rest[..end];
        let s = if non_ascii {
            std::str::from_utf8(body).ok()?
        } else {
            // SAFETY: `scan` saw no byte with its top bit set in `body`, so
            // it is ASCII, which is valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(body) }
        };
        self.rest = &self.rest[end + 1..];
        Some(s)
    }

    /// A non-negative integer without a leading zero that fits in a `u64`,
    /// read in one pass.
    fn number(&mut self) -> Option<u64> {
        let mut n: u64 = 0;
        let mut digits = 0;
        for &b in self.rest {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(d))?;
            digits += 1;
        }
        if digits == 0 || (digits > 1 && self.rest[0] == b'0') {
            return None;
        }
        self.rest = &self.rest[digits..];
        Some(n)
    }
}

/// Parses a request in exactly the canonical form [`request_json_nul`]
/// writes (without the NUL). Returns `None` for anything else (escapes,
/// other field orders, extra fields, whitespace), and the caller falls back
/// to the general JSON parser, which gives the same answer or the error.
pub fn parse_canonical_request(json: &[u8]) -> Option<(&str, u64)> {
    let mut c = Canonical { rest: json };
    c.tag(b"{\"key\":\"")?;
    let key = c.plain_str()?;
    c.tag(b",\"ttl_ms\":")?;
    let ttl = c.number()?;
    c.tag(b"}")?;
    c.rest.is_empty().then_some((key, ttl))
}

/// Parses a request in exactly the canonical form
/// [`write_owned_request_nul`] writes (without the NUL): the key, the TTL
/// and the owner, if any. `None` for anything else, as
/// [`parse_canonical_request`].
pub fn parse_canonical_owned_request(json: &[u8]) -> Option<(&str, u64, Option<&str>)> {
    let mut c = Canonical { rest: json };
    c.tag(b"{\"key\":\"")?;
    let key = c.plain_str()?;
    c.tag(b",\"ttl_ms\":")?;
    let ttl = c.number()?;
    let owner = match c.tag(b",\"owner\":\"") {
        Some(()) => Some(c.plain_str()?),
        None => None,
    };
    c.tag(b"}")?;
    c.rest.is_empty().then_some((key, ttl, owner))
}

/// Parses a handle in exactly the canonical form [`handle_json_nul`] writes;
/// `None` for anything else (see [`parse_canonical_request`]).
pub fn parse_canonical_handle(json: &[u8]) -> Option<LockHandle> {
    parse_canonical_handle_ref(json).map(|h| h.to_owned())
}

/// A handle read by [`parse_canonical_handle_ref`], borrowing its strings
/// from the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandleRef<'a> {
    /// The handle's `key`.
    pub key: &'a str,
    /// The handle's `lock_id`.
    pub lock_id: &'a str,
    /// The handle's `ttl_ms`.
    pub ttl_ms: u64,
    /// The handle's `fence`, when it has one.
    pub fence: Option<u64>,
}

impl HandleRef<'_> {
    /// The handle as an owned [`LockHandle`].
    pub fn to_owned(&self) -> LockHandle {
        LockHandle {
            key: self.key.to_owned(),
            lock_id: self.lock_id.to_owned(),
            ttl_ms: self.ttl_ms,
            fence: self.fence,
        }
    }

    /// Overwrites `h` with this handle, reusing its strings' allocations.
    pub fn write_into(&self, h: &mut LockHandle) {
        h.key.clear();
        h.key.push_str(self.key);
        h.lock_id.clear();
        h.lock_id.push_str(self.lock_id);
        h.ttl_ms = self.ttl_ms;
        h.fence = self.fence;
    }
}

/// [`parse_canonical_handle`] without copying the strings: for a caller
/// that only reads the handle during the call.
pub fn parse_canonical_handle_ref(json: &[u8]) -> Option<HandleRef<'_>> {
    let mut c = Canonical { rest: json };
    c.tag(b"{\"key\":\"")?;
    let key = c.plain_str()?;
    c.tag(b",\"lock_id\":\"")?;
    let lock_id = c.plain_str()?;
    c.tag(b",\"ttl_ms\":")?;
    let ttl_ms = c.number()?;
    let fence = match c.tag(b",\"fence\":") {
        Some(()) => Some(c.number()?),
        None => None,
    };
    c.tag(b"}")?;
    c.rest.is_empty().then_some(HandleRef { key, lock_id, ttl_ms, fence })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_parsers_read_what_writers_write() {
        for fence in [None, Some(0), Some(42), Some(u64::MAX)] {
            let h = LockHandle {
                key: "jobs/nightly €".into(),
                lock_id: "abc-123".into(),
                ttl_ms: 30_000,
                fence,
            };
            let mut json = handle_json_nul(&h);
            json.pop();
            assert_eq!(parse_canonical_handle(&json), Some(h));
        }
        let mut req = request_json_nul("jobs/ключ", 5);
        req.pop();
        assert_eq!(parse_canonical_request(&req), Some(("jobs/ключ", 5)));
    }

    #[test]
    fn owned_requests_round_trip() {
        let mut buf = Vec::new();
        for owner in [None, Some(""), Some("host:42"), Some("a\"b\n€")] {
            write_owned_request_nul(&mut buf, "jobs/k", 30, owner);
            if let Some(owner) = owner {
                let mut pre = Vec::new();
                write_request_owner_json_nul(&mut pre, "jobs/k", 30, &json_string(owner));
                assert_eq!(pre, buf, "{owner:?}");
            }
            let text = without_nul(buf.clone());
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!((v["key"].as_str(), v["ttl_ms"].as_u64()), (Some("jobs/k"), Some(30)));
            assert_eq!(v["owner"].as_str(), owner);
            let fast = parse_canonical_owned_request(text.as_bytes());
            match owner {
                // Escaped owners take the general parser.
                Some(o) if o.contains('"') => assert_eq!(fast, None),
                _ => assert_eq!(fast, Some(("jobs/k", 30, owner))),
            }
        }
        assert_eq!(parse_canonical_owned_request(br#"{"key":"a","ttl_ms":1,"owner":1}"#), None);
        assert_eq!(parse_canonical_owned_request(br#"{"key":"a","ttl_ms":1,"x":"y"}"#), None);
    }

    #[test]
    fn canonical_parsers_decline_everything_else() {
        let declined: &[&[u8]] = &[
            br#"{"key":"a\"b","ttl_ms":1}"#,
            br#"{"key":"a","ttl_ms":01}"#,
            br#"{"key":"a","ttl_ms":1} "#,
            br#"{"key":"a","ttl_ms":1,"x":1}"#,
            br#"{"ttl_ms":1,"key":"a"}"#,
            br#"{"key":"a","ttl_ms":18446744073709551616}"#,
            br#"{"key":"a","ttl_ms":-1}"#,
            br#"{"key":"a","ttl_ms":}"#,
            b"{\"key\":\"\xff\",\"ttl_ms\":1}",
            b"{\"key\":\"a\nb\",\"ttl_ms\":1}",
            br#"{"key":"a","ttl_ms":1"#,
        ];
        for json in declined {
            assert_eq!(parse_canonical_request(json), None, "{}", String::from_utf8_lossy(json));
        }
        assert_eq!(
            parse_canonical_handle(br#"{"key":"a","lock_id":"b","ttl_ms":1,"fence":}"#),
            None
        );
        assert_eq!(
            parse_canonical_handle(br#"{"key":"a","lock_id":"b","ttl_ms":1,"extra":2}"#),
            None
        );
    }

    fn without_nul(mut v: Vec<u8>) -> String {
        assert_eq!(v.pop(), Some(0));
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn handle_matches_serde() {
        for fence in [None, Some(0), Some(u64::MAX)] {
            let h = LockHandle {
                key: "a\"b\\c\n€\u{1}".into(),
                lock_id: "id".into(),
                ttl_ms: 1,
                fence,
            };
            let ours = without_nul(handle_json_nul(&h));
            assert_eq!(ours, serde_json::to_string(&h).unwrap());
            assert_eq!(serde_json::from_str::<LockHandle>(&ours).unwrap(), h);
        }
    }

    #[test]
    fn request_round_trips() {
        for ttl in [0, 7, 31_536_000_000, u64::MAX] {
            let text = without_nul(request_json_nul("k\"€", ttl));
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["key"], "k\"€");
            assert_eq!(v["ttl_ms"], ttl);
        }
    }
}

#[cfg(test)]
mod escape_tests {
    use super::{needs_escape, scan};

    /// What `scan` must say, byte by byte.
    fn slow_scan(s: &[u8]) -> (usize, bool) {
        let end = s.iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\').unwrap_or(s.len());
        (end, !s[..end].is_ascii())
    }

    #[test]
    fn the_block_scans_agree_with_a_byte_scan() {
        let bytes: Vec<u8> = (0u8..=255).collect();
        // Every byte value at every position of strings of 0 to 40 bytes,
        // in a plain ASCII or a non-ASCII string.
        for len in 0..40 {
            for at in 0..len {
                for filler in [b'k', 0xc3, b'~', b' '] {
                    for &b in &bytes {
                        let mut s = vec![filler; len];
                        s[at] = b;
                        assert_eq!(scan(&s), slow_scan(&s), "{s:?}");
                        assert_eq!(super::scan8(&s), slow_scan(&s), "{s:?}");
                    }
                }
            }
        }
        // Two specials: the first is the one reported, whatever follows it.
        for len in 2..40 {
            for first in 0..len - 1 {
                for (a, b) in [(b'"', 0u8), (0x1f, b'\\'), (b'\\', b'"'), (0, 0)] {
                    let mut s = vec![0xc3; len];
                    s[first] = a;
                    s[len - 1] = b;
                    assert_eq!(scan(&s), slow_scan(&s), "{s:?}");
                }
            }
        }
        for s in
            [&b""[..], b"\"\"", b"a\x00\"", "ключ\"".as_bytes(), b"12345678\\", b"1234567\x80\""]
        {
            assert_eq!(scan(s), slow_scan(s), "{s:?}");
        }
    }

    #[test]
    fn plain_strings_need_no_escape() {
        assert!(!needs_escape(b"probe/key"));
        assert!(!needs_escape(b"0f8a2b4c-1d2e-4f5a-8b9c-0d1e2f3a4b5c"));
        assert!(!needs_escape("ключ/🔒".as_bytes()));
        for bad in [&b"a\"b"[..], b"a\\b", b"a\nb", b"\x1f", b"\x00"] {
            assert!(needs_escape(bad), "{bad:?}");
        }
    }
}
