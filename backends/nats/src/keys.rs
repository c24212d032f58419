//! What is stored where: bucket names, KV keys for lock keys, and the
//! values of lock and lease entries.

use serde::{Deserialize, Serialize};

/// The shortest lease JetStream will expire: a stream's `max_age` must be
/// at least 100 ms, so shorter TTLs are served by the 100 ms bucket (a lock
/// never ends earlier than asked).
pub const MIN_LEASE_MS: u64 = 100;

/// The bucket of the locks themselves.
pub fn lock_bucket(prefix: &str) -> String {
    prefix.to_owned()
}

/// The bucket of leases whose TTL is `lease_ms`: its `max_age`.
pub fn lease_bucket(prefix: &str, lease_ms: u64) -> String {
    format!("{prefix}_ttl_{lease_ms}")
}

/// The lease a TTL is served by: the TTL itself, or the shortest the
/// server expires.
pub fn lease_ms(ttl_ms: u64) -> u64 {
    ttl_ms.max(MIN_LEASE_MS)
}

/// The KV key (a NATS subject token string) of a lock key. Bytes other than
/// ASCII letters, digits, `_` and `-` become `=XX` (upper-case hex), `=`
/// included, so the mapping is one-to-one and never yields a `.`, `*`, `>`
/// or space that would change the subject's meaning.
pub fn kv_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('=');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

/// Whether `lock_id` has the shape this backend issues (a hyphenated
/// UUID). Anything else names no lease, and must never reach a subject
/// (a `*` or `>` would be a wildcard).
pub fn is_lock_id(lock_id: &str) -> bool {
    lock_id.len() == 36
        && lock_id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The value of a lock entry: who holds it and which lease bucket says
/// whether the hold is still alive. The fence is the entry's revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The acquisition's lock id, also the key of its lease entry.
    pub id: String,
    /// The lease bucket's TTL, in milliseconds.
    pub lease_ms: u64,
    /// The TTL the holder asked for.
    pub ttl_ms: u64,
    /// Who holds it, when the host said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Holder {
    /// The entry's bytes.
    pub fn encode(&self) -> bytes::Bytes {
        serde_json::to_vec(self).expect("a holder serializes").into()
    }

    /// Reads an entry, or `None` when it is not one of ours.
    pub fn decode(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_keys_are_subject_safe_and_one_to_one() {
        assert_eq!(kv_key("job-1_A"), "job-1_A");
        assert_eq!(kv_key("a.b c"), "a=2Eb=20c");
        assert_eq!(kv_key("=2E"), "=3D2E");
        assert_ne!(kv_key("a.b"), kv_key("a=2Eb"));
        assert_eq!(kv_key("ключ"), "=D0=BA=D0=BB=D1=8E=D1=87");
        for k in ["*", ">", "a.>", "$JS", "x/y"] {
            assert!(kv_key(k).bytes().all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)));
        }
    }

    #[test]
    fn lock_ids_are_uuids_only() {
        assert!(is_lock_id(&uuid::Uuid::new_v4().to_string()));
        for bad in ["", "*", ">", "00000000-0000-0000-0000-00000000000>", "a.b"] {
            assert!(!is_lock_id(bad), "{bad}");
        }
    }

    #[test]
    fn short_ttls_use_the_shortest_lease() {
        assert_eq!(lease_ms(1), 100);
        assert_eq!(lease_ms(100), 100);
        assert_eq!(lease_ms(250), 250);
        assert_eq!(lease_bucket("p", 250), "p_ttl_250");
    }

    #[test]
    fn holders_round_trip() {
        let h = Holder { id: "x".into(), lease_ms: 100, ttl_ms: 5, owner: Some("me".into()) };
        assert_eq!(Holder::decode(&h.encode()), Some(h));
        assert_eq!(Holder::decode(b"nonsense"), None);
    }
}
