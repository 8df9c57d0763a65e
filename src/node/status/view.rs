//! The node's [`Status`] as data: what `algonet node status` receives as JSON and the metrics
//! describe.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use netstack::{DropReason, Reply};
use serde::{Deserialize, Serialize};

use crate::api::{RunId, TaskId};
use crate::logging::Problem;
use crate::net::dataplane::Snapshot;
use crate::node::vpn::wireguard::Health;

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Claimed: token, files, sandbox, ports.
    Preparing,
    /// The algorithm runs.
    Running,
    /// Cleaning up and reporting.
    Ending,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Preparing, Phase::Running, Phase::Ending];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Preparing => "preparing",
            Phase::Running => "running",
            Phase::Ending => "ending",
        }
    }
}

/// A public port of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPort {
    pub public: u16,
    pub container: u16,
    pub protocol: String,
}

/// A run's traffic through the router: `in` came from the VPN to its container, `out` left its
/// container; `connections` it takes part in now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub connections: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunView {
    pub id: RunId,
    pub task: TaskId,
    pub image: String,
    pub phase: Phase,
    pub ports: Vec<RunPort>,
    #[serde(default)]
    pub traffic: Traffic,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpnView {
    /// `off` (no VPN), `starting`, OpenVPN's state name (`CONNECTED`, `RECONNECTING`, ...), or
    /// `lost` (its management connection went away; being brought back).
    pub state: String,
    pub address: Option<Ipv4Addr>,
    /// Times the tunnel came back after it had connected.
    pub reconnects: u64,
    /// The WireGuard device, while the tunnel is WireGuard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireGuardView>,
}

/// The node's WireGuard device as it reports itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGuardView {
    /// Seconds since the last handshake with the hub (none yet: absent).
    pub handshake_age_secs: Option<u64>,
    /// Where the hub's packets last came from.
    pub endpoint: Option<String>,
    /// Handshakes since the device started: the first, then one per rekey.
    pub handshakes: u64,
    /// Times the hub's packets came from a new address.
    pub roams: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// The collaboration's other nodes kept as direct peers, and those reached directly now.
    #[serde(default)]
    pub peers: u64,
    #[serde(default)]
    pub direct: u64,
}

impl From<&Health> for WireGuardView {
    fn from(h: &Health) -> WireGuardView {
        WireGuardView {
            handshake_age_secs: h.handshake_age.map(|a| a.as_secs()),
            endpoint: match &h.proxy {
                Some(url) => Some(format!("{url} (over TCP)")),
                None => h.endpoint.map(|e| e.to_string()),
            },
            handshakes: h.handshakes,
            roams: h.roams,
            rx_bytes: h.rx_bytes as u64,
            tx_bytes: h.tx_bytes as u64,
            peers: h.peers as u64,
            direct: h.direct as u64,
        }
    }
}

/// The router's counters since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterView {
    pub forwarded_packets_from_vpn: u64,
    pub forwarded_bytes_from_vpn: u64,
    pub forwarded_packets_from_containers: u64,
    pub forwarded_bytes_from_containers: u64,
    /// Every drop reason that counted something.
    pub drops: BTreeMap<String, u64>,
    /// Answers the router sent itself, by kind.
    pub replies: BTreeMap<String, u64>,
    pub connections: u64,
    pub connection_capacity: u64,
    pub connections_created: u64,
    pub connections_expired: u64,
    pub connections_evicted: u64,
    pub connections_removed: u64,
    pub fragments_pending: u64,
    pub tun_reads: u64,
    pub tun_writes: u64,
    pub tun_write_errors: u64,
    /// With several queues: packets read on one and passed to the router owning their
    /// connection, and those lost because its inbox was full.
    pub tun_handoffs: u64,
    pub tun_handoff_drops: u64,
    /// With WireGuard: packets the tunnel handed to the routers and they to it (no device
    /// between them), and those lost between them on a full queue.
    pub tunnel_in: u64,
    pub tunnel_out: u64,
    pub tunnel_drops: u64,
    /// Every drop and reply counter, zeros too (for the metrics; the socket shows those that
    /// moved).
    #[serde(skip)]
    pub(super) all_drops: Vec<(&'static str, u64)>,
    #[serde(skip)]
    pub(super) all_replies: Vec<(&'static str, u64)>,
}

/// Everything `algonet node status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub vpn: VpnView,
    pub runs: Vec<RunView>,
    /// Absent if the data plane did not answer (stopping).
    pub router: Option<RouterView>,
    /// The last warnings and errors, oldest first.
    pub problems: Vec<Problem>,
}

/// The router's part of a [`Status`], from a data-plane snapshot.
pub(super) fn router_view(s: &Snapshot) -> RouterView {
    let c = &s.counters;
    let all_drops: Vec<_> = DropReason::ALL
        .iter()
        .map(|r| (r.name(), c.drops(*r)))
        .collect();
    let all_replies: Vec<_> = Reply::ALL
        .iter()
        .map(|r| (r.name(), c.replies(*r)))
        .collect();
    let moved = |items: &[(&'static str, u64)]| {
        items
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), *n))
            .collect()
    };
    RouterView {
        forwarded_packets_from_vpn: c.forwarded_packets[0],
        forwarded_bytes_from_vpn: c.forwarded_bytes[0],
        forwarded_packets_from_containers: c.forwarded_packets[1],
        forwarded_bytes_from_containers: c.forwarded_bytes[1],
        drops: moved(&all_drops),
        replies: moved(&all_replies),
        connections: s.connections as u64,
        connection_capacity: s.capacity as u64,
        connections_created: c.connections_created,
        connections_expired: c.connections_expired,
        connections_evicted: c.connections_evicted,
        connections_removed: c.connections_removed,
        fragments_pending: s.fragments as u64,
        tun_reads: s.io.reads,
        tun_writes: s.io.writes,
        tun_write_errors: s.io.write_errors,
        tun_handoffs: s.io.handoffs,
        tun_handoff_drops: s.io.handoff_drops,
        tunnel_in: s.io.tunnel_in,
        tunnel_out: s.io.tunnel_out,
        tunnel_drops: s.io.tunnel_drops,
        all_drops,
        all_replies,
    }
}
