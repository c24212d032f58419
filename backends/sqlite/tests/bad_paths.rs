//! Bad paths, bad files and hostile configs: each is a clear error, never a
//! panic, and a file that is not ours is left byte for byte as it was.
//!
//! Read-only and unreadable files are checked from a child process running
//! as `nobody` when the tests run as root (root ignores file modes).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bext_locking::{ErrorKind, PluginError};
use bext_locking_sqlite::{Sqlite, SqliteConfig, SqlitePlugin};

/// Creating an instance on `path` must fail; returns the error.
fn refused(path: &Path) -> PluginError {
    match Sqlite::open(path) {
        Ok(_) => panic!("opening {} succeeded, expected an error", path.display()),
        Err(e) => e,
    }
}

/// Creating through the `.so` must fail; returns the loader's message.
fn refused_by_so(config: &str) -> String {
    let plugin = bext_locking_loader::load(common::so_path()).unwrap();
    match plugin.create(config) {
        Ok(_) => panic!("create({config}) through the .so succeeded, expected an error"),
        Err(e) => e,
    }
}

/// Everything in `dir`, with contents, so a test can prove nothing changed
/// and no side file (`-wal`, `-shm`, `-journal`) appeared.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = if p.is_file() { std::fs::read(&p).unwrap_or_default() } else { vec![] };
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn missing_directory() {
    let dir = common::temp_dir();
    let path = dir.path().join("no/such/dir/locks.db");
    let e = refused(&path);
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(e.message.contains("does not exist"), "{e}");
    assert!(!dir.path().join("no").exists(), "the missing directory was created");
    let msg = refused_by_so(&common::config_json(&path));
    assert!(msg.contains("invalid_argument: ") && msg.contains("does not exist"), "{msg}");
}

#[test]
fn path_is_a_directory() {
    let dir = common::temp_dir();
    let e = refused(dir.path());
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("is a directory"), "{e}");
}

#[test]
fn device_is_refused() {
    let e = refused(Path::new("/dev/null"));
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("not a regular file"), "{e}");
    assert!(!Path::new("/dev/null-wal").exists(), "a WAL file was created next to /dev/null");
}

#[test]
fn not_a_database_is_refused_and_untouched() {
    let dir = common::temp_dir();
    let path = dir.path().join("notes.txt");
    let text: String = (0..2000).map(|i| format!("line {i}: important data\n")).collect();
    std::fs::write(&path, &text).unwrap();
    let before = snapshot(dir.path());
    let e = refused(&path);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("not a SQLite database"), "{e}");
    let msg = refused_by_so(&common::config_json(&path));
    assert!(msg.contains("invalid_argument: ") && msg.contains("not a SQLite database"), "{msg}");
    assert_eq!(snapshot(dir.path()), before, "the file or its folder changed");
}

#[test]
fn garbage_behind_a_sqlite_header_is_refused_and_untouched() {
    let dir = common::temp_dir();
    let path = dir.path().join("corrupt.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend((0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&path, &bytes).unwrap();
    let before = snapshot(dir.path());
    let e = refused(&path);
    assert!(e.message.contains("corrupt.db"), "{e}");
    let msg = refused_by_so(&common::config_json(&path));
    assert!(msg.contains("corrupt.db"), "{msg}");
    assert_eq!(snapshot(dir.path()), before, "the file or its folder changed");
}

#[test]
fn table_of_another_shape_is_refused_and_untouched() {
    let dir = common::temp_dir();
    let path = dir.path().join("app.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE bext_locks (name TEXT, owner TEXT); INSERT INTO bext_locks VALUES ('a', 'b');")
            .unwrap();
    }
    let before = snapshot(dir.path());
    let e = refused(&path);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("missing key, lock_id, expires_at_ms, fence"), "{e}");
    assert_eq!(snapshot(dir.path()), before, "the database changed (journal mode or schema)");
    // Another table name in the same file is fine.
    let config = SqliteConfig { table: Some("locks".into()), ..SqliteConfig::new(&path) };
    SqlitePlugin::from_config(config).expect("a free table name works");
}

#[test]
fn empty_file_becomes_a_lock_database() {
    let dir = common::temp_dir();
    let path = dir.path().join("touched.db");
    std::fs::write(&path, b"").unwrap();
    let a = Sqlite::open(&path).expect("an empty file is an empty database");
    bext_locking::LockingPlugin::try_lock(&a, "k", 1000).unwrap().unwrap();
}

#[test]
fn hostile_and_bad_configs() {
    let dir = common::temp_dir();
    let path = dir.path().join("locks.db");
    let p = serde_json::to_string(&path).unwrap();
    for (config, expect) in [
        (format!(r#"{{"path":{p},"table":"x\"; DROP TABLE y; --"}}"#), "not a valid table name"),
        (format!(r#"{{"path":{p},"table":"a b"}}"#), "not a valid table name"),
        (format!(r#"{{"path":{p},"table":""}}"#), "not a valid table name"),
        (format!(r#"{{"path":{p},"table":"sqlite_master"}}"#), "reserved"),
        (format!(r#"{{"path":{p},"busy_timeout_ms":600001}}"#), "busy_timeout_ms is 600001"),
        (format!(r#"{{"path":{p},"busy_timeout_ms":-1}}"#), "busy_timeout_ms is -1"),
        (format!(r#"{{"path":{p},"table":7}}"#), "bad config"),
        (format!(r#"{{"path":{p},"paht":"x"}}"#), "unknown config key `paht`"),
        (r#"{"busy_timeout_ms":10}"#.to_owned(), "missing field `path`"),
        ("{}".to_owned(), "missing field `path`"),
        (r#"{"path":""}"#.to_owned(), "path is empty"),
        (r#"{"path":":memory:"}"#.to_owned(), "private to one instance"),
        ("[1]".to_owned(), "must be a JSON object"),
    ] {
        let msg = refused_by_so(&config);
        assert!(msg.contains("invalid_argument: "), "{config}: {msg}");
        assert!(msg.contains(expect), "{config}: {msg} (expected {expect:?})");
    }
    assert!(!path.exists(), "a refused config created the database");
    // The in-process constructor checks the same things.
    let e = SqlitePlugin::from_config(SqliteConfig {
        table: Some("t\"x".into()),
        ..SqliteConfig::new(&path)
    })
    .err()
    .expect("hostile table refused");
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
}

#[test]
fn schema_lists_every_accepted_key() {
    let plugin = bext_locking_loader::load(common::so_path()).unwrap();
    let d = plugin.describe().unwrap();
    let mut keys: Vec<_> =
        d.config_schema["properties"].as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["busy_timeout_ms", "path", "table"]);
    assert!(d.fencing);
    assert_eq!(d.config_schema["required"], serde_json::json!(["path"]));
}

// ---- read-only and unreadable files ------------------------------------

const CHILD_PATH: &str = "BEXT_SQLITE_TEST_CHILD_PATH";

/// Not a test of its own: the unprivileged child the two tests below start.
#[test]
#[ignore = "helper run as a child process by the read-only and unreadable tests"]
fn child_opens_path() {
    let Ok(path) = std::env::var(CHILD_PATH) else { return };
    let path = PathBuf::from(path);
    let so_file = std::env::var_os(CHILD_SO).map_or_else(common::so_path, PathBuf::from);
    let so = match bext_locking_loader::load(so_file) {
        Ok(p) => match p.create(&common::config_json(&path)) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e,
        },
        Err(e) => format!("load failed: {e}"),
    };
    let direct = match Sqlite::open(&path) {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("{:?}: {}", e.kind, e.message),
    };
    println!("CHILD_DIRECT {direct}");
    println!("CHILD_SO {so}");
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Opens `path` in-process and through the `.so` without root's powers:
/// `(direct error, .so error)`.
fn open_unprivileged(path: &Path) -> (String, String) {
    if !running_as_root() {
        let direct = match Sqlite::open(path) {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("{:?}: {}", e.kind, e.message),
        };
        let so = match bext_locking_loader::load(common::so_path())
            .unwrap()
            .create(&common::config_json(path))
        {
            Ok(_) => "ok".to_owned(),
            Err(e) => e,
        };
        return (direct, so);
    }
    // `nobody` may not reach the build folder (a checkout under /root, or
    // chmod 700): run a copy of this test binary and of the plugin from a
    // folder of their own that it can enter.
    let Some(kit) = ChildKit::new() else { return skipped() };
    let out = Command::new(&kit.exe)
        .args(["--ignored", "--exact", "child_opens_path", "--nocapture", "--test-threads=1"])
        .env(CHILD_PATH, path)
        .env(CHILD_SO, &kit.so)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("start the child as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(tag).map(|(_, rest)| rest.to_owned()))
            .unwrap_or_else(|| {
                panic!(
                    "child printed no {tag}: status {}, stdout {stdout}, stderr {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    };
    (line("CHILD_DIRECT "), line("CHILD_SO "))
}

/// Where the child finds the plugin to load.
const CHILD_SO: &str = "BEXT_SQLITE_TEST_CHILD_SO";

/// What `open_unprivileged` returns when the child cannot be started.
const SKIPPED: &str = "SKIPPED";

fn skipped() -> (String, String) {
    (SKIPPED.to_owned(), SKIPPED.to_owned())
}

/// Copies of this test binary and of the plugin in a fresh folder that
/// `nobody` can enter, for the unprivileged child.
struct ChildKit {
    _dir: tempfile::TempDir,
    exe: PathBuf,
    so: PathBuf,
}

impl ChildKit {
    /// `None`, with a one-line reason on stderr, when `nobody` could not
    /// reach the copies (a temp folder under a private one).
    fn new() -> Option<Self> {
        let dir = common::temp_dir();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        if let Some(closed) = dir.path().ancestors().find(|a| {
            std::fs::metadata(a).map(|m| m.permissions().mode() & 0o001 == 0).unwrap_or(true)
        }) {
            eprintln!(
                "SKIPPED: the user nobody cannot enter {} (no search permission for others), so \
                 the unprivileged child cannot start; set TMPDIR to a folder others can enter",
                closed.display()
            );
            return None;
        }
        let exe = dir.path().join("bad_paths-child");
        let so = dir.path().join("libbext_locking_sqlite.so");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).expect("copy the test binary");
        std::fs::copy(common::so_path(), &so).expect("copy the plugin");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&so, std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(Self { _dir: dir, exe, so })
    }
}

/// A finished lock database in a folder `nobody` can enter but not write.
fn lock_database(dir: &Path) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("locks.db");
    let a = Sqlite::open(&path).unwrap();
    bext_locking::LockingPlugin::try_lock(&a, "k", 1000).unwrap().unwrap();
    drop(a); // the last close folds the WAL back into the file
    path
}

#[test]
fn read_only_file_is_refused_and_untouched() {
    let dir = common::temp_dir();
    let path = lock_database(dir.path());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = snapshot(dir.path());
    let (direct, so) = open_unprivileged(&path);
    if direct == SKIPPED {
        return;
    }
    assert!(direct.starts_with("InvalidArgument: ") && direct.contains("read-only"), "{direct}");
    assert!(so.contains("invalid_argument: ") && so.contains("read-only"), "{so}");
    assert_eq!(snapshot(dir.path()), before, "the file or its folder changed");
}

#[test]
fn unreadable_file_is_refused_and_untouched() {
    let dir = common::temp_dir();
    let path = lock_database(dir.path());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let before = snapshot(dir.path());
    let (direct, so) = open_unprivileged(&path);
    if direct == SKIPPED {
        return;
    }
    assert!(direct.starts_with("InvalidArgument: ") && direct.contains("cannot read"), "{direct}");
    assert!(so.contains("invalid_argument: ") && so.contains("cannot read"), "{so}");
    assert_eq!(snapshot(dir.path()), before, "the file or its folder changed");
}

#[test]
fn a_writable_file_in_a_read_only_folder_says_the_folder_must_be_writable() {
    let dir = common::temp_dir();
    let path = lock_database(dir.path());
    // The file itself is open to all; its folder (0755, not ours as nobody)
    // is not, and WAL mode needs to create `-wal` and `-shm` there.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    if !running_as_root() {
        // Not root: the folder is ours, so close it to ourselves.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let (direct, so) = open_unprivileged(&path);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if direct == SKIPPED {
        return;
    }
    let hint = format!("the folder `{}` must be writable too", dir.path().display());
    assert!(direct.contains(&hint) && direct.contains("WAL"), "{direct}");
    assert!(so.contains(&hint), "{so}");
}
