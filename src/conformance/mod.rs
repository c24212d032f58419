//! The conformance suite: named checks every [`LockingPlugin`] must pass.
//!
//! A backend runs it twice, in-process and through its `.so`, against a
//! factory that creates instances on the *same* backend (two "hosts" sharing
//! one Redis, one database file, one namespace):
//!
//! ```no_run
//! # #[cfg(feature = "conformance")] {
//! use bext_locking::conformance::{self, Options};
//! let factory = || -> Result<Box<dyn bext_locking::LockingPlugin>, String> { todo!() };
//! let report = conformance::run(&factory, &Options::default());
//! report.assert_passed();
//! # }
//! ```
//!
//! Every check works on keys under a fresh random prefix, so runs against a
//! shared server never collide.

mod checks;
mod report;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::LockingPlugin;

pub use report::{CheckResult, Report};

/// Makes a new instance on the backend under test.
pub type Factory<'a> = dyn Fn() -> Result<Box<dyn LockingPlugin>, String> + Sync + 'a;

/// Tuning for backends with coarser clocks or slower round trips.
#[derive(Debug, Clone)]
pub struct Options {
    /// The TTL used by the checks that wait for a lease to run out. Keep it
    /// well above the backend's clock granularity.
    pub short_ttl_ms: u64,
    /// Extra time to wait past `short_ttl_ms` before treating a lease as
    /// expired, for clock granularity and round trips.
    pub settle_ms: u64,
    /// `Some(true)`: every handle must carry a fence. `Some(false)`: none may.
    /// `None`: decided by the first handle.
    pub fencing: Option<bool>,
    /// Threads in the overlap check.
    pub threads: usize,
    /// Acquisition attempts per thread in the overlap check.
    pub attempts_per_thread: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            short_ttl_ms: 200,
            settle_ms: 100,
            fencing: None,
            threads: 8,
            attempts_per_thread: 100,
        }
    }
}

/// The names of all checks, in the order [`run`] performs them.
pub fn check_names() -> Vec<&'static str> {
    checks::ALL.iter().map(|(name, _)| *name).collect()
}

/// Context handed to each check.
pub(crate) struct Ctx<'a> {
    factory: &'a Factory<'a>,
    options: &'a Options,
    prefix: String,
}

impl Ctx<'_> {
    pub(crate) fn instance(&self) -> Result<Box<dyn LockingPlugin>, String> {
        (self.factory)().map_err(|e| format!("factory failed: {e}"))
    }

    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(crate) fn options(&self) -> &Options {
        self.options
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Runs every check and returns the report. Never panics: a panicking check
/// is reported as a failure.
pub fn run(factory: &Factory<'_>, options: &Options) -> Report {
    run_only(factory, options, &[])
}

/// Runs the checks whose names are in `only` (all of them when empty).
pub fn run_only(factory: &Factory<'_>, options: &Options, only: &[&str]) -> Report {
    let backend =
        factory().map(|p| p.name().to_owned()).unwrap_or_else(|e| format!("<factory failed: {e}>"));
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut results = Vec::new();
    for (name, check) in checks::ALL {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let ctx = Ctx { factory, options, prefix: format!("conformance/{run_id}/{name}/") };
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&ctx)))
            .unwrap_or_else(|p| Err(format!("check panicked: {}", panic_text(&p))));
        results.push(CheckResult {
            name,
            passed: outcome.is_ok(),
            message: outcome.err().unwrap_or_default(),
            duration: started.elapsed(),
        });
    }
    Report { backend, checks: results }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string payload".into())
}

pub(crate) fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
