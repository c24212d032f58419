//! `renew` and `release` with arbitrary handle bytes, next to a lock that a
//! valid handle holds, for each backend.
//!
//! Each input first takes `fuzz/held` with a long TTL. In the handle bytes,
//! `$ID` stands for that lock's id and `$UID` for it in upper case, so that
//! mutations of a real handle are reached. Input: a flags byte, then the
//! handle. Flags: bit 0 the backend, bit 1 [`expand`] the handle, bit 2 the
//! slot (renew, release), bit 3 then call the other slot with the same
//! bytes, bits 4-5 the call: 0 as is, 1 with a NULL instance, 2 with a NULL
//! `out_json`, 3 with a NULL handle.
//!
//! Checks: the answer obeys the ABI; a handle the independent parser finds
//! bad is ERR_INVALID; renew is OK only with the held lock's key and id,
//! ERR_BACKEND otherwise (never re-acquiring); release is always OK and frees
//! the key only when key and id are the held lock's; afterwards the key is
//! held or free exactly as that says.

#![no_main]

use bext_locking_ffi::{
    BEXT_LOCKING_CONTENDED, BEXT_LOCKING_ERR_BACKEND, BEXT_LOCKING_ERR_INVALID, BEXT_LOCKING_OK,
};
use bext_locking_fuzz::*;
use libfuzzer_sys::fuzz_target;

const HELD: &str = "fuzz/held";

/// Whether `fuzz/held` is still held by the first lock: `None` once a renew
/// gave it a TTL short enough to expire during the input.
type Held = Option<bool>;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let backend = input.backend;
    let (first, second) = if input.flags & 4 == 0 {
        (RawSlot::Renew, RawSlot::Release)
    } else {
        (RawSlot::Release, RawSlot::Renew)
    };
    with_kept(backend, |instance| {
        let what0 = || format!("{} taking {HELD}", backend.name());
        let out = instance.call(RawSlot::TryLock, Some(&request_json(HELD, CERTAIN_TTL_MS)));
        expect_status(&out, &[BEXT_LOCKING_OK], &what0);
        let held_json = out.json.expect("checked");
        let held = parse_handle(&held_json).expect("a handle");

        // Bounded: `$ID` in a 3 MiB expansion would make 36 MiB.
        let bytes = if input.bytes.len() <= 1 << 16 {
            let upper = held.lock_id.to_uppercase();
            let b = substitute(&input.bytes, b"$UID", upper.as_bytes());
            substitute(&b, b"$ID", held.lock_id.as_bytes())
        } else {
            input.bytes.to_vec()
        };
        let bytes = &bytes[..];
        let what = |slot: RawSlot| {
            move || format!("{} {slot:?} {}", backend.name(), preview(c_text(bytes)))
        };

        let mut state: Held = Some(true);
        match (input.flags >> 4) & 3 {
            1 => {
                let out = backend.plugin().call_without_instance(first, Some(bytes));
                check_output(first.into(), &out, &what(first));
                expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &what(first));
            }
            2 => {
                let status = instance.call_without_out(first, Some(bytes));
                assert_eq!(status, BEXT_LOCKING_ERR_INVALID, "NULL out_json; {}", what(first)());
            }
            3 => {
                let out = instance.call(first, None);
                check_output(first.into(), &out, &what(first));
                expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &what(first));
            }
            _ => {
                state = apply(backend, instance, &held, first, bytes, state, &what(first));
                if input.flags & 8 != 0 {
                    state = apply(backend, instance, &held, second, bytes, state, &what(second));
                }
            }
        }

        // The key is held or free exactly as the calls said.
        let probe = instance.call(RawSlot::TryLock, Some(&request_json(HELD, CERTAIN_TTL_MS)));
        let want: &[i32] = match state {
            Some(true) => &[BEXT_LOCKING_CONTENDED],
            Some(false) => &[BEXT_LOCKING_OK],
            None => &[BEXT_LOCKING_OK, BEXT_LOCKING_CONTENDED],
        };
        expect_status(&probe, want, &|| format!("probe after {}", what(first)()));
        for json in [probe.json.as_deref(), Some(&held_json[..])].into_iter().flatten() {
            let out = instance.call(RawSlot::Release, Some(json));
            expect_status(&out, &[BEXT_LOCKING_OK], &what0);
        }
    });
});

fn apply(
    backend: Backend,
    instance: &RawInstance,
    held: &Handle,
    slot: RawSlot,
    bytes: &[u8],
    state: Held,
    what: &dyn Fn() -> String,
) -> Held {
    let out = instance.call(slot, Some(bytes));
    check_output(slot.into(), &out, what);
    let h = match parse_handle(bytes) {
        Err(why) => {
            expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &|| {
                format!("{} (bad handle: {why})", what())
            });
            return state;
        }
        Ok(h) => h,
    };
    let ours = h.key == held.key && backend.same_lock_id(&h.lock_id, &held.lock_id);
    let certain = h.ttl_ms >= CERTAIN_TTL_MS;
    match slot {
        RawSlot::Renew if !ours => {
            expect_status(&out, &[BEXT_LOCKING_ERR_BACKEND], what);
            state
        }
        RawSlot::Renew => match state {
            Some(true) => {
                expect_status(&out, &[BEXT_LOCKING_OK], what);
                certain.then_some(true)
            }
            Some(false) => {
                expect_status(&out, &[BEXT_LOCKING_ERR_BACKEND], what);
                state
            }
            None => {
                expect_status(&out, &[BEXT_LOCKING_OK, BEXT_LOCKING_ERR_BACKEND], what);
                if out.status == BEXT_LOCKING_OK { certain.then_some(true) } else { Some(false) }
            }
        },
        RawSlot::Release => {
            expect_status(&out, &[BEXT_LOCKING_OK], what);
            if ours { Some(false) } else { state }
        }
        RawSlot::TryLock => unreachable!("renew and release only"),
    }
}
