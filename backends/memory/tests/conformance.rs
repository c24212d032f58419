//! The conformance suite against the memory backend, in-process and through
//! its `.so`, with the ABI 1.1 checks (owner, inspect, force_release, and,
//! through the `.so`, stats) and the ABI 1.2 ones (waiting, `renew_for`).

use bext_locking::conformance::{self, Options, Report};
use bext_locking::{LockAdmin, LockWait};
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
    let factory = || Ok(Box::new(MemoryPlugin::new(Memory::shared(&ns))) as Box<dyn LockWait>);
    assert_every_wait_check(&conformance::run_wait(&factory, &options()));
}

#[test]
fn through_the_so() {
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("memory")).unwrap();
    let config = r#"{"namespace":"so-conformance"}"#;
    let factory = || plugin.create_ffi(config).map(|p| Box::new(p) as Box<dyn LockAdmin>);
    assert_skipped_only(&conformance::run_admin(&factory, &options()), &[]);
    let factory = || plugin.create_ffi(config).map(|p| Box::new(p) as Box<dyn LockWait>);
    assert_every_wait_check(&conformance::run_wait(&factory, &options()));
}

/// Fails unless every 1.2 check ran and passed: memory waits, in order,
/// and has `renew_for`.
fn assert_every_wait_check(report: &Report) {
    report.assert_passed();
    assert_eq!(report.skipped().count(), 0, "{}", report.table());
    assert_eq!(report.checks.len(), conformance::wait_check_names().len());
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

/// Seen as a plugin hosts poll: it does not list `lock_wait`.
impl LockWait for Broken {
    fn wait_mode(&self) -> bext_locking::WaitMode {
        bext_locking::WaitMode::Polling
    }
    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        owner: Option<&str>,
        wait: &bext_locking::Wait,
    ) -> Result<Option<bext_locking::Acquired>, bext_locking::PluginError> {
        self.0.lock_wait(key, ttl_ms, owner, wait)
    }
    fn renew_for(
        &self,
        h: &bext_locking::LockHandle,
        ttl_ms: u64,
    ) -> Result<(), bext_locking::PluginError> {
        self.0.renew_for(h, ttl_ms)
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

/// The memory backend with ABI 1.2 calls that break the rules the checks
/// stand for: a "wait" that returns a made-up handle at once, whoever holds
/// the key, and a `renew_for` that changes nothing.
struct BrokenWait(MemoryPlugin);

impl bext_locking::LockingPlugin for BrokenWait {
    fn name(&self) -> &str {
        "broken-wait"
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

impl LockAdmin for BrokenWait {
    fn capabilities(&self) -> Vec<String> {
        ["owner", "inspect", "lock_wait", "fifo", "renew_ttl"].map(String::from).to_vec()
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
        self.0.inspect(key)
    }
    fn force_release(
        &self,
        key: &str,
        if_fence: Option<u64>,
    ) -> Result<bext_locking::ForceReleased, bext_locking::PluginError> {
        self.0.force_release(key, if_fence)
    }
    fn stats(&self) -> Result<bext_locking::Stats, bext_locking::PluginError> {
        self.0.stats()
    }
}

impl LockWait for BrokenWait {
    fn wait_mode(&self) -> bext_locking::WaitMode {
        bext_locking::WaitMode::Fifo
    }
    fn lock_wait(
        &self,
        key: &str,
        ttl_ms: u64,
        _: Option<&str>,
        _: &bext_locking::Wait,
    ) -> Result<Option<bext_locking::Acquired>, bext_locking::PluginError> {
        let handle = bext_locking::LockHandle {
            key: key.to_owned(),
            lock_id: "made-up".into(),
            ttl_ms,
            fence: Some(u64::MAX),
        };
        Ok(Some(bext_locking::Acquired { handle, sent: std::time::Instant::now() }))
    }
    fn renew_for(
        &self,
        _: &bext_locking::LockHandle,
        _: u64,
    ) -> Result<(), bext_locking::PluginError> {
        Ok(())
    }
}

#[test]
fn the_1_2_checks_fail_a_backend_that_breaks_their_rules() {
    let ns = format!("broken-wait-{}", std::process::id());
    let factory =
        || Ok(Box::new(BrokenWait(MemoryPlugin::new(Memory::shared(&ns)))) as Box<dyn LockWait>);
    let report = conformance::run_wait(&factory, &options());
    let failed: Vec<&str> = report.failures().map(|c| c.name).collect();
    assert_eq!(failed, conformance::wait_check_names(), "{}", report.table());
}

/// The memory backend as a plugin hosts poll: the kit's wrapper of a
/// backend without `lock_wait` in its capabilities. The 1.2 checks are
/// skipped, with the reason, not failed.
#[test]
fn the_1_2_checks_skip_a_plugin_without_lock_wait() {
    let ns = format!("no-wait-{}", std::process::id());
    let factory =
        || Ok(Box::new(Broken(MemoryPlugin::new(Memory::shared(&ns)))) as Box<dyn LockWait>);
    let report = conformance::run_wait(&factory, &options());
    report.assert_passed();
    assert_eq!(
        report.skipped().count(),
        conformance::wait_check_names().len(),
        "{}",
        report.table()
    );
    assert!(
        report
            .skipped()
            .all(|c| c.message.contains("lock_wait") || c.message.contains("renew_ttl"))
    );
}
