//! The JSON of the hot path, written by hand into NUL-terminated buffers.
//!
//! Every `try_lock` and `release` crosses the boundary with a request or a
//! handle in each direction. Building them with a generic serializer and then
//! copying into a `CString` cost more than the lock itself, so both the
//! plugin slots and the Rust loader use these writers: one allocation, sized
//! up front, with the terminating NUL already in place.

use bext_locking::LockHandle;

/// True when some byte of `s` must be escaped inside a JSON string.
/// Written as a branch-free fold so the compiler vectorises it.
fn needs_escape(s: &[u8]) -> bool {
    s.iter().fold(false, |acc, &b| acc | (b < 0x20) | (b == b'"') | (b == b'\\'))
}

/// Appends `s` as a JSON string literal (quoted and escaped).
fn push_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // serde_json's escaper is the reference one; writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes `{"key":…,"ttl_ms":…}` and a NUL byte into `out`, replacing what
/// it held (so a caller can reuse one buffer for every call).
pub fn write_request_nul(out: &mut Vec<u8>, key: &str, ttl_ms: u64) {
    out.clear();
    out.reserve(key.len() + 40);
    out.extend_from_slice(b"{\"key\":");
    push_str(out, key);
    out.extend_from_slice(b",\"ttl_ms\":");
    push_u64(out, ttl_ms);
    out.extend_from_slice(b"}\0");
}

/// Writes `{"key":…,"ttl_ms":…,"owner":…}` (ABI 1.1; without `owner` when
/// `None`) and a NUL byte into `out`, replacing what it held.
pub fn write_owned_request_nul(out: &mut Vec<u8>, key: &str, ttl_ms: u64, owner: Option<&str>) {
    write_request_nul(out, key, ttl_ms);
    if let Some(owner) = owner {
        // Replace `}\0` with the owner field and close again.
        out.truncate(out.len() - 2);
        out.reserve(owner.len() + 14);
        out.extend_from_slice(b",\"owner\":");
        push_str(out, owner);
        out.extend_from_slice(b"}\0");
    }
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
    out.extend_from_slice(b"{\"key\":");
    push_str(out, &h.key);
    out.extend_from_slice(b",\"lock_id\":");
    push_str(out, &h.lock_id);
    out.extend_from_slice(b",\"ttl_ms\":");
    push_u64(out, h.ttl_ms);
    if let Some(fence) = h.fence {
        out.extend_from_slice(b",\"fence\":");
        push_u64(out, fence);
    }
    out.extend_from_slice(b"}\0");
}

/// The handle's JSON (fence omitted when `None`) followed by a NUL byte.
pub fn handle_json_nul(h: &LockHandle) -> Vec<u8> {
    let mut out = Vec::new();
    write_handle_nul(&mut out, h);
    out
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
        let end = memchr::memchr2(b'"', b'\\', self.rest)?;
        let body = &self.rest[..end];
        if self.rest[end] != b'"' || body.iter().fold(false, |acc, &b| acc | (b < 0x20)) {
            return None;
        }
        let s = std::str::from_utf8(body).ok()?;
        self.rest = &self.rest[end + 1..];
        Some(s)
    }

    fn number(&mut self) -> Option<u64> {
        let digits = self.rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || (digits > 1 && self.rest[0] == b'0') {
            return None;
        }
        let mut n: u64 = 0;
        for &d in &self.rest[..digits] {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
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
    c.rest.is_empty().then(|| LockHandle {
        key: key.to_owned(),
        lock_id: lock_id.to_owned(),
        ttl_ms,
        fence,
    })
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
    use super::needs_escape;

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
