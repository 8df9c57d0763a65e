//! What the node's tasks record as they go, for [`super::Status`]: the VPN's state and address,
//! each run's phase and ports, the time from claim to start, the last problems.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

use super::view::{Phase, RunPort, RunView, Traffic, VpnView, WireGuardView};
use crate::api::{RunId, TaskId};
use crate::logging::Recent;
use crate::sync::lock;

/// Where the node's VPN is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VpnState {
    /// No `vpn_subnet`, or a tunnel the router could not take: the node runs without VPN.
    Off,
    /// Before the first try.
    Starting,
    /// No tunnel yet; trying again in the background.
    Retrying,
    /// Connected: the router forwards to peers.
    Connected,
    /// The tunnel's own word for a state between (OpenVPN's `RECONNECTING`, `WAIT`, ...):
    /// forwarding to peers is paused.
    Tunnel(String),
    /// The tunnel's process went away; being brought back.
    Lost,
}

impl VpnState {
    /// The word `algonet node status` and the metrics show.
    pub fn name(&self) -> &str {
        match self {
            VpnState::Off => "off",
            VpnState::Starting => "starting",
            VpnState::Retrying => "retrying",
            VpnState::Connected => "CONNECTED",
            VpnState::Tunnel(name) => name,
            VpnState::Lost => "lost",
        }
    }
}

#[derive(Debug)]
struct Vpn {
    state: VpnState,
    address: Option<Ipv4Addr>,
    reconnects: u64,
}

/// The record; each method is a short lock.
#[derive(Debug)]
pub struct Recorder {
    vpn: Mutex<Vpn>,
    /// The WireGuard device's health while it runs.
    pub wireguard: crate::node::vpn::wireguard::Shown,
    runs: Mutex<BTreeMap<RunId, RunView>>,
    /// Seconds from a run's claim to its algorithm's start.
    pub start_latency: Histogram,
    pub recent: Recent,
    /// The last exposition and when it was made (see [`super::metrics::scrape`]).
    pub(super) last_exposition: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl Recorder {
    pub fn new(recent: Recent) -> Recorder {
        Recorder {
            vpn: Mutex::new(Vpn {
                state: VpnState::Starting,
                address: None,
                reconnects: 0,
            }),
            wireguard: Default::default(),
            runs: Mutex::default(),
            // 50 ms to about 100 s.
            start_latency: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.05, 2.0, 12),
            ),
            recent,
            last_exposition: tokio::sync::Mutex::default(),
        }
    }

    pub fn vpn_state(&self, state: VpnState, address: Option<Ipv4Addr>) {
        let mut v = lock(&self.vpn);
        v.state = state;
        v.address = address;
    }

    pub fn vpn_reconnected(&self) {
        lock(&self.vpn).reconnects += 1;
    }

    pub fn vpn(&self) -> VpnView {
        let v = lock(&self.vpn);
        VpnView {
            state: v.state.name().to_string(),
            address: v.address,
            reconnects: v.reconnects,
            wireguard: lock(&self.wireguard).as_ref().map(WireGuardView::from),
        }
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

    pub fn run_port(&self, id: RunId, port: RunPort) {
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

    /// The runs as recorded (their traffic is the data plane's, joined in [`super::Status`]).
    pub fn runs(&self) -> Vec<RunView> {
        lock(&self.runs).values().cloned().collect()
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
