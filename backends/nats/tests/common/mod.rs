//! Helpers shared by the nats backend's integration tests.

#![allow(dead_code)]

/// The shared test server: `BEXT_NATS_URL`, or the machine's local one.
pub fn server() -> String {
    bext_locking_test_support::nats_url()
}

/// A short random suffix.
pub fn rand() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// A config for `servers` with a bucket prefix of this test's own and
/// short timeouts.
pub fn config_on(servers: &[String], name: &str, extra: serde_json::Value) -> String {
    let mut c = serde_json::json!({
        "servers": servers,
        "bucket_prefix": format!("bext_{name}_{}", rand()),
        "connect_timeout_ms": 1000,
        "op_timeout_ms": 2000,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

/// [`config_on`] the shared server.
pub fn config(name: &str) -> String {
    config_on(&[server()], name, serde_json::json!({}))
}
