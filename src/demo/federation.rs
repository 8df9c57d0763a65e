//! A federation on one Linux host with Docker: the images built offline, a server with the
//! built-in VPN (an OpenVPN server container on an internal Docker network, or on WireGuard the
//! server process itself as the hub), one node process per organization; each step on its own, so the Docker-tier tests can drive it step by step
//! (stop the server, kill a node, start it again).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::configs::{self, Options, ADMIN};
use crate::api::client::{ClientError, Session};
use crate::api::{
    Collaboration, CollaborationId, NewCollaboration, NewNode, NewNodeKey, NewOrganization,
    Organization, OrganizationId,
};
use crate::docker::images::{ImageError, ImageNames, ECHO_IMAGE};
use crate::docker::{specs, Docker, DockerError};
use crate::feature::{FeatureError, Row, Target};
use crate::server::pki::TunnelKind;

/// Why the demo federation could not be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Images(#[from] ImageError),
    /// a file of the demo could not be written, or a process not started
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Server(#[from] ClientError),
    #[error("the server exited ({status}): {last}")]
    ServerExited { status: ExitStatus, last: String },
    #[error("the server did not answer in {secs}s: {source}")]
    ServerSilent { secs: u64, source: ClientError },
    #[error("node {organization} exited ({status}); its log: {}", log.display())]
    NodeExited {
        organization: String,
        status: ExitStatus,
        log: PathBuf,
    },
    #[error("not every node connected within {secs}s (logs in {})", dir.display())]
    NotConnected { secs: u64, dir: PathBuf },
    #[error(transparent)]
    Feature(#[from] FeatureError),
    /// a demo kept running earlier still runs
    #[error("a demo is kept running ({}); stop it first with `algonet demo stop`", pids.join(", "))]
    Kept { pids: Vec<String> },
    #[error("setting up (logs in {}): {source}", dir.display())]
    SetUp {
        dir: PathBuf,
        source: Box<DemoError>,
    },
}

pub(super) fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.to_string();
    move |source| DemoError::Io { what, source }
}

/// A running federation. Dropping it without [`Federation::down`] still stops the processes.
#[derive(Debug)]
pub struct Federation {
    pub options: Options,
    pub docker: Docker,
    pub server: Option<Child>,
    pub nodes: Vec<NodeProc>,
    pub collaboration: CollaborationId,
    pub api: String,
    pub network: String,
    /// The OpenVPN server container (none on WireGuard: the server process is the hub).
    pub vpn_server: Option<String>,
}

#[derive(Debug)]
pub struct NodeProc {
    pub organization: String,
    pub organization_id: OrganizationId,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

/// Prints a step and how long the demo has been going.
pub fn step(started: Instant, what: &str) {
    eprintln!("==> [{:>5.1}s] {what}", started.elapsed().as_secs_f64());
}

fn spawn(algonet: &Path, args: &[&str], log: &Path) -> Result<Child, DemoError> {
    let out = std::fs::File::create(log).map_err(io(log.display()))?;
    Command::new(algonet)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(io(log.display()))?)
        .stderr(out)
        .spawn()
        .map_err(io(format!("starting {}", algonet.display())))
}

/// SIGTERM, then SIGKILL if it has not ended within `grace`.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // The pid is a child this process started and has not reaped, so it names that child.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Federation {
    /// Server, VPN server and nodes, up and connected (every node registered its VPN
    /// address).
    pub async fn up(options: Options, started: Instant) -> Result<Federation, DemoError> {
        let docker = Docker::connect().await?;
        step(started, "building images offline (sandbox, openvpn, echo)");
        crate::docker::images::build(&docker, &ImageNames::default(), &options.algonet).await?;
        let _ = std::fs::remove_dir_all(&options.dir);
        std::fs::create_dir_all(&options.dir).map_err(io(options.dir.display()))?;
        let network = format!("algonet-{}-net", options.tag);
        let mut f = Federation {
            api: format!("http://127.0.0.1:{}/api", options.server_port),
            vpn_server: (options.tunnel == TunnelKind::OpenVpn && options.server_vpn.is_none())
                .then(|| format!("algonet-{}-openvpn-server", options.tag)),
            options,
            docker,
            server: None,
            nodes: Vec::new(),
            collaboration: CollaborationId(0),
            network,
        };
        if let Err(e) = f.start(started).await {
            step(started, "set-up failed; tearing down what was started");
            for err in f.down().await {
                eprintln!("teardown: {err}");
            }
            return Err(e);
        }
        Ok(f)
    }

    async fn start(&mut self, started: Instant) -> Result<(), DemoError> {
        let o = self.options.clone();
        step(
            started,
            &format!(
                "internal Docker network {} ({})",
                self.network,
                o.network_subnet()
            ),
        );
        self.docker
            .internal_network(&self.network, &o.network_subnet())
            .await?;

        step(
            started,
            match (o.tunnel, &o.server_vpn) {
                (_, Some(_)) => "starting the server (its VPN provider as given, SQLite)",
                (TunnelKind::OpenVpn, None) => "starting the server (built-in OpenVPN PKI, SQLite)",
                (TunnelKind::WireGuard, None) => {
                    "starting the server (the WireGuard hub in its own process, SQLite)"
                }
            },
        );
        let server_yaml = o.dir.join("server.yaml");
        std::fs::write(&server_yaml, configs::server_yaml(&o))
            .map_err(io(server_yaml.display()))?;
        self.start_server()?;
        let admin = self.admin_when_up(Duration::from_secs(30)).await?;

        if let Some(vpn_server) = &self.vpn_server {
            step(
                started,
                &format!("starting the OpenVPN server container {vpn_server}"),
            );
            let pki = o.dir.join("server").join("vpn");
            self.docker
                .run(
                    vpn_server,
                    specs::openvpn_server(
                        &ImageNames::default().vpn_client,
                        &o.tag,
                        &self.network,
                        o.vpn_server_ip(),
                        &pki,
                    ),
                )
                .await?;
        }

        step(
            started,
            &format!(
                "organizations {:?}, one collaboration, one node each",
                o.organizations
            ),
        );
        let mut org_ids = Vec::new();
        for name in &o.organizations {
            let org: Organization = admin
                .post(
                    "/organization",
                    &NewOrganization {
                        name: name.clone(),
                        ..NewOrganization::default()
                    },
                )
                .await?;
            org_ids.push(org.id);
        }
        let c: Collaboration = admin
            .post(
                "/collaboration",
                &NewCollaboration {
                    name: "demo".into(),
                    organization_ids: org_ids.clone(),
                    encrypted: o.encrypted,
                },
            )
            .await?;
        self.collaboration = c.id;
        if o.encrypted {
            step(
                started,
                "an RSA key for each organization (encrypted collaboration)",
            );
            for name in o.organizations.iter().map(String::as_str).chain(["root"]) {
                let path = configs::key_file(&o, name);
                let pem = crate::crypto::PrivateKey::generate_pem(4096)
                    .map_err(|e| io(path.display())(std::io::Error::other(e)))?;
                crate::private::file(&path, &pem).map_err(io(path.display()))?;
            }
        }
        for (name, id) in o.organizations.iter().zip(&org_ids) {
            let n: NewNodeKey = admin
                .post(
                    "/node",
                    &NewNode {
                        organization_id: *id,
                        collaboration_id: self.collaboration,
                        name: None,
                    },
                )
                .await?;
            let index = self.nodes.len();
            let data = configs::node_data(&o, name, index).map_err(io("the demo data"))?;
            let config = o.dir.join(format!("node-{name}.yaml"));
            let text = configs::node_yaml(&o, name, &n.api_key, index, &self.network, &data);
            std::fs::write(&config, text).map_err(io(config.display()))?;
            self.nodes.push(NodeProc {
                organization: name.clone(),
                organization_id: *id,
                log: o.dir.join(format!("node-{name}.log")),
                config,
                child: None,
            });
        }
        for i in 0..self.nodes.len() {
            self.start_node(i)?;
        }
        step(
            started,
            "waiting for every node to connect to the VPN and register its address",
        );
        self.wait_connected(&admin, Duration::from_secs(120), started)
            .await
    }

    /// Starts the server process (again, after [`Federation::stop_server`]: same database, PKI
    /// and token secret); its log is appended to.
    pub fn start_server(&mut self) -> Result<(), DemoError> {
        let o = &self.options;
        let path = o.dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(path.display()))?;
        self.server = Some(
            Command::new(&o.algonet)
                .args(["server", "--config"])
                .arg(o.dir.join("server.yaml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io(path.display()))?)
                .stderr(log)
                .spawn()
                .map_err(io("starting the server"))?,
        );
        Ok(())
    }

    pub fn stop_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            stop(&mut s, Duration::from_secs(10));
        }
    }

    pub fn start_node(&mut self, i: usize) -> Result<(), DemoError> {
        let n = &mut self.nodes[i];
        n.child = Some(spawn(
            &self.options.algonet,
            &["node", "--config", &n.config.to_string_lossy()],
            &n.log,
        )?);
        Ok(())
    }

    /// Logs in as the administrator once the server answers; fails at once if the server
    /// process ended (a port in use, say).
    pub async fn admin_when_up(&mut self, timeout: Duration) -> Result<Session, DemoError> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(Ok(Some(status))) = self.server.as_mut().map(Child::try_wait) {
                let log = self.options.dir.join("server.log");
                let last = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(DemoError::ServerExited {
                    status,
                    last: last.lines().last().unwrap_or("see its log").trim().into(),
                });
            }
            match Session::login_user(&self.api, ADMIN.0, ADMIN.1).await {
                Ok(a) => return Ok(a),
                Err(source) if Instant::now() > until => {
                    return Err(DemoError::ServerSilent {
                        secs: timeout.as_secs(),
                        source,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    pub async fn admin(&self) -> Result<Session, DemoError> {
        Ok(Session::login_user(&self.api, ADMIN.0, ADMIN.1).await?)
    }

    /// The nodes' VPN addresses as the server knows them, by organization id.
    pub async fn addresses(
        &self,
        admin: &Session,
    ) -> Result<Vec<(OrganizationId, Option<String>)>, DemoError> {
        let nodes = crate::feature::nodes(admin, self.collaboration).await?;
        Ok(nodes
            .into_iter()
            .map(|n| (n.organization.id, n.ip))
            .collect())
    }

    /// Waits until every node has registered a VPN address.
    pub async fn wait_connected(
        &mut self,
        admin: &Session,
        timeout: Duration,
        started: Instant,
    ) -> Result<(), DemoError> {
        let until = Instant::now() + timeout;
        let mut shown = 0;
        loop {
            let addrs = self.addresses(admin).await?;
            let up: Vec<String> = addrs
                .iter()
                .filter_map(|(id, ip)| {
                    let n = self.nodes.iter().find(|n| n.organization_id == *id)?;
                    Some(format!("{} {}", n.organization, ip.as_deref()?))
                })
                .collect();
            if up.len() > shown {
                shown = up.len();
                step(started, &format!("connected: {}", up.join(", ")));
            }
            if up.len() == self.nodes.len() {
                return Ok(());
            }
            for n in &mut self.nodes {
                if let Some(Ok(Some(status))) = n.child.as_mut().map(Child::try_wait) {
                    return Err(DemoError::NodeExited {
                        organization: n.organization.clone(),
                        status,
                        log: n.log.clone(),
                    });
                }
            }
            if Instant::now() >= until {
                return Err(DemoError::NotConnected {
                    secs: timeout.as_secs(),
                    dir: self.options.dir.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The feature test across all organizations, the parent on `parent`'s node (the first
    /// organization's if `None`).
    pub async fn feature_test(
        &self,
        parent: Option<OrganizationId>,
    ) -> Result<Vec<Row>, FeatureError> {
        crate::feature::run(&Target {
            api: self.api.clone(),
            ca_file: None,
            username: ADMIN.0.into(),
            password: ADMIN.1.into(),
            collaboration: self.collaboration,
            image: ECHO_IMAGE.into(),
            parent,
            timeout: Duration::from_secs(90),
            stream: Duration::from_secs_f64(crate::echo::default_stream()),
        })
        .await
    }

    /// Stops the nodes (they remove their containers and clear their addresses), the server,
    /// the OpenVPN server container and the network. Reports what could not be removed.
    pub async fn down(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                stop(&mut c, Duration::from_secs(60));
            }
        }
        self.stop_server();
        if let Some(vpn_server) = &self.vpn_server {
            if let Err(e) = self.docker.remove(vpn_server).await {
                errors.push(e.to_string());
            }
        }
        if let Err(e) = self.docker.remove_network(&self.network).await {
            errors.push(e.to_string());
        }
        errors
    }
}

impl Drop for Federation {
    /// The teardown of a federation left up by a failure (a panicking test): the processes are
    /// stopped (the nodes remove their own containers), then the OpenVPN server and network.
    fn drop(&mut self) {
        let running = self
            .nodes
            .iter()
            .filter_map(|n| n.child.as_ref())
            .chain(self.server.as_ref())
            .count();
        if running == 0 {
            return;
        }
        for c in self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.as_mut())
            .chain(self.server.as_mut())
        {
            stop(c, Duration::from_secs(30));
        }
        let (docker, container, network) = (
            self.docker.clone(),
            self.vpn_server.clone(),
            self.network.clone(),
        );
        // Drop may run inside a runtime, which cannot block on another: use a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                if let Some(container) = container {
                    let _ = docker.remove(&container).await;
                }
                let _ = docker.remove_network(&network).await;
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}
