//! Throwaway servers on free loopback ports, for tests (and the safety
//! checker) that kill, pause and restart them: `redis-server`, `etcd`,
//! `nats-server`, a private PostgreSQL cluster and a private MariaDB server
//! ([`mysql`]). Never the machine's shared servers.
//!
//! Every server is killed (after a SIGCONT, should it be paused) and its
//! folder removed when its guard drops, also when a test fails.

pub mod etcd;
pub mod mysql;
pub mod nats;
pub mod pg;
pub mod redis;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh folder name under `root` that no other guard of this process
/// uses: `bext-<what>-<pid>-<n>`.
pub(crate) fn unique_dir(root: &std::path::Path, what: &str) -> PathBuf {
    root.join(format!("bext-{what}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)))
}

/// Sends `sig` to process `pid`. A process that is already gone is not an
/// error: the callers only signal children they have not reaped yet, so
/// "gone" can only mean it died on its own, which their next step reports.
pub fn signal(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), sig);
}
