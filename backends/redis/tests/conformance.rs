//! The conformance suite against real servers: one node, a 3-master quorum
//! and a 3-master Redis Cluster, each in-process and through the `.so`.

mod harness;

use bext_locking::conformance::{self, Options};
use harness::{Cluster, Server, boxed, quorum_config, servers, single_config};

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
    conformance::check_names().into_iter().filter(|c| !QUORUM_SKIPS.contains(c)).collect()
}

#[test]
fn single_node_in_process() {
    let server = Server::start();
    let config = single_config(&server, "");
    conformance::run(&|| boxed(&config), &options(true)).assert_passed();
}

#[test]
fn single_node_through_the_so() {
    let server = Server::start();
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("redis")).unwrap();
    assert!(plugin.describe().unwrap().fencing);
    let config = single_config(&server, "");
    conformance::run(&|| plugin.create(&config), &options(true)).assert_passed();
}

#[test]
fn quorum_of_three_in_process() {
    let nodes = servers(3);
    let config = quorum_config(&nodes, "");
    conformance::run_only(&|| boxed(&config), &options(false), &quorum_checks()).assert_passed();
}

#[test]
fn quorum_of_three_through_the_so() {
    let nodes = servers(3);
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("redis")).unwrap();
    let config = quorum_config(&nodes, "");
    conformance::run_only(&|| plugin.create(&config), &options(false), &quorum_checks())
        .assert_passed();
}

#[test]
fn cluster_of_three_masters() {
    let cluster = Cluster::start(3);
    let config = cluster.config("");
    conformance::run(&|| boxed(&config), &options(true)).assert_passed();
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("redis")).unwrap();
    conformance::run(&|| plugin.create(&config), &options(true)).assert_passed();
}

/// `"fencing": false` on one node and on a cluster: the whole suite with
/// handles that must carry no fence, in-process and through the `.so`.
const UNFENCED: &str = r#","fencing":false"#;

#[test]
fn single_node_unfenced_in_process() {
    let server = Server::start();
    let config = single_config(&server, UNFENCED);
    conformance::run(&|| boxed(&config), &options(false)).assert_passed();
}

#[test]
fn single_node_unfenced_through_the_so() {
    let server = Server::start();
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("redis")).unwrap();
    let config = single_config(&server, UNFENCED);
    conformance::run(&|| plugin.create(&config), &options(false)).assert_passed();
}

#[test]
fn cluster_of_three_masters_unfenced() {
    let cluster = Cluster::start(3);
    let config = cluster.config(UNFENCED);
    conformance::run(&|| boxed(&config), &options(false)).assert_passed();
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("redis")).unwrap();
    conformance::run(&|| plugin.create(&config), &options(false)).assert_passed();
}
