//! The node's hub namespace: owned by a sandbox container on the WAN network, shared with the
//! tunnel (the OpenVPN client container), holding the data plane's TUN, the run veths and the
//! proxy's listening socket. Links, routes and rules through rtnetlink only, over one netlink
//! socket opened inside the namespace and kept.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use netstack::{Mapping, Protocol, Vpn};

use crate::api::{PublicPort, RunId};
use crate::docker::{specs, Docker, DockerError};
use crate::net::dataplane::{
    Dataplane, DataplaneConfig, DataplaneError, DataplaneHandle, TunnelEnds,
};
use crate::net::links::{IfName, LinkError, Netlink};
use crate::net::netns::{in_ns, Netns, NetnsError, Resident};
use crate::net::plan::{self, HubPlan, RunLinkPlan};

/// The link-local gateway every container routes through; the proxy listens on it.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The data plane's TUN device.
pub const ROUTER_TUN: &str = "algonet0";

/// What the hub needs to know of the tunnel: the link its packets come and go by in the hub
/// namespace, and that link's MTU (the router's and every run link's).
#[derive(Clone, Debug)]
pub struct TunnelLink {
    pub name: &'static str,
    pub mtu: u16,
}

/// How to make the hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// The hub container's name, and the owner label of what the node makes.
    pub container: String,
    pub owner: String,
    pub sandbox_image: String,
    /// The Docker network of the hub namespace; Docker's default bridge if `None`.
    pub wan_network: Option<String>,
    pub proxy_port: u16,
    /// `None`: the node runs without VPN.
    pub vpn_subnet: Option<ipnet::Ipv4Net>,
    pub tunnel: TunnelLink,
    pub busy_poll: std::time::Duration,
    pub queues: usize,
    /// Whether runs reach only the peers of their scope (`peer_scope` other than `vpn`).
    pub scoped: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("router: {0}")]
    Router(#[from] netstack::Error),
    #[error("cannot listen on {GATEWAY}:{port} for the proxy: {source}")]
    Listen { port: u16, source: std::io::Error },
    #[error("no randomness for the router's hash seed: {0}")]
    Random(getrandom::Error),
}

fn name(s: &str) -> Result<IfName, LinkError> {
    IfName::new(s)
}

#[derive(Debug)]
pub struct Hub {
    pub container: String,
    pub ns: Arc<Netns>,
    /// A thread in the namespace with one netlink connection: links, routes and sysctls
    /// (which act on the namespace of the thread that writes them) change there.
    control: Resident<Netlink>,
    dataplane: std::sync::Mutex<Option<Dataplane>>,
    handle: DataplaneHandle,
    plan: HubPlan,
    mtu: u16,
}

impl Hub {
    /// Starts the hub container, brings up the data plane (no VPN yet: it drops what
    /// containers send) with the routing that needs no tunnel, and returns the proxy's
    /// listening socket, bound inside the namespace.
    pub async fn start(
        docker: &Docker,
        config: HubConfig,
    ) -> Result<(Hub, std::net::TcpListener), HubError> {
        let container = config.container.clone();
        let spec = specs::hub(
            &config.sandbox_image,
            &config.owner,
            config.wan_network.as_deref(),
        );
        docker.run(&container, spec).await?;
        match Hub::set_up(docker, config).await {
            Ok(started) => Ok(started),
            Err(e) => {
                // Nothing of a failed start stays behind.
                let _ = docker.remove(&container).await;
                Err(e)
            }
        }
    }

    async fn set_up(
        docker: &Docker,
        config: HubConfig,
    ) -> Result<(Hub, std::net::TcpListener), HubError> {
        let HubConfig {
            container,
            proxy_port,
            vpn_subnet,
            tunnel,
            ..
        } = config.clone();
        let ns = Arc::new(Netns::of_pid(docker.pid(&container).await?)?);
        let control = Resident::start(&ns, Netlink::connect).await??;
        let (wan, listener) = control
            .run(move |nl| {
                Box::pin(async move {
                    let lo = name("lo")?;
                    nl.configure(&lo, None, None).await?;
                    // The gateway lives on lo too, so the proxy can listen before the first run.
                    nl.add_address(&lo, GATEWAY, 32).await?;
                    let eth0 = name("eth0")?;
                    let wan = nl.index(&eth0).await?.map(|_| eth0);
                    let listener =
                        std::net::TcpListener::bind(SocketAddrV4::new(GATEWAY, proxy_port))
                            .and_then(|l| l.set_nonblocking(true).map(|()| l))
                            .map_err(|source| HubError::Listen {
                                port: proxy_port,
                                source,
                            })?;
                    Ok::<_, HubError>((wan, listener))
                })
            })
            .await??;
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(HubError::Random)?;
        let config = DataplaneConfig {
            tun: name(ROUTER_TUN)?,
            offload: true,
            mtu: tunnel.mtu,
            txqueuelen: 1000,
            busy_poll: config.busy_poll,
            queues: config.queues,
            router: netstack::Config {
                seed: u64::from_ne_bytes(seed),
                scoped: config.scoped,
                ..Default::default()
            },
        };
        // A kernel without TUN offload (IFF_VNET_HDR, TUNSETOFFLOAD) still gets a data plane.
        let dataplane = Dataplane::start(&ns, config.clone()).or_else(|e| {
            tracing::warn!("data plane with offload failed ({e}); starting it without offload");
            Dataplane::start(
                &ns,
                DataplaneConfig {
                    offload: false,
                    ..config
                },
            )
        })?;
        let hub = Hub {
            container,
            ns,
            control,
            handle: dataplane.handle(),
            dataplane: std::sync::Mutex::new(Some(dataplane)),
            plan: HubPlan {
                vpn_link: name(tunnel.name)?,
                tun: name(ROUTER_TUN)?,
                wan,
                vpn_subnet: vpn_subnet.map_or(Ipv4Addr::UNSPECIFIED, |s| s.network()),
                vpn_prefix_len: vpn_subnet.map_or(0, |s| s.prefix_len()),
            },
            mtu: tunnel.mtu,
        };
        let plan = hub.plan.clone();
        let applied = hub
            .control
            .run(move |nl| Box::pin(async move { plan::apply_base(nl, &plan).await }))
            .await;
        if let Err(e) = applied
            .map_err(HubError::from)
            .and_then(|r| r.map_err(HubError::from))
        {
            let _ = hub.stop_dataplane();
            return Err(e);
        }
        Ok((hub, listener))
    }

    /// The MTU of the tunnel, and so of the router and of every run's link.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The data plane's port for a tunnel in the node's process.
    pub fn tunnel(&self) -> TunnelEnds {
        self.handle.tunnel()
    }

    /// Routes the tunnel's link through the router (none to route while a tunnel in the node's
    /// process is attached to the data plane) and gives the router the node's VPN address.
    /// Safe to repeat: after OpenVPN restarted (a new tun0) or its address changed.
    pub async fn connect_vpn(&self, address: Ipv4Addr) -> Result<(), HubError> {
        if !self.handle.tunnel().attached() {
            let plan = self.plan.clone();
            self.control
                .run(move |nl| Box::pin(async move { plan::apply_vpn(nl, &plan).await }))
                .await??;
        }
        let vpn = Vpn {
            address,
            prefix_len: self.plan.vpn_prefix_len,
            mtu: self.mtu,
        };
        self.handle.with(move |r| r.set_vpn(Some(vpn))).await??;
        Ok(())
    }

    /// Sets whom a run may talk to over the VPN (see [`netstack::Scope`]).
    pub async fn set_scope(&self, run: RunId, scope: netstack::Scope) -> Result<(), HubError> {
        self.handle
            .with(move |r| r.set_scope(run.into(), scope.clone()))
            .await?;
        Ok(())
    }

    /// Pauses or resumes forwarding toward VPN peers while OpenVPN is not connected (the
    /// routing plan already keeps such packets off the WAN; this holds them back and counts
    /// them as `tunnel_down`). [`Hub::connect_vpn`] resumes it.
    pub async fn set_tunnel_up(&self, up: bool) -> Result<(), HubError> {
        self.handle.with(move |r| r.set_tunnel_up(up)).await?;
        Ok(())
    }

    /// Gives a run's sandbox its veth, address and routes, and registers the address, its
    /// connections counted for `family` (the run's job).
    pub async fn add_run(
        &self,
        run: RunId,
        family: u64,
        link: RunLinkPlan,
        sandbox: Arc<Netns>,
    ) -> Result<(), HubError> {
        let l = link.clone();
        self.control
            .run(move |nl| Box::pin(async move { plan::add_run_link(nl, &l, sandbox.fd()).await }))
            .await??;
        let addr = link.container;
        self.handle
            .with(move |r| r.add_container(addr, run.into(), family))
            .await??;
        Ok(())
    }

    /// Configures the container end of a run's veth, inside the sandbox.
    pub async fn configure_sandbox(
        link: RunLinkPlan,
        sandbox: &Arc<Netns>,
    ) -> Result<(), HubError> {
        in_ns(sandbox, move || async move {
            plan::configure_container_end(&Netlink::connect()?, &link).await
        })
        .await??;
        Ok(())
    }

    pub async fn add_mapping(
        &self,
        run: RunId,
        protocol: Protocol,
        public_port: PublicPort,
        container: SocketAddrV4,
    ) -> Result<(), HubError> {
        let m = Mapping {
            protocol,
            public_port: public_port.0,
            container,
            run: run.into(),
        };
        self.handle.with(move |r| r.add_mapping(m)).await??;
        Ok(())
    }

    /// Removes a run's mappings, connections, address and veth; reports every failure.
    pub async fn remove_run(&self, run: RunId, link: RunLinkPlan) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = self.handle.with(move |r| r.remove_run(run.into())).await {
            errors.push(e.to_string());
        }
        let removed = self
            .control
            .run(move |nl| Box::pin(async move { plan::remove_run_link(nl, &link).await }))
            .await;
        match removed {
            Ok(failed) => errors.extend(failed.into_iter().map(|e| e.to_string())),
            Err(e) => errors.push(e.to_string()),
        }
        errors
    }

    /// What the data plane has counted.
    pub async fn snapshot(&self) -> Result<crate::net::dataplane::Snapshot, DataplaneError> {
        self.handle.snapshot().await
    }

    /// Stops the data plane (its TUN goes with it). The namespace goes with the container.
    pub fn stop_dataplane(&self) -> Result<(), DataplaneError> {
        let dp = crate::sync::lock(&self.dataplane).take();
        dp.map_or(Ok(()), Dataplane::stop)
    }
}
