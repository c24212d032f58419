//! JSON in and out of the slots: lenient requests and error objects.

use std::borrow::Cow;

use bext_locking::ErrorKind;
use serde::Deserialize;

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
    serde_json::json!({ "code": kind.code(), "message": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn error_json_escapes() {
        let j: Value = serde_json::from_str(&error_json(ErrorKind::Backend, "a \"b\"\n")).unwrap();
        assert_eq!(j["code"], "backend");
        assert_eq!(j["message"], "a \"b\"\n");
        let j: Value = serde_json::from_str(&error_json(ErrorKind::InvalidArgument, "x")).unwrap();
        assert_eq!(j["code"], "invalid_argument");
    }
}
