//! `create` with arbitrary config bytes, for each backend.
//!
//! Input: a flags byte, then the config. Flags: bit 0 the backend (memory,
//! sqlite), bit 1 [`expand`] the config, bit 2 pass NULL instead (which
//! means `{}`), bit 3 a NULL `out_instance`, bit 4 a NULL `out_error_json`.
//! A sqlite config's `path` is confined to the sandbox first.
//!
//! Checks: the answer obeys the ABI ([`check_output`]); a config the
//! independent parser finds bad gets ERR_INVALID and no instance, a good
//! one gets an instance that locks, releases, cleans up and then refuses
//! calls with ERR_BACKEND.

#![no_main]

use bext_locking_ffi::{BEXT_LOCKING_ERR_BACKEND, BEXT_LOCKING_ERR_INVALID, BEXT_LOCKING_OK};
use bext_locking_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let backend = input.backend;
    let plugin = backend.plugin();
    sandbox().tick();
    let config: Option<Vec<u8>> = if input.flags & 4 != 0 {
        None
    } else {
        Some(match backend {
            Backend::Memory => c_text(&input.bytes).to_vec(),
            Backend::Sqlite => sandbox().confine(&input.bytes),
        })
    };
    let shown = config.as_deref().map_or_else(|| "NULL".to_owned(), preview);
    let what = || format!("{} create with {shown}", backend.name());

    if input.flags & 0x18 != 0 {
        // A NULL out-parameter is refused before anything is parsed.
        let created = plugin.create_with_null_out(config.as_deref(), input.flags & 8 == 0);
        expect_status(&created.output, &[BEXT_LOCKING_ERR_INVALID], &what);
        assert!(created.output.cleared && created.output.json.is_none(), "{}", what());
        assert!(created.instance_cleared && created.instance.is_none(), "{}", what());
        return;
    }

    let created = plugin.create(config.as_deref());
    check_output(Call::Create, &created.output, &what);
    assert!(created.instance_cleared, "*out_instance not cleared; {}", what());
    let effective = config.as_deref().unwrap_or(b"{}");
    let verdict = match backend {
        Backend::Memory => memory_config(effective),
        Backend::Sqlite => sqlite_config(effective),
    };
    match verdict {
        Err(why) => {
            expect_status(&created.output, &[BEXT_LOCKING_ERR_INVALID], &|| {
                format!("{} (bad config: {why})", what())
            });
            assert!(created.instance.is_none(), "an instance despite an error; {}", what());
        }
        Ok(()) => {
            expect_status(&created.output, &[BEXT_LOCKING_OK], &what);
            let instance = created.instance.expect("OK without an instance");
            exercise(backend, &instance, &what);
        }
    }
});

/// A fresh instance locks and releases; after cleanup every call is
/// ERR_BACKEND.
fn exercise(backend: Backend, instance: &RawInstance, what: &dyn Fn() -> String) {
    let key = format!("fuzz/create/{}/{}", std::process::id(), next_run());
    let req = Request { key: key.clone(), ttl_ms: CERTAIN_TTL_MS };
    let out = instance.call(RawSlot::TryLock, Some(&request_json(&key, CERTAIN_TTL_MS)));
    check_output(Call::TryLock, &out, what);
    expect_status(&out, &[BEXT_LOCKING_OK], what);
    let json = out.json.expect("checked");
    let handle = check_handle(&json, &req, what);
    let out = instance.call(RawSlot::Release, Some(&json));
    check_output(Call::Release, &out, what);
    expect_status(&out, &[BEXT_LOCKING_OK], what);
    let out = instance.cleanup();
    check_output(Call::Cleanup, &out, what);
    expect_status(&out, &[BEXT_LOCKING_OK], what);
    for (slot, input) in [
        (RawSlot::TryLock, request_json(&key, CERTAIN_TTL_MS)),
        (RawSlot::Renew, handle_json(&handle)),
        (RawSlot::Release, handle_json(&handle)),
    ] {
        let out = instance.call(slot, Some(&input));
        check_output(slot.into(), &out, what);
        expect_status(&out, &[BEXT_LOCKING_ERR_BACKEND], &|| {
            format!("{slot:?} after cleanup on {}; {}", backend.name(), what())
        });
    }
}
