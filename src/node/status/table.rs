//! The status as tables for people (`algonet node status` without `--json`).

use super::view::Status;

/// The status as tables for people.
pub fn table(s: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let v = &s.vpn;
    let address = v.address.map_or("-".to_string(), |a| a.to_string());
    let _ = writeln!(
        out,
        "node {}: VPN {} at {address}, {} reconnect(s)",
        s.node, v.state, v.reconnects
    );
    if let Some(w) = &v.wireguard {
        let age = w
            .handshake_age_secs
            .map_or("none yet".into(), |a| format!("{a}s ago"));
        let _ = writeln!(
            out,
            "WireGuard: last handshake {age} ({} in all), hub at {}, {} roam(s); {} bytes in, {} out; \
             {} of {} other node(s) reached directly",
            w.handshakes,
            w.endpoint.as_deref().unwrap_or("-"),
            w.roams,
            w.rx_bytes,
            w.tx_bytes,
            w.direct,
            w.peers
        );
    }
    let _ = writeln!(out, "\nruns: {}", s.runs.len());
    let ports: Vec<String> = s
        .runs
        .iter()
        .map(|r| {
            let p: Vec<String> = r
                .ports
                .iter()
                .map(|p| format!("{}->{}/{}", p.public, p.container, p.protocol))
                .collect();
            if p.is_empty() {
                "-".into()
            } else {
                p.join(",")
            }
        })
        .collect();
    let header = "ports (public->container)";
    let w = ports.iter().map(String::len).fold(header.len(), usize::max);
    if !s.runs.is_empty() {
        let _ = writeln!(
            out,
            "{:>6} {:>6} {:<10} {header:<w$} {:>6} {:>12} {:>12}  image",
            "run", "task", "phase", "conns", "bytes in", "bytes out"
        );
    }
    for (r, ports) in s.runs.iter().zip(&ports) {
        let _ = writeln!(
            out,
            "{:>6} {:>6} {:<10} {ports:<w$} {:>6} {:>12} {:>12}  {}",
            r.id.to_string(),
            r.task.to_string(),
            r.phase.name(),
            r.traffic.connections,
            r.traffic.bytes_in,
            r.traffic.bytes_out,
            r.image
        );
    }
    match &s.router {
        None => out.push_str("\nrouter: not answering (the data plane has stopped)\n"),
        Some(r) => {
            let _ = writeln!(
                out,
                "\nrouter: {} of {} connections; forwarded {} packets ({} bytes) from the VPN, {} ({} bytes) from containers",
                r.connections,
                r.connection_capacity,
                r.forwarded_packets_from_vpn,
                r.forwarded_bytes_from_vpn,
                r.forwarded_packets_from_containers,
                r.forwarded_bytes_from_containers
            );
            if r.drops.is_empty() {
                out.push_str("drops: none\n");
            } else {
                out.push_str("drops:\n");
                for (reason, n) in &r.drops {
                    let _ = writeln!(out, "  {reason:<24} {n}");
                }
            }
        }
    }
    if s.problems.is_empty() {
        out.push_str("\nrecent problems: none\n");
    } else {
        out.push_str("\nrecent problems:\n");
        for p in &s.problems {
            let _ = writeln!(out, "  {} {:<5} {}", p.at, p.level, p.message);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RunId, TaskId};
    use crate::logging::Problem;
    use crate::node::status::view::{Phase, RouterView, RunPort, RunView, Traffic, VpnView};
    use std::net::Ipv4Addr;

    fn sample() -> Status {
        Status {
            node: "amsterdam".into(),
            vpn: VpnView {
                state: "CONNECTED".into(),
                address: Some(Ipv4Addr::new(10, 76, 0, 2)),
                reconnects: 1,
                wireguard: None,
            },
            runs: vec![RunView {
                id: RunId(7),
                task: TaskId(3),
                image: "algonet/echo:latest".into(),
                phase: Phase::Running,
                ports: vec![
                    RunPort {
                        public: 49152,
                        container: 8888,
                        protocol: "tcp".into(),
                    },
                    RunPort {
                        public: 49153,
                        container: 9000,
                        protocol: "udp".into(),
                    },
                ],
                traffic: Traffic {
                    bytes_in: 1234,
                    connections: 2,
                    ..Traffic::default()
                },
            }],
            router: Some(RouterView {
                drops: [("no_mapping".to_string(), 5)].into(),
                ..RouterView::default()
            }),
            problems: vec![Problem {
                at: "2026-12-02T10:00:00Z".into(),
                level: "WARN".into(),
                message: "lost OpenVPN's management connection".into(),
            }],
        }
    }

    #[test]
    fn the_table_shows_runs_ports_moved_drops_and_problems() {
        let t = table(&sample());
        for want in [
            "node amsterdam: VPN CONNECTED at 10.76.0.2, 1 reconnect(s)",
            "49152->8888/tcp,49153->9000/udp",
            "running",
            "1234",
            "no_mapping",
            "lost OpenVPN's management connection",
        ] {
            assert!(t.contains(want), "{want:?} in\n{t}");
        }
        // The JSON round-trips, so scripts read what the table shows.
        let json = serde_json::to_string(&sample()).expect("json");
        assert_eq!(
            serde_json::from_str::<Status>(&json).expect("parse"),
            sample()
        );
    }
}
