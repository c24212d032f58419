//! The redis backend's test helpers: throwaway servers come from
//! `bext_locking_test_support::servers::redis` (free loopback ports, killed
//! on drop, never the shared server on 6379); what is here builds plugins
//! and raw `redis` connections on top of them.

#![allow(dead_code, unused_imports)] // each test binary uses part of it

use std::time::Duration;

use bext_locking::{LockAdmin, LockingPlugin};
use bext_locking_redis::RedisPlugin;

pub use bext_locking_test_support::TempDir;
pub use bext_locking_test_support::servers::redis::{
    Cluster, Server, quorum_config, servers, single_config,
};

/// A raw connection to `server`, for looking at keys behind the plugin's back.
pub fn conn(server: &Server) -> redis::Connection {
    let client = redis::Client::open(server.url()).unwrap();
    let c = client.get_connection_with_timeout(Duration::from_secs(2)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c
}

/// An in-process plugin from a config JSON.
pub fn plugin(config: &str) -> RedisPlugin {
    RedisPlugin::from_json(config).unwrap()
}

/// The same, boxed, for conformance factories.
pub fn boxed(config: &str) -> Result<Box<dyn LockingPlugin>, String> {
    Ok(Box::new(plugin(config)))
}

/// The same, boxed with ABI 1.1's calls, for the 1.1 conformance checks.
pub fn boxed_admin(config: &str) -> Result<Box<dyn LockAdmin>, String> {
    Ok(Box::new(plugin(config)))
}

/// A factory of instances loaded through the `.so`, with ABI 1.1's calls.
pub fn so_admin(
    plugin: &bext_locking_loader::LoadedPlugin,
    config: &str,
) -> Result<Box<dyn LockAdmin>, String> {
    plugin.create_ffi(config).map(|p| Box::new(p) as Box<dyn LockAdmin>)
}
