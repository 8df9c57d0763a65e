//! `algonet node`: start-up (login, clean-up of what a crashed predecessor left, router
//! namespace, proxy, VPN), the run loop, the VPN watcher, and the shutdown that removes
//! everything the node made.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::{RunId, RunStatus};
use crate::docker::specs::Role;
use crate::docker::{Docker, DockerError, LABEL_ROLE, LABEL_RUN};
use crate::logging::Recent;
use crate::node::allocator::{PortTable, PUBLIC_PORTS};
use crate::node::client::{ClientError, ServerClient};
use crate::node::config::NodeConfig;
use crate::node::hub::{Hub, HubError};
use crate::node::proxy::{self, Clients};
use crate::node::retry::{with_backoff, Backoff};
use crate::node::run;
use crate::node::scope;
use crate::node::state::Node;
use crate::node::status::{self, Recorder, VpnState};
use crate::node::vpn::{self, kind::NodeTunnel};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why the node could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// not run as root
    #[error(
        "needs root (it makes network namespaces, veths and a TUN device, and \
         drives Docker); it runs as uid {0}"
    )]
    NotRoot(u32),
    /// the server refused the login, or answered garbage
    #[error("login: {0}")]
    Login(ClientError),
    /// Docker failed
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// an image the node needs is not on the host
    #[error("{0}; build the images with `algonet images build` (or pull them)")]
    MissingImage(DockerError),
    /// the task directory could not be made
    #[error("{path}: {source}")]
    TaskDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// another process runs with this configuration
    #[error(transparent)]
    Lock(#[from] crate::node::lock::LockError),
    /// what an earlier process of this node left could not be removed
    #[error("cleaning up after an earlier run of this node: {0}")]
    Reconcile(Box<NodeError>),
    /// the server refused to list the node's unfinished runs
    #[error("listing unfinished runs: {0}")]
    Unfinished(ClientError),
    /// the hub namespace could not be set up
    #[error(transparent)]
    Hub(#[from] HubError),
    /// the signal handlers could not be installed
    #[error("signals: {0}")]
    Signals(std::io::Error),
    /// the status socket could not be made
    #[error(transparent)]
    Status(#[from] status::socket::StatusError),
    /// the metrics address could not be bound
    #[error(transparent)]
    Metrics(crate::metrics::MetricsError),
    /// the node's encryption does not fit its collaboration
    #[error(transparent)]
    Encryption(#[from] crate::node::encryption::EncryptionError),
}

/// How often the node asks for new runs.
const POLL: Duration = Duration::from_millis(500);

/// Removes what an earlier node process of this name left (it may have been killed): its
/// containers (their namespaces, links and TUN go with them), its port records and the
/// records of runs it did not finish, after sending the run ends it kept.
async fn reconcile(
    client: &ServerClient,
    docker: &Docker,
    owner: &str,
    config: &NodeConfig,
) -> Result<(), NodeError> {
    crate::node::reports::send_kept(client, &config.task_dir).await;
    let mut runs: HashSet<RunId> = HashSet::new();
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
        tracing::info!(
            "removing {name} ({}), left by an earlier run of this node",
            labels.get(LABEL_ROLE).map_or("?", String::as_str)
        );
        docker.remove(&name).await?;
    }
    // The server may be away at this moment: wait for it, as for the login.
    for status in [RunStatus::Initializing, RunStatus::Active] {
        let left = with_backoff("listing unfinished runs", || client.runs_in(status))
            .await
            .map_err(NodeError::Unfinished)?;
        runs.extend(left.iter().map(|r| r.id));
    }
    for run in runs {
        // A run the server no longer gives this node (a refusal) is not worth stopping for.
        if let Err(e) = with_backoff("removing port records", || client.remove_ports(run)).await {
            tracing::warn!("run {run}: port records not removed: {e}");
        }
        // A run whose container was lost with the node: crashed, as vantage6 says.
        let note = "algonet node: the node stopped during the run\n";
        if let Err(e) = client
            .report(run, RunStatus::Crashed, None, Some(note))
            .await
        {
            tracing::warn!("run {run}: not reported crashed: {e}");
        }
        let _ = std::fs::remove_dir_all(config.task_dir.join(format!("run-{run}")));
    }
    Ok(())
}

/// Runs the node until SIGINT or SIGTERM. `recent` keeps the warnings and errors the node
/// logs, for `algonet node status`.
pub async fn run(config: NodeConfig, recent: Recent) -> Result<(), NodeError> {
    need_root()?;
    // Taken over first: a signal during start-up stops the node at the next step, cleanly.
    let stop = CancellationToken::new();
    let signals = on_signal(stop.clone())?;
    let client = with_backoff("login", || {
        ServerClient::login(
            &config.server_url,
            &config.api_path,
            &config.api_key,
            config.ca_file.as_deref(),
        )
    });
    let client = tokio::select! {
        c = client => c.map_err(NodeError::Login)?,
        () = stop.cancelled() => return Ok(()),
    };
    let name = config
        .name
        .clone()
        .unwrap_or_else(|| format!("node-{}", client.node_id));
    let owner = format!("node:{name}");
    tracing::info!("logged in as node {} ({name})", client.node_id);
    let key = crate::node::encryption::set_up(&config.encryption, &client).await?;
    log_data_and_policies(&config);
    let docker = Docker::connect().await?;
    for image in config.images() {
        docker.image(image).await.map_err(NodeError::MissingImage)?;
    }
    crate::private::dir(&config.task_dir).map_err(|source| NodeError::TaskDir {
        path: config.task_dir.clone(),
        source,
    })?;
    // Before anything of the node is touched: another process of this configuration keeps
    // what it has.
    let _lock = crate::node::lock::take(&config.task_dir)?;
    // Bound before anything is made, so a taken address fails the start with nothing to undo.
    let status_socket = status::socket::listen(&config.status_socket())?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| {
                    NodeError::Metrics(crate::metrics::MetricsError { addr, source })
                })?,
        ),
        None => None,
    };
    reconcile(&client, &docker, &owner, &config)
        .await
        .map_err(|e| NodeError::Reconcile(Box::new(e)))?;

    let link = vpn::kind::at_start(&client, &config).await.link();
    let hub_config = config.hub(&name, &owner, link);
    let (hub, listener) = Hub::start(&docker, hub_config).await?;
    let clients: Clients = Arc::default();
    let node = Arc::new(Node {
        name: name.clone(),
        owner,
        client,
        docker,
        hub,
        ports: Mutex::new(PortTable::new(PUBLIC_PORTS)),
        addresses: Mutex::default(),
        clients: clients.clone(),
        vpn: Mutex::new(None),
        stopping: Default::default(),
        observed: Recorder::new(recent),
        key: key.clone(),
        killed: Mutex::default(),
        mesh: tokio::sync::watch::Sender::new(Vec::new()),
        config,
    });
    // Every helper ends with the token; the node's own clean-up follows.
    let helpers = [
        tokio::spawn(until(stop.clone(), {
            let proxy = proxy::serve(
                listener,
                node.client.api().http().clone(),
                node.client.api().base().to_string(),
                clients,
                key,
            );
            async move {
                if let Err(e) = proxy.await {
                    tracing::error!("the algorithms' API proxy stopped: {e}");
                }
            }
        })),
        tokio::spawn(until(
            stop.clone(),
            status::socket::serve(status_socket, node.clone()),
        )),
        tokio::spawn(until(stop.clone(), metrics_server(metrics, node.clone()))),
        tokio::spawn(until(stop.clone(), scope::follow(node.clone()))),
        tokio::spawn(until(
            stop.clone(),
            crate::node::kills::follow(node.clone()),
        )),
    ];
    let result = serve(&node, &stop).await;
    crate::service::stopping();
    stop.cancel();
    shut_down(&node).await;
    for h in helpers {
        let _ = h.await;
    }
    signals.abort();
    result
}

/// Cancels `stop` on SIGINT or SIGTERM.
fn on_signal(stop: CancellationToken) -> Result<tokio::task::JoinHandle<()>, NodeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("stopping (signal)");
        stop.cancel();
    }))
}

/// Runs `task` until it ends or `stop` is cancelled.
async fn until(stop: CancellationToken, task: impl std::future::Future<Output = ()>) {
    tokio::select! {
        () = task => {}
        () = stop.cancelled() => {}
    }
}

async fn metrics_server(listener: Option<tokio::net::TcpListener>, node: Arc<Node>) {
    if let Some(listener) = listener {
        let (at, serve) =
            crate::metrics::serve_on(listener, move || status::metrics::scrape(node.clone()));
        tracing::info!("metrics on http://{at}/metrics");
        serve.await;
    }
}

/// The next tick of the watchdog's interval; never, without a watchdog.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(w) => {
            w.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Brings up the VPN, tells systemd the node is ready, then takes runs until `stop`.
async fn serve(node: &Arc<Node>, stop: &CancellationToken) -> Result<(), NodeError> {
    let follow = match node.config.vpn_subnet {
        None => {
            node.observed.vpn_state(VpnState::Off, None);
            tracing::warn!(
                "no vpn_subnet configured: running without VPN (algorithms get no public ports)"
            );
            None
        }
        Some(subnet) => tokio::select! {
            f = vpn::lifecycle::start(node.clone(), NodeTunnel::of(node, subnet)) => f,
            () = stop.cancelled() => return Ok(()),
        },
    };
    let watcher = follow.map(|f| tokio::spawn(f.run()));
    crate::service::ready(&match node.vpn_address() {
        Some(a) => format!("serving runs; VPN address {a}"),
        None => "serving runs; no VPN".into(),
    });
    let mut watchdog = crate::service::watchdog_interval().map(tokio::time::interval);
    let mut runs: HashMap<RunId, tokio::task::JoinHandle<()>> = HashMap::new();
    // While the server does not answer: waits from twice the poll interval, doubling.
    let mut backoff = Backoff::from(POLL * 2);
    let mut next_poll = tokio::time::Instant::now() + POLL;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next_poll) => {}
            () = stop.cancelled() => break,
            // Alive means: this loop turns and the data plane answers.
            // The watchdog starts once the node said it is ready (systemd.service(5)).
            () = tick(&mut watchdog) => {
                let answer = tokio::time::timeout(Duration::from_secs(1), node.hub.snapshot());
                if answer.await.is_ok_and(|s| s.is_ok()) {
                    crate::service::alive();
                } else {
                    tracing::warn!("the data plane did not answer in 1 s; the watchdog is not fed");
                }
                continue;
            }
        }
        runs.retain(|_, h| !h.is_finished());
        let mut wait = POLL;
        match node.client.pending_runs().await {
            Ok(pending) => {
                backoff.reset();
                let free = node.config.max_concurrent_runs.saturating_sub(runs.len());
                for id in to_claim(pending.iter().map(|r| r.id), &runs, free) {
                    match node.client.claim(id).await {
                        Ok(claimed) => {
                            let (task, image) = (claimed.task.id, claimed.task.image.clone());
                            let span =
                                tracing::info_span!("run", run = %id, task = %task, image = %image);
                            span.in_scope(|| tracing::info!("claimed"));
                            node.observed.run_claimed(id, task, &image);
                            let run = run::execute(node.clone(), claimed).instrument(span);
                            runs.insert(id, tokio::spawn(run));
                        }
                        Err(e) => tracing::warn!("run {id}: not claimed: {e}"),
                    }
                }
            }
            Err(e) => {
                wait = backoff.next_wait();
                tracing::warn!("asking for runs: {e}; next try in {}s", wait.as_secs_f32());
            }
        }
        next_poll = tokio::time::Instant::now() + wait;
    }
    tracing::info!("stopping: {} run(s) to end", runs.len());
    node.stop_taking_runs();
    if let Some(w) = watcher {
        w.abort();
    }
    // Removing a run's algorithm ends its wait; the run then cleans up and reports. A run still
    // setting up starts its algorithm after a sweep, so the sweep repeats until every run has
    // ended (at most 30 s: then the node's own clean-up removes what is left).
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while runs.values().any(|h| !h.is_finished()) && tokio::time::Instant::now() < until {
        for c in node.docker.owned_by(&node.owner).await.unwrap_or_default() {
            let labels = c.labels.unwrap_or_default();
            if labels.get(LABEL_ROLE).map(String::as_str) == Some(Role::Algorithm.as_str()) {
                if let Some(n) = c.names.and_then(|n| n.into_iter().next()) {
                    let _ = node.docker.remove(n.trim_start_matches('/')).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

fn need_root() -> Result<(), NodeError> {
    match nix::unistd::geteuid().as_raw() {
        0 => Ok(()),
        uid => Err(NodeError::NotRoot(uid)),
    }
}

/// What a start of `config` needs, tried without starting anything (`algonet node --check`):
/// root, the login at the server, encryption as the collaboration has it, Docker, the images.
/// Returns the node's id.
pub async fn check(config: &NodeConfig) -> Result<crate::api::NodeId, NodeError> {
    need_root()?;
    let client = ServerClient::login(
        &config.server_url,
        &config.api_path,
        &config.api_key,
        config.ca_file.as_deref(),
    )
    .await
    .map_err(NodeError::Login)?;
    crate::node::encryption::check(&config.encryption, &client).await?;
    let docker = Docker::connect().await?;
    for image in config.images() {
        docker.image(image).await.map_err(NodeError::MissingImage)?;
    }
    Ok(client.node_id)
}

/// Says at start what the node gives algorithms and whose runs it admits.
fn log_data_and_policies(config: &NodeConfig) {
    let labels: Vec<&str> = config.databases.iter().map(|d| d.label.as_str()).collect();
    tracing::info!(
        "databases: {}",
        if labels.is_empty() {
            "none".to_string()
        } else {
            labels.join(", ")
        }
    );
    let p = &config.policies;
    let or_anyone = |v: String, empty: bool| if empty { "anyone".to_string() } else { v };
    tracing::info!(
        "policies: algorithms {}; users {}; organizations {}; algorithm logs {}",
        or_anyone(
            format!("{:?}", p.allowed_algorithms),
            p.allowed_algorithms.is_empty()
        ),
        or_anyone(
            format!(
                "{:?}",
                p.allowed_users.iter().map(|i| i.0).collect::<Vec<_>>()
            ),
            p.allowed_users.is_empty()
        ),
        or_anyone(
            format!(
                "{:?}",
                p.allowed_organizations
                    .iter()
                    .map(|i| i.0)
                    .collect::<Vec<_>>()
            ),
            p.allowed_organizations.is_empty()
        ),
        if config.share_algorithm_logs {
            "shared with the server"
        } else {
            "not shared"
        }
    );
}

/// The pending runs to claim now, oldest first: as many as there are free places, the rest
/// left pending at the server for a later turn.
fn to_claim<T>(
    pending: impl Iterator<Item = RunId>,
    running: &HashMap<RunId, T>,
    free: usize,
) -> Vec<RunId> {
    let mut waiting: Vec<RunId> = pending.filter(|id| !running.contains_key(id)).collect();
    waiting.sort();
    waiting.truncate(free);
    waiting
}

/// Leaves the VPN and removes the node's containers (the hub's namespace, links and TUN go
/// with them).
async fn shut_down(node: &Node) {
    vpn::seat::leave(node).await;
    if let Err(e) = node.hub.stop_dataplane() {
        tracing::warn!("stopping the data plane: {e}");
    }
    for c in node.docker.owned_by(&node.owner).await.unwrap_or_default() {
        if let Some(n) = c.names.and_then(|n| n.into_iter().next()) {
            if let Err(e) = node.docker.remove(n.trim_start_matches('/')).await {
                tracing::warn!("{e}");
            }
        }
    }
    tracing::info!("stopped; nothing of this node is left running");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_claimed_oldest_first_up_to_the_free_places() {
        let running: HashMap<RunId, ()> = [(RunId(3), ())].into();
        let pending = [RunId(9), RunId(3), RunId(5), RunId(7)];
        assert_eq!(
            to_claim(pending.into_iter(), &running, 2),
            [RunId(5), RunId(7)]
        );
        assert!(to_claim(pending.into_iter(), &running, 0).is_empty());
        assert_eq!(to_claim(pending.into_iter(), &running, 9).len(), 3);
    }
}
