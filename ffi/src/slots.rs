//! The `extern "C"` functions behind every vtable slot.
//!
//! Each slot is generic over the backend's [`Export`] and is instantiated in
//! the backend's own crate by `export_locking_plugin!`. Every one of them
//! checks its pointers, clears its out-parameter, catches panics, and turns
//! the outcome into a status code plus optional plugin-owned JSON.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use bext_locking::{ErrorKind, LockHandle, LockingPlugin, PluginError};
use bext_locking_kit::{Backend, Plugin};

use crate::abi::*;
use crate::clock;
use crate::export::Export;
use crate::json::{
    CancelRequest, ForceRequest, KeyRequest, LockRequest, OwnerProbe, RenewForRequest, WaitRequest,
    error_json,
};
use crate::stats::{Call, Counters};
use crate::status::status_of;
use crate::waits::WaitIds;

/// What an instance pointer points to: the kit's wrapper around the backend,
/// which checks every request before the backend sees it, and the
/// instance's statistics.
pub(crate) struct Instance<E: Export> {
    plugin: Plugin<E::Backend>,
    counters: Counters,
    waits: WaitIds,
}

/// What a slot body produced, before it is written to the out-parameter.
enum Done {
    /// OK with a JSON payload.
    Payload(Json),
    /// OK with nothing to return.
    Empty,
    /// `try_lock` found the key held, or `lock_wait` timed out.
    Contended,
    /// `lock_wait` was cancelled.
    Cancelled,
}

/// A failed call: its status code and error object.
struct Failure {
    status: i32,
    json: String,
}

impl Failure {
    fn invalid(message: &str) -> Self {
        Self::of(ErrorKind::InvalidArgument, message)
    }

    /// The status code and error object of a failure of `kind`.
    fn of(kind: ErrorKind, message: &str) -> Self {
        // Also for messages that were never a `PluginError` (panics, the
        // string-typed trait): no error leaves a plugin with a 10 MB word.
        let message = bext_locking::limits::shorten_values(message);
        Self { status: status_of(kind), json: error_json(kind, &message) }
    }

    fn panic(payload: Box<dyn Any + Send>) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a non-string payload");
        Self::of(ErrorKind::Panic, &format!("the plugin panicked: {what}"))
    }
}

impl From<PluginError> for Failure {
    fn from(e: PluginError) -> Self {
        Self::of(e.kind, &e.message)
    }
}

type SlotResult = Result<Done, Failure>;

/// Hands JSON to the caller as a plugin-owned C string. `Nul` buffers
/// already end in their terminator (see [`crate::wire`]).
fn into_c(json: Json) -> *mut c_char {
    match json {
        // JSON never holds a raw NUL (it is escaped as \u0000), so this only
        // fails if an invariant broke; degrade to NULL rather than panic.
        Json::Text(s) => CString::new(s).map_or(ptr::null_mut(), CString::into_raw),
        // `wire` appends the one NUL; checking costs one scan, and a broken
        // invariant then degrades to NULL instead of a truncated string.
        Json::Nul(v) => CString::from_vec_with_nul(v).map_or(ptr::null_mut(), CString::into_raw),
    }
}

/// A JSON payload: built by serde_json, or NUL-terminated by `wire`.
enum Json {
    Text(String),
    Nul(Vec<u8>),
}

/// Runs a slot body behind the panic boundary and writes its outcome to
/// `out`, which must already have been checked for NULL and cleared.
fn finish(out: *mut *mut c_char, body: impl FnOnce() -> SlotResult) -> i32 {
    let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|p| Err(Failure::panic(p)));
    let (status, text) = match result {
        Ok(Done::Payload(json)) => (BEXT_LOCKING_OK, Some(json)),
        Ok(Done::Empty) => (BEXT_LOCKING_OK, None),
        Ok(Done::Contended) => (BEXT_LOCKING_CONTENDED, None),
        Ok(Done::Cancelled) => (BEXT_LOCKING_CANCELLED, None),
        Err(f) => (f.status, Some(Json::Text(f.json))),
    };
    if let Some(text) = text {
        // SAFETY: `out` was checked non-NULL by `clear_out`, and the caller
        // promises it points to a writable `char *`.
        unsafe { *out = into_c(text) };
    }
    status
}

/// Checks an out-parameter and sets `*out = NULL`, as the ABI requires on
/// entry. Returns false when `out` itself is NULL.
fn clear_out<T>(out: *mut *mut T) -> bool {
    if out.is_null() {
        return false;
    }
    // SAFETY: non-NULL, and the caller promises it points to a writable
    // pointer-sized slot for the duration of the call.
    unsafe { *out = ptr::null_mut() };
    true
}

/// The whole life of a slot with one out-parameter: check and clear `out`
/// (a NULL `out` is an invalid argument, and the body does not run), then
/// [`finish`] the body.
fn slot(out: *mut *mut c_char, body: impl FnOnce() -> SlotResult) -> i32 {
    if !clear_out(out) {
        return BEXT_LOCKING_ERR_INVALID;
    }
    finish(out, body)
}

/// Borrows a NUL-terminated input string's bytes.
fn input_bytes<'a>(p: *const c_char, what: &str) -> Result<&'a [u8], Failure> {
    if p.is_null() {
        return Err(Failure::invalid(&format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and the ABI requires inputs to be NUL-terminated
    // strings that stay valid for the whole call.
    Ok(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// Borrows a NUL-terminated UTF-8 input string.
fn input<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    let bytes = input_bytes(p, what)?;
    std::str::from_utf8(bytes)
        .map_err(|e| Failure::invalid(&format!("{what} is not valid UTF-8: {e}")))
}

/// Parses a JSON object input that the canonical fast path did not take.
fn parse_input<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    what: &str,
    shape: &str,
) -> Result<T, Failure> {
    // serde_json skips ignored fields without checking their UTF-8, and the
    // ABI makes any invalid UTF-8 an invalid argument: check it all first.
    let text = std::str::from_utf8(bytes)
        .map_err(|u| Failure::invalid(&format!("{what} is not valid UTF-8: {u}")))?;
    if let Some(at) = crate::json::raw_control_in_string(bytes) {
        return Err(Failure::invalid(&format!(
            "{what} is not {shape}: an unescaped control character (U+0000 to U+001F) in a \
             string at byte {at}"
        )));
    }
    // Derived impls also read a struct from a JSON array (`["k",1000]`);
    // the ABI's inputs are objects.
    if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
        return Err(Failure::invalid(&format!("{what} is not {shape}: expected a JSON object")));
    }
    serde_json::from_str(text).map_err(|e| Failure::invalid(&format!("{what} is not {shape}: {e}")))
}

/// The whole life of a counted slot: [`slot`], plus one count of its
/// outcome and its time in the instance's statistics. A NULL instance has
/// no statistics to count in.
fn counted<E: Export>(
    instance: *mut BextLockingInstance,
    out: *mut *mut c_char,
    call: Call,
    body: impl FnOnce(&Instance<E>) -> SlotResult,
) -> i32 {
    if cfg!(feature = "uncounted") {
        return slot(out, || body(plugin::<E>(instance)?));
    }
    let start = clock::start();
    let found = plugin::<E>(instance).ok();
    let status = slot(out, || body(found.ok_or_else(|| Failure::invalid("instance is NULL"))?));
    if let Some(instance) = found {
        instance.counters.record(call, status, clock::micros_since(start));
    }
    status
}

/// Parses a `try_lock` request that the canonical fast path did not take.
fn lock_request(bytes: &[u8]) -> Result<LockRequest<'_>, Failure> {
    if std::str::from_utf8(bytes).is_err() {
        let probe = serde_json::from_slice::<OwnerProbe>(bytes).ok().and_then(|p| p.owner);
        if probe.is_some_and(|owner| std::str::from_utf8(&owner).is_err()) {
            return Err(Failure::invalid(
                "request_json is not a lock request: owner is not valid UTF-8",
            ));
        }
    }
    parse_input::<LockRequest<'_>>(bytes, "request_json", "a lock request")
}

/// Borrows the backend behind an instance pointer.
fn plugin<'a, E: Export>(instance: *mut BextLockingInstance) -> Result<&'a Instance<E>, Failure> {
    if instance.is_null() {
        return Err(Failure::invalid("instance is NULL"));
    }
    // SAFETY: non-NULL instances are only ever made by `create::<E>` below
    // from `Box<Instance<E>>`, and stay valid until `destroy`, which the ABI
    // forbids from racing any other call on the instance.
    Ok(unsafe { &*(instance as *const Instance<E>) })
}

/// Parses a handle passed back by the host and runs `f` on it; the kit
/// checks its key and TTL.
///
/// A handle in canonical form (the usual case) is copied into this
/// thread's scratch handle, whose strings keep their allocations from call
/// to call, so `renew` and `release` allocate nothing for it. A call made
/// from inside `f` on the same thread, a thread whose locals are gone, and
/// strings longer than any valid handle has get a fresh handle instead
/// (the last so that no thread keeps a huge allocation).
fn with_handle(p: *const c_char, f: impl FnOnce(&LockHandle) -> SlotResult) -> SlotResult {
    thread_local! {
        static SCRATCH: RefCell<LockHandle> = const {
            RefCell::new(LockHandle { key: String::new(), lock_id: String::new(), ttl_ms: 0, fence: None })
        };
    }
    let bytes = input_bytes(p, "handle_json")?;
    let Some(fast) = crate::wire::parse_canonical_handle_ref(bytes) else {
        return f(&parse_input::<LockHandle>(bytes, "handle_json", "a lock handle")?);
    };
    if fast.key.len() > bext_locking::MAX_KEY_BYTES || fast.lock_id.len() > MAX_SCRATCH_LOCK_ID {
        return f(&fast.to_owned());
    }
    let mut f = Some(f);
    // Called at most once below: the scratch path returns `Some` when it ran.
    let mut run = |h: &LockHandle| f.take().map_or(Ok(Done::Empty), |f| f(h));
    let done = SCRATCH.try_with(|cell| {
        let mut h = cell.try_borrow_mut().ok()?;
        fast.write_into(&mut h);
        Some(run(&h))
    });
    match done {
        Ok(Some(done)) => done,
        _ => run(&fast.to_owned()),
    }
}

/// The longest `lock_id` the scratch handle takes: far above any backend's
/// (a UUID is 36 bytes), so only junk is copied into a fresh handle.
const MAX_SCRATCH_LOCK_ID: usize = 1024;

pub(crate) unsafe extern "C" fn describe<E: Export>(out_json: *mut *mut c_char) -> i32 {
    slot(out_json, || {
        let mut json = serde_json::json!({
            "name": E::NAME.to_string_lossy(),
            "version": E::VERSION.to_string_lossy(),
            "abi_version": BEXT_LOCKING_ABI_VERSION,
            "description": E::DESCRIPTION,
            "fencing": E::FENCING,
            "config_schema": bext_locking_kit::config::schema::<<E::Backend as Backend>::Config>(),
            "abi_minor": BEXT_LOCKING_ABI_MINOR,
            "capabilities": capabilities::<E>(),
        });
        if let Some(drift) = E::CLOCK_DRIFT {
            json["clock_drift"] = serde_json::json!(drift);
        }
        Ok(Done::Payload(Json::Text(json.to_string())))
    })
}

/// What `describe` lists: the backend's capabilities, then `"stats"`,
/// which this layer provides for every backend.
fn capabilities<E: Export>() -> Vec<&'static str> {
    let mut all = <E::Backend as Backend>::CAPABILITIES.to_vec();
    if !all.contains(&"stats") && !cfg!(feature = "uncounted") {
        all.push("stats");
    }
    all
}

pub(crate) unsafe extern "C" fn create<E: Export>(
    config_json: *const c_char,
    out_instance: *mut *mut BextLockingInstance,
    out_error_json: *mut *mut c_char,
) -> i32 {
    if !clear_out(out_instance) | !clear_out(out_error_json) {
        return BEXT_LOCKING_ERR_INVALID;
    }
    let mut made: *mut BextLockingInstance = ptr::null_mut();
    let status = finish(out_error_json, || {
        let text = if config_json.is_null() { "{}" } else { input(config_json, "config_json")? };
        let plugin = Plugin::<E::Backend>::from_json(text)?;
        let instance =
            Instance::<E> { plugin, counters: Counters::new(), waits: WaitIds::default() };
        made = Box::into_raw(Box::new(instance)) as *mut BextLockingInstance;
        Ok(Done::Empty)
    });
    // SAFETY: `out_instance` was checked non-NULL above.
    unsafe { *out_instance = made };
    status
}

pub(crate) unsafe extern "C" fn try_lock<E: Export>(
    instance: *mut BextLockingInstance,
    request_json: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    counted::<E>(instance, out_json, Call::TryLock, |instance| {
        let bytes = input_bytes(request_json, "request_json")?;
        let parsed;
        let (key, ttl_ms, owner) = match crate::wire::parse_canonical_owned_request(bytes) {
            Some(fast) => fast,
            None => {
                parsed = lock_request(bytes)?;
                (&*parsed.key, parsed.ttl_ms, parsed.owner.as_deref())
            }
        };
        match instance.plugin.try_lock_owned_typed(key, ttl_ms, owner)? {
            Some(h) => Ok(Done::Payload(Json::Nul(crate::wire::handle_json_nul(&h)))),
            None => Ok(Done::Contended),
        }
    })
}

pub(crate) unsafe extern "C" fn renew<E: Export>(
    instance: *mut BextLockingInstance,
    handle_json: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    counted::<E>(instance, out_json, Call::Renew, |instance| {
        with_handle(handle_json, |h| {
            instance.plugin.renew_typed(h)?;
            Ok(Done::Empty)
        })
    })
}

pub(crate) unsafe extern "C" fn release<E: Export>(
    instance: *mut BextLockingInstance,
    handle_json: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    counted::<E>(instance, out_json, Call::Release, |instance| {
        with_handle(handle_json, |h| {
            instance.plugin.release_typed(h)?;
            Ok(Done::Empty)
        })
    })
}

pub(crate) unsafe extern "C" fn inspect<E: Export>(
    instance: *mut BextLockingInstance,
    request_json: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    slot(out_json, || {
        let instance = plugin::<E>(instance)?;
        let bytes = input_bytes(request_json, "request_json")?;
        let request: KeyRequest<'_> = parse_input(bytes, "request_json", "an inspect request")?;
        let info = instance.plugin.inspect_typed(&request.key)?;
        Ok(Done::Payload(Json::Text(serde_json::to_string(&info).unwrap_or_default())))
    })
}

pub(crate) unsafe extern "C" fn force_release<E: Export>(
    instance: *mut BextLockingInstance,
    request_json: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    counted::<E>(instance, out_json, Call::ForceRelease, |instance| {
        let bytes = input_bytes(request_json, "request_json")?;
        let request: ForceRequest<'_> =
            parse_input(bytes, "request_json", "a force_release request")?;
        let done = instance.plugin.force_release_typed(&request.key, request.if_fence)?;
        if done.released {
            instance.counters.broke_one();
        }
        Ok(Done::Payload(Json::Text(serde_json::to_string(&done).unwrap_or_default())))
    })
}

pub(crate) unsafe extern "C" fn stats<E: Export>(
    instance: *mut BextLockingInstance,
    out_json: *mut *mut c_char,
) -> i32 {
    slot(out_json, || {
        let instance = plugin::<E>(instance)?;
        if cfg!(feature = "uncounted") {
            return Err(Failure::of(
                ErrorKind::Unsupported,
                "this build does not count statistics (feature `uncounted`, for benchmarks)",
            ));
        }
        let stats = instance.counters.snapshot();
        Ok(Done::Payload(Json::Text(serde_json::to_string(&stats).unwrap_or_default())))
    })
}

pub(crate) unsafe extern "C" fn lock_wait<E: Export>(
    instance: *mut BextLockingInstance,
    request_json: *const c_char,
    out_json: *mut *mut c_char,
    out_sent_ago_us: *mut u64,
) -> i32 {
    if !out_sent_ago_us.is_null() {
        // SAFETY: non-NULL, and the caller promises it points to a writable u64.
        unsafe { *out_sent_ago_us = 0 };
    }
    let mut sent = None;
    let status = slot(out_json, || {
        let instance = plugin::<E>(instance)?;
        let bytes = input_bytes(request_json, "request_json")?;
        let request: WaitRequest<'_> = parse_input(bytes, "request_json", "a lock_wait request")?;
        let wait_ms = request.wait_ms.ok_or_else(|| {
            Failure::invalid("request_json is not a lock_wait request: `wait_ms` is missing")
        })?;
        let wait = bext_locking::Wait::new(std::time::Duration::from_millis(wait_ms));
        let _registered = request.wait_id.map(|id| instance.waits.register(id, &wait));
        let got = instance.plugin.lock_wait_typed(
            &request.key,
            request.ttl_ms,
            request.owner.as_deref(),
            &wait,
        )?;
        match got {
            Some(acquired) => {
                sent = Some(acquired.sent);
                let json = crate::wire::handle_json_nul(&acquired.handle);
                Ok(Done::Payload(Json::Nul(json)))
            }
            None if wait.is_cancelled() => Ok(Done::Cancelled),
            None => Ok(Done::Contended),
        }
    });
    if let (Some(sent), false) = (sent, out_sent_ago_us.is_null()) {
        let ago = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        // SAFETY: checked non-NULL above; the caller promises it is writable.
        unsafe { *out_sent_ago_us = ago };
    }
    status
}

pub(crate) unsafe extern "C" fn cancel_wait<E: Export>(
    instance: *mut BextLockingInstance,
    request_json: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    slot(out_json, || {
        let instance = plugin::<E>(instance)?;
        let bytes = input_bytes(request_json, "request_json")?;
        let request: CancelRequest = parse_input(bytes, "request_json", "a cancel_wait request")?;
        let id = request.wait_id.ok_or_else(|| {
            Failure::invalid("request_json is not a cancel_wait request: `wait_id` is missing")
        })?;
        instance.waits.cancel(id);
        Ok(Done::Empty)
    })
}

pub(crate) unsafe extern "C" fn renew_for<E: Export>(
    instance: *mut BextLockingInstance,
    request_json: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    counted::<E>(instance, out_json, Call::Renew, |instance| {
        let bytes = input_bytes(request_json, "request_json")?;
        let request: RenewForRequest = parse_input(bytes, "request_json", "a renew_for request")?;
        instance.plugin.renew_for_typed(&request.handle, request.ttl_ms)?;
        Ok(Done::Empty)
    })
}

pub(crate) unsafe extern "C" fn cleanup<E: Export>(
    instance: *mut BextLockingInstance,
    out_json: *mut *mut c_char,
) -> i32 {
    slot(out_json, || {
        plugin::<E>(instance)?.plugin.cleanup();
        Ok(Done::Empty)
    })
}

pub(crate) unsafe extern "C" fn destroy<E: Export>(instance: *mut BextLockingInstance) {
    if instance.is_null() {
        return;
    }
    // SAFETY: the instance came from `Box::into_raw` in `create::<E>`, and the
    // ABI says `destroy` is called exactly once, with no call racing it.
    let boxed = unsafe { Box::from_raw(instance as *mut Instance<E>) };
    // A panic here has nowhere to be reported (destroy returns nothing); the
    // panic hook has already printed it, and unwinding must not cross `extern "C"`.
    let _ = catch_unwind(AssertUnwindSafe(move || {
        boxed.plugin.cleanup();
        drop(boxed);
    }));
}

pub(crate) unsafe extern "C" fn free_string(s: *mut c_char) {
    if s.is_null() {
        return;
    }
    // SAFETY: every string this plugin returns comes from `CString::into_raw`
    // in `into_c`, and the ABI gives it back here exactly once.
    drop(unsafe { CString::from_raw(s) });
}
