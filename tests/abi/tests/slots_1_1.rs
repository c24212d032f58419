//! The ABI 1.1 slots of a real plugin, called as a C host calls them: NULL
//! pointers, malformed input and every bad field give `ERR_INVALID`
//! naming the problem; `inspect` never shows the lock_id; `stats` has the
//! documented shape and answers after `cleanup`.

use std::ffi::{CStr, CString, c_char};
use std::ptr;

use bext_locking_abi_tests::plugin;
use bext_locking_ffi::{
    BEXT_LOCKING_CONTENDED, BEXT_LOCKING_ERR_INVALID, BEXT_LOCKING_OK, BextLockingInstance,
};
use bext_locking_loader::{CallFn, Slots, load};
use serde_json::Value;

struct Host {
    slots: Slots,
    instance: *mut BextLockingInstance,
}

impl Host {
    fn new(config: &str) -> Self {
        let slots = load(plugin("memory")).unwrap().slots();
        let config = CString::new(config).unwrap();
        let mut instance = ptr::null_mut();
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: valid NUL-terminated input and out-parameters.
        let status = unsafe { (slots.create)(config.as_ptr(), &mut instance, &mut err) };
        assert_eq!(status, BEXT_LOCKING_OK);
        Self { slots, instance }
    }

    /// Copies and frees a plugin string.
    fn take(&self, out: *mut c_char) -> Option<String> {
        if out.is_null() {
            return None;
        }
        // SAFETY: a live string this plugin returned, freed once.
        let text = unsafe { CStr::from_ptr(out) }.to_string_lossy().into_owned();
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

    fn stats(&self) -> (i32, Option<String>) {
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: live instance, valid out-parameter.
        let status = unsafe { (self.slots.stats.unwrap())(self.instance, &mut out) };
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

#[test]
fn null_pointers_are_invalid_and_write_nothing() {
    let host = Host::new("{}");
    let s = host.slots;
    for (name, slot) in
        [("inspect", s.inspect.unwrap()), ("force_release", s.force_release.unwrap())]
    {
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: NULL instance and input are what the slot must refuse.
        let status = unsafe { slot(ptr::null_mut(), c"{\"key\":\"k\"}".as_ptr(), &mut out) };
        invalid_naming(name, (status, host.take(out)), "instance is NULL");
        // SAFETY: as above.
        let status = unsafe { slot(host.instance, ptr::null(), &mut out) };
        invalid_naming(name, (status, host.take(out)), "request_json is NULL");
        // SAFETY: a NULL out-parameter must be refused without writing.
        let status = unsafe { slot(host.instance, c"{\"key\":\"k\"}".as_ptr(), ptr::null_mut()) };
        assert_eq!(status, BEXT_LOCKING_ERR_INVALID, "{name}");
    }
    let stats = s.stats.unwrap();
    let mut out: *mut c_char = ptr::null_mut();
    // SAFETY: as above.
    let status = unsafe { stats(ptr::null_mut(), &mut out) };
    invalid_naming("stats", (status, host.take(out)), "instance is NULL");
    // SAFETY: as above.
    assert_eq!(unsafe { stats(host.instance, ptr::null_mut()) }, BEXT_LOCKING_ERR_INVALID);
}

#[test]
fn bad_fields_are_invalid_naming_the_field() {
    let host = Host::new("{}");
    let (inspect, force) = (host.slots.inspect.unwrap(), host.slots.force_release.unwrap());
    for slot in [inspect, force] {
        for bad in [&br#"{}"#[..], br#"{"key":7}"#, br#"{"key":null}"#, br#"{"key":""}"#] {
            invalid_naming(&String::from_utf8_lossy(bad), host.call(slot, bad), "key");
        }
        invalid_naming("not JSON", host.call(slot, b"{nope"), "request_json");
        invalid_naming("an array", host.call(slot, br#"["k"]"#), "JSON object");
        invalid_naming("bad UTF-8", host.call(slot, b"{\"key\":\"\xff\"}"), "UTF-8");
    }
    for bad in ["-1", "1.5", "\"3\"", "null", "true", "18446744073709551616"] {
        let request = format!(r#"{{"key":"k","if_fence":{bad}}}"#);
        invalid_naming(&request, host.call(force, request.as_bytes()), "if_fence");
    }
    let try_lock = host.slots.try_lock;
    let long = format!(r#"{{"key":"k","ttl_ms":1000,"owner":"{}"}}"#, "o".repeat(257));
    invalid_naming("long owner", host.call(try_lock, long.as_bytes()), "owner");
    invalid_naming(
        "owner not a string",
        host.call(try_lock, br#"{"key":"k","ttl_ms":1000,"owner":5}"#),
        "owner",
    );
    invalid_naming(
        "owner not UTF-8",
        host.call(try_lock, b"{\"key\":\"k\",\"ttl_ms\":1000,\"owner\":\"a\xffb\"}"),
        "owner",
    );
    invalid_naming(
        "owner a lone surrogate",
        host.call(try_lock, br#"{"key":"k","ttl_ms":1000,"owner":"\ud800"}"#),
        "owner",
    );
    // None of these took the lock.
    let (status, _) = host.call(try_lock, br#"{"key":"k","ttl_ms":1000,"owner":null}"#);
    assert_eq!(status, BEXT_LOCKING_OK);
}

#[test]
fn inspect_shows_owner_fence_and_times_but_never_the_lock_id() {
    let host = Host::new("{}");
    let request = br#"{"ttl_ms":30000,"owner":"ops \"night\"","key":"jobs/nightly"}"#;
    let (status, handle) = host.call(host.slots.try_lock, request);
    assert_eq!(status, BEXT_LOCKING_OK);
    let handle: Value = serde_json::from_str(&handle.unwrap()).unwrap();
    let lock_id = handle["lock_id"].as_str().unwrap();
    let (status, info) = host.call(host.slots.inspect.unwrap(), br#"{"key":"jobs/nightly"}"#);
    assert_eq!(status, BEXT_LOCKING_OK);
    let text = info.unwrap();
    assert!(!text.contains(lock_id) && !text.contains("lock_id"), "{text}");
    let info: Value = serde_json::from_str(&text).unwrap();
    // serde_json's maps are sorted.
    let keys: Vec<&str> = info.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["expires_in_ms", "fence", "held", "held_for_ms", "key", "owner"]);
    assert_eq!(
        (&info["held"], &info["owner"], &info["fence"]),
        (&Value::Bool(true), &Value::from("ops \"night\""), &handle["fence"])
    );
    let (status, free) = host.call(host.slots.inspect.unwrap(), br#"{"key":"never"}"#);
    assert_eq!(
        (status, free.as_deref()),
        (BEXT_LOCKING_OK, Some(r#"{"key":"never","held":false}"#))
    );
    let (status, _) = host.call(host.slots.try_lock, br#"{"key":"jobs/nightly","ttl_ms":5}"#);
    assert_eq!(status, BEXT_LOCKING_CONTENDED);
}

#[test]
fn stats_have_the_documented_shape_and_outlive_cleanup() {
    let host = Host::new("{}");
    let (status, _) = host.call(host.slots.try_lock, br#"{"key":"k","ttl_ms":1000}"#);
    assert_eq!(status, BEXT_LOCKING_OK);
    let (status, _) = host.call(host.slots.try_lock, br#"{"key":"k","ttl_ms":1000}"#);
    assert_eq!(status, BEXT_LOCKING_CONTENDED);
    let (status, broke) = host.call(host.slots.force_release.unwrap(), br#"{"key":"k"}"#);
    assert_eq!(status, BEXT_LOCKING_OK);
    let broke: Value = serde_json::from_str(&broke.unwrap()).unwrap();
    assert_eq!(broke, serde_json::json!({"released": true, "fence": 1}));
    let mut out: *mut c_char = ptr::null_mut();
    // SAFETY: live instance, valid out-parameter.
    assert_eq!(unsafe { (host.slots.cleanup)(host.instance, &mut out) }, BEXT_LOCKING_OK);
    let (status, stats) = host.stats();
    assert_eq!(status, BEXT_LOCKING_OK, "stats answers after cleanup");
    let stats: Value = serde_json::from_str(&stats.unwrap()).unwrap();
    let keys: Vec<&str> = stats.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "acquired",
            "contended",
            "errors",
            "force_released",
            "latency_us",
            "released",
            "renew_failures",
            "renewed",
        ]
    );
    assert_eq!(
        (&stats["acquired"], &stats["contended"], &stats["force_released"]),
        (&Value::from(1), &Value::from(1), &Value::from(1))
    );
    assert_eq!(
        stats["errors"],
        serde_json::json!({"invalid_argument":0,"backend":0,"panic":0,"unsupported":0})
    );
    let bounds: Vec<u64> = serde_json::from_value(stats["latency_us"]["bounds"].clone()).unwrap();
    assert_eq!(bounds, bext_locking::STATS_BUCKET_BOUNDS_US);
    for call in ["try_lock", "renew", "release"] {
        let counts = stats["latency_us"][call].as_array().unwrap();
        assert_eq!(counts.len(), bounds.len() + 1, "{call}");
    }
    let timed: u64 = stats["latency_us"]["try_lock"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(timed, 2);
}
