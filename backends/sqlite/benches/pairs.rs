//! Acquire+release pairs per second on one database file: through the loaded
//! `.so` versus the very same statements issued directly with `rusqlite`,
//! with 1 process and with 4 processes (each on its own key, all contending
//! for the file's write lock).
//!
//! `cargo bench -p bext-locking-sqlite` (BENCH_SECS sets the length of each
//! run, default 2; BENCH_DIR the folder for the database file, default the
//! system temp folder).
//!
//! The bench re-runs itself as worker processes:
//! `pairs --worker direct|so --path FILE --key KEY --secs S --start-ms T`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bext_locking::LockingPlugin;
use bext_locking_sqlite::Statements;
use rusqlite::{Connection, OpenFlags};

const TTL_MS: i64 = 30_000;
const ROUNDS: usize = 3;

/// The same statements as the plugin on a connection set up the same way,
/// with nothing in between.
struct Direct {
    conn: Connection,
    statements: Statements,
}

impl Direct {
    fn open(path: &Path) -> Self {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).expect("open");
        conn.busy_timeout(Duration::from_millis(5_000)).unwrap();
        let _: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        let statements = Statements::new(bext_locking_sqlite::DEFAULT_TABLE);
        conn.execute_batch(&statements.create_table).unwrap();
        Self { conn, statements }
    }

    fn pair(&self, key: &str) {
        // A fresh lock_id per acquisition, as the plugin mints one.
        let lock_id = uuid::Uuid::new_v4().to_string();
        let fence: i64 = self
            .conn
            .prepare_cached(&self.statements.acquire)
            .unwrap()
            .query_row((key, &lock_id, TTL_MS), |r| r.get(0))
            .expect("acquire");
        assert!(fence > 0);
        let n = self
            .conn
            .prepare_cached(&self.statements.release)
            .unwrap()
            .execute((key, &lock_id))
            .unwrap();
        assert_eq!(n, 1);
    }
}

fn so_instance(path: &Path) -> Box<dyn LockingPlugin> {
    let so = bext_locking_test_support::plugin_path("sqlite");
    let plugin = bext_locking_loader::load(&so).expect("load the sqlite .so");
    plugin.create(&serde_json::json!({ "path": path }).to_string()).expect("create")
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Runs pairs on `key` for `secs` from wall-clock `start_ms`; returns pairs/s.
fn work(mode: &str, path: &Path, key: &str, secs: f64, start_ms: u64) -> f64 {
    let mut pair: Box<dyn FnMut()> = match mode {
        "direct" => {
            let d = Direct::open(path);
            let key = key.to_owned();
            Box::new(move || d.pair(&key))
        }
        "so" => {
            let p = so_instance(path);
            let key = key.to_owned();
            Box::new(move || {
                let h = p.try_lock(&key, TTL_MS as u64).expect("try_lock").expect("acquired");
                p.release(h).expect("release");
            })
        }
        other => panic!("unknown mode {other}"),
    };
    pair(); // warm the statement cache
    let now = wall_ms();
    if start_ms > now {
        std::thread::sleep(Duration::from_millis(start_ms - now));
    }
    let period = Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < period {
        for _ in 0..16 {
            pair();
        }
        n += 16;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Total pairs/s of `procs` worker processes started together.
fn processes(mode: &str, path: &Path, procs: usize, secs: f64) -> f64 {
    let exe = std::env::current_exe().unwrap();
    // Time to start and open before the common start.
    let start_ms = wall_ms() + 500;
    let children: Vec<_> = (0..procs)
        .map(|i| {
            Command::new(&exe)
                .args(["--worker", mode, "--key", &format!("bench/{i}")])
                .args(["--path".as_ref(), path.as_os_str()])
                .args(["--secs", &secs.to_string(), "--start-ms", &start_ms.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "worker failed: {}", out.status);
            String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().expect("worker rate")
        })
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if let Some(mode) = opt("--worker") {
        let path = PathBuf::from(opt("--path").expect("--path"));
        let secs: f64 = opt("--secs").expect("--secs").parse().unwrap();
        let start_ms: u64 = opt("--start-ms").expect("--start-ms").parse().unwrap();
        println!("{}", work(&mode, &path, &opt("--key").expect("--key"), secs, start_ms));
        return;
    }

    let secs = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let base = std::env::var_os("BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new().prefix("bext-sqlite-bench-").tempdir_in(base).unwrap();
    let path = dir.path().join("bench.db");
    // Each run gets its own worker processes, so each opens the file afresh;
    // the runs alternate so drift on a shared machine hits both sides alike.
    let (mut d1, mut s1, mut d4, mut s4) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        d1.push(processes("direct", &path, 1, secs));
        s1.push(processes("so", &path, 1, secs));
        d4.push(processes("direct", &path, 4, secs));
        s4.push(processes("so", &path, 4, secs));
        eprintln!(
            "round {round}: 1 proc direct {:.0}/s .so {:.0}/s; 4 procs direct {:.0}/s .so {:.0}/s",
            d1[round], s1[round], d4[round], s4[round]
        );
    }
    let (d1, s1, d4, s4) = (median(d1), median(s1), median(d4), median(s4));
    println!("SQLite acquire+release pairs per second, median of {ROUNDS} runs of {secs} s");
    println!("(file {}, synchronous=FULL, WAL)", path.display());
    println!();
    println!("| processes | direct rusqlite | through the .so | .so / direct |");
    println!("| --- | --- | --- | --- |");
    println!("| 1 | {d1:.0} | {s1:.0} | {:.3} |", s1 / d1);
    println!("| 4 | {d4:.0} | {s4:.0} | {:.3} |", s4 / d4);
    println!();
    println!("target: .so / direct >= 0.95 in both rows");
}
