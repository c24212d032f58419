//! nats backend: pairs through the `.so` against the same five JetStream
//! requests (put the lease, create the lock entry with an expected
//! revision of 0, read the entry back from the leader, delete the lease,
//! delete the entry's message by its sequence) sent with `async-nats`
//! directly.

use std::time::Duration;

use async_nats::jetstream::kv::Store;
use bext_locking_nats::{Exported, bucket_stream};
use bext_locking_test_support::servers::nats::{Cluster, NATS_SERVER};
use bytes::Bytes;
use serde_json::json;

use bext_locking_bench::measure::{Entry, Kind, Lap, Settings, TTL_MS, Tally, measure};
use bext_locking_bench::plugin::{self, Pair};
use bext_locking_bench::report::{Report, table};

/// The client with nothing around it: one connection, the two buckets
/// opened once, one runtime with one worker (as in the plugin), and a
/// whole pair inside one `block_on`.
struct Raw {
    rt: tokio::runtime::Runtime,
    locks: Store,
    leases: Store,
}

async fn store(js: &async_nats::jetstream::Context, name: &str, max_age: Duration) -> Store {
    let stream = js.get_or_create_stream(bucket_stream(name, max_age, 1)).await.expect("bucket");
    Store {
        name: name.to_owned(),
        stream_name: format!("KV_{name}"),
        prefix: format!("$KV.{name}."),
        put_prefix: None,
        use_jetstream_prefix: false,
        stream,
    }
}

impl Raw {
    fn new(url: &str, prefix: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (locks, leases) = rt.block_on(async {
            let client = async_nats::connect(url).await.expect("connect");
            let js = async_nats::jetstream::new(client);
            let locks = store(&js, prefix, Duration::ZERO).await;
            let leases =
                store(&js, &format!("{prefix}_ttl_{TTL_MS}"), Duration::from_millis(TTL_MS)).await;
            (locks, leases)
        });
        Self { rt, locks, leases }
    }

    /// One acquire+release, the plugin's five requests.
    fn pair(&self, key: &str) -> Result<(), String> {
        self.rt.block_on(async {
            let id = uuid::Uuid::new_v4().to_string();
            self.leases
                .put(&id, Bytes::copy_from_slice(key.as_bytes()))
                .await
                .map_err(|e| e.to_string())?;
            let value = json!({"id": id, "lease_ms": TTL_MS, "ttl_ms": TTL_MS}).to_string();
            self.locks.update(key, value.into(), 0).await.map_err(|e| e.to_string())?;
            let m = self
                .locks
                .stream
                .get_last_raw_message_by_subject(&format!("$KV.{}.{key}", self.locks.name))
                .await
                .map_err(|e| e.to_string())?;
            self.leases.delete(&id).await.map_err(|e| e.to_string())?;
            self.locks.stream.delete_message(m.sequence).await.map_err(|e| e.to_string())?;
            Ok(())
        })
    }
}

/// Runs the nats section.
pub fn run(settings: &Settings, report: &mut Report) -> Result<(), String> {
    if !std::path::Path::new(NATS_SERVER).exists() {
        return Err(format!("{NATS_SERVER} is missing (apt-get install nats-server)"));
    }
    let version = bext_locking_bench::machine::version_of(NATS_SERVER, &["--version"]);
    let lib = plugin::load("nats")?;
    let server = Cluster::start(1);
    let url = server.members[0].url();
    let config = json!({ "servers": [url], "bucket_prefix": "bench" }).to_string();
    let pair = Pair::create::<Exported>(&lib, &config)?;
    let raw = Raw::new(&url, "bench_raw");
    let mut groups = Vec::new();
    for threads in [1, 8] {
        let mut sides = pair.sides(&format!("{threads}"));
        sides.push(Entry::new("raw async-nats", Kind::Raw, |t, lap: &mut Lap| {
            let key = format!("raw-{threads}-{t}");
            lap.run(|| raw.pair(&key));
        }));
        groups.push(measure("nats", threads, &sides, settings));
    }
    drop(pair);
    drop(raw);
    drop(server);

    let mut body = format!(
        "One throwaway server ({version}) with JetStream's file store on tmpfs, buckets with one \
         replica. The raw side sends the plugin's five requests (put the lease, create the lock \
         entry conditioned on revision 0, read it back from the stream leader, delete the lease, \
         delete the entry's message by its sequence) with `async-nats` on a one-worker runtime, \
         the whole pair in one `block_on`, without the plugin's per-call budget, handle JSON or \
         error sorting.\n\n"
    );
    let refs: Vec<&[Tally]> = groups.iter().map(Vec::as_slice).collect();
    body.push_str(&table(&refs, Kind::Raw, "threads"));
    for (g, threads) in groups.iter().zip([1, 8]) {
        report.chart_group(format!("nats, {threads} thread(s)"), g, Kind::Raw, Some(0.95));
        report.so_vs_raw_target(
            "nats",
            format!("`.so` / raw async-nats, {threads} thread(s)"),
            g,
            0.95,
            "the C boundary's JSON, a timer per call and two `block_on`s per pair instead of one",
        );
    }
    report.section("nats", body);
    Ok(())
}

fn main() {
    bext_locking_bench::section_main("nats", run);
}
