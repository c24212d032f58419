//! Config handling through the `.so` and in-process: strict keys, hostile
//! identifiers, unreachable servers within the connect timeout, and
//! passwords kept out of errors.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bext_locking::ErrorKind;
use bext_locking_mysql::MysqlPlugin;
use common::{Scratch, base_url};

fn so() -> bext_locking_loader::LoadedPlugin {
    bext_locking_loader::load(bext_locking_test_support::plugin_path("mysql")).unwrap()
}

#[test]
fn describe_lists_every_config_key() {
    let d = so().describe().unwrap();
    assert_eq!(d.name, "mysql");
    assert!(d.fencing, "lease mode, the default, fences");
    assert!(d.description.contains("get_lock: no fence"), "{}", d.description);
    let mut keys: Vec<&str> =
        d.config_schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "connect_timeout_ms",
            "create_table",
            "mode",
            "pool_size",
            "statement_timeout_ms",
            "table",
            "url"
        ]
    );
    let modes = &d.config_schema["properties"]["mode"];
    assert!(modes.to_string().contains("get_lock"), "{modes}");
}

#[test]
fn unknown_and_wrong_keys_are_invalid_through_the_so() {
    let plugin = so();
    let url = base_url();
    for (config, needle) in [
        (serde_json::json!({"url": url, "tabel": "x"}), "`tabel`"),
        (serde_json::json!({"url": url, "mode": "advisory"}), "advisory"),
        (serde_json::json!({"url": url, "pool_size": 0}), "pool_size"),
        (serde_json::json!({"url": url, "pool_size": "8"}), "invalid type"),
        (serde_json::json!({"url": url, "statement_timeout_ms": 600_001}), "statement_timeout_ms"),
        (serde_json::json!({"mode": "lease"}), "url"),
        (serde_json::json!({"url": ""}), "url"),
        (serde_json::json!({"url": "redis://127.0.0.1/"}), "not a MySQL URL"),
        (serde_json::json!({"url": url, "table": "x`; DROP TABLE y; --"}), "table"),
    ] {
        let err =
            plugin.create(&config.to_string()).err().unwrap_or_else(|| panic!("{config} accepted"));
        assert!(err.contains("invalid_argument"), "{config}: {err}");
        assert!(err.contains(needle), "{config}: {err}");
    }
}

#[test]
fn a_custom_table_is_used() {
    let scratch = Scratch::new("custom_table");
    let config = scratch.config_with("lease", serde_json::json!({"table": "My_Locks$1"}));
    let p = MysqlPlugin::from_json(&config).unwrap();
    let h = bext_locking::LockingPlugin::try_lock(&p, "k", 1000).unwrap().unwrap();
    let n: Option<u64> = mysql::prelude::Queryable::query_first(
        &mut common::admin(&scratch.url),
        "SELECT COUNT(*) FROM `My_Locks$1`",
    )
    .unwrap();
    assert_eq!(n, Some(1));
    bext_locking::LockingPlugin::release(&p, h).unwrap();
}

#[test]
fn an_unreachable_server_fails_within_the_connect_timeout() {
    // A port that refuses, and one that accepts but never answers.
    let refusing = bext_locking_test_support::free_port();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for port in [refusing, silent_port] {
        let config = serde_json::json!({
            "url": format!("mysql://u:hunter2secret@127.0.0.1:{port}/db"),
            "connect_timeout_ms": 300,
            "statement_timeout_ms": 300,
        });
        let started = Instant::now();
        let e = MysqlPlugin::from_json(&config.to_string()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{port}: {:?}", started.elapsed());
        assert_eq!(e.kind, ErrorKind::Backend, "{}", e.message);
        assert!(e.message.contains("cannot connect"), "{}", e.message);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        assert!(e.message.contains("mysql://u@127.0.0.1:"), "{}", e.message);
    }
}

#[test]
fn a_refused_login_never_shows_the_password() {
    let opts = mysql::Opts::from_url(&base_url()).unwrap();
    let url = format!(
        "mysql://bext_nobody:hunter2secret@{}:{}/test",
        opts.get_ip_or_hostname(),
        opts.get_tcp_port()
    );
    for mode in ["lease", "get_lock"] {
        let config = serde_json::json!({"url": url, "mode": mode});
        let e = so().create(&config.to_string()).err().expect("no such user");
        assert!(e.contains("Access denied") || e.contains("1045"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
