//! Redis backend and the `rslock` crate side by side: one node (fenced,
//! and with `"fencing": false`) and a 3-master quorum, each against the raw
//! `redis` crate doing the same commands on the same number of
//! connections; the fenced acquire script's cost on the server, against the
//! script it replaced; and one node, 3 and 5 masters behind delay proxies,
//! where a quorum's parallel fan-out shows what it costs on a network.

use std::fmt::Write;
use std::time::Duration;

use bext_locking_redis::Exported;
use bext_locking_test_support::proxy::{DEFAULT_DELAY, Proxy};
use bext_locking_test_support::servers::redis::Server;
use redis::{Connection, Script, Value};

use bext_locking_bench::measure::{Entry, Kind, Lap, PerThread, Settings, TTL_MS, Tally, measure};
use bext_locking_bench::plugin::{self, Pair};
use bext_locking_bench::report::{
    Report, Verdict, median_ratio, ratio_text, shortfall_note, table, thousands, us,
};

/// Compare-and-delete and the fenced acquire are the backend's own scripts
/// (`bext_locking_redis::scripts`), so the raw client runs exactly what the
/// plugin runs and the difference is the plugin's own cost.
fn release_source() -> &'static str {
    bext_locking_redis::scripts::RELEASE.source
}

fn fenced_acquire_source() -> &'static str {
    bext_locking_redis::scripts::ACQUIRE_FENCED.source
}

fn connect(url: &str) -> Result<Connection, String> {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .map_err(|e| format!("connect to {url}: {e}"))
}

fn err(e: redis::RedisError) -> String {
    e.to_string()
}

/// `SET key token NX PX ttl`, then compare-and-delete: the cheapest correct
/// pair, the baseline a user would write by hand.
fn raw_plain(c: &mut Connection, key: &str, release: &Script) -> Result<(), String> {
    let token = uuid::Uuid::new_v4().to_string();
    let ok: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(TTL_MS)
        .query(c)
        .map_err(err)?;
    ok.ok_or_else(|| format!("unexpected contention on `{key}`"))?;
    let n: i64 = release.key(key).arg(&token).invoke(c).map_err(err)?;
    if n == 1 { Ok(()) } else { Err(format!("release of `{key}` deleted nothing")) }
}

/// The backend's fenced script, with the holder's record and an owner as
/// the plugin writes them (hosts send a default owner), then
/// compare-and-delete of both.
fn raw_fenced(
    c: &mut Connection,
    [key, fence, info]: [&str; 3],
    acquire: &Script,
    release: &Script,
) -> Result<(), String> {
    let token = uuid::Uuid::new_v4().to_string();
    let got: Option<i64> = acquire
        .key(key)
        .key(fence)
        .key(info)
        .arg(&token)
        .arg(TTL_MS)
        .arg("bench-host:1")
        .invoke(c)
        .map_err(err)?;
    got.ok_or_else(|| format!("unexpected contention on `{key}`"))?;
    let n: i64 = release.key(key).key(info).arg(&token).invoke(c).map_err(err)?;
    if n == 1 { Ok(()) } else { Err(format!("release of `{key}` deleted nothing")) }
}

/// Redlock's floor with the raw crate: `SET NX PX` on every master, all
/// requests written before any answer is read, then compare-and-delete on
/// every master the same way.
fn raw_quorum(conns: &mut [Connection], key: &str, release_sha: &str) -> Result<(), String> {
    let token = uuid::Uuid::new_v4().to_string();
    let set =
        redis::cmd("SET").arg(key).arg(&token).arg("NX").arg("PX").arg(TTL_MS).get_packed_command();
    for c in conns.iter_mut() {
        c.send_packed_command(&set).map_err(err)?;
    }
    for c in conns.iter_mut() {
        if c.recv_response().map_err(err)? != Value::Okay {
            return Err(format!("unexpected contention on `{key}`"));
        }
    }
    let del =
        redis::cmd("EVALSHA").arg(release_sha).arg(1).arg(key).arg(&token).get_packed_command();
    for c in conns.iter_mut() {
        c.send_packed_command(&del).map_err(err)?;
    }
    for c in conns.iter_mut() {
        if c.recv_response().map_err(err)? != Value::Int(1) {
            return Err(format!("release of `{key}` deleted nothing"));
        }
    }
    Ok(())
}

/// An `rslock` lock manager on its own single-threaded runtime: what one
/// thread of an async program using rslock amounts to.
struct Rslock {
    rt: tokio::runtime::Runtime,
    manager: rslock::LockManager,
}

impl Rslock {
    fn new(urls: &[String]) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let manager = rslock::LockManager::new(urls.to_vec());
        Ok(Self { rt, manager })
    }

    fn pair(&self, key: &str) -> Result<(), String> {
        self.rt.block_on(async {
            let lock = self
                .manager
                .lock(key, Duration::from_millis(TTL_MS))
                .await
                .map_err(|e| format!("rslock lock `{key}`: {e}"))?;
            self.manager.unlock(&lock).await;
            Ok(())
        })
    }
}

/// Every side of one thread count: 1 node, then 3 nodes.
fn sides<'a>(
    threads: usize,
    single: &'a Pair,
    unfenced: &'a dyn bext_locking::LockingPlugin,
    quorum: &'a Pair,
    state: &'a State,
) -> Vec<Entry<'a>> {
    let release = &state.release;
    let acquire = &state.acquire;
    let mut v = single.sides(&format!("bench/redis/1/{threads}"));
    for e in &mut v {
        e.label.push_str(", 1 node");
    }
    v.push(plugin::side(
        ".so unfenced, 1 node",
        Kind::SoAlt,
        unfenced,
        &format!("bench/redis/1u/{threads}"),
    ));
    v.push(Entry::new("raw SET NX PX + CAS, 1 node", Kind::Raw, move |t, lap: &mut Lap| {
        let key = format!("bench:raw:{{{threads}/{t}}}");
        state.plain.with(t, |c| lap.run(|| raw_plain(c, &key, release)));
    }));
    v.push(Entry::new("raw fenced script + CAS, 1 node", Kind::RawAlt, move |t, lap: &mut Lap| {
        let key = format!("bench:fenced:{{{threads}/{t}}}");
        let fence = format!("bench:fenced:fence:{{{threads}/{t}}}");
        let info = format!("bench:fenced:info:{{{threads}/{t}}}");
        let keys = [key.as_str(), fence.as_str(), info.as_str()];
        state.fenced.with(t, |c| lap.run(|| raw_fenced(c, keys, acquire, release)));
    }));
    v.push(Entry::new("rslock, 1 node", Kind::Rslock, move |t, lap: &mut Lap| {
        let key = format!("bench:rslock:1:{threads}/{t}");
        state.rslock_single.with(t, |r| lap.run(|| r.pair(&key)));
    }));
    let mut q = quorum.sides(&format!("bench/redis/3/{threads}"));
    for e in &mut q {
        e.label.push_str(", 3 nodes");
    }
    v.extend(q);
    let sha = release.get_hash().to_owned();
    v.push(Entry::new("raw in parallel, 3 nodes", Kind::Raw, move |t, lap: &mut Lap| {
        let key = format!("bench:rawq:{threads}/{t}");
        state.quorum.with(t, |conns| lap.run(|| raw_quorum(conns, &key, &sha)));
    }));
    v.push(Entry::new("rslock, 3 nodes", Kind::Rslock, move |t, lap: &mut Lap| {
        let key = format!("bench:rslock:3:{threads}/{t}");
        state.rslock_quorum.with(t, |r| lap.run(|| r.pair(&key)));
    }));
    v
}

/// The raw and rslock sides' connections, one set per worker thread.
struct State {
    release: Script,
    acquire: Script,
    plain: PerThread<Connection>,
    fenced: PerThread<Connection>,
    quorum: PerThread<Vec<Connection>>,
    rslock_single: PerThread<Rslock>,
    rslock_quorum: PerThread<Rslock>,
}

impl State {
    fn new(threads: usize, single: &str, quorum: &[String]) -> Result<Self, String> {
        Ok(Self {
            release: Script::new(release_source()),
            acquire: Script::new(fenced_acquire_source()),
            plain: PerThread::new(threads, |_| connect(single))?,
            fenced: PerThread::new(threads, |_| connect(single))?,
            quorum: PerThread::new(threads, |_| {
                let mut conns = quorum.iter().map(|u| connect(u)).collect::<Result<Vec<_>, _>>()?;
                for c in &mut conns {
                    let _: String = redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(release_source())
                        .query(c)
                        .map_err(err)?;
                }
                Ok(conns)
            })?,
            rslock_single: PerThread::new(threads, |_| Rslock::new(&[single.to_owned()]))?,
            rslock_quorum: PerThread::new(threads, |_| Rslock::new(quorum))?,
        })
    }
}

/// Runs the Redis section.
pub fn run(settings: &Settings, report: &mut Report) -> Result<(), String> {
    let version = bext_locking_bench::machine::version_of("redis-server", &["--version"]);
    if version == "unavailable" {
        return Err("redis-server is not installed (apt-get install redis-server)".into());
    }
    let lib = plugin::load("redis")?;
    // Throwaway servers without persistence, on free loopback ports; killed
    // when they drop, also on a panic.
    let single = Server::start();
    let masters: Vec<Server> = (0..3).map(|_| Server::start()).collect();
    let urls: Vec<String> = masters.iter().map(Server::url).collect();

    let mut groups: Vec<Vec<Tally>> = Vec::new();
    for threads in [1, 8] {
        let one = Pair::create::<Exported>(
            &lib,
            &serde_json::json!({ "url": single.url(), "pool_size": threads }).to_string(),
        )?;
        let unfenced = lib.create(
            &serde_json::json!({ "url": single.url(), "pool_size": threads, "fencing": false })
                .to_string(),
        )?;
        let three = Pair::create::<Exported>(
            &lib,
            &serde_json::json!({ "urls": urls, "pool_size": threads }).to_string(),
        )?;
        let state = State::new(threads, &single.url(), &urls)?;
        let entries = sides(threads, &one, &*unfenced, &three, &state);
        groups.push(measure("redis", threads, &entries, settings));
        drop(entries);
        unfenced.cleanup();
    }
    let mut script = script_cost(&single);
    eprintln!("  redis: counting redis-server instructions per script under callgrind");
    script.instructions = script_instructions();
    drop(masters);
    drop(single);

    let split = |g: &[Tally], nodes: &str| -> Vec<Tally> {
        g.iter().filter(|t| t.label.ends_with(nodes)).cloned().collect()
    };
    let singles: Vec<Vec<Tally>> = groups.iter().map(|g| split(g, "1 node")).collect();
    let quorums: Vec<Vec<Tally>> = groups.iter().map(|g| split(g, "3 nodes")).collect();

    let mut body = format!(
        "Throwaway `redis-server`s without persistence on loopback ({version}): one for the \
         single-node rows, three independent masters for the quorum rows. All ten sides of a \
         thread count run interleaved in the same rounds. Each worker thread has its own key \
         and its own connection(s): the plugin gets `pool_size` = threads, the raw sides and \
         rslock one connection (per node) per thread. The raw single-node baseline is the \
         hand-written one: `SET NX PX` plus a compare-and-delete script; the plugin runs a fenced \
         acquire script instead (the key plus a fence counter floored at the server's clock), \
         shown as the raw fenced row doing exactly that. The `.so unfenced` row is the same \
         plugin with `\"fencing\": false`: a plain `SET NX PX` (the host's default owner rides in \
         the value, so it is longer than the bare token), then the compare-and-delete script, \
         which also publishes to the lock's channel for `lock_wait` waiters: the baseline's \
         commands plus that `PUBLISH`. rslock {} runs each thread on its own \
         current-thread tokio runtime with one multiplexed connection per node.\n\n### One node\n\n",
        "0.7.4"
    );
    let srefs: Vec<&[Tally]> = singles.iter().map(Vec::as_slice).collect();
    body.push_str(&table(&srefs, Kind::Raw, "threads"));
    body.push_str("\n### Three masters (Redlock quorum)\n\n");
    let qrefs: Vec<&[Tally]> = quorums.iter().map(Vec::as_slice).collect();
    body.push_str(&table(&qrefs, Kind::Raw, "threads"));

    for (g, threads) in singles.iter().zip([1, 8]) {
        report.chart_group(format!("redis, 1 node, {threads} thread(s)"), g, Kind::Raw, Some(0.95));
    }
    for (g, threads) in quorums.iter().zip([1, 8]) {
        report.chart_group(format!("redis, 3 masters, {threads} thread(s)"), g, Kind::Raw, None);
    }

    let find = |g: &[Tally], k: Kind| g.iter().find(|t| t.kind == k && t.ok()).cloned();
    let load = bext_locking_bench::machine::load_1min();
    let cores = bext_locking_bench::machine::nproc();
    // .so against the raw baseline.
    for (g, threads) in singles.iter().zip([1, 8]) {
        let (so, raw, fenced) = (find(g, Kind::So), find(g, Kind::Raw), find(g, Kind::RawAlt));
        match (&so, &raw) {
            (Some(s), Some(r)) => {
                let x = median_ratio(s, r);
                let adds = format!(
                    "its fenced script reads the server clock and bumps a counter where the baseline sends `SET NX PX` (against the raw client running that same script the .so is at {}), plus the C boundary's JSON, the token and the pool",
                    fenced.as_ref().map(|f| ratio_text(s, f)).unwrap_or_else(|| "-".into())
                );
                let note = shortfall_note(s, r, 0.95, &adds);
                report.target(
                    "redis",
                    format!("`.so` / raw `SET NX PX` + CAS, {threads} thread(s)"),
                    ">= 0.95x",
                    ratio_text(s, r),
                    Verdict::of(x >= 0.95),
                    note,
                );
            }
            _ => report.target(
                "redis",
                format!("`.so` / raw, {threads} thread(s)"),
                ">= 0.95x",
                "-",
                Verdict::NoData,
                "a side failed",
            ),
        }
    }
    // Unfenced .so against the raw baseline and rslock; fenced .so against
    // the raw client running its own script.
    for (g, threads) in singles.iter().zip([1, 8]) {
        let (unf, raw, rs) = (find(g, Kind::SoAlt), find(g, Kind::Raw), find(g, Kind::Rslock));
        let adds = "the C boundary's JSON in and out (in-process, the plugin's own client does fewer instructions per pair than the raw client: it reads replies in place, where the driver zeroes 8 KiB per read), the release's `PUBLISH` to the lock's channel for waiters, and the owner in the `SET` value; the commands are otherwise the baseline's";
        bar_target(
            report,
            format!("`.so` unfenced / raw `SET NX PX` + CAS, {threads} thread(s)"),
            unf.as_ref(),
            raw.as_ref(),
            0.98,
            adds,
        );
        bar_target(
            report,
            format!("`.so` unfenced / rslock, 1 node, {threads} thread(s)"),
            unf.as_ref(),
            rs.as_ref(),
            1.1,
            adds,
        );
        bar_target(
            report,
            format!(
                "`.so` fenced / raw client running the same fenced script, {threads} thread(s)"
            ),
            find(g, Kind::So).as_ref(),
            find(g, Kind::RawAlt).as_ref(),
            0.95,
            "the C boundary's JSON, the key names and the pool, and the release's `PUBLISH` to the lock's channel for waiters (the raw client's compare-and-delete publishes nothing); the acquire script is the same",
        );
    }
    script.report(report, &mut body);
    // Quorum latency over single-node latency, 1 thread.
    let latency_target = |report: &mut Report, label: &str, kind: Kind, bar: Option<f64>| {
        let (Some(one), Some(three)) = (find(&singles[0], kind), find(&quorums[0], kind)) else {
            return;
        };
        // The median latency is the verdict's: it is what a caller waits
        // for, and the least moved by the machine's load. The mean latency
        // is 1 / rate at one thread.
        let p50 = three.p50_us() / one.p50_us();
        let mean = one.rate() / three.rate();
        let measured = format!(
            "{p50:.2}x at p50 ({} vs {} µs), {mean:.2}x mean ({} vs {} µs)",
            us(three.p50_us()),
            us(one.p50_us()),
            us(1e6 / three.rate()),
            us(1e6 / one.rate())
        );
        match bar {
            Some(bar) => report.target(
                "redis",
                format!("3-master quorum / single-node latency per pair, {label}, 1 thread"),
                format!("<= {bar}x"),
                measured,
                Verdict::of(p50 <= bar),
                if p50 <= bar {
                    String::new()
                } else {
                    format!(
                        "the fan-out is parallel on the client (requests to all masters are written before any answer is read), but here three redis-servers and the client share {cores} cores (load average {load:.1}), so the masters cannot answer at the same time; the raw crate doing the same parallel requests takes {} of its single-node latency (p50)",
                        match (find(&singles[0], Kind::Raw), find(&quorums[0], Kind::Raw)) {
                            (Some(a), Some(b)) => format!("{:.2}x", b.p50_us() / a.p50_us()),
                            _ => "-".into(),
                        }
                    )
                },
            ),
            None => report.target(
                "redis",
                format!("3-master quorum / single-node latency per pair, {label}, 1 thread"),
                "about 1.5x (Redlock's usual cost)",
                measured,
                Verdict::Info,
                "rslock's own figure, for comparison",
            ),
        }
    };
    latency_target(report, ".so", Kind::So, Some(1.3));
    latency_target(report, "rslock", Kind::Rslock, None);
    // Thread scaling.
    if let (Some(a), Some(b)) = (find(&singles[0], Kind::So), find(&singles[1], Kind::So)) {
        let x = b.rate() / a.rate();
        let raw = match (find(&singles[0], Kind::Raw), find(&singles[1], Kind::Raw)) {
            (Some(r1), Some(r8)) => format!("{:.2}x", r8.rate() / r1.rate()),
            _ => "-".into(),
        };
        report.target(
            "redis",
            "8 threads / 1 thread, `.so`, 1 node",
            ">= 2x",
            format!("{x:.2}x ({} vs {}/s)", thousands(b.rate()), thousands(a.rate())),
            Verdict::of(x >= 2.0),
            if x >= 2.0 {
                String::new()
            } else {
                format!(
                    "one thread already keeps the client and redis-server busy on {cores} shared cores (load average {load:.1}); the raw crate scales {raw} the same way"
                )
            },
        );
    }
    // Against rslock.
    for (groups, nodes, strict) in [(&singles, "1 node", false), (&quorums, "3 masters", true)] {
        for (g, threads) in groups.iter().zip([1, 8]) {
            let (Some(so), Some(rs)) = (find(g, Kind::So), find(g, Kind::Rslock)) else {
                continue;
            };
            let x = median_ratio(&so, &rs);
            let ok = if strict { x > 1.0 } else { x >= 1.0 };
            report.target(
                "redis vs rslock",
                format!("`.so` / rslock, {nodes}, {threads} thread(s)"),
                if strict { "> 1x (faster)" } else { ">= 1x" },
                ratio_text(&so, &rs),
                Verdict::of(ok),
                shortfall_note(
                    &so,
                    &rs,
                    if strict { 1.0 + 1e-9 } else { 1.0 },
                    "the fence (a Lua script where rslock sends `SET NX PX`), the C boundary's JSON and the pool",
                ),
            );
        }
    }
    let _ = writeln!(
        body,
        "\nOn 2 cores a single client thread, its redis-server and (for the quorum) three \
         servers compete for the same cores: the quorum's requests go out in parallel, but the \
         masters can only answer one or two at a time."
    );
    behind_delay(&lib, settings, report, &mut body)?;
    report.section("redis", body);
    Ok(())
}

/// A "side at least `bar` times the baseline" target for the redis area.
fn bar_target(
    report: &mut Report,
    what: String,
    side: Option<&Tally>,
    base: Option<&Tally>,
    bar: f64,
    adds: &str,
) {
    match (side, base) {
        (Some(s), Some(b)) => report.target(
            "redis",
            what,
            format!(">= {bar}x"),
            ratio_text(s, b),
            Verdict::of(median_ratio(s, b) >= bar),
            shortfall_note(s, b, bar, adds),
        ),
        _ => report.target(
            "redis",
            what,
            format!(">= {bar}x"),
            "-",
            Verdict::NoData,
            "a side failed",
        ),
    }
}

/// The server's own time per fenced acquire (`INFO commandstats`,
/// `usec_per_call` of `EVALSHA`) for the script the plugin sends and the
/// one it replaced, in alternating rounds on one connection.
struct ScriptCost {
    /// Per round: (current, previous) µs per call.
    rounds: Vec<(f64, f64)>,
    calls: usize,
    error: Option<String>,
    /// redis-server instructions per acquisition and `DEL` under callgrind:
    /// (current, previous).
    instructions: Result<(f64, f64), String>,
}

/// Acquisitions per callgrind run (two passes over as many keys, so half
/// find their fence counter, as every acquisition after a name's first).
const CALLGRIND_KEYS: usize = 2_000;

/// redis-server's own instructions per fenced acquisition (plus a `DEL`),
/// current and previous script: deterministic, so unlike `usec_per_call`
/// it does not move with the machine's load.
fn script_instructions() -> Result<(f64, f64), String> {
    let count = |source: &str, keys: usize| -> Result<u64, String> {
        let port = bext_locking_test_support::free_port();
        let dir = std::env::temp_dir();
        let child = std::process::Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null", "redis-server"])
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("valgrind could not start ({e}); install valgrind"))?;
        let url = format!("redis://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        let mut c = loop {
            match connect(&url) {
                Ok(c) => break c,
                Err(_) if started.elapsed() < Duration::from_secs(60) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(format!("redis-server under valgrind: {e}")),
            }
        };
        let sha: String =
            redis::cmd("SCRIPT").arg("LOAD").arg(source).query(&mut c).map_err(err)?;
        for _pass in 0..2 {
            for start in (0..keys).step_by(100) {
                let mut acquire = redis::pipe();
                let mut del = redis::pipe();
                for i in start..(start + 100).min(keys) {
                    let lock = format!("cg:{{{i}}}");
                    let fence = format!("cg:fence:{{{i}}}");
                    acquire
                        .cmd("EVALSHA")
                        .arg(&sha)
                        .arg(2)
                        .arg(&lock)
                        .arg(&fence)
                        .arg("t")
                        .arg(TTL_MS);
                    del.cmd("DEL").arg(&lock).ignore();
                }
                let _: Vec<Option<i64>> = acquire.query(&mut c).map_err(err)?;
                let _: () = del.query(&mut c).map_err(err)?;
            }
        }
        let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut c);
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stderr);
        text.lines()
            .find_map(|l| l.split_once("Collected :").map(|(_, n)| n.trim().to_owned()))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| "no `Collected :` line in callgrind's output for redis-server".into())
    };
    let per_call = |source: &str| -> Result<f64, String> {
        let (a, b) = (count(source, 0)?, count(source, CALLGRIND_KEYS)?);
        Ok(b.saturating_sub(a) as f64 / (2 * CALLGRIND_KEYS) as f64)
    };
    Ok((
        per_call(fenced_acquire_source())?,
        per_call(bext_locking_redis::scripts::ACQUIRE_FENCED_READ_MAX_WRITE)?,
    ))
}

/// Acquisitions per script per round, each followed by a plain `DEL` (not
/// counted: only `EVALSHA` runs the script).
const SCRIPT_CALLS: usize = 20_000;
const SCRIPT_ROUNDS: usize = 9;

fn script_cost(server: &Server) -> ScriptCost {
    let mut cost = ScriptCost {
        rounds: Vec::new(),
        calls: SCRIPT_CALLS,
        error: None,
        instructions: Err("not measured".into()),
    };
    if let Err(e) = script_rounds(server, &mut cost.rounds) {
        cost.error = Some(e);
    }
    cost
}

fn script_rounds(server: &Server, rounds: &mut Vec<(f64, f64)>) -> Result<(), String> {
    let mut c = connect(&server.url())?;
    let current = fenced_acquire_source();
    let previous = bext_locking_redis::scripts::ACQUIRE_FENCED_READ_MAX_WRITE;
    let shas: Vec<String> = [current, previous]
        .iter()
        .map(|src| redis::cmd("SCRIPT").arg("LOAD").arg(*src).query(&mut c).map_err(err))
        .collect::<Result<_, _>>()?;
    let per_call = |c: &mut Connection, sha: &str, round: usize| -> Result<f64, String> {
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(c).map_err(err)?;
        const BATCH: usize = 500;
        for start in (0..SCRIPT_CALLS).step_by(BATCH) {
            let mut acquire = redis::pipe();
            let mut del = redis::pipe();
            for i in start..start + BATCH {
                let lock = format!("bench:script:{{{round}/{i}}}");
                let fence = format!("bench:script:fence:{{{round}/{i}}}");
                acquire.cmd("EVALSHA").arg(sha).arg(2).arg(&lock).arg(&fence).arg("t").arg(TTL_MS);
                del.cmd("DEL").arg(&lock).ignore();
            }
            let fences: Vec<Option<i64>> = acquire.query(c).map_err(err)?;
            if fences.iter().any(Option::is_none) {
                return Err("a fenced acquire met contention".into());
            }
            let _: () = del.query(c).map_err(err)?;
        }
        let stats: String = redis::cmd("INFO").arg("commandstats").query(c).map_err(err)?;
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
            .and_then(|l| l.split("usec_per_call=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| "no usec_per_call for evalsha in INFO commandstats".to_owned())
    };
    for round in 0..SCRIPT_ROUNDS {
        // Rounds alternate which script goes first; each round writes fresh
        // fence counters, as the first acquisition of a name does, and the
        // second pass over them (round + 1) finds them, as every later one.
        let key_round = round / 2;
        let (a, b) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        let first = per_call(&mut c, &shas[a], key_round * 2 + a)?;
        let second = per_call(&mut c, &shas[b], key_round * 2 + b)?;
        let (cur, prev) = if a == 0 { (first, second) } else { (second, first) };
        rounds.push((cur, prev));
    }
    Ok(())
}

impl ScriptCost {
    fn report(&self, report: &mut Report, body: &mut String) {
        let what = "fenced acquire script on the server, µs per call (`INFO commandstats`), current / previous";
        if let Some(e) = &self.error {
            report.target("redis", what, "< 1x (cheaper)", "-", Verdict::NoData, e.clone());
            return;
        }
        match &self.instructions {
            Ok((cur, prev)) => {
                report.target(
                    "redis",
                    "fenced acquire script, redis-server instructions per acquisition + `DEL` (callgrind), current / previous",
                    "< 1x (cheaper)",
                    format!("{:.3}x ({cur:.0} vs {prev:.0})", cur / prev),
                    Verdict::of(cur < prev),
                    "deterministic, so it does not move with the machine's load",
                );
                let _ = write!(
                    body,
                    "\nredis-server's own instructions under `valgrind --tool=callgrind`, per fenced \
                     acquisition and its `DEL` ({} keys twice, less a run with none): current \
                     **{cur:.0}**, previous **{prev:.0}** ({:.3}x).\n",
                    CALLGRIND_KEYS,
                    cur / prev
                );
            }
            Err(e) => {
                let _ = write!(body, "\nredis-server instructions not measured: {e}.\n");
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let cur = median(self.rounds.iter().map(|r| r.0).collect());
        let prev = median(self.rounds.iter().map(|r| r.1).collect());
        let ratio = median(self.rounds.iter().map(|r| r.0 / r.1).collect());
        report.target(
            "redis",
            what,
            "< 1x (cheaper)",
            format!("{ratio:.2}x ({} vs {} µs per call)", us(cur), us(prev)),
            Verdict::of(ratio < 1.0),
            "the median of the per-round ratios; the server's own timing of the script, so neither the client nor the network is in it",
        );
        let _ = write!(
            body,
            "\n\
             ### The fenced acquire script on the server\n\
             \n\
             The server's own time per call (`INFO commandstats`, `usec_per_call` of `EVALSHA`) for the fenced acquire the plugin sends (it writes the server clock into the fence counter and reads the previous fence in one `SET ... GET`) and for the script it replaced (read the counter, take the maximum with the clock, write it back), {} acquisitions per script per round (each followed by a `DEL`), {} rounds alternating which goes first:\n\
             \n\
             | script | µs per call, median round | rounds |\n\
             | --- | --- | --- |\n\
             | current (`SET ... GET`) | {} | {} |\n\
             | previous (`GET`, then `SET`) | {} | {} |\n\
             \n\
             Median of the per-round ratios: **{ratio:.2}x**. `usec_per_call` is the server's \
             wall time inside the script, so on a loaded machine it also counts the time the \
             server waited for a core.\n\
             ",
            thousands(self.calls as f64),
            self.rounds.len(),
            us(cur),
            self.rounds.iter().map(|r| format!("{:.2}", r.0)).collect::<Vec<_>>().join(", "),
            us(prev),
            self.rounds.iter().map(|r| format!("{:.2}", r.1)).collect::<Vec<_>>().join(", "),
        );
    }
}

/// One node, 3 masters and 5 masters, each server behind its own delay
/// proxy, at 1 thread: the `.so` and rslock on the same proxies.
fn behind_delay(
    lib: &bext_locking_loader::LoadedPlugin,
    settings: &Settings,
    report: &mut Report,
    body: &mut String,
) -> Result<(), String> {
    let delay = std::env::var("BENCH_DELAY_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_micros)
        .unwrap_or(DEFAULT_DELAY);
    let servers: Vec<Server> = (0..6).map(|_| Server::start()).collect();
    let proxies: Vec<Proxy> = servers
        .iter()
        .map(|s| Proxy::with_delay(std::net::SocketAddr::from(([127, 0, 0, 1], s.port)), delay))
        .collect();
    let url = |p: &Proxy| format!("redis://127.0.0.1:{}", p.port);
    // Server 0 is the single node; 1-3 the three masters; 1-5 the five.
    let single = vec![url(&proxies[0])];
    let three: Vec<String> = proxies[1..4].iter().map(url).collect();
    let five: Vec<String> = proxies[1..6].iter().map(url).collect();
    let so1 = lib.create(&serde_json::json!({ "url": single[0], "pool_size": 1 }).to_string())?;
    let so3 = lib.create(&serde_json::json!({ "urls": three, "pool_size": 1 }).to_string())?;
    let so5 = lib.create(&serde_json::json!({ "urls": five, "pool_size": 1 }).to_string())?;
    let rs1 = PerThread::new(1, |_| Rslock::new(&single))?;
    let rs3 = PerThread::new(1, |_| Rslock::new(&three))?;
    let rs5 = PerThread::new(1, |_| Rslock::new(&five))?;
    let mut entries = vec![
        plugin::side(".so, 1 node", Kind::So, &*so1, "bench/delay/1"),
        plugin::side(".so, 3 masters", Kind::So, &*so3, "bench/delay/3"),
        plugin::side(".so, 5 masters", Kind::So, &*so5, "bench/delay/5"),
    ];
    for (label, rs, n) in [
        ("rslock, 1 node", &rs1, 1),
        ("rslock, 3 masters", &rs3, 3),
        ("rslock, 5 masters", &rs5, 5),
    ] {
        entries.push(Entry::new(label, Kind::Rslock, move |t, lap: &mut Lap| {
            let key = format!("bench:delay:rslock:{n}/{t}");
            rs.with(t, |r| lap.run(|| r.pair(&key)));
        }));
    }
    let tallies = measure("redis behind delay proxies", 1, &entries, settings);
    drop(entries);
    for p in [&so1, &so3, &so5] {
        p.cleanup();
    }
    drop(proxies);
    drop(servers);

    let get = |label: &str| tallies.iter().find(|t| t.label == label && t.ok());
    let base = get(".so, 1 node");
    let _ = write!(
        body,
        "\n\
         ### Behind delay proxies (one node, 3 and 5 masters)\n\
         \n\
         Each `redis-server` behind its own TCP proxy that holds every chunk, each way, for {} µs before passing it on (a delay line: chunks do not wait for each other), so every round trip costs at least {} µs, like masters on a network. The plugin sends to every master before reading any answer, so a quorum should cost about one round trip per call, like one node. One thread; `.so` and rslock on the same proxies.\n\
         \n\
         | side | pairs/s | p50 µs | p99 µs | CPU µs/pair | p50 vs `.so`, 1 node |\n\
         | --- | --- | --- | --- | --- | --- |\n\
         ",
        delay.as_micros(),
        2 * delay.as_micros()
    );
    for t in &tallies {
        if let Some(e) = &t.error {
            let _ = writeln!(body, "| {} | failed: {} | | | | |", t.label, e.replace('|', "/"));
            continue;
        }
        let vs = base.map_or("-".into(), |b| format!("{:.2}x", t.p50_us() / b.p50_us()));
        let _ = writeln!(
            body,
            "| {} | {} | {} | {} | {} | {vs} |",
            t.label,
            thousands(t.rate()),
            us(t.p50_us()),
            us(t.p99_us()),
            us(t.cpu_us())
        );
    }
    let why_over = format!(
        "every call waits for the slowest of the masters' answers, and the proxies' and servers' threads ({} of them with 5 masters) share {} loaded cores (load average {:.1}), so a late wake-up anywhere delays the call",
        5 * 4 + 5,
        bext_locking_bench::machine::nproc(),
        bext_locking_bench::machine::load_1min()
    );
    for (n, bar) in [(3, 1.3), (5, 1.4)] {
        let what = format!(
            "{n}-master quorum / single-node p50 latency, `.so` behind delay proxies, 1 thread"
        );
        match (base, get(&format!(".so, {n} masters"))) {
            (Some(one), Some(q)) => {
                let x = q.p50_us() / one.p50_us();
                report.target(
                    "redis",
                    what,
                    format!("<= {bar}x"),
                    format!("{x:.2}x ({} vs {} µs)", us(q.p50_us()), us(one.p50_us())),
                    Verdict::of(x <= bar),
                    if x <= bar { String::new() } else { why_over.clone() },
                );
            }
            _ => report.target(
                "redis",
                what,
                format!("<= {bar}x"),
                "-",
                Verdict::NoData,
                "a side failed",
            ),
        }
    }
    for (so, rs) in [
        (".so, 1 node", "rslock, 1 node"),
        (".so, 3 masters", "rslock, 3 masters"),
        (".so, 5 masters", "rslock, 5 masters"),
    ] {
        let what = format!("{so} / {rs} p50 latency behind delay proxies, 1 thread");
        match (get(so), get(rs)) {
            (Some(a), Some(b)) => {
                let x = a.p50_us() / b.p50_us();
                report.target(
                    "redis vs rslock",
                    what,
                    "<= 1x",
                    format!("{x:.2}x ({} vs {} µs)", us(a.p50_us()), us(b.p50_us())),
                    Verdict::of(x <= 1.0),
                    if x <= 1.0 {
                        String::new()
                    } else {
                        "the .so's fenced single-node acquire is one script; its release, like rslock's, one more round trip".into()
                    },
                );
            }
            _ => report.target(
                "redis vs rslock",
                what,
                "<= 1x",
                "-",
                Verdict::NoData,
                "a side failed",
            ),
        }
    }
    Ok(())
}

fn main() {
    bext_locking_bench::section_main("redis", run);
}
