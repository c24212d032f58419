//! PostgreSQL backend: pairs through the `.so` against the same
//! prepared SQL issued with the sync `postgres` crate on the same number of
//! connections, in both modes.

use bext_locking_pg::Exported;
use bext_locking_pg::keyhash::advisory_key;
use postgres::{Client, NoTls, Statement};

use bext_locking_bench::measure::{Entry, Kind, Lap, PerThread, Settings, TTL_MS, Tally, measure};
use bext_locking_bench::plugin::{self, Pair};
use bext_locking_bench::report::{Report, table};

/// The server: `BEXT_PG_URL`, else the machine's test database.
fn server_url() -> String {
    bext_locking_test_support::pg_url()
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    bext_locking::redact::redact_url(url, bext_locking::redact::LoneUser::Name)
}

/// `url` with `synchronous_commit=off` for its sessions.
fn fast_commit(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20synchronous_commit%3Doff")
}

/// A client with a mode's statements prepared, as each pooled connection
/// of the plugin has them.
struct Raw {
    client: Client,
    statements: Vec<Statement>,
}

impl Raw {
    fn connect(url: &str, sql: &[String]) -> Result<Self, String> {
        let mut client = Client::connect(url, NoTls).map_err(|e| format!("connect: {e}"))?;
        let statements = sql
            .iter()
            .map(|q| client.prepare(q))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("prepare: {e}"))?;
        Ok(Self { client, statements })
    }

    /// Lease mode's acquire (returns the fence) and release.
    fn lease_pair(&mut self, key: &str) -> Result<(), String> {
        let id = uuid::Uuid::new_v4();
        let ttl = TTL_MS as i64;
        let row = self
            .client
            .query_opt(&self.statements[0], &[&key.as_bytes(), &id, &ttl, &None::<&str>])
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("unexpected contention on `{key}`"))?;
        let _fence: i64 = row.get(0);
        self.client
            .execute(&self.statements[2], &[&key.as_bytes(), &id])
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Advisory mode's try-lock and unlock on the key's 64-bit hash.
    fn advisory_pair(&mut self, hash: i64) -> Result<(), String> {
        let got: bool =
            self.client.query_one(&self.statements[0], &[&hash]).map_err(|e| e.to_string())?.get(0);
        if !got {
            return Err("unexpected contention".into());
        }
        let _: bool =
            self.client.query_one(&self.statements[1], &[&hash]).map_err(|e| e.to_string())?.get(0);
        Ok(())
    }
}

/// Drops the benchmark's schema when the section ends, however it ends.
struct Schema {
    url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&self.url, NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        }
    }
}

/// Runs the PostgreSQL section.
pub fn run(settings: &Settings, report: &mut Report) -> Result<(), String> {
    let url = server_url();
    let version = Client::connect(&url, NoTls)
        .and_then(|mut c| c.query_one("SHOW server_version", &[]))
        .map(|r| r.get::<_, String>(0))
        .map_err(|e| format!("PostgreSQL at {} is unreachable: {e}", redact(&url)))?;
    let lib = plugin::load("pg")?;
    let schema = Schema {
        url: url.clone(),
        name: format!("bext_bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    };
    let table_name = format!("\"{}\".\"bext_locks\"", schema.name);

    type Counts = Result<[f64; 3], String>;
    let mut all: Vec<(&str, Vec<Vec<Tally>>, Counts)> = Vec::new();
    for mode in ["lease", "advisory"] {
        // Lease commits would otherwise wait for the server's WAL flush,
        // which on a shared disk measures the disk; both sides skip it.
        let url = if mode == "lease" { fast_commit(&url) } else { url.clone() };
        let sql = if mode == "lease" {
            bext_locking_pg::sql::lease(&table_name)
        } else {
            bext_locking_pg::sql::advisory()
        };
        let mut groups = Vec::new();
        for threads in [1, 8] {
            let config = serde_json::json!({
                "url": url, "mode": mode, "schema": schema.name, "pool_size": threads,
            })
            .to_string();
            // The plugin creates the table; the raw clients prepare against it.
            let pair = Pair::create::<Exported>(&lib, &config)?;
            let raw = PerThread::new(threads, |_| Raw::connect(&url, &sql))?;
            let mut sides = pair.sides(&format!("bench/pg/{mode}/{threads}"));
            sides.push(Entry::new("raw postgres", Kind::Raw, |t, lap: &mut Lap| {
                let key = format!("bench/pg/{mode}/{threads}/raw/{t}");
                let hash = advisory_key(&key);
                raw.with(t, |r| {
                    if mode == "lease" {
                        lap.run(|| r.lease_pair(&key));
                    } else {
                        lap.run(|| r.advisory_pair(hash));
                    }
                });
            }));
            groups.push(measure(&format!("pg {mode}"), threads, &sides, settings));
        }
        eprintln!("  pg {mode}: counting instructions under callgrind");
        let counts = instructions(mode, &url, &schema.name, &table_name);
        all.push((mode, groups, counts));
    }
    drop(schema);

    let mut body = format!(
        "The machine's PostgreSQL {version} at `{}`, in a schema of the run's own. The plugin \
         gets `pool_size` = threads; the raw side is one sync `postgres` client per thread with \
         the plugin's own statements prepared (`bext_locking_pg::sql`). Lease rows run with \
         `synchronous_commit=off` on both sides, so that the figure measures the client and \
         the server rather than the disk's flush latency.\n",
        redact(&url)
    );
    for (mode, groups, counts) in &all {
        body.push_str(&format!("\n### {mode} mode\n\n"));
        let refs: Vec<&[Tally]> = groups.iter().map(Vec::as_slice).collect();
        body.push_str(&table(&refs, Kind::Raw, "threads"));
        match counts {
            Ok([native, so, raw]) => {
                body.push_str(&format!(
                    "\nClient instructions per pair under `valgrind --tool=callgrind`, one thread \
                     (the server's are not counted; the difference between runs of {} and {} \
                     pairs): in-process **{native:.0}**, through the `.so` **{so:.0}**, raw \
                     postgres **{raw:.0}**; the `.so` does **{:.0}** more than the raw client, \
                     of which the boundary is {:.0}.\n",
                    bext_locking_bench::callgrind::PAIRS.0,
                    bext_locking_bench::callgrind::PAIRS.1,
                    so - raw,
                    so - native
                ));
                let [b_native, b_so, b_raw] = before(mode);
                body.push_str(&format!(
                    "Before the backend's per-pair work was cut (commit 5eb58ae): in-process \
                     {b_native:.0}, `.so` {b_so:.0}, raw {b_raw:.0} ({:.3}x; now {:.3}x).{}\n",
                    b_so / b_raw,
                    so / raw,
                    if *mode == "advisory" {
                        " Of the in-process side's difference, about 3,400 are the SHA-256 of \
                         the key that names its advisory lock, which valgrind's CPU computes in \
                         software; the raw side hashes each thread's key once, before it starts."
                    } else {
                        ""
                    }
                ));
                report.target(
                    "pg",
                    format!("client instructions per pair, `.so` / raw postgres, {mode}, 1 thread (callgrind)"),
                    "-",
                    format!("{:.3}x ({so:.0} vs {raw:.0}; in-process {native:.0})", so / raw),
                    bext_locking_bench::report::Verdict::Info,
                    "deterministic; the server's work, the same for both, is not in it",
                );
            }
            Err(e) => body.push_str(&format!("\nInstruction counts not measured: {e}.\n")),
        }
        for (g, threads) in groups.iter().zip([1, 8]) {
            report.chart_group(format!("pg {mode}, {threads} thread(s)"), g, Kind::Raw, Some(0.95));
            report.so_vs_raw_target(
                "pg",
                format!("`.so` / postgres crate, {mode}, {threads} thread(s)"),
                g,
                0.95,
                if *mode == "lease" {
                    "a pool checkout, a deadline on every statement and the C boundary's JSON (the in-process row shows which part is the boundary)"
                } else {
                    "a pool checkout, a deadline on every statement, the TTL bookkeeping of held locks and the C boundary's JSON (the in-process row shows which part is the boundary)"
                },
            );
        }
    }
    report.section("pg", body);
    Ok(())
}

/// Client instructions per pair (in-process, `.so`, raw) of the code before
/// the backend's per-pair work over the raw client was cut (commit
/// 5eb58ae), measured with this section's own callgrind worker.
fn before(mode: &str) -> [f64; 3] {
    if mode == "lease" { [31914.0, 38734.0, 27181.0] } else { [38276.0, 45173.0, 27253.0] }
}

/// Client instructions per pair of each side (in-process, `.so`, raw).
fn instructions(mode: &str, url: &str, schema: &str, table: &str) -> Result<[f64; 3], String> {
    let mut out = [0.0; 3];
    for (slot, side) in out.iter_mut().zip(["in-process", "so", "raw"]) {
        *slot = bext_locking_bench::callgrind::per_pair(|n| {
            [&"callgrind-worker", &side, &mode, &n.to_string().as_str(), &url, &schema, &table]
                .iter()
                .map(|s| s.to_string())
                .collect()
        })?;
    }
    Ok(out)
}

/// Under callgrind: `pairs` pairs on one key through `side`.
fn callgrind_worker(args: &[String]) -> Result<(), String> {
    let [side, mode, pairs, url, schema, table] = args else {
        return Err("usage: callgrind-worker SIDE MODE PAIRS URL SCHEMA TABLE".into());
    };
    let pairs: u64 = pairs.parse().map_err(|_| "PAIRS")?;
    let config = serde_json::json!({ "url": url, "mode": mode, "schema": schema, "pool_size": 1 })
        .to_string();
    let key = format!("bench/pg/callgrind/{mode}");
    let mut pair: Box<dyn FnMut() -> Result<(), String>> = match side.as_str() {
        "so" => {
            let p = plugin::load("pg")?.create(&config)?;
            let key = key.clone();
            Box::new(move || plugin::pair(&*p, &key))
        }
        "in-process" => {
            let p = plugin::in_process::<Exported>(&config)?;
            let key = key.clone();
            Box::new(move || plugin::pair(&*p, &key))
        }
        _ => {
            let sql = if mode == "lease" {
                bext_locking_pg::sql::lease(table)
            } else {
                bext_locking_pg::sql::advisory()
            };
            let mut raw = Raw::connect(url, &sql)?;
            let lease = mode == "lease";
            let hash = advisory_key(&key);
            let key = key.clone();
            Box::new(move || if lease { raw.lease_pair(&key) } else { raw.advisory_pair(hash) })
        }
    };
    for _ in 0..pairs {
        pair()?;
    }
    Ok(())
}

/// For `strace -f -c` and `perf`: `pairs` pairs on each of `threads`
/// threads (each on its own key) through `side`, as the measured groups
/// run them; prints nothing, so the tools' counts are the output.
fn threads_worker(args: &[String]) -> Result<(), String> {
    let [side, mode, threads, pairs, url, schema, table] = args else {
        return Err("usage: threads-worker SIDE MODE THREADS PAIRS URL SCHEMA TABLE".into());
    };
    let threads: usize = threads.parse().map_err(|_| "THREADS")?;
    let pairs: u64 = pairs.parse().map_err(|_| "PAIRS")?;
    let config = serde_json::json!({
        "url": url, "mode": mode, "schema": schema, "pool_size": threads,
    })
    .to_string();
    let key = |t: usize| format!("bench/pg/threads/{mode}/{t}");
    let run_all = |pair: &(dyn Fn(usize) -> Result<(), String> + Sync)| {
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| s.spawn(move || (0..pairs).try_for_each(|_| pair(t))))
                .collect();
            workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|_| Err("panic".into())))
        })
    };
    match side.as_str() {
        "so" | "in-process" => {
            let p = if side == "so" {
                plugin::load("pg")?.create(&config)?
            } else {
                plugin::in_process::<Exported>(&config)?
            };
            run_all(&|t| plugin::pair(&*p, &key(t)))
        }
        _ => {
            let sql = if mode == "lease" {
                bext_locking_pg::sql::lease(table)
            } else {
                bext_locking_pg::sql::advisory()
            };
            let raw = PerThread::new(threads, |_| Raw::connect(url, &sql))?;
            let lease = mode == "lease";
            run_all(&|t| {
                let k = key(t);
                raw.with(t, |r| {
                    if lease { r.lease_pair(&k) } else { r.advisory_pair(advisory_key(&k)) }
                })
            })
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("threads-worker") {
        if let Err(e) = threads_worker(&args[1..]) {
            eprintln!("bext-bench-pg threads-worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("callgrind-worker") {
        if let Err(e) = callgrind_worker(&args[1..]) {
            eprintln!("bext-bench-pg callgrind-worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    bext_locking_bench::section_main("pg", run);
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(super::redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact("postgres://root@h/db"), "postgres://root@h/db");
    }
}
