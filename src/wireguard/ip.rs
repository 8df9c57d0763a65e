//! Where a WireGuard device's decrypted packets go and where the packets it encrypts come from
//! (gotatun's [`IpSend`] and [`IpRecv`]): the node's data plane (its tunnel port: no device
//! between them), or the hub's turn-around between the peers it provisioned.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gotatun::packet::{Ip, Packet, PacketBufPool};
use gotatun::tun::{IpRecv, IpSend, MtuWatcher};
use tokio::sync::mpsc;

use crate::net::dataplane::{Attached, Segments, TunnelEnds};

/// The data plane's port as the device's two ends: what the peer sent is handed to the routers
/// ([`RouterOut`]), what they send to VPN peers is encrypted toward the peer ([`RouterIn`]).
/// `None` while another device holds the port.
pub fn router_ends(ends: TunnelEnds, mtu: u16, first: Vec<u8>) -> Option<(RouterOut, RouterIn)> {
    let attached = ends.attach()?;
    let into = RouterIn {
        attached,
        mtu,
        first: Some(first),
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

/// Takes what the routers send to VPN peers, a super-packet cut to its segments. `first` goes
/// out before anything is taken. A packet that cannot be cut or copied is dropped and counted
/// with the data plane's tunnel drops, never an error (an error would end the device's reading).
pub struct RouterIn {
    attached: Attached,
    mtu: u16,
    first: Option<Vec<u8>>,
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
        self.ends.deliver(&packet.into_bytes());
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
        pool: &mut PacketBufPool,
    ) -> io::Result<impl Iterator<Item = Packet<Ip>> + Send + 'a> {
        self.ready.clear();
        if let Some(first) = self.first.take() {
            self.ready.extend(packet_of(pool, &first));
        }
        while self.ready.is_empty() {
            let Some(mut out) = self.attached.recv().await else {
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

/// A UDP datagram without payload from `from` to `to` (port 9, discard): what a node sends
/// into its tunnel to start the first handshake at once rather than at the first keepalive.
pub fn probe_packet(from: Ipv4Addr, to: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&from.octets());
    p[16..20].copy_from_slice(&to.octets());
    let sum = netstack::checksum::complete(0, &p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20..22].copy_from_slice(&9u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&8u16.to_be_bytes());
    p
}

/// Packets the hub turned around, and those it dropped.
#[derive(Debug, Default)]
pub struct HubCounters {
    pub forwarded: AtomicU64,
    /// Not IPv4, for no peer the hub provisioned (the hub itself included), or for one of
    /// another group than the sender's.
    pub dropped: AtomicU64,
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

/// Packets turned around but not yet encrypted, before the hub drops more.
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
        let sent = self.passes(&packet) && self.tx.try_send(packet).is_ok();
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
