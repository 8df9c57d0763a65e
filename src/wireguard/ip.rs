//! Where a WireGuard device's decrypted packets go and where the packets it encrypts come from
//! (gotatun's [`IpSend`] and [`IpRecv`]): the node's data plane (its tunnel port: no device
//! between them), or the hub's turn-around between the peers it provisioned.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gotatun::packet::{Ip, Packet, PacketBufPool};
use gotatun::tun::{IpRecv, IpSend, MtuWatcher};
use tokio::sync::mpsc;

use crate::net::dataplane::{Attached, Segments, TunnelEnds};

/// The data plane's port as the device's two ends: what the peer sent is handed to the routers
/// ([`RouterOut`]), what they send to VPN peers is encrypted toward the peer ([`RouterIn`]), and
/// so is whatever the tunnel itself sends through `probes` (see [`probe`]). `None` while
/// another device holds the port.
pub fn router_ends(
    ends: TunnelEnds,
    mtu: u16,
    probes: mpsc::Receiver<Vec<u8>>,
) -> Option<(RouterOut, RouterIn)> {
    let attached = ends.attach()?;
    let into = RouterIn {
        attached,
        mtu,
        probes,
        pool: super::warm_pool(),
        room: Segments::default(),
        ready: Vec::new(),
    };
    Some((RouterOut { ends }, into))
}

/// Hands what the peer sent to the routers.
#[derive(Clone, Debug)]
pub struct RouterOut {
    ends: TunnelEnds,
}

/// Takes what the routers send to VPN peers, a super-packet cut to its segments, and the
/// tunnel's own probes. A packet that cannot be cut or copied is dropped and counted with the
/// data plane's tunnel drops, never an error (an error would end the device's reading).
pub struct RouterIn {
    attached: Attached,
    mtu: u16,
    probes: mpsc::Receiver<Vec<u8>>,
    /// Where the packets handed to the device are copied to (not the device's own pool: see
    /// [`super::warm_pool`]).
    pool: PacketBufPool,
    room: Segments,
    ready: Vec<Packet<Ip>>,
}

impl std::fmt::Debug for RouterIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterIn")
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

impl IpSend for RouterOut {
    async fn send(&mut self, packet: Packet<Ip>) -> io::Result<()> {
        let bytes = packet.into_bytes();
        // A probe has done its work once decrypted.
        if !is_probe(&bytes) {
            self.ends.deliver(&bytes).await;
        }
        Ok(())
    }
}

/// A copy of `bytes` in a packet of `pool`, if it is an IP packet that fits.
fn packet_of(pool: &PacketBufPool, bytes: &[u8]) -> Option<Packet<Ip>> {
    let mut packet = pool.get();
    if bytes.len() > packet.len() {
        return None;
    }
    packet.truncate(bytes.len());
    packet.copy_from_slice(bytes);
    packet.try_into_ip().ok()
}

impl IpRecv for RouterIn {
    async fn recv<'a>(
        &'a mut self,
        _pool: &mut PacketBufPool,
    ) -> io::Result<impl Iterator<Item = Packet<Ip>> + Send + 'a> {
        let pool = &self.pool;
        self.ready.clear();
        // Probes first: the routers' packets may never leave a pause under load.
        while let Ok(probe) = self.probes.try_recv() {
            self.ready.extend(packet_of(pool, &probe));
        }
        while self.ready.is_empty() {
            let next = tokio::select! {
                biased;
                out = self.attached.recv() => out,
                Some(probe) = self.probes.recv() => {
                    self.ready.extend(packet_of(pool, &probe));
                    continue;
                }
            };
            let Some(mut out) = next else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the data plane has stopped",
                ));
            };
            let (ready, attached) = (&mut self.ready, &self.attached);
            let cut = out.packets(&mut self.room, |p| match packet_of(pool, p) {
                Some(ip) => ready.push(ip),
                None => attached.lost(),
            });
            if cut.is_err() {
                self.attached.lost();
            }
        }
        Ok(self.ready.drain(..))
    }

    fn mtu(&self) -> MtuWatcher {
        MtuWatcher::new(self.mtu)
    }
}

/// The IPv6 address that stands for the WireGuard peer with VPN address `v4` in a device's
/// table (`fd61:6c67:6f6e::/96` and the IPv4 address; the hub's is the subnet's network
/// address): no packet of the routers has one, so it is routed to that peer whichever path the
/// VPN addresses take.
pub fn probe_address(v4: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from_bits(PROBE_NET.to_bits() | u128::from(v4.to_bits()))
}

/// The /96 every probe address is in.
const PROBE_NET: Ipv6Addr = Ipv6Addr::new(0xfd61, 0x6c67, 0x6f6e, 0, 0, 0, 0, 0);

/// [`probe_address`] as a network of one, for a peer's allowed addresses.
pub fn probe_network(v4: Ipv4Addr) -> ipnetwork::IpNetwork {
    ipnetwork::IpNetwork::V6(ipnetwork::Ipv6Network::from(probe_address(v4)))
}

/// An IPv6 packet with no payload (next header 59) from `from`'s probe address to `to`'s: data
/// a node sends the hub and its direct peers every few seconds. WireGuard renews a session
/// only when data is sent (keepalives are not data), so without them an idle tunnel's session
/// expires; with them a fresh handshake proves a path both ways. The receiving end drops it
/// once decrypted; the first also starts the first handshake at once.
pub fn probe(from: Ipv4Addr, to: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[6] = 59;
    p[7] = 64;
    p[8..24].copy_from_slice(&probe_address(from).octets());
    p[24..40].copy_from_slice(&probe_address(to).octets());
    p
}

/// Whether `packet` is a [`probe`].
pub fn is_probe(packet: &[u8]) -> bool {
    packet.len() == 40
        && packet[0] >> 4 == 6
        && packet[6] == 59
        && packet[8..20] == PROBE_NET.octets()[..12]
}

/// Packets the hub turned around, and those it dropped; the connections carrying nodes'
/// WireGuard to it over TCP.
#[derive(Debug, Default)]
pub struct HubCounters {
    pub forwarded: AtomicU64,
    /// Not IPv4, for no peer the hub provisioned (the hub itself included), for one of
    /// another group than the sender's, or the hub stopping.
    pub dropped: AtomicU64,
    /// Open now (`GET /vpn/tcp`).
    pub tcp_connections: AtomicU64,
}

/// Peers that may reach each other through the hub: the built-in hub's are a collaboration's
/// nodes.
pub type Group = i64;

/// The hub's side of its WireGuard device: a packet a peer sent goes back out to the peer it is
/// addressed to, if the hub provisioned one with that address in the sender's group; anything
/// else is dropped and counted. Sources are the device's to check (a peer's packets carry only
/// its own address).
#[derive(Clone, Debug)]
pub struct HubIp {
    tx: mpsc::Sender<Packet>,
    peers: Arc<Mutex<HashMap<Ipv4Addr, Group>>>,
    pub counters: Arc<HubCounters>,
}

/// The receiving end of a [`HubIp`]: what goes back out.
#[derive(Debug)]
pub struct HubOut {
    rx: mpsc::Receiver<Packet>,
    mtu: u16,
}

/// Packets turned around but not yet encrypted; past that the hub takes no more datagrams
/// until some are (see [`super::udp`] for the socket's buffer that holds them meanwhile).
const HUB_QUEUE: usize = 1024;

impl HubIp {
    pub fn new(mtu: u16) -> (HubIp, HubOut) {
        let (tx, rx) = mpsc::channel(HUB_QUEUE);
        let hub = HubIp {
            tx,
            peers: Arc::default(),
            counters: Arc::default(),
        };
        (hub, HubOut { rx, mtu })
    }

    /// The addresses of the peers the hub forwards between, each with its group.
    pub fn set_peers(&self, peers: HashMap<Ipv4Addr, Group>) {
        *crate::sync::lock(&self.peers) = peers;
    }

    /// The source and destination of an IPv4 packet.
    fn ends(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
        let at = |i: usize| Ipv4Addr::new(packet[i], packet[i + 1], packet[i + 2], packet[i + 3]);
        (packet.len() >= 20 && packet[0] >> 4 == 4).then(|| (at(12), at(16)))
    }

    /// Whether the hub turns `packet` around: from a peer to another of its group.
    fn passes(&self, packet: &[u8]) -> bool {
        let Some((from, to)) = Self::ends(packet) else {
            return false;
        };
        let peers = crate::sync::lock(&self.peers);
        matches!((peers.get(&from), peers.get(&to)), (Some(a), Some(b)) if a == b)
    }
}

impl IpSend for HubIp {
    async fn send(&mut self, packet: Packet<Ip>) -> io::Result<()> {
        let packet = packet.into_bytes();
        // A node's probe has done its work once decrypted (it renewed the session).
        if is_probe(&packet) {
            return Ok(());
        }
        // Waits for room rather than losing the packet: a loss here would halve a TCP stream's
        // rate; the device's sending half empties the queue on its own.
        let sent = self.passes(&packet) && self.tx.send(packet).await.is_ok();
        let counter = if sent {
            &self.counters.forwarded
        } else {
            &self.counters.dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl IpRecv for HubOut {
    async fn recv<'a>(
        &'a mut self,
        _pool: &mut PacketBufPool,
    ) -> io::Result<impl Iterator<Item = Packet<Ip>> + Send + 'a> {
        loop {
            let Some(p) = self.rx.recv().await else {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "hub closed"));
            };
            // It was an IPv4 packet when it came in.
            if let Ok(ip) = p.try_into_ip() {
                return Ok(std::iter::once(ip));
            }
        }
    }

    fn mtu(&self) -> MtuWatcher {
        MtuWatcher::new(self.mtu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's packet to another of its group waits while the hub's queue is full and is
    /// turned around once there is room: nothing lost, nothing counted as dropped.
    #[tokio::test]
    async fn a_full_hub_queue_holds_the_sender_back_and_loses_nothing() {
        let (a, b) = (Ipv4Addr::new(10, 76, 0, 2), Ipv4Addr::new(10, 76, 0, 3));
        let (mut hub, mut out) = HubIp::new(1420);
        hub.set_peers(HashMap::from([(a, 1), (b, 1)]));
        let pool = PacketBufPool::new(HUB_QUEUE + 1);
        let mut packets: Vec<Packet<Ip>> = (0..=HUB_QUEUE)
            .map(|i| {
                let mut p = Vec::new();
                etherparse::PacketBuilder::ipv4(a.octets(), b.octets(), 64)
                    .udp(5000, 5001)
                    .write(&mut p, &i.to_le_bytes())
                    .expect("a packet");
                packet_of(&pool, &p).expect("an IP packet")
            })
            .collect();
        let last = packets.pop().expect("one more than the queue holds");
        for p in packets {
            hub.send(p).await.expect("taken");
        }
        let counters = Arc::clone(&hub.counters);
        let mut late = tokio::spawn(async move { hub.send(last).await });
        let held = tokio::time::timeout(std::time::Duration::from_millis(100), &mut late).await;
        assert!(held.is_err(), "a packet went past a full queue");
        let mut unused = PacketBufPool::new(1);
        let first = out.recv(&mut unused).await.expect("turned around").count();
        late.await
            .expect("ran")
            .expect("the waiting packet went in");
        assert_eq!(first, 1);
        assert_eq!(
            counters.forwarded.load(Ordering::Relaxed),
            HUB_QUEUE as u64 + 1
        );
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_probe_is_told_apart_from_the_routers_packets() {
        let (a, b) = (Ipv4Addr::new(10, 76, 0, 2), Ipv4Addr::new(10, 76, 1, 3));
        let p = probe(a, b);
        assert!(is_probe(&p));
        assert_eq!(
            probe_address(b).to_string(),
            "fd61:6c67:6f6e::a4c:103",
            "the peer's address in the last 32 bits"
        );
        assert_eq!(&p[24..40], &probe_address(b).octets());
        let mut other = p.clone();
        other[8] = 0xfe; // another IPv6 source: the routers' to drop, not the tunnel's
        assert!(!is_probe(&other));
        assert!(!is_probe(&p[..39]));
        let mut v4 = p.clone();
        v4[0] = 0x45;
        assert!(!is_probe(&v4));
    }
}
