//! One algorithm run, start to end: token, ports from the image, sandbox with its veth,
//! mappings, `POST /port`, and only then the algorithm container; afterwards output and log
//! reported, and everything the run had removed again, also when a step failed.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;

use bollard::models::{ContainerCreateBody, HostConfig};

use crate::docker::{LABEL_OWNER, LABEL_ROLE, LABEL_RUN};
use crate::net::links::IfName;
use crate::net::netns::Netns;
use crate::net::plan::RunLinkPlan;
use crate::node::agent::{with_backoff, Node};
use crate::node::client::RunInfo;
use crate::node::ports::algorithm_ports;
use crate::node::router::{RouterNs, GATEWAY, TUNNEL_MTU};
use netstack::RunId;

/// Where a run's files appear inside the algorithm container.
const MOUNT: &str = "/mnt/algonet";

/// Container addresses (never on the VPN, never seen outside the node): 100.64.0.0/16, one /32
/// per run.
#[derive(Debug, Default)]
pub struct Addresses {
    used: BTreeSet<Ipv4Addr>,
}

impl Addresses {
    pub fn take(&mut self) -> Option<Ipv4Addr> {
        let a = (2u32..=65_534)
            .map(|h| Ipv4Addr::from_bits(Ipv4Addr::new(100, 64, 0, 0).to_bits() + h))
            .find(|a| !self.used.contains(a))?;
        self.used.insert(a);
        Some(a)
    }

    pub fn give_back(&mut self, a: Ipv4Addr) {
        self.used.remove(&a);
    }
}

/// What a run holds, for the clean-up.
#[derive(Debug, Default)]
struct Held {
    address: Option<Ipv4Addr>,
    link: Option<RunLinkPlan>,
    /// Ports were (being) registered at the server.
    ports: bool,
    dir: Option<PathBuf>,
}

fn container_names(node: &Node, run: i64) -> (String, String) {
    let base = format!("algonet-{}-run-{run}", node.name);
    (format!("{base}-sandbox"), base)
}

/// Runs a claimed run to its end and reports it.
pub async fn execute(node: Arc<Node>, run: RunInfo) {
    let started = std::time::Instant::now();
    let mut held = Held::default();
    let outcome = steps(&node, &run, &mut held, started).await;
    let mut log = match &outcome {
        Ok((_, _, log)) => log.clone(),
        Err(e) => format!("algonet node: {e}\n"),
    };
    for e in clean_up(&node, run.id, held).await {
        log::warn!("run {}: clean-up: {e}", run.id);
        log.push_str(&format!("algonet node: clean-up: {e}\n"));
    }
    let (status, result) = match outcome {
        _ if node.is_stopping() => {
            log.push_str("algonet node: stopped by the node's shutdown\n");
            ("killed", None)
        }
        Ok((0, result, _)) => ("completed", result),
        Ok((code, result, _)) => {
            log.push_str(&format!("algonet node: the algorithm exited with {code}\n"));
            ("failed", result)
        }
        Err(_) => ("failed", None),
    };
    log::info!(
        "run {}: {status} after {:.1}s",
        run.id,
        started.elapsed().as_secs_f64()
    );
    // The result is the run's point: wait for an absent server rather than lose it.
    let report = || {
        node.client
            .report(run.id, status, result.as_deref(), Some(&log))
    };
    if let Err(e) = with_backoff("reporting a run's end", report).await {
        log::warn!("run {}: cannot report {status}: {e}", run.id);
    }
}

type Outcome = (i64, Option<String>, String);

async fn steps(
    node: &Arc<Node>,
    run: &RunInfo,
    held: &mut Held,
    started: std::time::Instant,
) -> Result<Outcome, String> {
    let image = &run.task.image;
    let token = node
        .client
        .container_token(run.task.id, image)
        .await
        .map_err(|e| format!("container token: {e}"))?;
    let inspect = node.docker.image(image).await.map_err(|e| e.to_string())?;
    let config = inspect.config.unwrap_or_default();
    let exposed = config.exposed_ports.unwrap_or_default();
    let labels = config.labels.unwrap_or_default();
    let (ports, warnings) = algorithm_ports(exposed.iter().map(String::as_str), &labels);
    let mut log = String::new();
    for w in warnings {
        log::warn!("run {}: {w}", run.id);
        log.push_str(&format!("algonet node: {w}\n"));
    }

    // The run's files, mounted into the algorithm container.
    let dir = node.config.task_dir.join(format!("run-{}", run.id));
    held.dir = Some(dir.clone());
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    std::fs::create_dir_all(dir.join("tmp")).map_err(|e| format!("{}: {e}", dir.display()))?;
    write("token", &token)?;
    write("input", run.input.as_deref().unwrap_or(""))?;
    write("output", "")?;

    let (sandbox, algorithm) = container_names(node, run.id);
    let labels = |role: &str| {
        Some(
            [
                (LABEL_OWNER.to_string(), node.owner.clone()),
                (LABEL_ROLE.to_string(), role.to_string()),
                (LABEL_RUN.to_string(), run.id.to_string()),
            ]
            .into(),
        )
    };
    node.docker
        .run(
            &sandbox,
            ContainerCreateBody {
                image: Some(node.config.images.sandbox.clone()),
                labels: labels("sandbox"),
                host_config: Some(HostConfig {
                    network_mode: Some("none".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let pid = node.docker.pid(&sandbox).await.map_err(|e| e.to_string())?;
    let sandbox_ns = Arc::new(Netns::of_pid(pid).map_err(|e| e.to_string())?);
    let address = node
        .lock_addresses()
        .take()
        .ok_or("no free container address")?;
    held.address = Some(address);
    let link = RunLinkPlan {
        router_end: IfName::new(format!("vr-{}", run.id)).map_err(|e| e.to_string())?,
        container_end: IfName::new("eth0").map_err(|e| e.to_string())?,
        container: address,
        gateway: GATEWAY,
        mtu: u32::from(TUNNEL_MTU),
    };
    held.link = Some(link.clone());
    node.router
        .add_run(run.id, link.clone(), sandbox_ns.clone())
        .await
        .map_err(|e| format!("run link: {e}"))?;
    RouterNs::configure_sandbox(link, &sandbox_ns)
        .await
        .map_err(|e| format!("sandbox network: {e}"))?;
    node.lock_clients().insert(address);

    // Ports: mapped and registered before the algorithm starts, so its peers can find it as
    // soon as it runs.
    if node.vpn_address().is_some() {
        held.ports = true;
        for p in &ports {
            let public = node
                .lock_ports()
                .allocate(p.protocol, RunId(run.id as u64))
                .map_err(|e| e.to_string())?;
            node.router
                .add_mapping(
                    run.id,
                    p.protocol,
                    public,
                    SocketAddrV4::new(address, p.port),
                )
                .await
                .map_err(|e| format!("mapping {public} -> {}: {e}", p.port))?;
            node.client
                .add_port(run.id, public, p.label.as_deref())
                .await
                .map_err(|e| format!("registering port {public}: {e}"))?;
            log::info!(
                "run {}: {:?} port {} of the algorithm is public port {public}",
                run.id,
                p.protocol,
                p.port
            );
        }
    } else if !ports.is_empty() {
        let note = "no VPN: the algorithm's ports are not reachable from other nodes";
        log::warn!("run {}: {note}", run.id);
        log.push_str(&format!("algonet node: {note}\n"));
    }

    let env = [
        ("HOST", format!("http://{GATEWAY}")),
        ("PORT", node.config.proxy_port.to_string()),
        ("API_PATH", String::new()),
        ("TOKEN_FILE", format!("{MOUNT}/token")),
        ("INPUT_FILE", format!("{MOUNT}/input")),
        ("OUTPUT_FILE", format!("{MOUNT}/output")),
        ("TEMPORARY_FOLDER", format!("{MOUNT}/tmp")),
    ];
    node.docker
        .run(
            &algorithm,
            ContainerCreateBody {
                image: Some(image.clone()),
                env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                labels: labels("algorithm"),
                host_config: Some(HostConfig {
                    network_mode: Some(format!("container:{sandbox}")),
                    binds: Some(vec![format!("{}:{MOUNT}", dir.display())]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    log::info!(
        "run {}: algorithm started {:.0} ms after the claim",
        run.id,
        started.elapsed().as_secs_f64() * 1000.0
    );
    // A missed "active" is no reason to stop a running algorithm; the end is reported anyway.
    if let Err(e) = node.client.report(run.id, "active", None, None).await {
        log::warn!("run {}: cannot report active: {e}", run.id);
    }
    let code = node
        .docker
        .wait(&algorithm)
        .await
        .map_err(|e| e.to_string())?;
    log.push_str(&node.docker.logs(&algorithm, 1000).await.unwrap_or_default());
    let output = std::fs::read_to_string(dir.join("output"))
        .ok()
        .filter(|o| !o.is_empty());
    Ok((code, output, log))
}

/// Removes what the run holds; returns what could not be removed.
async fn clean_up(node: &Node, run: i64, held: Held) -> Vec<String> {
    let mut errors = Vec::new();
    let (sandbox, algorithm) = container_names(node, run);
    for c in [&algorithm, &sandbox] {
        if let Err(e) = node.docker.remove(c).await {
            errors.push(e.to_string());
        }
    }
    if let Some(link) = held.link {
        errors.extend(node.router.remove_run(run, link).await);
    }
    node.lock_ports().release(RunId(run as u64));
    if held.ports {
        if let Err(e) = node.client.remove_ports(run).await {
            errors.push(format!("port records: {e}"));
        }
    }
    if let Some(a) = held.address {
        node.lock_clients().remove(&a);
        node.lock_addresses().give_back(a);
    }
    if let Some(dir) = held.dir {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errors.push(format!("{}: {e}", dir.display()));
            }
        }
    }
    errors
}
