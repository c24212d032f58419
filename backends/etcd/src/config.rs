//! The backend's config: parsing, defaults and the checks that turn a bad
//! value into a clear `invalid_argument` error.

use std::fmt;
use std::time::Duration;

use bext_locking::PluginError;
use bext_locking_kit::schemars::{self, JsonSchema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The key prefix when the config names none.
pub const DEFAULT_KEY_PREFIX: &str = "bext-locking/";
/// Connect timeout per endpoint when the config names none.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Whole-call budget when the config names none.
pub const DEFAULT_OP_TIMEOUT_MS: u64 = 5_000;
/// The largest accepted timeout (one hour): anything longer is a typo.
pub const MAX_TIMEOUT_MS: u64 = bext_locking_kit::config::MAX_TIMEOUT_MS;
/// The longest accepted key prefix, in bytes.
pub const MAX_KEY_PREFIX_BYTES: usize = 1024;

/// The etcd backend's config, as `create` receives it.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members, http://host:port (or
    /// host:port); calls fail over between them. No TLS in this build.
    #[schemars(length(min = 1))]
    pub endpoints: Vec<String>,
    /// Prepended to every lock key to form the etcd key; at most 1024
    /// bytes.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// TCP connect timeout per endpoint, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS))]
    pub connect_timeout_ms: u64,
    /// Budget of one whole try_lock, renew or release, fail-over included,
    /// in milliseconds; past it the call returns an error.
    #[serde(default = "default_op_timeout_ms")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS))]
    pub op_timeout_ms: u64,
    /// etcd user, when the cluster has authentication enabled (needs
    /// `password`).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub user: Option<String>,
    /// That user's password; never printed.
    #[serde(default)]
    #[schemars(extend("writeOnly" = true))]
    pub password: Option<Password>,
}

fn default_key_prefix() -> String {
    DEFAULT_KEY_PREFIX.to_owned()
}

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}

fn default_op_timeout_ms() -> u64 {
    DEFAULT_OP_TIMEOUT_MS
}

/// A password that never shows itself: `Debug` prints `<redacted>`, and a
/// value of the wrong JSON type is refused without echoing it. (It
/// serializes as itself only so a config built in Rust can be checked
/// against the schema; the checks never repeat a string's content.)
#[derive(Clone, PartialEq, Eq, JsonSchema)]
#[schemars(transparent)]
pub struct Password(String);

impl Serialize for Password {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl Password {
    /// Wraps a password.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the authentication request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // serde's own type errors quote the offending value; go through a
        // `Value` so a mistyped secret is never repeated in the message.
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Self(s)),
            _ => Err(serde::de::Error::custom("`password` must be a string")),
        }
    }
}

/// A config that passed every check, ready to build a client from.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Normalised base URLs, `http://host:port`.
    pub endpoints: Vec<String>,
    /// The key prefix.
    pub key_prefix: String,
    /// Connect timeout per endpoint.
    pub connect_timeout: Duration,
    /// Budget of one whole call.
    pub op_timeout: Duration,
    /// User and password, when authentication is configured.
    pub credentials: Option<(String, Password)>,
}

impl EtcdConfig {
    /// A config with these endpoints and every other key at its default.
    pub fn with_endpoints<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            key_prefix: default_key_prefix(),
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            op_timeout_ms: DEFAULT_OP_TIMEOUT_MS,
            user: None,
            password: None,
        }
    }

    /// Checks what the schema cannot (the endpoints' shape, the prefix in
    /// bytes, user and password together); the error names the key at
    /// fault. Counts, lengths and ranges were checked against the schema.
    pub fn check(self) -> Result<Checked, PluginError> {
        let endpoints = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                normalize_endpoint(e)
                    .map_err(|m| PluginError::invalid(format!("endpoints[{i}] {m}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.key_prefix.len() > MAX_KEY_PREFIX_BYTES {
            return Err(PluginError::invalid(format!(
                "`key_prefix` is {} bytes; at most {MAX_KEY_PREFIX_BYTES}",
                self.key_prefix.len()
            )));
        }
        // Ranges were checked against the schema before this runs.
        let connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        let op_timeout = Duration::from_millis(self.op_timeout_ms);
        let credentials = match (self.user, self.password) {
            (None, None) => None,
            (Some(user), Some(password)) => Some((user, password)),
            (Some(_), None) => {
                return Err(PluginError::invalid("`user` is set but `password` is not"));
            }
            (None, Some(_)) => {
                return Err(PluginError::invalid("`password` is set but `user` is not"));
            }
        };
        Ok(Checked {
            endpoints,
            key_prefix: self.key_prefix,
            connect_timeout,
            op_timeout,
            credentials,
        })
    }
}

/// Turns `host:port`, `http://host:port` or `http://host:port/` into
/// `http://host:port`. Messages never repeat an endpoint that carries user
/// info, since that is where people paste passwords.
fn normalize_endpoint(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.contains('@') {
        return Err("contains user info (`user:password@`); put credentials in `user` and `password` instead".into());
    }
    let rest = match raw.split_once("://") {
        None => raw,
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(format!(
                "`{raw}` uses https, which this build does not support (no TLS); use an http:// endpoint on a trusted network or a local TLS proxy"
            ));
        }
        Some((scheme, _)) => {
            return Err(format!("`{raw}` has scheme `{scheme}`; only http:// is supported"));
        }
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(format!("`{raw}` has no host"));
    }
    if rest.contains(['/', '?', '#', ' ']) {
        return Err(format!("`{raw}` must be just scheme, host and port (no path or query)"));
    }
    // An IPv6 literal is bracketed; anything else has at most one colon.
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("`{raw}` is not a valid [ipv6]:port endpoint")),
            },
            None => return Err(format!("`{raw}` has an unclosed `[`")),
        }
    } else {
        match rest.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err(format!("`{raw}`: write an IPv6 address as [addr]:port"));
            }
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{raw}` has no host"));
    }
    let port = match port {
        None => 2379,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("`{raw}` has an invalid port `{p}`")),
        },
    };
    let host = if rest.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
    Ok(format!("http://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Checked, String> {
        let c: EtcdConfig = bext_locking_kit::config::parse(json).map_err(|e| e.message)?;
        c.check().map_err(|e| e.message)
    }

    #[test]
    fn endpoints_are_normalised() {
        let ok =
            |raw: &str, want: &str| assert_eq!(normalize_endpoint(raw).unwrap(), want, "{raw}");
        ok("127.0.0.1:2379", "http://127.0.0.1:2379");
        ok("http://127.0.0.1:23790/", "http://127.0.0.1:23790");
        ok("HTTP://etcd-0", "http://etcd-0:2379");
        ok("[::1]:4000", "http://[::1]:4000");
        ok("http://[::1]", "http://[::1]:2379");
    }

    #[test]
    fn bad_endpoints_are_named() {
        for (raw, needle) in [
            ("https://a:1", "https"),
            ("ftp://a:1", "scheme `ftp`"),
            ("http://a:1/v3", "no path"),
            ("a:0", "invalid port"),
            ("a:99999", "invalid port"),
            ("http://", "no host"),
            ("::1:2379", "IPv6"),
            ("[::1", "unclosed"),
        ] {
            let err = normalize_endpoint(raw).unwrap_err();
            assert!(err.contains(needle), "{raw}: {err}");
        }
    }

    #[test]
    fn user_info_in_an_endpoint_is_refused_without_echo() {
        let err = parse(r#"{"endpoints":["http://root:hunter2@127.0.0.1:2379"]}"#).unwrap_err();
        assert!(err.contains("endpoints[0]") && err.contains("user info"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let c = parse(r#"{"endpoints":["127.0.0.1:2379"]}"#).unwrap();
        assert_eq!(c.key_prefix, DEFAULT_KEY_PREFIX);
        assert_eq!(c.op_timeout, Duration::from_millis(DEFAULT_OP_TIMEOUT_MS));
        assert_eq!(c.connect_timeout, Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS));
        assert!(c.credentials.is_none());
    }

    #[test]
    fn bad_values_are_named() {
        for (json, needle) in [
            (r#"{"endpoints":[]}"#, "endpoints is empty"),
            (r#"{}"#, "endpoints"),
            (r#"{"endpoints":["a:1"],"op_timeout_ms":0}"#, "op_timeout_ms is 0"),
            (
                r#"{"endpoints":["a:1"],"connect_timeout_ms":3600001}"#,
                "connect_timeout_ms is 3600001",
            ),
            (r#"{"endpoints":["a:1"],"user":"u"}"#, "`password` is not"),
            (r#"{"endpoints":["a:1"],"password":"p"}"#, "`user` is not"),
            (r#"{"endpoints":["a:1"],"user":"","password":"p"}"#, "user is empty"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        let long = format!(r#"{{"endpoints":["a:1"],"key_prefix":"{}"}}"#, "p".repeat(1025));
        assert!(parse(&long).unwrap_err().contains("`key_prefix` is 1025 bytes"));
    }

    #[test]
    fn passwords_never_show() {
        let err = parse(r#"{"endpoints":["a:1"],"user":"u","password":123456789}"#).unwrap_err();
        assert!(!err.contains("123456789"), "{err}");
        let c: EtcdConfig =
            serde_json::from_str(r#"{"endpoints":["a:1"],"user":"u","password":"hunter2"}"#)
                .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let checked = c.check().unwrap();
        assert!(!format!("{checked:?}").contains("hunter2"));
        assert_eq!(checked.credentials.unwrap().1.expose(), "hunter2");
    }
}
