//! Loader speed against the project's budgets (docs/BENCHMARKS.md says why):
//! * scanning a folder of 50 plugin files: at most 2 ms per plugin;
//! * a replaced file reaching new instances with the default settings: at
//!   most 1 s.
//!
//! Run (the fixtures must be built in the same profile as the bench):
//!
//! ```text
//! cargo build --release -p bext-locking-fixture-reload-v1 -p bext-locking-fixture-reload-v2
//! cargo bench -p bext-locking-loader --bench loader
//! ```
//!
//! Every load maps a private copy that is never unmapped (by design), so
//! rounds are few.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use bext_locking_loader::{Registry, RegistryOptions, ScanOptions, scan};

const FILES: usize = 50;
const ROUNDS: usize = 5;
const RELOADS: usize = 10;
const SCAN_BUDGET: Duration = Duration::from_millis(2);
const RELOAD_BUDGET: Duration = Duration::from_secs(1);
const NAME: &[u8] = b"reload-test";

fn write_plugin(dir: &Path, file: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{file}.tmp"));
    fs::write(&tmp, bytes).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, dir.join(file)).unwrap();
}

/// The same build under another plugin name of the same length: every
/// occurrence of the name (vtable, describe, messages) is patched alike.
fn renamed(bytes: &[u8], i: usize) -> Vec<u8> {
    let new = format!("reload-t{i:03}");
    assert_eq!(new.len(), NAME.len());
    let mut out = bytes.to_vec();
    let mut at = 0;
    while let Some(pos) = out[at..].windows(NAME.len()).position(|w| w == NAME) {
        out[at + pos..at + pos + NAME.len()].copy_from_slice(new.as_bytes());
        at += pos + NAME.len();
    }
    out
}

fn verdict(ok: bool) -> &'static str {
    if ok { "within budget" } else { "OVER BUDGET" }
}

/// CPU time this thread has used: unlike wall time, it does not count time
/// spent waiting for a core on a busy machine.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-parameter; this clock exists on Linux and macOS.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Scans `dir` `ROUNDS` times. The first scan is what a host does at start
/// (nothing loaded yet); later ones show the cost of every earlier load
/// staying mapped (each `dlopen` walks the growing list of loaded objects).
fn bench_scan(label: &str, dir: &Path, expect_loaded: usize) {
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let cpu_start = thread_cpu_time();
        let report = scan(dir, &ScanOptions::default());
        cpus.push(thread_cpu_time() - cpu_start);
        walls.push(start.elapsed());
        assert_eq!(report.loaded.len(), expect_loaded, "{:?}", report.skipped.first());
        assert_eq!(report.loaded.len() + report.skipped.len(), FILES);
    }
    let per = |d: Duration| ms(d) / FILES as f64;
    let first = walls[0];
    println!(
        "scan, {label}: first scan {:.1} ms = {:.3} ms per plugin ({:.3} ms CPU) ({} of {} ms); \
         scans 1-{ROUNDS}: {:.3} ms per plugin mean, {:.3} best, {:.3} ms CPU mean",
        ms(first),
        per(first),
        per(cpus[0]),
        verdict(first / FILES as u32 <= SCAN_BUDGET),
        SCAN_BUDGET.as_millis(),
        per(walls.iter().sum::<Duration>() / ROUNDS as u32),
        per(*walls.iter().min().unwrap()),
        per(cpus.iter().sum::<Duration>() / ROUNDS as u32),
    );
}

fn plugin_folder(v1: &[u8], distinct: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..FILES {
        let bytes = if distinct { renamed(v1, i) } else { v1.to_vec() };
        write_plugin(dir.path(), &format!("p{i:03}.so"), &bytes);
    }
    dir
}

fn bench_reload(v1: &[u8], v2: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    write_plugin(dir.path(), "reload.so", v1);
    let registry = Registry::open(dir.path(), RegistryOptions::default()).unwrap();
    let mut times = Vec::new();
    for i in 0..RELOADS {
        let (bytes, version) = if i % 2 == 0 { (v2, "2.0.0-") } else { (v1, "1.0.0-") };
        // Let the file age a little, as a deploy's build would have.
        thread::sleep(Duration::from_millis(50));
        write_plugin(dir.path(), "reload.so", bytes);
        let start = Instant::now();
        loop {
            let fresh = registry.create("reload-test", "{}").unwrap();
            let h = fresh.try_lock("probe", 1_000).unwrap().unwrap();
            if h.lock_id.starts_with(version) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "never reloaded");
            thread::sleep(Duration::from_millis(2));
        }
        times.push(start.elapsed());
    }
    times.sort();
    let max = *times.last().unwrap();
    println!(
        "reload, default settings (poll {:?}, settle {:?}): rename to new instances on the new code: min {:.0} ms, median {:.0} ms, max {:.0} ms over {RELOADS} reloads ({} of {} ms)",
        RegistryOptions::default().poll_interval,
        RegistryOptions::default().settle,
        ms(times[0]),
        ms(times[RELOADS / 2]),
        ms(max),
        verdict(max <= RELOAD_BUDGET),
        RELOAD_BUDGET.as_millis()
    );
}

fn scenario(name: &str) {
    let v1 = fs::read(bext_locking_test_support::plugin_path("fixture-reload-v1")).unwrap();
    let v2 = fs::read(bext_locking_test_support::plugin_path("fixture-reload-v2")).unwrap();
    match name {
        "scan-distinct" => {
            println!("plugin file size: {} KiB", v1.len() / 1024);
            let dir = plugin_folder(&v1, true);
            bench_scan("50 distinct plugins", dir.path(), FILES);
        }
        "scan-copies" => {
            let dir = plugin_folder(&v1, false);
            bench_scan(
                "50 copies of one plugin (all loaded, 49 then skipped as duplicates)",
                dir.path(),
                1,
            );
        }
        "registry-open" => {
            let dir = plugin_folder(&v1, true);
            let start = Instant::now();
            let registry = Registry::open(dir.path(), RegistryOptions::default()).unwrap();
            let took = start.elapsed();
            assert_eq!(registry.names().len(), FILES);
            println!(
                "Registry::open on 50 distinct plugins (also hashes each): {:.1} ms = {:.3} ms per plugin",
                ms(took),
                ms(took) / FILES as f64
            );
        }
        "reload" => bench_reload(&v1, &v2),
        other => panic!("unknown scenario {other}"),
    }
}

/// Each scenario runs in a fresh process, so none pays for the libraries
/// an earlier one left mapped.
fn main() {
    let arg = std::env::args().find_map(|a| a.strip_prefix("--scenario=").map(str::to_owned));
    if let Some(name) = arg {
        return scenario(&name);
    }
    let me = std::env::current_exe().unwrap();
    for name in ["scan-distinct", "scan-copies", "registry-open", "reload"] {
        let status = std::process::Command::new(&me).arg(format!("--scenario={name}")).status();
        assert!(status.unwrap().success(), "scenario {name} failed");
    }
}
