//! Acquire+release pairs on the memory backend: in-process versus through the
//! loaded `.so` (the cost of the C boundary and JSON), and 1 versus 2 threads
//! on distinct keys (the cost of sharing one table).
//!
//! `cargo bench -p bext-locking-memory --bench pairs` (builds the release
//! `.so` first: `cargo build --release -p bext-locking-memory`).

use std::sync::Barrier;
use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_memory::MemoryPlugin;

const TTL: u64 = 30_000;

/// Pairs per second for `threads` threads, each on its own key, over `for_`.
fn throughput(p: &dyn LockingPlugin, threads: usize, for_: Duration) -> f64 {
    let barrier = Barrier::new(threads);
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let key = format!("bench/{t}");
                    barrier.wait();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < for_ {
                        for _ in 0..256 {
                            let h = p.try_lock(&key, TTL).unwrap().unwrap();
                            p.release(h).unwrap();
                        }
                        n += 256;
                    }
                    n as f64 / start.elapsed().as_secs_f64()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap() as u64).sum()
    });
    total as f64
}

/// p50 and p99 latency of one pair, in nanoseconds.
fn latency(p: &dyn LockingPlugin, samples: usize) -> (u64, u64) {
    let mut ns: Vec<u64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            let h = p.try_lock("bench/latency", TTL).unwrap().unwrap();
            p.release(h).unwrap();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    ns.sort_unstable();
    (ns[ns.len() / 2], ns[ns.len() * 99 / 100])
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let secs = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let period = Duration::from_secs_f64(secs);
    let so = bext_locking_test_support::plugin_path("memory");
    let loaded = bext_locking_loader::load(&so).expect("load the memory .so");
    let native = MemoryPlugin::new();
    let ffi = loaded.create("{}").expect("create");

    // Interleave the runs so drift on a shared machine hits both sides alike.
    let mut rows = Vec::new();
    for round in 0..3 {
        let n1 = throughput(&native, 1, period);
        let f1 = throughput(&*ffi, 1, period);
        let n2 = throughput(&native, 2, period);
        let f2 = throughput(&*ffi, 2, period);
        rows.push((n1, f1, n2, f2));
        eprintln!(
            "round {round}: in-process 1t {n1:.0}/s, .so 1t {f1:.0}/s, in-process 2t {n2:.0}/s, .so 2t {f2:.0}/s"
        );
    }
    let best = |f: fn(&(f64, f64, f64, f64)) -> f64| rows.iter().map(f).fold(0.0, f64::max);
    let (n1, f1, n2, f2) = (best(|r| r.0), best(|r| r.1), best(|r| r.2), best(|r| r.3));
    let (np50, np99) = latency(&native, 200_000);
    let (fp50, fp99) = latency(&*ffi, 200_000);
    let overhead_ns = 1e9 / f1 - 1e9 / n1;
    println!("| path | threads | pairs/s | ns/pair | p50 ns | p99 ns |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!("| in-process | 1 | {n1:.0} | {:.0} | {np50} | {np99} |", 1e9 / n1);
    println!("| .so | 1 | {f1:.0} | {:.0} | {fp50} | {fp99} |", 1e9 / f1);
    println!("| in-process | 2 | {n2:.0} | {:.0} | | |", 2e9 / n2);
    println!("| .so | 2 | {f2:.0} | {:.0} | | |", 2e9 / f2);
    println!();
    println!("FFI overhead per pair: {overhead_ns:.0} ns (target <= 400 ns)");
    println!(
        "2-thread scaling in-process: {:.2}x, through .so: {:.2}x (target >= 1.6x)",
        n2 / n1,
        f2 / f1
    );
}
