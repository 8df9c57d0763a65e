//! Whom each run may talk to over the VPN (`peer_scope`), kept in the router: installed for a
//! run before its algorithm starts, and followed afterwards through one long-poll of `GET
//! /vpn/peers` for all of the node's runs (a subtask on a new organization, a node's new
//! address, ports registered or removed reach the router within moments of the change). The
//! same answer carries the collaboration's nodes the WireGuard tunnel may reach directly.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use netstack::Scope;

use crate::api::{Peers, RunId, RunPeers};
use crate::node::client::{ClientError, Dialect};
use crate::node::config::PeerScope;
use crate::node::hub::HubError;
use crate::node::retry::Backoff;
use crate::node::state::Node;

/// Why a run's scope could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("asking the server for the run's peers: {0}")]
    Server(#[from] ClientError),
    #[error(transparent)]
    Hub(#[from] HubError),
}

fn addresses(texts: &[String]) -> impl Iterator<Item = Ipv4Addr> + '_ {
    // An address the server stored but that does not parse admits no one.
    texts.iter().filter_map(|t| t.parse().ok())
}

/// The scope of a run under `peer_scope` (`None` for `vpn`: the router is not scoped).
pub fn scope_of(peer_scope: PeerScope, run: Option<&RunPeers>, peers: &Peers) -> Option<Scope> {
    match peer_scope {
        PeerScope::Vpn => None,
        PeerScope::Collaboration => {
            let sources: std::collections::BTreeSet<Ipv4Addr> =
                addresses(&peers.collaboration).collect();
            let targets = sources.iter().map(|a| SocketAddrV4::new(*a, 0)).collect();
            Some(Scope { sources, targets })
        }
        PeerScope::Task => Some(run.map_or_else(Scope::default, |r| {
            Scope {
                sources: addresses(&r.addresses).collect(),
                targets: r
                    .ports
                    .iter()
                    .filter_map(|p| Some(SocketAddrV4::new(p.ip.parse().ok()?, p.port.0)))
                    .collect(),
            }
        })),
    }
}

/// Installs the scope of `run` as the server has it now.
pub async fn install(node: &Node, run: RunId) -> Result<(), ScopeError> {
    if node.config.peer_scope == PeerScope::Vpn {
        return Ok(());
    }
    let peers = node.client.peers(None).await?;
    let own = peers.runs.iter().find(|r| r.run_id == run);
    if let Some(scope) = scope_of(node.config.peer_scope, own, &peers) {
        node.hub.set_scope(run, scope).await?;
    }
    Ok(())
}

/// The answers of `GET /vpn/peers`, each one that differs from the one before (the server holds
/// each request until something changed); while the server does not answer, it waits with
/// doubling pauses, saying so under `what`. The scope follower and the kill follower each hold
/// one: the node's two waits at the server.
#[derive(Debug)]
pub struct Answers<'a> {
    node: &'a Node,
    what: &'static str,
    etag: Option<String>,
    backoff: Backoff,
}

impl<'a> Answers<'a> {
    pub fn new(node: &'a Node, what: &'static str) -> Answers<'a> {
        Answers {
            node,
            what,
            etag: None,
            backoff: Backoff::from(Duration::from_secs(1)),
        }
    }

    /// The next answer.
    pub async fn next(&mut self) -> Peers {
        loop {
            match self.node.client.peers(self.etag.as_deref()).await {
                Ok(peers) => {
                    self.backoff.reset();
                    self.etag = Some(peers.etag.clone());
                    return peers;
                }
                Err(e) => {
                    let wait = self.backoff.next_wait();
                    tracing::warn!("{}: {e}; next try in {}s", self.what, wait.as_secs());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Follows the server's answer for every run of the node and installs what changed, and hands
/// the node's WireGuard tunnel the peers it may reach directly, until the task is ended.
pub async fn follow(node: Arc<Node>) {
    let scoped = node.config.peer_scope != PeerScope::Vpn;
    // vantage6's server lists no direct peers: unscoped, there is nothing to follow.
    if !scoped && node.client.dialect == Dialect::Vantage6 {
        return;
    }
    let mut installed: HashMap<RunId, Scope> = HashMap::new();
    let mut answers = Answers::new(&node, "following the runs' peers");
    loop {
        let peers = answers.next().await;
        node.mesh.send_if_modified(|m| {
            let changed = *m != peers.wireguard;
            m.clone_from(&peers.wireguard);
            changed
        });
        if !scoped {
            continue;
        }
        // Only runs this node set up: the router knows no others (and a run it is setting up
        // installs its own scope before its algorithm starts).
        let ours = node.observed.run_ids();
        installed.retain(|r, _| ours.contains(r));
        for run in &ours {
            let own = peers.runs.iter().find(|r| r.run_id == *run);
            let Some(scope) = scope_of(node.config.peer_scope, own, &peers) else {
                continue;
            };
            if installed.get(run) == Some(&scope) {
                continue;
            }
            match node.hub.set_scope(*run, scope.clone()).await {
                Ok(()) => {
                    installed.insert(*run, scope);
                }
                Err(e) => tracing::warn!("run {run}: setting its peers: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PeerPort, PublicPort, TaskId};

    fn peers() -> Peers {
        Peers {
            etag: "e".into(),
            collaboration: vec!["10.76.0.2".into(), "10.76.0.3".into(), "garbage".into()],
            runs: vec![RunPeers {
                run_id: RunId(5),
                root_task_id: TaskId(1),
                addresses: vec!["10.76.0.2".into(), "not an address".into()],
                ports: vec![PeerPort {
                    ip: "10.76.0.2".into(),
                    port: PublicPort(49152),
                }],
            }],
            wireguard: Vec::new(),
        }
    }

    #[test]
    fn each_peer_scope_admits_what_it_says_and_garbage_admits_no_one() {
        let p = peers();
        let run = p.runs.first();
        let a = |s: &str| -> Ipv4Addr { s.parse().expect("address") };
        let task = scope_of(PeerScope::Task, run, &p).expect("scoped");
        assert_eq!(task.sources, [a("10.76.0.2")].into());
        assert_eq!(
            task.targets,
            [SocketAddrV4::new(a("10.76.0.2"), 49152)].into()
        );
        let collaboration = scope_of(PeerScope::Collaboration, run, &p).expect("scoped");
        assert_eq!(
            collaboration.sources,
            [a("10.76.0.2"), a("10.76.0.3")].into()
        );
        assert!(collaboration
            .targets
            .contains(&SocketAddrV4::new(a("10.76.0.3"), 0)));
        assert_eq!(scope_of(PeerScope::Vpn, run, &p), None);
        // A run the server does not list: nobody.
        assert_eq!(scope_of(PeerScope::Task, None, &p), Some(Scope::default()));
    }
}
