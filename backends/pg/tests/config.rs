//! Config handling through the `.so` and in-process: strict keys, hostile
//! identifiers, missing tables, timeouts, and passwords kept out of errors.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bext_locking::{ErrorKind, LockingPlugin};
use bext_locking_pg::PgPlugin;
use common::{Scratch, admin, base_url};

fn so() -> bext_locking_loader::LoadedPlugin {
    bext_locking_loader::load(bext_locking_test_support::plugin_path("pg")).unwrap()
}

fn schema_exists(name: &str) -> bool {
    admin(&base_url())
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&name])
        .unwrap()
        .is_some()
}

#[test]
fn describe_lists_every_config_key() {
    let d = so().describe().unwrap();
    assert_eq!(d.name, "pg");
    assert!(d.fencing, "lease mode, the default, fences");
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
            "schema",
            "statement_timeout_ms",
            "table",
            "url"
        ]
    );
}

#[test]
fn unknown_and_wrong_keys_are_invalid_through_the_so() {
    let plugin = so();
    let url = base_url();
    for (config, needle) in [
        (serde_json::json!({"url": url, "tabel": "x"}), "`tabel`"),
        (serde_json::json!({"url": url, "mode": "session"}), "session"),
        (serde_json::json!({"url": url, "pool_size": 0}), "pool_size"),
        (serde_json::json!({"url": url, "pool_size": "8"}), "invalid type"),
        (serde_json::json!({"mode": "lease"}), "url"),
        (serde_json::json!({"url": ""}), "url"),
    ] {
        let err =
            plugin.create(&config.to_string()).err().unwrap_or_else(|| panic!("{config} accepted"));
        assert!(err.contains("invalid_argument"), "{config}: {err}");
        assert!(err.contains(needle), "{config}: {err}");
    }
}

#[test]
fn hostile_table_and_schema_are_rejected_before_any_sql() {
    let scratch = Scratch::new("hostile_ident");
    let plugin = so();
    for (field, value) in [
        ("table", "locks\"; DROP TABLE pg_class; --"),
        ("table", "locks; SELECT 1"),
        ("table", "a\"b"),
        ("table", "lo cks"),
        ("schema", "public\".\"x"),
        ("schema", &format!("{}\\", scratch.schema)),
    ] {
        let config = scratch.config_with("lease", serde_json::json!({ field: value }));
        let err =
            plugin.create(&config).err().unwrap_or_else(|| panic!("{field}={value:?} accepted"));
        assert!(err.contains("invalid_argument"), "{err}");
        assert!(err.contains(field) && err.contains("not an accepted identifier"), "{err}");
        let err = PgPlugin::from_json(&config).err().unwrap();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
    }
    assert!(!schema_exists(&scratch.schema), "a rejected config created something");
}

#[test]
fn quoted_identifiers_keep_their_case() {
    let scratch = Scratch::new("case");
    let config = scratch.config_with("lease", serde_json::json!({"table": "Locks$V2"}));
    let p = PgPlugin::from_json(&config).unwrap();
    let h = p.try_lock("k", 10_000).unwrap().unwrap();
    let n: i64 = admin(&base_url())
        .query_one(&format!("SELECT count(*) FROM \"{}\".\"Locks$V2\"", scratch.schema), &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    p.release(h).unwrap();
}

#[test]
fn create_table_false_needs_the_table() {
    let scratch = Scratch::new("no_create");
    let config = scratch.config_with("lease", serde_json::json!({"create_table": false}));
    let err = PgPlugin::from_json(&config).expect_err("missing table accepted");
    assert_eq!(err.kind, ErrorKind::Backend);
    assert!(
        err.message.contains("does not exist") && err.message.contains("create_table"),
        "{}",
        err.message
    );
    assert!(!schema_exists(&scratch.schema));
    // Once created (by an instance allowed to), create_table: false works.
    drop(PgPlugin::from_json(&scratch.config("lease")).unwrap());
    let p = PgPlugin::from_json(&config).unwrap();
    let h = p.try_lock("k", 5_000).unwrap().unwrap();
    p.release(h).unwrap();
}

#[test]
fn racing_creators_all_succeed() {
    let scratch = Scratch::new("race_create");
    let config = scratch.config("lease");
    std::thread::scope(|s| {
        let made: Vec<_> =
            (0..6).map(|_| s.spawn(|| PgPlugin::from_json(&config).map(drop))).collect();
        for m in made {
            m.join().unwrap().unwrap();
        }
    });
}

#[test]
fn unreachable_and_silent_servers_fail_within_the_timeout() {
    // Nobody listens on a free port: refused at once.
    let port = bext_locking_test_support::free_port();
    let started = Instant::now();
    let err = PgPlugin::from_json(
        &serde_json::json!({"url": format!("postgres://u@127.0.0.1:{port}/db"), "connect_timeout_ms": 500})
            .to_string(),
    )
    .err()
    .unwrap();
    assert_eq!(err.kind, ErrorKind::Backend);
    assert!(err.message.contains("cannot connect"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // Something accepts the TCP connection and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let err = PgPlugin::from_json(
        &serde_json::json!({"url": format!("postgres://u@127.0.0.1:{port}/db"), "connect_timeout_ms": 300})
            .to_string(),
    )
    .err()
    .unwrap();
    let took = started.elapsed();
    assert!(err.message.contains("300 ms"), "{}", err.message);
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
}

const SECRET: &str = "Sup3r-S3cret_pw";

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} leaks the password: {text}");
    assert!(!text.contains("Sup3r"), "{what} leaks part of the password: {text}");
}

#[test]
fn the_password_never_appears_in_errors() {
    let plugin = so();
    let port = bext_locking_test_support::free_port();
    for url in [
        format!("postgres://me:{SECRET}@127.0.0.1:{port}/db"),
        format!("postgresql://me:{}@127.0.0.1:{port}/db", SECRET.replace('-', "%2D")),
        format!("host=127.0.0.1 port={port} user=me password={SECRET} dbname=db"),
        format!("host=127.0.0.1 port={port} user=me password='{SECRET}' dbname=db"),
        format!("postgres://me@127.0.0.1:{port}/db?password={SECRET}"),
        // Invalid strings, where the parser's error may quote its input.
        format!("postgres://me:{SECRET}@127.0.0.1:notaport/db"),
        format!("postgres://me:{SECRET}@127.0.0.1:{port}/db?nonsense=1"),
        format!("host=127.0.0.1 password={SECRET} port=x"),
        format!("postgres://me:{SECRET}@[::1/db"),
    ] {
        let config = serde_json::json!({"url": url, "connect_timeout_ms": 500}).to_string();
        let err = plugin.create(&config).err().unwrap_or_else(|| panic!("{url} accepted"));
        assert_no_secret(&url, &err);
        let err = PgPlugin::from_json(&config).err().unwrap();
        assert_no_secret(&url, &err.message);
        let parsed: bext_locking_pg::PgConfig = serde_json::from_str(&config).unwrap();
        assert_no_secret("Debug of the config", &format!("{parsed:?}"));
    }

    // A working instance whose URL carries a password (the test server
    // trusts local connections and ignores it): its runtime errors name the
    // server without the password.
    let scratch = Scratch::new("secret");
    let url = scratch.url.replacen("://", &format!("://{}:{SECRET}@", user_of(&scratch.url)), 1);
    let url = url.replacen(&format!("{}@", user_of(&scratch.url)), "", 1);
    let config = serde_json::json!({"url": url, "schema": scratch.schema}).to_string();
    for p in [plugin.create(&config).unwrap(), Box::new(PgPlugin::from_json(&config).unwrap())] {
        let h = p.try_lock("k", 5_000).unwrap().unwrap();
        let forged =
            bext_locking::LockHandle { lock_id: uuid::Uuid::new_v4().to_string(), ..h.clone() };
        let err = p.renew(&forged).unwrap_err();
        assert!(err.contains("127.0.0.1"), "errors should name the server: {err}");
        assert_no_secret("renew error", &err);
        p.release(h).unwrap();
        p.cleanup();
        assert_no_secret("error after cleanup", &p.try_lock("k", 5_000).unwrap_err());
    }
}

/// The user part of a `postgres://user@host` URL.
fn user_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest.split_once('@').map(|(u, _)| u.to_owned()).unwrap_or_default()
}
