//! What the node's tasks share: its configuration and identity, the server client, Docker, the
//! hub namespace, and the tables that runs take from and give back to (public ports,
//! container addresses, the proxy's clients, the VPN address).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::docker::Docker;
use crate::node::allocator::PortTable;
use crate::node::client::ServerClient;
use crate::node::config::NodeConfig;
use crate::node::hub::Hub;
use crate::node::proxy::Clients;
use crate::node::status::recorder::Recorder;
use crate::sync::lock;

#[derive(Debug)]
pub struct Node {
    pub config: NodeConfig,
    pub name: String,
    /// The owner label of every container this node makes.
    pub owner: String,
    pub client: ServerClient,
    pub docker: Docker,
    pub hub: Hub,
    pub ports: Mutex<PortTable>,
    pub addresses: Mutex<Addresses>,
    pub clients: Clients,
    pub vpn: Mutex<Option<Ipv4Addr>>,
    /// Set on SIGINT/SIGTERM: runs that end now were stopped, not finished.
    pub stopping: AtomicBool,
    /// What `algonet node status` and the metrics show.
    pub observed: Recorder,
    /// The organization's private key in an encrypted collaboration.
    pub key: Option<std::sync::Arc<crate::crypto::PrivateKey>>,
    /// Runs the server ended while the node ran them (see [`crate::node::kills`]).
    pub killed: Mutex<std::collections::HashSet<crate::api::RunId>>,
    /// The collaboration's other nodes as the server last listed them for direct WireGuard
    /// paths (see [`crate::node::vpn::mesh`]).
    pub mesh: tokio::sync::watch::Sender<Vec<crate::api::MeshPeer>>,
}

impl Node {
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn stop_taking_runs(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// The node's VPN address while the tunnel is up.
    pub fn vpn_address(&self) -> Option<Ipv4Addr> {
        *lock(&self.vpn)
    }

    pub fn set_vpn_address(&self, a: Option<Ipv4Addr>) {
        *lock(&self.vpn) = a;
    }

    /// Container names of a run: its sandbox and its algorithm.
    pub fn run_containers(&self, run: crate::api::RunId) -> (String, String) {
        let base = format!("algonet-{}-run-{run}", self.name);
        (format!("{base}-sandbox"), base)
    }
}

/// Container addresses (never on the VPN, never seen outside the node): 100.64.0.0/16, one /32
/// per run.
#[derive(Debug, Default)]
pub struct Addresses {
    used: BTreeSet<Ipv4Addr>,
}

impl Addresses {
    pub fn take(&mut self) -> Option<Ipv4Addr> {
        let a = (2u32..=65_534)
            .map(|h| Ipv4Addr::from_bits(Ipv4Addr::new(100, 64, 0, 0).to_bits() + h))
            .find(|a| !self.used.contains(a))?;
        self.used.insert(a);
        Some(a)
    }

    pub fn give_back(&mut self, a: Ipv4Addr) {
        self.used.remove(&a);
    }
}
