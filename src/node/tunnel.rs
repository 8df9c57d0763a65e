//! The OpenVPN client container: started in the router namespace with
//! `--ifconfig-noexec --route-noexec` and a management socket in the node's VPN folder, waited
//! for, and watched. The start-up order (existing -> renew -> new) is [`crate::node::vpn`].

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, DeviceMapping, HostConfig, RestartPolicy, RestartPolicyNameEnum,
};

use crate::docker::{Docker, LABEL_OWNER, LABEL_ROLE};
use crate::node::client::ServerClient;
use crate::node::openvpn::{Management, TunnelState};
use crate::node::vpn::VpnSteps;

/// The profile file in the VPN folder; tried first at the next start.
pub const PROFILE: &str = "node.ovpn";
const SOCKET: &str = "mgmt.sock";

/// How the node runs OpenVPN: it sets no address and no route (the router owns the address),
/// answers on a management socket, and ignores IPv6 pushes (the router is IPv4 only).
pub fn client_args(profile: &str, management_socket: &str) -> Vec<String> {
    [
        "--config",
        profile,
        "--dev",
        "tun0",
        "--ifconfig-noexec",
        "--route-noexec",
        "--management",
        management_socket,
        "unix",
        "--pull-filter",
        "ignore",
        "route-ipv6",
        "--pull-filter",
        "ignore",
        "ifconfig-ipv6",
        "--verb",
        "3",
    ]
    .map(String::from)
    .to_vec()
}

/// Where and how the OpenVPN client container runs.
#[derive(Clone, Debug)]
pub struct Tunnel {
    pub docker: Docker,
    pub container: String,
    pub router_container: String,
    pub image: String,
    pub owner: String,
    /// Host folder mounted at /vpn: the profile and the management socket.
    pub dir: PathBuf,
    pub subnet: (Ipv4Addr, u8),
    pub timeout: Duration,
}

fn in_subnet(addr: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    addr.to_bits() & mask == net.to_bits() & mask
}

impl Tunnel {
    pub fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET)
    }

    pub fn saved_profile(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(PROFILE)).ok()
    }

    fn write_profile(&self, ovpn: &str) -> Result<(), String> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| {
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let path = self.dir.join(PROFILE);
        // The profile holds the node's private key.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, ovpn.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// (Re)creates the OpenVPN container with the saved profile.
    pub async fn start_container(&self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.socket());
        self.docker
            .run(
                &self.container,
                ContainerCreateBody {
                    image: Some(self.image.clone()),
                    cmd: Some(client_args(
                        &format!("/vpn/{PROFILE}"),
                        &format!("/vpn/{SOCKET}"),
                    )),
                    labels: Some(
                        [
                            (LABEL_OWNER.to_string(), self.owner.clone()),
                            (LABEL_ROLE.to_string(), "vpn".to_string()),
                        ]
                        .into(),
                    ),
                    host_config: Some(HostConfig {
                        network_mode: Some(format!("container:{}", self.router_container)),
                        cap_add: Some(vec!["NET_ADMIN".into()]),
                        devices: Some(vec![DeviceMapping {
                            path_on_host: Some("/dev/net/tun".into()),
                            path_in_container: Some("/dev/net/tun".into()),
                            cgroup_permissions: Some("rwm".into()),
                        }]),
                        binds: Some(vec![format!("{}:/vpn", self.dir.display())]),
                        restart_policy: Some(RestartPolicy {
                            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                            maximum_retry_count: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Waits until OpenVPN says CONNECTED and returns the management connection (following
    /// state changes) and the address. Fails when the container stops, or at the deadline.
    pub async fn wait_connected(
        &self,
        timeout: Duration,
    ) -> Result<(Management, Ipv4Addr), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer on the management socket");
        while Instant::now() < deadline {
            match self.docker.running(&self.container).await {
                Ok(Some(true)) => {}
                Ok(_) => {
                    let logs = self
                        .docker
                        .logs(&self.container, 5)
                        .await
                        .unwrap_or_default();
                    return Err(format!(
                        "OpenVPN stopped: {}",
                        logs.trim().replace('\n', " | ")
                    ));
                }
                Err(e) => return Err(e.to_string()),
            }
            match Management::connect(&self.socket()).await {
                Ok(mut m) => match m.state().await {
                    Ok(TunnelState {
                        address: Some(a), ..
                    }) if in_subnet(a, self.subnet) => {
                        m.follow().await.map_err(|e| e.to_string())?;
                        return Ok((m, a));
                    }
                    Ok(s) if s.connected() => {
                        return Err(format!(
                            "OpenVPN connected with address {:?}, outside vpn_subnet {}/{}",
                            s.address, self.subnet.0, self.subnet.1
                        ))
                    }
                    Ok(s) => last = format!("OpenVPN state {}", s.name),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "not connected after {}s ({last})",
            timeout.as_secs()
        ))
    }
}

/// The effects of the start-up sequence, on Docker and the server.
#[derive(Debug)]
pub struct Steps<'a> {
    pub tunnel: &'a Tunnel,
    pub client: &'a ServerClient,
    /// The connection that worked, for the watcher.
    pub connected: Option<Management>,
}

impl VpnSteps for Steps<'_> {
    async fn connect(&mut self, ovpn: &str) -> Result<Ipv4Addr, String> {
        self.tunnel.write_profile(ovpn)?;
        self.tunnel.start_container().await?;
        match self.tunnel.wait_connected(self.tunnel.timeout).await {
            Ok((m, a)) => {
                self.connected = Some(m);
                Ok(a)
            }
            Err(e) => {
                let _ = self.tunnel.docker.remove(&self.tunnel.container).await;
                Err(e)
            }
        }
    }

    async fn renew(&mut self, current: &str) -> Result<String, String> {
        self.client
            .renew_profile(current)
            .await
            .map_err(|e| e.to_string())
    }

    async fn fetch_new(&mut self) -> Result<String, String> {
        self.client.new_profile().await.map_err(|e| e.to_string())
    }

    fn save(&mut self, ovpn: &str) -> Result<(), String> {
        self.tunnel.write_profile(ovpn)
    }
}
