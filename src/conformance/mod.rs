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
//!
//! [`run_admin`] also runs the checks of ABI 1.1's calls (owner, inspect,
//! force_release, stats) against a factory of [`LockAdmin`] instances
//! (the loader's `FfiPlugin`, the kit's `Plugin`). A check whose call the
//! plugin does not serve (a 1.0 plugin, or `unsupported` from its mode) is
//! reported as skipped, with the reason.
//!
//! [`run_wait`] runs the checks of ABI 1.2's calls (waiting for a lock,
//! `renew_for`) alone, against a factory of [`LockWait`] instances; run it
//! beside [`run_admin`]. They run when the plugin lists `"lock_wait"` (the
//! FIFO check also needs `"fifo"`, the `renew_for` one `"renew_ttl"`) and are
//! skipped with the reason otherwise, so a plugin that hosts poll passes
//! with them skipped.

mod admin;
mod checks;
mod report;
mod wait;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::{LockAdmin, LockHandle, LockWait, LockingPlugin};

pub use report::{CheckResult, Report};

/// Makes a new instance on the backend under test.
pub type Factory<'a> = dyn Fn() -> Result<Box<dyn LockingPlugin>, String> + Sync + 'a;

/// Makes a new instance with ABI 1.1's calls on the backend under test.
pub type AdminFactory<'a> = dyn Fn() -> Result<Box<dyn LockAdmin>, String> + Sync + 'a;

/// Makes a new instance with ABI 1.2's calls on the backend under test.
pub type WaitFactory<'a> = dyn Fn() -> Result<Box<dyn LockWait>, String> + Sync + 'a;

/// A [`LockAdmin`] seen through the seed trait, for the 1.0 checks.
struct Seed(Box<dyn LockAdmin>);

impl LockingPlugin for Seed {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<LockHandle>, String> {
        self.0.try_lock(key, ttl_ms)
    }
    fn renew(&self, handle: &LockHandle) -> Result<(), String> {
        self.0.renew(handle)
    }
    fn release(&self, handle: LockHandle) -> Result<(), String> {
        self.0.release(handle)
    }
    fn cleanup(&self) {
        self.0.cleanup()
    }
}

/// Where a check's instances come from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Seed(&'a Factory<'a>),
    Admin(&'a AdminFactory<'a>),
    Wait(&'a WaitFactory<'a>),
}

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

/// The names of the ABI 1.1 checks [`run_admin`] adds after those of
/// [`check_names`].
pub fn admin_check_names() -> Vec<&'static str> {
    admin::ALL.iter().map(|(name, _)| *name).collect()
}

/// The names of the ABI 1.2 checks [`run_wait`] runs.
pub fn wait_check_names() -> Vec<&'static str> {
    wait::ALL.iter().map(|(name, _)| *name).collect()
}

/// Context handed to each check.
pub(crate) struct Ctx<'a> {
    source: Source<'a>,
    options: &'a Options,
    prefix: String,
}

impl Ctx<'_> {
    pub(crate) fn instance(&self) -> Result<Box<dyn LockingPlugin>, String> {
        match self.source {
            Source::Seed(f) => f(),
            Source::Admin(f) => f().map(|a| Box::new(Seed(a)) as Box<dyn LockingPlugin>),
            Source::Wait(_) => Err("the 1.0 checks need a LockingPlugin factory".to_owned()),
        }
        .map_err(|e| format!("factory failed: {e}"))
    }

    pub(crate) fn admin_instance(&self) -> Result<Box<dyn LockAdmin>, String> {
        match self.source {
            Source::Admin(f) => f().map_err(|e| format!("factory failed: {e}")),
            _ => Err("the 1.1 checks need a LockAdmin factory".to_owned()),
        }
    }

    pub(crate) fn wait_instance(&self) -> Result<Box<dyn LockWait>, String> {
        match self.source {
            Source::Wait(f) => f().map_err(|e| format!("factory failed: {e}")),
            _ => Err("the 1.2 checks need a LockWait factory".to_owned()),
        }
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
    run_source(backend, Source::Seed(factory), options, only)
}

/// Runs every check of [`run`] and then the ABI 1.1 checks
/// ([`admin_check_names`]); those the plugin cannot serve are skipped with
/// the reason.
pub fn run_admin(factory: &AdminFactory<'_>, options: &Options) -> Report {
    run_admin_only(factory, options, &[])
}

/// [`run_admin`] limited to the checks named in `only` (all when empty).
pub fn run_admin_only(factory: &AdminFactory<'_>, options: &Options, only: &[&str]) -> Report {
    let backend =
        factory().map(|p| p.name().to_owned()).unwrap_or_else(|e| format!("<factory failed: {e}>"));
    run_source(backend, Source::Admin(factory), options, only)
}

/// Runs the ABI 1.2 checks ([`wait_check_names`]) alone, beside
/// [`run_admin`]: hand-off, timeout, cancellation, FIFO order, expiry and
/// `renew_for`. Those the plugin cannot serve are skipped with the reason.
pub fn run_wait(factory: &WaitFactory<'_>, options: &Options) -> Report {
    run_wait_only(factory, options, &[])
}

/// [`run_wait`] limited to the checks named in `only` (all when empty).
pub fn run_wait_only(factory: &WaitFactory<'_>, options: &Options, only: &[&str]) -> Report {
    let backend =
        factory().map(|p| p.name().to_owned()).unwrap_or_else(|e| format!("<factory failed: {e}>"));
    run_source(backend, Source::Wait(factory), options, only)
}

fn run_source(backend: String, source: Source<'_>, options: &Options, only: &[&str]) -> Report {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut results = Vec::new();
    let wanted = |name: &str| only.is_empty() || only.contains(&name);
    let mut run_one =
        |name: &'static str, check: &dyn Fn(&Ctx<'_>) -> Result<(), admin::Verdict>| {
            let ctx = Ctx { source, options, prefix: format!("conformance/{run_id}/{name}/") };
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| check(&ctx))).unwrap_or_else(|p| {
                Err(admin::Verdict::Fail(format!("check panicked: {}", panic_text(&p))))
            });
            let (passed, skipped, message) = match outcome {
                Ok(()) => (true, false, String::new()),
                Err(admin::Verdict::Skip(why)) => (true, true, why),
                Err(admin::Verdict::Fail(why)) => (false, false, why),
            };
            results.push(CheckResult {
                name,
                passed,
                skipped,
                message,
                duration: started.elapsed(),
            });
        };
    if let Source::Wait(_) = source {
        for (name, check) in wait::ALL {
            if wanted(name) {
                run_one(name, check);
            }
        }
        return Report { backend, checks: results };
    }
    for (name, check) in checks::ALL {
        if wanted(name) {
            run_one(name, &|ctx: &Ctx<'_>| check(ctx).map_err(admin::Verdict::Fail));
        }
    }
    if let Source::Admin(_) = source {
        for (name, check) in admin::ALL {
            if wanted(name) {
                run_one(name, check);
            }
        }
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
