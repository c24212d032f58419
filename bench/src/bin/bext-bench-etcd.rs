//! etcd backend: pairs through the `.so` against the same four
//! requests (lease grant, create-if-absent transaction, compare-and-delete
//! transaction, lease revoke) sent as plain HTTP calls to etcd's JSON
//! gateway.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bext_locking_etcd::Exported;
use bext_locking_test_support::servers::etcd::Cluster;
use serde_json::{Value, json};

use bext_locking_bench::measure::{Entry, Kind, Lap, Settings, TTL_MS, Tally, measure};
use bext_locking_bench::plugin::{self, Pair};
use bext_locking_bench::report::{Report, table};

/// The gateway's calls with nothing around them: one `ureq` agent (pooled
/// keep-alive connections, one per thread in flight), JSON in and out.
struct Raw {
    agent: ureq::Agent,
    base: String,
}

impl Raw {
    fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_idle_connections(64)
            .max_idle_connections_per_host(32)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        Self { agent, base: base.to_owned() }
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body.to_string())
            .map_err(|e| format!("{path}: {e}"))?;
        let status = r.status();
        let text = r.body_mut().read_to_string().map_err(|e| format!("{path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{path}: HTTP {}: {text}", status.as_u16()));
        }
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
    }

    /// One acquire+release, the plugin's four requests.
    fn pair(&self, key: &[u8]) -> Result<(), String> {
        let k = B64.encode(key);
        let ttl_s = bext_locking_etcd::lease_seconds(TTL_MS);
        let grant = self.post("/v3/lease/grant", &json!({ "TTL": ttl_s.to_string() }))?;
        let lease = int(&grant["ID"]);
        let id = uuid::Uuid::new_v4().to_string();
        let v = B64.encode(id.as_bytes());
        let put = self.post(
            "/v3/kv/txn",
            &json!({
                "compare": [{ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
                "success": [{ "request_put": { "key": k, "value": v, "lease": lease.to_string() } }],
                "failure": [{ "request_range": { "key": k } }],
            }),
        )?;
        if put["succeeded"] != Value::Bool(true) || int(&put["header"]["revision"]) <= 0 {
            return Err("unexpected contention".into());
        }
        let del = self.post(
            "/v3/kv/txn",
            &json!({
                "compare": [{ "key": k, "target": "VALUE", "result": "EQUAL", "value": v }],
                "success": [{ "request_delete_range": { "key": k, "prev_kv": true } }],
            }),
        )?;
        if del["succeeded"] != Value::Bool(true) {
            return Err("the key was not ours at release".into());
        }
        let prev_lease = int(&del["responses"][0]["response_delete_range"]["prev_kvs"][0]["lease"]);
        self.post("/v3/lease/revoke", &json!({ "ID": prev_lease.to_string() }))?;
        Ok(())
    }
}

/// An int64 as proto3 JSON writes it (a string; absent when 0).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// Runs the etcd section.
pub fn run(settings: &Settings, report: &mut Report) -> Result<(), String> {
    if !std::path::Path::new("/usr/bin/etcd").exists() {
        return Err(
            "/usr/bin/etcd is missing (apt-get install etcd-server; make bench does it)".into()
        );
    }
    let version = bext_locking_bench::machine::version_of("/usr/bin/etcd", &["--version"]);
    let lib = plugin::load("etcd")?;
    let cluster = Cluster::single();
    let endpoint = cluster.endpoints()[0].clone();
    let raw = Raw::new(&endpoint);
    let config = json!({ "endpoints": [endpoint], "key_prefix": "bench/" }).to_string();
    let pair = Pair::create::<Exported>(&lib, &config)?;
    let mut groups = Vec::new();
    for threads in [1, 8] {
        let mut sides = pair.sides(&format!("{threads}"));
        sides.push(Entry::new("raw HTTP (ureq)", Kind::Raw, |t, lap: &mut Lap| {
            let key = format!("bench/{threads}/raw/{t}");
            lap.run(|| raw.pair(key.as_bytes()));
        }));
        // An etcd pair is milliseconds: give each side more time so that
        // the p99 rests on enough samples.
        let s = Settings { secs: settings.secs * 1.5, rounds: settings.rounds };
        groups.push(measure("etcd", threads, &sides, &s));
    }
    drop(pair);
    drop(cluster);

    let mut body = format!(
        "One throwaway etcd member ({version}) with its data on tmpfs. The raw side sends the \
         plugin's four requests (lease grant, create-if-absent transaction, compare-and-delete \
         transaction with `prev_kv`, lease revoke) as plain HTTP/1.1 calls through one `ureq` \
         agent, without the plugin's deadlines, failover or error sorting. Every pair is four \
         Raft proposals, so the boundary's microseconds vanish in the milliseconds.\n\n"
    );
    let refs: Vec<&[Tally]> = groups.iter().map(Vec::as_slice).collect();
    body.push_str(&table(&refs, Kind::Raw, "threads"));
    for (g, threads) in groups.iter().zip([1, 8]) {
        report.chart_group(format!("etcd, {threads} thread(s)"), g, Kind::Raw, Some(0.9));
        report.so_vs_raw_target(
            "etcd",
            format!("`.so` / direct gateway calls, {threads} thread(s)"),
            g,
            0.9,
            "the C boundary's JSON, per-call deadlines, failover and error sorting, next to four Raft proposals",
        );
    }
    report.section("etcd", body);
    Ok(())
}

fn main() {
    bext_locking_bench::section_main("etcd", run);
}
