//! JSON in and out of the slots: lenient requests and error objects.
//!
//! Requests ignore unknown fields, as the ABI requires of call inputs. The
//! fields of ABI 1.1 are read by visitors whose errors name the field
//! (`key`, `owner`, `if_fence`), so a caller learns which one is wrong.

use std::borrow::Cow;
use std::fmt;

use bext_locking::ErrorKind;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A `try_lock` request.
#[derive(Deserialize)]
pub(crate) struct LockRequest<'a> {
    #[serde(borrow, deserialize_with = "key_field")]
    pub key: Cow<'a, str>,
    pub ttl_ms: u64,
    /// (1.1) Who holds the lock; `null` is the same as absent.
    #[serde(default, deserialize_with = "owner_field")]
    pub owner: Option<String>,
}

/// An `inspect` request.
#[derive(Deserialize)]
pub(crate) struct KeyRequest<'a> {
    #[serde(borrow, deserialize_with = "key_field")]
    pub key: Cow<'a, str>,
}

/// A `force_release` request.
#[derive(Deserialize)]
pub(crate) struct ForceRequest<'a> {
    #[serde(borrow, deserialize_with = "key_field")]
    pub key: Cow<'a, str>,
    /// Break only the holder with this fence. `null` is refused, not read
    /// as "any holder": a script that lost track of the fence must not
    /// break whoever holds the key now.
    #[serde(default, deserialize_with = "if_fence_field")]
    pub if_fence: Option<u64>,
}

/// (1.2) A `lock_wait` request: a `try_lock` request plus how long to
/// wait and, to make it cancellable, the host's id for the wait.
#[derive(Deserialize)]
pub(crate) struct WaitRequest<'a> {
    #[serde(borrow, deserialize_with = "key_field")]
    pub key: Cow<'a, str>,
    pub ttl_ms: u64,
    #[serde(default, deserialize_with = "owner_field")]
    pub owner: Option<String>,
    /// Required; `Option` only so that its absence gets our message.
    #[serde(default, deserialize_with = "wait_ms_field")]
    pub wait_ms: Option<u64>,
    #[serde(default, deserialize_with = "wait_id_field")]
    pub wait_id: Option<u64>,
}

/// (1.2) A `cancel_wait` request.
#[derive(Deserialize)]
pub(crate) struct CancelRequest {
    #[serde(default, deserialize_with = "wait_id_field")]
    pub wait_id: Option<u64>,
}

/// (1.2) A `renew_for` request: the handle as `try_lock` wrote it and the
/// lease's new remaining time.
#[derive(Deserialize)]
pub(crate) struct RenewForRequest {
    pub handle: bext_locking::LockHandle,
    pub ttl_ms: u64,
}

/// A non-negative integer field, with a message naming it.
struct Count(&'static str);

impl Visitor<'_> for Count {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "`{}` as a non-negative integer", self.0)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
}

fn wait_ms_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = d.deserialize_u64(Count("wait_ms"))?;
    if v > bext_locking::MAX_TTL_MS {
        return Err(de::Error::custom(format!(
            "`wait_ms` is {v}, over the longest wait ({} ms)",
            bext_locking::MAX_TTL_MS
        )));
    }
    Ok(Some(v))
}

fn wait_id_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_u64(Count("wait_id")).map(Some)
}

/// The `owner` of a request whose bytes are not all UTF-8, read without
/// checking them, to tell whether it is the owner that is wrong.
#[derive(Deserialize)]
pub(crate) struct OwnerProbe {
    #[serde(default, deserialize_with = "raw_owner_field")]
    pub owner: Option<Vec<u8>>,
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`key` as a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

fn key_field<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    d.deserialize_str(KeyVisitor)
}

/// Reads a string's bytes without requiring UTF-8 (serde_json hands raw
/// bytes to `deserialize_bytes`, lone surrogate escapes included), so
/// the check and its message are ours.
struct OwnerBytes;

impl<'de> Visitor<'de> for OwnerBytes {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`owner` as a string")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(v.to_vec())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.as_bytes().to_vec())
    }
}

struct OptionalOwner;

impl<'de> Visitor<'de> for OptionalOwner {
    type Value = Option<Vec<u8>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`owner` as a string")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_bytes(OwnerBytes).map(Some)
    }
}

fn raw_owner_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    d.deserialize_option(OptionalOwner)
}

fn owner_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match raw_owner_field(d)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| de::Error::custom("owner is not valid UTF-8")),
    }
}

struct FenceVisitor;

impl Visitor<'_> for FenceVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`if_fence` as a non-negative integer")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
}

fn if_fence_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_u64(FenceVisitor).map(Some)
}

/// The offset of the first control character (below U+0020) that stands
/// unescaped inside a string of the JSON `text`, which JSON forbids.
/// serde_json refuses one in every string it reads as text, but the owner
/// is read as bytes (see [`OwnerBytes`]), and there it lets raw control
/// characters through.
pub(crate) fn raw_control_in_string(text: &[u8]) -> Option<usize> {
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in text.iter().enumerate() {
        if !in_string {
            in_string = b == b'"';
        } else if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            in_string = false;
        } else if b < 0x20 {
            return Some(i);
        }
    }
    None
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
        let j: Value = serde_json::from_str(&error_json(ErrorKind::Unsupported, "x")).unwrap();
        assert_eq!(j["code"], "unsupported");
    }

    fn lock_err(json: &str) -> String {
        serde_json::from_str::<LockRequest>(json).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn request_errors_name_the_field() {
        assert!(lock_err(r#"{"key":1,"ttl_ms":1}"#).contains("`key`"));
        assert!(lock_err(r#"{"ttl_ms":1}"#).contains("`key`"));
        assert!(lock_err(r#"{"key":"k","ttl_ms":1,"owner":7}"#).contains("`owner`"));
        assert!(lock_err(r#"{"key":"k","ttl_ms":1,"owner":"\ud800"}"#).contains("owner"));
        let ok: LockRequest =
            serde_json::from_str(r#"{"key":"k","ttl_ms":1,"owner":null}"#).unwrap();
        assert_eq!(ok.owner, None);
        let ok: LockRequest =
            serde_json::from_str(r#"{"key":"k","ttl_ms":1,"owner":"o\u20ac"}"#).unwrap();
        assert_eq!(ok.owner.as_deref(), Some("o€"));
        for bad in [r#"-1"#, "1.5", r#""3""#, "null", "true"] {
            let json = format!(r#"{{"key":"k","if_fence":{bad}}}"#);
            let e = serde_json::from_str::<ForceRequest>(&json).err().expect(&json).to_string();
            assert!(e.contains("`if_fence`"), "{json}: {e}");
        }
        let r: ForceRequest = serde_json::from_str(r#"{"key":"k","if_fence":7}"#).unwrap();
        assert_eq!(r.if_fence, Some(7));
        let e = serde_json::from_str::<KeyRequest>(r#"{"key":null}"#).err().unwrap().to_string();
        assert!(e.contains("`key`"), "{e}");
    }

    #[test]
    fn raw_control_characters_are_found_only_inside_strings() {
        assert_eq!(raw_control_in_string(b"{\"owner\":\"\x0co\"}"), Some(10));
        assert_eq!(raw_control_in_string(b"{\"k\":\"a\\\"\x01\"}"), Some(9));
        assert_eq!(raw_control_in_string(b"{\n\t\"k\" :\r\"v\"}"), None);
        assert_eq!(raw_control_in_string(br#"{"k":"\u000c\n\\"}"#), None);
        assert_eq!(raw_control_in_string(b"{\"k\":\"a\\\\\"\x01"), None);
        for c in 0u8..0x20 {
            let json = [&b"{\"owner\":\"a"[..], &[c], b"\"}"].concat();
            assert_eq!(raw_control_in_string(&json), Some(11), "{c:#x}");
        }
    }

    #[test]
    fn the_probe_reads_an_owner_that_is_not_utf8() {
        let bytes = b"{\"key\":\"k\",\"ttl_ms\":1,\"owner\":\"a\xffb\"}";
        let probe: OwnerProbe = serde_json::from_slice(bytes).unwrap();
        assert_eq!(probe.owner.as_deref(), Some(&b"a\xffb"[..]));
    }
}
