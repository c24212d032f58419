//! Locks from async (tokio) code.
//!
//! Every `LockingPlugin` call blocks its thread for a backend round trip
//! (microseconds for memory, tens of microseconds for Redis on loopback,
//! milliseconds for etcd, up to a backend's timeouts when a server hangs),
//! and `LockGuard` keeps two threads of its own. On a tokio runtime:
//!
//! * run each call with `tokio::task::spawn_blocking`, as the helpers below
//!   do: it costs a few microseconds per call, measured in docs/BENCHMARKS.md
//!   (section "async");
//! * run a guarded job as an async task and learn of a loss through
//!   `LockGuard::on_lost`, which here completes a tokio oneshot the job
//!   selects on;
//! * never call the plugin directly on a runtime thread: a hanging server
//!   would stall every task on that worker.
//!
//! ```sh
//! cargo build -p bext-locking-memory
//! cargo run --example tokio -- target/debug/libbext_locking_memory.so
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use bext_locking::{LockGuard, LockHandle, LockLost, LockingPlugin};
use tokio::sync::oneshot;

/// `try_lock` without blocking the runtime: `Ok(None)` is contention.
async fn try_lock(
    locks: &Arc<dyn LockingPlugin>,
    key: &str,
    ttl_ms: u64,
) -> Result<Option<LockHandle>, String> {
    let (locks, key) = (Arc::clone(locks), key.to_owned());
    tokio::task::spawn_blocking(move || locks.try_lock(&key, ttl_ms))
        .await
        .map_err(|e| format!("try_lock task failed: {e}"))?
}

/// `release` without blocking the runtime.
async fn release(locks: &Arc<dyn LockingPlugin>, handle: LockHandle) -> Result<(), String> {
    let locks = Arc::clone(locks);
    tokio::task::spawn_blocking(move || locks.release(handle))
        .await
        .map_err(|e| format!("release task failed: {e}"))?
}

/// A guarded lock (renewed in the background) and a future that completes
/// when it is lost, at the latest the guard's stop margin before the lease
/// can end.
async fn acquire_guarded(
    locks: &Arc<dyn LockingPlugin>,
    key: &str,
    ttl: Duration,
) -> Result<Option<(LockGuard, oneshot::Receiver<LockLost>)>, String> {
    let (locks, key) = (Arc::clone(locks), key.to_owned());
    let guard = tokio::task::spawn_blocking(move || LockGuard::acquire(&locks, &key, ttl))
        .await
        .map_err(|e| format!("acquire task failed: {e}"))??;
    Ok(guard.map(|guard| {
        let (tx, rx) = oneshot::channel();
        guard.on_lost(move |lost| {
            let _ = tx.send(lost.clone());
        });
        (guard, rx)
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/usr/local/lib/bext-locking/libbext_locking_memory.so".to_owned());
    let plugin = bext_locking_loader::load(&path)?;
    let locks: Arc<dyn LockingPlugin> = Arc::from(plugin.create("{}")?);

    // Many tasks race for one key: exactly one wins, the others see
    // contention (not an error).
    let mut tasks = Vec::new();
    for task in 0..4 {
        let locks = Arc::clone(&locks);
        tasks.push(tokio::spawn(async move {
            match try_lock(&locks, "examples/tokio", 30_000).await? {
                Some(handle) => {
                    tokio::time::sleep(Duration::from_millis(50)).await; // the work
                    release(&locks, handle).await?;
                    Ok::<_, String>(Some(task))
                }
                None => Ok(None),
            }
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        if let Some(task) = t.await?? {
            winners.push(task);
        }
    }
    println!("tasks that held examples/tokio: {winners:?} (exactly one)");

    // A longer job under the guard: it stops as soon as the lock is lost.
    if let Some((guard, lost)) =
        acquire_guarded(&locks, "examples/tokio-job", Duration::from_secs(3)).await?
    {
        let fence = guard.fence();
        let job = async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            () = job => println!("job done under the lock (fence {fence:?})"),
            Ok(lost) = lost => println!("stopped: {lost}"),
        }
        tokio::task::spawn_blocking(move || guard.release()).await?.map_err(|e| e.to_string())?;
    }

    tokio::task::spawn_blocking(move || locks.cleanup()).await?;
    Ok(())
}
