//! SQLite backend: pairs through the `.so` against the very same
//! statements issued with `rusqlite`, on threads of one process and on 1
//! and 4 processes sharing one database file.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bext_locking::LockingPlugin;
use bext_locking_sqlite::{Exported, Statements, busy};
use rusqlite::{Connection, OpenFlags};

use bext_locking_bench::measure::{
    Entry, Hist, Kind, Lap, Settings, Slice, TTL_MS, Tally, measure, process_cpu_ns,
};
use bext_locking_bench::plugin::{self, Pair};
use bext_locking_bench::report::{Report, table};

/// The owner the raw side stores, of the length hosts' `hostname:pid` has.
const OWNER: &str = "bench-host:12345";

const BUSY_TIMEOUT: Duration = Duration::from_millis(5_000);

/// A `rusqlite` connection set up like the plugin's (WAL,
/// `synchronous=FULL`, the plugin's busy handler) running the plugin's own
/// statements with a fresh UUID per acquisition, with nothing in between.
pub struct Direct {
    conn: Connection,
    statements: Statements,
}

impl Direct {
    /// Opens `path`, creating the table when missing.
    pub fn open(path: &Path) -> Result<Self, String> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| e.to_string())?;
        conn.busy_handler(Some(busy::handler)).map_err(|e| e.to_string())?;
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
        .map_err(|e| format!("set up the direct connection: {e}"))?;
        Ok(Self { conn, statements })
    }

    /// One acquire+release on `key`, storing an owner as the plugin does
    /// for every host (hosts send a default owner).
    pub fn pair(&self, key: &str) -> Result<(), String> {
        busy::within(BUSY_TIMEOUT, || {
            let lock_id = uuid::Uuid::new_v4().to_string();
            let fence: i64 = self
                .conn
                .prepare_cached(&self.statements.acquire)?
                .query_row((key, &lock_id, TTL_MS as i64, OWNER), |r| r.get(0))?;
            let released =
                self.conn.prepare_cached(&self.statements.release)?.execute((key, &lock_id))?;
            Ok((fence, released))
        })
        .map_err(|e: rusqlite::Error| e.to_string())
        .and_then(|(fence, released)| {
            if fence > 0 && released == 1 {
                Ok(())
            } else {
                Err(format!("direct pair on `{key}`: fence {fence}, released {released} rows"))
            }
        })
    }
}

/// A fresh folder for the database, removed at the end: `BENCH_SQLITE_DIR`,
/// else `/dev/shm` (no fsync cost, so the plugin's own cost shows), else the
/// temporary folder.
fn scratch() -> Result<bext_locking_test_support::TempDir, String> {
    let root = std::env::var_os("BENCH_SQLITE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
    });
    if !root.is_dir() {
        return Err(format!("{} is not a folder", root.display()));
    }
    Ok(bext_locking_test_support::TempDir::in_dir(&root, "bench-sqlite"))
}

/// Runs the SQLite section.
pub fn run(settings: &Settings, report: &mut Report) -> Result<(), String> {
    let lib = plugin::load("sqlite")?;
    let dir = scratch()?;
    let path = dir.path().join("bench.db");
    let config = serde_json::json!({ "path": path }).to_string();
    let pair = Pair::create::<Exported>(&lib, &config)?;
    let direct = Mutex::new(Direct::open(&path)?);
    let mut thread_groups = Vec::new();
    for threads in [1, 8] {
        let mut sides = pair.sides("bench/sqlite");
        sides.push(Entry::new("raw rusqlite", Kind::Raw, |t, lap: &mut Lap| {
            let key = format!("bench/sqlite/raw/{t}");
            lap.run(|| direct.lock().unwrap_or_else(|p| p.into_inner()).pair(&key));
        }));
        thread_groups.push(measure("sqlite", threads, &sides, settings));
    }
    drop(pair);
    drop(direct);

    // Workers start 0.3 s before their slice, so slices are longer than
    // the threads' and cost more: a fifth of a side's time each.
    let rounds = (settings.rounds / 4).clamp(3, 8);
    let secs = (settings.secs / 5.0).max(0.3);
    let procs = processes(&path, rounds, secs);

    let mut body = format!(
        "One database file on `{}` (WAL, `synchronous=FULL`; on tmpfs the fsync costs nothing, \
         so what remains is the code's own cost; on a disk every commit waits for the flush and \
         the three sides look alike, see docs/backends/sqlite.md). The raw side is a `rusqlite` \
         connection set up like the plugin's, running the plugin's own statements with a fresh \
         UUID per acquisition. Threads of one process share one instance, which is one \
         connection behind a mutex (the plugin's design), and the raw side shares one \
         connection the same way.\n\n",
        dir.path().parent().map(|p| p.display().to_string()).unwrap_or_default()
    );
    let refs: Vec<&[Tally]> = thread_groups.iter().map(Vec::as_slice).collect();
    body.push_str(&table(&refs, Kind::Raw, "threads"));
    let _ = write!(
        body,
        "\nSeparate processes (the case the backend exists for), each on its own key, all \
         contending for the file's write lock; {rounds} rounds of {secs:.2} s, sides alternating, \
         CPU summed over the processes:\n\n"
    );
    let prefs: Vec<&[Tally]> = procs.iter().map(Vec::as_slice).collect();
    body.push_str(&table(&prefs, Kind::Raw, "processes"));
    for (g, threads) in thread_groups.iter().zip([1, 8]) {
        report.chart_group(format!("sqlite, {threads} thread(s)"), g, Kind::Raw, Some(0.95));
    }
    for (g, n) in procs.iter().zip([1, 4]) {
        report.chart_group(format!("sqlite, {n} process(es)"), g, Kind::Raw, Some(0.95));
        target(report, g, &format!("{n} process(es)"));
    }
    for (g, n) in thread_groups.iter().zip([1, 8]) {
        target(report, g, &format!("{n} thread(s) of one process (not a project target)"));
    }
    instruction_rows(report, &mut body, dir.path());
    report.section("sqlite", body);
    Ok(())
}

/// Instructions per pair (in-process, `.so`, raw rusqlite) of the code
/// before the backend's per-pair work over the raw client was cut (commit
/// 5eb58ae), measured with this section's own callgrind worker, so that
/// every run shows the change beside its own counts.
const BEFORE: [f64; 3] = [59057.0, 65804.0, 58793.0];

/// The callgrind paragraph and its information target.
fn instruction_rows(report: &mut Report, body: &mut String, dir: &Path) {
    eprintln!("  sqlite: counting instructions under callgrind");
    match instructions(dir) {
        Ok([(_, native), (_, so), (_, raw)]) => {
            let [b_native, b_so, b_raw] = BEFORE;
            let _ = write!(
                body,
                "\nInstructions per pair under `valgrind --tool=callgrind`, one thread (deterministic; \
                 the difference between runs of {} and {} pairs): in-process **{native:.0}**, \
                 through the `.so` **{so:.0}**, raw rusqlite **{raw:.0}**; the `.so` does \
                 **{:.0}** more than the raw client ({:.3}x its instructions), of which the \
                 boundary is {:.0}. Before the backend's per-pair work was cut (commit 5eb58ae): \
                 in-process {b_native:.0}, `.so` {b_so:.0}, raw {b_raw:.0} ({:.3}x). Callgrind \
                 counts instructions, not system calls: the change it cannot show is the \
                 condition-variable wake-up every release used to send with nobody waiting \
                 (one `futex` call per pair, gone; `strace -f -c` of the worker: 19 system \
                 calls per pair before, 18 now, as the raw client).\n",
                bext_locking_bench::callgrind::PAIRS.0,
                bext_locking_bench::callgrind::PAIRS.1,
                so - raw,
                so / raw,
                so - native,
                b_so / b_raw,
            );
            report.target(
                "sqlite",
                "instructions per pair, `.so` / raw rusqlite, 1 thread (callgrind)",
                "<= 1.05x (0.95x the rate)",
                format!("{:.3}x ({so:.0} vs {raw:.0}; in-process {native:.0})", so / raw),
                bext_locking_bench::report::Verdict::Info,
                "deterministic, so it does not move with the machine's load; the pairs/s rows above are the verdicts",
            );
        }
        Err(e) => {
            let _ = writeln!(body, "\nInstruction counts not measured: {e}.");
        }
    }
}

fn target(report: &mut Report, g: &[Tally], what: &str) {
    report.so_vs_raw_target(
        "sqlite",
        format!("`.so` / rusqlite, {what}"),
        g,
        0.95,
        "the C boundary's JSON in and out: the backend linked in runs within 0.5% of the raw client's instructions per pair (callgrind, below) and its system calls, so what remains is the boundary's, on a pair of about 25 µs of CPU",
    );
}

/// 1 and 4 worker processes per side, sides and counts interleaved.
fn processes(path: &Path, rounds: usize, secs: f64) -> Vec<Vec<Tally>> {
    let configs = [
        (1usize, "so", Kind::So),
        (1, "raw", Kind::Raw),
        (4, "so", Kind::So),
        (4, "raw", Kind::Raw),
    ];
    let label = |k: Kind| if k == Kind::So { ".so" } else { "raw rusqlite" };
    let mut tallies: Vec<Tally> =
        configs.iter().map(|(n, _, k)| Tally::new(label(*k), *k, *n)).collect();
    for round in 0..rounds {
        for k in 0..configs.len() {
            let i = (k + round) % configs.len();
            if tallies[i].error.is_some() {
                continue;
            }
            let (n, mode, _) = configs[i];
            let s = spawn_workers(mode, path, n, secs);
            tallies[i].add(&s);
        }
    }
    let line: Vec<String> =
        tallies.iter().map(|t| format!("{}p {}: {:.0}/s", t.threads, t.label, t.rate())).collect();
    eprintln!("  sqlite processes: {}", line.join(" | "));
    vec![tallies[..2].to_vec(), tallies[2..].to_vec()]
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Starts `n` workers together and sums what they did.
fn spawn_workers(mode: &str, path: &Path, n: usize, secs: f64) -> Slice {
    let fail =
        |e: String| Slice { pairs: 0, secs: 0.0, cpu_ns: 0, hist: Hist::default(), error: Some(e) };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(e.to_string()),
    };
    // Time to start and open the file before the common start.
    let start_ms = wall_ms() + 300;
    let children: Result<Vec<_>, _> = (0..n)
        .map(|i| {
            Command::new(&exe)
                .args(["sqlite-worker", mode])
                .arg(path)
                .args([
                    &format!("bench/sqlite/proc/{mode}/{i}"),
                    &secs.to_string(),
                    &start_ms.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect();
    let children = match children {
        Ok(c) => c,
        Err(e) => return fail(format!("spawn a worker: {e}")),
    };
    let mut total = Slice { pairs: 0, secs: 0.0, cpu_ns: 0, hist: Hist::default(), error: None };
    let mut rate = 0.0;
    for child in children {
        let out = match child.wait_with_output() {
            Ok(o) => o,
            Err(e) => return fail(e.to_string()),
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = match serde_json::from_str(text.trim()) {
            Ok(v) if out.status.success() => v,
            _ => return fail(format!("worker failed ({}): {}", out.status, text.trim())),
        };
        if let Some(e) = v["error"].as_str() {
            return fail(e.to_owned());
        }
        let pairs = v["pairs"].as_u64().unwrap_or(0);
        let wsecs = v["secs"].as_f64().unwrap_or(0.0);
        rate += if wsecs > 0.0 { pairs as f64 / wsecs } else { 0.0 };
        total.pairs += pairs;
        total.cpu_ns += v["cpu_ns"].as_u64().unwrap_or(0);
        let buckets: Vec<(usize, u64)> =
            serde_json::from_value(v["hist"].clone()).unwrap_or_default();
        total.hist.merge(&Hist::from_sparse(&buckets));
    }
    // The processes ran side by side: their rates add up.
    total.secs = if rate > 0.0 { total.pairs as f64 / rate } else { 0.0 };
    total
}

/// One worker process: pairs on `key` from wall-clock `start_ms` for
/// `secs`; prints `{pairs, secs, cpu_ns, hist}` (or `{error}`) as JSON.
pub fn worker(args: &[String]) -> Result<(), String> {
    let [mode, path, key, secs, start_ms] = args else {
        return Err("usage: sqlite-worker so|raw PATH KEY SECS START_MS".into());
    };
    let secs: f64 = secs.parse().map_err(|_| "SECS")?;
    let start_ms: u64 = start_ms.parse().map_err(|_| "START_MS")?;
    let path = Path::new(path);
    let outcome = (|| -> Result<serde_json::Value, String> {
        let mut pair: Box<dyn FnMut() -> Result<(), String>> = match mode.as_str() {
            "so" => {
                let p: Box<dyn LockingPlugin> = plugin::load("sqlite")?
                    .create(&serde_json::json!({ "path": path }).to_string())?;
                let key = key.clone();
                Box::new(move || plugin::pair(&*p, &key))
            }
            _ => {
                let d = Direct::open(path)?;
                let key = key.clone();
                Box::new(move || d.pair(&key))
            }
        };
        pair()?; // warm the statement cache
        let now = wall_ms();
        if start_ms > now {
            std::thread::sleep(Duration::from_millis(start_ms - now));
        }
        let cpu = process_cpu_ns();
        let start = Instant::now();
        let mut lap = Lap::new(start + Duration::from_secs_f64(secs));
        lap.run(&mut pair);
        let (pairs, hist, error) = lap.into_parts();
        if let Some(e) = error {
            return Err(e);
        }
        Ok(serde_json::json!({
            "pairs": pairs,
            "secs": start.elapsed().as_secs_f64(),
            "cpu_ns": process_cpu_ns() - cpu,
            "hist": hist.sparse(),
        }))
    })();
    let v = outcome.unwrap_or_else(|e| serde_json::json!({ "error": e }));
    println!("{v}");
    Ok(())
}

/// Under callgrind: `pairs` pairs on one key through `side` (in-process,
/// so, raw) on the database at `path`.
fn callgrind_worker(args: &[String]) -> Result<(), String> {
    let [side, pairs, path] = args else {
        return Err("usage: callgrind-worker in-process|so|raw PAIRS PATH".into());
    };
    let pairs: u64 = pairs.parse().map_err(|_| "PAIRS")?;
    let config = serde_json::json!({ "path": path }).to_string();
    let mut pair: Box<dyn FnMut() -> Result<(), String>> = match side.as_str() {
        "so" => {
            let p = plugin::load("sqlite")?.create(&config)?;
            Box::new(move || plugin::pair(&*p, "callgrind"))
        }
        "in-process" => {
            let p = plugin::in_process::<Exported>(&config)?;
            Box::new(move || plugin::pair(&*p, "callgrind"))
        }
        _ => {
            let d = Direct::open(Path::new(path))?;
            Box::new(move || d.pair("callgrind"))
        }
    };
    for _ in 0..pairs {
        pair()?;
    }
    Ok(())
}

/// Instructions per pair of each side, on a scratch database in `dir`.
pub fn instructions(dir: &Path) -> Result<[(&'static str, f64); 3], String> {
    let path = dir.join("bext-bench-callgrind.db");
    let shown = path.display().to_string();
    let mut out = [("in-process", 0.0), (".so", 0.0), ("raw rusqlite", 0.0)];
    for (slot, side) in out.iter_mut().zip(["in-process", "so", "raw"]) {
        slot.1 = bext_locking_bench::callgrind::per_pair(|n| {
            vec!["callgrind-worker".into(), side.into(), n.to_string(), shown.clone()]
        })?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{shown}{suffix}"));
    }
    Ok(out)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("callgrind-worker") {
        if let Err(e) = callgrind_worker(&args[1..]) {
            eprintln!("bext-bench-sqlite callgrind-worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("sqlite-worker") {
        if let Err(e) = worker(&args[1..]) {
            eprintln!("bext-bench-sqlite sqlite-worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    bext_locking_bench::section_main("sqlite", run);
}
