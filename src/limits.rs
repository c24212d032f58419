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

/// A word of a message (a run of non-whitespace: a value, a path, a quoted
/// name) longer than this many bytes is cut by [`shorten_values`].
pub const MAX_MESSAGE_WORD_BYTES: usize = 200;

/// How many characters of a cut word are kept.
const KEPT_CHARS: usize = 64;

/// `value` as a message shows it: itself, or, when longer than
/// [`MAX_MESSAGE_WORD_BYTES`], its first 64 characters, an ellipsis and its
/// length (`/var/lib/aaaa…[10485760 bytes]`), so a 10 MB config value never
/// becomes a 10 MB error line.
pub fn shorten(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() <= MAX_MESSAGE_WORD_BYTES {
        return std::borrow::Cow::Borrowed(value);
    }
    let end = value.char_indices().nth(KEPT_CHARS).map_or(value.len(), |(i, _)| i);
    std::borrow::Cow::Owned(format!("{}…[{} bytes]", &value[..end], value.len()))
}

/// A message with every over-long word [`shorten`]ed. Every error a plugin
/// returns goes through it (in [`PluginError::new`](crate::PluginError::new)
/// and at the C boundary), and so does every line the CLI prints, whatever
/// built the message: a config value, a serde error quoting it, a backend's
/// own text.
pub fn shorten_values(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.split_whitespace().any(|w| w.len() > MAX_MESSAGE_WORD_BYTES) {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(256);
    let mut rest = message;
    while !rest.is_empty() {
        let word_start = rest.find(|c: char| !c.is_whitespace()).unwrap_or(rest.len());
        out.push_str(&rest[..word_start]);
        rest = &rest[word_start..];
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        out.push_str(&shorten(&rest[..word_end]));
        rest = &rest[word_end..];
    }
    std::borrow::Cow::Owned(out)
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

    #[test]
    fn a_ten_megabyte_value_is_cut_to_its_start_and_length() {
        let value = format!("/var/lib/{}", "a".repeat(10 * 1024 * 1024));
        let msg = format!("cannot open `{value}`: no such file\n(path {value})");
        let short = shorten_values(&msg);
        assert!(short.len() < 400, "{} bytes", short.len());
        let cut = format!("`/var/lib/{}…[{} bytes]", "a".repeat(54), value.len() + 3);
        assert!(short.starts_with(&format!("cannot open {cut} no such file\n(path ")), "{short}");
        assert!(short.ends_with(&format!("…[{} bytes]", value.len() + 1)), "{short}");
        // Short words, and the whitespace between words, are kept as they are.
        assert_eq!(shorten_values("a  b\tc"), "a  b\tc");
        assert_eq!(shorten(&"é".repeat(300)), format!("{}…[600 bytes]", "é".repeat(64)));
    }
}
