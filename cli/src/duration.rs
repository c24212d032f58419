//! Durations on the command line: `500ms`, `30s`, `5m`, `1h`, `1m30s`.

use std::time::Duration;

/// Parses a duration with a unit (`humantime` syntax). A bare number is
/// refused: `--ttl 30` could mean seconds or milliseconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` has no unit: write e.g. {text}s or {text}ms"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 500ms, 30s or 5m"))
}

/// Like [`parse`], but zero is refused (a TTL or wait of nothing is a typo).
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d.is_zero() {
        return Err(format!("`{text}` is zero; give a positive duration such as 500ms or 30s"));
    }
    Ok(d)
}

/// Shows a duration the way the user would have typed it.
pub fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn refusals_say_what_to_write() {
        assert!(parse("30").unwrap_err().contains("no unit"));
        assert!(parse("soon").unwrap_err().contains("500ms"));
        assert!(parse("").is_err());
        assert!(parse_positive("0s").unwrap_err().contains("zero"));
        assert!(parse("-5s").is_err());
    }
}
