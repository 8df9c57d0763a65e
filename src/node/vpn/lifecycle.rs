//! The VPN over the node's life: brought up at start (the start-up order of [`super`]; without
//! a working VPN the node runs on), routed through the router and registered at the server,
//! followed on OpenVPN's management socket, and brought back whenever OpenVPN goes away.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use super::openvpn::Management;
use super::tunnel::{Steps, Tunnel};
use super::{bring_up, Outcome, VpnSteps};
use crate::api::client::ClientError;
use crate::node::hub::HubError;
use crate::node::retry::{with_backoff, Backoff};
use crate::node::state::Node;
use crate::node::status::VpnState;

/// Why the router or the server did not take the VPN address.
#[derive(Debug, thiserror::Error)]
pub enum PlumbError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("registering the VPN address: {0}")]
    Register(#[from] ClientError),
}

fn tunnel(node: &Node, subnet: ipnet::Ipv4Net) -> Tunnel {
    Tunnel {
        docker: node.docker.clone(),
        container: format!("algonet-{}-vpn", node.name),
        hub_container: node.hub.container.clone(),
        image: node.config.images.vpn_client.clone(),
        owner: node.owner.clone(),
        dir: node.config.task_dir.join("vpn"),
        subnet,
        timeout: Duration::from_secs(node.config.vpn_connect_timeout_secs),
    }
}

/// Brings the VPN up and, connected, starts following it. Never fails the node: without a
/// working VPN it warns once, with the reasons, runs on without, and keeps trying in the
/// background ([`retry`]).
pub async fn start(node: &Arc<Node>) -> Option<tokio::task::JoinHandle<()>> {
    let Some(subnet) = node.config.vpn_subnet else {
        node.observed.vpn_state(VpnState::Off, None);
        tracing::warn!(
            "no vpn_subnet configured: running without VPN (algorithms get no public ports)"
        );
        return None;
    };
    let tunnel = tunnel(node, subnet);
    let existing = tunnel.saved_profile();
    let mut steps = Steps {
        tunnel: &tunnel,
        client: &node.client,
        connected: None,
    };
    match bring_up(existing.as_deref(), &mut steps).await {
        Outcome::Connected { address, source } => {
            tracing::info!("VPN connected with address {address} ({source:?} profile)");
            let m = steps.connected.take()?;
            match plumb(node, address).await {
                Ok(()) => Some(tokio::spawn(watch(node.clone(), tunnel, m))),
                Err(e) => {
                    node.observed.vpn_state(VpnState::Off, None);
                    tracing::warn!("VPN connected, but the router could not be set up: {e}; running without VPN");
                    let _ = node.docker.remove(&tunnel.container).await;
                    None
                }
            }
        }
        Outcome::NoVpn { reasons } => {
            node.observed.vpn_state(VpnState::Retrying, None);
            tracing::warn!(
                "running without VPN for now: {}; trying again in the background",
                reasons.join("; ")
            );
            Some(tokio::spawn(retry(node.clone(), tunnel)))
        }
    }
}

/// How often a retry goes through the whole start-up order rather than only the saved profile.
const FULL_ORDER_EVERY: u32 = 10;

/// Tries to bring the VPN up until it connects (waits from 5 s, doubling to 30 s), then follows
/// it. A try uses the saved profile alone, and every tenth one the whole start-up order: each
/// renewal or new profile is a new certificate, and the server allows a node only a few an hour.
async fn retry(node: Arc<Node>, tunnel: Tunnel) {
    let mut backoff = Backoff::from(Duration::from_secs(5));
    let mut wait = backoff.next_wait();
    for attempt in 1u32.. {
        tokio::time::sleep(wait).await;
        let mut steps = Steps {
            tunnel: &tunnel,
            client: &node.client,
            connected: None,
        };
        let saved = tunnel.saved_profile();
        let outcome = match saved {
            Some(p) if attempt % FULL_ORDER_EVERY != 0 => match steps.connect(&p).await {
                Ok(address) => Outcome::Connected {
                    address,
                    source: super::Source::Existing,
                },
                Err(e) => Outcome::NoVpn {
                    reasons: vec![format!("the saved profile did not connect: {e}")],
                },
            },
            saved => bring_up(saved.as_deref(), &mut steps).await,
        };
        let reasons = match (outcome, steps.connected.take()) {
            (Outcome::Connected { address, .. }, Some(m)) => match plumb(&node, address).await {
                Ok(()) => {
                    tracing::info!("VPN connected with address {address} (try {attempt})");
                    return watch(node, tunnel, m).await;
                }
                Err(e) => {
                    let _ = node.docker.remove(&tunnel.container).await;
                    vec![format!("the router could not be set up: {e}")]
                }
            },
            (Outcome::NoVpn { reasons }, _) => reasons,
            (Outcome::Connected { .. }, None) => vec!["no management connection".into()],
        };
        wait = backoff.next_wait();
        tracing::info!(
            "VPN still not up: {}; next try in {}s",
            reasons.join("; "),
            wait.as_secs()
        );
    }
}

/// Routes the tunnel through the router with `address`, and tells the server.
async fn plumb(node: &Node, address: Ipv4Addr) -> Result<(), PlumbError> {
    node.hub.connect_vpn(address).await?;
    node.set_vpn_address(Some(address));
    node.observed.vpn_state(VpnState::Connected, Some(address));
    with_backoff("registering the VPN address", || {
        node.client.set_ip(Some(address))
    })
    .await?;
    Ok(())
}

/// Follows OpenVPN: a new address or a reconnect re-plumbs and re-registers; a lost management
/// connection (the container stopped or was restarted) brings the container back and waits for
/// it to connect again.
async fn watch(node: Arc<Node>, tunnel: Tunnel, mut m: Management) {
    loop {
        match m.next_change().await {
            Ok(s) if s.connected() => {
                if let Some(a) = s.address {
                    tracing::info!("VPN connected again with address {a}");
                    node.observed.vpn_reconnected();
                    if let Err(e) = plumb(&node, a).await {
                        tracing::warn!("re-plumbing the VPN: {e}");
                    }
                }
            }
            Ok(s) => {
                tracing::info!(
                    "VPN state {}; forwarding to peers paused until CONNECTED",
                    s.name
                );
                node.observed
                    .vpn_state(VpnState::Tunnel(s.name.clone()), node.vpn_address());
                pause(&node).await;
            }
            Err(e) => {
                tracing::warn!(
                    "lost OpenVPN's management connection ({e}); bringing the tunnel back"
                );
                node.observed.vpn_state(VpnState::Lost, node.vpn_address());
                pause(&node).await;
                m = recover(&node, &tunnel).await;
            }
        }
    }
}

/// Holds back what goes to peers while the tunnel is not connected.
async fn pause(node: &Node) {
    if let Err(e) = node.hub.set_tunnel_up(false).await {
        tracing::warn!("pausing forwarding to peers: {e}");
    }
}

/// Waits (starting the container again if it is not running) until OpenVPN connects again.
async fn recover(node: &Node, tunnel: &Tunnel) -> Management {
    let mut backoff = Backoff::from(Duration::from_secs(1));
    loop {
        match node.docker.running(&tunnel.container).await {
            Ok(Some(true)) => {}
            Ok(Some(false)) => {
                if let Err(e) = node.docker.start(&tunnel.container).await {
                    tracing::warn!("starting the OpenVPN container again: {e}");
                }
            }
            Ok(None) => {
                if let Err(e) = tunnel.start_container().await {
                    tracing::warn!("re-creating the OpenVPN container: {e}");
                }
            }
            Err(e) => tracing::warn!("asking Docker about the OpenVPN container: {e}"),
        }
        match tunnel.wait_connected(tunnel.timeout).await {
            Ok((m, a)) => {
                node.observed.vpn_reconnected();
                match plumb(node, a).await {
                    Ok(()) => tracing::info!("VPN back with address {a}"),
                    Err(e) => tracing::warn!("re-plumbing the VPN: {e}"),
                }
                return m;
            }
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!("VPN not back yet: {e}; next try in {}s", wait.as_secs());
                tokio::time::sleep(wait).await;
            }
        }
    }
}
