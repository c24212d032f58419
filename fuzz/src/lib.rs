//! What the fuzz targets share: the backends under test (every backend that
//! needs no server), a sandbox for the sqlite files, expansion of small
//! corpus files into huge or deeply nested inputs, independent parsers that
//! say what a slot must answer, and the checks every answer must pass.
//!
//! The backends are linked into the fuzz binary and called through
//! [`RawPlugin::from_export`], the same slots `export_locking_plugin!`
//! exports, so the plugin code is coverage-instrumented and sanitized.

#![deny(missing_docs)]

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use bext_locking_ffi::{
    BEXT_LOCKING_CONTENDED, BEXT_LOCKING_ERR_BACKEND, BEXT_LOCKING_ERR_INVALID,
    BEXT_LOCKING_ERR_PANIC, BEXT_LOCKING_ERR_UNSUPPORTED, BEXT_LOCKING_MAX_KEY_BYTES,
    BEXT_LOCKING_MAX_TTL_MS, BEXT_LOCKING_OK,
};
pub use bext_locking_raw::{RawCreated, RawInstance, RawOutput, RawPlugin, RawSlot};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// A TTL long enough that no lock taken with it can expire while one fuzz
/// input runs (inputs run in milliseconds; libFuzzer's own timeout is far
/// shorter than this).
pub const CERTAIN_TTL_MS: u64 = 600_000;

/// The largest input [`expand`] builds: past 1 MiB, so huge inputs are
/// covered too.
pub const MAX_EXPANDED: usize = 3 << 20;

/// The backends that run without a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `bext-locking-memory`.
    Memory,
    /// `bext-locking-sqlite`, on a file in [`Sandbox`].
    Sqlite,
}

impl Backend {
    /// Bit 0 of a flags byte picks the backend.
    pub fn from_flags(flags: u8) -> Self {
        if flags & 1 == 0 { Self::Memory } else { Self::Sqlite }
    }

    /// The backend's slots, as its `.so` exports them.
    pub fn plugin(self) -> RawPlugin {
        match self {
            Self::Memory => RawPlugin::from_export::<bext_locking_memory::Exported>(),
            Self::Sqlite => RawPlugin::from_export::<bext_locking_sqlite::Exported>(),
        }
    }

    /// The vtable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
        }
    }

    /// Whether two lock ids name the same acquisition for this backend.
    ///
    /// The memory backend parses ids as UUIDs, so it also accepts another
    /// spelling of the id it minted (upper case, braces, no hyphens); sqlite
    /// compares the text. Both keep the id secret-equivalent: only its
    /// holder knows it.
    pub fn same_lock_id(self, given: &str, minted: &str) -> bool {
        match self {
            Self::Memory => match (uuid::Uuid::parse_str(given), uuid::Uuid::parse_str(minted)) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            },
            Self::Sqlite => given == minted,
        }
    }

    /// A config whose instances see each other's locks: a memory namespace
    /// unique to `run`, or the sandbox's current database.
    pub fn shared_config(self, run: u64) -> Vec<u8> {
        match self {
            Self::Memory => format!(r#"{{"namespace":"fuzz-{}-{run}"}}"#, std::process::id()),
            Self::Sqlite => sandbox().config(),
        }
        .into_bytes()
    }
}

// ---- inputs ----------------------------------------------------------------

/// The part of an input a C host would see: up to the first NUL.
pub fn c_text(bytes: &[u8]) -> &[u8] {
    bytes.iter().position(|&b| b == 0).map_or(bytes, |n| &bytes[..n])
}

/// A raw fuzz input: a flags byte, then the bytes to send.
pub struct Input<'a> {
    /// The backend (flags bit 0).
    pub backend: Backend,
    /// The flags byte; bits 2 and up are the target's own.
    pub flags: u8,
    /// What to send, after [`expand`] when flags bit 1 is set.
    pub bytes: Cow<'a, [u8]>,
}

impl<'a> Input<'a> {
    /// Splits the flags byte off; `None` for an empty input.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (&flags, rest) = data.split_first()?;
        let bytes = if flags & 2 != 0 { Cow::Owned(expand(rest)) } else { Cow::Borrowed(rest) };
        Some(Self { backend: Backend::from_flags(flags), flags, bytes })
    }
}

/// Builds a huge or deeply nested input from a small one, so that the
/// corpus stays small: `[k] P \x1f A \x1f M \x1f B \x1f S` becomes
/// `P A^n M B^n S` with `n = 2^(k % 21)`, capped at [`MAX_EXPANDED`] bytes.
/// `{"key":"k","ttl_ms":1,"x":` `[` `0` `]` `}` nests 2^k arrays; a key of
/// `k` repeated 2^20 times is 1 MiB.
pub fn expand(data: &[u8]) -> Vec<u8> {
    let Some((&k, body)) = data.split_first() else { return Vec::new() };
    let mut parts = body.splitn(5, |&b| b == 0x1f);
    let mut next = || parts.next().unwrap_or_default();
    let (p, a, m, b, s) = (next(), next(), next(), next(), next());
    let unit = a.len() + b.len();
    let mut n = 1usize << (k % 21);
    if let Some(most) = MAX_EXPANDED.checked_div(unit) {
        n = n.min(most);
    }
    let mut out = Vec::with_capacity(p.len() + m.len() + s.len() + n * unit);
    out.extend_from_slice(p);
    for _ in 0..n {
        out.extend_from_slice(a);
    }
    out.extend_from_slice(m);
    for _ in 0..n {
        out.extend_from_slice(b);
    }
    out.extend_from_slice(s);
    out
}

/// Replaces every `from` in `bytes` with `to`.
pub fn substitute(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.starts_with(from) {
            out.extend_from_slice(to);
            rest = &rest[from.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// A short, printable view of an input for failure messages.
pub fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(300)];
    let more = if bytes.len() > shown.len() { "…" } else { "" };
    format!("{:?}{more} ({} bytes)", String::from_utf8_lossy(shown), bytes.len())
}

// ---- what the slots must answer -------------------------------------------

/// Why an input is bad input, as the ABI defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(why: impl Into<String>) -> Result<T, Malformed> {
    Err(Malformed(why.into()))
}

/// Reads a JSON object, keeping the values of the `known` fields and
/// skipping the others, and notes a known field given twice.
struct Fields<'k> {
    known: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for Fields<'_> {
    type Value = Result<Map<String, Value>, Malformed>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Result<Map<String, Value>, Malformed>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Map::new();
        let mut twice = None;
        while let Some(k) = map.next_key::<String>()? {
            if self.known.contains(&k.as_str()) {
                let v = map.next_value::<Value>()?;
                if found.insert(k.clone(), v).is_some() {
                    twice = Some(k);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(match twice {
            Some(k) => bad(format!("`{k}` given twice")),
            None => Ok(found),
        })
    }
}

/// The known `fields` of a JSON object, or why the input is not one: not
/// UTF-8, not JSON, not an object, or a known field given twice.
///
/// Unknown fields are skipped, not parsed into values: they may nest
/// deeper than serde_json's recursion limit for values and still be valid
/// JSON, which the ABI says to ignore.
pub fn json_object(bytes: &[u8], fields: &[&str]) -> Result<Map<String, Value>, Malformed> {
    let Ok(text) = std::str::from_utf8(c_text(bytes)) else { return bad("not UTF-8") };
    let mut de = serde_json::Deserializer::from_str(text);
    let read = Fields { known: fields }.deserialize(&mut de).and_then(|r| de.end().map(|()| r));
    match read {
        Ok(fields) => fields,
        Err(e) => bad(format!("not a JSON object: {e}")),
    }
}

/// The input as a JSON value that is an object (configs are parsed whole).
fn json_value_object(bytes: &[u8]) -> Result<Map<String, Value>, Malformed> {
    let Ok(text) = std::str::from_utf8(c_text(bytes)) else { return bad("not UTF-8") };
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => bad("not an object"),
        Err(e) => bad(format!("not JSON: {e}")),
    }
}

fn checked_key(map: &Map<String, Value>) -> Result<String, Malformed> {
    let Some(key) = map.get("key").and_then(Value::as_str) else {
        return bad("no string `key`");
    };
    if key.is_empty() || key.len() > BEXT_LOCKING_MAX_KEY_BYTES as usize {
        return bad(format!("key of {} bytes", key.len()));
    }
    Ok(key.to_owned())
}

/// ABI 1.1's optional `owner`: a string of at most 256 bytes, or `null`
/// (read as no owner). A plugin built for 1.0 ignored it as an unknown
/// field; ours check it.
fn checked_owner(map: &Map<String, Value>) -> Result<(), Malformed> {
    match map.get("owner") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(o)) if o.len() <= bext_locking::MAX_OWNER_BYTES => Ok(()),
        Some(Value::String(o)) => bad(format!("owner of {} bytes", o.len())),
        Some(v) => bad(format!("owner {v} is not a string")),
    }
}

fn checked_ttl(map: &Map<String, Value>) -> Result<u64, Malformed> {
    let Some(ttl) = map.get("ttl_ms").and_then(Value::as_u64) else {
        return bad("no unsigned integer `ttl_ms`");
    };
    if ttl == 0 || ttl > BEXT_LOCKING_MAX_TTL_MS {
        return bad(format!("ttl_ms {ttl} out of range"));
    }
    Ok(ttl)
}

/// A well-formed `try_lock` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its key.
    pub key: String,
    /// Its TTL.
    pub ttl_ms: u64,
}

/// Reads a request the way ABI v1 defines it, independently of the ffi
/// crate's fast path.
pub fn parse_request(bytes: &[u8]) -> Result<Request, Malformed> {
    let map = json_object(bytes, &["key", "ttl_ms", "owner"])?;
    checked_owner(&map)?;
    Ok(Request { key: checked_key(&map)?, ttl_ms: checked_ttl(&map)? })
}

/// A well-formed `force_release` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakRequest {
    /// Its key.
    pub key: String,
    /// Its `if_fence`, when given.
    pub if_fence: Option<u64>,
}

/// Reads an `inspect` request (`{"key":…}`) as ABI 1.1 defines it.
pub fn parse_inspect(bytes: &[u8]) -> Result<String, Malformed> {
    checked_key(&json_object(bytes, &["key"])?)
}

/// Reads a `force_release` request as ABI 1.1 defines it: `if_fence`, when
/// present, a non-negative integer (`null` is refused, not read as "any
/// holder").
pub fn parse_break(bytes: &[u8]) -> Result<BreakRequest, Malformed> {
    let map = json_object(bytes, &["key", "if_fence"])?;
    let key = checked_key(&map)?;
    let if_fence = match map.get("if_fence") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => return bad(format!("if_fence {v} is not a non-negative integer")),
        },
    };
    Ok(BreakRequest { key, if_fence })
}

/// A well-formed handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    /// Its key.
    pub key: String,
    /// Its lock id.
    pub lock_id: String,
    /// Its TTL.
    pub ttl_ms: u64,
    /// Its fence, when given.
    pub fence: Option<u64>,
}

/// Reads a handle the way ABI v1 defines it.
pub fn parse_handle(bytes: &[u8]) -> Result<Handle, Malformed> {
    let map = json_object(bytes, &["key", "lock_id", "ttl_ms", "fence"])?;
    let key = checked_key(&map)?;
    let Some(lock_id) = map.get("lock_id").and_then(Value::as_str) else {
        return bad("no string `lock_id`");
    };
    let ttl_ms = checked_ttl(&map)?;
    // `null` reads as no fence, as serde reads an absent `Option` (inputs
    // are lenient: a host that writes out a fence-less handle with
    // `"fence":null` gets it back working).
    let fence = match map.get("fence") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(f) => Some(f),
            None => return bad("`fence` is not an unsigned integer"),
        },
    };
    Ok(Handle { key, lock_id: lock_id.to_owned(), ttl_ms, fence })
}

/// What `create` must answer for a memory config: `Ok` means it must succeed.
pub fn memory_config(bytes: &[u8]) -> Result<(), Malformed> {
    let map = json_value_object(bytes)?;
    for (k, v) in &map {
        match (k.as_str(), v) {
            ("namespace", Value::Null) => {}
            ("namespace", Value::String(s)) if !s.is_empty() => {}
            ("namespace", _) => return bad("namespace is not a non-empty string"),
            _ => return bad(format!("unknown key `{k}`")),
        }
    }
    Ok(())
}

/// What `create` must answer for a sqlite config that went through
/// [`Sandbox::confine`]: `Ok` means it must succeed.
pub fn sqlite_config(bytes: &[u8]) -> Result<(), Malformed> {
    let map = json_value_object(bytes)?;
    let mut path_ok = None;
    for (k, v) in &map {
        match (k.as_str(), v) {
            ("path", Value::String(p)) => path_ok = Some(sandbox().is_database(Path::new(p))),
            ("busy_timeout_ms", Value::Null) => {}
            ("busy_timeout_ms", v) => match v.as_u64() {
                Some(ms) if ms <= bext_locking_sqlite::MAX_BUSY_TIMEOUT_MS => {}
                _ => return bad("busy_timeout_ms out of range"),
            },
            ("table", Value::Null) => {}
            ("table", Value::String(t)) if table_name_ok(t) => {}
            ("table", _) => return bad("bad table name"),
            _ => return bad(format!("unknown key or bad value: `{k}`")),
        }
    }
    match path_ok {
        Some(true) => Ok(()),
        Some(false) => bad("path is not a usable database file"),
        None => bad("no path"),
    }
}

/// The table names the sqlite schema allows, restated from its description.
fn table_name_ok(t: &str) -> bool {
    let mut chars = t.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.len() <= 63
        && !t.to_ascii_lowercase().starts_with("sqlite_")
}

// ---- checks ----------------------------------------------------------------

/// Which slot produced an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `describe`.
    Describe,
    /// `create` (its `*out_error_json`).
    Create,
    /// `try_lock`.
    TryLock,
    /// `renew`.
    Renew,
    /// `release`.
    Release,
    /// `cleanup`.
    Cleanup,
    /// `inspect` (ABI 1.1).
    Inspect,
    /// `force_release` (ABI 1.1).
    ForceRelease,
    /// `stats` (ABI 1.1).
    Stats,
}

impl From<RawSlot> for Call {
    fn from(s: RawSlot) -> Self {
        match s {
            RawSlot::TryLock => Self::TryLock,
            RawSlot::Renew => Self::Renew,
            RawSlot::Release => Self::Release,
        }
    }
}

/// Checks what ABI v1 promises of every answer, whatever the input: a
/// documented status, the out-parameter cleared, a payload only where the
/// slot has one, nothing on CONTENDED, and on every error the error object
/// with the code that matches the status and a message. A caught panic is a
/// bug too: bad input must get an error naming the problem.
pub fn check_output(call: Call, out: &RawOutput, what: &dyn Fn() -> String) {
    assert!(out.cleared, "{call:?} left *out_json as it was (not cleared on entry); {}", what());
    match out.status {
        BEXT_LOCKING_OK => match call {
            Call::Describe | Call::TryLock | Call::Inspect | Call::ForceRelease | Call::Stats => {
                let json = out.json.as_deref();
                assert!(json.is_some(), "{call:?} OK without a payload; {}", what());
                let v: Result<Value, _> = serde_json::from_slice(json.unwrap_or_default());
                assert!(
                    v.as_ref().is_ok_and(Value::is_object),
                    "{call:?} OK payload is not a JSON object: {}; {}",
                    preview(json.unwrap_or_default()),
                    what()
                );
            }
            _ => assert!(
                out.json.is_none(),
                "{call:?} OK must leave *out_json NULL, got {}; {}",
                preview(out.json.as_deref().unwrap_or_default()),
                what()
            ),
        },
        BEXT_LOCKING_CONTENDED => {
            assert_eq!(call, Call::TryLock, "CONTENDED from {call:?}; {}", what());
            assert!(out.json.is_none(), "CONTENDED with *out_json set; {}", what());
        }
        s @ (BEXT_LOCKING_ERR_BACKEND
        | BEXT_LOCKING_ERR_INVALID
        | BEXT_LOCKING_ERR_PANIC
        | BEXT_LOCKING_ERR_UNSUPPORTED) => {
            let want = match s {
                BEXT_LOCKING_ERR_BACKEND => "backend",
                BEXT_LOCKING_ERR_INVALID => "invalid_argument",
                BEXT_LOCKING_ERR_UNSUPPORTED => "unsupported",
                _ => "panic",
            };
            let json = out.json.as_deref().unwrap_or_else(|| {
                panic!("{call:?} status {s} without an error object; {}", what())
            });
            let v: Value = serde_json::from_slice(json).unwrap_or_else(|e| {
                panic!("{call:?} error is not JSON ({e}): {}; {}", preview(json), what())
            });
            assert_eq!(v["code"], want, "{call:?} status {s}: {}; {}", preview(json), what());
            assert!(
                v["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{call:?} error without a message: {}; {}",
                preview(json),
                what()
            );
            assert_ne!(
                s,
                BEXT_LOCKING_ERR_PANIC,
                "{call:?} panicked: {}; {}",
                preview(json),
                what()
            );
        }
        s => panic!("{call:?} returned undocumented status {s}; {}", what()),
    }
}

/// The error message of a failed call, for failure messages.
pub fn message(out: &RawOutput) -> String {
    out.json.as_deref().map(preview).unwrap_or_else(|| "(no output)".to_owned())
}

/// Asserts a status, showing the output and the input on failure.
pub fn expect_status(out: &RawOutput, want: &[i32], what: &dyn Fn() -> String) {
    assert!(
        want.contains(&out.status),
        "status {} (want one of {want:?}), output {}; {}",
        out.status,
        message(out),
        what()
    );
}

/// Checks `describe`.
pub fn check_describe(backend: Backend) {
    let plugin = backend.plugin();
    let what = || format!("describe of {}", backend.name());
    assert_eq!(plugin.describe_without_out(), BEXT_LOCKING_ERR_INVALID, "{}", what());
    let out = plugin.describe();
    check_output(Call::Describe, &out, &what);
    expect_status(&out, &[BEXT_LOCKING_OK], &what);
    let v: Value = serde_json::from_slice(out.json.as_deref().unwrap_or_default()).unwrap();
    assert_eq!(v["name"], backend.name(), "{}", what());
    assert_eq!(v["abi_version"], 1, "{}", what());
    assert!(v["version"].is_string() && v["description"].is_string(), "{}", what());
    assert!(v["fencing"].is_boolean() && v["config_schema"].is_object(), "{}", what());
    plugin.free_null();
}

/// Checks a `try_lock` payload against its request and returns it parsed.
/// Both backends here fence, and the payload must be exactly what
/// `wire::handle_json_nul` writes (the form the loader's fast path reads
/// when nothing needs escaping).
pub fn check_handle(json: &[u8], req: &Request, what: &dyn Fn() -> String) -> Handle {
    let h = parse_handle(json)
        .unwrap_or_else(|e| panic!("try_lock returned a bad handle ({e}): {}", preview(json)));
    assert_eq!(h.key, req.key, "handle key; {}", what());
    assert_eq!(h.ttl_ms, req.ttl_ms, "handle ttl_ms; {}", what());
    assert!(!h.lock_id.is_empty(), "empty lock_id; {}", what());
    assert!(h.fence.is_some(), "no fence from a fencing backend; {}", what());
    assert_eq!(handle_json(&h), json, "handle not in canonical form; {}", what());
    h
}

/// The canonical request JSON (no NUL).
pub fn request_json(key: &str, ttl_ms: u64) -> Vec<u8> {
    let mut v = bext_locking_ffi::wire::request_json_nul(key, ttl_ms);
    v.pop();
    v
}

/// The canonical handle JSON (no NUL).
pub fn handle_json(h: &Handle) -> Vec<u8> {
    let mut v = bext_locking_ffi::wire::handle_json_nul(&bext_locking::LockHandle {
        key: h.key.clone(),
        lock_id: h.lock_id.clone(),
        ttl_ms: h.ttl_ms,
        fence: h.fence,
    });
    v.pop();
    v
}

/// A number unique to each call in this process: keeps keys and memory
/// namespaces of different inputs apart.
pub fn next_run() -> u64 {
    static RUN: AtomicU64 = AtomicU64::new(0);
    RUN.fetch_add(1, Ordering::Relaxed)
}

// ---- instances kept across inputs -----------------------------------------

/// How many inputs share one instance (and, for sqlite, one database file)
/// before both are replaced: bounds the file's growth in long runs.
const INPUTS_PER_GENERATION: u64 = 20_000;

struct Kept {
    generation: u64,
    instance: RawInstance,
}

static KEPT: Mutex<[Option<Kept>; 2]> = Mutex::new([None, None]);

/// Runs `f` on a long-lived instance of `backend` (a private memory table, or
/// the sandbox's shared sqlite file; recreated every [`INPUTS_PER_GENERATION`] inputs).
pub fn with_kept<R>(backend: Backend, f: impl FnOnce(&RawInstance) -> R) -> R {
    let generation = sandbox().tick();
    let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    let slot = &mut kept[backend as usize];
    if slot.as_ref().is_none_or(|k| k.generation != generation) {
        *slot = None; // destroy the old one before its file goes away
        let config = match backend {
            Backend::Memory => b"{}".to_vec(),
            Backend::Sqlite => sandbox().config().into_bytes(),
        };
        let created = backend.plugin().create(Some(&config));
        let instance = created.instance.unwrap_or_else(|| {
            panic!("cannot create a {} instance: {}", backend.name(), message(&created.output))
        });
        *slot = Some(Kept { generation, instance });
    }
    f(&slot.as_ref().expect("just set").instance)
}

// ---- the sqlite sandbox ------------------------------------------------------

/// A private folder for the sqlite files, so that no fuzz input can name a
/// file elsewhere (the fuzzer runs as whoever runs it, maybe root). On
/// `/dev/shm` when there is one: the backend syncs every commit.
pub struct Sandbox {
    dir: PathBuf,
    state: Mutex<(u64, u64)>, // (inputs seen, generation)
}

static SANDBOX: OnceLock<Sandbox> = OnceLock::new();

/// The process's sandbox, made on first use.
pub fn sandbox() -> &'static Sandbox {
    SANDBOX.get_or_init(Sandbox::new)
}

const SANDBOX_PREFIX: &str = "bext-locking-fuzz-";

impl Sandbox {
    fn new() -> Self {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        // Statics are never dropped, so each run removes the folders of
        // runs that are gone.
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let gone = name
                .strip_prefix(SANDBOX_PREFIX)
                .is_some_and(|pid| !Path::new("/proc").join(pid).exists());
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(format!("{SANDBOX_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the sqlite sandbox");
        std::fs::write(dir.join("not-a-db"), "plain text, not SQLite\n").expect("write");
        Self { dir, state: Mutex::new((0, 0)) }
    }

    fn generation(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1
    }

    /// Counts one input; every [`INPUTS_PER_GENERATION`] inputs, moves to
    /// fresh database files and removes the old ones. Returns the generation.
    pub fn tick(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += 1;
        if state.0.is_multiple_of(INPUTS_PER_GENERATION) {
            let old = state.1;
            state.1 += 1;
            for db in ["locks", "other"] {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let _ = std::fs::remove_file(self.dir.join(format!("{db}-{old}.db{suffix}")));
                }
            }
        }
        state.1
    }

    /// The current shared database file.
    pub fn db(&self) -> PathBuf {
        self.dir.join(format!("locks-{}.db", self.generation()))
    }

    fn other_db(&self) -> PathBuf {
        self.dir.join(format!("other-{}.db", self.generation()))
    }

    /// `{"path":…}` for the current shared database.
    pub fn config(&self) -> String {
        serde_json::json!({ "path": self.db(), "busy_timeout_ms": 10_000 }).to_string()
    }

    /// Whether `path` is one of the sandbox's database files.
    pub fn is_database(&self, path: &Path) -> bool {
        path == self.db() || path == self.other_db()
    }

    /// Rewrites a config's `path` (when it is a JSON object with a string
    /// `path`) to a file in the sandbox, picked by a hash of the given path
    /// so that mutations still reach every case: the shared database,
    /// another database, a folder, a missing folder, a file that is not a
    /// database, a path with a NUL. `""` and `":memory:"` are kept, being
    /// refused before any file is touched. Anything else is passed on as it
    /// is, up to its first NUL.
    pub fn confine(&self, bytes: &[u8]) -> Vec<u8> {
        let text = c_text(bytes);
        let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(text) else {
            return text.to_vec();
        };
        let Some(Value::String(path)) = map.get("path") else { return text.to_vec() };
        let confined = match path.as_str() {
            "" | ":memory:" => path.clone(),
            p => {
                let hash = p.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                let file = match hash % 6 {
                    0 | 1 => self.db(),
                    2 => self.other_db(),
                    3 => self.dir.clone(),
                    4 => self.dir.join("missing").join("locks.db"),
                    _ => self.dir.join("not-a-db"),
                };
                let mut file = file.to_string_lossy().into_owned();
                if p.contains('\0') {
                    file.push_str("\0.db");
                }
                file
            }
        };
        let inside =
            Path::new(confined.split('\0').next().unwrap_or_default()).starts_with(&self.dir);
        assert!(
            inside || path.is_empty() || path == ":memory:",
            "path escaped the sandbox: {confined:?}"
        );
        map.insert("path".to_owned(), Value::String(confined));
        serde_json::to_vec(&Value::Object(map)).expect("a Value serializes")
    }
}
