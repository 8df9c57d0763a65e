//! Which of the routers sharing the traffic owns a packet: a keyed hash of the connection's
//! peer and ports, the same for both directions.

use super::*;

/// Mixed into `Config::seed` for [`Router::owner`]'s hash.
pub(super) const SHARD_KEY: u64 = 0x7368_6172_6473_2121;

/// Most routers that may share the traffic.
pub const MAX_SHARDS: usize = 64;

impl Router {
    /// Which router of those sharing the traffic decides on the packet `buf` (see
    /// [`Config::shards`]). A connection belongs to the router chosen by a keyed hash of its
    /// peer's address and port and the node's port: the port on the VPN address for what
    /// comes from the VPN (a mapped port standing for its container's port), the container's
    /// port for what a container sends. Both stay the same through the translation, and a port
    /// on the VPN address is only given to a connection whose two ends hash alike (see
    /// `allocate`), so both directions meet the same router. Flows between two containers of
    /// the node (through its own address) have no peer; they all go to router 0. Never
    /// panics, whatever the bytes (what cannot be parsed is [`Owner::Any`]'s to drop).
    pub fn owner(&self, buf: &[u8]) -> Owner {
        let first_fragment = None;
        if self.config.shards == 1 {
            return Owner::Shard {
                shard: 0,
                first_fragment,
            };
        }
        let (Some(vpn), Ok(p)) = (self.vpn, wire::parse(buf)) else {
            return Owner::Any;
        };
        if p.ip.frag_offset != 0 {
            return Owner::LaterFragment(FragKey::of(&p.ip));
        }
        let (protocol, arrived) = match p.l4 {
            // The quoted packet went the other way: its reverse is how its connection arrives.
            L4::IcmpError { .. } => {
                let Ok(q) = wire::parse_quoted(&buf[p.ip.header_len..p.ip.total_len]) else {
                    return Owner::Any;
                };
                let (qs, qd) = q.l4.ports();
                let reverse = Tuple {
                    src: SocketAddrV4::new(q.dst, qd),
                    dst: SocketAddrV4::new(q.src, qs),
                };
                (q.protocol, reverse)
            }
            L4::EchoRequest { .. } if p.ip.dst == vpn.address => return Owner::Any,
            l4 => {
                let Some(protocol) = l4.protocol() else {
                    return Owner::Any;
                };
                let (sport, dport) = l4.ports();
                let arrived = Tuple {
                    src: SocketAddrV4::new(p.ip.src, sport),
                    dst: SocketAddrV4::new(p.ip.dst, dport),
                };
                (protocol, arrived)
            }
        };
        let shard = if vpn.contains(p.ip.src) {
            self.shard_of(
                protocol,
                arrived.src,
                self.node_port(protocol, arrived.dst.port()),
            )
        } else if *arrived.dst.ip() == vpn.address {
            0
        } else {
            self.shard_of(protocol, arrived.dst, arrived.src.port())
        };
        Owner::Shard {
            shard,
            first_fragment: p.ip.more_fragments.then(|| FragKey::of(&p.ip)),
        }
    }

    /// The router of a connection with the peer `peer` at the node's port `port` (see
    /// [`Router::owner`]).
    pub(super) fn shard_of(&self, protocol: Protocol, peer: SocketAddrV4, port: u16) -> usize {
        // Not the tables' hash key: a peer that learnt how connections spread over the routers
        // learns nothing about the tables' buckets.
        let h =
            FixedState::with_seed(self.config.seed ^ SHARD_KEY).hash_one((protocol, peer, port));
        (h % self.config.shards as u64) as usize
    }

    /// The node's port of a connection, seen from the VPN at `port`: a mapped port stands for
    /// its container's port, which is what the container's own packets carry.
    pub(super) fn node_port(&self, protocol: Protocol, port: u16) -> u16 {
        self.mappings
            .get(&(protocol, port))
            .map_or(port, |m| m.container.port())
    }
}
