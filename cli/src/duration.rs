//! Durations on the command line: `500ms`, `30s`, `5m`, `1h`, `2d`, `1m30s`.
//!
//! Locks count whole milliseconds (the ABI's `ttl_ms`), so the units are
//! exactly `ms`, `s`, `m`, `h` and `d`, and every message lists those and
//! no others. A finer unit is refused as such rather than rounded to 0.

use std::time::Duration;

/// The units, as messages list them.
const UNITS: &str = "ms, s, m, h and d";

/// The longest lease, as `--ttl` takes it.
const MAX_TTL: Duration = Duration::from_millis(bext_locking::MAX_TTL_MS);

/// Milliseconds in one of each unit.
fn unit_ms(unit: &str) -> Option<u64> {
    Some(match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    })
}

/// Parses a duration: one or more `<whole number><unit>` parts (`1m30s`).
/// A bare `0` is zero; any other bare number is refused (`--ttl 30` could
/// mean seconds or milliseconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("the duration is empty; write e.g. 500ms, 30s or 5m (units: {UNITS})"));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` has no unit: write e.g. {text}s or {text}ms (units: {UNITS})"
        ));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len =
            rest[digits..].find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len() - digits);
        let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        rest = &rest[digits + unit_len..];
        if number.is_empty() || !unit.chars().all(char::is_alphabetic) {
            return Err(format!(
                "`{text}` is not a duration: write whole numbers, each with a unit, e.g. 500ms, \
                 30s or 1m30s (units: {UNITS})"
            ));
        }
        let ms = match unit {
            "us" | "µs" | "ns" => {
                return Err(format!(
                    "`{text}` is finer than a millisecond: locks count whole milliseconds \
                     (units: {UNITS})"
                ));
            }
            "" => {
                return Err(format!("`{text}` ends without a unit (units: {UNITS})"));
            }
            u => unit_ms(u).ok_or_else(|| {
                format!(
                    "`{text}`: `{u}` is not a unit; the units are {UNITS} (e.g. 500ms, 30s, 1m30s)"
                )
            })?,
        };
        let part = number.parse::<u64>().ok().and_then(|n| n.checked_mul(ms));
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("`{text}` is too long"))?;
    }
    Ok(Duration::from_millis(total))
}

/// Like [`parse`], but zero is refused (a TTL or a settle time of nothing
/// is a typo), whether written `0` or `0s`.
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d.is_zero() {
        return Err(format!(
            "`{}` is zero; give a positive duration such as 500ms or 30s",
            text.trim()
        ));
    }
    Ok(d)
}

/// `--ttl`: positive and at most the longest lease, 365 days, reported in
/// the units it was given in.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let d = parse_positive(text)?;
    if d > MAX_TTL {
        return Err(format!(
            "`{}` is longer than the longest lease, 365d (a lease may last 1ms to 365d)",
            text.trim()
        ));
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
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(2 * 86_400));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_ttl("365d").unwrap(), MAX_TTL);
    }

    /// Every refusal says what is wrong with the text as given, and the
    /// only units it names are the ones accepted.
    #[test]
    fn refusals_are_consistent() {
        type Parser = fn(&str) -> Result<Duration, String>;
        let cases: &[(Parser, &str, &str)] = &[
            (parse_ttl, "0", "`0` is zero; give a positive duration"),
            (parse_ttl, "0s", "`0s` is zero; give a positive duration"),
            (parse_ttl, "0ms", "`0ms` is zero"),
            (parse_ttl, "500us", "`500us` is finer than a millisecond"),
            (parse_ttl, "10ns", "`10ns` is finer than a millisecond"),
            (parse_ttl, "1000d", "`1000d` is longer than the longest lease, 365d"),
            (parse_ttl, "366d", "`366d` is longer than the longest lease"),
            (parse, "10x", "`10x`: `x` is not a unit; the units are ms, s, m, h and d"),
            (parse, "5 m", "write whole numbers, each with a unit"),
            (parse, "30", "`30` has no unit: write e.g. 30s or 30ms"),
            (parse, "1.5s", "write whole numbers, each with a unit"),
            (parse, "-5s", "write whole numbers, each with a unit"),
            (parse, "s", "write whole numbers, each with a unit"),
            (parse, "", "the duration is empty"),
            (parse, "99999999999999999999d", "is too long"),
        ];
        for (f, text, want) in cases {
            let err = f(text).expect_err(text);
            assert!(err.contains(want), "{text}: want `{want}` in `{err}`");
            // No unit is offered that is not accepted.
            for foreign in ["supported units", "hours", "weeks", "months", "years", "us/"] {
                assert!(!err.contains(foreign), "{text}: `{err}` mentions {foreign}");
            }
        }
        assert_eq!(parse_positive("1ms").unwrap(), Duration::from_millis(1));
    }
}
