//! The built-in VPN on WireGuard: the server itself is the hub, in its own process. It listens
//! on one UDP port, admits the nodes whose public keys it was given at `GET /vpn` (each with
//! its fixed address, as the built-in OpenVPN gives it), and turns a packet from one node around
//! to the node it is addressed to, if both are of one collaboration. Nothing else: no TUN
//! device, no route, no root, and no packet for any address but an admitted node's of the
//! sender's collaboration (the OpenVPN server's `client-to-client` lets any client reach any
//! other; here a collaboration's nodes reach no other collaboration's, whatever their routers
//! admit).
//!
//! The hub's key is kept in the database (as the built-in PKI's keys are), so replicas and
//! restarts keep it; admitted keys are read from the database every few seconds, so a node
//! admitted or deleted through another replica is followed.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use gotatun::device::{Device, Peer};
use gotatun::x25519::{PublicKey, StaticSecret};
use ipnet::Ipv4Net;

use crate::api::{CollaborationId, MeshPeer, NodeId};
use crate::server::pki::BuiltinVpn;
use crate::server::store::{self, Store, StoreError};
use crate::wireguard::ip::{probe_network, HubCounters, HubIp, HubOut};
use crate::wireguard::keys::{decode_key, encode_key, KeyPair};
use crate::wireguard::profile::WgProfile;
use crate::wireguard::udp;
use crate::wireguard::MTU;

/// Seconds between keepalives a node sends: keeps NAT bindings on the way open. The hub sends
/// its own too, so that, restarted, it shakes hands with each node where the node was last
/// heard from within this time, rather than waiting for the node's next rekey (two minutes).
const KEEPALIVE: u16 = 25;
/// How often admitted keys are read again from the database.
const FOLLOW: Duration = Duration::from_secs(3);

type HubDevice = Device<(udp::Factory, HubIp, HubOut)>;

/// Where a node's packets come from now: `None` if the hub has not heard from it, `Some(None)`
/// if from no place another node could reach (loopback: it comes through `GET /vpn/tcp`).
type Heard = Option<Option<String>>;

/// Why the hub could not start or admit a node.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the WireGuard hub cannot listen on UDP port {port}: {source}")]
    Listen {
        port: u16,
        source: gotatun::device::Error,
    },
    #[error("the database's WireGuard key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The running hub.
pub struct WgHub {
    device: HubDevice,
    ip: HubIp,
    public: [u8; 32],
    vpn: BuiltinVpn,
    store: Store,
}

impl std::fmt::Debug for WgHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgHub")
            .field("public", &encode_key(&self.public))
            .field("port", &self.vpn.port())
            .finish_non_exhaustive()
    }
}

impl WgHub {
    /// Starts the hub on `vpn.port` with the database's key (made on the first start) and the
    /// nodes admitted so far.
    pub async fn start(store: &Store, vpn: &BuiltinVpn) -> Result<Arc<WgHub>, HubError> {
        let mut db = store.connection().await?;
        let secret = match store::secret(&mut db, "wireguard").await? {
            Some(kept) => kept,
            None => {
                let made = KeyPair::generate().map_err(|e| HubError::Key(e.to_string()))?;
                let text = encode_key(&made.secret.to_bytes());
                store::keep_secret(&mut db, "wireguard", &text).await?
            }
        };
        let secret =
            StaticSecret::from(decode_key(&secret).map_err(|e| HubError::Key(e.to_string()))?);
        let public = PublicKey::from(&secret).to_bytes();
        let (ip, out) = HubIp::new(MTU);
        let port = vpn.port();
        let device = gotatun::device::build()
            .with_udp(udp::Factory::default())
            .with_ip_pair(ip.clone(), out)
            .with_private_key(secret)
            .with_listen_port(port)
            // A device without peers has no socket: it is brought up once it has one (`sync`).
            .suspended(true)
            .build()
            .await
            .map_err(|source| HubError::Listen { port, source })?;
        let hub = Arc::new(WgHub {
            device,
            ip,
            public,
            vpn: vpn.clone(),
            store: store.clone(),
        });
        hub.sync().await?;
        tracing::info!(
            "WireGuard hub on UDP port {port} (bound once it admits a node), public key {}",
            encode_key(&public)
        );
        Ok(hub)
    }

    /// The hub's UDP port.
    pub fn port(&self) -> u16 {
        self.vpn.port()
    }

    /// What the hub forwarded and dropped.
    pub fn counters(&self) -> Arc<HubCounters> {
        Arc::clone(&self.ip.counters)
    }

    /// Admits `node` with `key` and gives its profile; `None` if another node holds that key.
    /// `proxy` is where the node takes WireGuard over TCP instead (`GET /vpn/tcp` on this
    /// server), if it asked for that.
    pub async fn admit(
        &self,
        node: NodeId,
        key: &[u8; 32],
        proxy: Option<String>,
    ) -> Result<Option<WgProfile>, HubError> {
        let Some(address) = self.vpn.address_of(node) else {
            return Err(HubError::Key(format!(
                "the VPN subnet has no address for node {node}"
            )));
        };
        let mut tx = self.store.write().await?;
        if !store::set_wireguard_key(&mut tx, node, &encode_key(key)).await? {
            return Ok(None);
        }
        store::commit(tx).await?;
        self.sync().await?;
        let subnet = self.vpn.vpn_subnet().map_err(HubError::Key)?;
        Ok(Some(WgProfile {
            address: Ipv4Net::new(address, subnet.prefix_len())
                .map_err(|e| HubError::Key(e.to_string()))?,
            mtu: Some(MTU),
            peer_key: self.public,
            endpoint: Some(format!("{}:{}", self.vpn.remote, self.vpn.port())),
            proxy,
            allowed: vec![subnet],
            keepalive: Some(KEEPALIVE),
        }))
    }

    /// Makes the device's peers what the database admits: a new or changed key is added (where
    /// its node was last heard from, if known), a removed one (a deleted node) dropped with its
    /// sessions; and keeps where each node's packets now come from.
    pub async fn sync(&self) -> Result<(), HubError> {
        let mut db = self.store.connection().await?;
        // key -> (address, where last heard from)
        let mut wanted: HashMap<[u8; 32], (Ipv4Addr, Option<String>)> = HashMap::new();
        let mut groups = HashMap::new();
        for p in store::wireguard_peers(&mut db).await? {
            match (decode_key(&p.public_key), self.vpn.address_of(p.node_id)) {
                (Ok(k), Some(a)) => {
                    wanted.insert(k, (a, p.endpoint));
                    groups.insert(a, p.collaboration_id);
                }
                _ => tracing::warn!(
                    "node {}: its WireGuard key or address is unusable; not admitted",
                    p.node_id
                ),
            }
        }
        drop(db);
        // key -> (allowed networks, where its packets come from now)
        let have: HashMap<[u8; 32], (Vec<String>, Heard)> = self
            .device
            .peers()
            .await
            .into_iter()
            .map(|p| {
                let mut ips: Vec<String> =
                    p.peer.allowed_ips.iter().map(ToString::to_string).collect();
                ips.sort();
                let endpoint = p
                    .peer
                    .endpoint
                    .map(|e| (!e.ip().is_loopback()).then(|| e.to_string()));
                (p.peer.public_key.to_bytes(), (ips, endpoint))
            })
            .collect();
        for key in have.keys().filter(|k| !wanted.contains_key(*k)) {
            let _ = self.device.remove_peer(&PublicKey::from(*key)).await;
        }
        let mut moved = Vec::new();
        for (key, (address, kept)) in &wanted {
            // The node's address, and its probe address (its probes renew the session).
            let nets = [
                ipnetwork::IpNetwork::V4(ipnetwork::Ipv4Network::from(*address)),
                probe_network(*address),
            ];
            let mut expected: Vec<String> = nets.iter().map(ToString::to_string).collect();
            expected.sort();
            match have.get(key) {
                Some((ips, now)) if *ips == expected => {
                    if let Some(now) = now.as_ref().filter(|n| *n != kept) {
                        moved.push((encode_key(key), now.clone()));
                    }
                }
                _ => {
                    let mut peer = Peer::new(PublicKey::from(*key)).with_allowed_ips(nets);
                    if let Some(e) = kept.as_deref().and_then(|e| e.parse().ok()) {
                        peer = peer.with_endpoint(e);
                    }
                    peer.keepalive = Some(KEEPALIVE);
                    let _ = self.device.add_or_update_peer(peer).await;
                }
            }
        }
        if !moved.is_empty() {
            let mut tx = self.store.write().await?;
            for (key, endpoint) in &moved {
                store::set_wireguard_endpoint(&mut tx, key, endpoint.as_deref()).await?;
            }
            // The nodes' lists of direct peers carry the endpoints: their waits look again.
            store::count_change(&mut tx).await?;
            store::commit(tx).await?;
        }
        let any = !wanted.is_empty();
        self.ip.set_peers(groups);
        if any {
            // Binds the port the first time; a no-op once the device is up.
            let port = self.vpn.port();
            self.device
                .resume()
                .await
                .map_err(|source| HubError::Listen { port, source })?;
        }
        Ok(())
    }

    /// The other admitted nodes of `node`'s collaboration that the hub has heard from, as
    /// WireGuard peers `node` may reach directly (none if the configuration says `direct:
    /// false`). Where the hub heard a node from is where its tunnel's socket is seen from
    /// outside, so another node behind no NAT, or behind one that keeps a socket's mapping
    /// whoever it sends to, reaches it there.
    pub async fn mesh(
        &self,
        db: &mut store::Db,
        node: NodeId,
        collaboration: CollaborationId,
    ) -> Result<Vec<MeshPeer>, StoreError> {
        if !self.vpn.direct {
            return Ok(Vec::new());
        }
        Ok(store::wireguard_peers(db)
            .await?
            .into_iter()
            .filter(|p| p.collaboration_id == collaboration.0 && p.node_id != node)
            .filter_map(|p| {
                Some(MeshPeer {
                    address: self.vpn.address_of(p.node_id)?.to_string(),
                    endpoint: p.endpoint?,
                    public_key: p.public_key,
                })
            })
            .collect())
    }

    /// Follows the database's admitted keys (other replicas, deleted nodes) until the server
    /// stops.
    pub async fn follow(self: Arc<Self>) {
        loop {
            tokio::time::sleep(FOLLOW).await;
            if let Err(e) = self.sync().await {
                tracing::warn!("WireGuard hub: reading admitted nodes: {e}");
            }
        }
    }
}
