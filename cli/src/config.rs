//! Plugin configs: reading them, and keeping their secrets out of output.
//!
//! A config may hold credentials (`redis://:pw@host`, `"password": ...`).
//! Every config the command shows goes through [`redacted`], and every
//! message that came from a plugin goes through the [`Secrets::scrub`] of
//! [`secrets`], which removes the config's secrets even if the plugin forgot
//! to redact them.

use std::path::Path;

use bext_locking::redact::{MASK, Secrets, redact_urls};
use serde_json::{Map, Value};

/// Reads `--config`: JSON text, `@FILE` for a file holding it, or nothing
/// for `{}`. Only a JSON object is accepted. Messages never quote the text
/// (it may hold a password); the hint names `plugin`'s own keys.
pub fn read(arg: Option<&str>, plugin: &str) -> Result<Value, String> {
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
    let hint = format!(
        "expected a JSON object of the plugin's settings, like {{\"key\":\"value\"}}; \
         `bext-lock describe {plugin}` lists its keys"
    );
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{origin}: not valid JSON ({e}); {hint}"))?;
    if !value.is_object() {
        return Err(format!("{origin}: the config is not an object; {hint}"));
    }
    Ok(value)
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "credential", "private_key", "api_key"]
        .iter()
        .any(|s| k.contains(s))
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
        Value::String(s) => Value::String(redact_urls(s)),
        other => other.clone(),
    }
}

/// The secrets in a config, to scrub from any text a plugin returns: the
/// values of keys that name a secret and the passwords of URLs (each also
/// percent-decoded, since a plugin may print a URL password decoded).
pub fn secrets(config: &Value) -> Secrets {
    // One- or two-character "secrets" would mangle every message.
    let mut found = Secrets::with_min_chars(3);
    collect(config, false, &mut found);
    found
}

fn collect(value: &Value, secret: bool, out: &mut Secrets) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                collect(v, secret || is_secret_key(k), out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, secret, out)),
        Value::String(s) if secret => out.add(s),
        Value::String(s) => out.add_url_passwords(s),
        Value::Number(n) if secret => out.add(&n.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_inline_file_and_default() {
        assert_eq!(read(None, "sqlite").unwrap(), json!({}));
        assert_eq!(read(Some(r#"{"path":"x.db"}"#), "sqlite").unwrap(), json!({"path":"x.db"}));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.json");
        std::fs::write(&file, r#"{"url":"redis://h"}"#).unwrap();
        let arg = format!("@{}", file.display());
        assert_eq!(read(Some(&arg), "redis").unwrap(), json!({"url":"redis://h"}));
        let missing = format!("@{}", dir.path().join("nope.json").display());
        assert!(read(Some(&missing), "redis").unwrap_err().contains("cannot read"));
    }

    #[test]
    fn bad_configs_are_refused_without_echoing_them() {
        let err = read(Some(r#"{"url":"redis://:hunter2@h""#), "redis").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        // The hint is the same for every plugin: no sqlite-only example.
        assert!(err.contains("`bext-lock describe redis` lists its keys"), "{err}");
        assert!(!err.contains("path"), "{err}");
        assert!(read(Some("[1]"), "redis").unwrap_err().contains("not an object"));
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
        let s = secrets(&c);
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
