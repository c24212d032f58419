//! The JSON of the hot path, written by hand into NUL-terminated buffers.
//!
//! Every `try_lock` and `release` crosses the boundary with a request or a
//! handle in each direction. Building them with a generic serializer and then
//! copying into a `CString` cost more than the lock itself, so both the
//! plugin slots and the Rust loader use these writers: one allocation, sized
//! up front, with the terminating NUL already in place.

use bext_locking::LockHandle;

/// Appends `s` as a JSON string literal (quoted and escaped).
fn push_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaper is the reference one; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// `{"key":…,"ttl_ms":…}` followed by a NUL byte.
pub fn request_json_nul(key: &str, ttl_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 40);
    out.extend_from_slice(b"{\"key\":");
    push_str(&mut out, key);
    out.extend_from_slice(b",\"ttl_ms\":");
    push_u64(&mut out, ttl_ms);
    out.extend_from_slice(b"}\0");
    out
}

/// The handle's JSON (fence omitted when `None`) followed by a NUL byte.
pub fn handle_json_nul(h: &LockHandle) -> Vec<u8> {
    let mut out = Vec::with_capacity(h.key.len() + h.lock_id.len() + 64);
    out.extend_from_slice(b"{\"key\":");
    push_str(&mut out, &h.key);
    out.extend_from_slice(b",\"lock_id\":");
    push_str(&mut out, &h.lock_id);
    out.extend_from_slice(b",\"ttl_ms\":");
    push_u64(&mut out, h.ttl_ms);
    if let Some(fence) = h.fence {
        out.extend_from_slice(b",\"fence\":");
        push_u64(&mut out, fence);
    }
    out.extend_from_slice(b"}\0");
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
        let end = self.rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.rest[end] != b'"' {
            return None;
        }
        let s = std::str::from_utf8(&self.rest[..end]).ok()?;
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
