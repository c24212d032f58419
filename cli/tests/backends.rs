//! `bext-lock check` against the server backends, each on a real server:
//! a private `redis-server` and `etcd` on free loopback ports, and the
//! machine's shared PostgreSQL (in a schema of our own; the suite's keys
//! are random, so sharing the server is safe).

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;

/// A server process killed (and its folder removed) when the test ends.
struct Server {
    proc: Proc,
    _dir: tempfile::TempDir,
}

fn wait_for_port(port: u16, server: &mut Proc) {
    let until = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = server.0.as_mut().unwrap().try_wait().unwrap() {
            panic!("the server exited ({status}) before listening on {port}");
        }
        assert!(Instant::now() < until, "nothing listens on {port} after {PATIENCE:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn start(program: &str, args: &[String], port: u16, dir: tempfile::TempDir) -> Server {
    let mut proc = Proc::spawn(
        Command::new(program)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(port, &mut proc);
    Server { proc, _dir: dir }
}

fn check_passes(plugin: &str, config: &str, extra: &[&str]) {
    need(&[plugin]);
    let mut args = vec!["check", plugin, "--config", config];
    args.extend_from_slice(extra);
    let o = output(&args);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(" 0 failed"), "{}", stdout(&o));
}

#[test]
fn check_passes_on_redis() {
    let port = bext_locking_test_support::free_port();
    let args: Vec<String> =
        ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let server = start("redis-server", &args, port, tempfile::tempdir().unwrap());
    check_passes("redis", &format!(r#"{{"url":"redis://127.0.0.1:{port}"}}"#), &[]);
    drop(server.proc);
}

#[test]
fn check_passes_on_pg() {
    let url = std::env::var("BEXT_PG_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
    let config = serde_json::json!({ "url": url, "schema": "bext_cli_check" }).to_string();
    check_passes("pg", &config, &[]);
}

#[test]
fn check_passes_on_etcd() {
    if !Path::new("/usr/bin/etcd").exists() {
        // The etcd backend's own tests install it (mk/etcd.mk); without it
        // there is no etcd to check against.
        eprintln!("/usr/bin/etcd is not installed: not checking the etcd plugin");
        return;
    }
    let (client, peer) =
        (bext_locking_test_support::free_port(), bext_locking_test_support::free_port());
    let dir = tempfile::tempdir().unwrap();
    let peer_url = format!("http://127.0.0.1:{peer}");
    let client_url = format!("http://127.0.0.1:{client}");
    let args: Vec<String> = [
        "--name",
        "cli",
        "--data-dir",
        &dir.path().join("data").display().to_string(),
        "--listen-client-urls",
        &client_url,
        "--advertise-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer_url,
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster",
        &format!("cli={peer_url}"),
        // A 500 ms election timeout puts the lease floor (1.5 x election)
        // at 1 s; the default would round short leases up to 2 s.
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let server = start("/usr/bin/etcd", &args, client, dir);
    // etcd leases count whole seconds: give the expiry checks room.
    let config = serde_json::json!({ "endpoints": [client_url] }).to_string();
    check_passes("etcd", &config, &["--short-ttl", "1s", "--settle", "1s"]);
    drop(server.proc);
}
