//! Acquire+release pairs per second through the `.so`, against the same SQL
//! issued directly with the sync `postgres` crate on the same number of
//! connections, for both modes, with 1 and 8 threads (each on its own key).
//!
//! ```text
//! cargo build --release -p bext-locking-pg
//! cargo bench -p bext-locking-pg --bench pairs
//! ```
//!
//! `BEXT_PG_URL` picks the server (default: the local test database);
//! `BENCH_SECS` the length of each measurement (default 0.5); `BENCH_ROUNDS`
//! how many times each pair of measurements is repeated, alternating, so
//! that both sides see the same background load (default 11; the median is
//! reported, after one unreported warm-up round); `BENCH_ONLY`
//! one row (`advisory/8`); `BENCH_DURABLE=1` keeps lease commits durable
//! (by default both sides set `synchronous_commit=off`, so that the figure
//! measures the client and the server's CPU rather than its disk).

use std::sync::Barrier;
use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_pg::keyhash::advisory_key;
use postgres::{Client, NoTls, Statement};

const TTL_MS: u64 = 30_000;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `work(thread)` on `threads` threads for `secs`, each returning the
/// pairs it did; the total per second.
fn measure(threads: usize, secs: f64, work: impl Fn(usize, Instant) -> u64 + Sync) -> f64 {
    let barrier = Barrier::new(threads);
    let started = std::sync::OnceLock::new();
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, work, started) = (&barrier, &work, &started);
                s.spawn(move || {
                    barrier.wait();
                    let start = *started.get_or_init(Instant::now);
                    work(t, start + Duration::from_secs_f64(secs))
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let elapsed = started.get().unwrap().elapsed().as_secs_f64();
    total as f64 / elapsed
}

fn through_the_so(p: &dyn LockingPlugin, prefix: &str, threads: usize, secs: f64) -> f64 {
    measure(threads, secs, |t, until| {
        let key = format!("{prefix}/so/{t}");
        let mut n = 0;
        while Instant::now() < until {
            for _ in 0..16 {
                let h = p.try_lock(&key, TTL_MS).unwrap().expect("uncontended");
                p.release(h).unwrap();
            }
            n += 16;
        }
        n
    })
}

/// One client per thread with the mode's statements prepared, as the
/// plugin's pool has.
fn clients(url: &str, n: usize, sql: &[String]) -> Clients {
    (0..n)
        .map(|_| {
            let mut c = Client::connect(url, NoTls).unwrap();
            let stmts = sql.iter().map(|q| c.prepare(q).unwrap()).collect();
            std::sync::Mutex::new((c, stmts))
        })
        .collect()
}

type Clients = Vec<std::sync::Mutex<(Client, Vec<Statement>)>>;

fn direct_lease(conns: &Clients, prefix: &str, threads: usize, secs: f64) -> f64 {
    let ttl = TTL_MS as i64;
    measure(threads, secs, |t, until| {
        let key = format!("{prefix}/direct/{t}");
        let mut guard = conns[t].lock().unwrap();
        let (c, st) = &mut *guard;
        let mut n = 0;
        while Instant::now() < until {
            for _ in 0..16 {
                let id = uuid::Uuid::new_v4();
                let row = c.query_opt(&st[0], &[&key.as_bytes(), &id, &ttl]).unwrap();
                let _fence: i64 = row.expect("uncontended").get(0);
                c.execute(&st[2], &[&key.as_bytes(), &id]).unwrap();
            }
            n += 16;
        }
        n
    })
}

fn direct_advisory(conns: &Clients, prefix: &str, threads: usize, secs: f64) -> f64 {
    measure(threads, secs, |t, until| {
        let hash = advisory_key(&format!("{prefix}/direct/{t}"));
        let mut guard = conns[t].lock().unwrap();
        let (c, st) = &mut *guard;
        let mut n = 0;
        while Instant::now() < until {
            for _ in 0..16 {
                let got: bool = c.query_one(&st[0], &[&hash]).unwrap().get(0);
                assert!(got, "uncontended");
                let _: bool = c.query_one(&st[1], &[&hash]).unwrap().get(0);
            }
            n += 16;
        }
        n
    })
}

/// `url` with `synchronous_commit=off` for its sessions.
fn fast_commit(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20synchronous_commit%3Doff")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let url = std::env::var("BEXT_PG_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let secs: f64 = env("BENCH_SECS", 0.5);
    let rounds: usize = env("BENCH_ROUNDS", 11);
    let durable = std::env::var("BENCH_DURABLE").is_ok_and(|v| v == "1");
    let schema = format!("bext_bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let table = format!("\"{schema}\".\"bext_locks\"");
    let so = bext_locking_loader::load(bext_locking_test_support::plugin_path("pg")).unwrap();

    println!("pg acquire+release pairs/s, {secs} s x {rounds} rounds (median), server {url}");
    if !durable {
        println!(
            "lease rows with synchronous_commit=off on both sides (BENCH_DURABLE=1 to keep it)"
        );
    }
    println!("{:<9} {:>7} {:>14} {:>14} {:>7}", "mode", "threads", "direct", ".so", "ratio");
    // BENCH_ONLY=advisory/1 (mode/threads) narrows the run, for profiling.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for mode in ["lease", "advisory"] {
        for threads in [1usize, 8] {
            if !only.is_empty() && only != format!("{mode}/{threads}") {
                continue;
            }
            // Lease commits wait for the server's WAL flush, which on a
            // shared disk measures the disk, not the client; both sides
            // skip it unless BENCH_DURABLE=1.
            let url = if mode == "lease" && !durable { fast_commit(&url) } else { url.clone() };
            let config = serde_json::json!({
                "url": url, "mode": mode, "schema": schema, "pool_size": threads,
            })
            .to_string();
            // BENCH_SIDE=inproc measures the linked-in crate instead of the
            // .so (the difference is the C boundary and its JSON).
            let plugin: Box<dyn LockingPlugin> =
                if std::env::var("BENCH_SIDE").is_ok_and(|s| s == "inproc") {
                    Box::new(bext_locking_pg::PgPlugin::from_json(&config).unwrap())
                } else {
                    so.create(&config).unwrap()
                };
            let prefix = format!("{mode}/{threads}");
            let (mut direct, mut via_so) = (Vec::new(), Vec::new());
            let side = std::env::var("BENCH_SIDE").unwrap_or_default();
            let sql = match mode {
                "lease" => bext_locking_pg::sql::lease(&table),
                _ => bext_locking_pg::sql::advisory(),
            };
            let conns = clients(&url, threads, &sql);
            let run_direct = || match side.as_str() {
                "so" | "inproc-only" => 1.0,
                _ if mode == "lease" => direct_lease(&conns, &prefix, threads, secs),
                _ => direct_advisory(&conns, &prefix, threads, secs),
            };
            let run_so = || match side.as_str() {
                "direct" => 1.0,
                _ => through_the_so(&*plugin, &prefix, threads, secs),
            };
            for round in 0..=rounds {
                // Alternate which side goes first; round 0 only warms up.
                let (d, s) = if round % 2 == 0 {
                    let d = run_direct();
                    (d, run_so())
                } else {
                    let s = run_so();
                    (run_direct(), s)
                };
                if round > 0 {
                    direct.push(d);
                    via_so.push(s);
                }
            }
            let (d, s) = (median(direct), median(via_so));
            println!("{mode:<9} {threads:>7} {d:>14.0} {s:>14.0} {:>6.3}x", s / d);
        }
    }
    let mut admin = Client::connect(&url, NoTls).unwrap();
    admin.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).unwrap();
}
