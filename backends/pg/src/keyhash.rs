//! The 64-bit advisory-lock key of a lock key.
//!
//! The first 8 bytes of the key's SHA-256, read big-endian as a signed
//! integer. It is stable across releases, platforms and languages (unlike
//! Rust's `DefaultHasher`), uses the whole 64-bit key space (unlike
//! PostgreSQL's 32-bit `hashtext`), and can be computed in SQL to find a
//! holder in `pg_locks`:
//!
//! ```sql
//! SELECT ('x' || left(encode(sha256(convert_to('jobs/nightly', 'UTF8')), 'hex'), 16))::bit(64)::bigint;
//! ```

use sha2::{Digest, Sha256};

/// The advisory-lock key for `key`.
pub fn advisory_key(key: &str) -> i64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // sha256("") = e3b0c44298fc1c14...
        assert_eq!(advisory_key(""), i64::from_be_bytes(0xe3b0c44298fc1c14u64.to_be_bytes()));
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(advisory_key("abc"), i64::from_be_bytes(0xba7816bf8f01cfeau64.to_be_bytes()));
    }
}
