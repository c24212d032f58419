//! The key and TTL limits of ABI v1, and the one check every backend uses.
//!
//! Checking in one place means a key that one backend accepts is accepted by
//! all of them, so switching backends by config never breaks a caller.

/// The longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest lease: 365 days in milliseconds.
pub const MAX_TTL_MS: u64 = 31_536_000_000;

/// Checks that `key` is 1 to [`MAX_KEY_BYTES`] bytes.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("key is empty; a key is 1 to {MAX_KEY_BYTES} bytes of UTF-8"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "key is {} bytes; a key is 1 to {MAX_KEY_BYTES} bytes of UTF-8",
            key.len()
        ));
    }
    Ok(())
}

/// Checks that `ttl_ms` is 1 to [`MAX_TTL_MS`].
pub fn validate_ttl(ttl_ms: u64) -> Result<(), String> {
    if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
        return Err(format!("ttl_ms is {ttl_ms}; it must be 1 to {MAX_TTL_MS} (365 days)"));
    }
    Ok(())
}

/// Checks a `try_lock` request (or a handle's key and TTL) against the limits.
pub fn validate_lock_request(key: &str, ttl_ms: u64) -> Result<(), String> {
    validate_key(key)?;
    validate_ttl(ttl_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_limits_are_inclusive() {
        assert!(validate_key("a").is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        let err = validate_key(&"k".repeat(MAX_KEY_BYTES + 1)).unwrap_err();
        assert!(err.contains("1025 bytes"), "{err}");
        assert!(validate_key("").unwrap_err().contains("empty"));
        // Limits count bytes, not characters: 342 three-byte characters are 1026 bytes.
        assert!(validate_key(&"€".repeat(342)).is_err());
    }

    #[test]
    fn ttl_limits_are_inclusive() {
        assert!(validate_ttl(1).is_ok());
        assert!(validate_ttl(MAX_TTL_MS).is_ok());
        assert!(validate_ttl(0).is_err());
        assert!(validate_ttl(MAX_TTL_MS + 1).unwrap_err().contains("31536000001"));
    }
}
