//! What a running node shows of itself, one [`Status`] for both readers: `algonet node status`
//! (JSON over a Unix socket only the node's user may open, printed as tables or passed on with
//! `--json`) and Prometheus (the node's metrics, [`NodeMetrics`]). The router's counters are
//! read from the data plane between two batches of packets, never by locking its path.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use netstack::{DropReason, Reply};
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::api::{RunId, TaskId};
use crate::logging::{Problem, Recent};
use crate::metrics::{Describe, Sheet};
use crate::net::dataplane::Snapshot;
use crate::node::state::{lock, Node};

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
    const ALL: [Phase; 3] = [Phase::Preparing, Phase::Running, Phase::Ending];

    fn name(self) -> &'static str {
        match self {
            Phase::Preparing => "preparing",
            Phase::Running => "running",
            Phase::Ending => "ending",
        }
    }
}

/// A public port of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
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
    pub ports: Vec<Port>,
    #[serde(default)]
    pub traffic: Traffic,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vpn {
    /// `off` (no VPN), `starting`, OpenVPN's state name (`CONNECTED`, `RECONNECTING`, ...), or
    /// `lost` (its management connection went away; being brought back).
    pub state: String,
    pub address: Option<Ipv4Addr>,
    /// Times the tunnel came back after it had connected.
    pub reconnects: u64,
}

/// The router's counters since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Router {
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
    /// Every drop and reply counter, zeros too (for the metrics; the socket shows those that
    /// moved).
    #[serde(skip)]
    all_drops: Vec<(&'static str, u64)>,
    #[serde(skip)]
    all_replies: Vec<(&'static str, u64)>,
}

/// Everything `algonet node status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub vpn: Vpn,
    pub runs: Vec<RunView>,
    /// Absent if the data plane did not answer (stopping).
    pub router: Option<Router>,
    /// The last warnings and errors, oldest first.
    pub problems: Vec<Problem>,
}

/// What the node's tasks record for [`Status`] as they go.
#[derive(Debug)]
pub struct Observed {
    vpn: Mutex<Vpn>,
    runs: Mutex<BTreeMap<RunId, RunView>>,
    /// Seconds from a run's claim to its algorithm's start.
    pub start_latency: Histogram,
    pub recent: Recent,
    /// The last exposition and when it was made (see [`scrape`]).
    scraped: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl Observed {
    pub fn new(recent: Recent) -> Observed {
        Observed {
            vpn: Mutex::new(Vpn {
                state: "starting".into(),
                ..Vpn::default()
            }),
            runs: Mutex::default(),
            // 50 ms to about 100 s.
            start_latency: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.05, 2.0, 12),
            ),
            recent,
            scraped: tokio::sync::Mutex::default(),
        }
    }

    pub fn vpn_state(&self, state: &str, address: Option<Ipv4Addr>) {
        let mut v = lock(&self.vpn);
        v.state = state.into();
        v.address = address;
    }

    pub fn vpn_reconnected(&self) {
        lock(&self.vpn).reconnects += 1;
    }

    pub fn run_claimed(&self, id: RunId, task: TaskId, image: &str) {
        lock(&self.runs).insert(
            id,
            RunView {
                id,
                task,
                image: image.into(),
                phase: Phase::Preparing,
                ports: Vec::new(),
                traffic: Traffic::default(),
            },
        );
    }

    pub fn run_port(&self, id: RunId, port: Port) {
        if let Some(r) = lock(&self.runs).get_mut(&id) {
            r.ports.push(port);
        }
    }

    pub fn run_phase(&self, id: RunId, phase: Phase, claimed: Instant) {
        if phase == Phase::Running {
            self.start_latency.observe(claimed.elapsed().as_secs_f64());
        }
        if let Some(r) = lock(&self.runs).get_mut(&id) {
            r.phase = phase;
        }
    }

    /// The runs the node is carrying out now.
    pub fn run_ids(&self) -> Vec<RunId> {
        lock(&self.runs).keys().copied().collect()
    }

    /// The runs not yet ending (whose end the node has not begun to report).
    pub fn unended_run_ids(&self) -> Vec<RunId> {
        lock(&self.runs)
            .iter()
            .filter(|(_, r)| r.phase != Phase::Ending)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn run_ended(&self, id: RunId) {
        lock(&self.runs).remove(&id);
    }
}

impl Node {
    /// The node as it is now.
    pub async fn status(&self) -> Status {
        let snapshot = self.hub.snapshot().await.ok();
        let mut runs: Vec<RunView> = lock(&self.observed.runs).values().cloned().collect();
        let router = snapshot.as_ref().map(|s| {
            let traffic: BTreeMap<netstack::RunId, &netstack::RunTraffic> =
                s.runs.iter().map(|(r, t)| (*r, t)).collect();
            for run in &mut runs {
                if let Some(t) = traffic.get(&run.id.into()) {
                    run.traffic = Traffic {
                        packets_in: t.packets[0],
                        bytes_in: t.bytes[0],
                        packets_out: t.packets[1],
                        bytes_out: t.bytes[1],
                        connections: t.connections,
                    };
                }
            }
            router_view(s)
        });
        Status {
            node: self.name.clone(),
            vpn: lock(&self.observed.vpn).clone(),
            runs,
            router,
            problems: self.observed.recent.list(),
        }
    }
}

fn router_view(s: &Snapshot) -> Router {
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
    Router {
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
        all_drops,
        all_replies,
    }
}

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
            "Whether OpenVPN is connected",
            i64::from(v.state == "CONNECTED"),
        )?;
        sheet.gauges(
            "node_vpn_state",
            "OpenVPN's state (the one series present is 1)",
            [([("state", v.state.as_str())], 1)],
        )?;
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
    let mut last = node.observed.scraped.lock().await;
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

/// Why the status socket could not be served or asked.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("status socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("status socket {}: not a node's answer: {source}", path.display())]
    Garbage {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Listens on `path` (a stale socket there is replaced; the file is made owner-only) and
/// answers each connection with the node's status as JSON, then closes it.
pub fn listen(path: &Path) -> Result<tokio::net::UnixListener, StatusError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let error = |source| StatusError::Socket {
        path: path.into(),
        source,
    };
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() {
            std::fs::remove_file(path).map_err(error)?;
        }
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    Ok(listener)
}

pub async fn serve(listener: tokio::net::UnixListener, node: std::sync::Arc<Node>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let status = node.status().await;
            let json = serde_json::to_vec(&status).unwrap_or_default();
            let _ = stream.write_all(&json).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Asks the node listening on `path`.
pub async fn ask(path: &Path) -> Result<Status, StatusError> {
    use tokio::io::AsyncReadExt;
    let error = |source| StatusError::Socket {
        path: path.into(),
        source,
    };
    let mut stream = tokio::net::UnixStream::connect(path).await.map_err(error)?;
    let mut text = Vec::new();
    // A status is a few KB; a peer that sends without end is not a node.
    (&mut stream)
        .take(16 << 20)
        .read_to_end(&mut text)
        .await
        .map_err(error)?;
    serde_json::from_slice(&text).map_err(|source| StatusError::Garbage {
        path: path.into(),
        source,
    })
}

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

    fn sample() -> Status {
        Status {
            node: "amsterdam".into(),
            vpn: Vpn {
                state: "CONNECTED".into(),
                address: Some(Ipv4Addr::new(10, 76, 0, 2)),
                reconnects: 1,
            },
            runs: vec![RunView {
                id: RunId(7),
                task: TaskId(3),
                image: "algonet/echo:latest".into(),
                phase: Phase::Running,
                ports: vec![
                    Port {
                        public: 49152,
                        container: 8888,
                        protocol: "tcp".into(),
                    },
                    Port {
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
            router: Some(Router {
                drops: [("no_mapping".to_string(), 5)].into(),
                ..Router::default()
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

    #[tokio::test]
    async fn the_socket_is_private_replaces_only_a_stale_socket_and_garbage_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("algonet-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("status.sock");
        // A stale socket (a node that was killed) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
        let listener = listen(&path).expect("listen over a stale socket");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Something that answers garbage is not taken for a node.
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"{\"node\": 5").await;
            }
        });
        assert!(matches!(ask(&path).await, Err(StatusError::Garbage { .. })));
        // Nothing there: the error names the socket.
        let e = ask(&dir.join("none.sock")).await.expect_err("no node");
        assert!(e.to_string().contains("none.sock"), "{e}");
        // A file that is not a socket is never removed to make room.
        let file = dir.join("file");
        std::fs::write(&file, b"keep me").expect("file");
        assert!(listen(&file).is_err());
        assert_eq!(std::fs::read(&file).expect("still there"), b"keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
