//! The router's settings, and how several routers share one node's traffic.

use super::*;

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
