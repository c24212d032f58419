//! The `#[repr(C)]` definitions of ABI v1 (revision 1.2), exactly as
//! `docs/ABI.md` names them. Fields are only ever appended.

use std::os::raw::c_char;

/// The ABI version this crate implements. A host refuses a vtable whose
/// `abi_version` differs.
pub const BEXT_LOCKING_ABI_VERSION: u32 = 1;

/// The ABI's minor revision: 1 adds `owner`, `inspect`, `force_release`,
/// `stats` and `BEXT_LOCKING_ERR_UNSUPPORTED`. A host learns what a plugin
/// has from its `struct_size` (and `describe`'s `capabilities`), never from
/// this number alone.
/// Revision 2 adds `lock_wait`, `cancel_wait`, `renew_for` and
/// `BEXT_LOCKING_CANCELLED`.
pub const BEXT_LOCKING_ABI_MINOR: u32 = 2;

/// The call did what was asked.
pub const BEXT_LOCKING_OK: i32 = 0;
/// `try_lock` only: someone else holds the key; `*out_json` is NULL. Not an error.
pub const BEXT_LOCKING_CONTENDED: i32 = 1;
/// (1.2) `lock_wait` only: the wait was cancelled by `cancel_wait` (or by
/// `cleanup`); `*out_json` is NULL. Not an error.
pub const BEXT_LOCKING_CANCELLED: i32 = 2;
/// The backend failed (unreachable, protocol, timeout), or `renew` found the
/// lock no longer ours.
pub const BEXT_LOCKING_ERR_BACKEND: i32 = -1;
/// Bad input: a NULL pointer, invalid UTF-8, malformed JSON, a key or TTL out
/// of range, a bad config, or a value this backend cannot serve (a TTL too
/// short for a Redlock quorum).
pub const BEXT_LOCKING_ERR_INVALID: i32 = -2;
/// The plugin panicked; the panic was caught at the boundary.
pub const BEXT_LOCKING_ERR_PANIC: i32 = -3;
/// (1.1) This backend, or this instance's mode, cannot serve the call or one
/// of its fields; the message says why. Hosts report a slot a plugin does
/// not have the same way.
pub const BEXT_LOCKING_ERR_UNSUPPORTED: i32 = -4;

/// The longest key, in bytes of UTF-8.
pub const BEXT_LOCKING_MAX_KEY_BYTES: u32 = 1024;
/// The longest TTL in milliseconds (365 days).
pub const BEXT_LOCKING_MAX_TTL_MS: u64 = 31_536_000_000;
/// (1.1) The longest `owner` in a `try_lock` request, in bytes of UTF-8.
pub const BEXT_LOCKING_MAX_OWNER_BYTES: u32 = 256;

// The header needs literals; the checks every backend runs use the core
// crate's limits. They are one definition: the build fails if they differ.
const _: () = assert!(BEXT_LOCKING_MAX_KEY_BYTES as usize == bext_locking::MAX_KEY_BYTES);
const _: () = assert!(BEXT_LOCKING_MAX_TTL_MS == bext_locking::MAX_TTL_MS);
const _: () = assert!(BEXT_LOCKING_MAX_OWNER_BYTES as usize == bext_locking::MAX_OWNER_BYTES);

/// Fuel budget for one `try_lock` in a metering sandbox.
pub const BEXT_LOCKING_FUEL_TRY_LOCK: u64 = 50_000_000;
/// Fuel budget for one `renew`.
pub const BEXT_LOCKING_FUEL_RENEW: u64 = 50_000_000;
/// Fuel budget for one `release`.
pub const BEXT_LOCKING_FUEL_RELEASE: u64 = 50_000_000;
/// Fuel budget for one `cleanup`.
pub const BEXT_LOCKING_FUEL_CLEANUP: u64 = 100_000_000;

/// The name of the one symbol a plugin exports, NUL-terminated for `dlsym`.
pub const BEXT_LOCKING_ENTRY_SYMBOL: &[u8] = b"bext_locking_plugin_entry\0";

/// An instance created by `create`. Opaque: only the plugin knows its layout.
///
/// Owned by the host from a successful `create` until it passes it to
/// `destroy`, exactly once.
pub struct BextLockingInstance {
    _private: [u8; 0],
}

/// `describe`: writes the plugin's description JSON to `*out_json` (free it
/// with `free_string`). Safe to call at any time from any thread.
pub type BextLockingDescribeFn = Option<unsafe extern "C" fn(out_json: *mut *mut c_char) -> i32>;

/// `create`: parses `config_json` (NULL means `{}`; borrowed for the call) and
/// on success stores a new instance in `*out_instance`, owned by the caller
/// until `destroy`. On failure writes an error object to `*out_error_json`
/// (free it with `free_string`).
pub type BextLockingCreateFn = Option<
    unsafe extern "C" fn(
        config_json: *const c_char,
        out_instance: *mut *mut BextLockingInstance,
        out_error_json: *mut *mut c_char,
    ) -> i32,
>;

/// `try_lock`, `renew`, `release` (and, since 1.1, `inspect` and
/// `force_release`): take a borrowed JSON input and write a plugin-owned
/// JSON output (a handle, an answer, or an error object) to `*out_json`.
/// May run concurrently on one instance from any threads.
pub type BextLockingCallFn = Option<
    unsafe extern "C" fn(
        instance: *mut BextLockingInstance,
        input_json: *const c_char,
        out_json: *mut *mut c_char,
    ) -> i32,
>;

/// `cleanup`: closes connections and stops background work; later calls on
/// the instance fail with `BEXT_LOCKING_ERR_BACKEND`. Since 1.1 also the
/// shape of `stats`, which writes the instance's statistics.
pub type BextLockingCleanupFn = Option<
    unsafe extern "C" fn(instance: *mut BextLockingInstance, out_json: *mut *mut c_char) -> i32,
>;

/// `destroy`: frees an instance (cleaning up first if needed) and joins its
/// threads. Called exactly once per instance, never concurrently with
/// another call on it.
pub type BextLockingDestroyFn = Option<unsafe extern "C" fn(instance: *mut BextLockingInstance)>;

/// (1.2) `lock_wait`: like [`BextLockingCallFn`], plus `out_sent_ago_us`
/// (may be NULL): on `BEXT_LOCKING_OK`, how many microseconds before the
/// call returned the request that took the lock was sent, so a host can
/// date the lease from then rather than from the start of a long wait.
pub type BextLockingWaitFn = Option<
    unsafe extern "C" fn(
        instance: *mut BextLockingInstance,
        request_json: *const c_char,
        out_json: *mut *mut c_char,
        out_sent_ago_us: *mut u64,
    ) -> i32,
>;

/// `free_string`: releases a string this plugin returned. NULL is a no-op.
/// Never pass a plugin's string to the C library's `free`.
pub type BextLockingFreeStringFn = Option<unsafe extern "C" fn(s: *mut c_char)>;

/// The table of a plugin's functions, returned by `bext_locking_plugin_entry`.
///
/// Static and valid for as long as the library stays loaded (plugins are
/// linked `-z nodelete`, so that is the life of the process). A host reads a
/// field only when `struct_size` covers it, and refuses a table whose
/// `abi_version` differs from its own, whose `struct_size` is smaller than
/// v1's ([`BEXT_LOCKING_VTABLE_V1_SIZE`]), or whose 1.0 slots are NULL. The
/// slots appended by later revisions are optional: one exists when
/// `struct_size` covers it and it is not NULL.
#[repr(C)]
pub struct BextLockingVTable {
    /// `sizeof(BextLockingVTable)` as compiled into the plugin.
    pub struct_size: u32,
    /// The `BEXT_LOCKING_ABI_VERSION` the plugin was built for.
    pub abi_version: u32,
    /// Static, NUL-terminated UTF-8 name: "memory", "sqlite", "redis", "pg", ...
    pub name: *const c_char,
    /// Static, NUL-terminated: the plugin's own semver.
    pub version: *const c_char,
    /// `describe(out_json)`: writes
    /// `{"name","version","abi_version","description","fencing","config_schema"}`.
    pub describe: BextLockingDescribeFn,
    /// `create(config_json, out_instance, out_error_json)`: a new instance
    /// from a config object (NULL means `{}`), owned by the host until
    /// `destroy`. An unknown config key is `BEXT_LOCKING_ERR_INVALID` naming it.
    pub create: BextLockingCreateFn,
    /// `try_lock(instance, request_json, out_json)`: request
    /// `{"key":"…","ttl_ms":N}`; on `BEXT_LOCKING_OK` writes the handle, on
    /// `BEXT_LOCKING_CONTENDED` writes nothing.
    pub try_lock: BextLockingCallFn,
    /// `renew(instance, handle_json, out_json)`: restarts the TTL; an error
    /// means the lock is lost. Writes nothing on success.
    pub renew: BextLockingCallFn,
    /// `release(instance, handle_json, out_json)`: OK also when the lock is no
    /// longer ours (nothing is touched then). Writes nothing on success.
    pub release: BextLockingCallFn,
    /// `cleanup(instance, out_json)`: closes connections and stops background
    /// work; later calls on the instance return `BEXT_LOCKING_ERR_BACKEND`.
    /// Writes nothing on success.
    pub cleanup: BextLockingCleanupFn,
    /// `destroy(instance)`: frees the instance (cleaning up first if needed).
    /// Exactly once per instance, never racing another call on it.
    pub destroy: BextLockingDestroyFn,
    /// `free_string(s)`: releases a string this plugin returned (never use
    /// `free()`); NULL is a no-op.
    pub free_string: BextLockingFreeStringFn,
    /// (1.1, optional) `inspect(instance, request_json, out_json)`: request
    /// `{"key":"…"}`; writes `{"key","held","fence"?,"owner"?,
    /// "expires_in_ms"?,"held_for_ms"?}` by the backend's clock, never the
    /// `lock_id`. A key nobody holds is `"held":false` and OK.
    pub inspect: BextLockingCallFn,
    /// (1.1, optional) `force_release(instance, request_json, out_json)`:
    /// request `{"key":"…","if_fence"?:N}`; frees the key whoever holds it
    /// (only at fence N when given) and writes `{"released":bool,"fence"?}`.
    /// The broken holder's renew then fails and the next fence is higher.
    pub force_release: BextLockingCallFn,
    /// (1.1, optional) `stats(instance, out_json)`: writes the instance's
    /// counters and latency histograms since `create` (see `docs/ABI.md`).
    pub stats: BextLockingCleanupFn,
    /// (1.2, optional) `lock_wait(instance, request_json, out_json,
    /// out_sent_ago_us)`: request `{"key","ttl_ms","owner"?,"wait_ms",
    /// "wait_id"?}`; blocks until the lock is ours (`BEXT_LOCKING_OK`, the
    /// handle in `*out_json`), `wait_ms` passes (`BEXT_LOCKING_CONTENDED`)
    /// or the wait is cancelled (`BEXT_LOCKING_CANCELLED`), woken by the
    /// backend's notification rather than by polling.
    pub lock_wait: BextLockingWaitFn,
    /// (1.2, optional) `cancel_wait(instance, request_json, out_json)`:
    /// request `{"wait_id":N}`; the `lock_wait` with that id returns
    /// `BEXT_LOCKING_CANCELLED` within 100 ms, leaving nothing on the
    /// server. An unknown id is a no-op (OK). Writes nothing on success.
    pub cancel_wait: BextLockingCallFn,
    /// (1.2, optional) `renew_for(instance, request_json, out_json)`:
    /// request `{"handle":{…},"ttl_ms":N}`; sets the held lease's remaining
    /// time to `ttl_ms` once (capability `"renew_ttl"`). Writes nothing on
    /// success; an error means the lock is lost, as for `renew`.
    pub renew_for: BextLockingCallFn,
}

// SAFETY: the vtable is immutable after construction and its pointers refer
// to static strings and functions, so sharing it between threads is sound.
unsafe impl Sync for BextLockingVTable {}

/// The size of the 1.0 vtable (up to `free_string`): the smallest
/// `struct_size` a host accepts.
pub const BEXT_LOCKING_VTABLE_V1_SIZE: u32 =
    (std::mem::offset_of!(BextLockingVTable, free_string) + std::mem::size_of::<usize>()) as u32;

/// The size of the 1.1 vtable, with `inspect`, `force_release` and `stats`.
pub const BEXT_LOCKING_VTABLE_V1_1_SIZE: u32 =
    (std::mem::offset_of!(BextLockingVTable, stats) + std::mem::size_of::<usize>()) as u32;

/// The size of the 1.2 vtable, with `lock_wait`, `cancel_wait` and
/// `renew_for`: what the project's plugins declare.
pub const BEXT_LOCKING_VTABLE_V1_2_SIZE: u32 = std::mem::size_of::<BextLockingVTable>() as u32;

// Each revision's slots follow the previous table with no padding between.
const _: () = assert!(
    BEXT_LOCKING_VTABLE_V1_1_SIZE
        == BEXT_LOCKING_VTABLE_V1_SIZE + 3 * std::mem::size_of::<usize>() as u32
);
const _: () = assert!(
    BEXT_LOCKING_VTABLE_V1_2_SIZE
        == BEXT_LOCKING_VTABLE_V1_1_SIZE + 3 * std::mem::size_of::<usize>() as u32
);

/// The type of `bext_locking_plugin_entry`: returns the static vtable, or NULL
/// when the plugin cannot serve `host_abi_version`. Idempotent, cheap and
/// thread-safe.
pub type BextLockingEntryFn =
    unsafe extern "C" fn(host_abi_version: u32) -> *const BextLockingVTable;
