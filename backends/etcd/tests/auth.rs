//! A cluster with authentication enabled: credentials work, expired tokens
//! are renewed, and neither a wrong password nor none is ever contention or
//! printed.

mod common;

use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_etcd::{EtcdConfig, EtcdPlugin, config::Password};
use common::Cluster;

const PASSWORD: &str = "s3cret-Pa55word";

/// Turns on authentication with a `root` user, through the gateway.
fn enable_auth(etcd: &Cluster) {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(true).build().into();
    let base = &etcd.members[0].client_url;
    for (path, body) in [
        ("/v3/auth/user/add", format!(r#"{{"name":"root","password":"{PASSWORD}"}}"#)),
        ("/v3/auth/role/add", r#"{"name":"root"}"#.to_owned()),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#.to_owned()),
        ("/v3/auth/enable", "{}".to_owned()),
    ] {
        agent.post(format!("{base}{path}")).send(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

fn plugin(etcd: &Cluster, credentials: Option<(&str, &str)>) -> EtcdPlugin {
    let mut config = EtcdConfig::with_endpoints(etcd.endpoints());
    config.op_timeout_ms = 3_000;
    if let Some((user, password)) = credentials {
        config.user = Some(user.into());
        config.password = Some(Password::new(password));
    }
    EtcdPlugin::from_config(config).unwrap()
}

#[test]
fn credentials_work_tokens_renew_and_failures_are_errors_without_secrets() {
    // Tokens live 1 s, so the second round needs a fresh one.
    let etcd = Cluster::start_with(1, &["--auth-token-ttl", "1"]);
    enable_auth(&etcd);

    let good = plugin(&etcd, Some(("root", PASSWORD)));
    let h = good.try_lock("k", 30_000).unwrap().expect("acquire with credentials");
    good.renew(&h).unwrap();
    std::thread::sleep(Duration::from_millis(2_500));
    good.renew(&h).expect("renew after the token expired");
    assert!(good.try_lock("k", 30_000).unwrap().is_none());
    good.release(h).unwrap();

    let wrong = plugin(&etcd, Some(("root", "not-the-password")));
    let e = wrong.try_lock("k", 30_000).unwrap_err();
    assert!(e.contains("authentication as `root` failed"), "{e}");
    assert!(!e.contains("not-the-password") && !e.contains(PASSWORD), "{e}");

    let anonymous = plugin(&etcd, None);
    let started = Instant::now();
    let e = anonymous.try_lock("k", 30_000).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
}

#[test]
fn credentials_through_the_so_are_never_echoed() {
    let etcd = Cluster::single();
    let loaded = bext_locking_loader::load(bext_locking_test_support::plugin_path("etcd")).unwrap();
    // Auth is not enabled: authenticate answers an error, which must not
    // carry the password either.
    let config = format!(
        r#"{{"endpoints":{},"user":"root","password":"{PASSWORD}","op_timeout_ms":2000}}"#,
        etcd.endpoints_json()
    );
    let p = loaded.create(&config).unwrap();
    let e = p.try_lock("k", 30_000).unwrap_err();
    assert!(!e.contains(PASSWORD), "{e}");
}

#[test]
fn a_waiter_with_credentials_watches_and_takes_the_lock_after_its_token_expired() {
    use bext_locking::{LockWait, Wait};
    let etcd = Cluster::start_with(1, &["--auth-token-ttl", "1"]);
    enable_auth(&etcd);
    let holder = plugin(&etcd, Some(("root", PASSWORD)));
    let waiter = std::sync::Arc::new(plugin(&etcd, Some(("root", PASSWORD))));
    let h = holder.try_lock("k", 30_000).unwrap().unwrap();
    // The waiter's token expires while it waits; its keep-alives and the
    // watch carry on.
    let t = {
        let waiter = waiter.clone();
        std::thread::spawn(move || {
            waiter.lock_wait("k", 30_000, None, &Wait::new(Duration::from_secs(20))).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(!t.is_finished(), "the waiter returned while the lock was held");
    holder.release(h).unwrap();
    let got = t.join().unwrap().expect("the waiter gets the lock");
    waiter.release(got.handle).unwrap();
}
