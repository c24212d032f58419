//! A fixed number of acquire+release pairs on one server, through the `.so`,
//! in-process or with the raw `redis` crate, for counting what one pair
//! costs the client: run it under `valgrind --tool=callgrind` (instructions),
//! `strace -f -c` (system calls) or `perf stat` with two pair counts and take
//! the difference, so start-up and connecting cancel out.
//!
//! ```text
//! pairs <side> <pairs> <redis url> [plugin .so]
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
    let owner = bext_locking_loader::default_owner();
    let config = |fencing: bool| {
        serde_json::json!({ "url": url, "pool_size": 1, "fencing": fencing }).to_string()
    };
    let started = Instant::now();
    match side {
        "so" | "so-unfenced" => {
            let path = args.get(4).ok_or("the .so's path is needed")?;
            let lib = bext_locking_loader::load(path).map_err(|e| e.to_string())?;
            let p = lib.create_ffi(&config(side == "so"))?;
            for _ in 0..n {
                let h = p
                    .try_lock_as("pairs/so", TTL_MS, Some(owner))
                    .map_err(|e| e.message)?
                    .ok_or("contention")?;
                bext_locking::LockingPlugin::release(&p, h)?;
            }
        }
        "inproc" | "inproc-unfenced" => {
            let p = RedisPlugin::from_json(&config(side == "inproc")).map_err(|e| e.message)?;
            for _ in 0..n {
                let h = p
                    .try_lock_as("pairs/inproc", TTL_MS, Some(owner))
                    .map_err(|e| e.message)?
                    .ok_or("contention")?;
                p.release_typed(&h).map_err(|e| e.message)?;
            }
        }
        "raw" | "raw-fenced" => {
            let mut c = redis::Client::open(url)
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            let release = redis::Script::new(RELEASE.source);
            let acquire = redis::Script::new(ACQUIRE_FENCED.source);
            for _ in 0..n {
                let token = uuid::Uuid::new_v4().to_string();
                if side == "raw" {
                    let ok: Option<String> = redis::cmd("SET")
                        .arg("pairs:raw")
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(TTL_MS)
                        .query(&mut c)
                        .map_err(|e| e.to_string())?;
                    ok.ok_or("contention")?;
                    let d: i64 = release
                        .key("pairs:raw")
                        .arg(&token)
                        .invoke(&mut c)
                        .map_err(|e| e.to_string())?;
                    (d == 1).then_some(()).ok_or("nothing deleted")?;
                } else {
                    let keys = ["pairs:f", "pairs:f:fence", "pairs:f:info"];
                    let f: Option<i64> = acquire
                        .key(keys[0])
                        .key(keys[1])
                        .key(keys[2])
                        .arg(&token)
                        .arg(TTL_MS)
                        .arg(owner)
                        .invoke(&mut c)
                        .map_err(|e| e.to_string())?;
                    f.ok_or("contention")?;
                    let d: i64 = release
                        .key(keys[0])
                        .key(keys[2])
                        .arg(&token)
                        .invoke(&mut c)
                        .map_err(|e| e.to_string())?;
                    (d == 1).then_some(()).ok_or("nothing deleted")?;
                }
            }
        }
        other => return Err(format!("unknown side `{other}`")),
    }
    let per = started.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
    eprintln!("{side}: {n} pairs, {per:.1} µs per pair");
    Ok(())
}
