//! OpenVPN as the node's [`Tunnel`]: the OpenVPN client container, started in the hub namespace
//! with `--ifconfig-noexec --route-noexec` and a management socket in the node's VPN folder
//! ([`management`]), waited for, followed, and brought back.

pub mod management;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::{Change, StepError, Tunnel};
use crate::docker::{specs, Docker, DockerError};
use management::{Management, ManagementError, TunnelState};

/// Why OpenVPN did not come up, or a profile could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// the VPN folder or the profile could not be written
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Docker failed
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// the container stopped (a broken profile, say)
    #[error("OpenVPN stopped: {logs}")]
    Stopped { logs: String },
    /// the management connection failed after CONNECTED
    #[error(transparent)]
    Management(#[from] ManagementError),
    /// OpenVPN connected with an address the node does not accept
    #[error("OpenVPN connected with address {address:?}, outside vpn_subnet {subnet}")]
    OutsideSubnet {
        address: Option<Ipv4Addr>,
        subnet: Ipv4Net,
    },
    /// no CONNECTED by the deadline, though the VPN server answered
    #[error("not connected after {secs}s ({last}); OpenVPN's last lines: {logs}")]
    Timeout {
        secs: u64,
        last: String,
        logs: String,
    },
    /// not a packet from the VPN server by the deadline: a new certificate would not help
    #[error("the VPN server did not answer within {secs}s; OpenVPN's last lines: {logs}")]
    Silent { secs: u64, logs: String },
}

/// The profile file in the VPN folder; tried first at the next start.
pub const PROFILE: &str = "node.ovpn";
const SOCKET: &str = "mgmt.sock";

/// How the node runs OpenVPN: it sets no address and no route (the router owns the address),
/// keeps tun0 through its own restarts (a ping-restart or SIGUSR1 does not take the tunnel's
/// route away), answers on a management socket, and ignores IPv6 pushes (the router is IPv4
/// only).
pub fn client_args(profile: &str, management_socket: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--config",
        profile,
        "--dev",
        super::kind::Kind::OpenVpn.link().name,
        "--ifconfig-noexec",
        "--route-noexec",
        "--persist-tun",
        "--management",
        management_socket,
        "unix",
    ]
    .map(String::from)
    .to_vec();
    args.extend(client_settings().iter().map(|s| s.to_string()));
    args
}

/// The settings of the node's OpenVPN client that are not about who owns tun0: what a plain
/// client of the same server would run with too.
pub fn client_settings() -> &'static [&'static str] {
    &[
        "--pull-filter",
        "ignore",
        "route-ipv6",
        "--pull-filter",
        "ignore",
        "ifconfig-ipv6",
        "--verb",
        "3",
        "--fast-io",
        "--sndbuf",
        "1048576",
        "--rcvbuf",
        "1048576",
    ]
}

/// Where and how the OpenVPN client container runs.
#[derive(Debug)]
pub struct OpenVpn {
    pub docker: Docker,
    pub container: String,
    pub hub_container: String,
    pub image: String,
    pub owner: String,
    /// Host folder mounted at /vpn: the profile and the management socket.
    pub dir: PathBuf,
    pub subnet: Ipv4Net,
    pub timeout: Duration,
    /// The management connection of the connected tunnel, following its state changes.
    pub management: Option<Management>,
}

impl StepError for TunnelError {
    fn server_silent(&self) -> bool {
        matches!(self, TunnelError::Silent { .. })
    }
}

impl OpenVpn {
    /// The OpenVPN client of `node`: its container beside the hub, its folder in `task_dir`.
    pub fn of(node: &crate::node::state::Node, subnet: Ipv4Net) -> OpenVpn {
        OpenVpn {
            docker: node.docker.clone(),
            container: format!("algonet-{}-vpn", node.name),
            hub_container: node.hub.container.clone(),
            image: node.config.images.vpn_client.clone(),
            owner: node.owner.clone(),
            dir: node.config.task_dir.join("vpn"),
            subnet,
            timeout: Duration::from_secs(node.config.vpn_connect_timeout_secs),
            management: None,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET)
    }

    fn write_profile(&self, ovpn: &str) -> Result<(), TunnelError> {
        let file = |path: PathBuf| move |source| TunnelError::File { path, source };
        crate::private::dir(&self.dir).map_err(file(self.dir.clone()))?;
        // The profile holds the node's private key.
        let path = self.dir.join(PROFILE);
        crate::private::file(&path, ovpn.as_bytes()).map_err(file(path.clone()))
    }

    /// (Re)creates the OpenVPN container with the saved profile.
    pub async fn start_container(&self) -> Result<(), TunnelError> {
        let _ = std::fs::remove_file(self.socket());
        let args = client_args(&format!("/vpn/{PROFILE}"), &format!("/vpn/{SOCKET}"));
        let spec = specs::openvpn_client(
            &self.image,
            &self.owner,
            &self.hub_container,
            &self.dir,
            args,
        );
        Ok(self.docker.run(&self.container, spec).await?)
    }

    /// Waits until OpenVPN says CONNECTED and returns the management connection (following
    /// state changes) and the address. Fails when the container stops, or at the deadline
    /// ([`TunnelError::Silent`] when the server never answered).
    pub async fn wait_connected(
        &self,
        timeout: Duration,
    ) -> Result<(Management, Ipv4Addr), TunnelError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer on the management socket");
        let logs = || async {
            let logs = self.docker.logs(&self.container, 5).await;
            logs.unwrap_or_default().trim().replace('\n', " | ")
        };
        while Instant::now() < deadline {
            match self.docker.running(&self.container).await {
                Ok(Some(true)) => {}
                Ok(_) => return Err(TunnelError::Stopped { logs: logs().await }),
                Err(e) => return Err(e.into()),
            }
            match Management::connect(&self.socket()).await {
                Ok(mut m) => match m.state().await {
                    Ok(TunnelState {
                        address: Some(a), ..
                    }) if self.subnet.contains(&a) => {
                        m.follow().await?;
                        return Ok((m, a));
                    }
                    Ok(s) if s.connected() => {
                        return Err(TunnelError::OutsideSubnet {
                            address: s.address,
                            subnet: self.subnet,
                        })
                    }
                    Ok(s) => last = format!("OpenVPN state {}", s.name),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if !self.server_answered().await {
            return Err(TunnelError::Silent {
                secs: timeout.as_secs(),
                logs: logs().await,
            });
        }
        Err(TunnelError::Timeout {
            secs: timeout.as_secs(),
            last,
            logs: logs().await,
        })
    }

    /// Whether OpenVPN's state history shows a packet from the server. When the history cannot
    /// be read, the server counts as having answered: the full start-up order is the safe side.
    async fn server_answered(&self) -> bool {
        let history = match Management::connect(&self.socket()).await {
            Ok(mut m) => m.history().await,
            Err(e) => Err(e),
        };
        history.map_or(true, |h| h.iter().any(TunnelState::server_answered))
    }
}

impl Tunnel for OpenVpn {
    type Error = TunnelError;

    fn saved_profile(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(PROFILE)).ok()
    }

    fn save(&mut self, ovpn: &str) -> Result<(), TunnelError> {
        self.write_profile(ovpn)
    }

    async fn connect(&mut self, ovpn: &str) -> Result<Ipv4Addr, TunnelError> {
        self.write_profile(ovpn)?;
        self.start_container().await?;
        match self.wait_connected(self.timeout).await {
            Ok((m, a)) => {
                self.management = Some(m);
                Ok(a)
            }
            Err(e) => {
                self.remove().await;
                Err(e)
            }
        }
    }

    async fn next_change(&mut self) -> Change {
        loop {
            let Some(m) = self.management.as_mut() else {
                return Change::Lost("no management connection to OpenVPN".into());
            };
            match m.next_change().await {
                Ok(s) if s.connected() => {
                    // CONNECTED without an address says nothing new.
                    if let Some(a) = s.address {
                        return Change::Connected(a);
                    }
                }
                Ok(s) => return Change::Down(s.name),
                Err(e) => {
                    self.management = None;
                    return Change::Lost(format!("lost OpenVPN's management connection ({e})"));
                }
            }
        }
    }

    /// Starts the container again if it stopped, makes it anew from the kept profile if it is
    /// gone, and waits for it to connect.
    async fn recover(&mut self) -> Result<Ipv4Addr, TunnelError> {
        match self.docker.running(&self.container).await? {
            Some(true) => {}
            Some(false) => self.docker.start(&self.container).await?,
            None => self.start_container().await?,
        }
        let (m, a) = self.wait_connected(self.timeout).await?;
        self.management = Some(m);
        Ok(a)
    }

    async fn remove(&mut self) {
        self.management = None;
        let _ = self.docker.remove(&self.container).await;
    }
}
