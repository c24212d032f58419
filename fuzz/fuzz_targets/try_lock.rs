//! `try_lock` with arbitrary request bytes, for each backend.
//!
//! Input: a flags byte, then the request. Flags: bit 0 the backend, bit 1
//! [`expand`] the request, bits 2-3 the call: 0 as is, 1 with a NULL
//! instance, 2 with a NULL `out_json`, 3 with a NULL request.
//!
//! Checks: the answer obeys the ABI; a request the independent parser finds
//! bad gets ERR_INVALID, never OK; a good one gets OK (every input releases
//! what it took, so nothing else holds the key) with a canonical handle for
//! that key and TTL; the same request again is CONTENDED (locks are not
//! reentrant); the handle releases the key.

#![no_main]

use bext_locking_ffi::{BEXT_LOCKING_CONTENDED, BEXT_LOCKING_ERR_INVALID, BEXT_LOCKING_OK};
use bext_locking_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let backend = input.backend;
    let bytes = &*input.bytes;
    let what = || format!("{} try_lock {}", backend.name(), preview(c_text(bytes)));
    with_kept(backend, |instance| match (input.flags >> 2) & 3 {
        1 => {
            let out = backend.plugin().call_without_instance(RawSlot::TryLock, Some(bytes));
            check_output(Call::TryLock, &out, &what);
            expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &what);
        }
        2 => {
            let status = instance.call_without_out(RawSlot::TryLock, Some(bytes));
            assert_eq!(status, BEXT_LOCKING_ERR_INVALID, "NULL out_json; {}", what());
            // Refused before anything happened: a good request still gets the key.
            if let Ok(req) = parse_request(bytes) {
                let out = instance.call(RawSlot::TryLock, Some(&request_json(&req.key, 1_000)));
                expect_status(&out, &[BEXT_LOCKING_OK], &what);
                release(instance, out.json.as_deref().unwrap_or_default(), &what);
            }
        }
        3 => {
            let out = instance.call(RawSlot::TryLock, None);
            check_output(Call::TryLock, &out, &what);
            expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &what);
        }
        _ => lock(instance, bytes, &what),
    });
});

fn lock(instance: &RawInstance, bytes: &[u8], what: &dyn Fn() -> String) {
    let out = instance.call(RawSlot::TryLock, Some(bytes));
    check_output(Call::TryLock, &out, what);
    let req = match parse_request(bytes) {
        Err(why) => {
            expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &|| {
                format!("{} (bad request: {why})", what())
            });
            return;
        }
        Ok(req) => req,
    };
    expect_status(&out, &[BEXT_LOCKING_OK], what);
    let json = out.json.expect("checked");
    check_handle(&json, &req, what);
    if req.ttl_ms >= CERTAIN_TTL_MS {
        let again = instance.call(RawSlot::TryLock, Some(bytes));
        check_output(Call::TryLock, &again, what);
        expect_status(&again, &[BEXT_LOCKING_CONTENDED], &|| format!("again: {}", what()));
    }
    release(instance, &json, what);
    // Released means free: the canonical request for the key gets it.
    let out = instance.call(RawSlot::TryLock, Some(&request_json(&req.key, CERTAIN_TTL_MS)));
    expect_status(&out, &[BEXT_LOCKING_OK], &|| format!("after release: {}", what()));
    release(instance, out.json.as_deref().unwrap_or_default(), what);
}

fn release(instance: &RawInstance, handle: &[u8], what: &dyn Fn() -> String) {
    let out = instance.call(RawSlot::Release, Some(handle));
    check_output(Call::Release, &out, what);
    expect_status(&out, &[BEXT_LOCKING_OK], &|| format!("release: {}", what()));
}
