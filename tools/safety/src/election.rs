//! The election scenario: candidate processes campaign on one key with
//! [`bext_locking::Election`] while the checker SIGKILLs and SIGSTOPs the
//! leader (and injects the backend's own server fault, if it has one).
//!
//! Each leader writes its term (the lock's fence) to a fenced storage
//! while it leads, and logs when its leadership began and ended on
//! `CLOCK_MONOTONIC`. Afterwards the intervals go through the same
//! [`check::check`] as the hammer's: no two leaderships overlap within
//! their leases, terms rise in interval order, and no write within a lease
//! was refused. A leader frozen past its lease writes once more with its
//! old term when it wakes up: the storage must refuse it, as a newer
//! leader has written meanwhile.
//!
//! A killed leader never logs its end: the checker counts its leadership
//! as ending when the kill was reaped.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bext_locking::{ClockDrift, Election, GuardOptions, LossCause};
use bext_locking_test_support::TempDir;
use bext_locking_test_support::hammer::monotonic_ns;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::Fault;
use crate::backends::{Deployment, FaultContext, unique};
use crate::check;
use crate::record::Record;
use crate::scenario::{Outcome, Settings, Status};
use crate::storage::FencedStorage;

/// Candidates campaigning at once.
pub const CANDIDATES: u32 = 4;

/// What a candidate process is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidateSpec {
    /// The plugin library.
    pub plugin: PathBuf,
    /// Its config.
    pub config: String,
    /// The election's key.
    pub key: String,
    /// Each leadership's lease.
    pub ttl_ms: u64,
    /// The fenced storage.
    pub storage: PathBuf,
    /// Where to log leaderships (JSON lines).
    pub out: PathBuf,
    /// Where the current leader writes its pid, for the checker.
    pub leader_file: PathBuf,
    /// The checker creates it to end the run.
    pub stop_file: PathBuf,
}

/// One line of a candidate's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Line {
    /// A leadership began.
    Start { pid: u32, call_ns: u64, start_ns: u64, ttl_ms: u64, fence: Option<u64> },
    /// A renewal was confirmed: the lease now ends at `lease_end_ns` (the
    /// guard's count: sent + TTL − drift).
    Renewed { pid: u32, start_ns: u64, lease_end_ns: u64 },
    /// It ended (a resign, a loss, or a wake-up after a freeze).
    End {
        pid: u32,
        start_ns: u64,
        end_ns: u64,
        rejected_writes: u32,
        stalled: bool,
        /// After a pause: whether the write with the old term was accepted.
        deposed_write_accepted: Option<bool>,
    },
}

fn log(out: &Path, line: &Line) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    writeln!(f, "{}", serde_json::to_string(line).unwrap()).map_err(|e| e.to_string())
}

/// `CLOCK_MONOTONIC` of an `Instant` (the clock `Instant` uses on Linux).
fn mono_of(at: Instant) -> u64 {
    let (now_ns, now) = (monotonic_ns(), Instant::now());
    match at.checked_duration_since(now) {
        Some(ahead) => now_ns + ahead.as_nanos() as u64,
        None => now_ns.saturating_sub((now - at).as_nanos() as u64),
    }
}

/// A candidate process: campaigns, leads for a while writing its term,
/// resigns, campaigns again, until the stop file appears.
pub fn candidate(spec: &CandidateSpec) -> Result<(), String> {
    let lib = bext_locking_loader::load(&spec.plugin).map_err(|e| e.to_string())?;
    let plugin = Arc::new(lib.create_typed(&spec.config).map_err(|e| e.message)?);
    let storage = FencedStorage::open(&spec.storage);
    let pid = std::process::id();
    let ttl = Duration::from_millis(spec.ttl_ms);
    // Redlock's allowance, which the checker's lease end also assumes.
    let options = GuardOptions::default().clock_drift(ClockDrift::REDLOCK);
    let election = Election::new(Arc::clone(&plugin), spec.key.clone(), ttl)
        .candidate(format!("pid:{pid}"))
        .options(options);
    let mut seed = u64::from(pid).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    while !spec.stop_file.exists() {
        let leadership = match election.campaign(Duration::from_millis(200)) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            // An outage during a fault: campaign again.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let start_ns = monotonic_ns();
        let guard = leadership.guard();
        // Just after the campaign, before any renewal: lease_end = sent + ttl − drift.
        let sent_ns = mono_of(guard.lease_end())
            .saturating_sub(spec.ttl_ms * 1_000_000)
            .saturating_add(ClockDrift::REDLOCK.allowance(ttl).as_nanos() as u64);
        let fence = leadership.term();
        log(
            &spec.out,
            &Line::Start { pid, call_ns: sent_ns, start_ns, ttl_ms: spec.ttl_ms, fence },
        )?;
        let _ = std::fs::write(&spec.leader_file, pid.to_string());
        // Lead for up to three TTLs (so some terms renew), writing the term.
        let until = Instant::now() + Duration::from_millis(20 + random(spec.ttl_ms * 3));
        let mut rejected = 0;
        let mut told = guard.lease_end();
        // The longest time between two steps: a freeze shows here even when
        // the guard names the loss by its missed renewal, not as a pause.
        let (mut last, mut gap) = (Instant::now(), Duration::ZERO);
        while Instant::now() < until && !guard.is_lost() {
            gap = gap.max(last.elapsed());
            last = Instant::now();
            if guard.lease_end() != told {
                told = guard.lease_end();
                log(&spec.out, &Line::Renewed { pid, start_ns, lease_end_ns: mono_of(told) })?;
            }
            if let Some(f) = fence {
                if !storage.write(f).map_err(|e| e.to_string())? {
                    rejected += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let lost = guard.lost();
        let mut deposed = None;
        gap = gap.max(last.elapsed());
        let paused = lost.as_ref().is_some_and(|l| l.cause == LossCause::Paused || gap >= ttl / 2);
        if let (true, Some(f)) = (paused, fence) {
            // Woken after a freeze: act once more with the old term, as a
            // leader that has not looked yet would. The storage must refuse it.
            let accepted = storage.write(f).map_err(|e| e.to_string())?;
            if !accepted {
                rejected += 1;
            }
            deposed = Some(accepted);
        }
        let end_ns = monotonic_ns();
        log(
            &spec.out,
            &Line::End {
                pid,
                start_ns,
                end_ns,
                rejected_writes: rejected,
                stalled: paused,
                deposed_write_accepted: deposed,
            },
        )?;
        let _ = leadership.resign();
    }
    Ok(())
}

/// Runs the scenario on one deployment.
pub fn run(
    backend: &str,
    plugin: &Path,
    deployment: &mut dyn Deployment,
    server_fault: Option<Fault>,
    s: &Settings,
) -> Outcome {
    let mut o = Outcome::failed(backend, Fault::None, String::new());
    o.trouble.clear();
    o.fault = match server_fault {
        Some(f) => format!("election+kill+stop+{}", f.name()),
        None => "election+kill+stop".to_owned(),
    };
    o.processes = CANDIDATES;
    o.threads = 1;
    o.fencing = deployment.fencing();
    if let Err(why) = run_into(&mut o, plugin, deployment, server_fault, s) {
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

struct Candidates {
    spec: CandidateSpec,
    dir: PathBuf,
    children: HashMap<u32, Child>,
    spawned: usize,
}

impl Candidates {
    fn spawn(&mut self) -> Result<(), String> {
        let path = self.dir.join(format!("candidate-{}.json", self.spawned));
        self.spawned += 1;
        std::fs::write(&path, serde_json::to_vec(&self.spec).unwrap())
            .map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let child = Command::new(exe)
            .arg("candidate")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn a candidate: {e}"))?;
        self.children.insert(child.id(), child);
        Ok(())
    }

    fn leader(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(&self.spec.leader_file).ok()?.trim().parse().ok()?;
        self.children.contains_key(&pid).then_some(pid)
    }
}

impl Drop for Candidates {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_into(
    o: &mut Outcome,
    plugin: &Path,
    deployment: &mut dyn Deployment,
    server_fault: Option<Fault>,
    s: &Settings,
) -> Result<(), String> {
    if !plugin.exists() {
        return Err(format!("{} is missing: build the plugins first", plugin.display()));
    }
    if !o.fencing {
        return Err("an election proves nothing about deposed leaders without fences".into());
    }
    if deployment.max_processes().is_some_and(|m| m < CANDIDATES) {
        return Err(
            "this backend's locks live in one process: no election between processes".into()
        );
    }
    let dir = TempDir::new("safety-election");
    let key = unique(&format!("safety/{}/election/", o.backend));
    let storage_path = dir.path().join("storage");
    FencedStorage::create(&storage_path).map_err(|e| format!("fenced storage: {e}"))?;
    let ttl_ms = s.ttl_ms.max(300);
    let spec = CandidateSpec {
        plugin: plugin.to_owned(),
        config: deployment.config(),
        key: key.clone(),
        ttl_ms,
        storage: storage_path,
        out: dir.path().join("leaderships.jsonl"),
        leader_file: dir.path().join("leader"),
        stop_file: dir.path().join("stop"),
    };
    let mut c =
        Candidates { spec, dir: dir.path().to_owned(), children: HashMap::new(), spawned: 0 };
    for _ in 0..CANDIDATES {
        c.spawn()?;
    }
    let started = Instant::now();
    let ttl = Duration::from_millis(ttl_ms);
    let mut killed_at: HashMap<u32, u64> = HashMap::new();
    let rounds = (s.duration.as_millis() as u64 / (ttl_ms * 6)).clamp(2, 20);
    for round in 0..rounds {
        std::thread::sleep(ttl * 2);
        if round == rounds / 2 {
            if let Some(f) = server_fault {
                let ctx = FaultContext { key: key.clone(), ttl_ms, occurrence: 0 };
                match deployment.inject(f, &ctx) {
                    Ok(what) => o.actions.push(what),
                    Err(e) => o.trouble.push(format!("{}: {e}", f.name())),
                }
            }
        }
        // A leader that took over from a killed one may need a while (a
        // backend with whole-second leases); wait for one that lives.
        let wait_until = Instant::now() + ttl * 10;
        while c.leader().is_none() && Instant::now() < wait_until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let Some(pid) = c.leader() else {
            o.actions.push(format!("round {round}: no leader to hit"));
            continue;
        };
        let target = Pid::from_raw(pid as i32);
        if round % 2 == 0 {
            let _ = kill(target, Signal::SIGKILL);
            if let Some(mut child) = c.children.remove(&pid) {
                let _ = child.wait();
            }
            killed_at.insert(pid, monotonic_ns());
            o.actions.push(format!("SIGKILL leader pid {pid}"));
            c.spawn()?;
        } else {
            let _ = kill(target, Signal::SIGSTOP);
            std::thread::sleep(ttl * 3);
            let _ = kill(target, Signal::SIGCONT);
            o.actions.push(format!("SIGSTOP leader pid {pid} for {} ms", ttl_ms * 3));
        }
    }
    std::fs::write(&c.spec.stop_file, "").map_err(|e| e.to_string())?;
    let until = Instant::now() + ttl * 8 + Duration::from_secs(10);
    for (pid, child) in c.children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(status)) if !status.success() => {
                    o.trouble.push(format!("candidate {pid} exited with {status}"));
                    break;
                }
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    o.trouble.push(format!("candidate {pid} did not stop"));
                    break;
                }
            }
        }
    }
    o.seconds = started.elapsed().as_secs_f64();

    let text =
        std::fs::read_to_string(&c.spec.out).map_err(|e| format!("the leaderships log: {e}"))?;
    let mut starts: Vec<Line> = Vec::new();
    let mut ends: HashMap<(u32, u64), Line> = HashMap::new();
    let mut renewed: HashMap<(u32, u64), u64> = HashMap::new();
    for l in text.lines() {
        match serde_json::from_str::<Line>(l) {
            Ok(line @ Line::Start { .. }) => starts.push(line),
            Ok(line @ Line::End { pid, start_ns, .. }) => {
                ends.insert((pid, start_ns), line);
            }
            Ok(Line::Renewed { pid, start_ns, lease_end_ns }) => {
                let at = renewed.entry((pid, start_ns)).or_default();
                *at = (*at).max(lease_end_ns);
            }
            // A killed candidate may leave half a line.
            Err(_) => {}
        }
    }
    let mut records = Vec::new();
    let mut deposed_refused = 0;
    for s in starts {
        let Line::Start { pid, call_ns, start_ns, ttl_ms, fence } = s else { continue };
        // The lease as of the last renewal seen, expressed as the send
        // time of a single lease that ends then (what `Record` checks).
        let ttl_ns = ttl_ms * 1_000_000;
        let drift_ns = ttl_ns / 100 + 2_000_000;
        let call_ns = renewed
            .get(&(pid, start_ns))
            .map_or(call_ns, |end| end.saturating_sub(ttl_ns - drift_ns))
            .max(call_ns);
        let mut r = Record {
            pid,
            thread: 0,
            call_ns,
            start_ns,
            end_ns: 0,
            ttl_ms,
            fence,
            rejected_writes: 0,
            stalled: false,
        };
        match (ends.get(&(pid, start_ns)), killed_at.get(&pid)) {
            (
                Some(Line::End {
                    end_ns, rejected_writes, stalled, deposed_write_accepted, ..
                }),
                _,
            ) => {
                r.end_ns = *end_ns;
                r.rejected_writes = *rejected_writes;
                r.stalled = *stalled;
                match deposed_write_accepted {
                    Some(false) => deposed_refused += 1,
                    // Accepted: nobody newer had written yet; only an
                    // overlap (checked below) would make that unsafe.
                    Some(true) => {
                        o.actions.push(format!("pid {pid} woke before a newer leader wrote"))
                    }
                    None => {}
                }
            }
            (_, Some(&killed)) => r.end_ns = killed,
            _ => {
                o.trouble.push(format!("leadership of pid {pid} has no end"));
                continue;
            }
        }
        records.push(r);
    }
    let v = check::check(&mut records, true);
    o.acquisitions = v.intervals as u64;
    o.overlaps = v.overlaps;
    o.fence_violations = v.fence_violations;
    o.overruns = v.overruns;
    o.stale_writes_rejected = v.stale_writes_rejected;
    o.problems = v.problems;
    o.actions.push(format!("{deposed_refused} deposed leaders' writes refused"));
    if v.intervals < 2 {
        o.trouble.push("fewer than two leaderships: nothing was shown".into());
    }
    let stops = o.actions.iter().filter(|a| a.starts_with("SIGSTOP")).count();
    if stops > 0 && deposed_refused == 0 {
        o.trouble.push("no frozen leader's late write was tested".into());
    }
    Ok(())
}
