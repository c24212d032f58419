//! `bext-lock-safety`: evidence that a lock plugin never lets two holders
//! in at once, also while its servers die and its holders freeze.
//!
//! N processes × T threads, each thread with its own plugin instance loaded
//! from the backend's `.so`, loop `try_lock` / hold / `release` on one
//! shared key and record every holding interval on `CLOCK_MONOTONIC` with
//! its fence. While they run, the checker injects a [`Fault`]: it SIGKILLs
//! and restarts a server, terminates the plugin's PostgreSQL sessions, or
//! freezes a holder with SIGSTOP past its TTL, or freezes the path of a
//! `bext-lock run` holder to the server while its job writes. Afterwards [`check::check`]
//! proves that no two intervals overlap and, for fencing backends, that
//! fences rise in interval order and that a fenced storage
//! ([`storage::FencedStorage`]) refused exactly the writes of holders whose
//! lease had ended.
//!
//! Backends are listed in [`backends::BACKENDS`], one line each.

#![deny(missing_docs)]

pub mod backends;
pub mod check;
pub mod election;
pub mod freeze;
pub mod mysql;
pub mod record;
pub mod report;
pub mod scenario;
pub mod storage;
pub mod worker;

use serde::{Deserialize, Serialize};

/// What goes wrong during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Nothing: the baseline.
    None,
    /// A server (or one member/master) is killed and started again; what
    /// exactly depends on the backend and is written in the report.
    Restart,
    /// `pg_terminate_backend` (pg) or `KILL` (mysql) on every session of
    /// the plugin's instances.
    Terminate,
    /// A holder is frozen with SIGSTOP until another holder has taken the
    /// lock over, then resumed: its renew must fail and its write with the
    /// old fence must be refused.
    Stall,
    /// The path of a `bext-lock run` holder to the server freezes (a TCP
    /// proxy stops passing bytes) while its job, which ignores SIGTERM,
    /// keeps writing: the job must be dead before its lease ends and before
    /// the next holder starts ([`freeze`]).
    Freeze,
    /// The current holder is broken mid-run: the checker reads its fence
    /// with `inspect` and calls `force_release` with that `if_fence`, while
    /// the holder keeps believing it holds the lock. Another holder takes
    /// over; then the broken one writes with its old fence (the storage must
    /// refuse it) and renews (it must fail). ABI 1.1 plugins only.
    Break,
}

impl Fault {
    /// Every fault, in report order.
    pub const ALL: [Fault; 6] =
        [Fault::None, Fault::Restart, Fault::Terminate, Fault::Stall, Fault::Freeze, Fault::Break];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Restart => "restart",
            Fault::Terminate => "terminate",
            Fault::Stall => "stall",
            Fault::Freeze => "freeze",
            Fault::Break => "break",
        }
    }

    /// The fault called `name`.
    pub fn parse(name: &str) -> Option<Fault> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}
