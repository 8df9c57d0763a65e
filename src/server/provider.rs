//! Which VPN the server provisions its nodes for: none, its own (the built-in PKI whose OpenVPN
//! server runs on the files it writes, or the WireGuard hub it runs itself), or eduVPN's portal
//! as vantage6 uses it.

use std::sync::Arc;

use crate::server::config::EduVpn;
use crate::server::eduvpn::Sessions;
use crate::server::pki::{BuiltinVpn, Pki};
use crate::server::wghub::WgHub;

#[derive(Clone, Debug)]
pub enum VpnProvider {
    /// `GET /vpn` answers 501; nodes run without VPN.
    None,
    /// The built-in PKI; the lock orders issuing and CRL writes within this process.
    Builtin {
        pki: Arc<tokio::sync::Mutex<Pki>>,
        vpn: BuiltinVpn,
    },
    /// The built-in WireGuard hub, in this process.
    WireGuard { hub: Arc<WgHub>, vpn: BuiltinVpn },
    /// eduVPN (API v3), with the sessions this process opened there.
    EduVpn {
        config: EduVpn,
        sessions: Arc<Sessions>,
    },
}

impl VpnProvider {
    /// The built-in PKI, if that is the provider.
    pub fn pki(&self) -> Option<&Arc<tokio::sync::Mutex<Pki>>> {
        match self {
            VpnProvider::Builtin { pki, .. } => Some(pki),
            _ => None,
        }
    }

    /// The WireGuard hub, if this server is one.
    pub fn hub(&self) -> Option<&Arc<WgHub>> {
        match self {
            VpnProvider::WireGuard { hub, .. } => Some(hub),
            _ => None,
        }
    }

    /// Ends what the node holds at eduVPN (its session), if that is the provider: the node
    /// left the VPN.
    pub async fn release(&self, node: crate::api::NodeId) {
        if let VpnProvider::EduVpn { config, sessions } = self {
            sessions.end(node, config).await;
        }
    }

    /// The built-in VPN's settings (either tunnel), if that is the provider: it fixes each
    /// node's address.
    pub fn builtin(&self) -> Option<&BuiltinVpn> {
        match self {
            VpnProvider::Builtin { vpn, .. } | VpnProvider::WireGuard { vpn, .. } => Some(vpn),
            _ => None,
        }
    }
}
