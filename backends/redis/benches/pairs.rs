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
//! and kills them at the end. `BEXT_BENCH_SECS` sets how long each
//! contender runs (default 3 s), cut into slices that alternate between
//! the contenders of one comparison, so load from other processes on the
//! machine falls on all of them alike; the mean rate is reported.

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
    Duration::from_secs_f64(s.unwrap_or(3.0))
}

/// Slices each measurement is cut into. The contenders of one comparison
/// take turns slice by slice, so a neighbour's load on this shared machine
/// hits all of them alike.
const SLICES: u32 = 8;

/// Runs `work(thread)` on `threads` threads for one slice; returns the
/// pairs done.
fn run(threads: usize, work: &(dyn Fn(usize, &AtomicBool, &AtomicU64) + Sync)) -> u64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, done) = (&stop, &done);
            s.spawn(move || work(t, stop, done));
        }
        std::thread::sleep(secs() / SLICES);
        stop.store(true, Ordering::Relaxed);
    });
    let _ = started;
    done.load(Ordering::Relaxed)
}

fn plugin_pairs(p: &dyn LockingPlugin, threads: usize) -> u64 {
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
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local fence = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
  if now > fence then
    fence = now
  end
  redis.call('SET', KEYS[2], string.format('%.0f', fence))
  return fence
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return tonumber(redis.call('GET', KEYS[2]))
end
return false
"#;

fn raw_pairs(url: &str, threads: usize, fenced: bool) -> u64 {
    let release = redis::Script::new(RELEASE_SRC);
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

/// Redlock's floor with the raw crate: `SET NX PX` on every master (all
/// requests sent before any answer is read), then compare-and-delete on
/// every master the same way.
fn raw_quorum_pairs(urls: &[String]) -> u64 {
    let release = redis::Script::new(RELEASE_SRC);
    run(1, &|_, stop, done| {
        let mut conns: Vec<redis::Connection> = urls
            .iter()
            .map(|u| redis::Client::open(u.as_str()).unwrap().get_connection().unwrap())
            .collect();
        for c in &mut conns {
            let _: String = redis::cmd("SCRIPT").arg("LOAD").arg(RELEASE_SRC).query(c).unwrap();
        }
        let key = "bench:rawquorum:{bench/pairs}";
        while !stop.load(Ordering::Relaxed) {
            let token = uuid::Uuid::new_v4().to_string();
            let set = redis::cmd("SET")
                .arg(key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(10_000)
                .get_packed_command();
            for c in &mut conns {
                c.send_packed_command(&set).unwrap();
            }
            for c in &mut conns {
                assert_eq!(c.recv_response().unwrap(), redis::Value::Okay);
            }
            let del = redis::cmd("EVALSHA")
                .arg(release.get_hash())
                .arg(1)
                .arg(key)
                .arg(&token)
                .get_packed_command();
            for c in &mut conns {
                c.send_packed_command(&del).unwrap();
            }
            for c in &mut conns {
                assert_eq!(c.recv_response().unwrap(), redis::Value::Int(1));
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
    })
}

const RELEASE_SRC: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// CPU time (user + system) a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    at(14) + at(15)
}

/// Linux's USER_HZ, the unit of `/proc/<pid>/stat` CPU times.
const TICKS_PER_SEC: f64 = 100.0;

/// One contender's totals over its slices.
#[derive(Default, Clone, Copy)]
struct Tally {
    pairs: u64,
    secs: f64,
    client_ticks: u64,
    server_ticks: u64,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.pairs as f64 / self.secs
    }

    /// CPU microseconds per pair: (client, servers). CPU time does not
    /// depend on how busy the machine is, unlike pairs/s.
    fn cpu_us(&self) -> (f64, f64) {
        let per = |t: u64| t as f64 / TICKS_PER_SEC * 1e6 / self.pairs as f64;
        (per(self.client_ticks), per(self.server_ticks))
    }

    fn line(&self) -> String {
        let (c, s) = self.cpu_us();
        format!(
            "{:>7.0} pairs/s (CPU per pair: client {c:>5.1} us, redis {s:>5.1} us)",
            self.rate()
        )
    }
}

/// Each contender's totals over `SLICES` interleaved slices, with the CPU
/// time this process and the servers (`server_pids`) spent.
fn compare<const N: usize>(server_pids: &[u32], contenders: [&dyn Fn() -> u64; N]) -> [Tally; N] {
    let me = std::process::id();
    let servers = || server_pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
    let mut tallies = [Tally::default(); N];
    for _ in 0..SLICES {
        for (t, f) in tallies.iter_mut().zip(contenders) {
            let (c0, s0, w0) = (cpu_ticks(me), servers(), Instant::now());
            t.pairs += f();
            t.secs += w0.elapsed().as_secs_f64();
            t.client_ticks += cpu_ticks(me) - c0;
            t.server_ticks += servers() - s0;
        }
    }
    tallies
}

fn in_process(config: &str) -> bext_locking_redis::RedisPlugin {
    let schema = <bext_locking_redis::Exported as bext_locking_ffi::Export>::config_schema();
    let parsed = bext_locking_ffi::parse_config(config, &schema).unwrap();
    bext_locking_redis::RedisPlugin::from_config(parsed).unwrap()
}

fn main() {
    // Built by `cargo build --release -p bext-locking-redis`.
    let so = bext_locking_test_support::plugin_path("redis");
    let lib = bext_locking_loader::load(&so).expect("load the .so");
    let single = Server::start();
    let quorum: Vec<Server> = (0..3).map(|_| Server::start()).collect();
    let pids: Vec<u32> = std::iter::once(&single).chain(&quorum).map(|s| s.child.id()).collect();

    println!(
        "redis backend benchmark ({} s per contender, in {SLICES} interleaved slices)",
        secs().as_secs_f64()
    );
    let mut rates = Vec::new();
    for threads in [1usize, 8] {
        let config = format!(r#"{{"url":"{}","pool_size":{threads}}}"#, single.url());
        let p = lib.create(&config).expect("create");
        let local = in_process(&config);
        let so_pairs = || plugin_pairs(&*p, threads);
        let rlib_pairs = || plugin_pairs(&local, threads);
        let raw_plain = || raw_pairs(&single.url(), threads, false);
        let raw_fenced = || raw_pairs(&single.url(), threads, true);
        let [so, rlib, raw, fenced] =
            compare(&pids, [&so_pairs, &rlib_pairs, &raw_plain, &raw_fenced]);
        println!("{threads} thread(s) on {threads} connection(s):");
        println!("  .so                                {}", so.line());
        println!("  in-process (rlib), no C boundary   {}", rlib.line());
        println!("  raw crate, SET NX PX + CAS delete  {}", raw.line());
        println!("  raw crate, the same fenced script  {}", fenced.line());
        println!(
            "  .so / raw SET NX PX: {:.3} (target >= 0.95) | .so / raw fenced script: {:.3}",
            so.rate() / raw.rate(),
            so.rate() / fenced.rate()
        );
        rates.push((so.rate(), raw.rate()));
    }
    println!(
        "8 threads / 1 thread: .so {:.2}x (target >= 2) | raw SET NX PX {:.2}x",
        rates[1].0 / rates[0].0,
        rates[1].1 / rates[0].1
    );

    let one = lib.create(&format!(r#"{{"url":"{}","pool_size":1}}"#, single.url())).unwrap();
    let urls: Vec<String> = quorum.iter().map(|s| format!("\"{}\"", s.url())).collect();
    let three = lib.create(&format!(r#"{{"urls":[{}],"pool_size":1}}"#, urls.join(","))).unwrap();
    let raw_urls: Vec<String> = quorum.iter().map(Server::url).collect();
    let [single_t, quorum_t, raw_t] = compare(
        &pids,
        [&|| plugin_pairs(&*one, 1), &|| plugin_pairs(&*three, 1), &|| raw_quorum_pairs(&raw_urls)],
    );
    let us = |t: &Tally| 1e6 / t.rate();
    println!("1 thread, latency per pair:");
    println!("  .so single node                    {:>6.1} us  {}", us(&single_t), single_t.line());
    println!("  .so 3-master quorum                {:>6.1} us  {}", us(&quorum_t), quorum_t.line());
    println!("  raw crate, 3 masters in parallel   {:>6.1} us  {}", us(&raw_t), raw_t.line());
    println!(
        "  quorum / single: {:.2} (target <= 1.3) | .so quorum / raw quorum: {:.2}",
        us(&quorum_t) / us(&single_t),
        us(&quorum_t) / us(&raw_t)
    );
}
