//! Loading a plugin file through a private copy.
//!
//! glibc (and dyld) return the already-loaded library when a path, or the
//! same inode, is opened again, so a rebuilt file at the same path would
//! silently keep the old code. And a library mapped straight from the
//! plugin folder crashes the process (SIGBUS) when someone overwrites that
//! file in place. So each load reads the file through the handle its checks
//! were made on, checks the image is complete, writes the bytes to a fresh
//! file with a unique name, opens that, and unlinks it at once: the mapping
//! stays valid, nobody else can reach the copy, and the original can be
//! overwritten, renamed or removed at any time.

use std::hash::{DefaultHasher, Hasher};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use crate::LoadErrorKind;
use crate::library::{LoadedPlugin, load_as};
use crate::report::{ScannedPlugin, SkipKind};
use crate::security::CheckedFile;

/// The file name suffix of shared libraries on this platform.
pub(crate) const LIBRARY_SUFFIX: &str = if cfg!(target_os = "macos") { ".dylib" } else { ".so" };

/// Files larger than this are refused rather than read: the biggest plugin
/// with full debug info is a few hundred MiB.
const MAX_PLUGIN_BYTES: u64 = 1 << 30;

/// What a file's inode looked like when it was read: if any of this changes
/// the file was written, replaced, chmod'ed or chown'ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) len: u64,
    pub(crate) mtime_ns: i128,
    pub(crate) ctime_ns: i128,
}

impl Fingerprint {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// Why a file was not loaded, before it is worded for a report.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The file changed while it was being read: someone is still writing.
    Changing,
    /// The content hash equals the one the caller already has loaded.
    Unchanged,
    /// A reason to report.
    Skip(SkipKind, String),
}

/// A successfully loaded plugin file.
pub(crate) struct Loaded {
    pub(crate) info: ScannedPlugin,
    /// Hash of the bytes loaded (only when asked for).
    pub(crate) hash: Option<u64>,
}

/// What the caller wants done beyond loading.
pub(crate) struct LoadRequest<'a> {
    /// The path in the plugin folder, as reports show it.
    pub(crate) path: &'a Path,
    /// Where the private copy is written.
    pub(crate) copy_dir: &'a Path,
    /// The fingerprint the caller decided to load; a file that no longer
    /// matches is [`Failure::Changing`].
    pub(crate) expect: Option<Fingerprint>,
    /// Hash the bytes (the registry does, to skip files touched but not changed).
    pub(crate) want_hash: bool,
    /// Stop with [`Failure::Unchanged`] when the bytes hash to this.
    pub(crate) known_hash: Option<u64>,
}

/// Reads, checks, copies, loads and validates one plugin file.
pub(crate) fn load_checked(req: &LoadRequest<'_>, checked: CheckedFile) -> Result<Loaded, Failure> {
    let CheckedFile { file, meta, .. } = checked;
    let before = Fingerprint::of(&meta);
    if req.expect.is_some_and(|fp| fp != before) {
        return Err(Failure::Changing);
    }
    // Only the headers the checks need are read to parse the image, and
    // then only the bytes the copy keeps: debug info, most of a build that
    // has it, is never read at all.
    let unchanged = || file.metadata().map(|m| Fingerprint::of(&m)).ok() == Some(before);
    if before.len > MAX_PLUGIN_BYTES {
        return Err(Failure::Skip(
            SkipKind::Malformed,
            format!("{} bytes is too large for a plugin (limit {MAX_PLUGIN_BYTES})", before.len),
        ));
    }
    let plan = match check_image(&object::ReadCache::new(&file), before.len) {
        Ok(plan) => plan,
        // Half a file because someone is writing it is not a verdict yet.
        Err(_) if !unchanged() => return Err(Failure::Changing),
        Err(m) => return Err(Failure::Skip(SkipKind::Malformed, m)),
    };
    let kept = plan.kept(before.len);
    let mut bytes = vec![0u8; kept.iter().map(|r| (r.end - r.start) as usize).sum()];
    let mut at = 0;
    for range in &kept {
        let n = (range.end - range.start) as usize;
        match file.read_exact_at(&mut bytes[at..at + n], range.start) {
            Ok(()) => at += n,
            // Shorter than it was a moment ago: someone is writing it.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(Failure::Changing);
            }
            Err(e) => {
                return Err(Failure::Skip(
                    SkipKind::Unreadable,
                    format!("cannot read the file: {e}"),
                ));
            }
        }
    }
    if !unchanged() {
        return Err(Failure::Changing);
    }
    let hash = req.want_hash.then(|| {
        // Only the bytes that would be loaded count: a rebuild that changed
        // nothing but debug info is not a new plugin. In-process only, so
        // the hasher's unspecified stability across Rust releases is fine.
        let mut h = DefaultHasher::new();
        h.write(&bytes);
        h.finish()
    });
    if hash.is_some() && hash == req.known_hash {
        return Err(Failure::Unchanged);
    }
    let plugin = load_copy(req, &bytes, &kept, before.len)?;
    let info = validate(req.path, plugin)?;
    Ok(Loaded { info, hash })
}

/// Which bytes of an image the private copy leaves out.
#[derive(Debug, Default)]
struct CopyPlan {
    /// Sorted, disjoint byte ranges of debug sections past every segment:
    /// nothing maps them, and nothing could read them from an unlinked copy
    /// anyway, so the copy has holes there. They are most of a build with
    /// debug info, so this makes each load several times cheaper and each
    /// leaked mapping (see docs/LOADER.md) that much smaller.
    holes: Vec<Range<u64>>,
}

impl CopyPlan {
    /// The ranges that are copied, for a file of `len` bytes.
    fn kept(&self, len: u64) -> Vec<Range<u64>> {
        let mut kept = Vec::with_capacity(self.holes.len() + 1);
        let mut at = 0;
        for hole in &self.holes {
            kept.push(at..hole.start);
            at = hole.end;
        }
        kept.push(at..len);
        kept
    }
}

/// Refuses an image the dynamic loader would map but then fault on: a
/// truncated file (copied halfway, a full disk) whose segments reach past
/// its end would raise SIGBUS when its pages are touched, inside `dlopen`.
/// Returns what the private copy may leave out.
fn check_image<'a, R: object::ReadRef<'a>>(data: R, len: u64) -> Result<CopyPlan, String> {
    use object::{Object, ObjectKind, ObjectSection, ObjectSegment};
    let image = object::File::parse(data)
        .map_err(|e| format!("not a shared library, or truncated ({e})"))?;
    if image.kind() != ObjectKind::Dynamic {
        return Err(format!("not a shared library (object kind {:?})", image.kind()));
    }
    let past_end =
        |(offset, size): (u64, u64)| offset.checked_add(size).is_none_or(|end| end > len);
    if image.segments().any(|s| past_end(s.file_range())) {
        return Err(format!("truncated: a segment extends past the end of the file ({len} bytes)"));
    }
    if image.sections().filter_map(|s| s.file_range()).any(past_end) {
        return Err(format!("truncated: a section extends past the end of the file ({len} bytes)"));
    }
    let loaded_end =
        image.segments().map(|s| s.file_range()).map(|(o, n)| o + n).max().unwrap_or(0);
    let mut holes: Vec<Range<u64>> = image
        .sections()
        .filter(|s| s.name().is_ok_and(|n| n.starts_with(".debug") || n.starts_with(".zdebug")))
        .filter_map(|s| s.file_range())
        .filter(|&(offset, size)| offset >= loaded_end && size > 0)
        .map(|(offset, size)| offset..offset + size)
        .collect();
    holes.sort_by_key(|r| r.start);
    // Merge, so `kept` sees disjoint ranges even for odd layouts.
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(holes.len());
    for hole in holes {
        match merged.last_mut() {
            Some(last) if hole.start <= last.end => last.end = last.end.max(hole.end),
            _ => merged.push(hole),
        }
    }
    Ok(CopyPlan { holes: merged })
}

/// Writes the kept bytes at their offsets in a fresh, uniquely named file of
/// the original's length (holes elsewhere), loads it and unlinks it.
fn load_copy(
    req: &LoadRequest<'_>,
    bytes: &[u8],
    kept: &[Range<u64>],
    len: u64,
) -> Result<LoadedPlugin, Failure> {
    let copy_failed = |e: std::io::Error| {
        Failure::Skip(
            SkipKind::LoadFailed,
            format!("cannot write a private copy in {}: {e}", req.copy_dir.display()),
        )
    };
    // Created 0600 with O_EXCL under a random name: nobody else can swap it
    // between our write and the dlopen.
    let mut copy = tempfile::Builder::new()
        .prefix(".bext-locking-plugin-")
        .suffix(LIBRARY_SUFFIX)
        .tempfile_in(req.copy_dir)
        .map_err(copy_failed)?;
    write_sparse(copy.as_file_mut(), bytes, kept, len).map_err(copy_failed)?;
    let loaded = load_as(copy.path(), req.path);
    // Unlinked whatever happened: a loaded copy stays mapped without a name.
    drop(copy);
    loaded.map_err(|e| {
        let (kind, reason) = classify(&e.kind);
        Failure::Skip(kind, reason)
    })
}

fn write_sparse(
    file: &mut std::fs::File,
    bytes: &[u8],
    kept: &[Range<u64>],
    len: u64,
) -> std::io::Result<()> {
    let mut at = 0;
    for range in kept {
        let n = (range.end - range.start) as usize;
        file.write_all_at(&bytes[at..at + n], range.start)?;
        at += n;
    }
    // The full length, so every offset the headers name exists in the copy
    // (a hole at the very end is not created by writing alone).
    file.set_len(len)
}

/// Words a [`LoadErrorKind`] for a report (the path is shown beside it).
pub(crate) fn classify(kind: &LoadErrorKind) -> (SkipKind, String) {
    let host = bext_locking_ffi::BEXT_LOCKING_ABI_VERSION;
    match kind {
        LoadErrorKind::Open(msg) => (SkipKind::LoadFailed, format!("failed to load: {msg}")),
        // Private copies are checked before they are made; kept for completeness.
        LoadErrorKind::Insecure(why) => (
            SkipKind::Insecure,
            format!("refused: {why}; {}", crate::security::ONLY_TRUSTED_WRITERS),
        ),
        LoadErrorKind::NoEntrySymbol => (
            SkipKind::NotAPlugin,
            "not a bext-locking plugin (no `bext_locking_plugin_entry` symbol)".to_owned(),
        ),
        LoadErrorKind::EntryRefused => (
            SkipKind::AbiMismatch,
            format!("ABI mismatch: the plugin refused host ABI version {host}"),
        ),
        LoadErrorKind::AbiMismatch { found } => (
            SkipKind::AbiMismatch,
            format!("ABI mismatch: built for ABI version {found}, this host speaks version {host}"),
        ),
        LoadErrorKind::VTableTooSmall { found } => (
            SkipKind::AbiMismatch,
            format!(
                "ABI mismatch: vtable is {found} bytes, smaller than the {} bytes of ABI v1",
                bext_locking_ffi::BEXT_LOCKING_VTABLE_V1_SIZE
            ),
        ),
        LoadErrorKind::NullField(field) => {
            (SkipKind::InvalidPlugin, format!("invalid plugin: vtable field `{field}` is NULL"))
        }
        LoadErrorKind::BadString(field) => (
            SkipKind::InvalidPlugin,
            format!("invalid plugin: vtable `{field}` is empty or not valid UTF-8"),
        ),
    }
}

/// The last check before a plugin may serve: `describe` must answer, and
/// agree with the vtable about who the plugin is.
fn validate(path: &Path, plugin: LoadedPlugin) -> Result<ScannedPlugin, Failure> {
    let invalid =
        |m: String| Failure::Skip(SkipKind::InvalidPlugin, format!("invalid plugin: {m}"));
    let d = plugin.describe().map_err(invalid)?;
    if d.name != plugin.name() || d.version != plugin.version() {
        return Err(invalid(format!(
            "describe says {} {} but the vtable says {} {}",
            d.name,
            d.version,
            plugin.name(),
            plugin.version()
        )));
    }
    if d.abi_version != bext_locking_ffi::BEXT_LOCKING_ABI_VERSION {
        return Err(Failure::Skip(
            SkipKind::AbiMismatch,
            format!("ABI mismatch: describe reports ABI version {}", d.abi_version),
        ));
    }
    Ok(ScannedPlugin {
        name: d.name,
        version: d.version,
        abi_version: d.abi_version,
        fencing: d.fencing,
        description: d.description,
        path: path.to_path_buf(),
        plugin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_leaves_out_only_debug_sections_past_the_loaded_segments() {
        use object::{Object, ObjectSection, ObjectSegment};
        let path = bext_locking_test_support::plugin_path("fixture-reload-v1");
        let bytes = std::fs::read(path).unwrap();
        let plan = check_image(&*bytes, bytes.len() as u64).unwrap();
        let image = object::File::parse(&*bytes).unwrap();
        let debug: u64 = image
            .sections()
            .filter(|s| s.name().is_ok_and(|n| n.starts_with(".debug")))
            .filter_map(|s| s.file_range())
            .map(|(_, size)| size)
            .sum();
        let holes: u64 = plan.holes.iter().map(|r| r.end - r.start).sum();
        // Built with debug info (tests usually are), exactly that is left out.
        assert_eq!(holes, debug);
        let loaded_end = image.segments().map(|s| s.file_range()).map(|(o, n)| o + n).max();
        assert!(plan.holes.iter().all(|h| Some(h.start) >= loaded_end));
        let kept: u64 = plan.kept(bytes.len() as u64).iter().map(|r| r.end - r.start).sum();
        assert_eq!(kept + holes, bytes.len() as u64);
    }

    #[test]
    fn a_truncated_image_is_refused_before_the_loader_sees_it() {
        let path = bext_locking_test_support::plugin_path("fixture-reload-v1");
        let bytes = std::fs::read(path).unwrap();
        for len in [0, 3, 64, 1000, bytes.len() / 3, bytes.len() - 1] {
            assert!(check_image(&bytes[..len], len as u64).is_err(), "{len} bytes accepted");
        }
    }
}
