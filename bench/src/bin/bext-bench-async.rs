//! Async hosts: what a tokio service pays to call the blocking plugin API
//! off its runtime threads with `spawn_blocking`, per acquire+release pair,
//! on the memory backend (where the hand-off is most visible) and on Redis
//! (a real round trip), through each backend's `.so`.

use std::fmt::Write;
use std::sync::Arc;

use bext_locking::LockingPlugin;
use bext_locking_test_support::servers::redis::Server;
use tokio::runtime::{Handle, Runtime};

use bext_locking_bench::measure::{Entry, Kind, Settings, TTL_MS, Tally, measure};
use bext_locking_bench::plugin;
use bext_locking_bench::report::{Report, Verdict, table, us};

/// Threads of the runtime the hand-offs go through: the machine's cores,
/// as a default multi-thread runtime has.
fn runtime() -> Result<Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// Waits for a blocking task as an async task would: the worker thread
/// parks until the blocking pool's thread finishes and wakes it.
fn off_runtime<T: Send + 'static>(
    rt: &Handle,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    rt.block_on(async move { tokio::task::spawn_blocking(f).await })
        .map_err(|e| format!("blocking task: {e}"))?
}

/// The three ways of calling: directly (the baseline), one
/// `spawn_blocking` for the whole pair, one per call (what a task that
/// holds the lock across awaits does).
fn sides<'a>(p: &'a Arc<dyn LockingPlugin>, rt: &'a Handle, prefix: &str) -> Vec<Entry<'a>> {
    let direct = format!("{prefix}/direct");
    let whole = format!("{prefix}/whole");
    let each = format!("{prefix}/each");
    vec![
        plugin::side("direct call (blocks the caller)", Kind::So, &**p, &direct),
        Entry::new("spawn_blocking per pair", Kind::RawAlt, move |t, lap| {
            let key = format!("{whole}/{t}");
            lap.run(|| {
                let (p, key) = (Arc::clone(p), key.clone());
                off_runtime(rt, move || plugin::pair(&*p, &key))
            });
        }),
        Entry::new("spawn_blocking per call (2 per pair)", Kind::Peer, move |t, lap| {
            let key = format!("{each}/{t}");
            lap.run(|| {
                let (p1, k) = (Arc::clone(p), key.clone());
                let handle = off_runtime(rt, move || p1.try_lock(&k, TTL_MS))?
                    .ok_or_else(|| format!("unexpected contention on `{key}`"))?;
                let p2 = Arc::clone(p);
                off_runtime(rt, move || p2.release(handle))
            });
        }),
    ]
}

/// Adds the "what a hand-off costs" line of one backend at one thread count.
fn cost_line(report: &mut Report, backend: &str, group: &[Tally], body: &mut String) {
    let by = |k: Kind| group.iter().find(|t| t.kind == k && t.ok());
    let (Some(direct), Some(each)) = (by(Kind::So), by(Kind::Peer)) else {
        report.target(
            "async",
            format!("{backend}: spawn_blocking per call, cost per pair"),
            "-",
            "-",
            Verdict::NoData,
            "a side failed",
        );
        return;
    };
    let threads = direct.threads;
    // The median and the CPU time per pair: the two views that hardly move
    // with the machine's load (a mean over rounds can even come out
    // negative on a busy machine).
    let p50 = each.p50_us() - direct.p50_us();
    let cpu = each.cpu_us() - direct.cpu_us();
    let share = p50 / direct.p50_us() * 100.0;
    let _ = writeln!(
        body,
        "* {backend}, {threads} thread(s): two `spawn_blocking` hand-offs add **{} µs** per pair \
         at the median ({} µs direct, {} µs handed off: {share:.0} % more) and {} µs of CPU.",
        us(p50),
        us(direct.p50_us()),
        us(each.p50_us()),
        us(cpu)
    );
    report.target(
        "async",
        format!(
            "{backend}: spawn_blocking per call (2 per pair) over a direct call, {threads} thread(s)"
        ),
        "-",
        format!("+{} µs at the median, +{} µs CPU per pair", us(p50), us(cpu)),
        Verdict::Info,
        format!("{share:.0} % over a direct pair's median ({} µs)", us(direct.p50_us())),
    );
}

/// Runs the async section.
pub fn run(settings: &Settings, report: &mut Report) -> Result<(), String> {
    let rt = runtime()?;
    let handle = rt.handle().clone();
    let mut notes = String::new();
    let mut tables = String::new();

    let memory: Arc<dyn LockingPlugin> = Arc::from(plugin::load("memory")?.create("{}")?);
    let mut groups = Vec::new();
    for threads in [1, 8] {
        groups.push(measure(
            "async memory",
            threads,
            &sides(&memory, &handle, "bench/async"),
            settings,
        ));
    }
    memory.cleanup();
    let refs: Vec<&[Tally]> = groups.iter().map(Vec::as_slice).collect();
    let _ = write!(tables, "### memory\n\n{}\n", table(&refs, Kind::So, "threads"));
    for g in &groups {
        cost_line(report, "memory", g, &mut notes);
    }

    let version = bext_locking_bench::machine::version_of("redis-server", &["--version"]);
    if version == "unavailable" {
        let _ = writeln!(notes, "* redis: not measured: redis-server is not installed");
    } else {
        let lib = plugin::load("redis")?;
        let server = Server::start();
        let mut groups = Vec::new();
        for threads in [1, 8] {
            let config = serde_json::json!({ "url": server.url(), "pool_size": threads });
            let redis: Arc<dyn LockingPlugin> = Arc::from(lib.create(&config.to_string())?);
            groups.push(measure(
                "async redis",
                threads,
                &sides(&redis, &handle, "bench/async"),
                settings,
            ));
            redis.cleanup();
        }
        drop(server);
        let refs: Vec<&[Tally]> = groups.iter().map(Vec::as_slice).collect();
        let _ = write!(tables, "### redis\n\n{}\n", table(&refs, Kind::So, "threads"));
        for g in &groups {
            cost_line(report, "redis", g, &mut notes);
        }
    }
    drop(rt);

    let body = format!(
        "What a tokio service pays to keep the blocking calls off its runtime threads: the \
         backend's `.so` called directly from a thread, against the same pairs run through \
         `tokio::task::spawn_blocking` on a multi-thread runtime with one worker per core \
         (each measuring thread waits on the task's `JoinHandle` as an async task awaits it). \
         \"Per pair\" puts `try_lock` and `release` in one blocking task; \"per call\" gives \
         each its own, as a task that holds the lock across `.await`s does. The pattern is \
         in `examples/tokio.rs`.\n\n{}\n{tables}",
        bext_locking_bench::report::plural(&notes)
    );
    report.section("async", body);
    Ok(())
}

fn main() {
    bext_locking_bench::section_main("async", run);
}
