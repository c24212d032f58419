//! The two child-process roles of `bext-lock-safety`: a hammer worker and
//! a holder that gets frozen.
//!
//! Both load the plugin's `.so` themselves (as any host would), die with
//! their parent (`PR_SET_PDEATHSIG`, which also reaches a stopped process),
//! and talk to the coordinator through stdin/stdout.
//!
//! With [`WorkerSpec::wait`] every acquisition is a `lock_wait` through the
//! loader ([`FfiPlugin::lock_wait_with`]: the plugin's own notified wait, or
//! the host's polling fallback for a plugin without it) instead of a loop of
//! `try_lock`s; the lease is then dated from when the request that took the
//! lock was sent ([`Acquired::sent`]), as a guard dates it.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bext_locking::{Acquired, LockHandle, LockingPlugin, Wait};
use bext_locking_loader::FfiPlugin;
use bext_locking_test_support::hammer::monotonic_ns;
use serde::{Deserialize, Serialize};

use crate::record::{Record, WorkerSummary};
use crate::storage::FencedStorage;

/// What a child process does, written by the coordinator as a JSON file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The plugin library.
    pub plugin: PathBuf,
    /// Config JSON for `create` (one instance per thread).
    pub config: String,
    /// The one contended key.
    pub key: String,
    /// Lease length asked for.
    pub ttl_ms: u64,
    /// Threads (hammer only).
    pub threads: u32,
    /// How long each acquisition is held.
    pub hold_us: u64,
    /// The fenced storage to write to while holding, for fencing backends.
    pub storage: Option<PathBuf>,
    /// Where a hammer writes its records (JSON lines).
    pub out: PathBuf,
    /// A hammer stops on its own after this long, should its parent never
    /// close its stdin.
    pub max_runtime_ms: u64,
    /// Acquire with `lock_wait` (each wait up to [`wait_ms`](Self::wait_ms))
    /// instead of looping `try_lock`.
    #[serde(default)]
    pub wait: bool,
    /// How long one `lock_wait` may wait before it counts as contention.
    #[serde(default)]
    pub wait_ms: u64,
}

impl WorkerSpec {
    /// The owner every worker sends with a wait.
    const OWNER: &'static str = "bext-lock-safety";

    /// One acquisition attempt: a `try_lock`, or in wait mode a
    /// `lock_wait` of up to `wait_ms` that `waits` can cancel. Returns the
    /// handle with the monotonic time before which the lease cannot have
    /// started (for a wait: when the request that took the lock was sent).
    fn acquire(
        &self,
        p: &FfiPlugin,
        waits: Option<&Mutex<Option<Wait>>>,
    ) -> Result<Option<(LockHandle, u64)>, String> {
        if !self.wait {
            let call_ns = monotonic_ns();
            return Ok(p.try_lock(&self.key, self.ttl_ms)?.map(|h| (h, call_ns)));
        }
        let wait = Wait::new(Duration::from_millis(self.wait_ms));
        if let Some(slot) = waits {
            *slot.lock().unwrap() = Some(wait.clone());
        }
        if STOP.load(Ordering::SeqCst) {
            wait.cancel();
        }
        let got = p
            .lock_wait_with(&self.key, self.ttl_ms, Some(Self::OWNER), &wait)
            .map_err(|e| e.to_string())?;
        if let Some(slot) = waits {
            slot.lock().unwrap().take();
        }
        Ok(got.map(|Acquired { handle, sent }| {
            let ago = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
            (handle, monotonic_ns().saturating_sub(ago))
        }))
    }
}

/// What the frozen holder reports once resumed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StallReport {
    /// Its holding interval, up to after the renew attempt.
    pub record: Record,
    /// Whether the storage accepted its write with the old fence (it must not).
    pub stale_write_accepted: bool,
    /// The highest fence the storage had seen when it tried.
    pub storage_fence: u64,
    /// The renew error (it must fail: the lock was taken over).
    pub renew_error: Option<String>,
}

/// The frozen holder's first line once it holds the lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Held {
    /// Its fence.
    pub fence: Option<u64>,
    /// Monotonic time just before its `try_lock`: the lease began later.
    pub call_ns: u64,
    /// Monotonic time it started holding.
    pub start_ns: u64,
}

fn die_with_parent() {
    // The coordinator may be killed while this process is SIGSTOPped;
    // SIGKILL is the one signal a stopped process still obeys.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
}

fn load(spec: &WorkerSpec) -> Result<bext_locking_loader::LoadedPlugin, String> {
    bext_locking_loader::load(&spec.plugin)
        .map_err(|e| format!("load {}: {e}", spec.plugin.display()))
}

fn write_fenced(storage: Option<&FencedStorage>, fence: Option<u64>) -> u32 {
    match (storage, fence) {
        (Some(s), Some(f)) => match s.write(f) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("bext-lock-safety worker: fenced storage: {e}");
                std::process::exit(2);
            }
        },
        _ => 0,
    }
}

/// The pause after an `Ok(None)`.
const CONTENDED_BACKOFF: Duration = Duration::from_micros(1_000);

/// Set when stdin reaches its end: the coordinator's signal to stop.
static STOP: AtomicBool = AtomicBool::new(false);

/// Monotonic time of this process's latest acquisition, reported as
/// `LAST <ns>` lines so the coordinator sees when a backend recovered.
static LAST_ACQUIRED: AtomicU64 = AtomicU64::new(0);

/// Runs a hammer worker: `threads` instances loop try_lock / hold / release
/// on the key until stdin reaches its end; then the records go to
/// `spec.out` and the summary is returned.
pub fn hammer(spec: &WorkerSpec) -> Result<WorkerSummary, String> {
    die_with_parent();
    let plugin = load(spec)?;
    // Each thread's wait in flight, cancelled when the coordinator says stop.
    let waits: &'static [Mutex<Option<Wait>>] =
        Vec::leak((0..spec.threads).map(|_| Mutex::new(None)).collect());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        STOP.store(true, Ordering::SeqCst);
        for slot in waits {
            if let Some(w) = slot.lock().unwrap().as_ref() {
                w.cancel();
            }
        }
    });
    std::thread::spawn(|| {
        let mut told = 0;
        while !STOP.load(Ordering::Relaxed) {
            let last = LAST_ACQUIRED.load(Ordering::Relaxed);
            if last != told {
                println!("LAST {last}");
                told = last;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let deadline = Instant::now() + Duration::from_millis(spec.max_runtime_ms);
    let storage = spec.storage.as_deref().map(FencedStorage::open);
    let instances = (0..spec.threads)
        .map(|_| plugin.create_ffi(&spec.config).map_err(|e| format!("create: {e}")))
        .collect::<Result<Vec<_>, String>>()?;
    // Faults start only once every worker is hammering: an instance whose
    // `create` met the fault would end the worker, not test the lock.
    println!("READY");
    let records = Mutex::new(Vec::new());
    let total = Mutex::new(WorkerSummary::default());
    std::thread::scope(|s| {
        for (thread, instance) in instances.iter().enumerate() {
            let (records, total, storage) = (&records, &total, storage.as_ref());
            let slot = &waits[thread];
            s.spawn(move || {
                let (mine, summary) =
                    hammer_thread(instance, spec, thread as u32, storage, slot, deadline);
                records.lock().unwrap().extend(mine);
                total.lock().unwrap().add(&summary);
            });
        }
    });
    for instance in &instances {
        instance.cleanup();
    }
    let mut lines = String::new();
    for r in records.into_inner().unwrap() {
        lines.push_str(&serde_json::to_string(&r).unwrap());
        lines.push('\n');
    }
    std::fs::write(&spec.out, lines).map_err(|e| format!("{}: {e}", spec.out.display()))?;
    Ok(total.into_inner().unwrap())
}

fn hammer_thread(
    p: &FfiPlugin,
    spec: &WorkerSpec,
    thread: u32,
    storage: Option<&FencedStorage>,
    waits: &Mutex<Option<Wait>>,
    deadline: Instant,
) -> (Vec<Record>, WorkerSummary) {
    let pid = std::process::id();
    let hold = Duration::from_micros(spec.hold_us);
    let mut records = Vec::new();
    let mut sum = WorkerSummary::default();
    while !STOP.load(Ordering::Relaxed) && Instant::now() < deadline {
        sum.operations += 1;
        match spec.acquire(p, Some(waits)) {
            Ok(Some((h, call_ns))) => {
                let start_ns = monotonic_ns();
                LAST_ACQUIRED.fetch_max(start_ns, Ordering::Relaxed);
                sum.acquired += 1;
                // The protected work: a write when it starts and one when it
                // commits, each carrying the fence.
                let mut rejected_writes = write_fenced(storage, h.fence);
                std::thread::sleep(hold);
                rejected_writes += write_fenced(storage, h.fence);
                let end_ns = monotonic_ns();
                records.push(Record {
                    pid,
                    thread,
                    call_ns,
                    start_ns,
                    end_ns,
                    ttl_ms: spec.ttl_ms,
                    fence: h.fence,
                    rejected_writes,
                    stalled: false,
                });
                if let Err(e) = p.release(h) {
                    sum.error(format!("release: {e}"));
                }
                // Let the other holders in before trying again.
                std::thread::sleep(Duration::from_micros(200));
            }
            // A wait cancelled because the run is over.
            Ok(None) if STOP.load(Ordering::SeqCst) => {}
            Ok(None) => {
                // About one try per hold: enough to take the lock over as
                // soon as it is free, without burning the machine's CPU. A
                // wait that timed out has waited already.
                sum.contended += 1;
                if !spec.wait {
                    std::thread::sleep(CONTENDED_BACKOFF);
                }
            }
            Err(e) => {
                let call = if spec.wait { "lock_wait" } else { "try_lock" };
                sum.error(format!("{call}: {e}"));
                // A server is down: do not spin on it.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    (records, sum)
}

/// Runs the frozen holder: acquires the key (retrying for up to 30 s),
/// writes with its fence, prints `HELD <json>` and waits for a line on
/// stdin (the coordinator SIGSTOPs it meanwhile, past its TTL, and later
/// SIGCONTs it). Then it does what a paused holder does on waking: writes
/// with its old fence, tries to renew, releases, and prints `DONE <json>`.
pub fn stall(spec: &WorkerSpec) -> Result<(), String> {
    die_with_parent();
    let plugin = load(spec)?;
    let p = plugin.create_ffi(&spec.config).map_err(|e| format!("create: {e}"))?;
    let storage = spec.storage.as_deref().map(FencedStorage::open);
    let give_up = Instant::now() + Duration::from_secs(30);
    let (h, call_ns): (LockHandle, u64) = loop {
        match spec.acquire(&p, None) {
            Ok(Some(got)) => break got,
            Ok(None) | Err(_) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_micros(100))
            }
            Ok(None) => return Err("could not acquire the key within 30 s".into()),
            Err(e) => return Err(format!("acquire: {e}")),
        }
    };
    let start_ns = monotonic_ns();
    if write_fenced(storage.as_ref(), h.fence) != 0 {
        return Err("the storage refused the write of a fresh holder".into());
    }
    let held = Held { fence: h.fence, call_ns, start_ns };
    let mut out = std::io::stdout().lock();
    writeln!(out, "HELD {}", serde_json::to_string(&held).unwrap()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
    // Woken up: it still believes it holds the lock.
    let storage_fence = storage.as_ref().map_or(Ok(0), FencedStorage::highest).unwrap_or(0);
    let rejected = write_fenced(storage.as_ref(), h.fence);
    let renew_error = p.renew(&h).err();
    let end_ns = monotonic_ns();
    let record = Record {
        pid: std::process::id(),
        thread: 0,
        call_ns,
        start_ns,
        end_ns,
        ttl_ms: spec.ttl_ms,
        fence: h.fence,
        rejected_writes: rejected,
        stalled: true,
    };
    let _ = p.release(h);
    p.cleanup();
    let report = StallReport {
        record,
        stale_write_accepted: storage.is_some() && rejected == 0,
        storage_fence,
        renew_error,
    };
    writeln!(out, "DONE {}", serde_json::to_string(&report).unwrap()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}
