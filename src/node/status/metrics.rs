//! The node's Prometheus series: a [`Status`] taken at the scrape, and the claim-to-start
//! histogram.

use std::time::Instant;

use super::view::{Phase, RunView, Status, Traffic};
use crate::metrics::{Describe, Sheet};
use crate::node::state::Node;

/// The node's Prometheus series: a [`Status`] taken at the scrape.
#[derive(Debug)]
pub struct NodeMetrics(pub Status);

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Describe for NodeMetrics {
    fn describe(&self, sheet: &mut Sheet<'_, '_>) -> std::fmt::Result {
        let s = &self.0;
        let v = &s.vpn;
        sheet.gauge(
            "node_vpn_connected",
            "Whether the tunnel is connected",
            i64::from(v.state == "CONNECTED"),
        )?;
        sheet.gauges(
            "node_vpn_state",
            "The tunnel's state (the one series present is 1)",
            [([("state", v.state.as_str())], 1)],
        )?;
        if let Some(w) = &v.wireguard {
            if let Some(age) = w.handshake_age_secs {
                sheet.gauge(
                    "node_wireguard_handshake_age_seconds",
                    "Seconds since the last WireGuard handshake with the hub",
                    int(age),
                )?;
            }
            sheet.counter(
                "node_wireguard_handshakes",
                "WireGuard handshakes with the hub (the first, then one per rekey)",
                w.handshakes,
            )?;
            sheet.counter(
                "node_wireguard_roams",
                "Times the hub's WireGuard packets came from a new address",
                w.roams,
            )?;
            sheet.counters(
                "node_wireguard_bytes",
                "Bytes the WireGuard device received from and sent to the hub",
                [
                    ([("direction", "rx")], w.rx_bytes),
                    ([("direction", "tx")], w.tx_bytes),
                ],
            )?;
            sheet.gauges(
                "node_wireguard_peers",
                "The collaboration's other nodes as direct WireGuard peers, by path now",
                [
                    ([("path", "direct")], int(w.direct)),
                    ([("path", "hub")], int(w.peers.saturating_sub(w.direct))),
                ],
            )?;
        }
        sheet.counter(
            "node_vpn_reconnects",
            "Times the tunnel came back after it had connected",
            v.reconnects,
        )?;
        sheet.gauges(
            "node_runs",
            "Runs on this node by phase",
            Phase::ALL.iter().map(|p| {
                let n = s.runs.iter().filter(|r| r.phase == *p).count();
                ([("phase", p.name())], n as i64)
            }),
        )?;
        let Some(r) = &s.router else { return Ok(()) };
        let from = |vpn: u64, containers: u64| {
            [
                ([("from", "vpn")], vpn),
                ([("from", "container")], containers),
            ]
        };
        sheet.counters(
            "node_forwarded_packets",
            "Packets the router forwarded, by the side they came from",
            from(
                r.forwarded_packets_from_vpn,
                r.forwarded_packets_from_containers,
            ),
        )?;
        sheet.counters(
            "node_forwarded_bytes",
            "IP bytes the router forwarded, by the side they came from",
            from(
                r.forwarded_bytes_from_vpn,
                r.forwarded_bytes_from_containers,
            ),
        )?;
        sheet.counters(
            "node_drops",
            "Packets the router dropped, by reason",
            r.all_drops.iter().map(|(k, n)| ([("reason", *k)], *n)),
        )?;
        sheet.counters(
            "node_replies",
            "Answers the router sent itself, by kind",
            r.all_replies.iter().map(|(k, n)| ([("kind", *k)], *n)),
        )?;
        let run = |r: &RunView| r.id.to_string();
        // Two series per run, `in` and `out`, of what `pick` takes from its traffic.
        let per_direction = |pick: fn(&Traffic) -> (u64, u64)| {
            s.runs.iter().flat_map(move |r| {
                let (i, o) = pick(&r.traffic);
                [
                    ([("run", run(r)), ("direction", "in".to_string())], i),
                    ([("run", run(r)), ("direction", "out".to_string())], o),
                ]
            })
        };
        sheet.counters(
            "node_run_packets",
            "Packets of a run's container through the router, by direction",
            per_direction(|t| (t.packets_in, t.packets_out)),
        )?;
        sheet.counters(
            "node_run_bytes",
            "IP bytes of a run's container through the router, by direction",
            per_direction(|t| (t.bytes_in, t.bytes_out)),
        )?;
        sheet.gauges(
            "node_run_connections",
            "Connections a run's container takes part in",
            s.runs
                .iter()
                .map(|r| ([("run", run(r))], int(r.traffic.connections))),
        )?;
        sheet.gauge(
            "node_connections",
            "Tracked connections",
            int(r.connections),
        )?;
        sheet.gauge(
            "node_connection_capacity",
            "Most connections the table holds",
            int(r.connection_capacity),
        )?;
        sheet.counter(
            "node_connections_created",
            "Connections opened",
            r.connections_created,
        )?;
        sheet.counter(
            "node_connections_expired",
            "Connections that timed out",
            r.connections_expired,
        )?;
        sheet.counter(
            "node_connections_evicted",
            "Connections evicted early to make room",
            r.connections_evicted,
        )?;
        sheet.counter(
            "node_connections_removed",
            "Connections removed with their mapping or run, or a new VPN address",
            r.connections_removed,
        )?;
        sheet.gauge(
            "node_fragments_pending",
            "Fragmented packets whose later fragments are awaited",
            int(r.fragments_pending),
        )?;
        sheet.counter(
            "node_tun_reads",
            "Reads of the router's TUN device",
            r.tun_reads,
        )?;
        sheet.counter(
            "node_tun_writes",
            "Packets written to the router's TUN device (segments merged into one write count each)",
            r.tun_writes,
        )?;
        sheet.counter(
            "node_tun_write_errors",
            "Writes the kernel refused (the packet is lost)",
            r.tun_write_errors,
        )?;
        sheet.counter(
            "node_tun_handoffs",
            "Packets read on one queue of the TUN device and passed to the router owning their connection",
            r.tun_handoffs,
        )?;
        sheet.counter(
            "node_tun_handoff_drops",
            "Packets lost because the owning router's inbox was full",
            r.tun_handoff_drops,
        )?;
        sheet.counter(
            "node_tunnel_in",
            "Packets the WireGuard tunnel handed to the routers without a device",
            r.tunnel_in,
        )?;
        sheet.counter(
            "node_tunnel_out",
            "Packets the routers handed to the WireGuard tunnel (a super-packet counts once)",
            r.tunnel_out,
        )?;
        sheet.counter(
            "node_tunnel_drops",
            "Packets lost between the routers and the WireGuard tunnel on a full queue",
            r.tunnel_drops,
        )
    }
}

/// How long an exposition is served again before the data plane is asked anew.
const SCRAPE_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The node's exposition. The metrics address is open to every local user, and a snapshot walks
/// the connection table on the data plane's thread: scrapes take turns, and within a second
/// get the same text, so however often it is asked the data plane does that walk at most once a
/// second.
pub async fn scrape(node: std::sync::Arc<Node>) -> String {
    let mut last = node.observed.last_exposition.lock().await;
    if let Some((at, text)) = last.as_ref() {
        if at.elapsed() < SCRAPE_REUSE {
            return text.clone();
        }
    }
    let status = node.status().await;
    let latency = node.observed.start_latency.clone();
    let text = crate::metrics::render(NodeMetrics(status), move |r| {
        r.register(
            "node_run_start_seconds",
            "Time from a run's claim to its algorithm's start",
            latency,
        );
    });
    *last = Some((Instant::now(), text.clone()));
    text
}
