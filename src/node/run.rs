//! One algorithm run, start to end: token, ports from the image, sandbox with its veth,
//! mappings, `POST /port`, and only then the algorithm container; afterwards output and log
//! reported. A [`Run`] records what it holds as each step takes it, and [`Run::clean_up`] gives
//! all of it back, whichever step failed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::api::client::ClientError;
use std::collections::HashMap;

use crate::api::{env as vars, ContainerPort, PublicPort, RunId, RunStatus, RunTask, Task};
use crate::docker::{specs, DockerError};
use crate::net::links::{IfName, LinkError};
use crate::net::netns::{Netns, NetnsError};
use crate::net::plan::RunLinkPlan;
use crate::node::allocator::Exhausted;
use crate::node::hub::{Hub, HubError, GATEWAY};
use crate::node::ports::{algorithm_ports, AlgorithmPort};
use crate::node::reports::{self, RunEnd};
use crate::node::state::Node;
use crate::node::status::{Phase, RunPort};
use crate::node::{data, encryption, policy};
use crate::sync::lock;

/// Where a run's files appear inside the algorithm container.
const MOUNT: &str = "/mnt/algonet";

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// the server did not give the run's task
    #[error("the task's details: {0}")]
    Task(ClientError),
    /// the node's policies refuse it
    #[error("not allowed by this node: {0}")]
    NotAllowed(String),
    /// the node has not the data the task asks for
    #[error("data: {0}")]
    Data(String),
    /// the node has no such image
    #[error("image: {0}")]
    NoImage(DockerError),
    /// the algorithm's container did not start
    #[error("starting the algorithm: {0}")]
    Start(DockerError),
    /// the server gave no container token
    #[error("container token: {0}")]
    Token(ClientError),
    /// Docker failed (image, sandbox or algorithm container)
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// a file of the run could not be written
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// the sandbox's namespace could not be opened
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// the run's input could not be read, or its result not encrypted
    #[error(transparent)]
    Carry(#[from] crate::node::encryption::CarryError),
    /// every container address is in use
    #[error("no free container address")]
    NoAddress,
    /// the run's link name is not a valid interface name
    #[error(transparent)]
    LinkName(#[from] LinkError),
    /// the veth between router and sandbox could not be made
    #[error("run link: {0}")]
    RunLink(HubError),
    /// the sandbox's end of the veth could not be configured
    #[error("sandbox network: {0}")]
    Sandbox(HubError),
    /// no public port is free
    #[error(transparent)]
    Ports(#[from] Exhausted),
    /// the router refused a mapping
    #[error("mapping {public} -> {port}: {source}")]
    Mapping {
        public: PublicPort,
        port: ContainerPort,
        source: HubError,
    },
    /// whom the run may talk to could not be set
    #[error(transparent)]
    Scope(#[from] crate::node::scope::ScopeError),
    /// the server refused a port
    #[error("registering port {public}: {source}")]
    Register {
        public: PublicPort,
        source: ClientError,
    },
}

/// A claimed run and what it holds so far.
#[derive(Debug)]
struct Run {
    node: Arc<Node>,
    id: RunId,
    task: RunTask,
    input: Option<String>,
    claimed: Instant,
    /// Notes for the run's log, ahead of the algorithm's own lines.
    notes: String,
    dir: Option<PathBuf>,
    address: Option<Ipv4Addr>,
    link: Option<RunLinkPlan>,
    /// Ports were (being) registered at the server.
    ports_registered: bool,
}

/// How the algorithm ended: its exit code and its output, if it wrote any.
type Exit = (i64, Option<String>);

impl RunError {
    /// The run's end in vantage6's words.
    fn status(&self) -> RunStatus {
        match self {
            RunError::NotAllowed(_) => RunStatus::NotAllowed,
            RunError::NoImage(_) => RunStatus::NoDockerImage,
            RunError::Start(_) => RunStatus::StartFailed,
            _ => RunStatus::Failed,
        }
    }
}

/// The most of an algorithm's output a run's log keeps (its tail).
const MAX_LOG: usize = 64 * 1024;

/// The last `max` bytes of `text`, cut at a character's start.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Runs a claimed run to its end and reports it.
pub async fn execute(node: Arc<Node>, claimed: crate::api::Run) {
    let mut run = Run {
        node: node.clone(),
        id: claimed.id,
        task: claimed.task,
        input: claimed.input,
        claimed: Instant::now(),
        notes: String::new(),
        dir: None,
        address: None,
        link: None,
        ports_registered: false,
    };
    let outcome = run.steps().await;
    let (id, started) = (run.id, run.claimed);
    node.observed.run_phase(id, Phase::Ending, started);
    let mut log = match &outcome {
        Ok(_) => std::mem::take(&mut run.notes),
        Err(e) => format!("algonet node: {e}\n"),
    };
    for e in run.clean_up().await {
        tracing::warn!("clean-up: {e}");
        log.push_str(&format!("algonet node: clean-up: {e}\n"));
    }
    if lock(&node.killed).remove(&id) {
        // The server ended it already (`killed by user`): nothing to report.
        tracing::info!(
            "killed by user after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        node.observed.run_ended(id);
        return;
    }
    let (status, result) = match outcome {
        _ if node.is_stopping() => {
            log.push_str("algonet node: stopped by the node's shutdown\n");
            (RunStatus::Killed, None)
        }
        Ok((0, result)) => (RunStatus::Completed, result),
        Ok((code, result)) => {
            log.push_str(&format!("algonet node: the algorithm exited with {code}\n"));
            (RunStatus::Crashed, result)
        }
        Err(e) => {
            tracing::warn!("{e}");
            (e.status(), None)
        }
    };
    tracing::info!("{status} after {:.1}s", started.elapsed().as_secs_f64());
    // The result is the run's point: waited for while the node runs, kept if it stops.
    let end = RunEnd {
        run: id,
        status,
        result,
        log,
    };
    reports::report(&node.client, &node.config.task_dir, end, || {
        !node.is_stopping()
    })
    .await;
    node.observed.run_ended(id);
}

impl Run {
    /// The run's family, whose connections share one budget in the router: its job, or its
    /// own task where the server does not say (the family is then the task).
    fn family(&self) -> u64 {
        let t = &self.task;
        u64::try_from(t.job_id.unwrap_or(t.id).0).unwrap_or(0)
    }

    fn note(&mut self, what: &str) {
        tracing::warn!("{what}");
        self.notes.push_str(&format!("algonet node: {what}\n"));
    }

    async fn steps(&mut self) -> Result<Exit, RunError> {
        let task = self
            .node
            .client
            .task(self.task.id)
            .await
            .map_err(RunError::Task)?;
        self.admit(&task).await?;
        let data =
            data::for_run(&self.node.config.databases, &task.databases).map_err(RunError::Data)?;
        let token = self
            .node
            .client
            .container_token(self.task.id, &self.task.image)
            .await
            .map_err(RunError::Token)?;
        let ports = self.image_ports().await?;
        let dir = self.write_files(&token)?;
        let address = self.start_sandbox().await?;
        // Ports: mapped and registered before the algorithm starts, so its peers can find it
        // as soon as it runs; its peers admitted before it can send or be reached.
        if self.node.vpn_address().is_some() {
            self.map_ports(address, &ports).await?;
            crate::node::scope::install(&self.node, self.id).await?;
        } else if !ports.is_empty() {
            self.note("no VPN: the algorithm's ports are not reachable from other nodes");
        }
        let (code, output) = self.run_algorithm(&dir, data).await?;
        // Sent back as vantage6 nodes send results: encrypted for the task's creator, or base64.
        let creator = task.init_org.map(|o| o.id);
        let node = &self.node;
        let output = output.as_deref();
        let result = encryption::result(node.key.as_deref(), &node.client, creator, output).await?;
        Ok((code, result))
    }

    /// Refuses the run if the node's policies do (before any container is made).
    async fn admit(&mut self, task: &Task) -> Result<(), RunError> {
        let node = &self.node;
        let p = &node.config.policies;
        // Names of the image's own repository are one image if they are one here.
        let mut ids = HashMap::new();
        for name in p.allowed_algorithms.iter().chain([&task.image]) {
            if policy::matches(name, &task.image) == policy::Match::SameRepository
                || *name == task.image
            {
                let id = node.docker.image(name).await.ok().and_then(|i| i.id);
                ids.insert(name.clone(), id);
            }
        }
        let same = |a: &str, b: &str| {
            let id = |n: &str| ids.get(n).cloned().flatten();
            id(a).is_some() && id(a) == id(b)
        };
        match policy::refusal(p, task, same) {
            Some(rule) => Err(RunError::NotAllowed(rule)),
            None => Ok(()),
        }
    }

    /// The ports the image declares (`EXPOSE` and `p<port>` labels).
    async fn image_ports(&mut self) -> Result<Vec<AlgorithmPort>, RunError> {
        let inspect = self
            .node
            .docker
            .image(&self.task.image)
            .await
            .map_err(RunError::NoImage)?;
        let config = inspect.config.unwrap_or_default();
        let exposed = config.exposed_ports.unwrap_or_default();
        let labels = config.labels.unwrap_or_default();
        let (ports, warnings) = algorithm_ports(exposed.iter().map(String::as_str), &labels);
        for w in warnings {
            self.note(&w);
        }
        Ok(ports)
    }

    /// The run's folder, mounted into the algorithm container: token, input, output, tmp/. Only
    /// its owner may read it: the token is the run's access to the server.
    fn write_files(&mut self, token: &str) -> Result<PathBuf, RunError> {
        let dir = self.node.config.task_dir.join(format!("run-{}", self.id));
        self.dir = Some(dir.clone());
        let file = |path: PathBuf| move |source| RunError::File { path, source };
        crate::private::dir(&dir).map_err(file(dir.clone()))?;
        std::fs::create_dir_all(dir.join("tmp")).map_err(file(dir.join("tmp")))?;
        // The algorithm reads the bytes, decrypted in an encrypted collaboration.
        let input = encryption::input(
            self.node.key.as_deref(),
            self.input.as_deref().unwrap_or(""),
        )?;
        for (name, bytes) in [
            ("token", token.as_bytes()),
            ("input", &input),
            ("output", b"".as_slice()),
        ] {
            crate::private::file(&dir.join(name), bytes).map_err(file(dir.join(name)))?;
        }
        Ok(dir)
    }

    /// The sandbox container, its veth to the router, its address and routes; returns the
    /// address.
    async fn start_sandbox(&mut self) -> Result<Ipv4Addr, RunError> {
        let node = self.node.clone();
        let (sandbox, _) = node.run_containers(self.id);
        let spec = specs::sandbox(&node.config.images.sandbox, &node.owner, self.id);
        node.docker.run(&sandbox, spec).await?;
        let sandbox_ns = Arc::new(Netns::of_pid(node.docker.pid(&sandbox).await?)?);
        let address = lock(&node.addresses).take().ok_or(RunError::NoAddress)?;
        self.address = Some(address);
        let link = RunLinkPlan {
            hub_end: IfName::new(format!("vr-{}", self.id))?,
            container_end: IfName::new("eth0")?,
            container: address,
            gateway: GATEWAY,
            mtu: u32::from(node.hub.mtu()),
        };
        self.link = Some(link.clone());
        node.hub
            .add_run(self.id, self.family(), link.clone(), sandbox_ns.clone())
            .await
            .map_err(RunError::RunLink)?;
        Hub::configure_sandbox(link, &sandbox_ns)
            .await
            .map_err(RunError::Sandbox)?;
        lock(&node.clients).insert(address);
        Ok(address)
    }

    /// For each port: a public port, the router's mapping, and the server's record.
    async fn map_ports(
        &mut self,
        address: Ipv4Addr,
        ports: &[AlgorithmPort],
    ) -> Result<(), RunError> {
        let node = self.node.clone();
        self.ports_registered = true;
        for p in ports {
            let public = PublicPort(lock(&node.ports).allocate(p.protocol, self.id.into())?);
            node.hub
                .add_mapping(
                    self.id,
                    p.protocol,
                    public,
                    SocketAddrV4::new(address, p.port.0),
                )
                .await
                .map_err(|source| RunError::Mapping {
                    public,
                    port: p.port,
                    source,
                })?;
            node.client
                .add_port(self.id, public, p.label.as_deref())
                .await
                .map_err(|source| RunError::Register { public, source })?;
            tracing::info!(
                "{:?} port {} of the algorithm is public port {public}",
                p.protocol,
                p.port
            );
            node.observed.run_port(
                self.id,
                RunPort {
                    public: public.0,
                    container: p.port.0,
                    protocol: format!("{:?}", p.protocol).to_lowercase(),
                },
            );
        }
        Ok(())
    }

    /// Starts the algorithm with vantage6's environment, waits for it, and collects its log
    /// and output.
    async fn run_algorithm(
        &mut self,
        dir: &std::path::Path,
        data: data::RunData,
    ) -> Result<(i64, Option<Vec<u8>>), RunError> {
        let node = self.node.clone();
        let (sandbox, algorithm) = node.run_containers(self.id);
        let base = [
            (vars::HOST, format!("http://{GATEWAY}")),
            (vars::PORT, node.config.proxy_port.to_string()),
            (vars::API_PATH, String::new()),
            (vars::TOKEN_FILE, format!("{MOUNT}/token")),
            (vars::INPUT_FILE, format!("{MOUNT}/input")),
            (vars::OUTPUT_FILE, format!("{MOUNT}/output")),
            (vars::TEMPORARY_FOLDER, format!("{MOUNT}/tmp")),
        ]
        .map(|(k, v)| (k.to_string(), v));
        let extra = node
            .config
            .algorithm_env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()));
        // Every value encoded, as vantage6's node encodes them and its wrapper reads them.
        let env: Vec<(String, String)> = base
            .into_iter()
            .chain(data.env)
            .chain(extra)
            .map(|(k, v)| (k, vars::encode(&v)))
            .collect();
        let mut binds = vec![format!("{}:{MOUNT}", dir.display())];
        binds.extend(data.binds);
        let spec = specs::algorithm(
            &self.task.image,
            &node.owner,
            self.id,
            &sandbox,
            &env,
            binds,
        );
        node.docker
            .run(&algorithm, spec)
            .await
            .map_err(RunError::Start)?;
        tracing::info!(
            "algorithm started {:.0} ms after the claim",
            self.claimed.elapsed().as_secs_f64() * 1000.0
        );
        node.observed
            .run_phase(self.id, Phase::Running, self.claimed);
        // A missed "active" is no reason to stop a running algorithm; the end is reported anyway.
        if let Err(e) = node
            .client
            .report(self.id, RunStatus::Active, None, None)
            .await
        {
            tracing::warn!("cannot report active: {e}");
        }
        let code = node.docker.wait(&algorithm).await?;
        if node.config.share_algorithm_logs {
            let logs = node.docker.logs(&algorithm, 1000).await.unwrap_or_default();
            self.notes.push_str(tail(&logs, MAX_LOG));
        } else {
            self.notes
                .push_str("Node does not allow sharing algorithm logs\n");
        }
        let output = std::fs::read(dir.join("output"))
            .ok()
            .filter(|o| !o.is_empty());
        Ok((code, output))
    }

    /// Gives back what the run holds; returns what could not be removed.
    async fn clean_up(self) -> Vec<String> {
        let node = &self.node;
        let mut errors = Vec::new();
        let (sandbox, algorithm) = node.run_containers(self.id);
        for c in [&algorithm, &sandbox] {
            if let Err(e) = node.docker.remove(c).await {
                errors.push(e.to_string());
            }
        }
        if let Some(link) = self.link {
            errors.extend(node.hub.remove_run(self.id, link).await);
        }
        lock(&node.ports).release(self.id.into());
        if self.ports_registered {
            if let Err(e) = node.client.remove_ports(self.id).await {
                errors.push(format!("port records: {e}"));
            }
        }
        if let Some(a) = self.address {
            lock(&node.clients).remove(&a);
            lock(&node.addresses).give_back(a);
        }
        if let Some(dir) = self.dir {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    errors.push(format!("{}: {e}", dir.display()));
                }
            }
        }
        errors
    }
}
