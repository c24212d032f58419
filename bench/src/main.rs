//! `bext-locking-bench`: the one benchmark report (`make bench`).
//!
//! Measures every backend's acquire+release pair in-process, through its
//! `.so` and with the storage's raw client, at 1 and 8 threads, plus the
//! `rslock` crate against the same Redis, plus the Python section
//! (`bench/python/bench.py`: `bextlock` against python-redis-lock and
//! pottery), and writes `docs/BENCHMARKS.md` with a table per backend, the
//! project's targets and an SVG chart.
//!
//! ```text
//! make bench                                   # builds, runs, writes the report
//! target/release/bext-locking-bench --out docs/BENCHMARKS.md [--only redis,pg]
//!     [--loader-output FILE]                   # the loader bench's output to embed
//! ```
//!
//! `BENCH_SECS` (default 3) is each side's time per group, cut into
//! `BENCH_ROUNDS` (default 30) interleaved slices; `BENCH_ONLY=memory,redis`
//! narrows the run; `BEXT_PG_URL` picks the PostgreSQL server, `BEXT_MYSQL_URL`
//! the MySQL/MariaDB one;
//! `BENCH_SQLITE_DIR` the folder of the SQLite file (default /dev/shm);
//! `BENCH_PYTHON` the interpreter of the Python section (default `python3`);
//! the wait section's knobs are `BENCH_WAIT_*` (see `bext-bench-wait`).

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bext_locking_bench::measure::Kind;
use bext_locking_bench::measure::Settings;
use bext_locking_bench::report::{Report, Verdict, thousands, us};
use bext_locking_bench::{Piece, chart, machine};

/// The sections, in run order.
const SECTIONS: [&str; 12] = [
    "memory", "sqlite", "redis", "pg", "etcd", "mysql", "nats", "async", "wait", "python",
    "loader", "startup",
];

struct Args {
    out: PathBuf,
    chart: PathBuf,
    only: Vec<String>,
    loader_output: Option<PathBuf>,
    startup_output: Option<PathBuf>,
    command: String,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        out: PathBuf::from("docs/BENCHMARKS.md"),
        chart: PathBuf::new(),
        only: std::env::var("BENCH_ONLY")
            .map(|s| s.split(',').map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()).collect())
            .unwrap_or_default(),
        loader_output: None,
        startup_output: None,
        command: "make bench".into(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--out" => a.out = PathBuf::from(value()?),
            "--chart" => a.chart = PathBuf::from(value()?),
            "--only" => a.only = value()?.split(',').map(str::to_owned).collect(),
            "--loader-output" => a.loader_output = Some(PathBuf::from(value()?)),
            "--startup-output" => a.startup_output = Some(PathBuf::from(value()?)),
            "--command" => a.command = value()?,
            other => return Err(format!("unknown argument `{other}` (see the crate docs)")),
        }
    }
    for s in &a.only {
        if !SECTIONS.contains(&s.as_str()) {
            return Err(format!("unknown section `{s}`; sections: {}", SECTIONS.join(", ")));
        }
    }
    if a.chart.as_os_str().is_empty() {
        let dir = a.out.parent().unwrap_or(Path::new("."));
        a.chart = dir.join("benchmarks").join("pairs.svg");
    }
    Ok(a)
}

/// The reasons behind the project's targets, printed under the table.
const WHY: &str = "Why these targets:\n\n\
* **memory, `.so` cost per pair <= 400 ns**: loading a backend as a `.so` must never be a reason \
to link it in instead. 400 ns is about 1% of the fastest networked pair (Redis on loopback, ~30 µs).\n\
* **memory, stats counting < 50 ns per call**: every plugin counts its statistics, always, so a \
host never has to choose between metrics and speed; 50 ns is about a tenth of the cheapest pair \
through the `.so` (memory) and nothing beside any networked call.\n\
* **2 threads / 1 thread >= 1.6x** (memory) and **8 threads / 1 thread >= 2x** (redis): nothing on \
the path (the boundary, the pool) may serialize callers working on different keys.\n\
* **`.so` / raw client >= 0.95x** (sqlite, redis, pg, mysql): a lock library that costs more than 5% over the \
same statements written by hand gives users a reason to write them by hand, without the fencing, \
deadlines and redaction.\n\
* **etcd, `.so` / direct gateway calls >= 0.9x**: as above, with room for the lease bookkeeping a correct \
lock adds on etcd (revoking the lease of a lost race).\n\
* **nats, `.so` / raw async-nats >= 0.95x**: the same rule, against the same five JetStream requests \
sent with the same client.\n\
* **redis vs rslock >= 1x**: a Redlock user compares us with `rslock`; we must not be the slower choice.\n\
* **python, `bextlock` >= 1.2x the faster of python-redis-lock and pottery**: a Python user already has \
a Redis lock library; ours must be clearly faster as well as fenced and store-independent, or the \
plugin route is a cost they would not pay.\n\
* **loader, first scan <= 2 ms per plugin** and **replaced file to new code <= 1 s**: a service with a \
folder of plugins starts in milliseconds, and a deploy that drops in a new build takes effect within \
a second.\n\
* **redis unfenced `.so` >= 0.98x raw `SET NX PX` + CAS and >= 1.1x rslock**: a user who needs no fences \
gets the commands they would write by hand, so the plugin may cost no more than its boundary; \
**fenced `.so` >= 0.95x the raw client running the same script**: the fence's own cost is the \
script's, not the plugin's.\n\
* **quorum behind delay proxies: 3 masters <= 1.3x, 5 masters <= 1.4x one node's p50, and <= rslock's \
p50**: requests to all masters go out before any answer is read, so on a network a quorum costs about \
one round trip, not one per master.\n\
* **`bext-lock run sqlite -- true` <= 1.3x the wall time of `flock(1) FILE true`**: a cron line that \
swaps `flock` for `bext-lock` must not notice the start-up.\n\
* **wait, hand-off p50 <= 2x the backend's uncontended `try_lock` p50** (redis, pg, etcd, memory; \
**sqlite <= 5 ms**): a waiter told of the release should have the lock about one request after \
it, where a poller loses up to a whole poll interval; SQLite has no server to tell it, so the bound \
is what watching the file allows.\n\
* **wait, <= 1 server command per waiter per TTL while 100 waiters wait**: waiting must not load the \
server (the thundering herd of polling locks); a notified waiter needs at most one wake-up per \
lease, at the holder's expiry.\n\
* **wait, 0 FIFO violations over 1,000 hand-offs** (etcd, memory): where a backend promises \
arrival order, no waiter is ever passed over.\n";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = parse_args(&args).and_then(|a| run(&a)) {
        eprintln!("bext-locking-bench: {e}");
        std::process::exit(1);
    }
}

/// Runs section binary `bext-bench-<name>` (next to this one) and reads
/// what it found.
fn section(name: &str) -> Result<Report, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name(format!("bext-bench-{name}"));
    if !bin.exists() {
        return Err(format!(
            "{} is missing (cargo build --release -p bext-locking-bench)",
            bin.display()
        ));
    }
    run_piece(name, Command::new(&bin), &bin.display().to_string())
}

/// Runs the Python section: `bench/python/bench.py` (or
/// `BENCH_PYTHON_SCRIPT`) under `BENCH_PYTHON` (the virtual environment
/// mk/bench.mk prepares, with the peers installed; default `python3`).
fn python_section() -> Result<Report, String> {
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script =
        std::env::var("BENCH_PYTHON_SCRIPT").unwrap_or_else(|_| "bench/python/bench.py".into());
    if !Path::new(&script).exists() {
        return Err(format!("{script} is missing (run from the repository's root)"));
    }
    let mut cmd = Command::new(&python);
    cmd.arg(&script);
    run_piece("python", cmd, &format!("{python} {script}"))
}

/// Runs a section's command with `--json FILE` and reads what it found.
fn run_piece(name: &str, mut cmd: Command, shown: &str) -> Result<Report, String> {
    let out = std::env::temp_dir().join(format!("bext-bench-{name}-{}.json", std::process::id()));
    let status = cmd.arg("--json").arg(&out).status().map_err(|e| format!("run {shown}: {e}"))?;
    let text = std::fs::read_to_string(&out);
    let _ = std::fs::remove_file(&out);
    let text = text.map_err(|_| {
        format!("{shown} exited with {status} without a result (see its output above)")
    })?;
    let piece: Piece =
        serde_json::from_str(&text).map_err(|e| format!("{shown}: bad result: {e}"))?;
    match piece.error {
        Some(e) => Err(e),
        None => Ok(piece.report),
    }
}

fn run(args: &Args) -> Result<(), String> {
    let settings = Settings::from_env();
    let started = Instant::now();
    let load_start = machine::load_average();
    eprintln!(
        "bext-locking-bench: {} s per side per group in {} rounds; load average {load_start}",
        settings.secs, settings.rounds
    );
    let mut report = Report::default();
    let mut skipped: Vec<(String, String)> = Vec::new();
    for name in SECTIONS {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        let outcome = match name {
            "loader" => loader(args.loader_output.as_deref(), &mut report),
            "startup" => startup(args.startup_output.as_deref(), &mut report),
            "python" => python_section().map(|piece| report.absorb(piece)),
            _ => section(name).map(|piece| report.absorb(piece)),
        };
        let Err(why) = outcome else {
            continue;
        };
        eprintln!("  {name} not measured: {why}");
        report.target(
            "-",
            format!("everything in the {name} section"),
            "-",
            "-",
            Verdict::NoData,
            why.clone(),
        );
        skipped.push((name.to_owned(), why));
    }
    let took = started.elapsed().as_secs_f64();
    let load_end = machine::load_average();

    let chart_rel = relative(&args.chart, args.out.parent().unwrap_or(Path::new(".")));
    let subtitle = format!(
        "pairs/s relative to each group's baseline (raw client; memory: in-process); {} cores, load average {load_start} at start",
        machine::nproc()
    );
    let svg =
        chart::svg("bext-locking: acquire+release pairs/s, one run", &subtitle, &report.chart);
    if let Some(dir) = args.chart.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(&args.chart, svg).map_err(|e| format!("write {}: {e}", args.chart.display()))?;
    let md =
        markdown(args, &settings, &report, &skipped, (&load_start, &load_end), took, &chart_rel);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(&args.out, md).map_err(|e| format!("write {}: {e}", args.out.display()))?;
    let (met, not, none) = report.counts();
    eprintln!(
        "wrote {} and {} in {took:.0} s: {met} targets met, {not} not met, {none} not measured",
        args.out.display(),
        args.chart.display()
    );
    Ok(())
}

/// `path` relative to `base` when it lies under it (for the image link).
fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).to_string_lossy().into_owned()
}

/// Embeds the loader bench's output and checks its budgets.
fn loader(output: Option<&Path>, report: &mut Report) -> Result<(), String> {
    let Some(path) = output else {
        return Err("no --loader-output given (make bench runs the loader bench first)".into());
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let number_before = |line: &str, unit: &str| -> Option<f64> {
        let end = line.find(unit)?;
        line[..end].trim_end().rsplit(' ').next()?.trim_start_matches('(').parse().ok()
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("scan, 50 distinct plugins:") {
            let per = rest.split_once("= ").and_then(|(_, r)| number_before(r, " ms per plugin"));
            let cpu = rest.split_once("= ").and_then(|(_, r)| number_before(r, " ms CPU)"));
            let mean = rest
                .split_once("scans 1-")
                .and_then(|(_, r)| number_before(r, " ms per plugin mean"));
            let note = match (per, cpu, mean) {
                (Some(p), Some(c), Some(m)) if p > 2.0 => format!(
                    "the scan itself took {c:.3} ms of CPU per plugin, and five scans {m:.3} ms of wall time per plugin on average: the first scan's wall time includes waiting for a core and for the private copies to be written, with a load average of {:.1}",
                    machine::load_1min()
                ),
                (_, Some(c), Some(m)) => {
                    format!("{c:.3} ms of CPU per plugin; {m:.3} ms per plugin over five scans")
                }
                _ => String::new(),
            };
            report.target(
                "loader",
                "first scan of a folder of 50 plugins, per plugin",
                "<= 2 ms",
                per.map(|p| format!("{p:.3} ms")).unwrap_or_else(|| "-".into()),
                match per {
                    Some(p) => Verdict::of(p <= 2.0),
                    None => Verdict::NoData,
                },
                note,
            );
        }
        if line.starts_with("reload,") {
            let max = line.split_once("max ").and_then(|(_, r)| number_before(r, " ms"));
            report.target(
                "loader",
                "replaced file to new instances on the new code, default settings (worst of 10)",
                "<= 1 s",
                max.map(|m| format!("{m:.0} ms")).unwrap_or_else(|| "-".into()),
                match max {
                    Some(m) => Verdict::of(m <= 1000.0),
                    None => Verdict::NoData,
                },
                "",
            );
        }
    }
    let mut body = String::from(
        "`cargo bench -p bext-locking-loader --bench loader` (loader/benches/loader.rs, run by \
         `make bench` before the runner; each scenario in a fresh process; see docs/LOADER.md \
         for what each line means):\n\n```text\n",
    );
    body.push_str(text.trim_end());
    body.push_str("\n```\n");
    report.section("loader", body);
    Ok(())
}

/// Embeds bench/startup.py's output and checks its target.
fn startup(output: Option<&Path>, report: &mut Report) -> Result<(), String> {
    let Some(path) = output else {
        return Err("no --startup-output given (make bench runs bench/startup.py first)".into());
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    // "  wall: bext-lock 9.12 ms, flock 7.01 ms: 1.30x"
    let ratio_of = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .and_then(|l| l.rsplit(": ").next())
            .and_then(|r| r.trim().trim_end_matches('x').parse::<f64>().ok())
    };
    let wall_line = text.lines().find(|l| l.trim_start().starts_with("wall:")).unwrap_or("");
    let cpu_line = text.lines().find(|l| l.trim_start().starts_with("cpu:")).unwrap_or("");
    match ratio_of("wall:") {
        Some(x) => report.target(
            "startup",
            "`bext-lock run sqlite -- true` / `flock(1) FILE true`, wall time, median of alternating runs",
            "<= 1.3x",
            format!("{x:.2}x ({})", wall_line.trim().trim_start_matches("wall: ")),
            Verdict::of(x <= 1.3),
            if x <= 1.3 {
                format!("CPU {}", cpu_line.trim().trim_start_matches("cpu: "))
            } else {
                format!(
                    "CPU {}; bext-lock starts a second process (the watchdog, the same binary) and a lock-loss signal thread before it takes the lock, and loads and dlopens a Rust plugin, where flock(1) is one small C program making one system call; the pieces are in the startup section",
                    cpu_line.trim().trim_start_matches("cpu: ")
                )
            },
        ),
        None => report.target(
            "startup",
            "`bext-lock run sqlite -- true` / `flock(1) FILE true`",
            "<= 1.3x",
            "-",
            Verdict::NoData,
            "no `wall:` line in bench/startup.py's output",
        ),
    }
    let mut body = String::from(
        "`python3 bench/startup.py` (run by `make bench`; rerun it by hand any time after a \
         release build): `make install` into a scratch prefix (stripped plugin and CLI), the \
         database and the flock file on `/dev/shm`, then the two commands alternately, each \
         timed from spawn to exit; CPU is user + system of the process and every process it \
         started, the ones it left behind included:\n\n```text\n",
    );
    body.push_str(text.trim_end());
    body.push_str("\n```\n");
    report.section("startup", body);
    Ok(())
}

fn markdown(
    args: &Args,
    settings: &Settings,
    report: &Report,
    skipped: &[(String, String)],
    load: (&str, &str),
    took: f64,
    chart: &str,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "# Benchmarks\n\n\
         <!-- Written by `{cmd}` (bench/, the bext-locking-bench runner): change the runner, not this file. -->\n\n\
         Every backend's acquire+release pair (`try_lock`, then `release`; each worker thread on \
         its own key) measured in one run three ways: **in-process** (the backend crate linked \
         in), **through the `.so`** (`bext-locking-loader`, the C ABI and its JSON), and with \
         the storage's **raw client** doing the same work directly; plus the Redlock crate \
         `rslock` against the same Redis servers, and from Python the `bextlock` package \
         against python-redis-lock and pottery. One command rebuilds everything in release \
         mode, runs it and rewrites this page and its chart:\n\n\
         ```sh\n{cmd}\n```\n\n",
        cmd = args.command
    );
    s.push_str(&summary(report));
    let _ = write!(
        s,
        "## Machine\n\n| | |\n| --- | --- |\n\
         | CPUs (nproc) | {} |\n| CPU | {} |\n| kernel | {} |\n\
         | load average at start (1, 5, 15 min) | {} |\n| load average at end | {} |\n\
         | rustc | {} |\n| date | {} |\n\
         | time per side per group | {} s in {} interleaved rounds |\n| measuring took | {:.0} s (plus the release build) |\n\n\
         The machine is shared: other builds and test suites ran during the run (the load \
         average says how much). Absolute rates move with that load; the ratios compare sides \
         measured in the same rounds, so load hits both alike.\n\n",
        machine::nproc(),
        machine::cpu_model(),
        machine::kernel(),
        load.0,
        load.1,
        machine::version_of("rustc", &["--version"]),
        machine::now_utc(),
        settings.secs,
        settings.rounds,
        took
    );
    let _ = write!(
        s,
        "## At a glance\n\n![acquire+release pairs/s relative to each group's baseline]({chart})\n\n\
         Each group is one backend at one thread count; each bar is a side's pairs/s divided by \
         the group's baseline (the raw client; for memory, which has no client, the in-process \
         backend). The solid line is the baseline, the dashed red line the project's target for \
         the `.so`. A bar short of 1.0 is what the side costs over doing the work by hand.\n\n"
    );
    let _ = write!(
        s,
        "## Targets\n\nThe project's speed targets, each with its reason below the table. The \
         verdicts are this run's, on the shared machine described above; a miss is explained in \
         its row (see also how to read a miss).\n\n{}\n{WHY}\n",
        report.targets_table()
    );
    s.push_str(
        "How to read a miss:\n\n\
         * Scaling targets (2 threads over 1, 8 over 1) and the quorum's latency over one \
           node's need idle cores: with fewer cores than busy threads and servers they cannot \
           be met whatever the code does. Their notes give the core count and the load.\n\
         * A `.so` ratio that misses while its p50 and CPU views meet the bar is the load \
           falling unevenly on the rounds; one whose CPU view misses too is work the `.so` \
           really does on top, which the note names (the in-process rows show how much of it \
           is the C boundary and how much the backend itself).\n\
         * On a loaded machine a ratio within a few percent of its bar lands on either side \
           of it from one run to the next.\n\n",
    );
    if !skipped.is_empty() {
        s.push_str("Not measured on this run:\n\n");
        for (name, why) in skipped {
            let _ = writeln!(s, "* {name}: {why}");
        }
        s.push('\n');
    }
    s.push_str(
        "## How it is measured\n\n\
         * Sides of a group run in slices of `BENCH_SECS / BENCH_ROUNDS` seconds, taking turns \
           round after round with the first side rotating, after a short unrecorded warm-up. \
           A ratio reads \"median round (overall)\": the median of the per-round ratios of \
           pairs/s, each taken between slices of the same round, then the ratio of the total \
           rates. Verdicts use the median round, which a burst of load in one round moves \
           least.\n\
         * Two views hardly move with the load and are given with each `.so` target: the \
           median latency (p50) and the CPU time per pair. When pairs/s misses a target but \
           both of these meet it, the shortfall most likely comes from the load, not the code.\n\
         * Every pair is timed (`Instant::now` between pairs); p50 and p99 come from a histogram \
           with buckets at most 1.6 % wide. With 8 threads on 2 cores the latency includes the \
           time a thread waits for a core.\n\
         * CPU µs/pair is the whole process's user + system CPU time (`getrusage`) during the \
           side's slices over its pairs (for SQLite processes, the workers' own); unlike \
           pairs/s it hardly depends on how busy the machine is. Servers' CPU is not included.\n\
         * Instance setup (connections, pools, prepared statements) happens before measuring; \
           each thread owns its key, so every `try_lock` succeeds.\n\n",
    );
    for (title, body) in &report.sections {
        let _ = write!(s, "## {title}\n\n{}\n", body.trim_end());
        s.push('\n');
    }
    s
}

/// The bar of `kind` in the chart group titled `title`, if it was measured.
fn bar<'a>(report: &'a Report, title: &str, kind: Kind) -> Option<&'a chart::Bar> {
    report
        .chart
        .iter()
        .find(|g| g.title == title)?
        .bars
        .iter()
        .find(|b| b.kind == kind && b.rate > 0.0)
}

/// "12.3 µs" for the median pair of the `.so` in group `title`.
fn so_p50(report: &Report, title: &str) -> Option<String> {
    bar(report, title, Kind::So).map(|b| format!("{} µs", us(b.p50_us)))
}

/// What this run measured for the target whose area is `area` and whose
/// description contains every one of `words`.
fn measured(report: &Report, area: &str, words: &[&str]) -> Option<String> {
    report
        .targets
        .iter()
        .find(|t| {
            t.area == area
                && t.verdict != Verdict::NoData
                && words.iter().all(|w| t.what.contains(w))
        })
        .map(|t| t.measured.clone())
}

/// The median cost `spawn_blocking` added per pair on `backend`, 1 thread,
/// as the async section measured it ("16.8 µs").
fn async_cost(report: &Report, backend: &str) -> Option<String> {
    let m = measured(report, "async", &[backend, "1 thread"])?;
    let cost = m.trim_start_matches('+').split(" at the median").next()?.trim();
    (!cost.is_empty()).then(|| cost.to_owned())
}

/// The page's opening for users: what is fast and what costs what, in plain
/// words, with this run's figures, above the detailed tables.
fn summary(report: &Report) -> String {
    let na = || "(not measured on this run)".to_owned();
    let mut s = String::from("## In short\n\n");
    let memory_cost = measured(report, "memory", &["cost over in-process", "median"]);
    let quorum = match (
        bar(report, "redis, 3 masters, 1 thread", Kind::So),
        bar(report, "redis, 1 node, 1 thread", Kind::So),
    ) {
        (Some(q), Some(one)) => format!("{:.1}x", q.p50_us / one.p50_us),
        _ => "(not measured)".into(),
    };
    let lines = [
        format!(
            "* **The plugin boundary is cheap.** Loading a backend as a `.so` instead of linking \
             it in costs {} per lock+unlock (measured on the memory backend, where nothing else \
             happens). Every backend with storage spends far longer on its own work, so choose \
             the plugin route freely.",
            memory_cost.unwrap_or_else(na)
        ),
        format!(
            "* **memory**: {} per pair; one process only, for tests.",
            so_p50(report, "memory, 1 thread").unwrap_or_else(na)
        ),
        format!(
            "* **SQLite**, no server: {} per pair with the file on tmpfs. On a real disk every \
             lock and unlock waits for a flush, which dominates (docs/backends/sqlite.md).",
            so_p50(report, "sqlite, 1 thread").unwrap_or_else(na)
        ),
        format!(
            "* **Redis**, one node on loopback: {} per pair. A Redlock quorum of three masters took {quorum} the single node's time here (its \
             requests go out in parallel, but on this small machine the masters share two cores).",
            so_p50(report, "redis, 1 node, 1 thread").unwrap_or_else(na)
        ),
        format!(
            "* **PostgreSQL**: advisory locks {} per pair, leases {}. Leases write a row but give \
             fencing tokens and work behind connection poolers (docs/backends/pg.md).",
            so_p50(report, "pg advisory, 1 thread").unwrap_or_else(na),
            so_p50(report, "pg lease, 1 thread").unwrap_or_else(na)
        ),
        format!(
            "* **etcd**: {} per pair: each lock+unlock is four consensus writes. Choose it for \
             its guarantees, not for a high lock rate.",
            so_p50(report, "etcd, 1 thread").unwrap_or_else(na)
        ),
        format!(
            "* **From async (tokio) code**, handing each call to `spawn_blocking` added {} per \
             lock+unlock on memory and {} on Redis at the median (two thread hand-offs; the async \
             section has the details, examples/tokio.rs the pattern). That matters at thousands \
             of locks per second, not for a job that runs for seconds.",
            async_cost(report, "memory").unwrap_or_else(na),
            async_cost(report, "redis").unwrap_or_else(na)
        ),
        format!(
            "* **Waiting for a held lock** (`lock_wait`, one waiter): the time from the holder's \
             release to the waiter having the lock, over the backend's own uncontended \
             `try_lock`, was {} on Redis and {} on PostgreSQL; the wait section sets it beside \
             polling and counts what waiters cost the server.",
            measured(report, "wait", &["redis", "hand-off"]).unwrap_or_else(na),
            measured(report, "wait", &["pg", "hand-off"]).unwrap_or_else(na)
        ),
        format!(
            "* **From Python**, `bextlock` on the Redis plugin ran {} the pairs/s of the faster of \
             python-redis-lock and pottery.",
            measured(report, "python", &["1 thread"])
                .map(|m| m.split(' ').next().unwrap_or("").to_owned())
                .unwrap_or_else(na)
        ),
    ];
    for line in lines {
        s.push_str(&line);
        s.push('\n');
    }
    s.push_str(
        "\nAgainst the same commands written by hand with each storage's own client (single \
         thread, median latency of one lock+unlock through the `.so`; \"pairs/s\" is how many a \
         thread does per second; the last column is the plugin's rate over the hand-written \
         one, which does without fencing, deadlines and error handling):\n\n\
         | backend | median lock+unlock | pairs/s | compared with |\n| --- | --- | --- | --- |\n",
    );
    for g in &report.chart {
        if !g.title.ends_with(", 1 thread") || g.title.starts_with("python") {
            continue;
        }
        let Some(so) = g.bars.iter().find(|b| b.kind == Kind::So && b.rate > 0.0) else {
            continue;
        };
        let base = g.bars.iter().find(|b| b.kind != Kind::So && (b.value - 1.0).abs() < 1e-9);
        let versus = match base {
            Some(b) => format!("{:.2}x {}", so.value, b.label),
            None => "-".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} µs | {} | {versus} |",
            g.title.trim_end_matches(", 1 thread"),
            us(so.p50_us),
            thousands(so.rate)
        );
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(title: &str, so_p50: f64, so_rate: f64) -> chart::Group {
        let bar = |label: &str, kind, value, rate, p50_us| chart::Bar {
            label: label.into(),
            kind,
            value,
            note: String::new(),
            rate,
            p50_us,
        };
        chart::Group {
            title: title.into(),
            bars: vec![
                bar("raw client", Kind::Raw, 1.0, so_rate * 1.25, so_p50 * 0.8),
                bar(".so", Kind::So, 0.8, so_rate, so_p50),
            ],
            target: None,
        }
    }

    #[test]
    fn the_summary_speaks_in_this_runs_figures_and_says_what_was_not_measured() {
        let mut report = Report::default();
        report.chart.push(group("redis, 1 node, 1 thread", 34.0, 27_000.0));
        report.chart.push(group("redis, 1 node, 8 threads", 260.0, 29_000.0));
        report.chart.push(group("redis, 3 masters, 1 thread", 102.0, 9_400.0));
        report.target(
            "memory",
            "`.so` cost over in-process per pair, 1 thread, median (p50)",
            "<= 400 ns",
            "279 ns",
            Verdict::Met,
            "",
        );
        report.target(
            "async",
            "redis: spawn_blocking per call (2 per pair) over a direct call, 1 thread(s)",
            "-",
            "+57.2 µs at the median, +60.1 µs CPU per pair",
            Verdict::Info,
            "",
        );
        let s = summary(&report);
        assert!(s.starts_with("## In short\n"), "{s}");
        assert!(s.contains("on memory and 57.2 µs on Redis at the median"), "{s}");
        assert!(s.contains("costs 279 ns per lock+unlock"), "{s}");
        assert!(s.contains("one node on loopback: 34.0 µs per pair"), "{s}");
        assert!(s.contains("took 3.0x the single node's time"), "{s}");
        assert!(s.contains("**etcd**: (not measured on this run)"), "{s}");
        // One row per single-thread group, none for 8 threads.
        assert!(s.contains("| redis, 1 node | 34.0 µs | 27,000 | 0.80x raw client |"), "{s}");
        assert!(!s.contains("8 threads |"), "{s}");
    }
}
