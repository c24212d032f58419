//! A complete Rust host: load a plugin, take a lock, run a job under the
//! auto-renewing guard, release.
//!
//! ```sh
//! cargo build -p bext-locking-memory               # or: make install
//! cargo run --example quickstart -- target/debug/libbext_locking_memory.so
//! cargo run --example quickstart -- /usr/local/lib/bext-locking/libbext_locking_redis.so \
//!     '{"url":"redis://127.0.0.1:6379"}'
//! ```
//!
//! Arguments: the plugin file (default: the memory plugin where
//! `make install` puts it) and its config JSON (default `{}`).

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use bext_locking::{LockingPlugin, RunError, run_exclusive};

/// Where `make install` (PREFIX=/usr/local) puts the plugin libraries.
const INSTALLED_MEMORY_PLUGIN: &str = "/usr/local/lib/bext-locking/libbext_locking_memory.so";

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| INSTALLED_MEMORY_PLUGIN.to_owned());
    let config = args.next().unwrap_or_else(|| "{}".to_owned());

    // Loading checks the file's ABI and vtable; `create` checks the config.
    let plugin = bext_locking_loader::load(&path)?;
    // `create` gives a Box; the guard and `run_exclusive` share the instance
    // with their renewal thread, so they take an Arc. `Arc::from` converts
    // without copying the backend.
    let locks: Arc<dyn LockingPlugin> = Arc::from(plugin.create(&config)?);
    println!("loaded {} {} from {path}", plugin.name(), plugin.version());

    // 1. One lock by hand: Ok(None) is contention, Err a broken backend.
    let key = "examples/quickstart";
    match locks.try_lock(key, 30_000)? {
        Some(handle) => {
            println!("locked {key}: fence {:?}", handle.fence);
            // Locks are not re-entrant: a second try is contention, not an error.
            if locks.try_lock(key, 30_000)?.is_some() {
                return Err(format!("{key} was handed out twice").into());
            }
            println!("a second try_lock on {key} is contention, not an error");
            locks.release(handle)?;
            println!("released {key}");
        }
        None => println!("another instance holds {key}; skipping"),
    }

    // 2. A job under the guard: renewed in the background, told of a loss
    //    at the latest a third of the TTL before the lease can end.
    let outcome = run_exclusive(&locks, "examples/nightly", Duration::from_secs(30), |guard| {
        // Pass the fence to what you write, so a paused holder is refused.
        let fence = guard.fence();
        for step in 1..=3 {
            if guard.is_lost() {
                return Err(format!("lost the lock before step {step}; stopping"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(fence)
    });
    match outcome {
        Ok(Some(Ok(fence))) => println!("the job ran under the lock (fence {fence:?})"),
        Ok(Some(Err(stopped))) => println!("the job stopped early: {stopped}"),
        Ok(None) => println!("another instance runs the job; skipped"),
        Err(RunError::Backend(e)) => return Err(format!("lock backend failed: {e}").into()),
        Err(RunError::Lost(lost)) => println!("the job ran but {lost}"),
    }

    locks.cleanup();
    Ok(())
}
