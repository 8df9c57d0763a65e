//! The node's [`Seat`] in the VPN's life: its profiles come from its server, the tunnel is
//! routed through its hub's router and its address registered at the server, its state shown
//! in its status; and how it leaves the VPN as it stops.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::kind::Kind;
use super::lifecycle::Seat;
use super::wireguard::WireGuard;
use super::Profiles;
use crate::node::hub::HubError;
use crate::node::retry::with_backoff;
use crate::node::state::Node;
use crate::node::status::VpnState;

/// Why the router or the server did not take the VPN address.
#[derive(Debug, thiserror::Error)]
pub enum PlumbError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("registering the VPN address: {0}")]
    Register(#[from] crate::api::client::ClientError),
}

impl Profiles for Arc<Node> {
    type Error = crate::api::client::ClientError;

    /// A WireGuard profile has nothing to renew at the server (the key is the node's).
    async fn renew(&self, current: &str) -> Result<Option<String>, Self::Error> {
        match Kind::of(current) {
            Kind::OpenVpn => self.client.renew_profile(current).await.map(Some),
            Kind::WireGuard => Ok(None),
        }
    }

    async fn fetch_new(&self) -> Result<String, Self::Error> {
        let dir = self.config.task_dir.join("vpn");
        let key = match WireGuard::keys(&dir) {
            Ok(k) => Some(k.public_b64()),
            Err(e) => {
                tracing::warn!("{e}; asking for a profile without a WireGuard key");
                None
            }
        };
        self.client
            .new_profile(key.as_deref(), self.config.vpn_over_tcp)
            .await
    }
}

impl Seat for Arc<Node> {
    type PlumbError = PlumbError;

    async fn plumb(&self, address: Ipv4Addr) -> Result<(), PlumbError> {
        self.hub.connect_vpn(address).await?;
        self.set_vpn_address(Some(address));
        self.observed.vpn_state(VpnState::Connected, Some(address));
        with_backoff("registering the VPN address", || {
            self.client.set_ip(Some(address))
        })
        .await?;
        Ok(())
    }

    async fn pause(&self) {
        if let Err(e) = self.hub.set_tunnel_up(false).await {
            tracing::warn!("pausing forwarding to peers: {e}");
        }
    }

    fn record(&self, state: VpnState) {
        let address = match state {
            VpnState::Off | VpnState::Retrying => None,
            _ => self.vpn_address(),
        };
        self.observed.vpn_state(state, address);
    }

    fn reconnected(&self) {
        self.observed.vpn_reconnected();
    }
}

/// The node leaves the VPN as it stops: it clears its address at the server (which ends an
/// eduVPN session it holds for the node) and forgets a kept WireGuard profile, so that the
/// next start asks for one anew rather than waiting on one whose session ended. (A kept
/// OpenVPN profile stays: a new one is a new certificate.)
pub async fn leave(node: &Node) {
    if node.vpn_address().is_some() {
        if let Err(e) = node.client.set_ip(None).await {
            tracing::warn!("clearing the VPN address at the server: {e}");
        }
    }
    let kept = node
        .config
        .task_dir
        .join("vpn")
        .join(super::wireguard::PROFILE);
    if let Err(e) = std::fs::remove_file(&kept) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("forgetting {}: {e}", kept.display());
        }
    }
}
