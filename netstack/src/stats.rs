//! Why packets are dropped, what the router answers itself, and the counters of both.

/// Why the router dropped a packet. Every drop is counted under its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Truncated or inconsistent headers.
    Malformed,
    /// The IPv4 header checksum is wrong.
    BadIpChecksum,
    /// IPv6: algonet is IPv4 only.
    Ipv6,
    /// Not an IP packet at all.
    NotIp,
    /// Neither TCP, UDP nor ICMP.
    UnsupportedProtocol,
    /// ICMP other than echo and the errors the router translates.
    UnsupportedIcmp,
    /// The node has no VPN address: nothing can be routed.
    NoVpn,
    /// The source is neither a registered container nor in the VPN subnet.
    UnknownSource,
    /// From the VPN side, but not addressed to the node's VPN address (for example a container's
    /// internal address).
    NotForNode,
    /// A container addressed another container's internal address.
    ContainerToInternal,
    /// A container addressed something outside the VPN subnet.
    OutsideVpn,
    /// Addressed to the VPN subnet's network or broadcast address.
    Broadcast,
    /// Addressed to the node's VPN address on a port without a mapping. TCP is answered with a
    /// RST and UDP with ICMP port unreachable (rate-limited).
    NoMapping,
    /// Not the start of a connection (a TCP segment without SYN, an unsolicited echo reply) and
    /// no tracked connection matches.
    NoConnection,
    /// The first packet of a new connection would reuse a tuple already tracked in the other
    /// direction.
    TupleConflict,
    /// The connection table is full and nothing could be evicted.
    TableFull,
    /// The source (a VPN peer or a container) holds its most connections already.
    SourceQuota,
    /// The run family (the runs of one job) the connection is for holds its most connections
    /// already.
    RunQuota,
    /// No free port on the VPN address for this destination.
    NoFreePort,
    /// A fragment whose first fragment was not seen (or has expired).
    FragmentUnknown,
    /// A fragmented packet addressed to the router itself (it does not reassemble).
    FragmentedLocal,
    /// An ICMP error quoting a packet of no tracked connection.
    IcmpErrorUnmatched,
    /// Larger than the MTU with DF set; answered with "fragmentation needed".
    TooBig,
    /// An answer the router would have sent (RST, ICMP error) was suppressed by the rate limit.
    RateLimited,
    /// The buffer cannot hold the answer the router must build.
    BufferTooSmall,
    /// Toward a VPN peer while the tunnel is not connected: held back rather than sent into a
    /// tunnel that is (re)connecting; connections stay tracked and go on when it is back.
    TunnelDown,
    /// A new connection (or a ping, or a packet to an unmapped port) from a VPN peer that is not
    /// in the scope of the run it addresses (or, for the node itself, of any run). Dropped
    /// without an answer, so nothing confirms the port or the node.
    PeerNotInScope,
    /// A container's new connection toward a VPN address and port outside its run's scope (the
    /// VPN server, another member, a port no run of its task family has).
    DestinationNotInScope,
}

impl DropReason {
    pub const ALL: [DropReason; 28] = [
        DropReason::Malformed,
        DropReason::BadIpChecksum,
        DropReason::Ipv6,
        DropReason::NotIp,
        DropReason::UnsupportedProtocol,
        DropReason::UnsupportedIcmp,
        DropReason::NoVpn,
        DropReason::UnknownSource,
        DropReason::NotForNode,
        DropReason::ContainerToInternal,
        DropReason::OutsideVpn,
        DropReason::Broadcast,
        DropReason::NoMapping,
        DropReason::NoConnection,
        DropReason::TupleConflict,
        DropReason::TableFull,
        DropReason::SourceQuota,
        DropReason::RunQuota,
        DropReason::NoFreePort,
        DropReason::FragmentUnknown,
        DropReason::FragmentedLocal,
        DropReason::IcmpErrorUnmatched,
        DropReason::TooBig,
        DropReason::RateLimited,
        DropReason::BufferTooSmall,
        DropReason::TunnelDown,
        DropReason::PeerNotInScope,
        DropReason::DestinationNotInScope,
    ];

    /// A stable snake_case name, for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::Ipv6 => "ipv6",
            DropReason::NotIp => "not_ip",
            DropReason::UnsupportedProtocol => "unsupported_protocol",
            DropReason::UnsupportedIcmp => "unsupported_icmp",
            DropReason::NoVpn => "no_vpn",
            DropReason::UnknownSource => "unknown_source",
            DropReason::NotForNode => "not_for_node",
            DropReason::ContainerToInternal => "container_to_internal",
            DropReason::OutsideVpn => "outside_vpn",
            DropReason::Broadcast => "broadcast",
            DropReason::NoMapping => "no_mapping",
            DropReason::NoConnection => "no_connection",
            DropReason::TupleConflict => "tuple_conflict",
            DropReason::TableFull => "table_full",
            DropReason::SourceQuota => "source_quota",
            DropReason::RunQuota => "run_quota",
            DropReason::NoFreePort => "no_free_port",
            DropReason::FragmentUnknown => "fragment_unknown",
            DropReason::FragmentedLocal => "fragmented_local",
            DropReason::IcmpErrorUnmatched => "icmp_error_unmatched",
            DropReason::TooBig => "too_big",
            DropReason::RateLimited => "rate_limited",
            DropReason::BufferTooSmall => "buffer_too_small",
            DropReason::TunnelDown => "tunnel_down",
            DropReason::PeerNotInScope => "peer_not_in_scope",
            DropReason::DestinationNotInScope => "destination_not_in_scope",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the router answered itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// ICMP echo reply from the node's VPN address.
    EchoReply,
    /// TCP RST for an unmapped port.
    TcpReset,
    /// ICMP port unreachable for an unmapped UDP port.
    PortUnreachable,
    /// ICMP fragmentation needed, for a DF packet larger than the MTU.
    FragmentationNeeded,
}

impl Reply {
    pub const ALL: [Reply; 4] = [
        Reply::EchoReply,
        Reply::TcpReset,
        Reply::PortUnreachable,
        Reply::FragmentationNeeded,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reply::EchoReply => "echo_reply",
            Reply::TcpReset => "tcp_reset",
            Reply::PortUnreachable => "port_unreachable",
            Reply::FragmentationNeeded => "fragmentation_needed",
        }
    }
}

/// Which side a packet came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// From a VPN peer (through tun0).
    Vpn,
    /// From an algorithm container (through its veth).
    Container,
}

/// Counters, cheap to copy out as a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets and bytes forwarded, by the side they came from (`[vpn, container]`).
    pub forwarded_packets: [u64; 2],
    pub forwarded_bytes: [u64; 2],
    replies: [u64; Reply::ALL.len()],
    drops: [u64; DropReason::ALL.len()],
    pub connections_created: u64,
    pub connections_expired: u64,
    /// Evicted early to make room (never answered connections, oldest first).
    pub connections_evicted: u64,
    /// Removed with their mapping or run, or because the VPN address changed.
    pub connections_removed: u64,
}

impl Counters {
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    pub fn replies(&self, reply: Reply) -> u64 {
        self.replies[reply as usize]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    pub(crate) fn reply(&mut self, reply: Reply) {
        self.replies[reply as usize] += 1;
    }

    pub(crate) fn forward(&mut self, side: Side, bytes: usize) {
        let i = side as usize;
        self.forwarded_packets[i] += 1;
        self.forwarded_bytes[i] += bytes as u64;
    }

    /// Adds the counts of another router (of those sharing the traffic).
    pub fn add(&mut self, other: &Counters) {
        let pairs = [
            (
                &mut self.forwarded_packets[..],
                &other.forwarded_packets[..],
            ),
            (&mut self.forwarded_bytes[..], &other.forwarded_bytes[..]),
            (&mut self.replies[..], &other.replies[..]),
            (&mut self.drops[..], &other.drops[..]),
        ];
        for (mine, theirs) in pairs {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        }
        self.connections_created += other.connections_created;
        self.connections_expired += other.connections_expired;
        self.connections_evicted += other.connections_evicted;
        self.connections_removed += other.connections_removed;
    }

    /// Every nonzero drop counter, by name.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.drops(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_in_discriminant_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        for (i, r) in Reply::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }
}
