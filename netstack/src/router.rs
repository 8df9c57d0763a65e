//! The router: policy, port mappings and translation, driven by [`Router::process`].
//!
//! Every packet the kernel routes into the node's TUN device comes here, from either side: VPN
//! peers (via tun0) and algorithm containers (via their veths). The side is told by the source
//! address: registered container addresses on one hand, the VPN subnet on the other. The router
//! rewrites the packet in place and hands it back to be written to the same TUN device, from
//! where the kernel delivers it to tun0 or to a veth.

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
/// busy flow pays a compare per packet, not a table lookup (which cost 10 ns a packet, 16% of
/// the forwarding path, in the router bench).
#[derive(Clone, Copy, Debug)]
struct Memo {
    addr: Ipv4Addr,
    counted: Counted,
}

/// Whom a run may talk to over the VPN, when the router is scoped ([`Config::scoped`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// VPN addresses that may open connections to the run's public ports.
    pub sources: BTreeSet<Ipv4Addr>,
    /// Where the run's containers may open connections: a VPN address and public port, or port
    /// 0 for every port of that address. A ping may go to any address named here.
    pub targets: BTreeSet<SocketAddrV4>,
}

impl Scope {
    fn admits_target(&self, protocol: Protocol, dst: SocketAddrV4) -> bool {
        let any = SocketAddrV4::new(*dst.ip(), 0);
        if protocol == Protocol::Icmp {
            let all = any..=SocketAddrV4::new(*dst.ip(), u16::MAX);
            return self.targets.range(all).next().is_some();
        }
        self.targets.contains(&any) || self.targets.contains(&dst)
    }
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

/// Router settings that do not change while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most connections tracked at once.
    pub max_connections: usize,
    /// Most connections one source (a VPN peer, a container) may hold at once.
    pub max_connections_per_source: usize,
    /// Most connections the runs of one job (a family: the task a user made and every task
    /// below it) may take part in at once, opened by their containers or to them.
    pub max_connections_per_run: usize,
    /// Most fragmented datagrams whose translation is remembered at once.
    pub max_fragmented: usize,
    /// Most of them one sender may have remembered.
    pub max_fragmented_per_source: usize,
    pub timeouts: Timeouts,
    /// Ports (and ICMP identifiers) on the VPN address for connections that containers open.
    /// Public ports of mappings must lie outside.
    pub outbound_ports: RangeInclusive<u16>,
    /// RSTs and ICMP errors the router may send per second, and in a burst.
    pub replies_per_sec: u32,
    pub reply_burst: u32,
    /// Of those, what one address may be sent per second, and in a burst: a scan by one peer
    /// does not silence the answers to the others.
    pub replies_per_source_per_sec: u32,
    pub reply_burst_per_source: u32,
    /// Keys the hash tables and port choice; give each router a random one.
    pub seed: u64,
    /// Whether runs talk only within their [`Scope`] (set with [`Router::set_scope`]; a run
    /// without one reaches no one and no one reaches it). Off: every VPN member reaches every
    /// mapped port, and containers reach every member.
    pub scoped: bool,
    /// How many routers share the node's traffic, one per queue of the TUN device, each owning
    /// the connections [`Router::owner`] gives it (1: this router sees all traffic). Make them
    /// with [`Config::split`].
    pub shards: usize,
}

impl Config {
    /// The configuration of each of `n` routers that share the traffic these limits are for:
    /// the tables and answer budgets divided among them (rounded up), one hash key (`seed`), so
    /// that every router's [`Router::owner`] names the same one. Connections spread over the
    /// routers by a keyed hash of their peer and ports, so a source's quota holds within
    /// rounding for any source with more than a few connections.
    pub fn split(&self, n: usize) -> Config {
        let n = n.max(1);
        let part = |v: usize| v.div_ceil(n);
        let part32 = |v: u32| v.div_ceil(n as u32);
        Config {
            max_connections: part(self.max_connections),
            max_connections_per_source: part(self.max_connections_per_source),
            max_connections_per_run: part(self.max_connections_per_run),
            max_fragmented: part(self.max_fragmented),
            max_fragmented_per_source: part(self.max_fragmented_per_source),
            replies_per_sec: part32(self.replies_per_sec),
            reply_burst: part32(self.reply_burst),
            replies_per_source_per_sec: part32(self.replies_per_source_per_sec),
            reply_burst_per_source: part32(self.reply_burst_per_source),
            shards: n,
            ..self.clone()
        }
    }
}

/// Which of the routers sharing the traffic ([`Config::shards`]) decides on a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The one that holds the packet's connection, or opens it: every packet of a connection,
    /// either way, names the same one. For a first fragment, `first_fragment` is its datagram,
    /// whose later fragments go to the same router (see [`Owner::LaterFragment`]).
    Shard {
        shard: usize,
        first_fragment: Option<FragKey>,
    },
    /// A later fragment, which carries no ports: it goes where its datagram's first fragment
    /// went, which the driver remembers.
    LaterFragment(FragKey),
    /// Any: the packet needs no connection (every router answers or drops it alike).
    Any,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 65_536,
            max_connections_per_source: 4096,
            max_connections_per_run: 8192,
            max_fragmented: 1024,
            max_fragmented_per_source: 64,
            timeouts: Timeouts::default(),
            outbound_ports: 32768..=49151,
            replies_per_sec: 1000,
            reply_burst: 50,
            replies_per_source_per_sec: 100,
            reply_burst_per_source: 10,
            seed: 0x5eed,
            scoped: false,
            shards: 1,
        }
    }
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

/// Mixed into `Config::seed` for [`Router::owner`]'s hash.
const SHARD_KEY: u64 = 0x7368_6172_6473_2121;

/// Most routers that may share the traffic.
pub const MAX_SHARDS: usize = 64;

/// Most addresses whose answer budget is remembered.
const ANSWERED_ADDRESSES: usize = 4096;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn starts_connection(l4: &L4) -> bool {
    match *l4 {
        L4::Tcp { flags, .. } => flags & (TCP_SYN | TCP_ACK_FLAG | TCP_RST) == TCP_SYN,
        L4::Udp { .. } | L4::EchoRequest { .. } => true,
        L4::EchoReply { .. } | L4::IcmpError { .. } | L4::Fragment => false,
    }
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

    /// Sets (or clears) the node's VPN address. A new address ends every tracked connection:
    /// they were all made with the old one.
    pub fn set_vpn(&mut self, vpn: Option<Vpn>) -> Result<(), Error> {
        if let Some(v) = vpn {
            if !(8..=30).contains(&v.prefix_len) {
                return Err(Error::PrefixLen(v.prefix_len));
            }
            if v.mtu < 576 {
                return Err(Error::Mtu(v.mtu));
            }
            if let Some(&addr) = self.containers.keys().find(|a| v.contains(**a)) {
                return Err(Error::ContainerInVpnSubnet { addr });
            }
        }
        if vpn.map(|v| (v.address, v.prefix_len)) != self.vpn.map(|v| (v.address, v.prefix_len)) {
            self.conns.remove_where(|_| true);
            self.frags.clear();
        }
        self.vpn = vpn;
        self.tunnel_up = vpn.is_some();
        Ok(())
    }

    /// Pauses (`false`) or resumes forwarding toward VPN peers, as the tunnel goes and comes
    /// back; [`Router::set_vpn`] resumes it. While paused, what a container sends toward a peer
    /// is dropped as [`DropReason::TunnelDown`]; tracked connections stay.
    pub fn set_tunnel_up(&mut self, up: bool) {
        self.tunnel_up = up && self.vpn.is_some();
    }

    /// Registers an algorithm container's address: packets from it are the container side. Its
    /// connections count for `family` (its run's job: every run of one job shares one budget,
    /// [`Config::max_connections_per_run`]).
    pub fn add_container(&mut self, addr: Ipv4Addr, run: RunId, family: u64) -> Result<(), Error> {
        if self.vpn.is_some_and(|v| v.contains(addr)) {
            return Err(Error::ContainerInVpnSubnet { addr });
        }
        match self.containers.get(&addr) {
            Some(c) if c.run != run => Err(Error::ContainerInUse { addr, run: c.run.0 }),
            Some(_) => Ok(()),
            None => {
                let counted = Counted::default();
                self.containers.insert(addr, Container { run, counted });
                self.conns.join(addr, family);
                Ok(())
            }
        }
    }

    pub fn add_mapping(&mut self, m: Mapping) -> Result<(), Error> {
        if m.protocol == Protocol::Icmp {
            return Err(Error::NotMappable);
        }
        let range = &self.config.outbound_ports;
        if m.public_port == 0 || range.contains(&m.public_port) {
            return Err(Error::PortUnusable {
                port: m.public_port,
                start: *range.start(),
                end: *range.end(),
            });
        }
        if self.containers.get(m.container.ip()).map(|c| c.run) != Some(m.run) {
            return Err(Error::UnknownContainer(*m.container.ip()));
        }
        if self.mappings.contains_key(&(m.protocol, m.public_port)) {
            return Err(Error::PortInUse {
                protocol: m.protocol,
                port: m.public_port,
            });
        }
        self.mappings.insert((m.protocol, m.public_port), m);
        self.targets
            .entry((m.protocol, m.container))
            .or_insert(m.public_port);
        Ok(())
    }

    /// Removes a mapping and every connection made through it. Returns the mapping, if any.
    pub fn remove_mapping(&mut self, protocol: Protocol, public_port: u16) -> Option<Mapping> {
        let m = self.mappings.remove(&(protocol, public_port))?;
        if self.targets.get(&(protocol, m.container)) == Some(&public_port) {
            self.targets.remove(&(protocol, m.container));
        }
        if let Some(v) = self.vpn {
            let public = SocketAddrV4::new(v.address, public_port);
            self.conns.remove_where(|c| {
                c.protocol == protocol && (c.original.dst == public || c.reply.dst == public)
            });
        }
        Some(m)
    }

    /// Removes everything of a run: its containers, its mappings and their connections.
    pub fn remove_run(&mut self, run: RunId) {
        let ports: Vec<_> = self
            .mappings
            .values()
            .filter(|m| m.run == run)
            .map(|m| (m.protocol, m.public_port))
            .collect();
        for (protocol, port) in ports {
            self.remove_mapping(protocol, port);
        }
        let addrs = self.run_addresses(run);
        self.containers.retain(|_, c| c.run != run);
        self.scopes.remove(&run);
        if addrs.contains(&self.memo.addr) {
            self.memo.addr = Ipv4Addr::UNSPECIFIED;
        }
        // A container is the source of every connection it takes part in, in one direction.
        self.conns.remove_where(|c| {
            addrs.contains(c.original.src.ip()) || addrs.contains(c.reply.src.ip())
        });
        for a in addrs {
            self.conns.leave(a);
        }
    }

    /// Live connections of a run family (see [`Router::add_container`]).
    pub fn family_connections(&self, family: u64) -> u32 {
        self.conns.family_connections(family)
    }

    /// The addresses of a run's containers.
    fn run_addresses(&self, run: RunId) -> Vec<Ipv4Addr> {
        let of_run = self.containers.iter().filter(|(_, c)| c.run == run);
        of_run.map(|(a, _)| *a).collect()
    }

    /// Sets whom a run may talk to (used when [`Config::scoped`]). What the new scope no longer
    /// admits ends at once: connections from a source it dropped to the run's ports, and
    /// connections the run's containers opened toward a target it dropped. Others go on.
    pub fn set_scope(&mut self, run: RunId, scope: Scope) {
        let addrs = self.run_addresses(run);
        let node = self.vpn.map(|v| v.address);
        self.conns.remove_where(|c| {
            // Opened toward one of the run's containers (through its mapping) by a peer, or by
            // another container through the node's own address (the reply then goes to it).
            let source = if Some(*c.reply.dst.ip()) == node {
                node
            } else {
                Some(*c.original.src.ip())
            };
            let inbound = addrs.contains(c.reply.src.ip())
                && !addrs.contains(c.original.src.ip())
                && !source.is_some_and(|s| scope.sources.contains(&s));
            let outbound = addrs.contains(c.original.src.ip())
                && !scope.admits_target(c.protocol, c.original.dst);
            inbound || outbound
        });
        self.scopes.insert(run, scope);
    }

    pub fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        self.mappings.values()
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Most connections the table holds.
    pub fn capacity(&self) -> usize {
        self.config.max_connections
    }

    /// Each run's traffic and connections. A packet counts for the container that sent it or
    /// that it reached from the VPN (a container's packet to another on this node, through the
    /// node's address, counts for the sender only); a connection for each container in it.
    /// Walks the connection table: for a scrape, not for every packet.
    pub fn run_traffic(&self) -> Vec<(RunId, RunTraffic)> {
        let mut counted: BTreeMap<RunId, Counted> = BTreeMap::new();
        for (addr, c) in &self.containers {
            let total = counted.entry(c.run).or_default();
            total.add(&c.counted);
            if self.memo.addr == *addr {
                total.add(&self.memo.counted);
            }
        }
        let mut runs: BTreeMap<RunId, RunTraffic> = counted
            .into_iter()
            .map(|(run, c)| {
                let t = RunTraffic {
                    packets: c.packets,
                    bytes: c.bytes,
                    connections: 0,
                };
                (run, t)
            })
            .collect();
        for conn in self.conns.live() {
            for end in [conn.original.src.ip(), conn.reply.src.ip()] {
                if let Some(c) = self.containers.get(end) {
                    runs.entry(c.run).or_default().connections += 1;
                }
            }
        }
        runs.into_iter().collect()
    }

    pub fn fragmented(&self) -> usize {
        self.frags.len()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.connections_expired = self.conns.expired;
        c.connections_evicted = self.conns.evicted;
        c.connections_removed = self.conns.removed;
        c
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
    fn shard_of(&self, protocol: Protocol, peer: SocketAddrV4, port: u16) -> usize {
        // Not the tables' hash key: a peer that learnt how connections spread over the routers
        // learns nothing about the tables' buckets.
        let h =
            FixedState::with_seed(self.config.seed ^ SHARD_KEY).hash_one((protocol, peer, port));
        (h % self.config.shards as u64) as usize
    }

    /// The node's port of a connection, seen from the VPN at `port`: a mapped port stands for
    /// its container's port, which is what the container's own packets carry.
    fn node_port(&self, protocol: Protocol, port: u16) -> u16 {
        self.mappings
            .get(&(protocol, port))
            .map_or(port, |m| m.container.port())
    }

    /// Looks up the connections of `packets` ahead of [`Router::process`], which then finds
    /// them in the recent-lookup cache: a driver holding several packets calls this for all of
    /// them first, and their lookups' cache misses overlap instead of following one another.
    /// Changes no decision, whatever the bytes.
    pub fn prefetch<'a>(&mut self, packets: impl IntoIterator<Item = &'a [u8]>) {
        self.conns
            .prefetch(packets.into_iter().filter_map(wire::flow_hint));
    }

    /// Decides on the packet `buf[..len]` and rewrites it in place; `buf` beyond `len` is room
    /// for an answer larger than the packet. Never panics, whatever the bytes.
    pub fn process(&mut self, buf: &mut [u8], len: usize, meta: Meta, now: Instant) -> Action {
        let len = len.min(buf.len());
        match self.route(buf, len, meta, now) {
            Ok(action) => action,
            Err(reason) => {
                self.counters.drop(reason);
                Action::Drop(reason)
            }
        }
    }

    /// The path of a packet of a known connection (parse, side, [`Table::track_recent`],
    /// [`nat::rewrite`]) is inlined into `process`; every other path (answers, fragments, ICMP
    /// errors, the index probe, new connections) is kept out of line with `#[cold]` or
    /// `#[inline(never)]`. Inlined, their registers made the compiler keep the common path's
    /// values on the stack: callgrind counted 534 instructions per packet before, 475 after.
    #[inline]
    fn route(
        &mut self,
        buf: &mut [u8],
        len: usize,
        meta: Meta,
        now: Instant,
    ) -> Result<Action, DropReason> {
        let p = wire::parse(&buf[..len])?;
        let vpn = self.vpn.ok_or(DropReason::NoVpn)?;
        let (src, dst) = (p.ip.src, p.ip.dst);
        // Container addresses never lie in the VPN subnet (add_container and set_vpn refuse
        // it), so the cheap subnet test decides the side before any table is consulted.
        let side = if vpn.contains(src) {
            if src == vpn.address || vpn.is_network_or_broadcast(src) {
                return Err(DropReason::UnknownSource);
            }
            if dst != vpn.address {
                return Err(DropReason::NotForNode);
            }
            Side::Vpn
        } else if self.containers.contains_key(&src) {
            if !vpn.contains(dst) {
                return Err(if self.containers.contains_key(&dst) {
                    DropReason::ContainerToInternal
                } else {
                    DropReason::OutsideVpn
                });
            }
            if vpn.is_network_or_broadcast(dst) {
                return Err(DropReason::Broadcast);
            }
            if !self.tunnel_up && dst != vpn.address {
                return Err(DropReason::TunnelDown);
            }
            Side::Container
        } else {
            return Err(DropReason::UnknownSource);
        };
        // The translations rewrite in place or say why not; the action is built here, once.
        match p.l4 {
            L4::Fragment => self.translate_fragment(buf, &p, now)?,
            L4::EchoRequest { .. } if dst == vpn.address => {
                self.may_answer(side, src)?;
                if p.ip.is_fragment() {
                    return Err(DropReason::FragmentedLocal);
                }
                let len = u16::try_from(icmp::echo_reply(buf, &p.ip))
                    .map_err(|_| DropReason::Malformed)?;
                self.counters.reply(Reply::EchoReply);
                return Ok(Action::Reply {
                    len,
                    reply: Reply::EchoReply,
                });
            }
            L4::IcmpError { .. } => self.translate_icmp_error(buf, &p, side, now)?,
            _ => {
                if self.too_big(buf, &p, meta, vpn) {
                    self.may_answer(side, src)?;
                    return self.answer_too_big(buf, &p, vpn, now);
                }
                match self.translate(buf, &p, side, vpn, meta, now) {
                    Err(DropReason::NoMapping) => {
                        self.may_answer(side, src)?;
                        return self.refuse(buf, &p, now);
                    }
                    r => r?,
                }
            }
        }
        let len = p.ip.total_len;
        self.counters.forward(side, len);
        // The container's address: the source of what it sent, the (rewritten) destination
        // of what reached it from the VPN.
        let local = match (side, buf.get(16..20)) {
            (Side::Vpn, Some(&[a, b, c, d])) => Ipv4Addr::new(a, b, c, d),
            _ => src,
        };
        self.count(local, side, len);
        // Peers reach only containers; a container reaches peers, or, through the node's own
        // address, another container (hairpin).
        let to = if side == Side::Container && dst != vpn.address {
            Side::Vpn
        } else {
            Side::Container
        };
        // Read from the header's 16-bit field by `parse`.
        Ok(Action::Forward {
            len: len as u16,
            to,
        })
    }

    /// Counts a forwarded packet for the container at `local`.
    #[inline]
    fn count(&mut self, local: Ipv4Addr, side: Side, len: usize) {
        let i = side as usize & 1;
        if self.memo.addr == local {
            self.memo.counted.packets[i] += 1;
            self.memo.counted.bytes[i] += len as u64;
        } else {
            self.count_other(local, i, len);
        }
    }

    /// [`Router::count`] for a container other than the memo's: the memo's counts go to its
    /// entry, and the memo to `local`.
    #[cold]
    #[inline(never)]
    fn count_other(&mut self, local: Ipv4Addr, i: usize, len: usize) {
        if !self.containers.contains_key(&local) {
            return;
        }
        let m = self.memo;
        if let Some(c) = self.containers.get_mut(&m.addr) {
            c.counted.add(&m.counted);
        }
        let mut counted = Counted::default();
        counted.packets[i] = 1;
        counted.bytes[i] = len as u64;
        self.memo = Memo {
            addr: local,
            counted,
        };
    }

    /// Whether the packet (or each segment of a GSO super-packet) exceeds the MTU with DF set.
    fn too_big(&self, buf: &[u8], p: &Parsed, meta: Meta, vpn: Vpn) -> bool {
        if !p.ip.dont_fragment {
            return false;
        }
        let size = if meta.gso_size == 0 {
            p.ip.total_len
        } else {
            let l4_header = match p.l4 {
                L4::Tcp { .. } => usize::from(buf[p.ip.header_len + 12] >> 4) * 4,
                _ => 8,
            };
            p.ip.header_len + l4_header + usize::from(meta.gso_size)
        };
        size > usize::from(vpn.mtu)
    }

    #[cold]
    #[inline(never)]
    fn answer_too_big(
        &mut self,
        buf: &mut [u8],
        p: &Parsed,
        vpn: Vpn,
        now: Instant,
    ) -> Result<Action, DropReason> {
        let code = (ICMP_DEST_UNREACHABLE, ICMP_CODE_FRAG_NEEDED);
        self.answer(
            buf,
            p.ip.src,
            Reply::FragmentationNeeded,
            DropReason::TooBig,
            now,
            |buf| {
                icmp::error(
                    buf,
                    p.ip.total_len,
                    vpn.address,
                    p.ip.src,
                    code,
                    u32::from(vpn.mtu),
                )
            },
        )
    }

    /// Sends an answer to `to` built by `build` instead of the packet, within the rate limits
    /// (the address's own and the router's), and counts the packet as dropped for `reason`.
    fn answer(
        &mut self,
        buf: &mut [u8],
        to: Ipv4Addr,
        reply: Reply,
        reason: DropReason,
        now: Instant,
        build: impl FnOnce(&mut [u8]) -> Result<usize, DropReason>,
    ) -> Result<Action, DropReason> {
        if !self.limits.contains_key(&to) && self.limits.len() >= ANSWERED_ADDRESSES {
            // Forgetting every budget at once only gives each address a fresh burst, and the
            // router's own limit still holds.
            self.limits.clear();
        }
        let (per_sec, burst) = (
            self.config.replies_per_source_per_sec,
            self.config.reply_burst_per_source,
        );
        let own = self
            .limits
            .entry(to)
            .or_insert_with(|| RateLimit::new(per_sec, burst));
        if !own.allow(now) || !self.limit.allow(now) {
            return Err(DropReason::RateLimited);
        }
        let len = u16::try_from(build(buf)?).map_err(|_| reason)?;
        self.counters.drop(reason);
        self.counters.reply(reply);
        Ok(Action::Reply { len, reply })
    }

    #[inline]
    fn translate(
        &mut self,
        buf: &mut [u8],
        p: &Parsed,
        side: Side,
        vpn: Vpn,
        meta: Meta,
        now: Instant,
    ) -> Result<(), DropReason> {
        let Some(protocol) = p.l4.protocol() else {
            return Err(DropReason::Malformed);
        };
        let (sport, dport) = p.l4.ports();
        let arrived = Tuple {
            src: SocketAddrV4::new(p.ip.src, sport),
            dst: SocketAddrV4::new(p.ip.dst, dport),
        };
        let tcp_flags = match p.l4 {
            L4::Tcp { flags, .. } => Some(flags),
            _ => None,
        };
        let (id, to, change) = match self.conns.track_recent(protocol, arrived, tcp_flags, now) {
            Some(hit) => hit,
            None => self.track(protocol, arrived, tcp_flags, p, side, vpn, now)?,
        };
        nat::rewrite(
            buf,
            0,
            p.ip.header_len,
            p.l4,
            to,
            change,
            Mode::Packet(meta.checksum),
        );
        if p.ip.more_fragments {
            let key = FragKey::of(&p.ip);
            let t = Translation {
                conn: self.conns.handle(id),
                src: *to.src.ip(),
                dst: *to.dst.ip(),
            };
            self.frags.insert(key, t, now);
        }
        Ok(())
    }

    /// The packet's connection when the recent-lookup cache did not know it: found through the
    /// index, or opened. Out of line, so that the hit path stays short.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn track(
        &mut self,
        protocol: Protocol,
        arrived: Tuple,
        tcp_flags: Option<u8>,
        p: &Parsed,
        side: Side,
        vpn: Vpn,
        now: Instant,
    ) -> Result<(u32, Tuple, Change), DropReason> {
        if let Some(hit) = self.conns.track(protocol, arrived, tcp_flags, now) {
            return Ok(hit);
        }
        let id = self.open(protocol, arrived, p, side, vpn, now)?;
        let (to, change) = self.conns.on_packet(id, Dir::Original, tcp_flags, now);
        Ok((id, to, change))
    }

    /// Starts tracking the connection whose first packet arrived with `arrived`.
    fn open(
        &mut self,
        protocol: Protocol,
        arrived: Tuple,
        p: &Parsed,
        side: Side,
        vpn: Vpn,
        now: Instant,
    ) -> Result<u32, DropReason> {
        // ICMP has no ports to map: an echo reply without its request is just unsolicited.
        let to_node = *arrived.dst.ip() == vpn.address && protocol != Protocol::Icmp;
        let mapping = if to_node {
            let m = self
                .mappings
                .get(&(protocol, arrived.dst.port()))
                .ok_or(DropReason::NoMapping)?;
            Some(*m)
        } else {
            None
        };
        if !starts_connection(&p.l4) {
            return Err(DropReason::NoConnection);
        }
        if self.config.scoped {
            self.check_scope(protocol, arrived, side, mapping, vpn)?;
        }
        let reply = match (side, mapping) {
            // A peer opens a connection to a mapped port: only the destination changes.
            (Side::Vpn, Some(m)) => Tuple {
                src: m.container,
                dst: arrived.src,
            },
            (Side::Vpn, None) => return Err(DropReason::NotForNode),
            // A container opens one to a peer, or to a mapped port of this node (hairpin): the
            // source becomes the node's VPN address, so the answers come back here.
            (Side::Container, m) => {
                let remote = m.map_or(arrived.dst, |m| m.container);
                let port = self.allocate(protocol, remote, arrived.src, vpn)?;
                Tuple {
                    src: remote,
                    dst: SocketAddrV4::new(vpn.address, port),
                }
            }
        };
        let id = self.conns.insert(protocol, arrived, reply, now)?;
        self.counters.connections_created += 1;
        Ok(id)
    }

    /// Whether the scopes admit a new connection: from a peer, the scope of the run whose
    /// mapping it addresses must hold the peer; from a container, its run's scope must hold the
    /// target, and for the node's own address (hairpin) the receiving run's scope the node.
    #[cold]
    #[inline(never)]
    fn check_scope(
        &self,
        protocol: Protocol,
        arrived: Tuple,
        side: Side,
        mapping: Option<Mapping>,
        vpn: Vpn,
    ) -> Result<(), DropReason> {
        let admits_source = |m: Mapping, source: Ipv4Addr| {
            self.scopes
                .get(&m.run)
                .is_some_and(|s| s.sources.contains(&source))
        };
        match side {
            Side::Vpn => match mapping {
                Some(m) if admits_source(m, *arrived.src.ip()) => Ok(()),
                _ => Err(DropReason::PeerNotInScope),
            },
            Side::Container => {
                let run = self.containers.get(arrived.src.ip()).map(|c| c.run);
                let scope = run.and_then(|r| self.scopes.get(&r));
                if !scope.is_some_and(|s| s.admits_target(protocol, arrived.dst)) {
                    return Err(DropReason::DestinationNotInScope);
                }
                match mapping {
                    Some(m) if !admits_source(m, vpn.address) => {
                        Err(DropReason::DestinationNotInScope)
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Whether the router may answer a packet itself (echo reply, RST, ICMP error): not to a VPN
    /// peer in no run's scope, for which the node is as if it were not there.
    fn may_answer(&self, side: Side, src: Ipv4Addr) -> Result<(), DropReason> {
        let known = || self.scopes.values().any(|s| s.sources.contains(&src));
        if side == Side::Vpn && self.config.scoped && !known() {
            return Err(DropReason::PeerNotInScope);
        }
        Ok(())
    }

    /// Picks the port on the VPN address for a connection a container opens from `local` to
    /// `remote`: the public port of its mapping if `local` is mapped, else `local`'s own port if
    /// it is in the outbound range and free (port preservation), else a random free one. With
    /// several routers, only a port whose answers this router owns (see [`Router::owner`]):
    /// the first two always are; of random ones, about one in [`Config::shards`].
    fn allocate(
        &mut self,
        protocol: Protocol,
        remote: SocketAddrV4,
        local: SocketAddrV4,
        vpn: Vpn,
    ) -> Result<u16, DropReason> {
        let range = self.config.outbound_ports.clone();
        let (start, size) = (
            u32::from(*range.start()),
            u32::from(*range.end()) - u32::from(*range.start()) + 1,
        );
        let first = (splitmix(&mut self.rng) % u64::from(size)) as u32;
        // Toward another container of the node (hairpin) every port is router 0's.
        let sharded = self.config.shards > 1 && vpn.contains(*remote.ip());
        let own = self.shard_of(protocol, remote, local.port());
        let fits = |port: u16| {
            let answers = Tuple {
                src: remote,
                dst: SocketAddrV4::new(vpn.address, port),
            };
            !self.conns.contains(protocol, answers)
                && (!sharded
                    || self.shard_of(protocol, remote, self.node_port(protocol, port)) == own)
        };
        let mapped = self.targets.get(&(protocol, local)).copied();
        let preserved = range.contains(&local.port()).then_some(local.port());
        if let Some(port) = [mapped, preserved].into_iter().flatten().find(|&p| fits(p)) {
            return Ok(port);
        }
        let tries = size.min(512 * self.config.shards as u32);
        (0..tries)
            .map(|i| (start + (first + i) % size) as u16)
            .find(|&port| fits(port))
            .ok_or(DropReason::NoFreePort)
    }

    /// Answers a packet to an unmapped port of the node: TCP with a RST, UDP with ICMP port
    /// unreachable, as a host with nothing listening would.
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, buf: &mut [u8], p: &Parsed, now: Instant) -> Result<Action, DropReason> {
        match p.l4 {
            L4::Tcp { flags, .. } if flags & TCP_RST == 0 && !p.ip.is_fragment() => self.answer(
                buf,
                p.ip.src,
                Reply::TcpReset,
                DropReason::NoMapping,
                now,
                |buf| icmp::tcp_reset(buf, &p.ip).ok_or(DropReason::NoMapping),
            ),
            L4::Udp { .. } if !p.ip.is_fragment() || p.ip.frag_offset == 0 => {
                let code = (ICMP_DEST_UNREACHABLE, ICMP_CODE_PORT_UNREACHABLE);
                self.answer(
                    buf,
                    p.ip.src,
                    Reply::PortUnreachable,
                    DropReason::NoMapping,
                    now,
                    |buf| icmp::error(buf, p.ip.total_len, p.ip.dst, p.ip.src, code, 0),
                )
            }
            _ => Err(DropReason::NoMapping),
        }
    }

    #[cold]
    #[inline(never)]
    fn translate_fragment(
        &mut self,
        buf: &mut [u8],
        p: &Parsed,
        now: Instant,
    ) -> Result<(), DropReason> {
        let key = FragKey::of(&p.ip);
        let t = self
            .frags
            .lookup(&key, now)
            .ok_or(DropReason::FragmentUnknown)?;
        if !self.conns.is_live(t.conn) {
            return Err(DropReason::FragmentUnknown);
        }
        nat::rewrite_addresses(buf, &p.ip, t.src, t.dst);
        Ok(())
    }

    /// Translates an ICMP error about a packet of a tracked connection: the quoted packet went
    /// the other way, so its reverse is how that connection's packets arrive here.
    #[cold]
    #[inline(never)]
    fn translate_icmp_error(
        &mut self,
        buf: &mut [u8],
        p: &Parsed,
        side: Side,
        now: Instant,
    ) -> Result<(), DropReason> {
        let icmp_at = p.ip.header_len;
        let q = wire::parse_quoted(&buf[icmp_at..p.ip.total_len])?;
        let (qs, qd) = q.l4.ports();
        let arrived = Tuple {
            src: SocketAddrV4::new(q.dst, qd),
            dst: SocketAddrV4::new(q.src, qs),
        };
        let (id, dir) = self
            .conns
            .peek(q.protocol, arrived, now)
            .ok_or(DropReason::IcmpErrorUnmatched)?;
        // The error must come from the flow's own other end: a container speaks for itself, a
        // peer for itself. Only "fragmentation needed", which can only lower a path's MTU, may
        // come from a router on the VPN path. A flow between two containers (hairpin) never
        // crossed the VPN and takes no error from it.
        let from_endpoint = p.ip.src == *arrived.src.ip();
        let path_mtu = matches!(
            p.l4,
            L4::IcmpError {
                icmp_type: ICMP_DEST_UNREACHABLE,
                code: ICMP_CODE_FRAG_NEEDED
            }
        );
        let from_its_end = match side {
            Side::Container => from_endpoint,
            Side::Vpn => {
                self.vpn.is_some_and(|v| v.contains(*arrived.src.ip()))
                    && (from_endpoint || path_mtu)
            }
        };
        if p.ip.dst != *arrived.dst.ip() || !from_its_end {
            return Err(DropReason::IcmpErrorUnmatched);
        }
        let conn = self.conns.get(id);
        let to = conn.translated(dir);
        let quote_at = icmp_at + 8;
        // The quote holds the reverse of `arrived` and becomes the reverse of `to`: the reverse
        // rewrite changes the same words the same way.
        let delta = nat::rewrite_quoted(
            buf,
            quote_at,
            q.header_len,
            q.l4,
            to.reverse(),
            conn.change(dir),
            quote_at + q.len,
        );
        let c = wire::get16(buf, icmp_at + ICMP_CSUM);
        wire::put16(buf, icmp_at + ICMP_CSUM, delta.apply_complete(c));
        let outer_src = if from_endpoint {
            *to.src.ip()
        } else {
            p.ip.src
        };
        nat::rewrite_addresses(buf, &p.ip, outer_src, *to.dst.ip());
        Ok(())
    }
}
