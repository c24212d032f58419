//! Plugins by name, following their folder as files come, change and go.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bext_locking::LockingPlugin;
use serde::Serialize;

use crate::private_copy::{Failure, Fingerprint, LoadRequest};
use crate::report::{ScanReport, ScannedPlugin, SkipKind, Skipped};
use crate::scan::{self, FolderVerdict, ScanOptions, load_one};

/// How a [`Registry`] loads and follows its folder.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// How each file is checked and loaded.
    pub scan: ScanOptions,
    /// How often the folder is looked at. Default 100 ms.
    pub poll_interval: Duration,
    /// How long a file must stay unchanged (same size, mtime, inode, ctime)
    /// before it is loaded, so a file still being copied in is not. A file
    /// whose mtime is already this old is loaded at first sight. Also how
    /// long a file must stay gone before its plugin is removed, so a
    /// delete-then-copy deploy is one reload. Default 200 ms.
    pub settle: Duration,
    /// Start a thread that polls the folder. Without it, the host calls
    /// [`Registry::refresh`] when it wants changes picked up. Default on.
    pub watch: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            scan: ScanOptions::default(),
            poll_interval: Duration::from_millis(100),
            settle: Duration::from_millis(200),
            watch: true,
        }
    }
}

/// Something that changed in a [`Registry`]. Every event is also logged
/// through the `log` facade (target `bext_locking_loader`): `Rejected` at
/// warn level, the others at info.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RegistryEvent {
    /// A name is now available.
    Loaded {
        /// The plugin name.
        name: String,
        /// Its version.
        version: String,
        /// The file it came from.
        path: PathBuf,
    },
    /// New instances of a name now get new code; existing instances keep
    /// running the code they were created with.
    Reloaded {
        /// The plugin name.
        name: String,
        /// The version instances created before got.
        previous_version: String,
        /// The version new instances get.
        version: String,
        /// The file it came from.
        path: PathBuf,
    },
    /// A name is no longer available for new instances; existing ones keep
    /// working until dropped.
    Removed {
        /// The plugin name.
        name: String,
        /// The version that was available.
        version: String,
        /// The file that was removed.
        path: PathBuf,
    },
    /// A new or changed file was not loaded. Whatever the file provided
    /// before stays in service.
    Rejected {
        /// The file (or the folder, when it cannot be read).
        path: PathBuf,
        /// The category of the reason.
        kind: SkipKind,
        /// What a person should read.
        reason: String,
        /// `"name version"` of the plugin this file provided before and that
        /// is still loaded from it, if any.
        kept: Option<String>,
    },
}

impl fmt::Display for RegistryEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loaded { name, version, path } => {
                write!(f, "plugin {name} {version} loaded from {}", path.display())
            }
            Self::Reloaded { name, previous_version, version, path } => write!(
                f,
                "plugin {name} reloaded from {}: {previous_version} -> {version} for new instances",
                path.display()
            ),
            Self::Removed { name, version, path } => write!(
                f,
                "plugin {name} {version} removed ({} is gone); existing instances keep working",
                path.display()
            ),
            Self::Rejected { path, reason, kept, .. } => {
                write!(f, "{} rejected: {reason}", path.display())?;
                match kept {
                    Some(kept) => write!(f, "; still serving {kept} loaded earlier from it"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Plugins loaded from a folder, by name, following the folder.
///
/// Created by [`Registry::open`], which loads the folder the way [`scan`](crate::scan)
/// does, then (by default) polls it. A new or changed file is loaded from a
/// private copy once it has stopped changing, validated, and only then swaps
/// in; a file that fails to load never replaces a working plugin. Instances
/// already created keep their code; libraries are never unloaded.
///
/// ```no_run
/// use bext_locking_loader::{Registry, RegistryOptions};
/// let registry = Registry::open("/usr/local/lib/bext-locking", RegistryOptions::default())?;
/// let events = registry.subscribe();
/// let locks = registry.create("memory", "{}")?;
/// // ... later, after a deploy replaced the file:
/// while let Ok(event) = events.try_recv() {
///     println!("{event}");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Registry {
    shared: Arc<Shared>,
    /// Dropping it wakes and stops the poller.
    stop: Option<Sender<()>>,
    poller: Option<JoinHandle<()>>,
}

struct Shared {
    dir: PathBuf,
    options: RegistryOptions,
    copy_dir: PathBuf,
    /// The plugin serving each name. Held only for lookups and the swap.
    active: RwLock<BTreeMap<String, Active>>,
    /// Per-file state; held for a whole poll, so polls never overlap.
    files: Mutex<Files>,
    subscribers: Mutex<Vec<Sender<RegistryEvent>>>,
}

#[derive(Clone)]
struct Active {
    info: ScannedPlugin,
    /// Which load this is: a different generation under the same name is a reload.
    generation: u64,
}

#[derive(Default)]
struct Files {
    by_name: BTreeMap<OsString, FileState>,
    next_generation: u64,
    /// The last folder read error reported, so it is reported once.
    dir_error: Option<String>,
    /// The folder's owner and mode at the last poll: when they change,
    /// files refused for the folder's sake are looked at again (their own
    /// fingerprints did not change).
    folder_perms: Option<(u32, u32)>,
}

/// What the file looked like (`None`: it could not be stat'ed, e.g. a
/// dangling symlink).
type Seen = Option<Fingerprint>;

struct FileState {
    seen: Seen,
    /// When `seen` was first observed.
    seen_since: Instant,
    /// The fingerprint last acted on (loaded, rejected or found unchanged):
    /// nothing more happens until the file changes again.
    tried: Option<Seen>,
    /// The last plugin loaded from this file.
    good: Option<Good>,
    /// Why the latest content is not what serves (rejection or duplicate).
    last_error: Option<Skipped>,
    missing_since: Option<Instant>,
}

struct Good {
    info: ScannedPlugin,
    hash: Option<u64>,
    generation: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the file's mtime is at least `settle` in the past.
fn written_before(fp: &Fingerprint, settle: Duration) -> bool {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
    now - fp.mtime_ns >= settle.as_nanos() as i128
}

impl Registry {
    /// Loads every plugin in `dir` and, when `options.watch` is set, starts
    /// following the folder. Fails only when the folder cannot be read;
    /// files that cannot be loaded are listed in [`report`](Self::report).
    pub fn open(dir: impl AsRef<Path>, options: RegistryOptions) -> std::io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::read_dir(&dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot read plugin folder {}: {e}", dir.display()),
            )
        })?;
        let shared = Arc::new(Shared {
            copy_dir: options.scan.copy_dir(),
            dir,
            options,
            active: RwLock::new(BTreeMap::new()),
            files: Mutex::new(Files::default()),
            subscribers: Mutex::new(Vec::new()),
        });
        shared.poll(true);
        let mut registry = Self { shared, stop: None, poller: None };
        if registry.shared.options.watch {
            let (stop, stopped) = mpsc::channel::<()>();
            let shared = Arc::clone(&registry.shared);
            let interval = shared.options.poll_interval;
            let poller =
                std::thread::Builder::new().name("bext-locking-watch".into()).spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                        shared.poll(false);
                    }
                })?;
            registry.stop = Some(stop);
            registry.poller = Some(poller);
        }
        Ok(registry)
    }

    /// The folder followed.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Creates an instance of the plugin called `name` from a config JSON
    /// object, with the code currently loaded for that name.
    pub fn create(&self, name: &str, config_json: &str) -> Result<Box<dyn LockingPlugin>, String> {
        let plugin = self.get(name).ok_or_else(|| {
            let names = self.names();
            let available = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
            format!(
                "no plugin named `{name}` in {} (available: {available})",
                self.shared.dir.display()
            )
        })?;
        plugin.plugin.create(config_json)
    }

    /// The plugin currently serving `name`.
    pub fn get(&self, name: &str) -> Option<ScannedPlugin> {
        self.shared.active().get(name).map(|a| a.info.clone())
    }

    /// The names available, sorted.
    pub fn names(&self) -> Vec<String> {
        self.shared.active().keys().cloned().collect()
    }

    /// The plugins currently serving, in name order.
    pub fn plugins(&self) -> Vec<ScannedPlugin> {
        self.shared.active().values().map(|a| a.info.clone()).collect()
    }

    /// The current state as a scan report: the plugins serving, and each
    /// file whose latest content is not serving, with the reason (a file
    /// may appear in both, when an older build of it serves).
    pub fn report(&self) -> ScanReport {
        let files = lock(&self.shared.files);
        let mut loaded: Vec<ScannedPlugin> = self.plugins();
        loaded.sort_by(|a, b| a.path.cmp(&b.path));
        let skipped = files.by_name.values().filter_map(|s| s.last_error.clone()).collect();
        ScanReport { dir: self.shared.dir.clone(), loaded, skipped }
    }

    /// A channel receiving every event from now on. Events of the initial
    /// load happened before anyone could subscribe: see [`report`](Self::report).
    pub fn subscribe(&self) -> Receiver<RegistryEvent> {
        let (tx, rx) = mpsc::channel();
        lock(&self.shared.subscribers).push(tx);
        rx
    }

    /// Looks at the folder now, with the same settling rules as the poller.
    pub fn refresh(&self) {
        self.shared.poll(false);
    }

    /// Looks at the folder now and loads every new or changed file at once,
    /// without waiting for it to settle (for a host that knows a deploy has
    /// finished, e.g. on SIGHUP).
    pub fn reload_now(&self) {
        self.shared.poll(true);
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("dir", &self.shared.dir)
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(poller) = self.poller.take() {
            // A poll in progress finishes first; a panic in it was already reported.
            let _ = poller.join();
        }
    }
}

impl Shared {
    fn active(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Active>> {
        self.active.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// One look at the folder: loads what settled, removes what stayed
    /// gone, swaps the winners in and publishes what changed.
    fn poll(&self, force: bool) {
        let mut events = Vec::new();
        {
            let mut files = lock(&self.files);
            self.poll_files(&mut files, force, &mut events);
        }
        self.publish(events);
    }

    fn poll_files(&self, files: &mut Files, force: bool, events: &mut Vec<RegistryEvent>) {
        let settle = self.options.settle;
        let allow_insecure = self.options.scan.allow_insecure;
        let names = match scan::candidates(&self.dir) {
            Ok(names) => names,
            Err(e) => {
                // Maybe a moment's trouble (the folder being replaced):
                // nothing is removed, the error is reported once.
                let reason = format!("cannot read the folder: {e}");
                if files.dir_error.as_ref() != Some(&reason) {
                    files.dir_error = Some(reason.clone());
                    events.push(RegistryEvent::Rejected {
                        path: self.dir.clone(),
                        kind: SkipKind::Unreadable,
                        reason,
                        kept: None,
                    });
                }
                return;
            }
        };
        files.dir_error = None;
        let perms = std::fs::metadata(&self.dir).ok().map(|m| (m.uid(), m.mode()));
        if perms != files.folder_perms {
            files.folder_perms = perms;
            for state in files.by_name.values_mut() {
                if state.last_error.as_ref().is_some_and(|e| e.kind == SkipKind::Insecure) {
                    state.tried = None;
                }
            }
        }
        let now = Instant::now();
        let mut folder: Option<FolderVerdict> = None;
        let mut newly_loaded = HashSet::new();
        let mut changed = false;

        for name in &names {
            let path = self.dir.join(name);
            let seen: Seen = std::fs::metadata(&path).ok().map(|m| Fingerprint::of(&m));
            let state = files.by_name.entry(name.clone()).or_insert_with(|| FileState {
                seen,
                seen_since: now,
                tried: None,
                good: None,
                last_error: None,
                missing_since: None,
            });
            state.missing_since = None;
            if state.seen != seen {
                state.seen = seen;
                state.seen_since = now;
            }
            if state.tried == Some(seen) {
                continue;
            }
            let settled = force
                || now.duration_since(state.seen_since) >= settle
                || seen.is_some_and(|fp| written_before(&fp, settle));
            if !settled {
                continue;
            }
            let folder = folder.get_or_insert_with(|| FolderVerdict::of(&self.dir, allow_insecure));
            let req = LoadRequest {
                path: &path,
                copy_dir: &self.copy_dir,
                expect: seen,
                want_hash: true,
                known_hash: state.good.as_ref().and_then(|g| g.hash),
            };
            match load_one(&req, folder, allow_insecure) {
                Ok(loaded) => {
                    files.next_generation += 1;
                    let state = files.by_name.get_mut(name).expect("inserted above");
                    state.tried = Some(seen);
                    state.last_error = None;
                    state.good = Some(Good {
                        info: loaded.info,
                        hash: loaded.hash,
                        generation: files.next_generation,
                    });
                    newly_loaded.insert(name.clone());
                    changed = true;
                }
                // Written to while we read it: wait for it to settle again.
                Err(Failure::Changing) => state.seen_since = now,
                // Back to the bytes that serve (e.g. a broken build was
                // replaced by the old one again): nothing to load, nothing wrong.
                Err(Failure::Unchanged) => {
                    state.tried = Some(seen);
                    if state.last_error.as_ref().is_some_and(|e| e.kind != SkipKind::Duplicate) {
                        state.last_error = None;
                    }
                }
                Err(failure) => {
                    state.tried = Some(seen);
                    let skip = scan::skipped(path, failure);
                    events.push(RegistryEvent::Rejected {
                        path: skip.path.clone(),
                        kind: skip.kind,
                        reason: skip.reason.clone(),
                        kept: state
                            .good
                            .as_ref()
                            .map(|g| format!("{} {}", g.info.name, g.info.version)),
                    });
                    state.last_error = Some(skip);
                }
            }
        }

        let present: HashSet<&OsString> = names.iter().collect();
        let mut gone = Vec::new();
        for (name, state) in files.by_name.iter_mut().filter(|(n, _)| !present.contains(n)) {
            let since = *state.missing_since.get_or_insert(now);
            if force || now.duration_since(since) >= settle {
                gone.push(name.clone());
            }
        }
        for name in gone {
            if files.by_name.remove(&name).is_some_and(|s| s.good.is_some()) {
                changed = true;
            }
        }

        if changed {
            self.swap(files, &newly_loaded, events);
        }
    }

    /// Recomputes which file serves each name (first by file name wins),
    /// installs it, and turns the difference into events.
    fn swap(
        &self,
        files: &mut Files,
        newly_loaded: &HashSet<OsString>,
        events: &mut Vec<RegistryEvent>,
    ) {
        let mut winners: BTreeMap<String, Active> = BTreeMap::new();
        for (file, state) in files.by_name.iter_mut() {
            let Some(good) = &state.good else { continue };
            match winners.get(&good.info.name) {
                None => {
                    let info = good.info.clone();
                    winners.insert(info.name.clone(), Active { info, generation: good.generation });
                    if state.last_error.as_ref().is_some_and(|e| e.kind == SkipKind::Duplicate) {
                        state.last_error = None;
                    }
                }
                Some(first) => {
                    let skip = scan::duplicate(&good.info, &first.info.path.display().to_string());
                    if newly_loaded.contains(file) {
                        events.push(RegistryEvent::Rejected {
                            path: skip.path.clone(),
                            kind: skip.kind,
                            reason: skip.reason.clone(),
                            kept: None,
                        });
                    }
                    state.last_error = Some(skip);
                }
            }
        }
        let mut active = self.active.write().unwrap_or_else(PoisonError::into_inner);
        for (name, new) in &winners {
            match active.get(name) {
                None => events.push(RegistryEvent::Loaded {
                    name: name.clone(),
                    version: new.info.version.clone(),
                    path: new.info.path.clone(),
                }),
                Some(old) if old.generation != new.generation => {
                    events.push(RegistryEvent::Reloaded {
                        name: name.clone(),
                        previous_version: old.info.version.clone(),
                        version: new.info.version.clone(),
                        path: new.info.path.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        for (name, old) in active.iter().filter(|(n, _)| !winners.contains_key(*n)) {
            events.push(RegistryEvent::Removed {
                name: name.clone(),
                version: old.info.version.clone(),
                path: old.info.path.clone(),
            });
        }
        *active = winners;
    }

    fn publish(&self, events: Vec<RegistryEvent>) {
        if events.is_empty() {
            return;
        }
        let mut subscribers = lock(&self.subscribers);
        for event in events {
            match &event {
                RegistryEvent::Rejected { .. } => log::warn!("{event}"),
                _ => log::info!("{event}"),
            }
            // A receiver that was dropped unsubscribes.
            subscribers.retain(|s| s.send(event.clone()).is_ok());
        }
    }
}
