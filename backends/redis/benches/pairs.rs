//! Acquire+release pairs per second through the `.so`, against raw `redis`
//! crate commands doing the same work (`SET NX PX`, then compare-and-delete)
//! on the same number of connections; and the latency of a pair on a
//! 3-master quorum against a single node.
//!
//! ```text
//! cargo bench -p bext-locking-redis --bench pairs
//! ```
//!
//! Starts its own `redis-server`s on free loopback ports (no persistence)
//! and kills them at the end. `BEXT_BENCH_SECS` sets the length of each
//! measurement (default 1.5 s); each is repeated three times, alternating
//! between the contenders, and the best run is reported.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;

struct Server {
    port: u16,
    child: Child,
}

impl Server {
    fn start() -> Self {
        let port = bext_locking_test_support::free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let s = Self { port, child };
        let started = Instant::now();
        while redis::Client::open(s.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(100)))
            .is_err()
        {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secs() -> Duration {
    let s = std::env::var("BEXT_BENCH_SECS").ok().and_then(|v| v.parse::<f64>().ok());
    Duration::from_secs_f64(s.unwrap_or(1.5))
}

/// Runs `work(thread)` on `threads` threads for `secs()`; returns pairs/s.
fn run(threads: usize, work: &(dyn Fn(usize, &AtomicBool, &AtomicU64) + Sync)) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, done) = (&stop, &done);
            s.spawn(move || work(t, stop, done));
        }
        std::thread::sleep(secs());
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn plugin_pairs(p: &dyn LockingPlugin, threads: usize) -> f64 {
    run(threads, &|t, stop, done| {
        let key = format!("bench/pairs/{t}");
        while !stop.load(Ordering::Relaxed) {
            let h = p.try_lock(&key, 10_000).unwrap().expect("uncontended key");
            p.release(h).unwrap();
            done.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// The fenced acquire script the backend runs (`SET NX PX` plus the fence
/// counter), to tell the cost of fencing apart from the plugin's own.
const FENCED_ACQUIRE: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  if fence == 1 then
    local t = redis.call('TIME')
    fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
    redis.call('SET', KEYS[2], string.format('%.0f', fence))
  end
  return fence
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return tonumber(redis.call('GET', KEYS[2]))
end
return false
"#;

fn raw_pairs(url: &str, threads: usize, fenced: bool) -> f64 {
    let release = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    );
    let acquire = redis::Script::new(FENCED_ACQUIRE);
    run(threads, &|t, stop, done| {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let key = format!("bench:raw:{{bench/pairs/{t}}}");
        let fence = format!("bench:raw:fence:{{bench/pairs/{t}}}");
        while !stop.load(Ordering::Relaxed) {
            let token = uuid::Uuid::new_v4().to_string();
            let ok: Option<String> = if fenced {
                acquire.key(&key).key(&fence).arg(&token).arg(10_000).invoke(&mut c).unwrap()
            } else {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(10_000)
                    .query(&mut c)
                    .unwrap()
            };
            assert!(ok.is_some(), "uncontended key");
            let _: i64 = release.key(&key).arg(&token).invoke(&mut c).unwrap();
            done.fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn best(mut f: impl FnMut() -> f64) -> f64 {
    (0..3).map(|_| f()).fold(0.0, f64::max)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let so = bext_locking_test_support::plugin_path("redis");
    let lib = bext_locking_loader::load(&so).expect("load the .so");
    let single = Server::start();
    let quorum: Vec<Server> = (0..3).map(|_| Server::start()).collect();

    println!("redis backend benchmark ({} s per run, best of 3)", secs().as_secs_f64());
    let mut by_threads = Vec::new();
    for threads in [1usize, 8] {
        let config = format!(r#"{{"url":"{}","pool_size":{threads}}}"#, single.url());
        let p = lib.create(&config).expect("create");
        let (mut so_best, mut raw_best, mut fenced_best) = (0.0f64, 0.0f64, 0.0f64);
        for _ in 0..3 {
            so_best = so_best.max(plugin_pairs(&*p, threads));
            raw_best = raw_best.max(raw_pairs(&single.url(), threads, false));
            fenced_best = fenced_best.max(raw_pairs(&single.url(), threads, true));
        }
        println!(
            "{threads} thread(s), {threads} connection(s): .so {so_best:>9.0} pairs/s | raw SET NX PX {raw_best:>9.0} pairs/s | ratio {:.3} (target >= 0.95)",
            so_best / raw_best
        );
        println!(
            "    raw redis crate running the backend's fenced acquire script: {fenced_best:>9.0} pairs/s | .so / that {:.3}",
            so_best / fenced_best
        );
        by_threads.push(so_best);
    }
    println!(
        "8 threads / 1 thread through the .so: {:.2}x (target >= 2)",
        by_threads[1] / by_threads[0]
    );

    let one = lib.create(&format!(r#"{{"url":"{}","pool_size":1}}"#, single.url())).unwrap();
    let urls: Vec<String> = quorum.iter().map(|s| format!("\"{}\"", s.url())).collect();
    let three = lib.create(&format!(r#"{{"urls":[{}],"pool_size":1}}"#, urls.join(","))).unwrap();
    let single_rate = best(|| plugin_pairs(&*one, 1));
    let quorum_rate = best(|| plugin_pairs(&*three, 1));
    let (single_us, quorum_us) = (1e6 / single_rate, 1e6 / quorum_rate);
    println!(
        "latency per pair, 1 thread: single node {single_us:.1} us | 3-master quorum {quorum_us:.1} us | ratio {:.2} (target <= 1.3)",
        quorum_us / single_us
    );
}
