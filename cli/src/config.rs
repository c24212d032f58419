//! Plugin configs: reading them, and keeping their secrets out of output.
//!
//! A config may hold credentials (`redis://:pw@host`, `"password": ...`).
//! Every config the command shows goes through [`redacted`], and every
//! message that came from a plugin goes through [`Secrets::scrub`], which
//! removes the config's secrets even if the plugin forgot to redact them.

use std::path::Path;

use serde_json::{Map, Value};

/// What replaces a secret in output.
pub const MASK: &str = "***";

/// Reads `--config`: JSON text, `@FILE` for a file holding it, or nothing
/// for `{}`. Only a JSON object is accepted. Messages never quote the text
/// (it may hold a password).
pub fn read(arg: Option<&str>) -> Result<Value, String> {
    let (text, origin) = match arg {
        None => return Ok(Value::Object(Map::new())),
        Some(a) if a.starts_with('@') => {
            let path = Path::new(&a[1..]);
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--config {a}: cannot read the file: {e}"))?;
            (text, a.to_owned())
        }
        Some(a) => (a.to_owned(), "--config".to_owned()),
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        format!("{origin}: not valid JSON ({e}); expected an object like {{\"path\":\"locks.db\"}}")
    })?;
    if !value.is_object() {
        return Err(format!(
            "{origin}: the config must be a JSON object, like {{\"path\":\"locks.db\"}}"
        ));
    }
    Ok(value)
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "credential", "private_key", "api_key"]
        .iter()
        .any(|s| k.contains(s))
}

/// The password in a URL's userinfo (`scheme://user:PASSWORD@host`), as a
/// byte range of `s`.
fn url_password(s: &str) -> Option<std::ops::Range<usize>> {
    let start = s.find("://")? + 3;
    let rest = &s[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    let range = start + colon + 1..start + at;
    (!range.is_empty()).then_some(range)
}

/// `s` with every URL password replaced by [`MASK`]; `s` itself when it
/// holds none. Handles several URLs in one string.
pub fn redact_url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(range) = url_password(rest) {
        out.push_str(&rest[..range.start]);
        out.push_str(MASK);
        rest = &rest[range.end..];
    }
    out.push_str(rest);
    out
}

/// A copy of a config with secrets masked: values of keys that name a
/// secret (`password`, `token`, ...) and the passwords of URLs.
pub fn redacted(config: &Value) -> Value {
    match config {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Null => Value::Null,
                        _ if is_secret_key(k) => Value::String(MASK.to_owned()),
                        other => redacted(other),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        Value::String(s) => Value::String(redact_url(s)),
        other => other.clone(),
    }
}

/// The secret strings in a config, to scrub from any text a plugin returns.
#[derive(Debug, Default, Clone)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// Collects the secrets in `config` (and their percent-decoded forms,
    /// since a plugin may print a URL password decoded).
    pub fn of(config: &Value) -> Self {
        let mut found = Vec::new();
        collect(config, false, &mut found);
        let decoded: Vec<String> = found.iter().filter_map(|s| percent_decode(s)).collect();
        found.extend(decoded);
        // Longest first, so a secret that contains another is masked whole.
        found.sort_by_key(|s| std::cmp::Reverse(s.len()));
        found.dedup();
        // One- or two-character "secrets" would mangle every message.
        found.retain(|s| s.chars().count() >= 3);
        Self(found)
    }

    /// `text` with every secret, and every URL password, masked.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = redact_url(text);
        for s in &self.0 {
            if text.contains(s.as_str()) {
                text = text.replace(s.as_str(), MASK);
            }
        }
        text
    }
}

fn collect(value: &Value, secret: bool, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                collect(v, secret || is_secret_key(k), out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, secret, out)),
        Value::String(s) if secret => out.push(s.clone()),
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(range) = url_password(rest) {
                out.push(rest[range.clone()].to_owned());
                rest = &rest[range.end..];
            }
        }
        Value::Number(n) if secret => out.push(n.to_string()),
        _ => {}
    }
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_inline_file_and_default() {
        assert_eq!(read(None).unwrap(), json!({}));
        assert_eq!(read(Some(r#"{"path":"x.db"}"#)).unwrap(), json!({"path":"x.db"}));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.json");
        std::fs::write(&file, r#"{"url":"redis://h"}"#).unwrap();
        let arg = format!("@{}", file.display());
        assert_eq!(read(Some(&arg)).unwrap(), json!({"url":"redis://h"}));
        let missing = format!("@{}", dir.path().join("nope.json").display());
        assert!(read(Some(&missing)).unwrap_err().contains("cannot read"));
    }

    #[test]
    fn bad_configs_are_refused_without_echoing_them() {
        let err = read(Some(r#"{"url":"redis://:hunter2@h""#)).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(read(Some("[1]")).unwrap_err().contains("JSON object"));
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(redact_url("redis://:hunter2@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(
            redact_url("postgres://u:p%40ss@db/x?sslmode=disable"),
            "postgres://u:***@db/x?sslmode=disable"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_url("no url here"), "no url here");
        assert_eq!(
            redact_url("a redis://:one@a:1 and redis://x:two@b:2/"),
            "a redis://:***@a:1 and redis://x:***@b:2/"
        );
        // A password may contain '@' and ':'.
        assert_eq!(redact_url("redis://u:a:b@c@host/"), "redis://u:***@host/");
    }

    #[test]
    fn configs_are_redacted_deeply() {
        let c = json!({
            "url": "redis://:hunter2@127.0.0.1:6379",
            "urls": ["redis://:pw1@a:1", "redis://b:2"],
            "password": "s3cret",
            "auth": {"token": 12345},
            "path": "/var/lib/locks.db"
        });
        let r = redacted(&c);
        let text = r.to_string();
        for secret in ["hunter2", "pw1", "s3cret", "12345"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(r["path"], "/var/lib/locks.db");
        assert_eq!(r["urls"][1], "redis://b:2");
    }

    #[test]
    fn secrets_are_scrubbed_from_plugin_messages() {
        let c = json!({"url": "postgres://app:p%40ss@db/x", "password": "hunter2"});
        let s = Secrets::of(&c);
        let msg =
            "cannot log in as app with p@ss or p%40ss (hunter2) at postgres://app:p%40ss@db/x";
        let out = s.scrub(msg);
        assert!(
            !out.contains("p@ss") && !out.contains("p%40ss") && !out.contains("hunter2"),
            "{out}"
        );
        assert!(out.contains("postgres://app:***@db/x"), "{out}");
    }
}
