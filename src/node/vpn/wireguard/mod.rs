//! WireGuard as the node's [`Tunnel`], in the node's own process (Mullvad's gotatun): no
//! container, no OpenVPN and no tunnel device. A thread in the hub namespace owns the UDP socket
//! to the hub; the device is attached to the data plane's tunnel port, so decrypted packets go
//! straight to the router and what the router sends to peers straight to the device (the hub
//! namespace has no link for the VPN subnet, whose route stays unreachable). The node's key is
//! made in its VPN folder and never leaves it but its public half (sent with `GET /vpn`).
//!
//! Connected means a handshake with the hub within WireGuard's session lifetime (180 s, after
//! which a session is refused): past that the tunnel is down and the router holds back what
//! goes to peers; it is back at the next handshake. WireGuard renews a session only when data
//! is sent, so the tunnel sends the hub (and each direct peer, see [`super::mesh`]) a probe
//! every 5 s: an idle tunnel stays connected. The device keeps trying by itself; after
//! five minutes without a handshake the tunnel counts as lost (the hub may have forgotten the
//! key: eduVPN does at a profile's expiry and at `/disconnect`, the built-in hub when the node
//! is deleted), and so does a profile whose `Expires` passes, so the node's life brings it back
//! with a new profile. A hub that stays silent is no reason to stop asking for one either: it
//! answers no key it does not know, so silence says nothing of whether it runs.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gotatun::device::Peer;
use gotatun::x25519::PublicKey;
use ipnet::Ipv4Net;
use tokio::sync::{mpsc, oneshot, watch};

use super::mesh::{self, Own};
use super::{Change, StepError, Tunnel};
use crate::api::MeshPeer;
use crate::net::dataplane::TunnelEnds;
use crate::net::netns::Netns;
use crate::wireguard::ip::{probe, probe_network, router_ends};
use crate::wireguard::keys::KeyPair;
use crate::wireguard::profile::{expired, expiry, ProfileError, WgProfile};
use crate::wireguard::tcp;

mod device;
mod health;
use device::run;
pub use health::{Health, Shown};

/// The profile file in the VPN folder; tried first at the next start.
pub const PROFILE: &str = "node.wg.conf";
/// The node's private key in the VPN folder.
pub const KEY: &str = "wireguard.key";
/// A session older than this is refused by both ends (WireGuard's `Reject-After-Time`).
const SESSION: Duration = Duration::from_secs(180);
/// How often the device's state is looked at.
const LOOK: Duration = Duration::from_secs(1);
/// Probes waiting for the device (the hub's first, then the direct peers').
const PROBES: usize = 64;
/// The hub and the direct peers are probed every this many looks.
const PROBE_EVERY: u32 = (mesh::PROBE.as_secs() / LOOK.as_secs()) as u32;
/// Without a handshake for this long the tunnel counts as lost, not down.
const STALE: Duration = Duration::from_secs(300);

/// Why the WireGuard tunnel did not come up.
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the WireGuard profile: {0}")]
    Profile(#[from] ProfileError),
    #[error("the node's WireGuard key: {0}")]
    Key(#[from] crate::wireguard::keys::KeyError),
    #[error("the hub's endpoint {endpoint}: {what}")]
    Endpoint { endpoint: String, what: String },
    #[error("WireGuard address {address} is outside vpn_subnet {subnet}")]
    OutsideSubnet { address: Ipv4Addr, subnet: Ipv4Net },
    #[error("the WireGuard device: {0}")]
    Device(String),
    #[error(transparent)]
    Proxy(#[from] tcp::ClientError),
    #[error("the data plane's tunnel port is held by another tunnel")]
    PortHeld,
    /// no handshake answer from the hub by the deadline (it may not know the key)
    #[error("the WireGuard hub at {endpoint} did not answer a handshake within {secs}s")]
    Silent { endpoint: String, secs: u64 },
    #[error("the WireGuard profile expired ({0})")]
    Expired(String),
}

impl StepError for WgError {
    /// Never: a hub answers no key it does not know, so a new profile may help.
    fn server_silent(&self) -> bool {
        false
    }
}

/// The running device: its thread, what stops it, what it reports.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), crate::net::netns::NetnsError>>>,
    health: watch::Receiver<Health>,
    address: Ipv4Addr,
    /// Where the hub is reached, as the log says it: `host:port`, or the proxy's URL.
    endpoint: String,
    /// When the profile expires, if it says.
    expires: Option<std::time::SystemTime>,
    /// The relay to the hub over TCP, if the hub is reached so.
    relay: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn end(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(r) = self.relay.take() {
            r.abort();
        }
    }
}

/// The node's WireGuard tunnel.
pub struct WireGuard {
    pub ns: Arc<Netns>,
    /// The VPN folder: the profile and the key.
    pub dir: PathBuf,
    pub subnet: Ipv4Net,
    /// The data plane's port the device attaches to.
    pub ends: TunnelEnds,
    /// The tunnel's MTU: the hub namespace's.
    pub mtu: u16,
    pub timeout: Duration,
    /// Where the device's health is shown while it runs.
    pub shown: Shown,
    /// The collaboration's other nodes, as the server lists them, to reach directly.
    pub mesh: watch::Receiver<Vec<MeshPeer>>,
    /// Whether profiles that reach the hub over TCP are asked for (`vpn_over_tcp`): a kept
    /// profile of the other kind is not used.
    pub over_tcp: bool,
    /// The server's URL, which a profile's proxy path is on.
    pub server_url: String,
    /// Authorities trusted for the proxy beside the system's (the node's `ca_file`).
    pub trusted: Vec<reqwest::Certificate>,
    running: Option<Running>,
    /// Whether the last change reported was a connection.
    connected: bool,
}

impl std::fmt::Debug for WireGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireGuard")
            .field("dir", &self.dir)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl WireGuard {
    pub fn new(
        ns: Arc<Netns>,
        ends: TunnelEnds,
        dir: PathBuf,
        subnet: Ipv4Net,
        mtu: u16,
        timeout: Duration,
    ) -> WireGuard {
        WireGuard {
            ns,
            ends,
            dir,
            subnet,
            mtu,
            timeout,
            shown: Shown::default(),
            mesh: watch::channel(Vec::new()).1,
            over_tcp: false,
            server_url: String::new(),
            trusted: Vec::new(),
            running: None,
            connected: false,
        }
    }

    /// The WireGuard tunnel of `node`: in its hub namespace, its folder in `task_dir`, its
    /// health shown in the node's status.
    pub fn of(node: &crate::node::state::Node, subnet: Ipv4Net) -> WireGuard {
        let mut wg = WireGuard::new(
            Arc::clone(&node.hub.ns),
            node.hub.tunnel(),
            node.config.task_dir.join("vpn"),
            subnet,
            node.hub.mtu(),
            Duration::from_secs(node.config.vpn_connect_timeout_secs),
        );
        wg.shown = Arc::clone(&node.observed.wireguard);
        wg.mesh = node.mesh.subscribe();
        wg.over_tcp = node.config.vpn_over_tcp;
        wg.server_url.clone_from(&node.config.server_url);
        // Checked when the configuration was read.
        if let Some(ca) = &node.config.ca_file {
            wg.trusted = crate::api::client::trusted(ca).unwrap_or_default();
        }
        wg
    }

    /// The node's key pair, made in the VPN folder on first use.
    pub fn keys(dir: &std::path::Path) -> Result<KeyPair, WgError> {
        crate::private::dir(dir).map_err(|source| WgError::File {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(KeyPair::load_or_create(&dir.join(KEY))?)
    }

    /// What the device reports, if it runs.
    pub fn health(&self) -> Option<Health> {
        crate::sync::lock(&self.shown).clone()
    }

    async fn start(
        &mut self,
        profile: &WgProfile,
        expires: Option<std::time::SystemTime>,
    ) -> Result<Ipv4Addr, WgError> {
        let address = profile.ip();
        if !self.subnet.contains(&address) {
            return Err(WgError::OutsideSubnet {
                address,
                subnet: self.subnet,
            });
        }
        let keys = Self::keys(&self.dir)?;
        let (at, endpoint, relay) = self.reach(profile).await?;
        // Only the VPN subnet is the tunnel's, whatever the profile allows (eduVPN's allow
        // everything): the rest is never routed to it, nor taken from it.
        let allowed: Vec<ipnetwork::IpNetwork> = profile
            .allowed
            .iter()
            .filter_map(|n| {
                let n = if n.contains(&self.subnet) {
                    self.subnet
                } else {
                    *n
                };
                self.subnet.contains(&n).then_some(n)
            })
            .filter_map(|n| ipnetwork::Ipv4Network::new(n.network(), n.prefix_len()).ok())
            .map(ipnetwork::IpNetwork::V4)
            .collect();
        let mut peer = Peer::new(PublicKey::from(profile.peer_key))
            .with_endpoint(at)
            .with_allowed_ips(allowed)
            // The hub's probe address: what the tunnel sends it to keep its session renewed.
            .with_allowed_ip(probe_network(self.subnet.network()));
        // The probes every few seconds keep NAT bindings open and the session renewed; a
        // keepalive the profile names is kept all the same.
        peer.keepalive = profile.keepalive;
        let (health_tx, health) = watch::channel(Health::default());
        let (stop, stopped) = oneshot::channel();
        let (ready_tx, ready) = oneshot::channel();
        let (probes, probed) = mpsc::channel(PROBES);
        // The first probe starts the first handshake at once, not at the first keepalive.
        let _ = probes.try_send(probe(address, self.subnet.network()));
        let ip = router_ends(self.ends.clone(), self.mtu, probed).ok_or(WgError::PortHeld)?;
        let shown = Arc::clone(&self.shown);
        let own = Own {
            key: keys.public.to_bytes(),
            hub: profile.peer_key,
            address,
            subnet: self.subnet,
        };
        let listed = (self.mesh.clone(), own, probes);
        let proxy = relay.as_ref().map(|r| r.url().to_string());
        let thread = self
            .ns
            .spawn(move || {
                run(
                    keys,
                    (peer, proxy),
                    ip,
                    listed,
                    (health_tx, shown),
                    ready_tx,
                    stopped,
                )
            })
            .map_err(|e| WgError::Device(e.to_string()))?;
        // What the device sends before the relay runs waits in the relay's socket.
        let relay = relay.map(|r| tokio::spawn(r.run()));
        let mut running = Running {
            stop: Some(stop),
            thread: Some(thread),
            health,
            address,
            endpoint: endpoint.clone(),
            expires,
            relay,
        };
        match ready.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                running.end();
                return Err(WgError::Device(e));
            }
            Err(_) => {
                running.end();
                return Err(WgError::Device("the device's thread ended".into()));
            }
        }
        let wait = running.health.wait_for(Health::connected);
        let shook = matches!(tokio::time::timeout(self.timeout, wait).await, Ok(Ok(_)));
        if !shook {
            running.end();
            return Err(WgError::Silent {
                endpoint,
                secs: self.timeout.as_secs(),
            });
        }
        self.running = Some(running);
        self.connected = true;
        Ok(address)
    }

    /// Where the device sends to reach the hub, how the log names the hub, and where the
    /// profile names a proxy (a path is on the node's server), the relay that carries the
    /// device's datagrams to it over TCP: its socket on the hub namespace's loopback (the
    /// device's endpoint), its connection made from the node's own namespace, as the node's
    /// calls to its server are.
    async fn reach(
        &self,
        profile: &WgProfile,
    ) -> Result<(SocketAddr, String, Option<tcp::Client>), WgError> {
        let Some(proxy) = &profile.proxy else {
            let at = resolve(profile.endpoint.as_deref().unwrap_or_default()).await?;
            return Ok((at, at.to_string(), None));
        };
        let url = reqwest::Url::parse(&self.server_url)
            .and_then(|server| server.join(proxy))
            .map_err(|e| WgError::Endpoint {
                endpoint: proxy.clone(),
                what: e.to_string(),
            })?;
        let ns = Arc::clone(&self.ns);
        let bound = tokio::task::spawn_blocking(move || {
            ns.run(|| async { std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) })
        })
        .await
        .map_err(|e| WgError::Device(e.to_string()))?
        .map_err(|e| WgError::Device(e.to_string()))?
        .map_err(|e| WgError::Device(format!("the relay's socket: {e}")))?;
        let relay = tcp::Client::new(url.as_str(), &self.trusted, bound)?;
        Ok((
            relay.endpoint(),
            format!("{url} (WireGuard over TCP)"),
            Some(relay),
        ))
    }
}

/// The hub's endpoint as an IPv4 socket address (names resolved on the host).
async fn resolve(endpoint: &str) -> Result<SocketAddr, WgError> {
    let bad = |what: String| WgError::Endpoint {
        endpoint: endpoint.to_string(),
        what,
    };
    tokio::net::lookup_host(endpoint)
        .await
        .map_err(|e| bad(e.to_string()))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| bad("no IPv4 address".into()))
}

impl Tunnel for WireGuard {
    type Error = WgError;

    /// The kept profile, unless it expired or reaches the hub otherwise than configured (by
    /// UDP or over TCP).
    fn saved_profile(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(PROFILE)).ok()?;
        let over_tcp = WgProfile::parse(&text).ok()?.proxy.is_some();
        (!expired(expiry(&text)) && over_tcp == self.over_tcp).then_some(text)
    }

    fn save(&mut self, profile: &str) -> Result<(), WgError> {
        let path = self.dir.join(PROFILE);
        crate::private::dir(&self.dir)
            .and_then(|()| crate::private::file(&path, profile.as_bytes()))
            .map_err(|source| WgError::File { path, source })
    }

    async fn connect(&mut self, profile: &str) -> Result<Ipv4Addr, WgError> {
        let parsed = WgProfile::parse(profile)?;
        let expires = expiry(profile);
        if expired(expires) {
            let line = profile.lines().next().unwrap_or_default();
            return Err(WgError::Expired(line.trim_start_matches("# ").to_string()));
        }
        self.save(profile)?;
        self.remove().await;
        self.start(&parsed, expires).await
    }

    async fn next_change(&mut self) -> Change {
        let Some(r) = self.running.as_mut() else {
            return Change::Lost("the WireGuard device is not running".into());
        };
        let expires = r.expires;
        let expiry = async move {
            match expires.map(|t| t.duration_since(std::time::SystemTime::now())) {
                Some(left) => tokio::time::sleep(left.unwrap_or_default()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        loop {
            let h = r.health.borrow_and_update().clone();
            if let Some(why) = h.ended {
                return Change::Lost(why);
            }
            if h.handshake_age.is_none_or(|a| a >= STALE) {
                return Change::Lost(format!(
                    "no handshake with the WireGuard hub at {} for {}s",
                    r.endpoint,
                    STALE.as_secs()
                ));
            }
            if h.connected() != self.connected {
                self.connected = h.connected();
                return if self.connected {
                    Change::Connected(r.address)
                } else {
                    Change::Down(format!(
                        "no handshake with the hub at {} for {}s",
                        r.endpoint,
                        h.handshake_age.map_or(0, |a| a.as_secs())
                    ))
                };
            }
            tokio::select! {
                changed = r.health.changed() => if changed.is_err() {
                    return Change::Lost("the WireGuard device's thread ended".into());
                },
                () = &mut expiry => return Change::Lost("the WireGuard profile expired".into()),
            }
        }
    }

    async fn recover(&mut self) -> Result<Ipv4Addr, WgError> {
        let profile = self.saved_profile().ok_or_else(|| WgError::File {
            path: self.dir.join(PROFILE),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        self.connect(&profile).await
    }

    async fn remove(&mut self) {
        if let Some(mut r) = self.running.take() {
            // Joining waits for the device to stop: off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || r.end()).await;
        }
        self.connected = false;
    }
}
