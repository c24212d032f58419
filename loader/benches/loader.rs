//! Loader speed against the issue's budgets:
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

fn bench_scan(label: &str, dir: &Path, expect_loaded: usize) {
    let mut best = Duration::MAX;
    let mut total = Duration::ZERO;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let report = scan(dir, &ScanOptions::default());
        let took = start.elapsed();
        assert_eq!(report.loaded.len(), expect_loaded, "{:?}", report.skipped.first());
        assert_eq!(report.loaded.len() + report.skipped.len(), FILES);
        best = best.min(took);
        total += took;
    }
    let mean = total / ROUNDS as u32;
    let per = mean / FILES as u32;
    println!(
        "scan, {label}: {FILES} files in {:.1} ms mean ({:.1} ms best) over {ROUNDS} scans = {:.3} ms per plugin ({} of {} ms)",
        mean.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3,
        per.as_secs_f64() * 1e3,
        verdict(per <= SCAN_BUDGET),
        SCAN_BUDGET.as_millis()
    );
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
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
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

fn main() {
    let v1 = fs::read(bext_locking_test_support::plugin_path("fixture-reload-v1")).unwrap();
    let v2 = fs::read(bext_locking_test_support::plugin_path("fixture-reload-v2")).unwrap();
    println!("plugin file size: {} KiB", v1.len() / 1024);

    let distinct = tempfile::tempdir().unwrap();
    for i in 0..FILES {
        write_plugin(distinct.path(), &format!("p{i:03}.so"), &renamed(&v1, i));
    }
    bench_scan("50 distinct plugins", distinct.path(), FILES);

    let copies = tempfile::tempdir().unwrap();
    for i in 0..FILES {
        write_plugin(copies.path(), &format!("p{i:03}.so"), &v1);
    }
    bench_scan("50 copies of one plugin (49 loaded, then skipped as duplicates)", copies.path(), 1);

    let start = Instant::now();
    let registry = Registry::open(distinct.path(), RegistryOptions::default()).unwrap();
    let took = start.elapsed();
    assert_eq!(registry.names().len(), FILES);
    println!(
        "Registry::open on 50 distinct plugins: {:.1} ms = {:.3} ms per plugin",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3 / FILES as f64
    );
    drop(registry);

    bench_reload(&v1, &v2);
}
