//! The node's YAML configuration. A bad file fails at start with the file, the key and the
//! reason. `vpn_subnet` absent means: run without VPN (with a warning), everything else works.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::docker::images::ImageNames;
use crate::node::hub::{HubConfig, TunnelLink};

use ipnet::Ipv4Net;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The server, e.g. `http://127.0.0.1:7601`.
    pub server_url: String,
    #[serde(default = "default_api_path")]
    pub api_path: String,
    pub api_key: String,
    /// The VPN subnet (`10.76.0.0/16`); the address OpenVPN assigns must lie in it.
    #[serde(default, deserialize_with = "subnet")]
    pub vpn_subnet: Option<Ipv4Net>,
    #[serde(default)]
    pub images: ImageNames,
    /// Where runs keep their input, output and token files, and the VPN its profile and
    /// management socket.
    pub task_dir: PathBuf,
    /// Names the node's containers (`algonet-<name>-hub`, ...); `node-<id>` if absent.
    #[serde(default)]
    pub name: Option<String>,
    /// How long OpenVPN may take to connect with one profile before the next is tried.
    #[serde(default = "default_vpn_timeout")]
    pub vpn_connect_timeout_secs: u64,
    /// Whether to ask for WireGuard profiles that reach the hub over TCP (eduVPN's
    /// ProxyGuard; the built-in hub's `GET /vpn/tcp`), for a site whose firewall lets no UDP
    /// out. OpenVPN profiles are not affected.
    #[serde(default)]
    pub vpn_over_tcp: bool,
    /// The algorithm proxy's port on the gateway address.
    #[serde(default = "default_proxy_port")]
    pub proxy_port: u16,
    /// The Docker network the hub namespace is attached to (the default bridge if absent).
    #[serde(default)]
    pub wan_network: Option<String>,
    #[serde(default)]
    pub log_level: crate::logging::Level,
    #[serde(default)]
    pub log_format: crate::logging::Format,
    /// Where Prometheus metrics are served (`GET /metrics`, never on the VPN side); `null`: not
    /// at all.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// Whom a run's algorithm may talk to over the VPN: `task` (the nodes of its task family,
    /// on their family's public ports), `collaboration` (every node of the collaboration, any
    /// port) or `vpn` (every VPN member, as vantage6).
    #[serde(default)]
    pub peer_scope: PeerScope,
    /// The socket `algonet node status` asks (owner-only); `<task_dir>/status.sock` if absent.
    #[serde(default)]
    pub status_socket: Option<PathBuf>,
    /// How long the data plane keeps reading the TUN device once its queue ran empty before it
    /// sleeps, in microseconds (0: never poll). Polling costs CPU while traffic flows and saves a
    /// wake-up per packet: lower latency and steadier throughput, most of all on VMs.
    #[serde(default = "default_busy_poll_us")]
    pub busy_poll_us: u64,
    /// Queues of the data plane's TUN device, each with a router on a thread of its own (1 to
    /// 64): connections spread over them, so the data plane can use that many CPUs.
    #[serde(default = "default_dataplane_queues")]
    pub dataplane_queues: usize,
    /// Runs executed at once; more wait at the server, pending, and start in order as runs
    /// end. A parent waits for its subtasks, and those may run here too: keep it above the
    /// depth of the task families the node's algorithms make.
    #[serde(default = "default_max_concurrent_runs")]
    pub max_concurrent_runs: usize,
    /// The data algorithms may read (vantage6's `databases`): each run sees those its task
    /// asks for, read-only.
    #[serde(default)]
    pub databases: Vec<crate::node::data::Database>,
    /// Whose runs, of which images, the node admits (vantage6's `policies`).
    #[serde(default)]
    pub policies: crate::node::policy::Policies,
    /// More environment for every algorithm (vantage6's `algorithm_env`).
    #[serde(default)]
    pub algorithm_env: std::collections::BTreeMap<String, String>,
    /// Whether a run's log carries its algorithm's output (vantage6's `share_algorithm_logs`);
    /// without, the server gets vantage6's refusal text and the node's own notes only.
    #[serde(default = "default_share_algorithm_logs")]
    pub share_algorithm_logs: bool,
    /// Certificate authorities to trust for `server_url` beside the system's (a PEM file: a
    /// hospital's own CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Whether the collaboration is encrypted, and the organization's private key (vantage6's
    /// `encryption`).
    #[serde(default)]
    pub encryption: crate::node::encryption::Encryption,
}

fn default_share_algorithm_logs() -> bool {
    true
}

fn default_max_concurrent_runs() -> usize {
    16
}

fn subnet<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Ipv4Net>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| {
        crate::net::parse_subnet(&t)
            .map_err(|e| serde::de::Error::custom(format!("vpn_subnet: {e}")))
    })
    .transpose()
}

fn default_api_path() -> String {
    "/api".into()
}

fn default_vpn_timeout() -> u64 {
    30
}

fn default_proxy_port() -> u16 {
    8080
}

/// The configuration's `peer_scope`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PeerScope {
    #[default]
    Task,
    Collaboration,
    Vpn,
}

/// The node's metrics address unless configured: loopback only.
pub const DEFAULT_METRICS_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    7612,
));

fn default_metrics_listen() -> Option<SocketAddr> {
    Some(DEFAULT_METRICS_LISTEN)
}

/// The default of `busy_poll_us`: no polling. Traffic between algorithms crosses OpenVPN, which
/// needs the CPU more: on a small host polling takes CPU from OpenVPN and slows the tunnel
/// (`scripts/bench-tunnel.sh`; the figures are in docs/performance.md). Polling pays where a node
/// has cores to spare and latency between containers of one node matters
/// (`scripts/bench-dataplane.sh`).
pub const DEFAULT_BUSY_POLL_US: u64 = 0;

fn default_busy_poll_us() -> u64 {
    DEFAULT_BUSY_POLL_US
}

fn default_dataplane_queues() -> usize {
    1
}

impl NodeConfig {
    /// The hub of the node `name` (whose containers carry `owner`), for a tunnel with `link`.
    pub fn hub(&self, name: &str, owner: &str, link: TunnelLink) -> HubConfig {
        HubConfig {
            container: format!("algonet-{name}-hub"),
            owner: owner.to_string(),
            sandbox_image: self.images.sandbox.clone(),
            wan_network: self.wan_network.clone(),
            proxy_port: self.proxy_port,
            vpn_subnet: self.vpn_subnet,
            tunnel: link,
            busy_poll: std::time::Duration::from_micros(self.busy_poll_us),
            queues: self.dataplane_queues,
            scoped: self.peer_scope != PeerScope::Vpn,
        }
    }

    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        crate::config::load(path, NodeConfig::parse)
    }

    pub fn parse(text: &str) -> Result<NodeConfig, String> {
        let c: NodeConfig = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        if !(c.server_url.starts_with("http://") || c.server_url.starts_with("https://")) {
            return Err(format!(
                "server_url: {:?} must start with http:// or https://",
                c.server_url
            ));
        }
        if c.api_key.trim().is_empty() {
            return Err("api_key: must not be empty".into());
        }
        if let Some(n) = &c.name {
            if n.is_empty()
                || n.len() > 40
                || !n.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
            {
                return Err(format!(
                    "name: {n:?} must be 1 to 40 letters, digits or '-' (it names containers)"
                ));
            }
        }
        if c.busy_poll_us > 10_000 {
            return Err(format!(
                "busy_poll_us: {} is more than 10000 (10 ms of polling per packet)",
                c.busy_poll_us
            ));
        }
        if !(1..=netstack::router::MAX_SHARDS).contains(&c.dataplane_queues) {
            return Err(format!(
                "dataplane_queues: {} is not between 1 and {}",
                c.dataplane_queues,
                netstack::router::MAX_SHARDS
            ));
        }
        if c.proxy_port == 0 {
            return Err("proxy_port: must be 1 to 65535".into());
        }
        if c.max_concurrent_runs == 0 {
            return Err("max_concurrent_runs: must be at least 1".into());
        }
        crate::node::data::check(&c.databases)?;
        if let Some(ca) = &c.ca_file {
            crate::api::client::trusted(ca).map_err(|e| format!("ca_file: {e}"))?;
        }
        crate::node::policy::check(&c.policies)?;
        c.encryption.key().map_err(|e| e.to_string())?;
        if let Some(key) = c.algorithm_env.keys().find(|k| {
            k.as_str() == "PKG_NAME"
                || k.is_empty()
                || k.starts_with(|ch: char| ch.is_ascii_digit())
                || !k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        }) {
            return Err(format!(
                "algorithm_env: {key:?} is not a variable the node may set (letters, digits and _, not PKG_NAME)"
            ));
        }
        Ok(c)
    }

    /// The images the node runs: the sandbox, and with a VPN the OpenVPN client.
    pub fn images(&self) -> impl Iterator<Item = &String> {
        let vpn_image = self.vpn_subnet.map(|_| &self.images.vpn_client);
        std::iter::once(&self.images.sandbox).chain(vpn_image)
    }

    /// Where the node answers `algonet node status`.
    pub fn status_socket(&self) -> PathBuf {
        self.status_socket
            .clone()
            .unwrap_or_else(|| self.task_dir.join("status.sock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "server_url: http://127.0.0.1:7601\napi_key: k\ntask_dir: /tmp/t\n";

    #[test]
    fn defaults_and_errors_that_name_the_key() {
        let c = NodeConfig::parse(BASE).expect("valid");
        assert_eq!(
            (
                c.proxy_port,
                c.api_path.as_str(),
                c.vpn_subnet,
                c.busy_poll_us
            ),
            (8080, "/api", None, DEFAULT_BUSY_POLL_US)
        );
        for (extra, key) in [
            ("vpn_subnet: 10.76.0.1/16\n", "vpn_subnet"),
            ("vpn_subnet: nonsense\n", "vpn_subnet"),
            ("proxy_port: 0\n", "proxy_port"),
            ("proxy_port: 99999\n", "proxy_port"),
            ("log_level: loud\n", "log_level"),
            ("log_format: xml\n", "log_format"),
            ("peer_scope: everyone\n", "peer_scope"),
            ("metrics_listen: 127.0.0.1\n", "metrics_listen"),
            ("busy_poll_us: 10001\n", "busy_poll_us"),
            ("busy_poll_us: -1\n", "busy_poll_us"),
            ("dataplane_queues: 0\n", "dataplane_queues"),
            ("dataplane_queues: 65\n", "dataplane_queues"),
            ("max_concurrent_runs: 0\n", "max_concurrent_runs"),
            ("databases: [{label: a, uri: /x, type: xml}]\n", "databases"),
            (
                "databases: [{label: a, uri: /nonexistent.csv, type: csv}]\n",
                "databases[0].uri",
            ),
            ("policies: {allowed_users: [alice]}\n", "policies"),
            (
                "policies: {allowed_algorithms: ['[']}\n",
                "allowed_algorithms",
            ),
            ("algorithm_env: {PKG_NAME: x}\n", "algorithm_env"),
            ("images: {vpn: x}\n", "vpn"),
            ("name: a b\n", "name"),
            ("colour: blue\n", "colour"),
            ("encryption: {enabled: true}\n", "encryption.private_key"),
            (
                "encryption: {enabled: true, private_key: /nonexistent.pem}\n",
                "encryption.private_key",
            ),
            ("encryption: {enabled: yes please}\n", "enabled"),
            ("encryption: {key: k.pem}\n", "key"),
        ] {
            let e = NodeConfig::parse(&format!("{BASE}{extra}")).expect_err("must be refused");
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e = NodeConfig::parse("server_url: ftp://x\napi_key: k\ntask_dir: /t\n")
            .expect_err("must be refused");
        assert!(e.contains("server_url"), "{e}");
        assert_eq!(
            crate::net::parse_subnet("10.76.0.0/16"),
            Ok(Ipv4Net::new(std::net::Ipv4Addr::new(10, 76, 0, 0), 16).expect("net"))
        );
    }

    proptest::proptest! {
        /// Any text, and any value for each key, gives a configuration or an error; no panic.
        #[test]
        fn any_text_is_refused_or_accepted_without_panic(text in ".{0,200}") {
            let _ = NodeConfig::parse(&text);
        }

        #[test]
        fn any_value_of_a_key_is_handled(key in "[a-z_]{1,24}", value in "\\PC{0,40}") {
            let _ = NodeConfig::parse(&format!("{BASE}{key}: {value}\n"));
        }
    }
}
