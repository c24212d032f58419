//! Redis Cluster: the single-node scripts, routed by the driver to the
//! master that owns the key's hash slot.
//!
//! A lock key and its fence counter share a hash tag (see [`crate::keys`]),
//! so each script touches one slot and runs unchanged. The driver follows
//! `MOVED`/`ASK` redirections and refreshes its slot map; each pooled
//! cluster connection holds one socket per master.

use std::time::{Duration, Instant};

use bext_locking::redact::Secrets;
use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{ConnectionLike, ErrorKind, Value};

use crate::node::{Invocation, remaining};
use crate::redact::{Voice, redact_url};
use bext_locking_kit::pool::Pool;

/// Retries the driver may spend on redirections and reconnects within one
/// call. Each is bounded by the socket timeouts.
const RETRIES: u32 = 2;

/// One cluster.
pub struct Cluster {
    client: ClusterClient,
    pool: Pool<ClusterConnection>,
    voice: Voice,
    per_try: Duration,
    /// One client per seed URL, for waiters' subscriptions: in a cluster a
    /// `PUBLISH` reaches every node, so any seed that answers will do.
    seeds: Vec<redis::Client>,
}

impl Cluster {
    /// A cluster reached through `urls` (already checked). Opens nothing yet.
    pub fn new(
        urls: &[String],
        pool_size: usize,
        connect_timeout: Duration,
        op_timeout: Duration,
        secrets: Secrets,
    ) -> Result<Self, String> {
        let label = format!(
            "cluster [{}]",
            urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>().join(", ")
        );
        let voice = Voice::new(label, secrets);
        // Split the call's budget over the attempts the driver may make, so
        // a hung master costs about one op_timeout in all.
        let per_try = op_timeout / (RETRIES + 1);
        let client = ClusterClient::builder(urls.to_vec())
            .connection_timeout(connect_timeout.min(per_try))
            .response_timeout(per_try)
            .retries(RETRIES)
            .min_retry_wait(5)
            .max_retry_wait(50)
            .build()
            .map_err(|e| voice.message(&format!("bad config: {e}")))?;
        let seeds = urls
            .iter()
            .map(|u| redis::Client::open(u.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| voice.message(&format!("bad URL: {e}")))?;
        Ok(Self { client, pool: Pool::new(pool_size), voice, per_try, seeds })
    }

    /// Clients for the seed nodes, tried in turn by a waiter's subscription.
    pub fn seeds(&self) -> Vec<redis::Client> {
        self.seeds.clone()
    }

    /// Drops idle connections and refuses new calls.
    pub fn close(&self) {
        drop(self.pool.close());
    }

    /// Runs one script call on the master owning its keys' slot.
    pub fn call(&self, inv: &Invocation<'_>, deadline: Instant) -> Result<Value, String> {
        let mut lease =
            self.pool.lease(deadline).map_err(|e| self.voice.message(&e.to_string()))?;
        if lease.conn.is_none() {
            if remaining(deadline).is_none() {
                return Err(self.voice.message("no time left to connect before the deadline"));
            }
            let conn = self.client.get_connection().map_err(|e| {
                self.voice.message(&format!("cannot connect: {}", crate::redact::describe(&e)))
            })?;
            conn.set_write_timeout(Some(self.per_try)).map_err(|e| self.voice.error(&e))?;
            lease.conn = Some(conn);
        }
        let conn = lease.conn.as_mut().expect("connected above");
        let reply = conn.req_packed_command(&inv.packed(true)).and_then(Value::extract_error);
        let reply = match reply {
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                conn.req_packed_command(&inv.packed(false)).and_then(Value::extract_error)
            }
            other => other,
        };
        reply.map_err(|e| {
            // The driver's state after a failure is unknown: start afresh.
            lease.conn = None;
            self.voice.error(&e)
        })
    }
}
