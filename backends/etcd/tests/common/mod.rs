//! The etcd backend's test helpers: throwaway clusters come from
//! `bext_locking_test_support::servers::etcd` (real `etcd` processes on free
//! loopback ports, killed and removed on drop); what is here adds clients of
//! this crate's own gateway on top of them.

#![allow(dead_code, unused_imports)] // each test binary uses part of it

use std::time::Duration;

use bext_locking_etcd::gateway::Client;

pub use bext_locking_test_support::servers::etcd::{Cluster, config};

/// Clients of this crate's gateway for a test cluster.
pub trait Clients {
    /// A client for member `i` alone.
    fn member_client(&self, i: usize) -> Client;
    /// A client for all members.
    fn client(&self) -> Client;
}

impl Clients for Cluster {
    fn member_client(&self, i: usize) -> Client {
        Client::new(vec![self.members[i].client_url.clone()], Duration::from_secs(1), None)
    }

    fn client(&self) -> Client {
        Client::new(self.endpoints(), Duration::from_secs(1), None)
    }
}
