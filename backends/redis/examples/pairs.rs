//! A fixed number of acquire+release pairs on one server, through the `.so`,
//! in-process or with the raw `redis` crate, for counting what one pair
//! costs the client: run it under `valgrind --tool=callgrind` (instructions),
//! `strace -f -c` (system calls) or `perf stat` with two pair counts and take
//! the difference, so start-up and connecting cancel out.
//!
//! ```text
//! [PAIRS_THREADS=8] pairs <side> <pairs> <redis url> [plugin .so]
//! ```
//!
//! Sides: `so`, `so-unfenced` (through the `.so`, as a host calls it: with
//! the host's default owner), `inproc`, `inproc-unfenced` (the backend linked
//! in, the same owner), `raw` (`SET NX PX` + compare-and-delete, the
//! benchmark's baseline) and `raw-fenced` (the plugin's fenced script + its
//! compare-and-delete, by hand).

use std::time::{Duration, Instant};

use bext_locking::LockAdmin;
use bext_locking_redis::RedisPlugin;
use bext_locking_redis::scripts::{ACQUIRE_FENCED, RELEASE};

const TTL_MS: u64 = 30_000;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: pairs <side> <pairs> <redis url> [plugin .so]".into());
    }
    let (side, n, url) = (args[1].as_str(), args[2].parse::<u64>(), args[3].as_str());
    let n = n.map_err(|e| format!("pairs: {e}"))?;
    let threads: usize =
        std::env::var("PAIRS_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1).max(1);
    let config = |fencing: bool| {
        serde_json::json!({ "url": url, "pool_size": threads, "fencing": fencing }).to_string()
    };
    let started = Instant::now();
    match side {
        "so" | "so-unfenced" => {
            let path = args.get(4).ok_or("the .so's path is needed")?;
            let lib = bext_locking_loader::load(path).map_err(|e| e.to_string())?;
            let p = lib.create_ffi(&config(side == "so"))?;
            on_threads(threads, |t| plugin_pairs(&p, &format!("pairs/so/{t}"), n))?;
        }
        "inproc" | "inproc-unfenced" => {
            let p = RedisPlugin::from_json(&config(side == "inproc")).map_err(|e| e.message)?;
            on_threads(threads, |t| plugin_pairs(&p, &format!("pairs/inproc/{t}"), n))?;
        }
        "raw" | "raw-fenced" | "raw-timeouts" => {
            on_threads(threads, |t| raw_pairs(side, url, t, n))?
        }
        other => return Err(format!("unknown side `{other}`")),
    }
    let per = started.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
    eprintln!("{side}: {n} pairs on each of {threads} thread(s), {per:.1} µs per pair");
    Ok(())
}

/// Runs `body(t)` on `threads` threads at once; the first error, if any.
fn on_threads(
    threads: usize,
    body: impl Fn(usize) -> Result<(), String> + Sync,
) -> Result<(), String> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn({
                    let body = &body;
                    move || body(t)
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or(Err("a worker panicked".into())))
    })
}

/// `n` pairs through a plugin, as a host calls it: with its default owner.
fn plugin_pairs(p: &dyn LockAdmin, key: &str, n: u64) -> Result<(), String> {
    let owner = bext_locking_loader::default_owner();
    for _ in 0..n {
        let h = p.try_lock_as(key, TTL_MS, Some(owner)).map_err(|e| e.message)?;
        p.release(h.ok_or("contention")?)?;
    }
    Ok(())
}

/// `n` pairs with the raw crate on a connection of this thread's own.
fn raw_pairs(side: &str, url: &str, t: usize, n: u64) -> Result<(), String> {
    let mut c = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    if side == "raw-timeouts" {
        // What the plugin's connections carry: socket deadlines.
        c.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        c.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    }
    let release = redis::Script::new(RELEASE.source);
    let acquire = redis::Script::new(ACQUIRE_FENCED.source);
    let owner = bext_locking_loader::default_owner();
    let keys = [format!("pairs:{t}"), format!("pairs:{t}:fence"), format!("pairs:{t}:info")];
    let err = |e: redis::RedisError| e.to_string();
    for _ in 0..n {
        let token = uuid::Uuid::new_v4().to_string();
        let deleted: i64 = if side != "raw-fenced" {
            let ok: Option<String> = redis::cmd("SET")
                .arg(&keys[0])
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(TTL_MS)
                .query(&mut c)
                .map_err(err)?;
            ok.ok_or("contention")?;
            release.key(&keys[0]).arg(&token).invoke(&mut c).map_err(err)?
        } else {
            let f: Option<i64> = acquire
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(&token)
                .arg(TTL_MS)
                .arg(owner)
                .invoke(&mut c)
                .map_err(err)?;
            f.ok_or("contention")?;
            release.key(&keys[0]).key(&keys[2]).arg(&token).invoke(&mut c).map_err(err)?
        };
        (deleted == 1).then_some(()).ok_or("nothing deleted")?;
    }
    Ok(())
}
