//! The conformance suite against real servers: one node, a 3-master quorum
//! and a 3-master Redis Cluster, each in-process and through the `.so`,
//! with the ABI 1.1 checks (owner, inspect, force_release, and, through the
//! `.so`, stats).

mod harness;

use bext_locking::LockWait;
use bext_locking::conformance::{self, Options, Report};
use bext_locking_redis::RedisPlugin;
use harness::{Cluster, Server, boxed_admin, quorum_config, servers, single_config, so_admin};

/// Checks a quorum deployment cannot pass, and why.
///
/// `ttl_limits` asks for a 1 ms lease. Redlock keeps a lease only while
/// `ttl - elapsed - (ttl * drift + 2 ms)` is positive, so a 1 ms lease can
/// never be granted; `quorum::too_short_ttl_is_an_error` checks what
/// happens instead.
const QUORUM_SKIPS: &[&str] = &["ttl_limits"];

fn options(fencing: bool) -> Options {
    Options { short_ttl_ms: 200, settle_ms: 100, fencing: Some(fencing), ..Options::default() }
}

fn quorum_checks() -> Vec<&'static str> {
    conformance::check_names()
        .into_iter()
        .chain(conformance::admin_check_names())
        .filter(|c| !QUORUM_SKIPS.contains(c))
        .collect()
}

/// Fails unless every check ran and passed, except those in `skipped`,
/// which must have been skipped (in-process there are no statistics: they
/// are counted at the C boundary).
fn assert_all(report: &Report, expected: usize, skipped: &[&str]) {
    report.assert_passed();
    let got: Vec<&str> = report.skipped().map(|c| c.name).collect();
    assert_eq!(got, skipped, "\n{}", report.table());
    assert_eq!(report.checks.len(), expected, "\n{}", report.table());
}

fn every_check() -> usize {
    conformance::check_names().len() + conformance::admin_check_names().len()
}

const IN_PROCESS_SKIPS: &[&str] = &["stats_count_every_outcome"];

/// The ABI 1.2 checks, in-process (`so: None`) or through the `.so`.
fn run_wait(so: Option<&bext_locking_loader::LoadedPlugin>, config: &str, fencing: bool) {
    let factory = || match so {
        Some(so) => so.create_ffi(config).map(|p| Box::new(p) as Box<dyn LockWait>),
        None => RedisPlugin::from_json(config)
            .map(|p| Box::new(p) as Box<dyn LockWait>)
            .map_err(|e| e.message),
    };
    conformance::run_wait(&factory, &options(fencing))
        .assert_passed_skipping_only(&["wait_fifo_order"]);
}

fn so() -> bext_locking_loader::LoadedPlugin {
    bext_locking_loader::load(bext_locking_test_support::plugin_path("redis")).unwrap()
}

#[test]
fn single_node_in_process() {
    let server = Server::start();
    let config = single_config(&server, "");
    let report = conformance::run_admin(&|| boxed_admin(&config), &options(true));
    assert_all(&report, every_check(), IN_PROCESS_SKIPS);
    run_wait(None, &config, true);
}

#[test]
fn single_node_through_the_so() {
    let server = Server::start();
    let plugin = so();
    let described = plugin.describe().unwrap();
    assert!(described.fencing);
    let config = single_config(&server, "");
    let report = conformance::run_admin(&|| so_admin(&plugin, &config), &options(true));
    assert_all(&report, every_check(), &[]);
    run_wait(Some(&plugin), &config, true);
}

#[test]
fn quorum_of_three_in_process() {
    let nodes = servers(3);
    let config = quorum_config(&nodes, "");
    let report =
        conformance::run_admin_only(&|| boxed_admin(&config), &options(false), &quorum_checks());
    assert_all(&report, quorum_checks().len(), IN_PROCESS_SKIPS);
    run_wait(None, &config, false);
}

#[test]
fn quorum_of_three_through_the_so() {
    let nodes = servers(3);
    let plugin = so();
    let config = quorum_config(&nodes, "");
    let report = conformance::run_admin_only(
        &|| so_admin(&plugin, &config),
        &options(false),
        &quorum_checks(),
    );
    assert_all(&report, quorum_checks().len(), &[]);
    run_wait(Some(&plugin), &config, false);
}

#[test]
fn cluster_of_three_masters() {
    let cluster = Cluster::start(3);
    let config = cluster.config("");
    let report = conformance::run_admin(&|| boxed_admin(&config), &options(true));
    assert_all(&report, every_check(), IN_PROCESS_SKIPS);
    run_wait(None, &config, true);
    let plugin = so();
    let report = conformance::run_admin(&|| so_admin(&plugin, &config), &options(true));
    assert_all(&report, every_check(), &[]);
    run_wait(Some(&plugin), &config, true);
}

/// `"fencing": false` on one node and on a cluster: the whole suite, with
/// the 1.1 checks, with handles that must carry no fence, in-process and
/// through the `.so`.
const UNFENCED: &str = r#","fencing":false"#;

#[test]
fn single_node_unfenced_in_process() {
    let server = Server::start();
    let config = single_config(&server, UNFENCED);
    let report = conformance::run_admin(&|| boxed_admin(&config), &options(false));
    assert_all(&report, every_check(), IN_PROCESS_SKIPS);
    run_wait(None, &config, false);
}

#[test]
fn single_node_unfenced_through_the_so() {
    let server = Server::start();
    let plugin = so();
    let config = single_config(&server, UNFENCED);
    let report = conformance::run_admin(&|| so_admin(&plugin, &config), &options(false));
    assert_all(&report, every_check(), &[]);
    run_wait(Some(&plugin), &config, false);
}

#[test]
fn cluster_of_three_masters_unfenced() {
    let cluster = Cluster::start(3);
    let config = cluster.config(UNFENCED);
    let report = conformance::run_admin(&|| boxed_admin(&config), &options(false));
    assert_all(&report, every_check(), IN_PROCESS_SKIPS);
    run_wait(None, &config, false);
    let plugin = so();
    let report = conformance::run_admin(&|| so_admin(&plugin, &config), &options(false));
    assert_all(&report, every_check(), &[]);
    run_wait(Some(&plugin), &config, false);
}
