//! Redis backend and the `rslock` crate side by side: one node
//! and a 3-master quorum, each against the raw `redis` crate doing the same
//! commands on the same number of connections.

use std::fmt::Write;
use std::time::Duration;

use bext_locking_redis::Exported;
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
    quorum: &'a Pair,
    state: &'a State,
) -> Vec<Entry<'a>> {
    let release = &state.release;
    let acquire = &state.acquire;
    let mut v = single.sides(&format!("bench/redis/1/{threads}"));
    for e in &mut v {
        e.label.push_str(", 1 node");
    }
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
        let three = Pair::create::<Exported>(
            &lib,
            &serde_json::json!({ "urls": urls, "pool_size": threads }).to_string(),
        )?;
        let state = State::new(threads, &single.url(), &urls)?;
        groups.push(measure("redis", threads, &sides(threads, &one, &three, &state), settings));
    }
    drop(masters);
    drop(single);

    let split = |g: &[Tally], nodes: &str| -> Vec<Tally> {
        g.iter().filter(|t| t.label.ends_with(nodes)).cloned().collect()
    };
    let singles: Vec<Vec<Tally>> = groups.iter().map(|g| split(g, "1 node")).collect();
    let quorums: Vec<Vec<Tally>> = groups.iter().map(|g| split(g, "3 nodes")).collect();

    let mut body = format!(
        "Throwaway `redis-server`s without persistence on loopback ({version}): one for the \
         single-node rows, three independent masters for the quorum rows. All nine sides of a \
         thread count run interleaved in the same rounds. Each worker thread has its own key \
         and its own connection(s): the plugin gets `pool_size` = threads, the raw sides and \
         rslock one connection (per node) per thread. The raw single-node baseline is the \
         hand-written one: `SET NX PX` plus a compare-and-delete script; the plugin runs a fenced \
         acquire script instead (the key plus a fence counter floored at the server's clock), \
         shown as the raw fenced row doing exactly that. rslock {} runs each thread on its own \
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
    report.section("redis", body);
    Ok(())
}

fn main() {
    bext_locking_bench::section_main("redis", run);
}
