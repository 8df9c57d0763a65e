//! The router: policy, port mappings and translation, driven by [`Router::process`].
//!
//! Every packet the kernel routes into the node's TUN device comes here, from either side: VPN
//! peers (via tun0) and algorithm containers (via their veths). The side is told by the source
//! address: registered container addresses on one hand, the VPN subnet on the other. The router
//! rewrites the packet in place and hands it back to be written to the same TUN device, from
//! where the kernel delivers it to tun0 or to a veth.
//!
//! One concern a file: [`config`] (the settings and how routers share the traffic), [`shard`]
//! (which router owns a packet), [`path`] (the per-packet decision and rewrite), [`policy`] (who
//! may reach whom), [`answers`] (what the router answers itself, and ICMP errors translated
//! back), [`control`] (the driver's calls between packets: VPN, containers, mappings, scopes,
//! counters).

mod answers;
mod config;
mod control;
mod path;
mod policy;
mod shard;

pub use config::{Config, Owner};
pub use policy::Scope;
pub use shard::MAX_SHARDS;

use core::hash::BuildHasher;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::ops::RangeInclusive;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use foldhash::fast::FixedState;

use crate::conntrack::{ConnRef, Dir, Table, Timeouts};
use crate::frag::{FragKey, Fragments};
use crate::icmp::{self, RateLimit};
use crate::nat::{self, Change, L4Checksum, Mode};
use crate::stats::{Counters, DropReason, Reply, Side};
use crate::time::{millis, Instant};
use crate::wire::{
    self, Parsed, Protocol, Tuple, ICMP_CODE_FRAG_NEEDED, ICMP_CODE_PORT_UNREACHABLE, ICMP_CSUM,
    ICMP_DEST_UNREACHABLE, L4, TCP_ACK_FLAG, TCP_RST, TCP_SYN,
};

/// The run (algorithm container) a container or mapping belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub u64);

/// A run's traffic through the router, by the side it came from ([`Side`] as index: from the
/// VPN to its container, from its container), and the connections it takes part in now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunTraffic {
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub connections: u64,
}

impl RunTraffic {
    /// Adds a run's traffic through another router (of those sharing the traffic).
    pub fn add(&mut self, other: &RunTraffic) {
        for i in 0..2 {
            self.packets[i] += other.packets[i];
            self.bytes[i] += other.bytes[i];
        }
        self.connections += other.connections;
    }
}

/// A registered container: its run and what it sent and received.
#[derive(Clone, Copy, Debug)]
struct Container {
    run: RunId,
    counted: Counted,
}

/// Packets and bytes by the side they came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counted {
    packets: [u64; 2],
    bytes: [u64; 2],
}

impl Counted {
    fn add(&mut self, other: &Counted) {
        for i in 0..2 {
            self.packets[i] += other.packets[i];
            self.bytes[i] += other.bytes[i];
        }
    }
}

/// The counts of the container the last packets were for, not yet added to its entry: a
/// busy flow pays a compare per packet, not a table lookup (a sixth of the forwarding path, in
/// the router bench).
#[derive(Clone, Copy, Debug)]
struct Memo {
    addr: Ipv4Addr,
    counted: Counted,
}

/// The node's place on the VPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vpn {
    /// The node's VPN address: the one address peers reach it at.
    pub address: Ipv4Addr,
    /// Prefix length of the VPN subnet.
    pub prefix_len: u8,
    /// The largest packet the tunnel (and each container's link) carries.
    pub mtu: u16,
}

impl Vpn {
    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// Whether `addr` lies in the VPN subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        (addr.to_bits() ^ self.address.to_bits()) & self.mask() == 0
    }

    /// The subnet's network or broadcast address (prefixes up to /30).
    fn is_network_or_broadcast(&self, addr: Ipv4Addr) -> bool {
        let host = addr.to_bits() & !self.mask();
        self.prefix_len <= 30 && (host == 0 || host == !self.mask())
    }
}

/// A port mapping: what vantage6 wrote as an iptables DNAT rule. Packets from VPN peers (and from
/// containers of the same node) to `(node VPN address, public_port)` go to `container`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub protocol: Protocol,
    pub public_port: u16,
    pub container: SocketAddrV4,
    pub run: RunId,
}

/// What the router does with a packet: all but `Drop` mean "write `buf[..len]` back to the TUN".
/// Lengths are IPv4 lengths (16 bits), which also keeps an action in one register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The packet was translated (its L4 checksum keeps the kind it came with); it leaves
    /// toward `to`: a VPN peer through the tunnel, or a container through its veth.
    Forward {
        len: u16,
        to: Side,
    },
    /// The router answered: `buf[..len]` is a new, complete packet (no offload).
    Reply {
        len: u16,
        reply: Reply,
    },
    Drop(DropReason),
}

/// Offload information that came with the packet (from the virtio-net header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub checksum: L4Checksum,
    /// For a GSO super-packet, the payload size of each segment; 0 otherwise.
    pub gso_size: u16,
}

/// Errors of the control operations (never of packet processing, which drops and counts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// invalid router configuration
    #[error("invalid router configuration: {0}")]
    Config(&'static str),
    /// the VPN prefix length is out of range
    #[error("VPN prefix length /{0} is not between /8 and /30")]
    PrefixLen(u8),
    /// the MTU is too small for IPv4
    #[error("MTU {0} is below the IPv4 minimum of 576")]
    Mtu(u16),
    /// a container address overlaps the VPN subnet
    #[error("container address {addr} lies in the VPN subnet")]
    ContainerInVpnSubnet { addr: Ipv4Addr },
    /// the container address is registered to another run
    #[error("container address {addr} is already registered for run {run}")]
    ContainerInUse { addr: Ipv4Addr, run: u64 },
    /// the mapping names a container that is not registered
    #[error("container address {0} is not registered")]
    UnknownContainer(Ipv4Addr),
    /// the public port is taken
    #[error("public port {port}/{protocol:?} is already mapped")]
    PortInUse { protocol: Protocol, port: u16 },
    /// the public port is unusable
    #[error("public port {port} is not usable: it is 0 or in the outbound range {start}-{end}")]
    PortUnusable { port: u16, start: u16, end: u16 },
    /// ICMP has no ports to map
    #[error("only TCP and UDP ports can be mapped")]
    NotMappable,
}

/// The sans-IO NAT router.
#[derive(Debug)]
pub struct Router {
    config: Config,
    vpn: Option<Vpn>,
    /// Whether the tunnel carries traffic now (see [`Router::set_tunnel_up`]).
    tunnel_up: bool,
    containers: HashMap<Ipv4Addr, Container, FixedState>,
    /// A registered container's, or counts for no one (an address no container has, such as
    /// the unspecified one it starts with): they are dropped when the memo moves on.
    memo: Memo,
    /// The scope of each run that has one (see [`Config::scoped`]).
    scopes: HashMap<RunId, Scope, FixedState>,
    mappings: HashMap<(Protocol, u16), Mapping, FixedState>,
    /// (protocol, container endpoint) -> public port: connections a mapped container opens from
    /// its mapped port leave from the public port, so peers see one address for it.
    targets: HashMap<(Protocol, SocketAddrV4), u16, FixedState>,
    conns: Table,
    frags: Fragments<Translation>,
    limit: RateLimit,
    /// The answer budget of each address answered recently (see [`Config`]).
    limits: HashMap<Ipv4Addr, RateLimit, FixedState>,
    rng: u64,
    counters: Counters,
}

/// The rewrite of a fragmented datagram's later fragments: the addresses of its first one's,
/// while that one's connection lives.
#[derive(Clone, Copy, Debug)]
struct Translation {
    conn: ConnRef,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

/// Most addresses whose answer budget is remembered.
const ANSWERED_ADDRESSES: usize = 4096;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Router {
    pub fn new(config: Config) -> Result<Router, Error> {
        let t = &config.timeouts;
        if config.max_connections == 0 || config.max_connections > crate::index::MAX_CONNECTIONS {
            return Err(Error::Config(
                "max_connections must be between 1 and 2^24 - 2",
            ));
        }
        if config.max_connections_per_source == 0 {
            return Err(Error::Config(
                "max_connections_per_source must be at least 1",
            ));
        }
        if t.udp < Duration::from_secs(120) {
            return Err(Error::Config(
                "the UDP timeout must be at least 120 s (RFC 4787 REQ-5)",
            ));
        }
        if t.icmp < Duration::from_secs(60) {
            return Err(Error::Config(
                "the ICMP timeout must be at least 60 s (RFC 5508 REQ-1)",
            ));
        }
        if t.tcp_established < Duration::from_secs(7440) {
            return Err(Error::Config(
                "the established TCP timeout must be at least 2 h 4 min (RFC 5382 REQ-5)",
            ));
        }
        if !(1..=MAX_SHARDS).contains(&config.shards) {
            return Err(Error::Config("shards must be between 1 and 64"));
        }
        if config.outbound_ports.is_empty() || *config.outbound_ports.start() == 0 {
            return Err(Error::Config(
                "the outbound port range must be non-empty and exclude 0",
            ));
        }
        let seed = config.seed;
        let h = || FixedState::with_seed(seed);
        Ok(Router {
            conns: Table::new(
                config.max_connections,
                config.max_connections_per_source,
                config.max_connections_per_run,
                t,
                seed,
            ),
            frags: Fragments::new(
                config.max_fragmented,
                config.max_fragmented_per_source,
                millis(t.fragment),
                seed,
            ),
            limit: RateLimit::new(config.replies_per_sec, config.reply_burst),
            limits: HashMap::with_hasher(h()),
            rng: seed,
            vpn: None,
            tunnel_up: false,
            containers: HashMap::with_hasher(h()),
            memo: Memo {
                addr: Ipv4Addr::UNSPECIFIED,
                counted: Counted::default(),
            },
            scopes: HashMap::with_hasher(h()),
            mappings: HashMap::with_hasher(h()),
            targets: HashMap::with_hasher(h()),
            counters: Counters::default(),
            config,
        })
    }

    /// Forgets connections and fragment translations that have timed out.
    pub fn poll(&mut self, now: Instant) {
        self.conns.expire(now);
        self.frags.expire(now);
    }

    /// When [`Router::poll`] next has work to do.
    pub fn poll_at(&self) -> Option<Instant> {
        match (self.conns.poll_at(), self.frags.poll_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
