//! Opening a library file and validating the vtable it exports.

use std::ffi::{CStr, c_char};
use std::path::{Path, PathBuf};

use bext_locking::{ErrorKind, LockingPlugin, PluginError};
use bext_locking_ffi::{
    BEXT_LOCKING_ABI_VERSION, BEXT_LOCKING_ENTRY_SYMBOL, BEXT_LOCKING_OK, BextLockingEntryFn,
    BextLockingInstance, BextLockingVTable,
};
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use serde::Deserialize;

use crate::error::{LoadError, LoadErrorKind};
use crate::instance::{FfiPlugin, as_text, call_error, take_string};
use crate::vtable::Slots;

/// A validated plugin library. Cheap to clone; the library stays loaded for
/// the life of the process.
#[derive(Clone)]
pub struct LoadedPlugin {
    path: PathBuf,
    vtable: *const BextLockingVTable,
    slots: Slots,
    name: String,
    version: String,
}

// SAFETY: the vtable pointer refers to an immutable static table of a
// library that is never unloaded; the ABI makes every slot callable from
// any thread.
unsafe impl Send for LoadedPlugin {}
// SAFETY: see `Send`.
unsafe impl Sync for LoadedPlugin {}

/// What a plugin's `describe` slot reports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Description {
    /// The plugin's name, e.g. `"redis"`.
    pub name: String,
    /// The plugin's own semver.
    pub version: String,
    /// The ABI version it was built for.
    pub abi_version: u32,
    /// One sentence about the backend.
    pub description: String,
    /// Whether the default configuration hands out fences.
    pub fencing: bool,
    /// The JSON Schema of its config object.
    pub config_schema: serde_json::Value,
    /// The clock-drift allowance it states, if any; `None` means
    /// [`bext_locking::ClockDrift::REDLOCK`] (see
    /// [`clock_drift_or_default`](Self::clock_drift_or_default)).
    #[serde(default)]
    pub clock_drift: Option<bext_locking::ClockDrift>,
    /// (1.1) The ABI revision it was built for; 0 for a 1.0 plugin.
    #[serde(default)]
    pub abi_minor: u32,
    /// (1.1) What it implements in at least one mode: `"owner"`,
    /// `"inspect"`, `"force_release"`, `"stats"`. Empty for a 1.0 plugin.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl Description {
    /// The allowance to count leases with: the stated one, or Redlock's.
    pub fn clock_drift_or_default(&self) -> bext_locking::ClockDrift {
        self.clock_drift.unwrap_or_default()
    }
}

/// Opens `path`, calls its entry with ABI v1 and validates the vtable.
///
/// The library is opened with `RTLD_NOW` (so missing symbols fail here, not
/// mid-call) and `RTLD_LOCAL` (so two plugins' symbols never mix), and is
/// never closed. Note that opening the same path twice returns the code
/// loaded the first time: to load a newer build, load a private copy.
pub fn load(path: impl AsRef<Path>) -> Result<LoadedPlugin, LoadError> {
    let path = path.as_ref();
    load_as(path, path)
}

/// Opens `file` but reports (and remembers) it as `shown`: the scanner opens
/// a private copy of each plugin file and names the original everywhere.
pub(crate) fn load_as(file: &Path, shown: &Path) -> Result<LoadedPlugin, LoadError> {
    let path = shown.to_path_buf();
    let fail = |kind| LoadError { path: path.clone(), kind };
    // SAFETY: loading a library runs its initialisers; that is the point of a
    // plugin, and callers choose which files to trust (the directory scanner
    // refuses files others could have written).
    let lib = unsafe { Library::open(Some(file), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| fail(LoadErrorKind::Open(open_message(e, file, shown))))?;
    // Never unloaded: instances and the vtable point into the library's code.
    let lib: &'static Library = Box::leak(Box::new(lib));
    // SAFETY: the ABI fixes the entry symbol's type as `BextLockingEntryFn`.
    let entry = unsafe { lib.get::<BextLockingEntryFn>(BEXT_LOCKING_ENTRY_SYMBOL) }
        .map_err(|_| fail(LoadErrorKind::NoEntrySymbol))?;
    // SAFETY: the entry is a plain function of the declared type; the ABI
    // makes it safe to call from any thread, any number of times.
    let table = unsafe { entry(BEXT_LOCKING_ABI_VERSION) };
    if table.is_null() {
        return Err(fail(LoadErrorKind::EntryRefused));
    }
    // SAFETY: a non-NULL entry result points to a static vtable that lives as
    // long as the library, which we never unload, and is readable up to its
    // `struct_size` (a 1.0 plugin's is shorter than our struct). `check_raw`
    // reads `struct_size` and `abi_version` first, and each other field only
    // once `struct_size` covers it.
    let slots = unsafe { Slots::check_raw(table) }.map_err(&fail)?;
    // SAFETY: covered by the v1 size `check_raw` accepted.
    let (name, version) = unsafe { ((*table).name, (*table).version) };
    // SAFETY: `Slots::check_raw` checked both pointers are non-NULL; the ABI
    // says they are static NUL-terminated strings.
    let name = unsafe { static_str(name) }.ok_or_else(|| fail(LoadErrorKind::BadString("name")))?;
    // SAFETY: as above.
    let version =
        unsafe { static_str(version) }.ok_or_else(|| fail(LoadErrorKind::BadString("version")))?;
    Ok(LoadedPlugin { path, vtable: table, slots, name, version })
}

/// The dynamic loader's message, without the file name it usually starts
/// with (the error names the file already), and with a private copy's
/// temporary name replaced by the file it was copied from.
fn open_message(e: libloading::Error, file: &Path, shown: &Path) -> String {
    let msg = match e {
        libloading::Error::DlOpen { desc } => format!("{desc:?}").trim_matches('"').to_owned(),
        other => other.to_string(),
    };
    let file = file.to_string_lossy();
    match msg.strip_prefix(&*file).and_then(|m| m.strip_prefix(": ")) {
        Some(rest) => rest.to_owned(),
        None => msg.replace(&*file, &shown.to_string_lossy()),
    }
}

/// # Safety
/// `p` must be a non-NULL, NUL-terminated string that outlives the process.
unsafe fn static_str(p: *const c_char) -> Option<String> {
    // SAFETY: guaranteed by the caller.
    let s = unsafe { CStr::from_ptr(p) }.to_str().ok()?;
    (!s.is_empty()).then(|| s.to_owned())
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// The plugin's name from its vtable.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's version from its vtable.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ABI revision the plugin's vtable covers (0 for a 1.0 plugin).
    pub fn abi_minor(&self) -> u32 {
        self.slots.abi_minor()
    }

    /// Whether the plugin has the slot `name` (see [`Slots::has_slot`]).
    pub fn has_slot(&self, name: &str) -> bool {
        self.slots.has_slot(name)
    }

    /// The raw vtable, for hosts that want to call slots themselves. A
    /// pointer, not a reference: a 1.0 plugin's table is shorter than this
    /// crate's `BextLockingVTable`, so read a field only when
    /// [`Slots::struct_size`] covers it (or use [`slots`](Self::slots)).
    pub fn vtable(&self) -> *const BextLockingVTable {
        self.vtable
    }

    /// The vtable's slots, checked non-NULL when the library was loaded.
    pub fn slots(&self) -> Slots {
        self.slots
    }

    /// Calls `describe` and parses its answer.
    pub fn describe(&self) -> Result<Description, String> {
        let describe = self.slots.describe;
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: `out` is a valid out-parameter; describe may run any time.
        let status = unsafe { describe(&mut out) };
        // SAFETY: the string (if any) was returned by this plugin's slot.
        let text = unsafe { take_string(&self.slots, out) };
        if status != BEXT_LOCKING_OK {
            return Err(format!(
                "{}: describe failed ({status}): {}",
                self.name,
                text.unwrap_or_default()
            ));
        }
        let text = text.ok_or_else(|| format!("{}: describe returned no JSON", self.name))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{}: describe returned bad JSON: {e}", self.name))
    }

    /// Creates an instance from a config JSON object (`"{}"` for defaults).
    ///
    /// The error names the plugin and repeats the plugin's message (prefixed
    /// with its code unless it is a backend failure).
    pub fn create(&self, config_json: &str) -> Result<Box<dyn LockingPlugin>, String> {
        self.create_ffi(config_json).map(|p| Box::new(p) as Box<dyn LockingPlugin>)
    }

    /// Like [`create`](Self::create), returning the concrete wrapper type.
    pub fn create_ffi(&self, config_json: &str) -> Result<FfiPlugin, String> {
        self.create_raw(config_json)
            .map_err(|e| format!("{}: create failed: {}", self.name, as_text(e)))
    }

    /// Like [`create_ffi`](Self::create_ffi), with the error's kind: a config
    /// the plugin refuses is `InvalidArgument`, a backend it cannot reach
    /// `Backend`. The message is `<name>: create failed: <plugin's message>`.
    pub fn create_typed(&self, config_json: &str) -> Result<FfiPlugin, PluginError> {
        self.create_raw(config_json).map_err(|e| {
            PluginError::new(e.kind, format!("{}: create failed: {}", self.name, e.message))
        })
    }

    /// `create`, with the plugin's own error.
    fn create_raw(&self, config_json: &str) -> Result<FfiPlugin, PluginError> {
        let config = std::ffi::CString::new(config_json)
            .map_err(|_| PluginError::invalid("config contains a NUL byte"))?;
        let mut instance: *mut BextLockingInstance = std::ptr::null_mut();
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; `config` outlives it.
        let status = unsafe { (self.slots.create)(config.as_ptr(), &mut instance, &mut err) };
        // SAFETY: the string (if any) was returned by this plugin's slot.
        let err = unsafe { take_string(&self.slots, err) };
        if status != BEXT_LOCKING_OK {
            return Err(call_error(status, err.as_deref()));
        }
        if instance.is_null() {
            return Err(PluginError::new(
                ErrorKind::Protocol,
                "create returned OK without an instance",
            ));
        }
        // SAFETY: `instance` was just created by this vtable's `create`.
        Ok(unsafe { FfiPlugin::from_raw(self.slots, instance, self.name.clone()) })
    }
}
