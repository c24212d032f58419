//! `bext-lock-safety`: N processes × T threads hammer one key through a
//! plugin's `.so` while the checker kills servers, terminates sessions and
//! freezes holders; then it proves that no two holding intervals overlapped
//! and that fences rose. See `docs/RELIABILITY.md`.
//!
//! Exit status: 0 when every run was safe, 1 on any overlap or fence
//! violation, 2 on bad usage, 3 when a run could not show anything (a
//! server would not start, a worker crashed, the backend never recovered).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bext_locking_safety::Fault;
use bext_locking_safety::backends::{self, BACKENDS, Deployment, Env};
use bext_locking_safety::report;
use bext_locking_safety::scenario::{self, Outcome, Settings, Status};
use bext_locking_safety::worker::{self, WorkerSpec};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bext-lock-safety",
    version,
    about = "Prove that a lock plugin never lets two holders in at once, also under faults",
    long_about = "N processes × T threads loop try_lock / hold / release on one key through each \
backend's .so, while a server is killed and restarted, PostgreSQL sessions are terminated, or a \
holder is frozen with SIGSTOP past its TTL, or the path of a `bext-lock run` holder to its server \
freezes while its job keeps writing. Every holding interval is recorded on CLOCK_MONOTONIC \
with its fence; the check proves that none overlap, that fences rise in interval order, and that a \
fenced storage refused the writes of holders whose lease had ended.\n\n\
Exit status: 0 safe, 1 overlap or fence violation, 2 bad usage, 3 inconclusive.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Role {
    /// A hammer worker (started by the checker itself).
    #[command(hide = true)]
    Worker { spec: PathBuf },
    /// A holder to be frozen (started by the checker itself).
    #[command(hide = true)]
    Stall { spec: PathBuf },
    /// The frozen `bext-lock run` holder's job (started by it).
    #[command(hide = true)]
    Writer { file: PathBuf },
    /// An election candidate (started by the checker itself, `--election`).
    #[command(hide = true)]
    Candidate { spec: PathBuf },
}

#[derive(Args)]
struct RunArgs {
    /// Backends to run, comma-separated (default: all; see --list).
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
    /// Faults to run, comma-separated: none, restart, terminate, stall,
    /// freeze, break (default: the baseline and every fault that applies).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Worker processes [default: 3; --long: 6].
    #[arg(long)]
    processes: Option<u32>,
    /// Threads per process, each with its own instance [default: 2; --long: 4].
    #[arg(long)]
    threads: Option<u32>,
    /// How long each run lasts, in ms (longer when a fault needs it) [default: 3000; --long: 60000].
    #[arg(long)]
    duration_ms: Option<u64>,
    /// Repeat the fault this often within a run, in ms [default: once; --long: 10000].
    #[arg(long)]
    fault_every_ms: Option<u64>,
    /// How long each acquisition is held, in µs.
    #[arg(long, default_value_t = 1_000)]
    hold_us: u64,
    /// The workers' TTL in ms.
    #[arg(long, default_value_t = 500)]
    ttl_ms: u64,
    /// The frozen holder's TTL in ms.
    #[arg(long, default_value_t = 300)]
    stall_ttl_ms: u64,
    /// Soak run: 6 processes × 4 threads, 60 s per run, a fault every 10 s.
    #[arg(long)]
    long: bool,
    /// Every worker (and the frozen and broken holders) acquires with
    /// `lock_wait` through the loader instead of looping `try_lock`: the
    /// plugin's own notified wait, or the host's polling fallback for a
    /// plugin without one (the table says which). Same backends, same faults.
    /// With --report, the results go between the bext-lock-safety-wait markers.
    #[arg(long)]
    wait: bool,
    /// How long one `lock_wait` may wait before it counts as contention, in ms.
    #[arg(long, default_value_t = 2_000)]
    wait_ms: u64,
    /// Check a plugin that is not in the table (faults: none, and stall if it fences).
    #[arg(long, requires = "config")]
    plugin: Option<PathBuf>,
    /// Config JSON for --plugin.
    #[arg(long, requires = "plugin")]
    config: Option<String>,
    /// Where the backends' libbext_locking_NAME.so are [default: next to this program].
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// The shared PostgreSQL server (only a schema and sessions of the checker's own are touched).
    #[arg(
        long,
        env = "BEXT_PG_URL",
        hide_env_values = true,
        default_value = "postgres://root@127.0.0.1:5432/test"
    )]
    pg_url: String,
    /// Write the results into this Markdown file, between its bext-lock-safety markers.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write every outcome as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run the election scenario instead: 4 candidates campaign on one key
    /// while the leader is SIGKILLed and SIGSTOPped in turn (and the
    /// backend's restart or terminate fault is injected once).
    #[arg(long)]
    election: bool,
    /// List the backends and their faults, and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.role {
        Some(Role::Worker { spec }) => child(&spec, |s| {
            let summary = worker::hammer(s)?;
            println!("SUMMARY {}", serde_json::to_string(&summary).unwrap());
            Ok(())
        }),
        Some(Role::Stall { spec }) => child(&spec, worker::stall),
        Some(Role::Candidate { spec }) => {
            match std::fs::read(&spec)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(spec) => match bext_locking_safety::election::candidate(&spec) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(2, &e),
                },
                Err(e) => fail(2, &format!("{}: {e}", spec.display())),
            }
        }
        Some(Role::Writer { file }) => match bext_locking_safety::freeze::writer(&file) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(2, &e),
        },
        None => checker(cli.run),
    }
}

fn child(spec: &Path, f: impl FnOnce(&WorkerSpec) -> Result<(), String>) -> ExitCode {
    let spec: WorkerSpec = match std::fs::read(spec)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => return fail(2, &format!("{}: {e}", spec.display())),
    };
    match f(&spec) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(2, &e),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("bext-lock-safety: {message}");
    ExitCode::from(code)
}

/// A plugin given on the command line.
struct Custom {
    config: String,
    fencing: bool,
}

impl Deployment for Custom {
    fn config(&self) -> String {
        self.config.clone()
    }
    fn fencing(&self) -> bool {
        self.fencing
    }
}

fn settings(a: &RunArgs) -> Result<Settings, String> {
    let plugin_dir = match &a.plugin_dir {
        Some(d) => d.clone(),
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let dir = exe.parent().ok_or("this program has no folder")?;
            if dir.ends_with("deps") { dir.parent().unwrap_or(dir) } else { dir }.to_owned()
        }
    };
    let (p, t, d, every) = if a.long { (6, 4, 60_000, Some(10_000)) } else { (3, 2, 3_000, None) };
    let s = Settings {
        processes: a.processes.unwrap_or(p),
        threads: a.threads.unwrap_or(t),
        duration: Duration::from_millis(a.duration_ms.unwrap_or(d)),
        hold_us: a.hold_us,
        ttl_ms: a.ttl_ms,
        stall_ttl_ms: a.stall_ttl_ms,
        fault_every: a.fault_every_ms.or(every).map(Duration::from_millis),
        plugin_dir,
        wait: a.wait,
        wait_ms: a.wait_ms,
    };
    if s.processes == 0 || s.threads == 0 {
        return Err("--processes and --threads must be at least 1".into());
    }
    if s.ttl_ms < 50 || s.hold_us.saturating_mul(10) > s.ttl_ms.saturating_mul(1_000) {
        return Err("--ttl-ms must be at least 50 and ten times --hold-us".into());
    }
    if s.wait && !(1..=bext_locking::MAX_TTL_MS).contains(&s.wait_ms) {
        return Err("--wait-ms must be between 1 and the largest TTL".into());
    }
    if s.fault_every.is_some_and(|e| e < Duration::from_millis(1_000)) {
        return Err("--fault-every-ms must be at least 1000".into());
    }
    Ok(s)
}

fn checker(a: RunArgs) -> ExitCode {
    if a.list {
        for b in BACKENDS {
            let faults: Vec<&str> =
                std::iter::once("none").chain(b.faults.iter().map(|f| f.name())).collect();
            let lib = format!("libbext_locking_{}.so", b.plugin);
            println!("{:<14} {lib:<26} faults: {}", b.name, faults.join(", "));
        }
        return ExitCode::SUCCESS;
    }
    let s = match settings(&a) {
        Ok(s) => s,
        Err(e) => return fail(2, &e),
    };
    let mut faults = Vec::new();
    for name in &a.faults {
        match Fault::parse(name) {
            Some(f) => faults.push(f),
            None => {
                return fail(
                    2,
                    &format!(
                        "unknown fault {name:?} (none, restart, terminate, stall, freeze, break)"
                    ),
                );
            }
        }
    }
    let wanted = |f: Fault| faults.is_empty() || faults.contains(&f);
    let env = Env { pg_url: a.pg_url.clone(), ttl_ms: s.ttl_ms };
    let mut outcomes: Vec<Outcome> = Vec::new();

    if let Some(plugin) = &a.plugin {
        let config = a.config.clone().unwrap_or_else(|| "{}".into());
        let fencing = match bext_locking_loader::load(plugin).map(|p| p.describe()) {
            Ok(Ok(d)) => d.fencing,
            Ok(Err(e)) => return fail(3, &format!("describe: {e}")),
            Err(e) => return fail(3, &format!("load {}: {e}", plugin.display())),
        };
        let mut d = Custom { config, fencing };
        let name = plugin.file_stem().map_or("plugin".into(), |n| n.to_string_lossy().into_owned());
        for f in [Fault::None, Fault::Stall].into_iter().filter(|&f| wanted(f)) {
            if f == Fault::Stall && !fencing {
                continue;
            }
            outcomes.push(progress(scenario::run(&name, plugin, &mut d, f, &s)));
        }
    } else {
        let mut selected = Vec::new();
        for name in &a.backends {
            match backends::find(name) {
                Some(b) => selected.push(b),
                None => return fail(2, &format!("unknown backend {name:?} (see --list)")),
            }
        }
        if selected.is_empty() {
            selected = BACKENDS.iter().collect();
        }
        for b in selected {
            if a.election {
                outcomes.push(progress(election_run(b, &env, &s)));
                continue;
            }
            let runs: Vec<Fault> = std::iter::once(Fault::None)
                .chain(b.faults.iter().copied())
                .filter(|&f| wanted(f))
                .collect();
            if runs.is_empty() {
                continue;
            }
            eprintln!("bext-lock-safety: starting {}", b.name);
            let plugin = s.plugin_dir.join(format!("libbext_locking_{}.so", b.plugin));
            match (b.start)(&env) {
                Ok(mut d) => {
                    for f in runs {
                        outcomes.push(progress(scenario::run(b.name, &plugin, &mut *d, f, &s)));
                    }
                }
                Err(e) => {
                    for f in runs {
                        outcomes.push(progress(Outcome::failed(b.name, f, e.clone())));
                    }
                }
            }
        }
    }

    let table = report::markdown(&outcomes);
    println!("{table}");
    if let Some(path) = &a.json {
        if let Err(e) = std::fs::write(path, serde_json::to_vec_pretty(&outcomes).unwrap()) {
            return fail(3, &format!("{}: {e}", path.display()));
        }
    }
    if let Some(path) = &a.report {
        let body = format!("{}\n{table}", preamble(&s, &a));
        let written = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|doc| {
                if s.wait {
                    report::splice_between(&doc, &body, report::WAIT_BEGIN, report::WAIT_END)
                } else {
                    report::splice(&doc, &body)
                }
            })
            .and_then(|doc| std::fs::write(path, doc).map_err(|e| e.to_string()));
        if let Err(e) = written {
            return fail(3, &format!("{}: {e}", path.display()));
        }
    }
    if outcomes.iter().any(|o| o.status == Status::Unsafe) {
        fail(1, "UNSAFE: see the table")
    } else if outcomes.iter().any(|o| o.status == Status::Inconclusive) {
        fail(3, "some runs were inconclusive: see the table")
    } else {
        ExitCode::SUCCESS
    }
}

/// `--election` on one backend: its server fault (restart or terminate),
/// if it has one, joins the leader kills and freezes.
fn election_run(b: &backends::Backend, env: &Env, s: &Settings) -> Outcome {
    use bext_locking_safety::election;
    let plugin = s.plugin_dir.join(format!("libbext_locking_{}.so", b.plugin));
    let server_fault =
        b.faults.iter().copied().find(|f| matches!(f, Fault::Restart | Fault::Terminate));
    eprintln!("bext-lock-safety: starting {} (election)", b.name);
    match (b.start)(env) {
        Ok(mut d) => election::run(b.name, &plugin, &mut *d, server_fault, s),
        Err(e) => Outcome::failed(b.name, Fault::None, e),
    }
}

fn progress(o: Outcome) -> Outcome {
    eprintln!(
        "bext-lock-safety: {} / {}: {:?}, {} acquisitions, {} errors, {} overlaps, {} fence violations",
        o.backend, o.fault, o.status, o.acquisitions, o.errors, o.overlaps, o.fence_violations
    );
    o
}

/// The command and the conditions, written above the table.
fn preamble(s: &Settings, a: &RunArgs) -> String {
    let quote = |arg: String| {
        if arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./,:".contains(c)) {
            arg
        } else {
            format!("'{}'", arg.replace('\'', r"'\''"))
        }
    };
    // The program as it was invoked (e.g. `target/debug/bext-lock-safety`).
    let args: Vec<String> = std::env::args().map(quote).collect();
    let mut out = format!("Produced by `{}`", args.join(" "));
    let cmd = |prog: &str, args: &[&str]| {
        std::process::Command::new(prog)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_owned()
            })
            .filter(|l| !l.is_empty())
    };
    if let Some(date) = cmd("date", &["-u", "+%Y-%m-%d"]) {
        out.push_str(&format!(" on {date}"));
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    out.push_str(&format!(", {cores} cores"));
    let mut servers = Vec::new();
    if let Some(v) = cmd("redis-server", &["--version"]) {
        servers.push(
            v.split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .map(|v| format!("Redis {v}"))
                .unwrap_or(v),
        );
    }
    if let Some(v) = cmd("etcd", &["--version"]) {
        servers.push(v.replace("etcd Version:", "etcd").trim().to_owned());
    }
    if let Ok(mut c) = postgres::Client::connect(&a.pg_url, postgres::NoTls) {
        if let Ok(row) = c.query_one("SHOW server_version", &[]) {
            let v: String = row.get(0);
            servers.push(format!("PostgreSQL {}", v.split_whitespace().next().unwrap_or(&v)));
        }
    }
    if !servers.is_empty() {
        out.push_str(&format!(", {}", servers.join(", ")));
    }
    if s.wait {
        out.push_str(&format!(
            ".\nEvery worker acquires with `lock_wait` (each wait up to {} ms; a wait that times \
             out counts as contention) instead of looping `try_lock`",
            s.wait_ms
        ));
    }
    out.push_str(&format!(
        ".\nEach run: {} processes × {} threads (the memory backend: one process), {} ms{}, \
         holding {} µs per acquisition, TTL {} ms (a frozen holder: {} ms; `bext-lock run` \
         behind a frozen path: {} ms).\n",
        s.processes,
        s.threads,
        s.duration.as_millis(),
        match s.fault_every {
            Some(e) => format!(" with the fault every {} ms", e.as_millis()),
            None => " with the fault once, a third of the way in".into(),
        },
        s.hold_us,
        s.ttl_ms,
        s.stall_ttl_ms,
        bext_locking_safety::freeze::TTL_MS
    ));
    out
}
