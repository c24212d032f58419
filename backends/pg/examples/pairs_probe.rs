//! Does exactly N acquire+release pairs one way, for counting instructions
//! per pair with callgrind (repeatable, unlike timings on a shared machine):
//!
//! ```text
//! cargo build --release -p bext-locking-pg --example pairs_probe
//! for n in 500 1500; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
//!     target/release/examples/pairs_probe so advisory $n
//! done
//! # instructions per pair = (total at 1500 - total at 500) / 1000
//! ```
//!
//! Ways: `direct` (the sync `postgres` crate, the same prepared SQL),
//! `inproc` (the linked-in crate), `so` (the `.so` next to the example's
//! folder, through the loader). Modes: `lease`, `advisory`. The server is
//! `BEXT_PG_URL` (default: the local test database).

use bext_locking::LockingPlugin;
use postgres::{Client, NoTls};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [way, mode, n] = &args[..] else {
        eprintln!("usage: pairs_probe direct|inproc|so lease|advisory N");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N is a number");
    let base = bext_locking_test_support::pg_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20synchronous_commit%3Doff");
    let schema = "bext_pairs_probe";
    let config =
        serde_json::json!({"url": url, "mode": mode, "schema": schema, "pool_size": 1}).to_string();
    let key = format!("probe/{way}");
    // Makes the table, so that the direct way finds it too.
    let setup = bext_locking_pg::PgPlugin::from_json(&config).unwrap();
    match way.as_str() {
        "so" | "inproc" => {
            let loaded;
            let p: Box<dyn LockingPlugin> = if way == "so" {
                let exe = std::env::current_exe().unwrap();
                let so = exe.parent().unwrap().parent().unwrap().join("libbext_locking_pg.so");
                loaded = bext_locking_loader::load(so).unwrap();
                loaded.create(&config).unwrap()
            } else {
                Box::new(setup)
            };
            for _ in 0..n {
                let h = p.try_lock(&key, 30_000).unwrap().expect("uncontended");
                p.release(h).unwrap();
            }
        }
        "direct" => {
            let mut c = Client::connect(&url, NoTls).unwrap();
            let sql = match mode.as_str() {
                "lease" => bext_locking_pg::sql::lease(&format!("\"{schema}\".\"bext_locks\"")),
                _ => bext_locking_pg::sql::advisory(),
            };
            let st: Vec<_> = sql.iter().map(|q| c.prepare(q).unwrap()).collect();
            let hash = bext_locking_pg::keyhash::advisory_key(&key);
            let ttl = 30_000i64;
            for _ in 0..n {
                if mode == "lease" {
                    let id = uuid::Uuid::new_v4();
                    let row =
                        c.query_opt(&st[0], &[&key.as_bytes(), &id, &ttl, &None::<&str>]).unwrap();
                    let _fence: i64 = row.expect("uncontended").get(0);
                    c.execute(&st[2], &[&key.as_bytes(), &id]).unwrap();
                } else {
                    let got: bool = c.query_one(&st[0], &[&hash]).unwrap().get(0);
                    assert!(got, "uncontended");
                    let _: bool = c.query_one(&st[1], &[&hash]).unwrap().get(0);
                }
            }
        }
        other => panic!("unknown way {other}"),
    }
}
