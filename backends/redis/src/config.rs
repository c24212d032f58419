//! The config object (its schema is derived from it) and the checks that
//! turn it into settings.

use std::collections::HashSet;
use std::time::Duration;

use bext_locking::PluginError;
use bext_locking_kit::config::MAX_TIMEOUT_MS;
use bext_locking_kit::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use crate::redact::redact_url;

/// The default `key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "bext:lock:";
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 500;
const DEFAULT_OP_TIMEOUT_MS: u64 = 1_000;
const DEFAULT_POOL_SIZE: usize = 16;
const DEFAULT_CLOCK_DRIFT_FACTOR: f64 = 0.01;
const MAX_POOL_SIZE: usize = 1024;

/// The Redis backend's config. Exactly one of `url`, `urls` and
/// `cluster_urls` must be given.
#[derive(Debug, Default, Clone, Deserialize, Serialize, JsonSchema)]
#[schemars(extend("oneOf" = [
    { "required": ["url"] },
    { "required": ["urls"] },
    { "required": ["cluster_urls"] }
]))]
pub struct RedisConfig {
    /// One Redis server, e.g. redis://:password@127.0.0.1:6379/0; locks
    /// carry fences.
    #[serde(default)]
    pub url: Option<String>,
    /// Independent Redis masters (3 or 5 is typical): Redlock quorum locks,
    /// without fences.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub urls: Option<Vec<String>>,
    /// Seed nodes of one Redis Cluster; locks carry fences.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub cluster_urls: Option<Vec<String>>,
    /// Prepended to every Redis key; must not contain { or } (they pick the
    /// cluster hash slot).
    #[serde(default)]
    #[schemars(extend("default" = DEFAULT_KEY_PREFIX))]
    pub key_prefix: Option<String>,
    /// Longest time to open one connection, TCP and handshake, in
    /// milliseconds.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS), extend("default" = DEFAULT_CONNECT_TIMEOUT_MS))]
    pub connect_timeout_ms: Option<u64>,
    /// Longest time one call may take, connecting included, also when a
    /// server hangs, in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS), extend("default" = DEFAULT_OP_TIMEOUT_MS))]
    pub op_timeout_ms: Option<u64>,
    /// Most connections open to each server (each cluster connection
    /// reaches every master).
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_POOL_SIZE), extend("default" = DEFAULT_POOL_SIZE))]
    pub pool_size: Option<usize>,
    /// Redlock only: clock drift allowance as a fraction of the TTL (plus
    /// 2 ms).
    #[serde(default)]
    #[schemars(range(min = 0), extend("exclusiveMaximum" = 0.5, "default" = DEFAULT_CLOCK_DRIFT_FACTOR))]
    pub clock_drift_factor: Option<f64>,
    /// One server or a cluster: `false` takes locks with a plain `SET NX PX`
    /// and hands out no fence, for raw-client speed where nothing checks
    /// fences. A quorum never fences, so `true` is refused there.
    #[serde(default)]
    #[schemars(extend("default" = true))]
    pub fencing: Option<bool>,
}

/// Which kind of deployment the config names.
#[derive(Debug, Clone, PartialEq)]
pub enum Topology {
    /// One server.
    Single(String),
    /// Independent masters, locked by majority.
    Quorum(Vec<String>),
    /// One Redis Cluster, reached through these seed nodes.
    Cluster(Vec<String>),
}

/// A checked config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the servers are.
    pub topology: Topology,
    /// Prepended to every key.
    pub key_prefix: String,
    /// Per connection attempt.
    pub connect_timeout: Duration,
    /// Per call.
    pub op_timeout: Duration,
    /// Connections per server.
    pub pool_size: usize,
    /// Redlock drift allowance.
    pub clock_drift_factor: f64,
    /// Whether acquisitions carry fences (never on a quorum).
    pub fencing: bool,
}

impl Settings {
    /// Checks what the schema cannot (one topology, the URLs, the prefix),
    /// naming the first bad value; ranges were checked against the schema.
    /// URLs in messages are redacted.
    pub fn from_config(c: RedisConfig) -> Result<Self, PluginError> {
        let quorum = c.urls.is_some();
        let topology = match (c.url, c.urls, c.cluster_urls) {
            (Some(url), None, None) => {
                check_url(&url, "url")?;
                Topology::Single(url)
            }
            (None, Some(urls), None) => Topology::Quorum(check_urls(urls, "urls")?),
            (None, None, Some(urls)) => Topology::Cluster(check_urls(urls, "cluster_urls")?),
            (None, None, None) => {
                return Err(PluginError::invalid(
                    "config needs one of `url` (one server), `urls` (Redlock over independent masters) or `cluster_urls` (Redis Cluster)",
                ));
            }
            _ => {
                return Err(PluginError::invalid(
                    "config takes only one of `url`, `urls` and `cluster_urls`",
                ));
            }
        };
        let key_prefix = c.key_prefix.unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        if key_prefix.contains(['{', '}']) {
            return Err(PluginError::invalid(
                "key_prefix must not contain `{` or `}`: Redis Cluster would take them as the hash tag, splitting a lock from its fence counter",
            ));
        }
        let ms = |v: Option<u64>, default| Duration::from_millis(v.unwrap_or(default));
        let connect_timeout = ms(c.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
        let op_timeout = ms(c.op_timeout_ms, DEFAULT_OP_TIMEOUT_MS);
        let pool_size = c.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
        let clock_drift_factor = c.clock_drift_factor.unwrap_or(DEFAULT_CLOCK_DRIFT_FACTOR);
        // Independent masters share no counter that could only rise.
        if quorum && c.fencing == Some(true) {
            return Err(PluginError::invalid(
                "fencing: true is not available with `urls` (Redlock over independent masters): they share no counter that could only rise; use `url` or `cluster_urls` for fences",
            ));
        }
        let fencing = !quorum && c.fencing.unwrap_or(true);
        Ok(Self {
            topology,
            key_prefix,
            connect_timeout,
            op_timeout,
            pool_size,
            clock_drift_factor,
            fencing,
        })
    }
}

/// The port of `scheme://[user@]host:port[/...]` when it is a number too
/// large for a port (the URL parser only says "invalid").
fn port_out_of_range(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = host_port.rsplit_once(':')?.1;
    let all_digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    (all_digits && port.parse::<u64>().map_or(true, |p| p > 65_535)).then_some(port)
}

fn check_url(url: &str, name: &str) -> Result<(), PluginError> {
    let shown = redact_url(url);
    let Some(parsed) = redis::parse_redis_url(url) else {
        if let Some(port) = port_out_of_range(url) {
            return Err(PluginError::invalid(format!(
                "{name} {shown}: port {port} is out of range (1 to 65535)"
            )));
        }
        return Err(PluginError::invalid(format!("{name} {shown} is not a redis:// URL")));
    };
    if !matches!(parsed.scheme(), "redis" | "valkey") {
        return Err(PluginError::invalid(format!(
            "{name} {shown}: scheme `{}` is not supported; use redis://host:port (TLS and unix sockets are not built in)",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(PluginError::invalid(format!("{name} {shown} has no host")));
    }
    Ok(())
}

fn check_urls(urls: Vec<String>, name: &str) -> Result<Vec<String>, PluginError> {
    if urls.is_empty() {
        return Err(PluginError::invalid(format!("{name} is empty; list at least one server")));
    }
    let mut seen = HashSet::new();
    for (i, url) in urls.iter().enumerate() {
        check_url(url, &format!("{name}[{i}]"))?;
        let parsed = redis::parse_redis_url(url).expect("checked above");
        let place = (
            parsed.host_str().unwrap_or_default().to_ascii_lowercase(),
            parsed.port().unwrap_or(6379),
            parsed.path().trim_matches('/').to_owned(),
        );
        // The same server listed twice would count twice towards a majority.
        if !seen.insert(place) {
            return Err(PluginError::invalid(format!(
                "{name}[{i}] {} names a server listed before; each must be a distinct server",
                redact_url(url)
            )));
        }
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Result<Settings, PluginError> {
        let config: RedisConfig = bext_locking_kit::config::parse(json)?;
        Settings::from_config(config)
    }

    fn err(json: &str) -> String {
        let e = settings(json).unwrap_err();
        assert_eq!(e.kind, bext_locking::ErrorKind::InvalidArgument, "{json}: {}", e.message);
        e.message
    }

    #[test]
    fn minimal_configs() {
        let s = settings(r#"{"url":"redis://127.0.0.1:6379"}"#).unwrap();
        assert_eq!(s.topology, Topology::Single("redis://127.0.0.1:6379".into()));
        assert_eq!(s.key_prefix, DEFAULT_KEY_PREFIX);
        assert_eq!(s.pool_size, DEFAULT_POOL_SIZE);
        let s = settings(r#"{"urls":["redis://a:1","redis://b:1","redis://c:1"]}"#).unwrap();
        assert!(matches!(s.topology, Topology::Quorum(ref u) if u.len() == 3));
        let s = settings(r#"{"cluster_urls":["redis://a:1"],"op_timeout_ms":5}"#).unwrap();
        assert!(matches!(s.topology, Topology::Cluster(_)));
        assert_eq!(s.op_timeout, Duration::from_millis(5));
        assert!(s.fencing);
    }

    #[test]
    fn fencing_is_on_by_default_and_never_on_a_quorum() {
        assert!(settings(r#"{"url":"redis://a"}"#).unwrap().fencing);
        assert!(!settings(r#"{"url":"redis://a","fencing":false}"#).unwrap().fencing);
        assert!(!settings(r#"{"cluster_urls":["redis://a"],"fencing":false}"#).unwrap().fencing);
        assert!(!settings(r#"{"urls":["redis://a"]}"#).unwrap().fencing);
        assert!(!settings(r#"{"urls":["redis://a"],"fencing":false}"#).unwrap().fencing);
        assert!(err(r#"{"urls":["redis://a"],"fencing":true}"#).contains("fencing: true"));
        let e = err(r#"{"url":"redis://a","fencing":"no"}"#);
        assert!(e.contains("fencing") || e.contains("boolean"), "{e}");
    }

    #[test]
    fn every_schema_key_is_accepted() {
        let s = settings(
            r#"{"url":"redis://h","key_prefix":"p:","connect_timeout_ms":7,"op_timeout_ms":9,
                "pool_size":2,"clock_drift_factor":0.02,"fencing":true}"#,
        )
        .unwrap();
        assert_eq!(
            (s.key_prefix.as_str(), s.connect_timeout.as_millis(), s.pool_size),
            ("p:", 7, 2)
        );
    }

    #[test]
    fn bad_configs_name_the_problem() {
        assert!(err("{}").contains("needs one of `url`"));
        assert!(err(r#"{"url":"redis://a","urls":["redis://b"]}"#).contains("only one of"));
        assert!(err(r#"{"urls":[]}"#).contains("urls is empty"));
        assert!(err(r#"{"url":"http://a"}"#).contains("not a redis:// URL"));
        assert!(err(r#"{"url":"rediss://a"}"#).contains("scheme `rediss`"));
        assert!(err(r#"{"urls":["redis://a:1","redis://A:1/"]}"#).contains("urls[1]"));
        assert!(err(r#"{"url":"redis://a","op_timeout_ms":0}"#).contains("op_timeout_ms is 0"));
        assert!(err(r#"{"url":"redis://a","pool_size":0}"#).contains("pool_size is 0"));
        assert!(err(r#"{"url":"redis://a","clock_drift_factor":0.5}"#).contains("clock_drift"));
        assert!(err(r#"{"url":"redis://a","key_prefix":"{x}"}"#).contains("key_prefix"));
        assert!(err(r#"{"url":"redis://a","uri":"x"}"#).contains("unknown config key `uri`"));
    }

    #[test]
    fn bad_urls_never_show_the_password() {
        for json in [
            r#"{"url":"http://u:hunter2@a"}"#,
            r#"{"urls":["redis://:hunter2@a:1","redis://:hunter2@a:1"]}"#,
            r#"{"url":"rediss://:hunter2@a"}"#,
        ] {
            let message = err(json);
            assert!(!message.contains("hunter2"), "{message}");
        }
    }
}
