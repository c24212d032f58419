//! JSON in and out of the slots: strict configs, lenient requests, error
//! objects.

use std::borrow::Cow;

use bext_locking::{ErrorKind, PluginError};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A `try_lock` request. Unknown fields are ignored, as the ABI requires of
/// call inputs.
#[derive(Deserialize)]
pub(crate) struct LockRequest<'a> {
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    pub ttl_ms: u64,
}

/// The ABI's error object: `{"code":…,"message":…}`.
pub fn error_json(kind: ErrorKind, message: &str) -> String {
    let code = match kind {
        ErrorKind::InvalidArgument => "invalid_argument",
        ErrorKind::Backend => "backend",
    };
    serde_json::json!({ "code": code, "message": message }).to_string()
}

/// Parses a config strictly: it must be an object whose keys all appear in
/// `schema.properties`, and it must then deserialize into `C`.
///
/// Checking keys against the schema (rather than trusting each config
/// struct's `deny_unknown_fields`) keeps `describe` and `create` in
/// agreement by construction.
pub fn parse_config<C: DeserializeOwned>(text: &str, schema: &Value) -> Result<C, PluginError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| PluginError::invalid(format!("config is not valid JSON: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(PluginError::invalid("config must be a JSON object"));
    };
    let known = schema.get("properties").and_then(Value::as_object);
    for key in map.keys() {
        if !known.is_some_and(|k| k.contains_key(key)) {
            let mut names: Vec<&str> =
                known.map(|k| k.keys().map(String::as_str).collect()).unwrap_or_default();
            names.sort_unstable();
            let list = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
            return Err(PluginError::invalid(format!(
                "unknown config key `{key}`; known keys: {list}"
            )));
        }
    }
    serde_json::from_value(value).map_err(|e| PluginError::invalid(format!("bad config: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Cfg {
        path: String,
        #[serde(default)]
        busy_timeout_ms: u64,
    }

    fn schema() -> Value {
        serde_json::json!({"type":"object","properties":{"path":{},"busy_timeout_ms":{}}})
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse_config::<Cfg>(r#"{"path":"x","paht":"y"}"#, &schema()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("`paht`"), "{}", err.message);
        assert!(err.message.contains("busy_timeout_ms, path"), "{}", err.message);
    }

    #[test]
    fn wrong_shapes_are_invalid() {
        for bad in ["[]", "\"x\"", "{", r#"{"path":5}"#, "{}"] {
            let err = parse_config::<Cfg>(bad, &schema()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad}");
        }
        assert!(parse_config::<Cfg>(r#"{"path":"p"}"#, &schema()).is_ok());
    }

    #[test]
    fn error_json_escapes() {
        let j: Value = serde_json::from_str(&error_json(ErrorKind::Backend, "a \"b\"\n")).unwrap();
        assert_eq!(j["code"], "backend");
        assert_eq!(j["message"], "a \"b\"\n");
    }
}
