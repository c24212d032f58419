//! Locks from async (tokio) code.
//!
//! Every `LockingPlugin` call blocks its thread for a backend round trip
//! (microseconds for memory, tens of microseconds for Redis on loopback,
//! milliseconds for etcd, up to a backend's timeouts when a server hangs),
//! and `LockGuard` keeps two threads of its own. On a tokio runtime:
//!
//! * run each call with `tokio::task::spawn_blocking`, as the helpers below
//!   do: each hand-off wakes a pool thread and then the task, which costs
//!   microseconds to a hundred or so per try_lock+release pair (measured by
//!   `make bench`, docs/BENCHMARKS.md, section "async"); put a whole short
//!   critical section in one blocking task when locks are hot;
//! * run a guarded job as an async task and learn of a loss through
//!   `LockGuard::on_lost`, which here sets a tokio `watch` flag the job
//!   checks between steps (or awaits with `changed()` in a `select!`);
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

use bext_locking::{LockGuard, LockHandle, LockingPlugin};
use tokio::sync::watch;

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

/// A guarded lock (renewed in the background) and a flag that turns true
/// when it is lost, at the latest the guard's stop margin before the lease
/// can end.
async fn acquire_guarded(
    locks: &Arc<dyn LockingPlugin>,
    key: &str,
    ttl: Duration,
) -> Result<Option<(LockGuard, watch::Receiver<bool>)>, String> {
    let (locks, key) = (Arc::clone(locks), key.to_owned());
    let guard = tokio::task::spawn_blocking(move || LockGuard::acquire(&locks, &key, ttl))
        .await
        .map_err(|e| format!("acquire task failed: {e}"))??;
    Ok(guard.map(|guard| {
        let (tx, rx) = watch::channel(false);
        guard.on_lost(move |_lost| {
            let _ = tx.send(true);
        });
        (guard, rx)
    }))
}

fn main() -> Result<(), Box<dyn Error>> {
    // What `#[tokio::main]` sets up.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/usr/local/lib/bext-locking/libbext_locking_memory.so".to_owned());
    let plugin = bext_locking_loader::load(&path)?;
    let locks: Arc<dyn LockingPlugin> = Arc::from(plugin.create("{}")?);

    // Many tasks race for one key: exactly one wins, the others see
    // contention (not an error). The barrier keeps the winner holding the
    // lock until every task has tried.
    let tasks_n = 4;
    let tried = Arc::new(tokio::sync::Barrier::new(tasks_n));
    let mut tasks = Vec::new();
    for task in 0..tasks_n {
        let (locks, tried) = (Arc::clone(&locks), Arc::clone(&tried));
        tasks.push(tokio::spawn(async move {
            let held = try_lock(&locks, "examples/tokio", 30_000).await?;
            tried.wait().await;
            match held {
                Some(handle) => {
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
    if winners.len() != 1 {
        return Err(
            format!("{} tasks held examples/tokio at once: {winners:?}", winners.len()).into()
        );
    }
    println!(
        "{tasks_n} tasks raced for examples/tokio: task {} held it, the others saw contention",
        winners[0]
    );

    // A longer job under the guard: it stops as soon as the lock is lost.
    let guarded = acquire_guarded(&locks, "examples/tokio-job", Duration::from_secs(3)).await?;
    if let Some((guard, lost)) = guarded {
        let fence = guard.fence(); // pass it to what the job writes
        let mut done = 0;
        for _step in 0..3 {
            if *lost.borrow() {
                break; // lost: stop before the lease can end
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // one step of the job
            done += 1;
        }
        println!("job did {done} of 3 steps under the lock (fence {fence:?})");
        tokio::task::spawn_blocking(move || guard.release()).await?.map_err(|e| e.to_string())?;
    }

    tokio::task::spawn_blocking(move || locks.cleanup()).await?;
    Ok(())
}
