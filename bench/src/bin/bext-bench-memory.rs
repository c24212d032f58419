//! Memory backend: the cost of the C boundary and its
//! JSON per pair, and thread scaling on distinct keys. There is no storage
//! client, so the in-process backend is the baseline.

use std::process::Command;

use bext_locking_memory::Exported;

use std::fmt::Write;

use bext_locking_bench::measure::{Kind, Settings, Tally, measure, paired};
use bext_locking_bench::plugin::{self, Pair};
use bext_locking_bench::report::{Report, Verdict, table, thousands, us};

/// Pairs counted under callgrind: the difference between the two runs is
/// the cost of `CALLGRIND_PAIRS.1 - CALLGRIND_PAIRS.0` pairs, start-up and
/// loading cancelled out.
const CALLGRIND_PAIRS: (u64, u64) = (2_000, 22_000);

/// Runs the memory section.
pub fn run(settings: &Settings, report: &mut Report) -> Result<(), String> {
    let lib = plugin::load("memory")?;
    let pair = Pair::create::<Exported>(&lib, "{}")?;
    let mut groups: Vec<Vec<Tally>> = Vec::new();
    for threads in [1, 2, 8] {
        groups.push(measure("memory", threads, &pair.sides("bench/memory"), settings));
    }
    drop(pair);
    let by = |g: &[Tally], k: Kind| g.iter().find(|t| t.kind == k).cloned();
    let (n1, f1) = (by(&groups[0], Kind::InProcess), by(&groups[0], Kind::So));
    let (n2, f2) = (by(&groups[1], Kind::InProcess), by(&groups[1], Kind::So));
    let mut native_p50_ns = f64::NAN;

    let mut body = String::from(
        "Acquire+release pairs on the memory backend, each worker thread on its own key: the \
         backend linked in (`MemoryPlugin` behind `Box<dyn LockingPlugin>`) against the same \
         backend through its `.so` (loader, C ABI, JSON in and out). With no storage behind it, \
         this is where the boundary's cost is most visible.\n\n",
    );
    let refs: Vec<&[Tally]> = groups.iter().map(Vec::as_slice).collect();
    body.push_str(&table(&refs, Kind::InProcess, "threads"));
    for (g, threads) in groups.iter().zip([1, 2, 8]) {
        report.chart_group(format!("memory, {threads} thread(s)"), g, Kind::InProcess, None);
    }

    // The FFI overhead: mean (from pairs/s, paired by round) and median
    // (from the latency histograms).
    if let Some((n1, f1)) = both(&n1, &f1) {
        let mean = paired(f1, n1, |so, native| 1e9 / so - 1e9 / native).unwrap_or(f64::NAN);
        let p50 = (f1.hist.quantile(0.5) as f64) - (n1.hist.quantile(0.5) as f64);
        native_p50_ns = n1.hist.quantile(0.5) as f64;
        let _ = writeln!(
            body,
            "\nFFI overhead per pair, 1 thread: **{mean:.0} ns** mean (median of the rounds' \
             1/rate differences; {:.0} vs {:.0} ns per pair overall), **{p50:.0} ns** at the \
             median (p50 {} vs {} ns).",
            1e9 / f1.rate(),
            1e9 / n1.rate(),
            f1.hist.quantile(0.5),
            n1.hist.quantile(0.5)
        );
        for (what, v, note) in [
            (
                "mean",
                mean,
                "each pair's share of everything the process did, allocation and the machine's load included",
            ),
            ("median (p50)", p50, "the typical pair, least disturbed by load"),
        ] {
            report.target(
                "memory",
                format!("`.so` cost over in-process per pair, 1 thread, {what}"),
                "<= 400 ns",
                format!("{v:.0} ns"),
                Verdict::of(v <= 400.0),
                note,
            );
        }
    }
    for (label, one, two) in [("in-process", &n1, &n2), (".so", &f1, &f2)] {
        if let Some((one, two)) = both(one, two) {
            let x = two.rate() / one.rate();
            let load = bext_locking_bench::machine::load_1min();
            let cores = bext_locking_bench::machine::nproc();
            report.target(
                "memory",
                format!("2 threads / 1 thread, {label}"),
                ">= 1.6x",
                format!("{x:.2}x ({} vs {}/s)", thousands(two.rate()), thousands(one.rate())),
                Verdict::of(x >= 1.6),
                if x >= 1.6 {
                    String::new()
                } else {
                    format!(
                        "two threads need two idle cores; this machine has {cores} and a load average of {load:.1} from other work, so the second thread mostly waits for a core. CPU per pair barely moves ({} µs with 1 thread, {} µs with 2), so the pairs do not serialize on each other",
                        us(one.cpu_us()),
                        us(two.cpu_us())
                    )
                },
            );
        }
    }

    // Instruction counts: deterministic, immune to the machine's load.
    match callgrind() {
        Ok((native, so)) => {
            let _ = writeln!(
                body,
                "\nInstructions per pair under `valgrind --tool=callgrind` (deterministic; \
                     the difference between runs of {} and {} pairs, so start-up and loading \
                     cancel out): in-process **{native:.0}**, through the `.so` **{so:.0}**, \
                     so the boundary adds **{:.0} instructions** per pair ({:.2}x).",
                CALLGRIND_PAIRS.0,
                CALLGRIND_PAIRS.1,
                so - native,
                so / native
            );
            // At the in-process side's own pace (instructions per ns of
            // its median pair), the extra instructions would take this long.
            let pace = native / native_p50_ns;
            let estimate = (so - native) / pace;
            report.target(
                "memory",
                "instructions per pair, `.so` minus in-process (callgrind)",
                "-",
                format!(
                    "{:.0} instructions ({native:.0} vs {so:.0}); about {estimate:.0} ns at the in-process pace of {pace:.1} instructions/ns",
                    so - native
                ),
                Verdict::Info,
                "deterministic, so it does not move with the machine's load; the estimate assumes the boundary's code runs at the same pace as the backend's",
            );
        }
        Err(e) => {
            let _ = writeln!(body, "\nInstruction counts not measured: {e}.");
        }
    }
    if let Err(e) = stats_cost(settings, report, &mut body) {
        let _ = writeln!(body, "\nThe cost of counting statistics was not measured: {e}.");
    }
    report.section("memory", body);
    Ok(())
}

/// Where `make bench` puts the memory `.so` built with the ffi feature
/// `uncounted`: identical but for the statistics.
fn uncounted_path() -> std::path::PathBuf {
    let lib = plugin::library_path("memory");
    lib.parent().unwrap_or(std::path::Path::new(".")).join("uncounted/libbext_locking_memory.so")
}

/// The uncounted `.so`, checked to really count nothing.
fn load_uncounted() -> Result<bext_locking_loader::LoadedPlugin, String> {
    let path = uncounted_path();
    if !path.exists() {
        return Err(format!(
            "{} is missing (make bench builds it with `--features uncounted`)",
            path.display()
        ));
    }
    let lib = bext_locking_loader::load(&path).map_err(|e| e.to_string())?;
    match lib.create_ffi("{}")?.stats() {
        Err(e) if e.kind() == bext_locking::ErrorKind::Unsupported => Ok(lib),
        other => Err(format!("{} counts statistics after all: {other:?}", path.display())),
    }
}

/// What counting statistics in the ffi layer costs per call: the same
/// acquire+release pairs through the `.so` with counting on and through an
/// identical build with counting off, interleaved in one run, and the
/// instruction counts of both under callgrind. A pair is two counted
/// calls (`try_lock`, `release`).
fn stats_cost(settings: &Settings, report: &mut Report, body: &mut String) -> Result<(), String> {
    let counted = plugin::load("memory")?.create_ffi("{}")?;
    counted.stats().map_err(|e| format!("the counting .so has no stats: {e}"))?;
    let uncounted = load_uncounted()?.create_ffi("{}")?;
    let sides = [
        plugin::side(".so, counting", Kind::So, &counted, "bench/stats/on"),
        plugin::side(".so, not counting", Kind::RawAlt, &uncounted, "bench/stats/off"),
    ];
    let group = measure("memory stats", 1, &sides, settings);
    drop(sides);
    let by = |k: Kind| group.iter().find(|t| t.kind == k).cloned();
    let (on, off) = (by(Kind::So), by(Kind::RawAlt));
    let Some((on, off)) = both(&on, &off) else {
        return Err("a side failed".to_owned());
    };
    let mean_pair = paired(on, off, |a, b| 1e9 / a - 1e9 / b).unwrap_or(f64::NAN);
    let p50_pair = (on.hist.quantile(0.5) as f64) - (off.hist.quantile(0.5) as f64);
    let _ = writeln!(
        body,
        "\nThe cost of counting statistics (ABI 1.1 `stats`, counted in the ffi layer): the same \
         pairs through the `.so` and through an identical build with the ffi feature \
         `uncounted`, 1 thread, interleaved in one run. Counting on: {}/s, p50 {} ns; off: \
         {}/s, p50 {} ns. Per call (half a pair): **{:.1} ns** mean, **{:.1} ns** at the \
         median.",
        thousands(on.rate()),
        on.hist.quantile(0.5),
        thousands(off.rate()),
        off.hist.quantile(0.5),
        mean_pair / 2.0,
        p50_pair / 2.0
    );
    let callgrind_note = match callgrind_sides("so", "so-uncounted") {
        Ok((with, without)) => {
            let per_call = (with - without) / 2.0;
            let _ = writeln!(
                body,
                "Under callgrind: {with:.0} instructions per pair counting, {without:.0} not \
                 counting: **{per_call:.0} instructions per call**."
            );
            format!(
                "; callgrind: {per_call:.0} instructions per call ({with:.0} vs {without:.0} per pair)"
            )
        }
        Err(e) => format!("; callgrind not run: {e}"),
    };
    report.target(
        "memory",
        "stats counting per call (`try_lock` or `release`), `.so` counting vs not counting, 1 thread, mean",
        "< 50 ns",
        format!("{:.1} ns (median {:.1} ns)", mean_pair / 2.0, p50_pair / 2.0),
        Verdict::of(mean_pair / 2.0 < 50.0),
        format!(
            "counting is always on, so it must stay small beside the cheapest call there is (a memory pair through the .so is about {} ns); two clock reads (the CPU's timestamp counter where the kernel keeps time with it, else the monotonic clock), a table lookup for the bucket and one relaxed atomic add per call{callgrind_note}",
            on.hist.quantile(0.5)
        ),
    );
    Ok(())
}

/// Both sides, when both were measured.
pub fn both<'a>(a: &'a Option<Tally>, b: &'a Option<Tally>) -> Option<(&'a Tally, &'a Tally)> {
    match (a, b) {
        (Some(a), Some(b)) if a.ok() && b.ok() => Some((a, b)),
        _ => None,
    }
}

/// Instructions per pair (in-process, `.so`), from this binary re-run
/// under callgrind in [`worker`] mode.
fn callgrind() -> Result<(f64, f64), String> {
    callgrind_sides("in-process", "so")
}

/// Instructions per pair of two [`worker`] sides.
fn callgrind_sides(first: &str, second: &str) -> Result<(f64, f64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let count = |side: &str, pairs: u64| -> Result<u64, String> {
        let out = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(&exe)
            .args(["callgrind-worker", side, &pairs.to_string()])
            .output()
            .map_err(|e| format!("valgrind could not start ({e}); install valgrind"))?;
        let text = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("valgrind failed: {}", text.lines().last().unwrap_or("")));
        }
        text.lines()
            .find_map(|l| l.split_once("Collected :").map(|(_, n)| n.trim().to_owned()))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| "no `Collected :` line in callgrind's output".to_owned())
    };
    let per_pair = |side: &str| -> Result<f64, String> {
        let (a, b) = (count(side, CALLGRIND_PAIRS.0)?, count(side, CALLGRIND_PAIRS.1)?);
        Ok(b.saturating_sub(a) as f64 / (CALLGRIND_PAIRS.1 - CALLGRIND_PAIRS.0) as f64)
    };
    eprintln!("  memory: counting instructions under callgrind ({first}, {second})");
    Ok((per_pair(first)?, per_pair(second)?))
}

/// The process callgrind runs: `pairs` pairs on one key through `side`.
pub fn worker(side: &str, pairs: u64) -> Result<(), String> {
    let p = match side {
        "so" => plugin::load("memory")?.create("{}")?,
        "so-uncounted" => load_uncounted()?.create("{}")?,
        _ => plugin::in_process::<Exported>("{}")?,
    };
    for _ in 0..pairs {
        plugin::pair(&*p, "callgrind")?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("callgrind-worker") {
        let side = args.get(1).map(String::as_str).unwrap_or("in-process");
        let pairs = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1000);
        if let Err(e) = worker(side, pairs) {
            eprintln!("bext-bench-memory callgrind-worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    bext_locking_bench::section_main("memory", run);
}
