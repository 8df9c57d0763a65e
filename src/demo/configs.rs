//! What the demo federation is made of: its addresses and administrator, the options, and the
//! configuration files (the server's, and each node's with its own data).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::server::pki::TunnelKind;

pub const VPN_SUBNET: &str = "10.76.0.0/16";
/// The demo's administrator (a demo on one host; not a secret).
pub const ADMIN: (&str, &str) = ("admin", "demo-password-not-secret");

/// How to set the federation up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Everything the demo writes: configurations, databases, logs.
    pub dir: PathBuf,
    /// Names the network (`algonet-<tag>-net`), containers and nodes (`<tag>-<organization>`),
    /// so tests can run beside a demo.
    pub tag: String,
    pub organizations: Vec<String>,
    /// The API's TCP port; on WireGuard also the hub's UDP port.
    pub server_port: u16,
    /// The internal Docker network the nodes' hubs and the VPN server share is
    /// `172.29.<network>.0/24` ([`DEMO_NETWORK`] for the demo): federations side by side need
    /// different ones.
    pub network: u8,
    /// The built-in VPN's tunnel: an OpenVPN server container, or the server itself as the
    /// WireGuard hub (no VPN container at all).
    pub tunnel: TunnelKind,
    /// More lines of YAML for every node's configuration (`busy_poll_us: 0`, say).
    pub node_settings: String,
    /// The server's VPN provider in place of the built-in one: its YAML line (`vpn_server:
    /// {...}`, an eduVPN portal). No VPN server container is started then; `tunnel` says what
    /// kind of profiles the portal hands out.
    pub server_vpn: Option<String>,
    /// The `algonet` binary the server and nodes run as (this one).
    pub algonet: PathBuf,
    /// An encrypted collaboration: each organization gets an RSA key (`key-<organization>.pem`
    /// in `dir`, its node's `encryption.private_key`), and the administrator's organization
    /// one too (`key-root.pem`), for the researcher's client.
    pub encrypted: bool,
}

/// The demo's Docker network, `172.29.76.0/24`.
pub const DEMO_NETWORK: u8 = 76;

impl Options {
    /// The internal Docker network the routers and the VPN server share.
    pub fn network_subnet(&self) -> String {
        format!("172.29.{}.0/24", self.network)
    }

    /// The OpenVPN server container's address on that network.
    pub fn vpn_server_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 29, self.network, 10)
    }

    /// The host's own address on that network (Docker's gateway): where the nodes reach a
    /// WireGuard hub in the server process.
    pub fn host_ip(&self) -> Ipv4Addr {
        host_ip(self.network)
    }
}

/// The host's address on the federation network `172.29.<network>.0/24` (see
/// [`Options::host_ip`]), for a VPN server on the host set up before the federation.
pub fn host_ip(network: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 29, network, 1)
}

/// Where the key of `organization` is, in an encrypted demo.
pub fn key_file(o: &Options, organization: &str) -> PathBuf {
    o.dir.join(format!("key-{organization}.pem"))
}

/// The ages in the demo data of the `index`th organization (`id,age` rows of the CSV its node
/// gives algorithms as database `default`): made up, the same on every run.
pub fn demo_ages(index: usize) -> Vec<i64> {
    (0..10 + 5 * index)
        .map(|j| 20 + ((index * 7 + j * 13) % 50) as i64)
        .collect()
}

/// server.yaml: the built-in VPN (or the provider of `server_vpn`), SQLite in the demo's
/// folder, metrics beside the API.
pub(super) fn server_yaml(o: &Options) -> String {
    let vpn = match (&o.server_vpn, o.tunnel) {
        (Some(provider), _) => provider.trim_end().to_string(),
        (None, TunnelKind::OpenVpn) => {
            format!(
                "vpn: {{subnet: {VPN_SUBNET}, remote: {}}}",
                o.vpn_server_ip()
            )
        }
        (None, TunnelKind::WireGuard) => format!(
            "vpn: {{subnet: {VPN_SUBNET}, remote: {}, port: {}, tunnel: wireguard}}",
            o.host_ip(),
            o.server_port
        ),
    };
    format!(
        "listen: 127.0.0.1:{}\ndata_dir: {}\nadmin: {{username: {}, password: {}}}\n\
         {vpn}\nmetrics_listen: 127.0.0.1:{}\n",
        o.server_port,
        o.dir.join("server").display(),
        ADMIN.0,
        ADMIN.1,
        o.server_port + 10
    )
}

/// The `databases` of node `index` (of organization `name`): a CSV of its own, written here,
/// unless the caller gives the nodes data of their own.
pub(super) fn node_data(o: &Options, name: &str, index: usize) -> std::io::Result<String> {
    if o.node_settings.contains("databases:") {
        return Ok(String::new());
    }
    let csv = o.dir.join(format!("data-{name}.csv"));
    let rows: String = demo_ages(index)
        .iter()
        .enumerate()
        .map(|(i, age)| format!("{i},{age}\n"))
        .collect();
    std::fs::write(&csv, format!("id,age\n{rows}"))?;
    Ok(format!(
        "databases:\n  - {{label: default, uri: {}, type: csv}}\n",
        csv.display()
    ))
}

/// node.yaml of node `index` (of organization `name`) on the demo's Docker `network`.
pub(super) fn node_yaml(
    o: &Options,
    name: &str,
    api_key: &str,
    index: usize,
    network: &str,
    data: &str,
) -> String {
    let encryption = if o.encrypted {
        format!(
            "encryption: {{enabled: true, private_key: {}}}\n",
            key_file(o, name).display()
        )
    } else {
        String::new()
    };
    format!(
        "name: {tag}-{name}\nserver_url: http://127.0.0.1:{port}\napi_key: {api_key}\n\
         vpn_subnet: {VPN_SUBNET}\ntask_dir: {dir}\nwan_network: {network}\n\
         metrics_listen: 127.0.0.1:{metrics}\n{data}{encryption}{settings}",
        settings = o.node_settings,
        tag = o.tag,
        port = o.server_port,
        metrics = o.server_port + 11 + index as u16,
        dir = o.dir.join(format!("node-{name}")).display(),
    )
}
