//! The ABI 1.1 slots `inspect`, `force_release` and `stats` with arbitrary
//! request bytes, next to a lock that a valid handle holds, for each
//! backend.
//!
//! Each input first takes `fuzz/held` with a long TTL and the owner
//! `fuzz-owner`. In the request bytes `$FENCE` stands for that lock's fence
//! and `$ID` for its lock id, so that a matching `if_fence` (and a request
//! trying to smuggle the lock id) are reached. Input: a flags byte, then
//! the request. Flags: bit 0 the backend, bit 1 [`expand`] the request,
//! bits 2-3 the call: 0 inspect, 1 force_release, 2 force_release then
//! inspect with the same bytes, 3 stats; bits 4-5 the way: 0 as is, 1 with
//! a NULL instance, 2 with a NULL `out_json`, 3 with a NULL request.
//!
//! Checks: the answer obeys the ABI; a request the independent parser finds
//! bad is ERR_INVALID; inspect of the held key shows it held, with its
//! fence and owner, and of any other key `held: false`; no answer ever
//! contains the lock id; force_release breaks exactly when the key is the
//! held one and `if_fence` is absent or its fence, and then the broken
//! handle's renew fails, its release is a no-op and the key is free; stats
//! is a stats object whose `acquired` counts the lock this input took.

#![no_main]

use bext_locking::{ForceReleased, LockInfo, Stats};
use bext_locking_ffi::{
    BEXT_LOCKING_CONTENDED, BEXT_LOCKING_ERR_BACKEND, BEXT_LOCKING_ERR_INVALID, BEXT_LOCKING_OK,
};
use bext_locking_fuzz::*;
use bext_locking_raw::AdminSlot;
use libfuzzer_sys::fuzz_target;

const HELD: &str = "fuzz/held";
const OWNER: &str = "fuzz-owner";

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let backend = input.backend;
    with_kept(backend, |instance| {
        let what0 = || format!("{} taking {HELD}", backend.name());
        let before = stats(instance, &what0);
        let take = format!(r#"{{"key":"{HELD}","ttl_ms":{CERTAIN_TTL_MS},"owner":"{OWNER}"}}"#);
        let out = instance.call(RawSlot::TryLock, Some(take.as_bytes()));
        expect_status(&out, &[BEXT_LOCKING_OK], &what0);
        let held_json = out.json.expect("checked");
        let held = parse_handle(&held_json).expect("a handle");

        // Bounded: `$ID` in a 3 MiB expansion would make 36 MiB.
        let bytes = if input.bytes.len() <= 1 << 16 {
            let fence = held.fence.map(|f| f.to_string()).unwrap_or_else(|| "0".into());
            let b = substitute(&input.bytes, b"$FENCE", fence.as_bytes());
            substitute(&b, b"$ID", held.lock_id.as_bytes())
        } else {
            input.bytes.to_vec()
        };
        let bytes = &bytes[..];
        let what = |call: &'static str| {
            move || format!("{} {call} {}", backend.name(), preview(c_text(bytes)))
        };
        let slot = match (input.flags >> 2) & 3 {
            0 => Some(AdminSlot::Inspect),
            1 | 2 => Some(AdminSlot::ForceRelease),
            _ => None,
        };

        let mut still_held = true;
        match ((input.flags >> 4) & 3, slot) {
            (1, Some(slot)) => {
                let out = backend.plugin().call_admin_without_instance(slot, Some(bytes));
                let out = out.expect("1.1 slot");
                check_output(call_of(slot), &out, &what("NULL instance"));
                expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &what("NULL instance"));
            }
            (1, None) => {
                let out = backend.plugin().stats_without_instance().expect("stats slot");
                check_output(Call::Stats, &out, &what("stats NULL instance"));
                expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &what("stats NULL instance"));
            }
            (2, Some(slot)) => {
                let status = instance.call_admin_without_out(slot, Some(bytes)).expect("1.1 slot");
                assert_eq!(status, BEXT_LOCKING_ERR_INVALID, "NULL out_json; {}", what("call")());
            }
            (2, None) => {
                let status = instance.stats_without_out().expect("stats slot");
                assert_eq!(status, BEXT_LOCKING_ERR_INVALID, "stats NULL out_json");
            }
            (3, Some(slot)) => {
                let out = instance.call_admin(slot, None).expect("1.1 slot");
                check_output(call_of(slot), &out, &what("NULL request"));
                expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &what("NULL request"));
            }
            (_, Some(AdminSlot::Inspect)) => {
                inspect(instance, &held, bytes, true, &what("inspect"))
            }
            (_, Some(AdminSlot::ForceRelease)) => {
                still_held = force(instance, &held, &held_json, bytes, &what("force_release"));
                if (input.flags >> 2) & 3 == 2 {
                    inspect(instance, &held, bytes, still_held, &what("inspect after"));
                }
            }
            (_, None) => {
                let after = stats(instance, &what("stats"));
                assert!(
                    after.acquired > before.acquired,
                    "stats.acquired {} did not count this input's lock (before {}); {}",
                    after.acquired,
                    before.acquired,
                    what("stats")()
                );
            }
        }

        // The key is held or free exactly as the calls said.
        let probe = instance.call(RawSlot::TryLock, Some(&request_json(HELD, CERTAIN_TTL_MS)));
        let want = if still_held { BEXT_LOCKING_CONTENDED } else { BEXT_LOCKING_OK };
        expect_status(&probe, &[want], &|| format!("probe after {}", what("call")()));
        for json in [probe.json.as_deref(), Some(&held_json[..])].into_iter().flatten() {
            let out = instance.call(RawSlot::Release, Some(json));
            expect_status(&out, &[BEXT_LOCKING_OK], &what0);
        }
    });
});

fn call_of(slot: AdminSlot) -> Call {
    match slot {
        AdminSlot::Inspect => Call::Inspect,
        AdminSlot::ForceRelease => Call::ForceRelease,
    }
}

/// No answer shows the lock id, except inside the key the request named
/// (a key may contain any text, the lock id too, and answers echo it).
fn no_lock_id(json: &[u8], held: &Handle, key: Option<&str>, what: &dyn Fn() -> String) {
    let mut text = String::from_utf8_lossy(json).into_owned();
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        let escaped = serde_json::to_string(key).unwrap_or_default();
        text = text.replace(escaped.trim_matches('"'), "").replace(key, "");
    }
    assert!(!text.contains(&held.lock_id), "an answer shows the lock id: {text}; {}", what());
}

fn stats(instance: &RawInstance, what: &dyn Fn() -> String) -> Stats {
    let out = instance.stats().expect("stats slot");
    check_output(Call::Stats, &out, what);
    expect_status(&out, &[BEXT_LOCKING_OK], what);
    let json = out.json.expect("checked");
    serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("stats is not a stats object ({e}): {}", preview(&json)))
}

fn inspect(
    instance: &RawInstance,
    held: &Handle,
    bytes: &[u8],
    is_held: bool,
    what: &dyn Fn() -> String,
) {
    let out = instance.call_admin(AdminSlot::Inspect, Some(bytes)).expect("inspect slot");
    check_output(Call::Inspect, &out, what);
    if let Some(json) = &out.json {
        no_lock_id(json, held, parse_inspect(bytes).ok().as_deref(), what);
    }
    let key = match parse_inspect(bytes) {
        Err(why) => {
            expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &|| {
                format!("{} (bad: {why})", what())
            });
            return;
        }
        Ok(key) => key,
    };
    expect_status(&out, &[BEXT_LOCKING_OK], what);
    let json = out.json.expect("checked");
    let info: LockInfo = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("inspect answer ({e}): {}; {}", preview(&json), what()));
    assert_eq!(info.key, key, "inspect answered another key; {}", what());
    if key == HELD && is_held {
        assert!(info.held, "the held key shows free: {}; {}", preview(&json), what());
        assert_eq!(info.fence, held.fence, "fence; {}", what());
        assert_eq!(info.owner.as_deref(), Some(OWNER), "owner; {}", what());
        assert!(info.expires_in_ms.is_some_and(|ms| ms <= CERTAIN_TTL_MS), "{}", what());
    } else {
        assert!(!info.held, "a free key shows held: {}; {}", preview(&json), what());
    }
}

/// Returns whether the key is still held afterwards.
fn force(
    instance: &RawInstance,
    held: &Handle,
    held_json: &[u8],
    bytes: &[u8],
    what: &dyn Fn() -> String,
) -> bool {
    let out = instance.call_admin(AdminSlot::ForceRelease, Some(bytes)).expect("force_release");
    check_output(Call::ForceRelease, &out, what);
    if let Some(json) = &out.json {
        let key = parse_break(bytes).ok().map(|r| r.key.clone());
        no_lock_id(json, held, key.as_deref(), what);
    }
    let req = match parse_break(bytes) {
        Err(why) => {
            expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &|| {
                format!("{} (bad: {why})", what())
            });
            return true;
        }
        Ok(req) => req,
    };
    expect_status(&out, &[BEXT_LOCKING_OK], what);
    let json = out.json.expect("checked");
    let done: ForceReleased = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("force_release answer ({e}): {}; {}", preview(&json), what()));
    let breaks = req.key == HELD && req.if_fence.is_none_or(|f| Some(f) == held.fence);
    assert_eq!(done.released, breaks, "released: {}; {}", preview(&json), what());
    if !breaks {
        return true;
    }
    assert_eq!(done.fence, held.fence, "the broken holder's fence; {}", what());
    // The broken holder: renew fails, release is a no-op.
    let renew = instance.call(RawSlot::Renew, Some(held_json));
    check_output(Call::Renew, &renew, what);
    expect_status(&renew, &[BEXT_LOCKING_ERR_BACKEND], &|| {
        format!("renew after break: {}", what())
    });
    let release = instance.call(RawSlot::Release, Some(held_json));
    expect_status(&release, &[BEXT_LOCKING_OK], &|| format!("release after break: {}", what()));
    false
}
