//! Scripts of calls on two instances that share their locks, checked
//! against a model of who holds which key.
//!
//! The script (decoded with `arbitrary`) takes, renews and releases keys from
//! a fixed set (plain, multi-byte, escaped, with NULs, at the length limit
//! and past it), passes back real handles with forged fields, writes each
//! input in one of many forms (canonical, spaced, reordered, with unknown or
//! deeply nested or huge fields, escaped, duplicated, truncated, with a
//! flipped byte or an interior NUL), mixes in raw bytes, and cleans
//! instances up. Valid JSON reaches the deep paths; mutated JSON their edges.
//!
//! Each call's answer must obey the ABI and match the model: bad input is
//! ERR_INVALID; on a cleaned-up instance, ERR_BACKEND; a held key is
//! CONTENDED (to its holder too), a free one is taken with a fence above
//! every earlier fence of that key; renew succeeds only for the holder;
//! release always succeeds and frees only the holder's key.

#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use bext_locking_ffi::{
    BEXT_LOCKING_CONTENDED, BEXT_LOCKING_ERR_BACKEND, BEXT_LOCKING_ERR_INVALID,
    BEXT_LOCKING_MAX_TTL_MS, BEXT_LOCKING_OK,
};
use bext_locking_fuzz::*;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[derive(Arbitrary, Debug)]
struct Script {
    sqlite: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    TryLock { b: bool, key: u8, ttl: Ttl, form: Form },
    Renew { b: bool, handle: u8, forge: Forge, form: Form },
    Release { b: bool, handle: u8, forge: Forge, form: Form },
    Raw { b: bool, slot: u8, bytes: Vec<u8> },
    Cleanup { b: bool },
    Describe,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ttl {
    Long,
    Max,
    Short(u8),
    Zero,
    OverMax,
    Any(u64),
}

impl Ttl {
    fn ms(self) -> u64 {
        match self {
            Self::Long => CERTAIN_TTL_MS,
            Self::Max => BEXT_LOCKING_MAX_TTL_MS,
            Self::Short(n) => u64::from(n % 50) + 1,
            Self::Zero => 0,
            Self::OverMax => BEXT_LOCKING_MAX_TTL_MS + 1,
            Self::Any(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Forge {
    Same,
    OtherId,
    UpperId,
    SimpleId,
    EmptyId,
    OtherKey(u8),
    NoFence,
    NullFence,
    Fence(u64),
    Ttl(Ttl),
}

#[derive(Arbitrary, Debug)]
enum Form {
    Canonical,
    Spaced,
    Reversed,
    Unknown,
    Escaped,
    Duplicate,
    Deep(u32),
    Pad(u32),
    Truncate(u16),
    Flip(u16, u8),
    Nul(u16),
}

/// Keys that stress escaping, byte limits and C strings.
fn key(i: u8) -> String {
    match i % 14 {
        0 => "a".into(),
        1 => "b".into(),
        2 => "jobs/nightly".into(),
        3 => "ключ/€/🔒".into(),
        4 => "a\0b".into(),
        5 => "a\0c".into(),
        6 => "quote\"back\\slash\nnew\u{7f}\u{1}".into(),
        7 => "k".repeat(1024),
        8 => "é".repeat(512),
        9 => "x".repeat(1025),
        10 => String::new(),
        11 => "A".into(),
        12 => " a".into(),
        _ => "\u{feff}a".into(),
    }
}

/// At most this many input bytes per script, so one input stays quick.
const SCRIPT_BYTES: usize = 8 << 20;

fn escaped(s: &str) -> String {
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

/// Writes an object with `fields` (already JSON-encoded values) in `form`.
fn write(fields: &[(&str, Value)], form: &Form) -> Vec<u8> {
    let enc = |v: &Value| match (v, form) {
        (Value::String(s), Form::Escaped) => escaped(s),
        _ => v.to_string(),
    };
    let mut parts: Vec<String> =
        fields.iter().map(|(k, v)| format!("{}:{}", Value::from(*k), enc(v))).collect();
    let mut sep = ",";
    match form {
        Form::Spaced => {
            parts = fields
                .iter()
                .map(|(k, v)| format!(" \n\t{} :\r {} ", Value::from(*k), enc(v)))
                .collect();
            sep = ", ";
        }
        Form::Reversed => parts.reverse(),
        Form::Unknown => {
            parts.insert(0, r#""note":{"a":[1,2.5,-3e2,true,null,"\u00e9"],"key":7}"#.into());
            parts.push(r#""zz":{}"#.into());
        }
        Form::Duplicate => {
            let first = parts[0].clone();
            parts.push(first);
        }
        Form::Deep(n) => {
            let d = (*n % 100_000) as usize + 1;
            parts.push(format!("\"deep\":{}{}", "[".repeat(d), "]".repeat(d)));
        }
        Form::Pad(n) => {
            parts.push(format!("\"pad\":\"{}\"", "x".repeat((*n % (2 << 20)) as usize)));
        }
        _ => {}
    }
    let mut out = format!("{{{}}}", parts.join(sep)).into_bytes();
    match *form {
        Form::Truncate(n) => out.truncate(usize::from(n) % out.len()),
        Form::Flip(at, byte) => {
            let at = usize::from(at) % out.len();
            out[at] = byte;
        }
        Form::Nul(at) => out.insert(usize::from(at) % out.len(), 0),
        _ => {}
    }
    out
}

fn request(key: &str, ttl_ms: u64, form: &Form) -> Vec<u8> {
    write(&[("key", key.into()), ("ttl_ms", ttl_ms.into())], form)
}

fn handle(h: &Handle, forge: &Forge, form: &Form) -> Vec<u8> {
    let mut key = h.key.clone();
    let mut lock_id = h.lock_id.clone();
    let mut ttl = h.ttl_ms;
    let mut fence = h.fence.map(Value::from);
    match forge {
        Forge::Same => {}
        Forge::OtherId => lock_id = "00000000-0000-4000-8000-000000000000".into(),
        Forge::UpperId => lock_id = lock_id.to_uppercase(),
        Forge::SimpleId => lock_id = lock_id.replace('-', ""),
        Forge::EmptyId => lock_id.clear(),
        Forge::OtherKey(k) => key = self::key(*k),
        Forge::NoFence => fence = None,
        Forge::NullFence => fence = Some(Value::Null),
        Forge::Fence(f) => fence = Some((*f).into()),
        Forge::Ttl(t) => ttl = t.ms(),
    }
    let mut fields = vec![("key", key.into()), ("lock_id", lock_id.into()), ("ttl_ms", ttl.into())];
    if let Some(f) = fence {
        fields.push(("fence", f));
    }
    write(&fields, form)
}

struct Holder {
    lock_id: String,
    /// False when its TTL may run out while the script runs.
    certain: bool,
}

struct Model {
    backend: Backend,
    instances: [RawInstance; 2],
    closed: [bool; 2],
    holders: HashMap<String, Holder>,
    last_fence: HashMap<String, u64>,
    issued: Vec<Handle>,
}

impl Model {
    fn apply(&mut self, i: usize, slot: RawSlot, bytes: &[u8]) {
        let backend = self.backend;
        let what = || format!("{} instance {i} {slot:?} {}", backend.name(), preview(bytes));
        let out = self.instances[i].call(slot, Some(bytes));
        check_output(slot.into(), &out, &what);
        let bad = |why: Malformed| {
            expect_status(&out, &[BEXT_LOCKING_ERR_INVALID], &|| format!("{} ({why})", what()));
        };
        if slot == RawSlot::TryLock {
            let req = match parse_request(bytes) {
                Err(why) => return bad(why),
                Ok(req) => req,
            };
            if self.closed[i] {
                return expect_status(&out, &[BEXT_LOCKING_ERR_BACKEND], &what);
            }
            let want: &[i32] = match self.holders.get(&req.key) {
                Some(h) if h.certain => &[BEXT_LOCKING_CONTENDED],
                Some(_) => &[BEXT_LOCKING_OK, BEXT_LOCKING_CONTENDED],
                None => &[BEXT_LOCKING_OK],
            };
            expect_status(&out, want, &what);
            if out.status != BEXT_LOCKING_OK {
                return;
            }
            let h = check_handle(out.json.as_deref().unwrap_or_default(), &req, &what);
            let fence = h.fence.unwrap_or_default();
            if let Some(&last) = self.last_fence.get(&req.key) {
                assert!(fence > last, "fence {fence} after {last}; {}", what());
            }
            self.last_fence.insert(req.key.clone(), fence);
            let certain = req.ttl_ms >= CERTAIN_TTL_MS;
            self.holders.insert(req.key, Holder { lock_id: h.lock_id.clone(), certain });
            self.issued.push(h);
            return;
        }
        let h = match parse_handle(bytes) {
            Err(why) => return bad(why),
            Ok(h) => h,
        };
        if self.closed[i] {
            return expect_status(&out, &[BEXT_LOCKING_ERR_BACKEND], &what);
        }
        let holder = self.holders.get(&h.key);
        let ours = holder.is_some_and(|o| backend.same_lock_id(&h.lock_id, &o.lock_id));
        if slot == RawSlot::Release {
            expect_status(&out, &[BEXT_LOCKING_OK], &what);
            if ours {
                self.holders.remove(&h.key);
            }
            return;
        }
        match holder {
            Some(o) if ours && o.certain => expect_status(&out, &[BEXT_LOCKING_OK], &what),
            Some(_) if ours => {
                expect_status(&out, &[BEXT_LOCKING_OK, BEXT_LOCKING_ERR_BACKEND], &what)
            }
            _ => return expect_status(&out, &[BEXT_LOCKING_ERR_BACKEND], &what),
        }
        if out.status == BEXT_LOCKING_OK {
            let certain = h.ttl_ms >= CERTAIN_TTL_MS;
            self.holders.get_mut(&h.key).expect("ours").certain = certain;
        } else {
            self.holders.remove(&h.key); // it had expired
        }
    }

    fn cleanup(&mut self, i: usize) {
        let what = || format!("{} cleanup of instance {i}", self.backend.name());
        let out = self.instances[i].cleanup();
        check_output(Call::Cleanup, &out, &what);
        let want: &[i32] = if self.closed[i] {
            &[BEXT_LOCKING_OK, BEXT_LOCKING_ERR_BACKEND]
        } else {
            &[BEXT_LOCKING_OK]
        };
        expect_status(&out, want, &what);
        self.closed[i] = true;
    }
}

fuzz_target!(|script: Script| {
    let backend = if script.sqlite { Backend::Sqlite } else { Backend::Memory };
    let plugin = backend.plugin();
    sandbox().tick();
    let config = backend.shared_config(next_run());
    let make = || {
        let created = plugin.create(Some(&config));
        created.instance.unwrap_or_else(|| panic!("create: {}", message(&created.output)))
    };
    let mut model = Model {
        backend,
        instances: [make(), make()],
        closed: [false; 2],
        holders: HashMap::new(),
        last_fence: HashMap::new(),
        issued: Vec::new(),
    };
    let mut budget = SCRIPT_BYTES;
    for op in script.ops.iter().take(64) {
        let (b, slot, bytes) = match op {
            Op::TryLock { b, key: k, ttl, form } => {
                (b, RawSlot::TryLock, request(&key(*k), ttl.ms(), form))
            }
            Op::Renew { b, handle: n, forge, form } | Op::Release { b, handle: n, forge, form } => {
                let slot =
                    if matches!(op, Op::Renew { .. }) { RawSlot::Renew } else { RawSlot::Release };
                let h = match model.issued.len() {
                    0 => Handle {
                        key: key(*n),
                        lock_id: "11111111-1111-4111-8111-111111111111".into(),
                        ttl_ms: CERTAIN_TTL_MS,
                        fence: Some(1),
                    },
                    len => model.issued[usize::from(*n) % len].clone(),
                };
                (b, slot, handle(&h, forge, form))
            }
            Op::Raw { b, slot, bytes } => {
                let slot =
                    [RawSlot::TryLock, RawSlot::Renew, RawSlot::Release][usize::from(*slot % 3)];
                (b, slot, bytes.clone())
            }
            Op::Cleanup { b } => {
                model.cleanup(usize::from(*b));
                continue;
            }
            Op::Describe => {
                check_describe(backend);
                continue;
            }
        };
        let Some(left) = budget.checked_sub(bytes.len()) else { continue };
        budget = left;
        model.apply(usize::from(*b), slot, &bytes);
    }

    // Leave nothing held for the next input (sqlite's file outlives it).
    let cleaner = make();
    for (key, holder) in &model.holders {
        let h = Handle {
            key: key.clone(),
            lock_id: holder.lock_id.clone(),
            ttl_ms: 1_000,
            fence: None,
        };
        let out = cleaner.call(RawSlot::Release, Some(&handle_json(&h)));
        expect_status(&out, &[BEXT_LOCKING_OK], &|| format!("final release of {key:?}"));
    }
});
