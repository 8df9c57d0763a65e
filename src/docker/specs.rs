//! What each container algonet makes looks like: image, command, labels, network mode, mounts
//! and devices. One function per kind of container, so the node, the demo and their tests make
//! them alike.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointIpamConfig, EndpointSettings, HostConfig,
    NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
};

use super::{LABEL_OWNER, LABEL_ROLE, LABEL_RUN};
use crate::api::RunId;

/// What a container is for (its [`LABEL_ROLE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Owns the node's hub namespace.
    Hub,
    /// The node's OpenVPN client.
    Vpn,
    /// Owns a run's network namespace.
    Sandbox,
    /// A run's algorithm.
    Algorithm,
    /// The demo's OpenVPN server.
    VpnServer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Vpn => "vpn",
            Role::Sandbox => "sandbox",
            Role::Algorithm => "algorithm",
            Role::VpnServer => "vpn-server",
        }
    }
}

fn labels(owner: &str, role: Role, run: Option<RunId>) -> Option<HashMap<String, String>> {
    let mut l: HashMap<String, String> = [
        (LABEL_OWNER.to_string(), owner.to_string()),
        (LABEL_ROLE.to_string(), role.as_str().to_string()),
    ]
    .into();
    if let Some(run) = run {
        l.insert(LABEL_RUN.to_string(), run.to_string());
    }
    Some(l)
}

/// OpenVPN needs the TUN device and the right to configure it.
pub fn with_tun(host: HostConfig) -> HostConfig {
    HostConfig {
        cap_add: Some(vec!["NET_ADMIN".into()]),
        devices: Some(vec![DeviceMapping {
            path_on_host: Some("/dev/net/tun".into()),
            path_in_container: Some("/dev/net/tun".into()),
            cgroup_permissions: Some("rwm".into()),
        }]),
        ..host
    }
}

/// The pause container that owns the node's hub namespace, on `network` (Docker's default
/// bridge if `None`).
pub fn hub(image: &str, owner: &str, network: Option<&str>) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.into()),
        labels: labels(owner, Role::Hub, None),
        host_config: Some(HostConfig {
            network_mode: Some(network.unwrap_or("bridge").into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The node's OpenVPN client, in the hub's namespace, with `dir` (profile, management
/// socket) at `/vpn`; Docker restarts it unless the node stopped it.
pub fn openvpn_client(
    image: &str,
    owner: &str,
    hub_container: &str,
    dir: &Path,
    args: Vec<String>,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.into()),
        cmd: Some(args),
        labels: labels(owner, Role::Vpn, None),
        host_config: Some(with_tun(HostConfig {
            network_mode: Some(format!("container:{hub_container}")),
            binds: Some(vec![format!("{}:/vpn", dir.display())]),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A run's sandbox: no network of Docker's; the node gives its namespace a veth.
pub fn sandbox(image: &str, owner: &str, run: RunId) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.into()),
        labels: labels(owner, Role::Sandbox, Some(run)),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A run's algorithm, in its sandbox's namespace, with `binds` (`host:container[:ro]`: the
/// run's folder, its databases).
pub fn algorithm(
    image: &str,
    owner: &str,
    run: RunId,
    sandbox: &str,
    env: &[(String, String)],
    binds: Vec<String>,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.into()),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: labels(owner, Role::Algorithm, Some(run)),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{sandbox}")),
            binds: Some(binds),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The demo's OpenVPN server at `ip` on `network`, running `server.conf` from the built-in
/// PKI's folder `pki` (read-only).
pub fn openvpn_server(
    image: &str,
    owner: &str,
    network: &str,
    ip: Ipv4Addr,
    pki: &Path,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.into()),
        cmd: Some(
            ["--cd", "/pki", "--config", "server.conf"]
                .map(String::from)
                .to_vec(),
        ),
        labels: labels(owner, Role::VpnServer, None),
        host_config: Some(with_tun(HostConfig {
            network_mode: Some(network.into()),
            binds: Some(vec![format!("{}:/pki:ro", pki.display())]),
            ..Default::default()
        })),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(
                [(
                    network.to_string(),
                    EndpointSettings {
                        ipam_config: Some(EndpointIpamConfig {
                            ipv4_address: Some(ip.to_string()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )]
                .into(),
            ),
        }),
        ..Default::default()
    }
}
