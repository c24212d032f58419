//! `bext-lock-hammer`: one process of a cross-process lock test.
//!
//! ```text
//! bext-lock-hammer run  --plugin PATH --config JSON --key KEY --ttl-ms N --duration-ms N
//!                       [--threads T] [--hold-us U] --out FILE
//! bext-lock-hammer hold --plugin PATH --config JSON --key KEY --ttl-ms N [--renew-every-ms M]
//! ```
//! `run` loops try_lock / hold / release and appends a JSON line per holding
//! interval to FILE, then prints a JSON summary. `hold` acquires (retrying for
//! up to 10 s), prints `ACQUIRED <handle json>`, and then waits to be killed,
//! renewing every M ms if asked (printing `RENEW_FAILED <why>` and exiting 3
//! when a renew fails).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bext_locking::LockingPlugin;
use bext_locking_test_support::hammer::{Record, Summary, monotonic_ns};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let mut opts = HashMap::new();
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        opts.insert(flag.trim_start_matches("--").to_owned(), value);
    }
    let get = |k: &str| opts.get(k).cloned().unwrap_or_else(|| fail(&format!("--{k} is required")));
    let num = |k: &str, d: u64| {
        opts.get(k)
            .map_or(d, |v| v.parse().unwrap_or_else(|_| fail(&format!("--{k}: not a number"))))
    };
    let plugin = bext_locking_loader::load(get("plugin")).unwrap_or_else(|e| fail(&e.to_string()));
    let config = opts.get("config").cloned().unwrap_or_else(|| "{}".into());
    let key = get("key");
    let ttl = num("ttl-ms", 5_000);
    match mode.as_str() {
        "run" => {
            let threads = num("threads", 1) as u32;
            let out = get("out");
            let deadline = Instant::now() + Duration::from_millis(num("duration-ms", 2_000));
            let hold = Duration::from_micros(num("hold-us", 500));
            let file = Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&out)
                    .unwrap_or_else(|e| fail(&format!("{out}: {e}"))),
            );
            let summary = Mutex::new(Summary::default());
            std::thread::scope(|s| {
                for thread in 0..threads {
                    let instance = plugin.create(&config).unwrap_or_else(|e| fail(&e));
                    let (key, file, summary) = (&key, &file, &summary);
                    s.spawn(move || {
                        hammer(&*instance, key, ttl, hold, deadline, thread, file, summary)
                    });
                }
            });
            println!("{}", serde_json::to_string(&summary.into_inner().unwrap()).unwrap());
        }
        "hold" => {
            let instance = plugin.create(&config).unwrap_or_else(|e| fail(&e));
            let give_up = Instant::now() + Duration::from_secs(10);
            let handle = loop {
                match instance.try_lock(&key, ttl) {
                    Ok(Some(h)) => break h,
                    Ok(None) if Instant::now() < give_up => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(None) => fail("could not acquire within 10 s"),
                    Err(e) => fail(&e),
                }
            };
            println!("ACQUIRED {}", serde_json::to_string(&handle).unwrap());
            std::io::stdout().flush().ok();
            let every = opts.get("renew-every-ms").map(|v| {
                v.parse::<u64>().unwrap_or_else(|_| fail("--renew-every-ms: not a number"))
            });
            loop {
                std::thread::sleep(Duration::from_millis(every.unwrap_or(3_600_000)));
                if every.is_some() {
                    if let Err(e) = instance.renew(&handle) {
                        println!("RENEW_FAILED {e}");
                        std::io::stdout().flush().ok();
                        std::process::exit(3);
                    }
                }
            }
        }
        _ => fail("usage: bext-lock-hammer run|hold --plugin PATH --key KEY ..."),
    }
}

#[allow(clippy::too_many_arguments)]
fn hammer(
    p: &dyn LockingPlugin,
    key: &str,
    ttl: u64,
    hold: Duration,
    deadline: Instant,
    thread: u32,
    file: &Mutex<std::fs::File>,
    summary: &Mutex<Summary>,
) {
    let pid = std::process::id();
    let mut lines = String::new();
    let mut mine = Summary::default();
    while Instant::now() < deadline {
        match p.try_lock(key, ttl) {
            Ok(Some(h)) => {
                let start_ns = monotonic_ns();
                std::thread::sleep(hold);
                let end_ns = monotonic_ns();
                let record = Record { pid, thread, start_ns, end_ns, fence: h.fence };
                lines.push_str(&serde_json::to_string(&record).unwrap());
                lines.push('\n');
                mine.acquired += 1;
                if let Err(e) = p.release(h) {
                    mine.errors += 1;
                    mine.first_error.get_or_insert(format!("release: {e}"));
                }
            }
            Ok(None) => {
                mine.contended += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => {
                mine.errors += 1;
                mine.first_error.get_or_insert(format!("try_lock: {e}"));
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    file.lock().unwrap().write_all(lines.as_bytes()).expect("write records");
    let mut total = summary.lock().unwrap();
    total.acquired += mine.acquired;
    total.contended += mine.contended;
    total.errors += mine.errors;
    if total.first_error.is_none() {
        total.first_error = mine.first_error;
    }
}

fn fail(message: &str) -> ! {
    eprintln!("bext-lock-hammer: {message}");
    std::process::exit(2);
}
