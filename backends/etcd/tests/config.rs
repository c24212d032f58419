//! Config handling and unreachable clusters, through the `.so` as a host
//! sees them: bad configs name the key, unreachable or silent endpoints are
//! errors within `op_timeout_ms` (never contention), and a dead endpoint is
//! skipped for a live one.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bext_locking_loader::LoadedPlugin;
use bext_locking_test_support::{free_port, plugin_path};
use common::Cluster;

fn loaded() -> LoadedPlugin {
    bext_locking_loader::load(plugin_path("etcd")).unwrap()
}

#[test]
fn describe_lists_every_config_key_and_promises_fences() {
    let d = loaded().describe().unwrap();
    assert_eq!(d.name, "etcd");
    assert!(d.fencing);
    let props = d.config_schema["properties"].as_object().unwrap();
    let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["connect_timeout_ms", "endpoints", "key_prefix", "op_timeout_ms", "password", "user"]
    );
}

#[test]
fn bad_configs_name_the_problem_and_never_the_secret() {
    let p = loaded();
    for (config, needle) in [
        (r#"{}"#, "endpoints"),
        (r#"{"endpoints":[]}"#, "endpoints is empty"),
        (r#"{"endpoint":["127.0.0.1:2379"]}"#, "endpoint"),
        (r#"{"endpoints":["127.0.0.1:2379"],"op_timeout_ms":0}"#, "op_timeout_ms"),
        (r#"{"endpoints":["https://127.0.0.1:2379"]}"#, "https"),
        (r#"{"endpoints":["127.0.0.1:2379"],"user":"root"}"#, "password"),
    ] {
        let e = p.create(config).err().unwrap_or_else(|| panic!("{config} was accepted"));
        assert!(e.contains(needle), "{config}: {e}");
    }
    for config in [
        r#"{"endpoints":["http://root:hunter2@127.0.0.1:2379"]}"#,
        r#"{"endpoints":["127.0.0.1:2379"],"user":"root","password":["hunter2"]}"#,
    ] {
        let e = p.create(config).err().unwrap_or_else(|| panic!("{config} was accepted"));
        assert!(!e.contains("hunter2"), "{e}");
    }
}

#[test]
fn an_unreachable_cluster_is_an_error_not_contention() {
    let endpoints = format!(r#"["127.0.0.1:{}","127.0.0.1:{}"]"#, free_port(), free_port());
    let p = loaded().create(&common::config(&endpoints, 2_000)).unwrap();
    let started = Instant::now();
    let e = p.try_lock("k", 30_000).unwrap_err();
    assert!(e.contains("no endpoint reachable"), "{e}");
    // Refused connections fail at once rather than waiting out the budget.
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    let h = bext_locking::LockHandle {
        key: "k".into(),
        lock_id: "x".into(),
        ttl_ms: 1_000,
        fence: None,
    };
    assert!(p.renew(&h).is_err());
    assert!(p.release(h).is_err());
}

#[test]
fn a_silent_endpoint_fails_within_op_timeout() {
    // The kernel accepts the connection; nothing ever answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoints = format!(r#"["{}"]"#, silent.local_addr().unwrap());
    let p = loaded().create(&common::config(&endpoints, 600)).unwrap();
    let started = Instant::now();
    assert!(p.try_lock("k", 30_000).is_err());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_dead_endpoint_is_skipped_for_a_live_one() {
    let etcd = Cluster::single();
    let endpoints = format!(r#"["127.0.0.1:{}","{}"]"#, free_port(), etcd.members[0].client_url);
    let p = loaded().create(&common::config(&endpoints, 2_000)).unwrap();
    for _ in 0..3 {
        let h = p.try_lock("k", 30_000).unwrap().expect("acquire through the live endpoint");
        p.renew(&h).unwrap();
        p.release(h).unwrap();
    }
}
