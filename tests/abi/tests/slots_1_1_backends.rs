//! The ABI 1.1 slots of the server backends (redis, pg in both modes,
//! etcd), called as a C host calls them: every bad field is
//! `ERR_INVALID` naming it before the backend is asked, a valid call
//! answers by what the mode can serve (`ERR_UNSUPPORTED` with the reason
//! where it cannot), and `inspect` never shows the lock_id.

use std::ffi::{CStr, CString, c_char};
use std::ptr;

use bext_locking_abi_tests::plugin;
use bext_locking_ffi::{
    BEXT_LOCKING_ERR_INVALID, BEXT_LOCKING_ERR_UNSUPPORTED, BEXT_LOCKING_OK, BextLockingInstance,
};
use bext_locking_loader::{CallFn, Slots, load};
use bext_locking_test_support::servers::{etcd, redis};
use serde_json::Value;

struct Host {
    slots: Slots,
    instance: *mut BextLockingInstance,
}

impl Host {
    fn new(name: &str, config: &str) -> Self {
        let slots = load(plugin(name)).unwrap().slots();
        let config = CString::new(config).unwrap();
        let mut instance = ptr::null_mut();
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: valid NUL-terminated input and out-parameters.
        let status = unsafe { (slots.create)(config.as_ptr(), &mut instance, &mut err) };
        assert_eq!(status, BEXT_LOCKING_OK, "create {name}");
        Self { slots, instance }
    }

    fn take(&self, out: *mut c_char) -> Option<String> {
        if out.is_null() {
            return None;
        }
        // SAFETY: a live string this plugin returned, freed once.
        let text = unsafe { CStr::from_ptr(out) }.to_string_lossy().into_owned();
        // SAFETY: as above.
        unsafe { (self.slots.free_string)(out) };
        Some(text)
    }

    fn call(&self, slot: CallFn, input: &[u8]) -> (i32, Option<String>) {
        let input = CString::new(input).unwrap();
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: live instance, NUL-terminated input, valid out-parameter.
        let status = unsafe { slot(self.instance, input.as_ptr(), &mut out) };
        (status, self.take(out))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // SAFETY: created above, destroyed once.
        unsafe { (self.slots.destroy)(self.instance) };
    }
}

fn invalid_naming(what: &str, (status, out): (i32, Option<String>), field: &str) {
    assert_eq!(status, BEXT_LOCKING_ERR_INVALID, "{what}: {out:?}");
    let json: Value = serde_json::from_str(out.as_deref().unwrap_or("null")).unwrap();
    assert_eq!(json["code"], "invalid_argument", "{what}");
    let message = json["message"].as_str().unwrap();
    assert!(message.contains(field), "{what}: `{message}` does not name `{field}`");
}

/// Every bad field of the 1.1 calls, on this backend's `.so`; none of
/// them takes or breaks a lock.
fn bad_input(host: &Host) {
    let (inspect, force) = (host.slots.inspect.unwrap(), host.slots.force_release.unwrap());
    for slot in [inspect, force] {
        for bad in [&br#"{}"#[..], br#"{"if_fence":1}"#, br#"{"key":7}"#, br#"{"key":""}"#] {
            invalid_naming(&String::from_utf8_lossy(bad), host.call(slot, bad), "key");
        }
    }
    for bad in ["-1", "1.5", "\"3\"", "true", "18446744073709551616"] {
        let request = format!(r#"{{"key":"abi-k","if_fence":{bad}}}"#);
        invalid_naming(&request, host.call(force, request.as_bytes()), "if_fence");
    }
    let long = format!(r#"{{"key":"abi-k","ttl_ms":30000,"owner":"{}"}}"#, "o".repeat(257));
    invalid_naming("long owner", host.call(host.slots.try_lock, long.as_bytes()), "owner");
}

/// A lock taken with an owner: inspect shows it (never the lock_id) and
/// force release breaks it, or both answer `ERR_UNSUPPORTED` with a reason.
fn round_trip(host: &Host, supported: bool) {
    let (status, handle) =
        host.call(host.slots.try_lock, br#"{"key":"abi-k","ttl_ms":30000,"owner":"abi owner"}"#);
    assert_eq!(status, BEXT_LOCKING_OK, "{handle:?}");
    let handle: Value = serde_json::from_str(&handle.unwrap()).unwrap();
    let lock_id = handle["lock_id"].as_str().unwrap().to_owned();
    let (status, info) = host.call(host.slots.inspect.unwrap(), br#"{"key":"abi-k"}"#);
    let (fstatus, broke) = host.call(host.slots.force_release.unwrap(), br#"{"key":"abi-k"}"#);
    if !supported {
        for (status, out) in [(status, info), (fstatus, broke)] {
            assert_eq!(status, BEXT_LOCKING_ERR_UNSUPPORTED, "{out:?}");
            let json: Value = serde_json::from_str(&out.unwrap()).unwrap();
            assert_eq!(json["code"], "unsupported");
            assert!(json["message"].as_str().unwrap().contains("lease mode"), "{json}");
        }
        let release = serde_json::to_vec(&handle).unwrap();
        assert_eq!(host.call(host.slots.release, &release).0, BEXT_LOCKING_OK);
        return;
    }
    assert_eq!(status, BEXT_LOCKING_OK);
    let text = info.unwrap();
    assert!(!text.contains(&lock_id) && !text.contains("lock_id"), "{text}");
    let info: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((&info["held"], &info["owner"]), (&Value::Bool(true), &Value::from("abi owner")));
    assert_eq!(fstatus, BEXT_LOCKING_OK, "{broke:?}");
    let broke: Value = serde_json::from_str(&broke.unwrap()).unwrap();
    assert_eq!(broke["released"], true);
    assert_eq!(broke.get("fence"), handle.get("fence"));
    let renew = serde_json::to_vec(&handle).unwrap();
    assert_ne!(host.call(host.slots.renew, &renew).0, BEXT_LOCKING_OK, "broken holder renewed");
}

#[test]
fn redis_single_node() {
    let server = redis::Server::start();
    let host = Host::new("redis", &redis::single_config(&server, ""));
    bad_input(&host);
    round_trip(&host, true);
}

#[test]
fn redis_quorum() {
    let nodes = redis::servers(3);
    let host = Host::new("redis", &redis::quorum_config(&nodes, ""));
    bad_input(&host);
    round_trip(&host, true);
}

fn pg_config(mode: &str) -> String {
    // One fixed schema, created once and reused, so runs leave nothing new.
    serde_json::json!({
        "url": bext_locking_test_support::pg_url(),
        "mode": mode,
        "schema": "bext_abi_slots",
        "table": "locks",
    })
    .to_string()
}

#[test]
fn pg_lease_mode() {
    let host = Host::new("pg", &pg_config("lease"));
    bad_input(&host);
    round_trip(&host, true);
}

#[test]
fn pg_advisory_mode() {
    let config =
        serde_json::json!({"url": bext_locking_test_support::pg_url(), "mode": "advisory"});
    let host = Host::new("pg", &config.to_string());
    bad_input(&host);
    round_trip(&host, false);
}

#[test]
fn etcd_single_member() {
    let cluster = etcd::Cluster::single();
    let host = Host::new("etcd", &etcd::config(&cluster.endpoints_json(), 5_000));
    bad_input(&host);
    round_trip(&host, true);
}
