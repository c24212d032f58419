//! One run: a backend's deployment, one fault, N processes × T threads.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use bext_locking::WaitMode;
use bext_locking_test_support::TempDir;
use bext_locking_test_support::hammer::monotonic_ns;
use bext_locking_test_support::servers::signal;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::Fault;
use crate::backends::{Deployment, FaultContext, unique};
use crate::check::check;
use crate::freeze::{self, FreezeSummary, Frozen};
use crate::record::{Record, WorkerSummary};
use crate::storage::FencedStorage;
use crate::worker::{Held, StallReport, WorkerSpec};

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Worker processes.
    pub processes: u32,
    /// Threads per process, each with its own instance.
    pub threads: u32,
    /// How long the workers run (longer when a fault needs it).
    pub duration: Duration,
    /// How long each acquisition is held.
    pub hold_us: u64,
    /// The workers' TTL.
    pub ttl_ms: u64,
    /// The frozen holder's TTL.
    pub stall_ttl_ms: u64,
    /// Repeat the fault this often (`None`: once).
    pub fault_every: Option<Duration>,
    /// Where the plugin libraries are.
    pub plugin_dir: PathBuf,
    /// Every worker acquires with `lock_wait` (waits of up to
    /// [`wait_ms`](Self::wait_ms)) instead of looping `try_lock`.
    pub wait: bool,
    /// How long one `lock_wait` may wait.
    pub wait_ms: u64,
}

/// How long the workers keep going after the last fault recovered, to
/// show the backend working again.
const AFTER: Duration = Duration::from_millis(1_000);

/// The longest a backend may take to grant the lock again after a fault
/// (an orphaned lease must run out first) before the run is called
/// inconclusive.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

/// What a frozen holder showed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StallSummary {
    /// Its fence.
    pub fence: Option<u64>,
    /// Its TTL.
    pub ttl_ms: u64,
    /// How long it was stopped.
    pub stopped_ms: u64,
    /// From just before its `try_lock` to its SIGCONT: at least its TTL,
    /// since another holder had taken over by then.
    pub asleep_ms: u64,
    /// The fence the storage had seen when it woke: another holder's.
    pub takeover_fence: u64,
    /// Why its renew failed (`None`: it succeeded, a violation).
    pub renew_error: Option<String>,
    /// Whether its write with the old fence was accepted (a violation).
    pub stale_write_accepted: bool,
}

/// What breaking a holder with `force_release` showed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BreakSummary {
    /// The broken holder's fence, as `inspect` showed it.
    pub fence: Option<u64>,
    /// The owner `inspect` showed.
    pub owner: Option<String>,
    /// What `force_release` answered: the lock was broken.
    pub released: bool,
    /// The fence `force_release` said it broke.
    pub broken_fence: Option<u64>,
    /// When the checker called `force_release` (monotonic ns): the broken
    /// holder's lease ends there, so only the part before it is held
    /// against the lock.
    pub break_ns: u64,
    /// When the broken holder stopped acting (after its renew failed).
    pub holder_end_ns: u64,
    /// The fence the storage had seen when the broken holder woke.
    pub takeover_fence: u64,
    /// Intervals that began after the break while the broken holder still
    /// believed it held the lock: overlaps of its belief, harmless only
    /// because the storage refuses its writes.
    pub overlapped_after_break: usize,
    /// Why its renew failed (`None`: it succeeded, a violation).
    pub renew_error: Option<String>,
    /// Whether its write with the old fence was accepted (a violation).
    pub stale_write_accepted: bool,
}

/// The verdict of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Intervals checked, nothing wrong.
    Safe,
    /// An overlap, a fence violation, or a stale holder that renewed or wrote.
    Unsafe,
    /// The run could not show anything (setup failed, a worker crashed or
    /// hung, no acquisition, no recovery, no takeover).
    Inconclusive,
}

/// Everything a run found, as the report shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Backend name.
    pub backend: String,
    /// Fault name.
    pub fault: String,
    /// How workers acquired: `try_lock`, or `lock_wait` with the plugin's
    /// wait mode (`notified`, `fifo`, or `polling`: the host's fallback).
    #[serde(default = "try_lock_name")]
    pub acquire: String,
    /// What the checker did, once per fault occurrence.
    pub actions: Vec<String>,
    /// Worker processes.
    pub processes: u32,
    /// Threads per process.
    pub threads: u32,
    /// Wall time of the run.
    pub seconds: f64,
    /// `try_lock` calls.
    pub operations: u64,
    /// Holding intervals (the frozen holders' included).
    pub acquisitions: u64,
    /// `Ok(None)` answers.
    pub contended: u64,
    /// `Err` answers from `try_lock` and `release`.
    pub errors: u64,
    /// A few distinct error messages.
    pub error_samples: Vec<String>,
    /// Whether fences were checked.
    pub fencing: bool,
    /// Intervals that overlapped an earlier one.
    pub overlaps: usize,
    /// Fence violations.
    pub fence_violations: usize,
    /// Intervals that ran past their lease (frozen holders).
    pub overruns: usize,
    /// Writes refused from holders whose lease had ended.
    pub stale_writes_rejected: usize,
    /// Acquisitions that began after the last fault ended.
    pub acquired_after_fault: Option<u64>,
    /// Per fault occurrence, how long after it ended the lock was first
    /// granted again.
    pub recovered_ms: Vec<u64>,
    /// What each frozen holder showed.
    pub stalls: Vec<StallSummary>,
    /// What each holder whose path froze showed.
    #[serde(default)]
    pub freezes: Vec<FreezeSummary>,
    /// What each holder broken with `force_release` showed.
    #[serde(default)]
    pub breaks: Vec<BreakSummary>,
    /// Safety violations, described.
    pub problems: Vec<String>,
    /// Why the run is inconclusive, if it is.
    pub trouble: Vec<String>,
    /// The verdict.
    pub status: Status,
}

fn try_lock_name() -> String {
    "try_lock".into()
}

/// How a run's workers acquire, as [`Outcome::acquire`] says it: loads the
/// plugin and asks an instance of `config` for its wait mode.
pub fn acquire_name(plugin: &Path, config: &str, wait: bool) -> String {
    if !wait {
        return try_lock_name();
    }
    let mode = bext_locking_loader::load(plugin)
        .map_err(|e| e.to_string())
        .and_then(|lib| lib.create_ffi(config))
        .map(|p| match p.wait_mode() {
            WaitMode::Notified => "notified",
            WaitMode::Fifo => "fifo",
            WaitMode::Polling => "polling",
        });
    match mode {
        Ok(m) => format!("lock_wait ({m})"),
        Err(_) => "lock_wait".into(),
    }
}

impl Outcome {
    /// An outcome for a run that could not start.
    pub fn failed(backend: &str, fault: Fault, why: String) -> Self {
        let mut o = Self::empty(backend, fault, 0, 0, false);
        o.trouble.push(why);
        o.status = Status::Inconclusive;
        o
    }

    fn empty(backend: &str, fault: Fault, processes: u32, threads: u32, fencing: bool) -> Self {
        Self {
            backend: backend.to_owned(),
            fault: fault.name().to_owned(),
            acquire: try_lock_name(),
            actions: Vec::new(),
            processes,
            threads,
            seconds: 0.0,
            operations: 0,
            acquisitions: 0,
            contended: 0,
            errors: 0,
            error_samples: Vec::new(),
            fencing,
            overlaps: 0,
            fence_violations: 0,
            overruns: 0,
            stale_writes_rejected: 0,
            acquired_after_fault: None,
            recovered_ms: Vec::new(),
            stalls: Vec::new(),
            freezes: Vec::new(),
            breaks: Vec::new(),
            problems: Vec::new(),
            trouble: Vec::new(),
            status: Status::Safe,
        }
    }
}

/// A child process of the run, killed (after a SIGCONT, should it be
/// stopped) if it is still there when the guard drops.
struct Worker {
    child: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Lines read while looking for `LAST` ones.
    pending: std::collections::VecDeque<String>,
    /// The latest acquisition it reported.
    last_acquired_ns: u64,
}

impl Worker {
    fn spawn(role: &str, spec: &Path) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .arg(role)
            .arg(spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn a {role}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(Self { child, stdin, lines, pending: Default::default(), last_acquired_ns: 0 })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The latest acquisition it has reported so far.
    fn last_acquired_ns(&mut self) -> u64 {
        while let Ok(line) = self.lines.try_recv() {
            match line.strip_prefix("LAST ").and_then(|n| n.trim().parse::<u64>().ok()) {
                Some(ns) => self.last_acquired_ns = self.last_acquired_ns.max(ns),
                None => self.pending.push_back(line),
            }
        }
        self.last_acquired_ns
    }

    /// The next line starting with `tag`, within `timeout`.
    fn expect(&mut self, tag: &str, timeout: Duration) -> Result<String, String> {
        while let Some(line) = self.pending.pop_front() {
            if let Some(rest) = line.strip_prefix(tag) {
                return Ok(rest.trim().to_owned());
            }
        }
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(tag) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("process {} said no {tag} within {timeout:?}", self.pid()));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("process {} exited before saying {tag}", self.pid()));
                }
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), Signal::SIGCONT);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn write_spec(dir: &Path, name: &str, spec: &WorkerSpec) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(spec).unwrap())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn read_records(path: &Path) -> Result<Vec<Record>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad record {l:?}: {e}")))
        .collect()
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Runs `fault` against a deployment and checks the result.
pub fn run(
    backend: &str,
    plugin: &Path,
    deployment: &mut dyn Deployment,
    fault: Fault,
    s: &Settings,
) -> Outcome {
    let fencing = deployment.fencing();
    let (processes, threads) = match deployment.max_processes() {
        Some(max) if s.processes > max => (max, s.threads * s.processes / max),
        _ => (s.processes, s.threads),
    };
    let mut o = Outcome::empty(backend, fault, processes, threads, fencing);
    if let Err(why) = run_into(&mut o, plugin, deployment, fault, s) {
        o.trouble.push(why);
    }
    o.status = if !o.problems.is_empty() || o.overlaps > 0 || o.fence_violations > 0 {
        Status::Unsafe
    } else if !o.trouble.is_empty() {
        Status::Inconclusive
    } else {
        Status::Safe
    };
    o
}

fn run_into(
    o: &mut Outcome,
    plugin: &Path,
    deployment: &mut dyn Deployment,
    fault: Fault,
    s: &Settings,
) -> Result<(), String> {
    if !plugin.exists() {
        return Err(format!(
            "{} is missing: build the plugins first (`cargo build --workspace`, with `--release` for a release checker)",
            plugin.display()
        ));
    }
    if fault == Fault::Stall && !o.fencing {
        return Err("a frozen holder shows something only on a fencing backend".into());
    }
    if fault == Fault::Break && !o.fencing {
        return Err("a broken holder is kept from harm only by fences".into());
    }
    let dir = TempDir::new("safety-run");
    let key = unique(&format!("safety/{}/{}/", o.backend, fault.name()));
    let storage_path = dir.path().join("storage");
    let storage = if o.fencing {
        Some(FencedStorage::create(&storage_path).map_err(|e| format!("fenced storage: {e}"))?)
    } else {
        None
    };
    let spec = WorkerSpec {
        plugin: plugin.to_owned(),
        config: deployment.config(),
        key: key.clone(),
        ttl_ms: s.ttl_ms,
        threads: o.threads,
        hold_us: s.hold_us,
        storage: storage.as_ref().map(|_| storage_path.clone()),
        out: PathBuf::new(),
        // Far past the run; only matters if this process vanished without
        // closing the workers' stdin.
        max_runtime_ms: (s.duration.as_millis() as u64).saturating_mul(4) + 600_000,
        wait: s.wait,
        wait_ms: s.wait_ms,
    };
    if plugin.exists() {
        o.acquire = acquire_name(plugin, &spec.config, s.wait);
    }
    let mut workers = Vec::new();
    let mut outs = Vec::new();
    for i in 0..o.processes {
        let out = dir.path().join(format!("records-{i}.jsonl"));
        let path = write_spec(
            dir.path(),
            &format!("worker-{i}.json"),
            &WorkerSpec { out: out.clone(), ..spec.clone() },
        )?;
        workers.push(Worker::spawn("worker", &path)?);
        outs.push(out);
    }
    for w in &mut workers {
        w.expect("READY", Duration::from_secs(60))?;
    }
    let started = Instant::now();

    let warmup = (s.duration / 3).max(Duration::from_millis(300));
    sleep_until(started + warmup);
    let mut stall_records = Vec::new();
    let mut frozen: Vec<Frozen> = Vec::new();
    let mut last_fault_end = None;
    if fault != Fault::None {
        for occurrence in 0.. {
            let ctx = FaultContext { key: key.clone(), ttl_ms: s.ttl_ms, occurrence };
            let done = match fault {
                Fault::Stall => {
                    let stall_spec =
                        WorkerSpec { ttl_ms: s.stall_ttl_ms, threads: 1, ..spec.clone() };
                    let path =
                        write_spec(dir.path(), &format!("stall-{occurrence}.json"), &stall_spec)?;
                    let storage = storage.as_ref().expect("fencing");
                    stall_once(&path, storage, s.stall_ttl_ms).map(|(summary, report, text)| {
                        o.stalls.push(summary);
                        stall_records.push(report.record);
                        text
                    })
                }
                Fault::Break => {
                    let break_spec =
                        WorkerSpec { ttl_ms: break_ttl_ms(s.ttl_ms), threads: 1, ..spec.clone() };
                    let path =
                        write_spec(dir.path(), &format!("break-{occurrence}.json"), &break_spec)?;
                    let storage = storage.as_ref().expect("fencing");
                    break_once(&path, storage, plugin, &spec.config, &key).map(
                        |(summary, report, text)| {
                            let mut record = report.record;
                            // Its lease ended at the break: only the part
                            // before it is the lock's promise. Its refused
                            // write is counted in the summary, not as a
                            // write refused within a lease.
                            record.end_ns = record.end_ns.min(summary.break_ns);
                            o.stale_writes_rejected += record.rejected_writes as usize;
                            record.rejected_writes = 0;
                            o.breaks.push(summary);
                            stall_records.push(record);
                            text
                        },
                    )
                }
                Fault::Freeze => match deployment.via_proxy() {
                    None => Err("this deployment has no single server path to freeze".into()),
                    Some((upstream, config_via)) => freeze::freeze_once(
                        &s.plugin_dir.join("bext-lock"),
                        plugin,
                        upstream,
                        &*config_via,
                        &key,
                        dir.path(),
                        occurrence,
                    )
                    .map(|(f, text)| {
                        frozen.push(f);
                        text
                    }),
                },
                _ => deployment.inject(fault, &ctx),
            };
            let end = monotonic_ns();
            last_fault_end = Some(end);
            match done {
                Ok(text) => o.actions.push(text),
                Err(e) => {
                    o.trouble.push(format!("fault {}: {e}", fault.name()));
                    break;
                }
            }
            // Wait for the first acquisition after the fault.
            let waited = Instant::now();
            loop {
                let last = workers.iter_mut().map(Worker::last_acquired_ns).max().unwrap_or(0);
                if last > end {
                    o.recovered_ms.push((last - end).div_ceil(1_000_000));
                    break;
                }
                if waited.elapsed() > RECOVERY_LIMIT {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if o.recovered_ms.len() <= occurrence {
                // Reported below, from the records.
                break;
            }
            let Some(every) = s.fault_every else { break };
            let next = started + warmup + every * (occurrence as u32 + 1);
            if next + AFTER > started + s.duration {
                break;
            }
            sleep_until(next);
        }
    }
    let mut until = started + s.duration;
    if last_fault_end.is_some() {
        until = until.max(Instant::now() + AFTER);
    }
    sleep_until(until);

    // Closing stdin tells the workers to stop.
    for w in &mut workers {
        w.stdin.take();
    }
    let mut total = WorkerSummary::default();
    for w in &mut workers {
        match w.expect("SUMMARY", Duration::from_secs(60)) {
            Ok(json) => match serde_json::from_str::<WorkerSummary>(&json) {
                Ok(summary) => total.add(&summary),
                Err(e) => o.trouble.push(format!("bad summary {json:?}: {e}")),
            },
            Err(e) => o.trouble.push(e),
        }
    }
    drop(workers);
    o.seconds = started.elapsed().as_secs_f64();

    let mut records = stall_records;
    for out in &outs {
        match read_records(out) {
            Ok(r) => records.extend(r),
            Err(e) => o.trouble.push(e),
        }
    }
    // The frozen and the broken holders each took the lock once, in
    // processes of their own.
    let extra = (o.stalls.len() + o.breaks.len()) as u64;
    o.operations = total.operations + extra;
    o.acquisitions = records.len() as u64;
    o.contended = total.contended;
    o.errors = total.errors;
    o.error_samples = total.error_samples;
    if total.acquired + extra != o.acquisitions {
        o.trouble.push(format!(
            "{} acquisitions reported but {} intervals recorded",
            total.acquired + extra,
            o.acquisitions
        ));
    }
    if let Some(end) = last_fault_end {
        let after = records.iter().filter(|r| r.start_ns > end).count() as u64;
        o.acquired_after_fault = Some(after);
        if after == 0 {
            o.trouble.push(format!(
                "no acquisition within {} s after the fault: the backend did not recover",
                RECOVERY_LIMIT.as_secs()
            ));
        }
    }
    if o.acquisitions == 0 {
        o.trouble.push("no acquisition at all".into());
    }

    for b in &mut o.breaks {
        b.overlapped_after_break = records
            .iter()
            .filter(|r| r.start_ns > b.break_ns && r.start_ns < b.holder_end_ns)
            .count();
        if !b.released {
            o.trouble.push(format!("force_release at fence {:?} broke nothing", b.fence));
        }
        if b.broken_fence != b.fence {
            o.problems.push(format!(
                "force_release said it broke fence {:?}; inspect showed {:?}",
                b.broken_fence, b.fence
            ));
        }
        if b.renew_error.is_none() {
            o.problems.push(format!(
                "the broken holder (fence {:?}) renewed after the break; fence {} had taken over",
                b.fence, b.takeover_fence
            ));
        }
        if b.stale_write_accepted {
            o.problems.push(format!(
                "the storage accepted the broken holder's write with fence {:?} after fence {}",
                b.fence, b.takeover_fence
            ));
        }
    }
    for f in &frozen {
        let summary = f.summarize(&records);
        o.problems.extend(summary.problems());
        o.trouble.extend(summary.trouble());
        o.freezes.push(summary);
    }
    let verdict = check(&mut records, o.fencing);
    o.overlaps = verdict.overlaps;
    o.fence_violations = verdict.fence_violations;
    o.overruns = verdict.overruns;
    o.stale_writes_rejected += verdict.stale_writes_rejected;
    o.problems.extend(verdict.problems);
    for st in &o.stalls {
        if st.renew_error.is_none() {
            o.problems.push(format!(
                "the frozen holder (fence {:?}) renewed after fence {} took over",
                st.fence, st.takeover_fence
            ));
        }
        if st.stale_write_accepted {
            o.problems.push(format!(
                "the storage accepted the frozen holder's write with fence {:?} after fence {}",
                st.fence, st.takeover_fence
            ));
        }
    }
    if let Some(storage) = &storage {
        let top = records.iter().filter_map(|r| r.fence).max().unwrap_or(0);
        match storage.highest() {
            Ok(h) if h == top => {}
            Ok(h) => o
                .problems
                .push(format!("the storage's highest fence is {h}, the highest handed out {top}")),
            Err(e) => o.trouble.push(format!("fenced storage: {e}")),
        }
    }
    Ok(())
}

/// The broken holder's TTL: long enough that only the break, never its
/// own expiry, can end its lease during the fault.
fn break_ttl_ms(ttl_ms: u64) -> u64 {
    (ttl_ms * 20).max(20_000)
}

/// Takes the lock in a holder with a long TTL, breaks it from this process
/// (`inspect` for the fence, then `force_release` with `if_fence`), waits
/// until another holder has written with a higher fence, and then lets the
/// broken holder act as if it still held the lock.
fn break_once(
    spec: &Path,
    storage: &FencedStorage,
    plugin: &Path,
    config: &str,
    key: &str,
) -> Result<(BreakSummary, StallReport, String), String> {
    let lib = bext_locking_loader::load(plugin).map_err(|e| format!("load: {e}"))?;
    let admin = lib.create_ffi(config).map_err(|e| format!("create: {e}"))?;
    let mut holder = Worker::spawn("stall", spec)?;
    let held: Held = serde_json::from_str(&holder.expect("HELD", Duration::from_secs(40))?)
        .map_err(|e| format!("bad HELD line: {e}"))?;
    let fence = held.fence.ok_or("the holder's handle has no fence")?;
    // The holder works a little while the others contend.
    std::thread::sleep(Duration::from_millis(50));
    let info = admin.inspect(key).map_err(|e| format!("inspect: {e}"))?;
    if !info.held || info.fence != Some(fence) {
        return Err(format!(
            "inspect shows held {} at fence {:?}; the holder has fence {fence}",
            info.held, info.fence
        ));
    }
    let break_ns = monotonic_ns();
    let done = admin.force_release(key, info.fence).map_err(|e| format!("force_release: {e}"))?;
    let broke_ms = (monotonic_ns() - held.start_ns) / 1_000_000;
    let limit = Duration::from_secs(30);
    let waited = Instant::now();
    let takeover = loop {
        let top = storage.highest().map_err(|e| format!("fenced storage: {e}"))?;
        if top > fence {
            break top;
        }
        if waited.elapsed() > limit || !done.released {
            return Err(format!(
                "nobody took the lock over within {limit:?} of breaking fence {fence} (released: {})",
                done.released
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Let the new holders work a little before the broken one acts.
    std::thread::sleep(Duration::from_millis(100));
    let mut stdin = holder.stdin.take().ok_or("no stdin")?;
    stdin.write_all(b"go\n").map_err(|e| format!("wake the broken holder: {e}"))?;
    let report: StallReport =
        serde_json::from_str(&holder.expect("DONE", Duration::from_secs(30))?)
            .map_err(|e| format!("bad DONE line: {e}"))?;
    drop(stdin);
    let summary = BreakSummary {
        fence: Some(fence),
        owner: info.owner.clone(),
        released: done.released,
        broken_fence: done.fence,
        break_ns,
        holder_end_ns: report.record.end_ns,
        takeover_fence: report.storage_fence.max(takeover),
        overlapped_after_break: 0,
        renew_error: report.renew_error.clone(),
        stale_write_accepted: report.stale_write_accepted,
    };
    let text = format!(
        "broke the holder (fence {fence}, owner {}) {broke_ms} ms into its lease with inspect + force_release if_fence {fence} (released: {}); fence {takeover} took over; then its renew {} and its write with fence {fence} was {}",
        info.owner.as_deref().unwrap_or("none"),
        done.released,
        match &report.renew_error {
            Some(_) => "failed",
            None => "SUCCEEDED",
        },
        if report.stale_write_accepted { "ACCEPTED" } else { "rejected" },
    );
    Ok((summary, report, text))
}

/// Freezes one holder past its TTL and wakes it once another holder has
/// written with a higher fence.
fn stall_once(
    spec: &Path,
    storage: &FencedStorage,
    ttl_ms: u64,
) -> Result<(StallSummary, StallReport, String), String> {
    let mut holder = Worker::spawn("stall", spec)?;
    let held: Held = serde_json::from_str(&holder.expect("HELD", Duration::from_secs(40))?)
        .map_err(|e| format!("bad HELD line: {e}"))?;
    let fence = held.fence.ok_or("the frozen holder's handle has no fence")?;
    signal(holder.pid(), Signal::SIGSTOP);
    let stopped = Instant::now();
    // Every lease ends within its TTL (etcd rounds up to whole seconds and
    // sweeps twice a second): give it ample time before calling it stuck.
    let limit = Duration::from_millis(ttl_ms * 10).max(Duration::from_secs(30));
    let takeover = loop {
        let top = storage.highest().map_err(|e| format!("fenced storage: {e}"))?;
        if top > fence {
            break top;
        }
        if stopped.elapsed() > limit {
            return Err(format!(
                "nobody took the lock over within {limit:?} of freezing its holder"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Let the new holders work a little before the old one wakes.
    std::thread::sleep(Duration::from_millis(100));
    let stopped_ms = stopped.elapsed().as_millis() as u64;
    let asleep_ms = (monotonic_ns() - held.call_ns) / 1_000_000;
    signal(holder.pid(), Signal::SIGCONT);
    let mut stdin = holder.stdin.take().ok_or("no stdin")?;
    stdin.write_all(b"go\n").map_err(|e| format!("wake the frozen holder: {e}"))?;
    let report: StallReport =
        serde_json::from_str(&holder.expect("DONE", Duration::from_secs(30))?)
            .map_err(|e| format!("bad DONE line: {e}"))?;
    let summary = StallSummary {
        fence: Some(fence),
        ttl_ms,
        stopped_ms,
        asleep_ms,
        takeover_fence: report.storage_fence.max(takeover),
        renew_error: report.renew_error.clone(),
        stale_write_accepted: report.stale_write_accepted,
    };
    let text = format!(
        "froze a holder (fence {fence}, TTL {ttl_ms} ms) with SIGSTOP for {stopped_ms} ms; another took over with fence {takeover}; after SIGCONT its renew {} and its write with fence {fence} was {}",
        match &report.renew_error {
            Some(_) => "failed",
            None => "SUCCEEDED",
        },
        if report.stale_write_accepted { "ACCEPTED" } else { "rejected" },
    );
    drop(stdin);
    Ok((summary, report, text))
}
