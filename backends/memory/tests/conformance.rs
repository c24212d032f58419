//! The conformance suite against the memory backend, in-process and through
//! its `.so`, with the ABI 1.1 checks (owner, inspect, force_release, and,
//! through the `.so`, stats).

use bext_locking::LockAdmin;
use bext_locking::conformance::{self, Options, Report};
use bext_locking_memory::{Memory, MemoryPlugin};

fn options() -> Options {
    Options { fencing: Some(true), ..Options::default() }
}

/// Fails unless every check passed and only the named ones were skipped.
fn assert_skipped_only(report: &Report, allowed: &[&str]) {
    report.assert_passed();
    let skipped: Vec<&str> = report.skipped().map(|c| c.name).collect();
    assert!(skipped.iter().all(|s| allowed.contains(s)), "skipped {skipped:?}\n{}", report.table());
    assert_eq!(
        report.checks.len(),
        conformance::check_names().len() + conformance::admin_check_names().len()
    );
}

#[test]
fn in_process() {
    let ns = format!("conformance-{}", std::process::id());
    let factory = || Ok(Box::new(MemoryPlugin::new(Memory::shared(&ns))) as Box<dyn LockAdmin>);
    let report = conformance::run_admin(&factory, &options());
    // Statistics are counted at the C boundary only.
    assert_skipped_only(&report, &["stats_count_every_outcome"]);
}

#[test]
fn through_the_so() {
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("memory")).unwrap();
    let config = r#"{"namespace":"so-conformance"}"#;
    let factory = || plugin.create_ffi(config).map(|p| Box::new(p) as Box<dyn LockAdmin>);
    assert_skipped_only(&conformance::run_admin(&factory, &options()), &[]);
}

/// The memory backend with ABI 1.1 calls that break the rules the checks
/// stand for: a "break" that leaves the holder running, an inspect that
/// forgets owners and expiry, statistics that count nothing.
struct Broken(MemoryPlugin);

impl bext_locking::LockingPlugin for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn try_lock(&self, key: &str, ttl: u64) -> Result<Option<bext_locking::LockHandle>, String> {
        self.0.try_lock(key, ttl)
    }
    fn renew(&self, h: &bext_locking::LockHandle) -> Result<(), String> {
        self.0.renew(h)
    }
    fn release(&self, h: bext_locking::LockHandle) -> Result<(), String> {
        self.0.release(h)
    }
    fn cleanup(&self) {
        bext_locking::LockingPlugin::cleanup(&self.0)
    }
}

impl LockAdmin for Broken {
    fn capabilities(&self) -> Vec<String> {
        vec!["owner".into(), "inspect".into(), "force_release".into(), "stats".into()]
    }
    fn try_lock_as(
        &self,
        key: &str,
        ttl: u64,
        owner: Option<&str>,
    ) -> Result<Option<bext_locking::LockHandle>, bext_locking::PluginError> {
        self.0.try_lock_as(key, ttl, owner)
    }
    fn inspect(&self, key: &str) -> Result<bext_locking::LockInfo, bext_locking::PluginError> {
        let info = self.0.inspect(key)?;
        Ok(bext_locking::LockInfo { owner: None, expires_in_ms: None, ..info })
    }
    fn force_release(
        &self,
        key: &str,
        _: Option<u64>,
    ) -> Result<bext_locking::ForceReleased, bext_locking::PluginError> {
        let info = self.0.inspect(key)?;
        Ok(bext_locking::ForceReleased { released: info.held, fence: info.fence })
    }
    fn stats(&self) -> Result<bext_locking::Stats, bext_locking::PluginError> {
        Ok(bext_locking::Stats::default())
    }
}

#[test]
fn the_1_1_checks_fail_a_backend_that_breaks_their_rules() {
    let ns = format!("broken-{}", std::process::id());
    let factory =
        || Ok(Box::new(Broken(MemoryPlugin::new(Memory::shared(&ns)))) as Box<dyn LockAdmin>);
    let names = conformance::admin_check_names();
    let report = conformance::run_admin_only(&factory, &options(), &names);
    let failed: Vec<&str> = report.failures().map(|c| c.name).collect();
    assert_eq!(failed, names, "{}", report.table());
}
