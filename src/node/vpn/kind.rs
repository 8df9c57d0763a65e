//! Which tunnel a profile is for, and the node's tunnel that takes either: the server's profile
//! decides (an OpenVPN profile starts the OpenVPN client container, a WireGuard one the tunnel
//! in the node's process), so a node follows its server's choice without a setting of its own.
//!
//! OpenVPN's tunnel is the link `tun0`, which the routing plan routes the VPN subnet by;
//! WireGuard's has no link (it attaches to the data plane's tunnel port), so the plan's rules
//! for `tun0` then match nothing and only the subnet's unreachable route is left. The kinds
//! differ in their MTU too, which the hub namespace is made with at start: the kind of the
//! profile kept from the last start, or of the server's first profile. A profile of the other
//! kind later still works, on the MTU the hub has.

use std::net::Ipv4Addr;
use std::path::Path;

use super::openvpn::{self, OpenVpn, TunnelError};
use super::wireguard::{self, WgError, WireGuard};
use super::{Change, StepError, Tunnel};
use crate::node::client::ServerClient;
use crate::node::config::NodeConfig;
use crate::node::hub::TunnelLink;
use crate::wireguard::profile::is_wireguard;

/// The kind of a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    OpenVpn,
    WireGuard,
}

impl Kind {
    /// The kind `profile` is for.
    pub fn of(profile: &str) -> Kind {
        if is_wireguard(profile) {
            Kind::WireGuard
        } else {
            Kind::OpenVpn
        }
    }

    /// The tunnel's link in the hub namespace (OpenVPN's; WireGuard makes none) and MTU:
    /// OpenVPN's default `tun-mtu`, or WireGuard's 1420 (its framing fits a 1500-byte path).
    pub fn link(self) -> TunnelLink {
        TunnelLink {
            name: "tun0",
            mtu: match self {
                Kind::OpenVpn => 1500,
                Kind::WireGuard => crate::wireguard::MTU,
            },
        }
    }

    /// The file in the VPN folder that keeps a profile of this kind.
    fn file(self) -> &'static str {
        match self {
            Kind::OpenVpn => openvpn::PROFILE,
            Kind::WireGuard => wireguard::PROFILE,
        }
    }

    fn other(self) -> Kind {
        match self {
            Kind::OpenVpn => Kind::WireGuard,
            Kind::WireGuard => Kind::OpenVpn,
        }
    }

    /// The kind of the profile kept in the VPN folder `dir`, if there is one.
    pub fn saved(dir: &Path) -> Option<Kind> {
        [Kind::WireGuard, Kind::OpenVpn]
            .into_iter()
            .find(|k| dir.join(k.file()).exists())
    }
}

/// The kind the hub namespace is made for at start: the kept profile's or, with none kept,
/// the server's first profile's (kept, so the start-up order tries it first). Without a
/// profile to go by, OpenVPN's.
pub async fn at_start(client: &ServerClient, config: &NodeConfig) -> Kind {
    let dir = &config.task_dir.join("vpn");
    let server = format!("{}{}", config.server_url, config.api_path);
    if let Err(e) = keep_to(dir, &server) {
        tracing::warn!("the VPN folder {}: {e}", dir.display());
    }
    if let Some(kind) = Kind::saved(dir) {
        return kind;
    }
    if config.vpn_subnet.is_none() {
        return Kind::OpenVpn;
    }
    let key = WireGuard::keys(dir).ok().map(|k| k.public_b64());
    let Ok(profile) = client
        .new_profile(key.as_deref(), config.vpn_over_tcp)
        .await
    else {
        return Kind::OpenVpn;
    };
    let kind = Kind::of(&profile);
    if let Err(e) = crate::private::file(&dir.join(kind.file()), profile.as_bytes()) {
        tracing::warn!("keeping the VPN profile in {}: {e}", dir.display());
    }
    kind
}

/// Which server the VPN folder's key and profiles are for.
const SERVER: &str = "server";

/// Keeps the VPN folder `dir` to one server: a key and profiles kept for another are forgotten
/// (eduVPN asks for a WireGuard key per server; another server's profiles would not connect).
/// A folder that names no server is taken as this one's.
fn keep_to(dir: &Path, server: &str) -> std::io::Result<()> {
    crate::private::dir(dir)?;
    let file = dir.join(SERVER);
    match std::fs::read_to_string(&file) {
        Ok(kept) if kept.trim() == server => return Ok(()),
        Ok(kept) => {
            tracing::warn!(
                "the VPN folder was {}'s: its WireGuard key and profiles are forgotten",
                kept.trim()
            );
            for old in [wireguard::KEY, wireguard::PROFILE, openvpn::PROFILE] {
                match std::fs::remove_file(dir.join(old)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    crate::private::file(&file, format!("{server}\n").as_bytes())
}

/// Why the tunnel of either kind failed.
#[derive(Debug, thiserror::Error)]
pub enum AnyError {
    #[error(transparent)]
    OpenVpn(#[from] TunnelError),
    #[error(transparent)]
    WireGuard(#[from] WgError),
    #[error("no tunnel has been started")]
    NotStarted,
}

impl StepError for AnyError {
    fn server_silent(&self) -> bool {
        match self {
            AnyError::OpenVpn(e) => e.server_silent(),
            AnyError::WireGuard(e) => e.server_silent(),
            AnyError::NotStarted => false,
        }
    }
}

/// The node's tunnel: OpenVPN or WireGuard, as the profile in hand is.
#[derive(Debug)]
pub struct NodeTunnel {
    pub openvpn: OpenVpn,
    pub wireguard: WireGuard,
    active: Option<Kind>,
}

impl NodeTunnel {
    pub fn new(openvpn: OpenVpn, wireguard: WireGuard) -> NodeTunnel {
        NodeTunnel {
            openvpn,
            wireguard,
            active: None,
        }
    }

    /// The tunnel of `node`, either kind.
    pub fn of(node: &crate::node::state::Node, subnet: ipnet::Ipv4Net) -> NodeTunnel {
        NodeTunnel::new(OpenVpn::of(node, subnet), WireGuard::of(node, subnet))
    }

    /// Removes the profile kept for the kind other than `kind`.
    fn forget_other(&self, kind: Kind) {
        let _ = std::fs::remove_file(self.wireguard.dir.join(kind.other().file()));
    }
}

impl Tunnel for NodeTunnel {
    type Error = AnyError;

    fn saved_profile(&self) -> Option<String> {
        self.wireguard
            .saved_profile()
            .or_else(|| self.openvpn.saved_profile())
    }

    /// Keeps `profile` with its kind, and forgets the other kind's: the next start tries it.
    fn save(&mut self, profile: &str) -> Result<(), AnyError> {
        let kind = Kind::of(profile);
        match kind {
            Kind::WireGuard => self.wireguard.save(profile)?,
            Kind::OpenVpn => self.openvpn.save(profile)?,
        }
        self.forget_other(kind);
        Ok(())
    }

    /// Each kind keeps the profile it connects with; the other kind's is forgotten here.
    async fn connect(&mut self, profile: &str) -> Result<Ipv4Addr, AnyError> {
        let kind = Kind::of(profile);
        if self.active.is_some_and(|k| k != kind) {
            self.remove().await;
        }
        self.active = Some(kind);
        self.forget_other(kind);
        match kind {
            Kind::OpenVpn => Ok(self.openvpn.connect(profile).await?),
            Kind::WireGuard => Ok(self.wireguard.connect(profile).await?),
        }
    }

    async fn next_change(&mut self) -> Change {
        match self.active {
            Some(Kind::OpenVpn) => self.openvpn.next_change().await,
            Some(Kind::WireGuard) => self.wireguard.next_change().await,
            None => Change::Lost("no tunnel has been started".into()),
        }
    }

    async fn recover(&mut self) -> Result<Ipv4Addr, AnyError> {
        match self.active {
            Some(Kind::OpenVpn) => Ok(self.openvpn.recover().await?),
            Some(Kind::WireGuard) => Ok(self.wireguard.recover().await?),
            None => Err(AnyError::NotStarted),
        }
    }

    async fn remove(&mut self) {
        match self.active.take() {
            Some(Kind::OpenVpn) => self.openvpn.remove().await,
            Some(Kind::WireGuard) => self.wireguard.remove().await,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vpn_folder_keeps_to_one_server() {
        let dir = std::env::temp_dir().join(format!("algonet-kind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = WireGuard::keys(&dir).expect("a key").public_b64();
        std::fs::write(dir.join(wireguard::PROFILE), "[Interface]\n").expect("a profile");
        keep_to(&dir, "https://a.example/api").expect("taken as a's");
        keep_to(&dir, "https://a.example/api").expect("still a's");
        assert_eq!(WireGuard::keys(&dir).expect("kept").public_b64(), first);
        assert_eq!(Kind::saved(&dir), Some(Kind::WireGuard));
        keep_to(&dir, "https://b.example/api").expect("now b's");
        assert_eq!(Kind::saved(&dir), None, "a's profile forgotten");
        assert_ne!(WireGuard::keys(&dir).expect("new").public_b64(), first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_profile_names_its_kind() {
        assert_eq!(
            Kind::of("client\ndev tun\n<cert>\n</cert>\n"),
            Kind::OpenVpn
        );
        assert_eq!(
            Kind::of("[Interface]\nAddress = 10.76.0.2/16\n"),
            Kind::WireGuard
        );
        assert_eq!(Kind::WireGuard.link().mtu, 1420);
        assert_eq!(Kind::OpenVpn.link().name, Kind::WireGuard.link().name);
    }
}
