//! The `freeze` fault: a holder whose path to the server freezes while its
//! job keeps writing.
//!
//! The holder is `bext-lock run` itself, reaching the server through a TCP
//! proxy ([`bext_locking_test_support::proxy::Proxy`]); its command is this
//! program's `writer` role, a job that traps SIGTERM and keeps appending a
//! `CLOCK_MONOTONIC` timestamp to a file every 2 ms until it is killed.
//! Once the job writes, the checker freezes the proxy: the holder's
//! renewals hang (no byte passes, nothing is closed) while the hammer
//! workers, connected directly, wait for the lock. Afterwards the job's
//! writes are compared with two instants:
//!
//! * the **lease end**: the freeze + TTL − clock-drift allowance. Every
//!   renewal the holder saw confirmed was sent before the freeze, so its
//!   lease cannot have lasted longer by its own count, and by the server's
//!   it ended no later (up to the drift allowance);
//! * the next holder's first acquisition after the job started.
//!
//! A write after either is a violation. The last write's time is the
//! file's modification time (the kernel's record), so a write delayed after
//! its timestamp was taken is not missed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bext_locking_test_support::hammer::monotonic_ns;
use bext_locking_test_support::proxy::Proxy;
use serde::{Deserialize, Serialize};

use crate::record::Record;

/// The frozen holder's TTL: long enough for a loaded machine to run its
/// renewals, short enough to keep the run short.
pub const TTL_MS: u64 = 1_500;

/// What a frozen path showed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FreezeSummary {
    /// The holder's TTL.
    pub ttl_ms: u64,
    /// `bext-lock`'s exit status (76: the lock was lost).
    pub exit_code: Option<i32>,
    /// The job's writes, in all.
    pub writes: usize,
    /// Its writes after it got SIGTERM (it ignores it).
    pub writes_after_sigterm: Option<usize>,
    /// Its writes after the lease end: must be 0.
    pub writes_after_lease_end: usize,
    /// How long before the lease end its last write came (negative: after).
    pub last_write_before_lease_end_ms: f64,
    /// How long before the next holder's first acquisition its last write
    /// came (negative: after); `None` if nobody acquired afterwards.
    pub last_write_before_takeover_ms: Option<f64>,
    /// What `bext-lock` said on stderr, first line.
    pub said: String,
}

/// What the checker keeps until the records are in.
pub struct Frozen {
    ttl_ms: u64,
    exit_code: Option<i32>,
    /// Monotonic: the freeze, the job's first write, its SIGTERM.
    frozen_ns: u64,
    first_write_ns: u64,
    lines: Vec<String>,
    /// The file's last modification, on the monotonic clock.
    last_write_ns: u64,
    drift_ns: u64,
    said: String,
}

/// The `writer` role: appends `CLOCK_MONOTONIC` nanoseconds to `file` every
/// 2 ms, and `TERM` once when SIGTERM comes, which it otherwise ignores.
pub fn writer(file: &Path) -> Result<(), String> {
    let term = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&term))
        .map_err(|e| format!("SIGTERM: {e}"))?;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let mut told = false;
    loop {
        if !told && term.load(Ordering::SeqCst) {
            told = true;
            out.write_all(b"TERM\n").map_err(|e| e.to_string())?;
        }
        out.write_all(format!("{}\n", monotonic_ns()).as_bytes()).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `SystemTime` to the monotonic clock, through one paired reading.
fn to_monotonic(t: SystemTime) -> u64 {
    let (wall, mono) = (SystemTime::now(), monotonic_ns());
    match wall.duration_since(t) {
        Ok(ago) => mono.saturating_sub(ago.as_nanos() as u64),
        Err(e) => mono.saturating_add(e.duration().as_nanos() as u64),
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Runs `bext-lock run` through a proxy to `upstream`, freezes the proxy
/// once its job writes, and waits for `bext-lock` to give up.
pub fn freeze_once(
    bext_lock: &Path,
    plugin: &Path,
    upstream: SocketAddr,
    config_via: &dyn Fn(u16) -> String,
    key: &str,
    dir: &Path,
    occurrence: usize,
) -> Result<(Frozen, String), String> {
    if !bext_lock.exists() {
        return Err(format!(
            "{} is missing: build it (`cargo build -p bext-lock`)",
            bext_lock.display()
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let file: PathBuf = dir.join(format!("frozen-writes-{occurrence}"));
    let proxy = Proxy::start(upstream);
    let ttl = format!("{TTL_MS}ms");
    let mut child = Command::new(bext_lock)
        .arg("run")
        .arg(plugin)
        .args(["--config", &config_via(proxy.port), "--key", key, "--ttl", &ttl])
        // The hammer workers hold the key most of the time: keep trying.
        .args(["--wait", "30s", "--"])
        .arg(&exe)
        .arg("writer")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bext_lock.display()))?;
    let stderr = child.stderr.take();
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
        }
        text
    });
    let waited = Instant::now();
    while lines(&file).len() < 50 {
        if waited.elapsed() > Duration::from_secs(40) || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "bext-lock run never got its job writing: {}",
                said.join().unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_write_ns = lines(&file)
        .first()
        .and_then(|l| l.parse().ok())
        .ok_or("the job's first line is not a time")?;
    let frozen_ns = monotonic_ns();
    proxy.freeze(true);
    let until = Instant::now() + Duration::from_millis(TTL_MS * 10).max(Duration::from_secs(30));
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return Err("bext-lock run did not end after its path froze".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let said = said.join().unwrap_or_default();
    let modified =
        std::fs::metadata(&file).and_then(|m| m.modified()).map_err(|e| e.to_string())?;
    let last_write_ns = to_monotonic(modified);
    drop(proxy);
    let ttl_ns = TTL_MS * 1_000_000;
    let lines = lines(&file);
    let text = format!(
        "froze the path of `bext-lock run` (TTL {TTL_MS} ms, default --grace) to the server while \
         its job, which ignores SIGTERM, wrote every 2 ms; bext-lock exited {}",
        status.code().map_or("by a signal".into(), |c| c.to_string())
    );
    let frozen = Frozen {
        ttl_ms: TTL_MS,
        exit_code: status.code(),
        frozen_ns,
        first_write_ns,
        lines,
        last_write_ns,
        // Redlock's allowance, what every server backend states.
        drift_ns: ttl_ns / 100 + 2_000_000,
        said: said.lines().next().unwrap_or_default().to_owned(),
    };
    Ok((frozen, text))
}

impl Frozen {
    /// Compares the job's writes with the lease end and the next holder's
    /// first acquisition (from the workers' records).
    pub fn summarize(&self, records: &[Record]) -> FreezeSummary {
        let lease_end_ns = self.frozen_ns + self.ttl_ms * 1_000_000 - self.drift_ns;
        let stamps: Vec<u64> = self.lines.iter().filter_map(|l| l.parse().ok()).collect();
        let term = self.lines.iter().position(|l| l == "TERM");
        let takeover =
            records.iter().map(|r| r.start_ns).filter(|&s| s > self.first_write_ns).min();
        let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1e6;
        FreezeSummary {
            ttl_ms: self.ttl_ms,
            exit_code: self.exit_code,
            writes: stamps.len(),
            writes_after_sigterm: term.map(|t| self.lines.len() - t - 1),
            writes_after_lease_end: stamps.iter().filter(|&&s| s >= lease_end_ns).count()
                + usize::from(
                    self.last_write_ns >= lease_end_ns && stamps.iter().all(|&s| s < lease_end_ns),
                ),
            last_write_before_lease_end_ms: ms(lease_end_ns, self.last_write_ns),
            last_write_before_takeover_ms: takeover.map(|t| ms(t, self.last_write_ns)),
            said: self.said.clone(),
        }
    }
}

impl FreezeSummary {
    /// Violations, described.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.writes_after_lease_end > 0 || self.last_write_before_lease_end_ms <= 0.0 {
            out.push(format!(
                "the frozen holder's job wrote {} time(s) after its lease end (last write {:.1} ms after it)",
                self.writes_after_lease_end, -self.last_write_before_lease_end_ms
            ));
        }
        if self.last_write_before_takeover_ms.is_some_and(|m| m <= 0.0) {
            out.push(format!(
                "the frozen holder's job wrote {:.1} ms after the next holder took the lock",
                -self.last_write_before_takeover_ms.unwrap_or_default()
            ));
        }
        out
    }

    /// Why the run shows less than it should, if it does.
    pub fn trouble(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.exit_code != Some(76) {
            out.push(format!(
                "bext-lock run exited {:?}, not 76 (lost): {}",
                self.exit_code, self.said
            ));
        }
        if self.writes_after_sigterm.is_none() {
            out.push(format!("the job never got SIGTERM: {}", self.said));
        }
        if self.last_write_before_takeover_ms.is_none() {
            out.push("nobody took the lock over after the freeze".into());
        }
        out
    }
}
