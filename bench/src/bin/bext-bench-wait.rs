//! Waiting for a held lock, through each backend's `.so`: how soon the next
//! waiter has the lock once the holder releases it (hand-off latency), how
//! hard waiters hit the server while they wait (the herd), and whether they
//! are served in the order they came (FIFO).
//!
//! Every backend's `lock_wait` (`FfiPlugin::lock_wait_with`: the plugin's
//! own notified wait, or the host's polling fallback when the plugin has
//! none) is measured beside two polling baselines on the same servers: the
//! host's fallback called directly (`poll_wait` over `try_lock`, 10 ms
//! doubling to 250 ms with jitter), and a redsync-style loop (`try_lock`,
//! then a pause drawn uniformly from 50–250 ms).
//!
//! Knobs (environment): `BENCH_WAIT_SECS` (time per hand-off measurement,
//! default 0.8), `BENCH_WAIT_WAITERS` (default `1,10,100`),
//! `BENCH_WAIT_HOLD_MS` (how long each holder holds, default 10: long
//! enough that a poller's backoff has grown past its first step),
//! `BENCH_WAIT_HERD_SECS` (the herd's counting window, default 1),
//! `BENCH_WAIT_FIFO` (hand-offs of the FIFO check, default 1000) and
//! `BENCH_WAIT_FIFO_SECS` (its time limit per backend, default 10),
//! `BENCH_WAIT_BACKENDS` (default `memory,sqlite,redis,pg,etcd`; `mysql` and
//! `nats` can be added, each on a private server).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bext_locking::wait::{POLL_MAX, poll_wait};
use bext_locking::{Acquired, LockingPlugin, Wait, WaitMode};
use bext_locking_loader::FfiPlugin;
use bext_locking_test_support::proxy::Proxy;
use bext_locking_test_support::servers::{etcd, pg, redis};

use bext_locking_bench::measure::Settings;
use bext_locking_bench::plugin;
use bext_locking_bench::report::{Report, Verdict, us};

/// The owner every waiter sends.
const OWNER: &str = "bext-bench-wait";
/// The TTL of every hand-off: far longer than any hold.
const TTL_MS: u64 = 30_000;
/// The herd's holder keeps the key this long (and never renews): waiters
/// that wake at the holder's expiry may do so once per this.
const HERD_TTL_MS: u64 = 5_000;
/// Waiters settle (connect, subscribe, first try) this long before the herd
/// is counted.
const HERD_SETTLE: Duration = Duration::from_millis(400);
/// At most this many waiters on PostgreSQL (and MySQL): each has its own
/// instance and connection, and the private PostgreSQL cluster allows 100
/// connections.
const PG_MAX_WAITERS: usize = 40;
/// FIFO queue length.
const FIFO_WAITERS: usize = 20;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// The knobs.
#[derive(Clone)]
struct Knobs {
    secs: f64,
    waiters: Vec<usize>,
    hold: Duration,
    herd_secs: f64,
    fifo: usize,
    fifo_secs: f64,
    backends: Vec<String>,
}

impl Knobs {
    fn from_env() -> Self {
        let list = |name: &str, default: &str| -> Vec<String> {
            // `make` exports a knob it was not given as an empty variable.
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.into())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Self {
            secs: env_or("BENCH_WAIT_SECS", 0.8f64).max(0.1),
            waiters: list("BENCH_WAIT_WAITERS", "1,10,100")
                .iter()
                .filter_map(|n| n.parse().ok())
                .filter(|&n: &usize| n >= 1)
                .collect(),
            hold: Duration::from_micros((env_or("BENCH_WAIT_HOLD_MS", 10.0f64) * 1000.0) as u64),
            herd_secs: env_or("BENCH_WAIT_HERD_SECS", 1.0f64).max(0.1),
            fifo: env_or("BENCH_WAIT_FIFO", 1000usize),
            fifo_secs: env_or("BENCH_WAIT_FIFO_SECS", 10.0f64).max(0.5),
            backends: list("BENCH_WAIT_BACKENDS", "memory,sqlite,redis,pg,etcd"),
        }
    }
}

/// How a waiter waits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    /// `FfiPlugin::lock_wait_with`: the plugin's wait, or the loader's
    /// polling fallback.
    LockWait,
    /// The host's polling fallback, called directly over `try_lock`.
    HostPoll,
    /// A redsync-style loop: `try_lock`, then 50–250 ms uniformly random.
    Redsync,
}

impl Side {
    const ALL: [Side; 3] = [Side::LockWait, Side::HostPoll, Side::Redsync];

    fn label(self, mode: WaitMode) -> String {
        match self {
            Side::LockWait => format!("`lock_wait` ({})", mode_name(mode)),
            Side::HostPoll => "host polling (10–250 ms backoff)".into(),
            Side::Redsync => "redsync-style (50–250 ms)".into(),
        }
    }

    /// Waits for `key` as this side does.
    fn acquire(self, p: &FfiPlugin, key: &str, ttl_ms: u64, wait: &Wait) -> Result<bool, String> {
        let got: Option<Acquired> = match self {
            Side::LockWait => {
                p.lock_wait_with(key, ttl_ms, Some(OWNER), wait).map_err(|e| e.to_string())?
            }
            Side::HostPoll => poll_wait(
                wait,
                POLL_MAX,
                || {
                    let sent = Instant::now();
                    Ok(p.try_lock_as(key, ttl_ms, Some(OWNER))?
                        .map(|handle| Acquired { handle, sent }))
                },
                || None,
            )
            .map_err(|e| e.to_string())?,
            Side::Redsync => loop {
                let sent = Instant::now();
                if let Some(handle) =
                    p.try_lock_as(key, ttl_ms, Some(OWNER)).map_err(|e| e.to_string())?
                {
                    break Some(Acquired { handle, sent });
                }
                let pause = Duration::from_millis(50 + random_below(201));
                if wait.is_over() || !wait.sleep(pause) {
                    break None;
                }
            },
        };
        match got {
            Some(a) => {
                HELD.with(|h| *h.borrow_mut() = Some(a.handle));
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

thread_local! {
    /// The handle the thread's last acquisition got.
    static HELD: std::cell::RefCell<Option<bext_locking::LockHandle>> =
        const { std::cell::RefCell::new(None) };
}

fn release_held(p: &FfiPlugin) -> Result<(), String> {
    match HELD.with(|h| h.borrow_mut().take()) {
        Some(h) => p.release(h),
        None => Ok(()),
    }
}

fn mode_name(mode: WaitMode) -> &'static str {
    match mode {
        WaitMode::Notified => "notified",
        WaitMode::Fifo => "notified, FIFO",
        WaitMode::Polling => "no notified wait in the plugin: the loader's polling fallback",
    }
}

/// A cheap random number below `n` (`RandomState` draws fresh keys).
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() % n.max(1)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}/{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Where a backend's server commands are counted: requests through a
/// counting TCP proxy in front of the server (the herd's instances connect
/// through it), and for Redis also the commands the server executed.
struct Counter {
    /// The proxy and the config that reaches the server through it.
    proxy: Option<(Proxy, String)>,
    /// The private Redis, for `INFO commandstats`.
    redis: Option<redis::Server>,
    /// Why nothing is counted, without a proxy.
    why_not: &'static str,
}

impl Counter {
    fn none(why_not: &'static str) -> Self {
        Self { proxy: None, redis: None, why_not }
    }

    fn proxy_to(addr: std::net::SocketAddr, via: impl FnOnce(u16) -> String) -> Self {
        let proxy = Proxy::start(addr);
        let config = via(proxy.port);
        Self { proxy: Some((proxy, config)), redis: None, why_not: "" }
    }

    /// Requests sent so far, and for Redis the commands executed.
    fn read(&self) -> Option<(u64, Option<u64>)> {
        let (proxy, _) = self.proxy.as_ref()?;
        let executed = self
            .redis
            .as_ref()
            .and_then(|s| s.command(&["INFO", "commandstats"]).ok())
            .map(|t| redis_calls(&t));
        Some((proxy.sent().chunks, executed))
    }
}

/// The calls of every command in an `INFO commandstats` answer but INFO's.
fn redis_calls(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// A backend's deployment for this section.
struct Backend {
    name: &'static str,
    so: &'static str,
    config: String,
    counter: Counter,
    max_waiters: usize,
    fifo: bool,
    _keep: Vec<Box<dyn std::any::Any>>,
}

fn start(name: &str) -> Result<Backend, String> {
    let guarded = |f: &mut dyn FnMut() -> Result<Backend, String>| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err("its server would not start".into()))
    };
    guarded(&mut || match name {
        "memory" => Ok(Backend {
            name: "memory",
            so: "memory",
            config: format!(r#"{{"namespace":"{}"}}"#, unique("bench-wait")),
            counter: Counter::none("no server: locks live in the process"),
            max_waiters: usize::MAX,
            fifo: true,
            _keep: Vec::new(),
        }),
        "sqlite" => {
            let dir = std::env::var("BENCH_SQLITE_DIR").unwrap_or_else(|_| "/dev/shm".into());
            let path = format!("{dir}/{}.db", unique("bext-bench-wait").replace('/', "-"));
            Ok(Backend {
                name: "sqlite",
                so: "sqlite",
                config: serde_json::json!({ "path": path }).to_string(),
                counter: Counter::none("no server: waiters read the database file"),
                max_waiters: usize::MAX,
                fifo: false,
                _keep: vec![Box::new(RemoveOnDrop(path))],
            })
        }
        "redis" => {
            let server = redis::Server::start();
            let config = redis::single_config(&server, "");
            let addr = format!("127.0.0.1:{}", server.port).parse().unwrap();
            let mut counter =
                Counter::proxy_to(addr, |port| format!(r#"{{"url":"redis://127.0.0.1:{port}"}}"#));
            counter.redis = Some(server);
            Ok(Backend {
                name: "redis",
                so: "redis",
                config,
                counter,
                max_waiters: usize::MAX,
                fifo: false,
                _keep: Vec::new(),
            })
        }
        "pg" => {
            let cluster = pg::Cluster::start();
            let url = cluster.url();
            let cfg = |url: &str| {
                serde_json::json!({ "url": url, "mode": "lease", "pool_size": 1 }).to_string()
            };
            let addr = format!("127.0.0.1:{}", cluster.port).parse().unwrap();
            let port = cluster.port;
            let counter = Counter::proxy_to(addr, |proxy| {
                cfg(&url.replace(&format!(":{port}/"), &format!(":{proxy}/")))
            });
            Ok(Backend {
                name: "pg",
                so: "pg",
                config: cfg(&url),
                counter,
                max_waiters: PG_MAX_WAITERS,
                fifo: false,
                _keep: vec![Box::new(cluster)],
            })
        }
        "etcd" => {
            let cluster = etcd::Cluster::single();
            let endpoint = cluster.endpoints()[0].clone();
            let addr =
                endpoint.trim_start_matches("http://").parse().map_err(|e| format!("{e}"))?;
            let counter = Counter::proxy_to(addr, |port| {
                let via = serde_json::json!([format!("http://127.0.0.1:{port}")]).to_string();
                etcd::config(&via, 5_000)
            });
            Ok(Backend {
                name: "etcd",
                so: "etcd",
                config: etcd::config(&cluster.endpoints_json(), 5_000),
                counter,
                max_waiters: usize::MAX,
                fifo: true,
                _keep: vec![Box::new(cluster)],
            })
        }
        "mysql" => {
            let server = bext_locking_test_support::servers::mysql::Server::start();
            {
                use mysql::prelude::Queryable;
                let opts = mysql::Opts::from_url(&server.url("")).map_err(|e| e.to_string())?;
                // TCP, as the plugin connects, not the server's socket file.
                let mut c =
                    mysql::Conn::new(mysql::OptsBuilder::from_opts(opts).prefer_socket(false))
                        .map_err(|e| format!("connect: {e}"))?;
                c.query_drop("CREATE DATABASE bext")
                    .map_err(|e| format!("CREATE DATABASE: {e}"))?;
            }
            let url = server.url("bext");
            let cfg = |url: &str| serde_json::json!({ "url": url, "mode": "lease" }).to_string();
            let addr = format!("127.0.0.1:{}", server.port).parse().unwrap();
            let port = server.port;
            let counter = Counter::proxy_to(addr, |proxy| {
                cfg(&url.replace(&format!(":{port}/"), &format!(":{proxy}/")))
            });
            Ok(Backend {
                name: "mysql",
                so: "mysql",
                config: cfg(&url),
                counter,
                max_waiters: PG_MAX_WAITERS,
                fifo: false,
                _keep: vec![Box::new(server)],
            })
        }
        "nats" => {
            let cluster = bext_locking_test_support::servers::nats::Cluster::start(1);
            let cfg = |url: String| {
                serde_json::json!({
                    "servers": [url], "bucket_prefix": "bext_bench_wait",
                    "op_timeout_ms": 5_000, "connect_timeout_ms": 1_000,
                })
                .to_string()
            };
            let port = cluster.members[0].port;
            let addr = format!("127.0.0.1:{port}").parse().unwrap();
            let counter = Counter::proxy_to(addr, |proxy| cfg(format!("nats://127.0.0.1:{proxy}")));
            Ok(Backend {
                name: "nats",
                so: "nats",
                config: cfg(cluster.members[0].url()),
                counter,
                max_waiters: usize::MAX,
                fifo: false,
                _keep: vec![Box::new(cluster)],
            })
        }
        other => Err(format!(
            "no wait benchmark for `{other}` (memory, sqlite, redis, pg, etcd, mysql, nats)"
        )),
    })
}

struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0));
        }
    }
}

fn instances(b: &Backend, config: &str, n: usize) -> Result<Vec<FfiPlugin>, String> {
    let lib = plugin::load(b.so)?;
    (0..n).map(|_| lib.create_ffi(config).map_err(|e| format!("create: {e}"))).collect()
}

/// Sorted nanoseconds' quantile `q`.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn us_of(ns: u64) -> String {
    us(ns as f64 / 1000.0)
}

/// The uncontended `try_lock` latency's median on instance `p`, in ns.
fn uncontended(p: &FfiPlugin, base: &str) -> Result<u64, String> {
    let key = unique(base);
    let mut times = Vec::new();
    let until = Instant::now() + Duration::from_millis(300);
    while times.len() < 1000 && (times.len() < 50 || Instant::now() < until) {
        let t = Instant::now();
        let h = p.try_lock(&key, TTL_MS)?.ok_or("contention on a key of its own")?;
        times.push(t.elapsed().as_nanos() as u64);
        p.release(h)?;
    }
    times.sort_unstable();
    Ok(quantile(&times, 0.5))
}

/// What one hand-off measurement found.
struct Handoffs {
    /// From the `release` call's return.
    samples: Vec<u64>,
    /// From the `release` call's start.
    from_call: Vec<u64>,
    errors: Vec<String>,
}

/// `waiters + 1` threads, each on its own instance, pass one key around
/// for `secs`: each holds it for `hold`, releases it, and waits for it
/// again only once another thread has it (so the key always goes to a
/// thread that was waiting). A sample is the time from the `release`
/// call's return to the next holder's wait returning.
fn handoffs(ps: &[FfiPlugin], side: Side, waiters: usize, secs: f64, hold: Duration) -> Handoffs {
    let key = unique("bench/wait/handoff");
    let base = Instant::now();
    let stop = AtomicBool::new(false);
    let acquired = AtomicU64::new(0);
    let released = AtomicU64::new(0);
    let last_release_ns = AtomicU64::new(0);
    let last_call_ns = AtomicU64::new(0);
    let samples = Mutex::new(Vec::new());
    let from_call = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let waits: Vec<Mutex<Option<Wait>>> = (0..=waiters).map(|_| Mutex::new(None)).collect();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let cancel_all = || {
        stop.store(true, Ordering::SeqCst);
        for w in waits.iter() {
            if let Some(w) = w.lock().unwrap().as_ref() {
                w.cancel();
            }
        }
    };
    std::thread::scope(|s| {
        for (i, p) in ps.iter().take(waiters + 1).enumerate() {
            let (stop, acquired, released, last_release_ns, last_call_ns, from_call) =
                (&stop, &acquired, &released, &last_release_ns, &last_call_ns, &from_call);
            let (samples, errors, waits, key, cancel_all) =
                (&samples, &errors, &waits, &key, &cancel_all);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let wait = Wait::new(Duration::from_secs(60));
                    *waits[i].lock().unwrap() = Some(wait.clone());
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match side.acquire(p, key, TTL_MS, &wait) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            errors.lock().unwrap().push(e);
                            cancel_all();
                            break;
                        }
                    }
                    let got_ns = base.elapsed().as_nanos() as u64;
                    let k = acquired.fetch_add(1, Ordering::SeqCst) + 1;
                    // The previous holder's release has returned once it has
                    // counted it (a notified waiter may wake first).
                    let spin = Instant::now();
                    while released.load(Ordering::SeqCst) < k - 1
                        && spin.elapsed() < Duration::from_secs(5)
                    {
                        std::thread::yield_now();
                    }
                    // The first hand-off follows the threads' start.
                    if k > 2 && !stop.load(Ordering::SeqCst) {
                        let from = last_release_ns.load(Ordering::SeqCst);
                        samples.lock().unwrap().push(got_ns.saturating_sub(from));
                        let call = last_call_ns.load(Ordering::SeqCst);
                        from_call.lock().unwrap().push(got_ns.saturating_sub(call));
                    }
                    std::thread::sleep(hold);
                    if Instant::now() >= until {
                        cancel_all();
                    }
                    let call_ns = base.elapsed().as_nanos() as u64;
                    if let Err(e) = release_held(p) {
                        errors.lock().unwrap().push(e);
                        cancel_all();
                        break;
                    }
                    last_call_ns.store(call_ns, Ordering::SeqCst);
                    last_release_ns.store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
                    released.fetch_add(1, Ordering::SeqCst);
                    // Queue again only once someone else has it.
                    while waiters > 0
                        && acquired.load(Ordering::SeqCst) == k
                        && !stop.load(Ordering::SeqCst)
                    {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
            });
        }
    });
    let mut samples = samples.into_inner().unwrap();
    samples.sort_unstable();
    let mut from_call = from_call.into_inner().unwrap();
    from_call.sort_unstable();
    Handoffs { samples, from_call, errors: errors.into_inner().unwrap() }
}

/// `waiters` threads wait on a key another instance holds (TTL
/// [`HERD_TTL_MS`], never renewed), for [`HERD_SETTLE`] and then the
/// counted window; returns the requests (and for Redis the commands
/// executed) per waiter per second in the window, then cancels the waits.
fn herd(
    holder: &FfiPlugin,
    ps: &[FfiPlugin],
    side: Side,
    counter: &Counter,
    window: Duration,
) -> Result<Rate, String> {
    let key = unique("bench/wait/herd");
    let h = holder.try_lock(&key, HERD_TTL_MS)?.ok_or("the herd's key was taken")?;
    let waits: Vec<Wait> =
        ps.iter().map(|_| Wait::new(Duration::from_millis(HERD_TTL_MS * 2))).collect();
    let got = AtomicUsize::new(0);
    let errors = Mutex::new(Vec::new());
    let result = std::thread::scope(|s| {
        for (p, wait) in ps.iter().zip(&waits) {
            let (key, got, errors) = (&key, &got, &errors);
            s.spawn(move || match side.acquire(p, key, TTL_MS, wait) {
                Ok(true) => {
                    got.fetch_add(1, Ordering::SeqCst);
                    let _ = release_held(p);
                }
                Ok(false) => {}
                Err(e) => errors.lock().unwrap().push(e),
            });
        }
        std::thread::sleep(HERD_SETTLE);
        let before = counter.read();
        let t = Instant::now();
        std::thread::sleep(window);
        let after = counter.read();
        let secs = t.elapsed().as_secs_f64();
        for w in &waits {
            w.cancel();
        }
        let per = |n: u64| n as f64 / ps.len() as f64 / secs;
        match (before, after) {
            (Some(b), Some(a)) => Ok(Rate {
                requests: per(a.0.saturating_sub(b.0)),
                executed: a.1.zip(b.1).map(|(a, b)| per(a.saturating_sub(b))),
            }),
            _ => Err("the counter could not be read".to_owned()),
        }
    });
    let _ = holder.release(h);
    if got.load(Ordering::SeqCst) > 0 {
        return Err("a waiter got the held key".into());
    }
    if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
        return Err(e);
    }
    result
}

/// Requests through the proxy per uncontended `try_lock` + `release`, to
/// read the herd's counts by.
fn calibrate(p: &FfiPlugin, counter: &Counter) -> Option<f64> {
    let key = unique("bench/wait/calibrate");
    let before = counter.read()?.0;
    for _ in 0..20 {
        let h = p.try_lock(&key, TTL_MS).ok()??;
        p.release(h).ok()?;
    }
    Some((counter.read()?.0 - before) as f64 / 20.0)
}

/// Per waiter per second, while waiting.
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Requests sent (client writes through the proxy).
    requests: f64,
    /// Commands the server executed (Redis, scripts' inner calls
    /// included).
    executed: Option<f64>,
}

/// What the FIFO check found.
struct Fifo {
    handoffs: usize,
    violations: usize,
    first: Vec<usize>,
}

/// [`FIFO_WAITERS`] threads queue one after another behind a holder; each
/// that gets the key holds it until the one before it has queued again
/// (plus `gap`), then releases it and queues again at the back. Counts the
/// acquisitions that were not the longest waiter's.
fn fifo(
    ps: &[FfiPlugin],
    count: usize,
    limit: Duration,
    (start_gap, gap): (Duration, Duration),
) -> Result<Fifo, String> {
    let key = unique("bench/wait/fifo");
    let holder = &ps[0];
    let h = holder.try_lock(&key, TTL_MS)?.ok_or("the FIFO key was taken")?;
    let stop = AtomicBool::new(false);
    let requeued = AtomicU64::new(0);
    let order = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let waits: Vec<Mutex<Option<Wait>>> = (0..FIFO_WAITERS).map(|_| Mutex::new(None)).collect();
    let until = Instant::now() + limit;
    let cancel_all = || {
        stop.store(true, Ordering::SeqCst);
        for w in &waits {
            if let Some(w) = w.lock().unwrap().as_ref() {
                w.cancel();
            }
        }
    };
    let started = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (i, p) in ps[1..=FIFO_WAITERS].iter().enumerate() {
            let (stop, requeued, order, errors, waits, key, cancel_all, started) =
                (&stop, &requeued, &order, &errors, &waits, &key, &cancel_all, &started);
            // Queue in a known order: each waiter starts once the one before
            // has been waiting for `gap`.
            while started.load(Ordering::SeqCst) < i {
                std::thread::yield_now();
            }
            std::thread::sleep(start_gap);
            s.spawn(move || {
                let mut first = true;
                while !stop.load(Ordering::SeqCst) {
                    let wait = Wait::new(Duration::from_secs(60));
                    *waits[i].lock().unwrap() = Some(wait.clone());
                    if first {
                        started.fetch_add(1, Ordering::SeqCst);
                        first = false;
                    } else {
                        requeued.fetch_add(1, Ordering::SeqCst);
                    }
                    match Side::LockWait.acquire(p, key, TTL_MS, &wait) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            errors.lock().unwrap().push(e);
                            cancel_all();
                            break;
                        }
                    }
                    let k = {
                        let mut o = order.lock().unwrap();
                        o.push(i);
                        o.len() as u64
                    };
                    // The previous holder has queued again, and had `gap` to
                    // get in line.
                    let spin = Instant::now();
                    while requeued.load(Ordering::SeqCst) < k - 1
                        && spin.elapsed() < Duration::from_secs(5)
                    {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    std::thread::sleep(gap);
                    if k as usize >= count || Instant::now() >= until {
                        cancel_all();
                    }
                    if let Err(e) = release_held(p) {
                        errors.lock().unwrap().push(e);
                        cancel_all();
                        break;
                    }
                }
            });
        }
        while started.load(Ordering::SeqCst) < FIFO_WAITERS {
            std::thread::yield_now();
        }
        std::thread::sleep(start_gap);
        if let Err(e) = holder.release(h) {
            errors.lock().unwrap().push(e);
            cancel_all();
        }
    });
    if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
        return Err(e);
    }
    let mut order = order.into_inner().unwrap();
    // A waiter may have got the key just before the waits were cancelled.
    order.truncate(count);
    Ok(Fifo {
        handoffs: order.len(),
        violations: violations(&order, FIFO_WAITERS),
        first: order.iter().take(24).copied().collect(),
    })
}

/// Acquisitions by someone other than the longest waiter, when waiters
/// `0..n` queued in that order and each queues again at the back after its
/// turn.
fn violations(order: &[usize], n: usize) -> usize {
    let mut queue: VecDeque<usize> = (0..n).collect();
    let mut bad = 0;
    for &who in order {
        if queue.front() != Some(&who) {
            bad += 1;
        }
        queue.retain(|&w| w != who);
        queue.push_back(who);
    }
    bad
}

/// How long each FIFO waiter is given to get in line before the next one
/// starts (a few of the server's round trips), and how long each holder
/// holds once the one before it has queued again (a waiter that queues
/// again goes to the back, behind 18 others, so it has many hand-offs'
/// time to get there).
fn fifo_gaps(name: &str) -> (Duration, Duration) {
    match name {
        "memory" => (Duration::from_millis(2), Duration::from_micros(200)),
        _ => (Duration::from_millis(20), Duration::from_millis(1)),
    }
}

/// One side of the herd: the side, its waiters, and what they sent.
type HerdRow = (Side, usize, Result<Rate, String>);

/// Everything one backend's part found, for the tables.
struct Found {
    name: &'static str,
    mode: WaitMode,
    uncontended_ns: u64,
    /// (waiters, side, hand-offs)
    handoffs: Vec<(usize, Side, Handoffs)>,
    /// (side, waiters, per waiter per s) or why not.
    herd: Result<Vec<HerdRow>, String>,
    /// Requests through the proxy per uncontended try_lock + release.
    per_pair: Option<f64>,
    fifo: Option<Result<Fifo, String>>,
}

fn measure_backend(b: &Backend, k: &Knobs) -> Result<Found, String> {
    let most = k.waiters.iter().copied().max().unwrap_or(1).min(b.max_waiters);
    let ps = instances(b, &b.config, most + 1)?;
    let mode = ps[0].wait_mode();
    let uncontended_ns = uncontended(&ps[0], "bench/wait/uncontended")?;
    eprintln!(
        "  {}: wait mode {}, uncontended try_lock p50 {} µs",
        b.name,
        mode_name(mode),
        us_of(uncontended_ns)
    );
    let mut found = Vec::new();
    for &n in &k.waiters {
        let n = n.min(b.max_waiters);
        if found.iter().any(|(m, _, _)| *m == n) {
            continue;
        }
        for side in Side::ALL {
            let h = handoffs(&ps, side, n, k.secs, k.hold);
            eprintln!(
                "  {} {n} waiter(s), {}: {} hand-offs, p50 {} µs, p99 {} µs{}",
                b.name,
                side.label(mode),
                h.samples.len(),
                us_of(quantile(&h.samples, 0.5)),
                us_of(quantile(&h.samples, 0.99)),
                h.errors.first().map(|e| format!(" (error: {e})")).unwrap_or_default()
            );
            found.push((n, side, h));
        }
    }
    let fifo = if b.fifo && k.fifo > 0 {
        let fps = if ps.len() > FIFO_WAITERS {
            None
        } else {
            Some(instances(b, &b.config, FIFO_WAITERS + 1)?)
        };
        let fps = fps.as_deref().unwrap_or(&ps);
        let r = fifo(fps, k.fifo, Duration::from_secs_f64(k.fifo_secs), fifo_gaps(b.name));
        if let Ok(f) = &r {
            eprintln!("  {} FIFO: {} hand-offs, {} out of order", b.name, f.handoffs, f.violations);
        }
        Some(r)
    } else {
        None
    };
    drop(ps);
    let herd_n = 100.min(b.max_waiters);
    let mut per_pair = None;
    let herd = match &b.counter.proxy {
        None => Err(b.counter.why_not.to_owned()),
        Some((_, config)) => {
            let counter = &b.counter;
            instances(b, config, herd_n + 1).map(|hps| {
                per_pair = calibrate(&hps[0], counter);
                Side::ALL
                    .into_iter()
                    .map(|side| {
                        let r = herd(
                            &hps[0],
                            &hps[1..],
                            side,
                            counter,
                            Duration::from_secs_f64(k.herd_secs),
                        );
                        eprintln!(
                            "  {} herd, {}: {r:?} per waiter per s",
                            b.name,
                            side.label(mode)
                        );
                        (side, herd_n, r)
                    })
                    .collect()
            })
        }
    };
    Ok(Found { name: b.name, mode, uncontended_ns, handoffs: found, herd, per_pair, fifo })
}

/// The hand-off target of a backend: p50 with one waiter over the
/// uncontended try_lock p50 (sqlite: an absolute bound).
fn handoff_target(report: &mut Report, f: &Found) {
    let Some((_, _, h)) = f.handoffs.iter().find(|(n, side, _)| *n == 1 && *side == Side::LockWait)
    else {
        return;
    };
    let p50 = quantile(&h.samples, 0.5);
    let polling = if f.mode == WaitMode::Polling {
        "; this build's plugin has no notified wait, so this is the loader's polling fallback, \
         which the target does not accept whatever its figure"
    } else {
        ""
    };
    if h.samples.is_empty() {
        report.target(
            "wait",
            format!("{}: hand-off p50, 1 waiter, `lock_wait`", f.name),
            "-",
            "-",
            Verdict::NoData,
            h.errors.first().cloned().unwrap_or_else(|| "no hand-off".into()),
        );
        return;
    }
    if f.name == "sqlite" {
        report.target(
            "wait",
            "sqlite: hand-off p50, 1 waiter, `lock_wait`",
            "<= 5 ms",
            format!("{} µs", us_of(p50)),
            Verdict::of(p50 <= 5_000_000 && f.mode != WaitMode::Polling),
            format!("uncontended try_lock p50 {} µs{polling}", us_of(f.uncontended_ns)),
        );
    } else {
        let x = p50 as f64 / f.uncontended_ns.max(1) as f64;
        report.target(
            "wait",
            format!("{}: hand-off p50, 1 waiter, `lock_wait` / uncontended `try_lock` p50", f.name),
            "<= 2x",
            format!("{x:.2}x ({} vs {} µs)", us_of(p50), us_of(f.uncontended_ns)),
            // The target is for a notified wait: a poller that happens to
            // try while a slow release is still returning does not meet it.
            Verdict::of(x <= 2.0 && f.mode != WaitMode::Polling),
            format!(
                "{} µs from the `release` call (the time above runs from its return){polling}",
                us_of(quantile(&h.from_call, 0.5))
            ),
        );
    }
}

fn render(found: &[Found], skipped: &[(String, String)], k: &Knobs, report: &mut Report) {
    let mut s = String::new();
    let _ = write!(
        s,
        "How soon a waiter has the lock once its holder lets go, how hard waiters hit the \
         server meanwhile, and in what order they are served, through each backend's `.so`. \
         Three ways of waiting, on the same servers in the same run:\n\n\
         * **`lock_wait`**: the loader's `lock_wait_with` (ABI 1.2): the plugin's own \
           notified wait, or, for a plugin without one, the loader's polling fallback (the \
           mode is named in each row).\n\
         * **host polling**: that fallback called directly: `try_lock`, then a pause of 10 ms \
           doubling to 250 ms, jittered.\n\
         * **redsync-style**: `try_lock`, then a pause drawn uniformly from 50–250 ms, as \
           redsync and node-redlock retry.\n\n\
         **Hand-off latency**: waiters + 1 threads, each with its own instance, pass one key \
         around for {secs} s per row: each holds it {hold} ms, releases it, and waits again \
         once another thread has it. A sample is the time from the holder's `release` \
         returning to the next holder's wait returning (0 when the waiter had it first: \
         on etcd the key is free after the first of release's two requests); the last column \
         times from the `release` call instead. \
         PostgreSQL runs on a private cluster with at most {pg} waiters (one connection \
         each); the others on private servers (Redis, etcd) or files on `/dev/shm` (SQLite).\n\n\
         | backend | waiters | side | hand-offs | p50 µs | p99 µs | p50 / uncontended `try_lock` | p50 µs from the `release` call |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n",
        secs = k.secs,
        hold = k.hold.as_secs_f64() * 1000.0,
        pg = PG_MAX_WAITERS,
    );
    for f in found {
        for (n, side, h) in &f.handoffs {
            let p50 = quantile(&h.samples, 0.5);
            let (p50s, p99s, ratio, call) = if h.samples.is_empty() {
                ("-".into(), "-".into(), "-".into(), "-".into())
            } else {
                (
                    us_of(p50),
                    us_of(quantile(&h.samples, 0.99)),
                    format!("{:.1}x", p50 as f64 / f.uncontended_ns.max(1) as f64),
                    us_of(quantile(&h.from_call, 0.5)),
                )
            };
            let errors = h
                .errors
                .first()
                .map(|e| format!(" (failed: {})", e.replace('|', "/")))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {n} | {}{errors} | {} | {p50s} | {p99s} | {ratio} | {call} |",
                f.name,
                side.label(f.mode),
                h.samples.len()
            );
        }
    }
    s.push_str(
        "\nUncontended `try_lock` (one instance, a key of its own, median of up to 1,000):\n\n\
         | backend | `try_lock` p50 µs | wait mode of this build's plugin |\n| --- | ---: | --- |\n",
    );
    for f in found {
        let _ = writeln!(s, "| {} | {} | {} |", f.name, us_of(f.uncontended_ns), mode_name(f.mode));
    }
    let _ = write!(
        s,
        "\n**Herd**: 100 waiters (PostgreSQL: {pg}) wait on a key another instance holds with \
         a {ttl} s TTL and never renews; after {settle} ms to settle, the server's commands \
         are counted for {herd} s, then the waits are cancelled. A notified waiter should send \
         at most one command per TTL (to wake at the holder's expiry); pollers send one per \
         poll.\n\n\
         Requests are what the waiters' instances send through a counting TCP proxy in front \
         of the server: the chunks read from their connections, about one per command or HTTP \
         request (writes that arrive together count once). For Redis the commands the server \
         executed are given too (`INFO commandstats` deltas without INFO itself; a script's \
         inner calls count there, so a fenced `try_lock` is several).\n\n\
         The last column says how many requests an uncontended `try_lock` + `release` \
         sends through the same proxy, to read the others by.\n\n\
         | backend | side | waiters | requests per waiter per s | requests per waiter per TTL | Redis: commands executed per waiter per s | requests per uncontended `try_lock` + `release` |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
        pg = PG_MAX_WAITERS,
        ttl = HERD_TTL_MS / 1000,
        settle = HERD_SETTLE.as_millis(),
        herd = k.herd_secs,
    );
    for f in found {
        match &f.herd {
            Err(why) => {
                let _ = writeln!(s, "| {} | not counted: {why} | - | - | - | - | - |", f.name);
            }
            Ok(rows) => {
                for (side, n, r) in rows {
                    let (rate, per_ttl, executed) = match r {
                        Ok(x) => (
                            format!("{:.2}", x.requests),
                            format!("{:.2}", x.requests * HERD_TTL_MS as f64 / 1000.0),
                            x.executed.map_or("-".into(), |e| format!("{e:.2}")),
                        ),
                        Err(e) => {
                            (format!("failed: {}", e.replace('|', "/")), "-".into(), "-".into())
                        }
                    };
                    let _ = writeln!(
                        s,
                        "| {} | {} | {n} | {rate} | {per_ttl} | {executed} | {} |",
                        f.name,
                        side.label(f.mode),
                        f.per_pair.map_or("-".into(), |x| format!("{x:.1}")),
                    );
                }
            }
        }
    }
    let _ = write!(
        s,
        "\n**FIFO**: {n} waiters queue in a known order (each starts once the one before has \
         waited a few round trips) behind a holder; each that gets the key holds it until the \
         previous holder has queued again, releases it and queues again at the back. An \
         acquisition by anyone but the longest waiter is a violation. Up to {count} hand-offs \
         or {secs} s per backend, on the backends that promise FIFO order (memory, etcd).\n\n\
         | backend | wait mode | hand-offs | order violations | first holders |\n| --- | --- | ---: | ---: | --- |\n",
        n = FIFO_WAITERS,
        count = k.fifo,
        secs = k.fifo_secs,
    );
    for f in found {
        match &f.fifo {
            None => {}
            Some(Err(e)) => {
                let _ = writeln!(
                    s,
                    "| {} | {} | failed: {} | | |",
                    f.name,
                    mode_name(f.mode),
                    e.replace('|', "/")
                );
            }
            Some(Ok(r)) => {
                let first: Vec<String> = r.first.iter().map(|i| i.to_string()).collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} … |",
                    f.name,
                    mode_name(f.mode),
                    r.handoffs,
                    r.violations,
                    first.join(" ")
                );
            }
        }
    }
    if !skipped.is_empty() {
        s.push_str("\nNot measured:\n\n");
        for (name, why) in skipped {
            let _ = writeln!(s, "* {name}: {why}");
        }
    }
    let _ = write!(
        s,
        "\nRerun this section alone: `make bench BENCH_ONLY=wait`, or `target/release/bext-bench-wait` \
         after a release build (knobs: `BENCH_WAIT_SECS`, `BENCH_WAIT_WAITERS`, `BENCH_WAIT_HOLD_MS`, \
         `BENCH_WAIT_HERD_SECS`, `BENCH_WAIT_FIFO`, `BENCH_WAIT_FIFO_SECS`, `BENCH_WAIT_BACKENDS`).\n"
    );
    report.section("wait", s);

    for f in found {
        if matches!(f.name, "redis" | "pg" | "etcd" | "memory" | "sqlite") {
            handoff_target(report, f);
        }
    }
    for f in found {
        let Ok(rows) = &f.herd else { continue };
        let Some((_, _, r)) = rows.iter().find(|(side, _, _)| *side == Side::LockWait) else {
            continue;
        };
        let polls = rows
            .iter()
            .filter(|(side, _, _)| *side != Side::LockWait)
            .filter_map(|(side, _, r)| {
                r.as_ref().ok().map(|x| {
                    format!(
                        "{}: {:.2}",
                        side.label(f.mode),
                        x.requests * HERD_TTL_MS as f64 / 1000.0
                    )
                })
            })
            .collect::<Vec<_>>()
            .join(", ");
        let what = format!(
            "{}: server requests per waiter per TTL while {} waiters wait, `lock_wait`",
            f.name, rows[0].1
        );
        let (measured, verdict) = match r {
            Ok(x) => {
                let per_ttl = x.requests * HERD_TTL_MS as f64 / 1000.0;
                (format!("{per_ttl:.2}"), Verdict::of(per_ttl <= 1.0))
            }
            Err(e) => (format!("failed: {e}"), Verdict::NoData),
        };
        let mut note = format!("polling baselines: {polls}");
        if f.mode == WaitMode::Polling {
            note.push_str("; this build's plugin has no notified wait, so `lock_wait` polls");
        }
        report.target("wait", what, "<= 1", measured, verdict, note);
    }
    for f in found {
        let Some(r) = &f.fifo else { continue };
        let what = format!("{}: FIFO order violations, {FIFO_WAITERS} waiters", f.name);
        match r {
            Ok(r) => {
                let complete = r.handoffs >= k.fifo;
                let mut note = if complete {
                    String::new()
                } else {
                    format!("only {} of {} hand-offs within {} s", r.handoffs, k.fifo, k.fifo_secs)
                };
                if f.mode != WaitMode::Fifo {
                    if !note.is_empty() {
                        note.push_str("; ");
                    }
                    note.push_str("this build's plugin does not promise FIFO (mode: ");
                    note.push_str(mode_name(f.mode));
                    note.push(')');
                }
                report.target(
                    "wait",
                    format!("{what} over {} hand-offs", k.fifo),
                    "0",
                    format!("{} in {} hand-offs", r.violations, r.handoffs),
                    Verdict::of(r.violations == 0 && complete),
                    note,
                );
            }
            Err(e) => report.target("wait", what, "0", "-", Verdict::NoData, e.clone()),
        }
    }
}

fn main() {
    bext_locking_bench::section_main("wait", |_: &Settings, report: &mut Report| {
        let k = Knobs::from_env();
        let started = Instant::now();
        let mut found = Vec::new();
        let mut skipped = Vec::new();
        for name in &k.backends {
            eprintln!("wait: {name}");
            let r = start(name).and_then(|b| measure_backend(&b, &k));
            match r {
                Ok(f) => found.push(f),
                Err(e) => {
                    eprintln!("  {name} not measured: {e}");
                    skipped.push((name.clone(), e));
                }
            }
        }
        for name in ["mysql", "nats"] {
            if !k.backends.iter().any(|b| b == name) {
                skipped.push((
                    name.to_owned(),
                    "left out of the default run to keep the section near 90 s; \
                     `BENCH_WAIT_BACKENDS=memory,sqlite,redis,pg,etcd,mysql,nats` adds it"
                        .into(),
                ));
            }
        }
        eprintln!("wait: {:.0} s", started.elapsed().as_secs_f64());
        if found.is_empty() {
            return Err("no backend could be measured".into());
        }
        render(&found, &skipped, &k, report);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_violations_follow_the_queue() {
        // 0 1 2 queued; each goes to the back after its turn.
        assert_eq!(violations(&[0, 1, 2, 0, 1, 2, 0], 3), 0);
        // 1 jumped ahead of 0; then 0, 2 in line: one violation each time
        // the longest waiter is passed over.
        assert_eq!(violations(&[1, 0, 2, 1], 3), 1);
        assert_eq!(violations(&[2, 1, 0], 3), 2);
    }

    #[test]
    fn redis_calls_leave_info_out() {
        let text = "# Commandstats\r\ncmdstat_set:calls=10,usec=5,usec_per_call=0.5\r\n\
                    cmdstat_info:calls=7,usec=1\r\ncmdstat_evalsha:calls=3,usec=9\r\n";
        assert_eq!(redis_calls(text), 13);
    }
}
