//! Stale handles: renew checks both the key (still carrying our lock id,
//! created at our fence) and the lease, and a stale release touches nothing.
//! Includes holders in other processes that die or are paused past their
//! lease, the case fences exist for.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bext_locking::{LockHandle, LockingPlugin};
use bext_locking_etcd::{EtcdConfig, EtcdPlugin};
use common::{Clients, Cluster};

fn plugin(etcd: &Cluster) -> EtcdPlugin {
    let mut config = EtcdConfig::with_endpoints(etcd.endpoints());
    config.key_prefix = "stale/".into();
    config.op_timeout_ms = 3_000;
    EtcdPlugin::from_config(config).unwrap()
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(3)
}

fn lease_of(etcd: &Cluster, p: &EtcdPlugin, h: &LockHandle) -> i64 {
    let kv = etcd.client().get(&p.etcd_key(&h.key), deadline()).unwrap().expect("key exists");
    assert_eq!(kv.value, h.lock_id.as_bytes());
    kv.lease
}

#[test]
fn renew_fails_when_the_key_was_deleted_but_the_lease_lives() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let h = p.try_lock("k", 30_000).unwrap().unwrap();
    let lease = lease_of(&etcd, &p, &h);
    assert!(etcd.client().delete(&p.etcd_key("k"), deadline()).unwrap());
    let e = p.renew(&h).unwrap_err();
    assert!(e.contains("key is gone"), "{e}");
    // The lease itself was still alive: only the key check caught it.
    assert!(etcd.client().lease_keepalive(lease, deadline()).unwrap() > 0);
    p.release(h).unwrap();
}

#[test]
fn renew_fails_when_the_lease_was_revoked() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let h = p.try_lock("k", 30_000).unwrap().unwrap();
    let lease = lease_of(&etcd, &p, &h);
    assert!(etcd.client().lease_revoke(lease, deadline()).unwrap());
    assert!(p.renew(&h).is_err());
    let h2 = p.try_lock("k", 30_000).unwrap().expect("revoking the lease freed the key");
    assert!(h2.fence > h.fence);
    p.release(h).unwrap();
    assert!(p.try_lock("k", 30_000).unwrap().is_none(), "stale release freed the new holder");
    p.release(h2).unwrap();
}

#[test]
fn renew_and_release_leave_a_key_overwritten_on_the_same_lease_alone() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let h = p.try_lock("k", 30_000).unwrap().unwrap();
    let lease = lease_of(&etcd, &p, &h);
    let key = p.etcd_key("k");
    etcd.client().put(&key, b"someone-else", lease, deadline()).unwrap();
    let e = p.renew(&h).unwrap_err();
    assert!(e.contains("another holder"), "{e}");
    p.release(h).unwrap();
    let kv = etcd.client().get(&key, deadline()).unwrap().expect("release must not delete it");
    assert_eq!(kv.value, b"someone-else");
}

#[test]
fn renew_fails_when_the_key_was_re_created_with_the_same_lock_id() {
    let etcd = Cluster::single();
    let p = plugin(&etcd);
    let h = p.try_lock("k", 30_000).unwrap().unwrap();
    let lease = lease_of(&etcd, &p, &h);
    let (c, key) = (etcd.client(), p.etcd_key("k"));
    assert!(c.delete(&key, deadline()).unwrap());
    c.put(&key, h.lock_id.as_bytes(), lease, deadline()).unwrap();
    let e = p.renew(&h).unwrap_err();
    assert!(e.contains("re-created"), "{e}");
}

#[test]
fn a_resent_lock_transaction_recognises_its_own_write() {
    let etcd = Cluster::single();
    let c = etcd.client();
    let lease = c.lease_grant(30, deadline()).unwrap();
    let first = c.put_if_absent(b"resend/k", b"id-1", lease, deadline()).unwrap().unwrap();
    // The same transaction again, as after a lost answer: ours, same fence.
    assert_eq!(c.put_if_absent(b"resend/k", b"id-1", lease, deadline()).unwrap(), Some(first));
    // Anyone else (other id, or other lease) is contention.
    let other = c.lease_grant(30, deadline()).unwrap();
    assert_eq!(c.put_if_absent(b"resend/k", b"id-2", other, deadline()).unwrap(), None);
    assert_eq!(c.put_if_absent(b"resend/k", b"id-1", other, deadline()).unwrap(), None);
}

/// A `bext-lock-hammer hold` process holding `key` through the `.so`.
struct Holder {
    child: Child,
    handle: LockHandle,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Holder {
    fn start(config: &str, key: &str, ttl_ms: u64, renew_every_ms: Option<u64>) -> Self {
        let plugin = bext_locking_test_support::plugin_path("etcd");
        let mut cmd = Command::new(bext_locking_test_support::hammer::hammer_path());
        cmd.arg("hold").arg("--plugin").arg(&plugin);
        cmd.args(["--config", config, "--key", key, "--ttl-ms", &ttl_ms.to_string()]);
        if let Some(ms) = renew_every_ms {
            cmd.args(["--renew-every-ms", &ms.to_string()]);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn bext-lock-hammer hold");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let json = line.strip_prefix("ACQUIRED ").unwrap_or_else(|| panic!("holder said {line:?}"));
        let handle = serde_json::from_str(json.trim()).unwrap();
        Self { child, handle, stdout }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(sig).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success(), "kill {sig}");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `p` acquires `key`.
fn acquire_within(p: &dyn LockingPlugin, key: &str, within: Duration) -> LockHandle {
    let until = Instant::now() + within;
    loop {
        if let Some(h) = p.try_lock(key, 30_000).unwrap() {
            return h;
        }
        assert!(Instant::now() < until, "{key} not acquired within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_holder_process_leaves_a_stale_handle_that_touches_nothing() {
    let etcd = Cluster::single();
    let config = common::config(&etcd.endpoints_json(), 3_000);
    let mut holder = Holder::start(&config, "proc", 1_000, Some(300));
    let me = bext_locking_loader::load(bext_locking_test_support::plugin_path("etcd")).unwrap();
    let me = me.create(&config).unwrap();
    assert_eq!(me.try_lock("proc", 30_000).unwrap(), None, "the holder renews, so it holds");
    holder.child.kill().unwrap();
    holder.child.wait().unwrap();
    // The lease (1 s) runs out once renewals stop.
    let mine = acquire_within(&*me, "proc", Duration::from_secs(5));
    assert!(mine.fence > holder.handle.fence);
    let stale = holder.handle.clone();
    assert!(me.renew(&stale).is_err(), "the dead holder's handle must not renew");
    me.release(stale).unwrap();
    me.renew(&mine).expect("a stale release must leave the new holder intact");
    me.release(mine).unwrap();
}

#[test]
fn a_paused_holder_loses_the_lock_and_its_fence_is_overtaken() {
    let etcd = Cluster::single();
    let config = common::config(&etcd.endpoints_json(), 3_000);
    let mut holder = Holder::start(&config, "paused", 1_000, Some(300));
    let me = bext_locking_loader::load(bext_locking_test_support::plugin_path("etcd")).unwrap();
    let me = me.create(&config).unwrap();

    holder.signal("-STOP"); // a GC pause, a stalled VM
    let mine = acquire_within(&*me, "paused", Duration::from_secs(5));
    assert!(
        mine.fence > holder.handle.fence,
        "the resource would accept the paused holder's writes"
    );
    holder.signal("-CONT");
    // Its next renew finds the lock gone and it says so.
    let mut line = String::new();
    holder.stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("RENEW_FAILED"), "holder said {line:?}");
    let status = holder.child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(me.try_lock("paused", 30_000).unwrap().is_none(), "the new holder must still hold");
    me.renew(&mine).unwrap();
    me.release(mine).unwrap();
}
