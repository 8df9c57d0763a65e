//! `algonet node`: start-up (login, clean-up of what a crashed predecessor left, router
//! namespace, proxy, VPN), the run loop, the VPN watcher, and the shutdown that removes
//! everything the node made.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::docker::{Docker, LABEL_ROLE, LABEL_RUN};
use crate::node::allocator::{PortTable, PUBLIC_PORTS};
use crate::node::client::{ClientError, ServerClient};
use crate::node::config::NodeConfig;
use crate::node::openvpn::Management;
use crate::node::proxy::{self, Clients};
use crate::node::router::RouterNs;
use crate::node::runs::{self, Addresses};
use crate::node::tunnel::{Steps, Tunnel};
use crate::node::vpn::{self, Outcome};

/// How often the node asks for new runs.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait between retries when the server or Docker does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Node {
    pub config: NodeConfig,
    pub name: String,
    /// The owner label of every container this node makes.
    pub owner: String,
    pub client: ServerClient,
    pub docker: Docker,
    pub router: RouterNs,
    ports: Mutex<PortTable>,
    addresses: Mutex<Addresses>,
    clients: Clients,
    vpn: Mutex<Option<Ipv4Addr>>,
    /// Set on SIGINT/SIGTERM: runs that end now were stopped, not finished.
    stopping: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Node {
    pub fn lock_ports(&self) -> MutexGuard<'_, PortTable> {
        lock(&self.ports)
    }

    pub fn lock_addresses(&self) -> MutexGuard<'_, Addresses> {
        lock(&self.addresses)
    }

    pub fn lock_clients(&self) -> MutexGuard<'_, HashSet<Ipv4Addr>> {
        lock(&self.clients)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The node's VPN address while the tunnel is up.
    pub fn vpn_address(&self) -> Option<Ipv4Addr> {
        *lock(&self.vpn)
    }
}

/// Retries `f` with doubling waits (up to [`MAX_BACKOFF`]) while its error is transient.
pub async fn with_backoff<T, F: std::future::Future<Output = Result<T, ClientError>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> Result<T, ClientError> {
    let mut wait = Duration::from_millis(500);
    loop {
        match f().await {
            Err(e) if e.transient() => {
                log::warn!("{what}: {e}; retrying in {}s", wait.as_secs_f32());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
            other => return other,
        }
    }
}

/// Removes what an earlier node process of this name left (it may have been killed): its
/// containers (their namespaces, links and TUN go with them), its port records and the
/// records of runs it did not finish.
async fn reconcile(
    client: &ServerClient,
    docker: &Docker,
    owner: &str,
    config: &NodeConfig,
) -> anyhow::Result<()> {
    let mut runs: HashSet<i64> = HashSet::new();
    for c in docker.owned_by(owner).await? {
        let labels = c.labels.unwrap_or_default();
        if let Some(r) = labels.get(LABEL_RUN).and_then(|r| r.parse().ok()) {
            runs.insert(r);
        }
        let name = c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .or(c.id)
            .unwrap_or_default();
        log::info!(
            "removing {name} ({}), left by an earlier run of this node",
            labels.get(LABEL_ROLE).map_or("?", String::as_str)
        );
        docker.remove(&name).await?;
    }
    // The server may be away at this moment: wait for it, as for the login.
    for status in ["initializing", "active"] {
        let left = with_backoff("listing unfinished runs", || client.runs_in(status)).await?;
        runs.extend(left.iter().map(|r| r.id));
    }
    for run in runs {
        // A run the server no longer gives this node (a refusal) is not worth stopping for.
        if let Err(e) = with_backoff("removing port records", || client.remove_ports(run)).await {
            log::warn!("run {run}: port records not removed: {e}");
        }
        // A run whose container was lost with the node: crashed, as vantage6 says.
        let note = "algonet node: the node stopped during the run\n";
        if let Err(e) = client.report(run, "crashed", None, Some(note)).await {
            log::warn!("run {run}: not reported crashed: {e}");
        }
        let _ = std::fs::remove_dir_all(config.task_dir.join(format!("run-{run}")));
    }
    Ok(())
}

/// Runs the node until SIGINT or SIGTERM.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let client = with_backoff("login", || {
        ServerClient::login(&config.server_url, &config.api_path, &config.api_key)
    })
    .await?;
    let name = config
        .name
        .clone()
        .unwrap_or_else(|| format!("node-{}", client.node_id));
    let owner = format!("node:{name}");
    log::info!("logged in as node {} ({name})", client.node_id);
    let docker = Docker::connect().await?;
    let vpn_image = config
        .vpn_subnet
        .as_ref()
        .map(|_| &config.images.vpn_client);
    for image in std::iter::once(&config.images.sandbox).chain(vpn_image) {
        docker.image(image).await.map_err(|e| {
            anyhow::anyhow!("{e}; build the images with `algonet images build` (or pull them)")
        })?;
    }
    std::fs::create_dir_all(&config.task_dir)?;
    reconcile(&client, &docker, &owner, &config)
        .await
        .map_err(|e| e.context("cleaning up after an earlier run of this node"))?;

    let (router, listener) =
        RouterNs::start(&docker, format!("algonet-{name}-router"), &owner, &config).await?;
    let clients: Clients = Arc::default();
    let proxy = tokio::spawn(proxy::serve(
        listener,
        client.http().clone(),
        client.base().to_string(),
        clients.clone(),
    ));
    let node = Arc::new(Node {
        name: name.clone(),
        owner,
        client,
        docker,
        router,
        ports: Mutex::new(PortTable::new(PUBLIC_PORTS)),
        addresses: Mutex::default(),
        clients,
        vpn: Mutex::new(None),
        stopping: Default::default(),
        config,
    });

    let result = serve(&node).await;
    shut_down(&node).await;
    proxy.abort();
    result
}

/// Brings up the VPN, then takes runs until a signal.
async fn serve(node: &Arc<Node>) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let vpn = tokio::select! {
        v = start_vpn(node) => v,
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = terminate.recv() => return Ok(()),
    };
    let watcher = vpn.map(|(tunnel, m)| tokio::spawn(watch_vpn(node.clone(), tunnel, m)));
    let mut runs: HashMap<i64, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut wait = POLL;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
        runs.retain(|_, h| !h.is_finished());
        match node.client.pending_runs().await {
            Ok(pending) => {
                wait = POLL;
                for r in pending {
                    if runs.contains_key(&r.id) {
                        continue;
                    }
                    match node.client.claim(r.id).await {
                        Ok(claimed) => {
                            log::info!(
                                "run {}: claimed (task {}, {})",
                                r.id,
                                claimed.task.id,
                                claimed.task.image
                            );
                            runs.insert(r.id, tokio::spawn(runs::execute(node.clone(), claimed)));
                        }
                        Err(e) => log::warn!("run {}: not claimed: {e}", r.id),
                    }
                }
            }
            Err(e) => {
                wait = (wait * 2).min(MAX_BACKOFF);
                log::warn!("asking for runs: {e}; next try in {}s", wait.as_secs_f32());
            }
        }
    }
    log::info!("stopping: {} run(s) to end", runs.len());
    node.stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(w) = watcher {
        w.abort();
    }
    // Removing a run's containers ends its wait; the run then cleans up and reports.
    for c in node.docker.owned_by(&node.owner).await.unwrap_or_default() {
        let labels = c.labels.unwrap_or_default();
        if labels.get(LABEL_ROLE).map(String::as_str) == Some("algorithm") {
            if let Some(n) = c.names.and_then(|n| n.into_iter().next()) {
                let _ = node.docker.remove(n.trim_start_matches('/')).await;
            }
        }
    }
    for (_, h) in runs {
        let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
    }
    Ok(())
}

fn tunnel(node: &Node, subnet: (Ipv4Addr, u8)) -> Tunnel {
    Tunnel {
        docker: node.docker.clone(),
        container: format!("algonet-{}-vpn", node.name),
        router_container: node.router.container.clone(),
        image: node.config.images.vpn_client.clone(),
        owner: node.owner.clone(),
        dir: node.config.task_dir.join("vpn"),
        subnet,
        timeout: Duration::from_secs(node.config.vpn_connect_timeout_secs),
    }
}

/// The seed's start-up: existing profile -> renewed -> new. Never fails the node: without a
/// working VPN it warns once, with the reasons, and runs on without.
async fn start_vpn(node: &Arc<Node>) -> Option<(Tunnel, Management)> {
    let Some(subnet) = &node.config.vpn_subnet else {
        log::warn!(
            "no vpn_subnet configured: running without VPN (algorithms get no public ports)"
        );
        return None;
    };
    let subnet = crate::net::parse_subnet(subnet).ok()?;
    let tunnel = tunnel(node, subnet);
    let existing = tunnel.saved_profile();
    let mut steps = Steps {
        tunnel: &tunnel,
        client: &node.client,
        connected: None,
    };
    match vpn::bring_up(existing.as_deref(), &mut steps).await {
        Outcome::Connected { address, source } => {
            log::info!("VPN connected with address {address} ({source:?} profile)");
            let m = steps.connected.take()?;
            match plumb(node, address).await {
                Ok(()) => Some((tunnel, m)),
                Err(e) => {
                    log::warn!("VPN connected, but the router could not be set up: {e}; running without VPN");
                    let _ = node.docker.remove(&tunnel.container).await;
                    None
                }
            }
        }
        Outcome::NoVpn { reasons } => {
            log::warn!("running without VPN: {}", reasons.join("; "));
            None
        }
    }
}

/// Routes the tunnel through the router with `address`, and tells the server.
async fn plumb(node: &Node, address: Ipv4Addr) -> Result<(), String> {
    node.router
        .connect_vpn(address)
        .await
        .map_err(|e| e.to_string())?;
    *lock(&node.vpn) = Some(address);
    with_backoff("registering the VPN address", || {
        node.client.set_ip(Some(address))
    })
    .await
    .map_err(|e| e.to_string())
}

/// Follows OpenVPN: a new address or a reconnect re-plumbs and re-registers; a lost management
/// connection (the container stopped or was restarted) brings the container back and waits for
/// it to connect again.
async fn watch_vpn(node: Arc<Node>, tunnel: Tunnel, mut m: Management) {
    loop {
        match m.next_change().await {
            Ok(s) if s.connected() => {
                if let Some(a) = s.address {
                    log::info!("VPN connected again with address {a}");
                    if let Err(e) = plumb(&node, a).await {
                        log::warn!("re-plumbing the VPN: {e}");
                    }
                }
            }
            Ok(s) => log::info!("VPN state {}", s.name),
            Err(e) => {
                log::warn!("lost OpenVPN's management connection ({e}); bringing the tunnel back");
                m = recover(&node, &tunnel).await;
            }
        }
    }
}

/// Waits (starting the container again if it is not running) until OpenVPN connects again.
async fn recover(node: &Node, tunnel: &Tunnel) -> Management {
    let mut wait = Duration::from_secs(1);
    loop {
        match node.docker.running(&tunnel.container).await {
            Ok(Some(true)) => {}
            Ok(Some(false)) => {
                if let Err(e) = node.docker.start(&tunnel.container).await {
                    log::warn!("starting the OpenVPN container again: {e}");
                }
            }
            Ok(None) => {
                if let Err(e) = tunnel.start_container().await {
                    log::warn!("re-creating the OpenVPN container: {e}");
                }
            }
            Err(e) => log::warn!("asking Docker about the OpenVPN container: {e}"),
        }
        match tunnel.wait_connected(tunnel.timeout).await {
            Ok((m, a)) => {
                match plumb(node, a).await {
                    Ok(()) => log::info!("VPN back with address {a}"),
                    Err(e) => log::warn!("re-plumbing the VPN: {e}"),
                }
                return m;
            }
            Err(e) => {
                log::warn!("VPN not back yet: {e}; next try in {}s", wait.as_secs());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Clears the address at the server and removes the node's containers (the router's namespace,
/// links and TUN go with them).
async fn shut_down(node: &Node) {
    if node.vpn_address().is_some() {
        if let Err(e) = node.client.set_ip(None).await {
            log::warn!("clearing the VPN address at the server: {e}");
        }
    }
    if let Err(e) = node.router.stop_dataplane() {
        log::warn!("stopping the data plane: {e}");
    }
    for c in node.docker.owned_by(&node.owner).await.unwrap_or_default() {
        if let Some(n) = c.names.and_then(|n| n.into_iter().next()) {
            if let Err(e) = node.docker.remove(n.trim_start_matches('/')).await {
                log::warn!("{e}");
            }
        }
    }
    log::info!("stopped; nothing of this node is left running");
}
