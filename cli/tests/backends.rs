//! `bext-lock check` against the server backends, each on a real server:
//! a private `redis-server` and `etcd` on free loopback ports (the
//! workspace's throwaway servers, killed when the test ends), and the
//! machine's shared PostgreSQL (in a schema of our own; the suite's keys
//! are random, so sharing the server is safe).

mod common;

use std::path::Path;

use bext_locking_test_support::servers::{etcd, redis};
use common::*;

fn check_passes(plugin: &str, config: &str, extra: &[&str]) {
    need(&[plugin]);
    let mut args = vec!["check", plugin, "--config", config];
    args.extend_from_slice(extra);
    // The whole suite, 1.2's waits included: etcd's whole-second leases
    // make its expiry checks slow.
    let started = std::time::Instant::now();
    let o = output_within(&args, std::time::Duration::from_secs(120));
    eprintln!("bext-lock check {plugin} took {:?}", started.elapsed());
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(" 0 failed"), "{}", stdout(&o));
}

#[test]
fn check_passes_on_redis() {
    let server = redis::Server::start();
    check_passes("redis", &redis::single_config(&server, ""), &[]);
}

#[test]
fn check_passes_on_pg() {
    let url = bext_locking_test_support::pg_url();
    let config = serde_json::json!({ "url": url, "schema": "bext_cli_check" }).to_string();
    check_passes("pg", &config, &[]);
}

#[test]
fn check_passes_on_mysql() {
    let url = bext_locking_test_support::mysql_url();
    for mode in ["lease", "get_lock"] {
        let config = serde_json::json!({ "url": url, "mode": mode }).to_string();
        check_passes("mysql", &config, &[]);
    }
}

#[test]
fn check_passes_on_etcd() {
    if !Path::new("/usr/bin/etcd").exists() {
        // The etcd backend's own tests install it (mk/etcd.mk); without it
        // there is no etcd to check against.
        eprintln!("/usr/bin/etcd is not installed: not checking the etcd plugin");
        return;
    }
    // Its members' 500 ms election timeout puts the lease floor (1.5 x
    // election) at 1 s; the default would round short leases up to 2 s.
    let cluster = etcd::Cluster::single();
    // etcd leases count whole seconds: give the expiry checks room.
    let config = serde_json::json!({ "endpoints": cluster.endpoints() }).to_string();
    check_passes("etcd", &config, &["--short-ttl", "1s", "--settle", "1s"]);
}

#[test]
fn check_passes_on_nats() {
    let url = bext_locking_test_support::nats_url();
    let prefix = format!("bext_cli_check_{}", std::process::id());
    let config = serde_json::json!({ "servers": [url], "bucket_prefix": prefix }).to_string();
    check_passes("nats", &config, &[]);
}

/// A TTL too short for a Redlock quorum (a 40% drift allowance needs more
/// than 3 ms) is bad usage, exit 2, not a backend failure. `run`'s own lease
/// plan is stricter than any quorum's minimum, so `run` refuses it before the
/// plugin is asked; had the plugin been asked, its `invalid_argument` kind
/// would give the same exit code (`lock::try_once`).
#[test]
fn run_with_a_ttl_too_short_for_the_quorum_is_bad_usage() {
    need(&["redis"]);
    let nodes = redis::servers(3);
    let config = redis::quorum_config(&nodes, r#","clock_drift_factor":0.4"#);
    let o =
        output(&["run", "redis", "--config", &config, "--key", "k", "--ttl", "3ms", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("--ttl 3ms is too short") || err.contains("ttl_ms is 3"), "{err}");
    // A TTL it can serve runs the command.
    let o =
        output(&["run", "redis", "--config", &config, "--key", "k", "--ttl", "5s", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
