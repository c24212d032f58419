//! The config object, its defaults and limits, and the checked settings
//! built from it.

use std::fmt;
use std::time::Duration;

use bext_locking::PluginError;
use bext_locking::redact::{LoneUser, Secrets, redact_url, url_password};
use bext_locking_kit::schemars::{self, JsonSchema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The bucket prefix when the config names none.
pub const DEFAULT_BUCKET_PREFIX: &str = "bext_locks";
/// The limit on connecting when the config names none, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// The budget of one whole call when the config names none, in
/// milliseconds.
pub const DEFAULT_OP_TIMEOUT_MS: u64 = 5_000;
/// The largest accepted timeout (one hour): anything longer is a typo.
pub const MAX_TIMEOUT_MS: u64 = bext_locking_kit::config::MAX_TIMEOUT_MS;
/// The most replicas JetStream keeps of a stream.
pub const MAX_REPLICAS: u32 = 5;

/// The nats backend's config, as `create` receives it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs, nats://host:port (or host:port), of one server or
    /// cluster; the client fails over between them. No TLS in this build.
    #[schemars(length(min = 1))]
    pub servers: Vec<String>,
    /// Names the buckets: `<prefix>` holds the locks, `<prefix>_ttl_<ms>`
    /// the leases of one TTL. ASCII letters, digits, `_` and `-`.
    #[serde(default = "default_bucket_prefix")]
    pub bucket_prefix: String,
    /// User name, when the server wants a user and password (needs
    /// `password`).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub user: Option<String>,
    /// That user's password; never printed.
    #[serde(default)]
    #[schemars(extend("writeOnly" = true))]
    pub password: Option<Secret>,
    /// An authentication token instead of a user and password; never
    /// printed.
    #[serde(default)]
    #[schemars(extend("writeOnly" = true))]
    pub token: Option<Secret>,
    /// Limit on connecting to a server, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS))]
    pub connect_timeout_ms: u64,
    /// Budget of one whole try_lock, renew or release, reconnects included,
    /// in milliseconds; past it the call returns an error.
    #[serde(default = "default_op_timeout_ms")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS))]
    pub op_timeout_ms: u64,
    /// Replicas of the buckets this instance creates (1 on a single
    /// server, 3 or 5 on a cluster); existing buckets are used as they are.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub replicas: u32,
}

fn default_bucket_prefix() -> String {
    DEFAULT_BUCKET_PREFIX.to_owned()
}
fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_op_timeout_ms() -> u64 {
    DEFAULT_OP_TIMEOUT_MS
}
fn default_replicas() -> u32 {
    1
}

/// A password or token that never shows itself: `Debug` prints
/// `<redacted>`, and a value of the wrong JSON type is refused without
/// echoing it.
#[derive(Clone, PartialEq, Eq, JsonSchema)]
#[schemars(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the connect request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // serde's own type errors quote the value: never for a secret.
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Self(s)),
            _ => Err(serde::de::Error::custom("`password` and `token` must be strings")),
        }
    }
}

/// How the client proves who it is.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Nothing beyond what the URLs carry.
    None,
    /// `user` and `password`.
    UserPassword(String, Secret),
    /// `token`.
    Token(Secret),
}

/// A config that passed every check.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `nats://host:port` each, as the client dials them (URL credentials
    /// kept: the client reads them there).
    pub servers: Vec<String>,
    /// The servers without credentials, for messages.
    pub shown: String,
    /// Every secret of the config, to scrub from messages.
    pub secrets: Secrets,
    /// The bucket prefix.
    pub bucket_prefix: String,
    /// Credentials.
    pub auth: Auth,
    /// Limit on connecting.
    pub connect_timeout: Duration,
    /// Budget of one whole call.
    pub op_timeout: Duration,
    /// Replicas of created buckets.
    pub replicas: usize,
}

impl NatsConfig {
    /// A config with these servers and every other key at its default.
    pub fn with_servers<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> Self {
        Self {
            servers: servers.into_iter().map(Into::into).collect(),
            bucket_prefix: default_bucket_prefix(),
            user: None,
            password: None,
            token: None,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            op_timeout_ms: DEFAULT_OP_TIMEOUT_MS,
            replicas: 1,
        }
    }

    /// Checks what the schema cannot (URL shapes, credentials that go
    /// together); the error names the key at fault and never a secret.
    pub fn check(&self) -> Result<Settings, PluginError> {
        let mut secrets = Secrets::new();
        for s in [&self.password, &self.token].into_iter().flatten() {
            secrets.add(s.expose());
        }
        let mut servers = Vec::with_capacity(self.servers.len());
        let mut shown = Vec::with_capacity(self.servers.len());
        for (i, raw) in self.servers.iter().enumerate() {
            if let Some(p) = url_password(raw, LoneUser::Secret) {
                secrets.add(p);
            }
            let url =
                normalise(raw).map_err(|why| {
                    PluginError::invalid(secrets.scrub(&format!(
                        "servers[{i}] `{}` {why}",
                        redact_url(raw, LoneUser::Secret)
                    )))
                })?;
            shown.push(redact_url(&url, LoneUser::Secret));
            servers.push(url);
        }
        let prefix_ok = (1..=64).contains(&self.bucket_prefix.len())
            && self
                .bucket_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !prefix_ok {
            return Err(PluginError::invalid(format!(
                "bucket_prefix {:?} is not accepted: use 1 to 64 ASCII letters, digits, `_` or `-`",
                self.bucket_prefix
            )));
        }
        let auth = match (&self.user, &self.password, &self.token) {
            (None, None, None) => Auth::None,
            (Some(u), Some(p), None) => Auth::UserPassword(u.clone(), p.clone()),
            (None, None, Some(t)) => Auth::Token(t.clone()),
            (Some(_), None, _) => {
                return Err(PluginError::invalid("user is set without password"));
            }
            (None, Some(_), _) => {
                return Err(PluginError::invalid("password is set without user"));
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(PluginError::invalid(
                    "token and user/password are both set; give one of them",
                ));
            }
        };
        Ok(Settings {
            servers,
            shown: shown.join(","),
            secrets,
            bucket_prefix: self.bucket_prefix.clone(),
            auth,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            op_timeout: Duration::from_millis(self.op_timeout_ms),
            replicas: self.replicas as usize,
        })
    }
}

/// `nats://[user[:pass]@]host:port` from `nats://…` or `host[:port]`, or
/// why not.
fn normalise(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let rest = match raw.split_once("://") {
        Some(("nats", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "has scheme `{scheme}`; this build speaks plain nats:// (no TLS or websockets)"
            ));
        }
        None => raw,
    };
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let hostport = hostport.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains(['/', '?', '#', ' ']) {
        return Err("is not a server address (nats://host:port)".to_owned());
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            if h.contains(':') && !h.starts_with('[') {
                return Err("has an IPv6 host without brackets".to_owned());
            }
            (h, Some(p))
        }
        _ => (hostport, None),
    };
    if host.is_empty() {
        return Err("names no host".to_owned());
    }
    let port = match port {
        None => 4222,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("has port `{p}`, not a number from 1 to 65535")),
        },
    };
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    Ok(format!("nats://{userinfo}{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bext_locking::ErrorKind;

    fn check(json: serde_json::Value) -> Result<Settings, PluginError> {
        let c: NatsConfig = bext_locking_kit::config::parse_value(json)?;
        c.check()
    }

    #[test]
    fn defaults_and_normalised_servers() {
        let s = check(serde_json::json!({"servers": ["127.0.0.1", "nats://h:4223/"]})).unwrap();
        assert_eq!(s.servers, ["nats://127.0.0.1:4222", "nats://h:4223"]);
        assert_eq!(s.bucket_prefix, "bext_locks");
        assert_eq!(s.op_timeout, Duration::from_secs(5));
        assert_eq!(s.replicas, 1);
        assert!(matches!(s.auth, Auth::None));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (json, starts) in [
            (serde_json::json!({"servers": []}), "servers"),
            (serde_json::json!({"servers": ["tls://h:1"]}), "servers[0]"),
            (serde_json::json!({"servers": ["h:0"]}), "servers[0]"),
            (serde_json::json!({"servers": ["h:x"]}), "servers[0]"),
            (serde_json::json!({"servers": ["h"], "bucket_prefix": "a.b"}), "bucket_prefix"),
            (serde_json::json!({"servers": ["h"], "bucket_prefix": ""}), "bucket_prefix"),
            (serde_json::json!({"servers": ["h"], "replicas": 0}), "replicas"),
            (serde_json::json!({"servers": ["h"], "replicas": 6}), "replicas"),
            (serde_json::json!({"servers": ["h"], "op_timeout_ms": 0}), "op_timeout_ms"),
            (serde_json::json!({"servers": ["h"], "user": "u"}), "user"),
            (serde_json::json!({"servers": ["h"], "password": "p"}), "password"),
        ] {
            let e = check(json.clone()).err().unwrap_or_else(|| panic!("{json} accepted"));
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
            assert!(e.message.starts_with(starts), "{json}: {}", e.message);
        }
        let e = check(serde_json::json!({"servers": ["h"], "nope": 1})).err().unwrap();
        assert!(e.message.contains("nope"), "{}", e.message);
    }

    #[test]
    fn secrets_never_show() {
        let e = check(serde_json::json!({"servers": ["h"], "password": 12345678})).err().unwrap();
        assert!(!e.message.contains("12345678"), "{}", e.message);
        let e = check(serde_json::json!({
            "servers": ["nats://u:hunter2secret@h:notaport"]
        }))
        .err()
        .unwrap();
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        let e = check(serde_json::json!({
            "servers": ["h"], "token": "tok-hunter2", "user": "u", "password": "pw-hunter2"
        }))
        .err()
        .unwrap();
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        let s = check(serde_json::json!({
            "servers": ["nats://u:hunter2secret@h:1"], "token": "tok-hunter3"
        }))
        .unwrap();
        assert!(!s.shown.contains("hunter2"), "{}", s.shown);
        assert_eq!(s.secrets.scrub("x hunter2secret tok-hunter3 y"), "x *** *** y");
        assert!(!format!("{s:?}").contains("tok-hunter3"));
    }
}
