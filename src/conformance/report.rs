//! The outcome of a conformance run, for people and for machines.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The check's stable name, e.g. `stale_release_is_noop`.
    pub name: &'static str,
    /// Whether it passed (a skipped check did not fail).
    pub passed: bool,
    /// Whether it was skipped because the plugin does not serve the call it
    /// checks (an ABI 1.0 plugin, or a mode that answers `unsupported`).
    #[serde(default)]
    pub skipped: bool,
    /// Why it failed or was skipped; empty when it passed.
    pub message: String,
    /// How long it took.
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

/// All checks' outcomes for one backend.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The name the backend reported.
    pub backend: String,
    /// One entry per check, in run order.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// True when every check passed (and at least one ran).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The checks that were skipped, with their reasons.
    pub fn skipped(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.skipped)
    }

    /// A fixed-width table: check, result, time, message.
    pub fn table(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
        let mut out = format!(
            "conformance: {}\n{:<width$}  result  time(ms)  message\n",
            self.backend, "check"
        );
        for c in &self.checks {
            let verdict = match (c.passed, c.skipped) {
                (true, false) => "pass",
                (true, true) => "skip",
                (false, _) => "FAIL",
            };
            let _ = writeln!(
                out,
                "{:<width$}  {verdict:<6}  {:>8}  {}",
                c.name,
                c.duration.as_millis(),
                c.message
            );
        }
        let failed = self.failures().count();
        let skipped = self.skipped().count();
        let _ = writeln!(
            out,
            "{} passed, {skipped} skipped, {failed} failed",
            self.checks.len() - failed - skipped
        );
        out
    }

    /// Panics with the table unless every check passed: for use in tests.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "conformance failed\n{}", self.table());
    }

    /// [`assert_passed`](Self::assert_passed), and also that no check was
    /// skipped except those named in `may_skip`: a backend that serves a
    /// call proves it, rather than passing by skipping.
    #[track_caller]
    pub fn assert_passed_skipping_only(&self, may_skip: &[&str]) {
        self.assert_passed();
        let skipped: Vec<&str> =
            self.skipped().map(|c| c.name).filter(|n| !may_skip.contains(n)).collect();
        assert!(skipped.is_empty(), "checks skipped: {skipped:?}\n{}", self.table());
    }
}
