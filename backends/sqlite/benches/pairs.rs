//! Acquire+release pairs per second on one database file: through the loaded
//! `.so` versus the very same statements issued directly with `rusqlite`,
//! with 1 process and with 4 processes (each on its own key, all contending
//! for the file's write lock).
//!
//! ```text
//! cargo build --release -p bext-locking-sqlite   # the .so the bench loads
//! cargo bench -p bext-locking-sqlite
//! ```
//!
//! Each figure is the best of BENCH_ROUNDS (default 7) runs of BENCH_SECS
//! (default 1) seconds, with the sides alternating so that drift on a shared
//! machine hits both alike; besides pairs per second it shows the CPU time
//! per pair, which waiting for a busy core does not inflate. It runs once with the file on disk (every commit
//! waits for fsync, so the disk dominates) and once on /dev/shm (no fsync
//! cost, so the plugin boundary is as visible as it can be). BENCH_DIR
//! replaces the disk folder (default the system temp folder).
//!
//! Sides: `direct` is a plain `rusqlite` connection set up like the plugin's
//! (WAL, synchronous=FULL, the same busy handler) running the statements from
//! [`bext_locking_sqlite::Statements`] with a fresh UUID per acquisition;
//! `so` is the plugin through the loader; `direct-stock` is `direct` with
//! SQLite's own busy timeout instead, to show what the handler buys.
//! `threads-mutex` and `threads-pool` run four threads in one process on one
//! shared instance versus one instance (connection) per thread.
//!
//! The bench re-runs itself as worker processes:
//! `pairs --worker MODE --path FILE --key KEY --secs S --start-ms T`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bext_locking::LockingPlugin;
use bext_locking_sqlite::{Statements, busy};
use rusqlite::{Connection, OpenFlags};

const TTL_MS: i64 = 30_000;
const BUSY_TIMEOUT: Duration = Duration::from_millis(5_000);

/// The same statements as the plugin on a connection set up the same way,
/// with nothing in between.
struct Direct {
    conn: Connection,
    statements: Statements,
    stock_busy: bool,
}

impl Direct {
    fn open(path: &Path, stock_busy: bool) -> Self {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).expect("open");
        if stock_busy {
            conn.busy_timeout(BUSY_TIMEOUT).unwrap();
        } else {
            conn.busy_handler(Some(bext_locking_sqlite::busy::handler)).unwrap();
        }
        let statements = Statements::new(bext_locking_sqlite::DEFAULT_TABLE);
        busy::within(BUSY_TIMEOUT, || {
            let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            if mode != "wal" {
                let _: String =
                    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            }
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(&statements.create_table)
        })
        .expect("set up the direct connection");
        Self { conn, statements, stock_busy }
    }

    fn pair(&self, key: &str) {
        if self.stock_busy {
            self.statements(key)
        } else {
            busy::within(BUSY_TIMEOUT, || self.statements(key))
        }
    }

    fn statements(&self, key: &str) {
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

/// CPU time this (single-threaded) process has used, in nanoseconds: on a
/// shared machine it is steadier than wall time, which includes waiting for
/// a core.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// CPU time of the whole process (every thread, finished ones too), in
/// nanoseconds, at the kernel's 10 ms tick.
fn process_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()))
        .into_iter()
        .flatten()
        .collect();
    fields.iter().sum::<u64>() * 10_000_000
}

/// Four threads on their own keys, sharing one instance (`shared`, the
/// plugin's design: one connection behind a mutex) or each with its own
/// (a connection per thread, which is what a pool amounts to here).
fn threads(path: &Path, key: &str, shared: bool, secs: f64, start_ms: u64) -> Outcome {
    use bext_locking_sqlite::SqlitePlugin;
    let one = std::sync::Arc::new(SqlitePlugin::open(path).expect("open"));
    let instances: Vec<_> = (0..4)
        .map(|_| {
            if shared {
                one.clone()
            } else {
                std::sync::Arc::new(SqlitePlugin::open(path).expect("open"))
            }
        })
        .collect();
    let now = wall_ms();
    if start_ms > now {
        std::thread::sleep(Duration::from_millis(start_ms - now));
    }
    let period = Duration::from_secs_f64(secs);
    let cpu = process_cpu_ns();
    let started = Instant::now();
    let pairs: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = instances
            .iter()
            .enumerate()
            .map(|(t, p)| {
                let key = format!("{key}/t{t}");
                s.spawn(move || {
                    let mut n = 0u64;
                    while started.elapsed() < period {
                        let h = p.try_lock(&key, TTL_MS as u64).expect("try_lock").expect("held");
                        p.release(h).expect("release");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    Outcome { pairs, secs: started.elapsed().as_secs_f64(), cpu_ns: process_cpu_ns() - cpu }
}

/// What one worker did.
struct Outcome {
    pairs: u64,
    secs: f64,
    cpu_ns: u64,
}

/// Runs pairs on `key` for `secs` from wall-clock `start_ms`.
fn work(mode: &str, path: &Path, key: &str, secs: f64, start_ms: u64) -> Outcome {
    let plugin_pair = |p: Box<dyn LockingPlugin>, key: String| -> Box<dyn FnMut()> {
        Box::new(move || {
            let h = p.try_lock(&key, TTL_MS as u64).expect("try_lock").expect("acquired");
            p.release(h).expect("release");
        })
    };
    match mode {
        "threads-mutex" => return threads(path, key, true, secs, start_ms),
        "threads-pool" => return threads(path, key, false, secs, start_ms),
        _ => {}
    }
    let key = key.to_owned();
    let mut pair: Box<dyn FnMut()> = match mode {
        "direct" | "direct-stock" => {
            let d = Direct::open(path, mode == "direct-stock");
            Box::new(move || d.pair(&key))
        }
        "so" => plugin_pair(so_instance(path), key),
        "rlib" => {
            plugin_pair(Box::new(bext_locking_sqlite::SqlitePlugin::open(path).expect("open")), key)
        }
        other => panic!("unknown mode {other}"),
    };
    pair(); // warm the statement cache
    let now = wall_ms();
    if start_ms > now {
        std::thread::sleep(Duration::from_millis(start_ms - now));
    }
    let period = Duration::from_secs_f64(secs);
    let cpu = cpu_ns();
    let started = Instant::now();
    let mut pairs = 0u64;
    while started.elapsed() < period {
        for _ in 0..16 {
            pair();
        }
        pairs += 16;
    }
    Outcome { pairs, secs: started.elapsed().as_secs_f64(), cpu_ns: cpu_ns() - cpu }
}

/// One measurement: total pairs/s, and CPU microseconds per pair.
#[derive(Clone, Copy)]
struct Rate {
    per_sec: f64,
    cpu_us: f64,
}

/// Runs `procs` worker processes started together.
fn processes(mode: &str, path: &Path, procs: usize, secs: f64) -> Rate {
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
    let outcomes: Vec<Outcome> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "worker failed: {}", out.status);
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> =
                text.split_whitespace().map(|x| x.parse().expect("worker output")).collect();
            Outcome { pairs: v[0] as u64, secs: v[1], cpu_ns: v[2] as u64 }
        })
        .collect();
    let pairs: u64 = outcomes.iter().map(|o| o.pairs).sum();
    let cpu: u64 = outcomes.iter().map(|o| o.cpu_ns).sum();
    Rate {
        per_sec: outcomes.iter().map(|o| o.pairs as f64 / o.secs).sum(),
        cpu_us: cpu as f64 / 1_000.0 / pairs as f64,
    }
}

/// The runs of one round, in order: (mode, processes).
const RUNS: [(&str, usize); 8] = [
    ("direct", 1),
    ("rlib", 1),
    ("so", 1),
    ("direct", 4),
    ("so", 4),
    ("direct-stock", 4),
    ("threads-mutex", 1),
    ("threads-pool", 1),
];

/// The best of the rounds of every run on one folder, in [`RUNS`] order: on
/// a machine shared with other work, the least disturbed run is the closest
/// to what the code itself costs.
fn measure(label: &str, base: &Path, rounds: usize, secs: f64) -> Vec<Rate> {
    let dir = tempfile::Builder::new().prefix("bext-sqlite-bench-").tempdir_in(base).unwrap();
    let path = dir.path().join("bench.db");
    let mut rates: Vec<Vec<Rate>> = vec![Vec::new(); RUNS.len()];
    for round in 0..rounds {
        // Odd rounds run the sides in reverse order (ABBA).
        let mut order: Vec<usize> = (0..RUNS.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (mode, procs) = RUNS[i];
            rates[i].push(processes(mode, &path, procs, secs));
        }
        let shown: Vec<String> = RUNS
            .iter()
            .zip(&rates)
            .map(|((m, p), r)| format!("{p}p {m} {:.0}/s", r[round].per_sec))
            .collect();
        eprintln!("{label} round {round}: {}", shown.join(", "));
    }
    rates
        .into_iter()
        .map(|r| Rate {
            per_sec: r.iter().map(|x| x.per_sec).fold(0.0, f64::max),
            cpu_us: r.iter().map(|x| x.cpu_us).fold(f64::INFINITY, f64::min),
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if let Some(mode) = opt("--worker") {
        let path = PathBuf::from(opt("--path").expect("--path"));
        let secs: f64 = opt("--secs").expect("--secs").parse().unwrap();
        let start_ms: u64 = opt("--start-ms").expect("--start-ms").parse().unwrap();
        let o = work(&mode, &path, &opt("--key").expect("--key"), secs, start_ms);
        println!("{} {} {}", o.pairs, o.secs, o.cpu_ns);
        return;
    }

    let env = |k: &str| std::env::var(k).ok();
    let secs: f64 = env("BENCH_SECS").and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let rounds: usize = env("BENCH_ROUNDS").and_then(|s| s.parse().ok()).unwrap_or(7).max(1);
    let disk = env("BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let mut places = vec![("disk", disk)];
    if Path::new("/dev/shm").is_dir() {
        places.push(("tmpfs", PathBuf::from("/dev/shm")));
    }
    let results: Vec<_> =
        places.iter().map(|(label, dir)| (*label, measure(label, dir, rounds, secs))).collect();

    println!("SQLite acquire+release pairs (WAL, synchronous=FULL), each process on its own key;");
    println!("best of {rounds} runs of {secs} s. cpu = CPU microseconds per pair (all processes).");
    println!();
    println!(
        "| file on | procs | direct rusqlite | in-process plugin | through the .so | .so / direct (pairs/s) | .so / direct (cpu) | direct, stock busy timeout |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let cell = |r: &Rate| format!("{:.0}/s, cpu {:.1}", r.per_sec, r.cpu_us);
    for (label, r) in &results {
        println!(
            "| {label} | 1 | {} | {} | {} | {:.3} | {:.3} | |",
            cell(&r[0]),
            cell(&r[1]),
            cell(&r[2]),
            r[2].per_sec / r[0].per_sec,
            r[0].cpu_us / r[2].cpu_us,
        );
        println!(
            "| {label} | 4 | {} | | {} | {:.3} | {:.3} | {} |",
            cell(&r[3]),
            cell(&r[4]),
            r[4].per_sec / r[3].per_sec,
            r[3].cpu_us / r[4].cpu_us,
            cell(&r[5]),
        );
    }
    println!();
    println!("target: .so / direct >= 0.95 (both ratios: higher is better for the .so)");
    println!();
    println!("Threads of one process, in-process plugin, each thread on its own key:");
    println!();
    println!(
        "| file on | 4 threads, one instance (one connection, mutex) | 4 threads, an instance each (connection per thread) |"
    );
    println!("| --- | --- | --- |");
    for (label, r) in &results {
        println!("| {label} | {} | {} |", cell(&r[6]), cell(&r[7]));
    }
}
