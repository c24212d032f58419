//! The `GET_LOCK` name of a lock key.
//!
//! MySQL and MariaDB limit lock names to 64 characters (and compare them
//! case-insensitively), so a key is never used as it is: its name is
//! `bext/` and 16 lowercase hex digits, the first 8 bytes of the key's
//! SHA-256. That hash is stable across releases, platforms and languages
//! (unlike Rust's `DefaultHasher`) and uses the whole 64-bit space, and the
//! server can compute it to find a holder:
//!
//! ```sql
//! SELECT IS_USED_LOCK(CONCAT('bext/', LEFT(SHA2('jobs/nightly', 256), 16)));
//! ```

use sha2::{Digest, Sha256};

/// What every name starts with, so other users of named locks on the same
/// server can tell ours apart.
pub const PREFIX: &str = "bext/";

/// The `GET_LOCK` name for `key`.
pub fn lock_name(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut name = String::with_capacity(PREFIX.len() + 16);
    name.push_str(PREFIX);
    for b in &digest[..8] {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // sha256("") = e3b0c44298fc1c14...
        assert_eq!(lock_name(""), "bext/e3b0c44298fc1c14");
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(lock_name("abc"), "bext/ba7816bf8f01cfea");
        assert!(lock_name(&"k".repeat(1024)).len() <= 64);
    }
}
