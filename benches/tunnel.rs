//! What an algorithm gets across the VPN, side by side with the same tunnel without algonet (a
//! benchmark, not a test; `scripts/bench-tunnel.sh` runs it, as root).
//!
//! One run brings up a federation of two nodes (the demo's: server, OpenVPN server container,
//! nodes with algonet's router) and, on the same OpenVPN server, two plain OpenVPN clients in
//! containers of their own with the nodes' client settings but the kernel owning tun0 (no
//! algonet). iperf3 measures both paths in turn, round after round: on algonet from inside one
//! node's algorithm container to the other's (an algorithm image whose entrypoint is `iperf3 -s`,
//! reached at its node's VPN address and public port), on the plain tunnel from one client's
//! namespace to the other's VPN address, each way, and "B -> A" both as iperf3's `-R` (the side
//! that accepted sends) and with B connecting. Per case: the median rate of each, the ratio, and
//! what the UDP receive buffers dropped (`UdpRcvbufErrors` in each namespace's SNMP counters) at
//! the OpenVPN server and at the two ends.
//!
//! A fifth and a sixth, the references for the fourth: plain userspace WireGuard tunnels from
//! Debian's wireguard-go in containers of their own on the WireGuard federation's network, one
//! of the hub's shape (a hub and two clients, the hub's kernel forwarding between its peers),
//! one direct (the two clients peers of each other, as algonet's nodes are where they reach
//! each other).
//!
//! A fourth path is algonet on WireGuard: a second federation of two nodes beside the first
//! (`--tunnel wireguard`: the server process is the hub, each node's tunnel runs in the node's
//! process), the same iperf3 algorithm on both. Its table sets it beside the plain OpenVPN
//! tunnel and algonet on OpenVPN, with the CPU each path takes per Gbit/s.
//!
//! A third path is vantage6's own: the same plain clients, each with an algorithm container
//! behind it on a veth, reached through the iptables rules vantage6 4.14 writes in its VPN
//! client's namespace (DNAT from tun0, MASQUERADE toward it). A second table sets the three side
//! by side, so what the container hop costs by itself is told apart from what algonet's costs.
//!
//! The scheduler weighs every process as it would in production: each iperf3 is moved into the
//! CPU cgroup of its end's container (as an algorithm's own process would be), and each node
//! into a cgroup of its own (as systemd gives its service). Left in the bench's own group, the
//! nodes' threads and the iperf3 processes beside them each weighed as much, under cgroup v1,
//! as all of Docker's containers together, OpenVPN included: on two cores that took OpenVPN's
//! CPU and made one direction (`-R`) look slow.
//!
//!   tunnel <algonet binary> [--rounds R] [--seconds S] [--node 'busy_poll_us: 0' ...]
//!                [--node-cpu-weight W]   (the nodes' cgroups; default the unit's CPUWeight=25)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use algonet::api::client::Session;
use algonet::api::{codec, NewTask, Page, Run, RunStatus, Task, TaskOrganization};
use algonet::demo::{Federation, Options};
use algonet::docker::{images, specs, Docker, LABEL_ROLE};
use algonet::server::pki::TunnelKind;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use serde_json::{json, Value};

const IPERF_IMAGE: &str = "algonet/iperf3-bench";
const IPERF_PORT: u16 = 5201;
/// The public port of vantage6's path: DNAT from it on tun0 to the container's iperf3.
const V6_PORT: u16 = 5202;
const TAG: &str = "tbench";
/// The federation on WireGuard beside it.
const WG_TAG: &str = "tbwg";
/// The nodes' CPU weight by default: `CPUWeight=` of `deploy/systemd/algonet-node@.service`.
const NODE_CPU_WEIGHT: u64 = 25;

type Failed = Box<dyn std::error::Error>;

/// A process of ours, ended on drop.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One end of a path: a network namespace (by a process in it) and the address peers reach it
/// at.
#[derive(Clone)]
struct End {
    pid: u32,
    ip: String,
    port: u16,
}

/// What is measured, both ways.
struct Path2 {
    name: &'static str,
    client: End,
    server: End,
    /// The OpenVPN processes of this path (the server and the two ends' clients); their
    /// namespaces' UDP drops count for it.
    openvpn: Vec<u32>,
    /// The node processes on this path (none on the plain tunnel).
    nodes: Vec<u32>,
}

/// CPU time a process (all its threads) has used, in seconds: the scheduler's exact run time of
/// each thread (`/proc/<pid>/task/<tid>/schedstat`, in ns) rather than `utime`/`stime`, which
/// are sampled by ticks.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

fn total(pids: &[u32], f: fn(u32) -> f64) -> f64 {
    pids.iter().map(|&p| f(p)).sum()
}

fn nsenter(pid: u32) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["-t", &pid.to_string(), "-n"]);
    c
}

/// `Udp: ... RcvbufErrors` of the namespace `pid` is in.
fn udp_rcvbuf_errors(pid: u32) -> u64 {
    let snmp = std::fs::read_to_string(format!("/proc/{pid}/net/snmp")).unwrap_or_default();
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let (Some(names), Some(values)) = (udp.first(), udp.get(1)) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// What tun0 in the namespace `pid` is in dropped on its way to OpenVPN (its TX queue was full).
fn tun_tx_dropped(pid: u32) -> u64 {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    dev.lines()
        .find_map(|l| l.trim_start().strip_prefix("tun0:"))
        .and_then(|counters| counters.split_whitespace().nth(11)?.parse().ok())
        .unwrap_or(0)
}

/// The CPU controller's cgroup directory of process `pid`: cgroup v1's `cpu` hierarchy where it
/// is mounted, else the v2 one.
fn cpu_cgroup(pid: u32) -> Result<PathBuf, Failed> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let line = |want: &dyn Fn(&str) -> bool| {
        text.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            want(controllers).then(|| path.trim_start_matches('/').to_string())
        })
    };
    if let Some(path) = line(&|c| c.split(',').any(|c| c == "cpu")) {
        return Ok(Path::new("/sys/fs/cgroup/cpu").join(path));
    }
    let path = line(&|c| c.is_empty()).ok_or("no cgroup of the CPU controller")?;
    let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup")
    } else {
        Path::new("/sys/fs/cgroup/unified")
    };
    Ok(root.join(path))
}

/// Moves process `pid` into the CPU cgroup of process `like`.
fn join_cpu_cgroup(pid: u32, like: u32) -> Result<(), Failed> {
    let procs = cpu_cgroup(like)?.join("cgroup.procs");
    std::fs::write(&procs, pid.to_string()).map_err(|e| format!("{}: {e}", procs.display()).into())
}

/// A CPU cgroup of its own for a process, as systemd gives each service one: beside the
/// containers' cgroups (systemd puts services and Docker's container scopes side by side in
/// `system.slice`), with the CPU weight of the service's `CPUWeight=` (100, the default, is
/// every container's). Placed elsewhere, under cgroup v1, a node would weigh as much as all
/// containers together (the root group's children are Docker's one group and the node's).
/// Removed on drop, once the process has ended.
struct OwnCgroup(PathBuf);

impl OwnCgroup {
    fn new(name: &str, pid: u32, beside: u32, weight: u64) -> Result<OwnCgroup, Failed> {
        let containers = cpu_cgroup(beside)?;
        let dir = containers
            .parent()
            .ok_or("a container's cgroup has no parent")?
            .join(name);
        std::fs::create_dir_all(&dir)?;
        let own = OwnCgroup(dir);
        // cgroup v2 takes the weight itself; v1 takes shares, which systemd derives from it
        // (1024 for the default weight of 100).
        let (file, value) = if own.0.join("cpu.weight").exists() {
            ("cpu.weight", weight)
        } else {
            ("cpu.shares", weight * 1024 / 100)
        };
        std::fs::write(own.0.join(file), value.to_string())?;
        std::fs::write(own.0.join("cgroup.procs"), pid.to_string())?;
        Ok(own)
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// One iperf3 run; the receiver's rate in Mbit/s and the sender's retransmissions.
/// Which way the data goes, and which end opened the connection.
#[derive(Clone, Copy)]
enum Direction {
    /// A connects to B and sends.
    AToB,
    /// A connects to B, B sends (iperf3's `-R`): the accepting side sends.
    BToA,
    /// B connects to A and sends.
    BToAOpenedByB,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::AToB => "A -> B",
            Direction::BToA => "B -> A",
            Direction::BToAOpenedByB => "B -> A, B connects",
        }
    }
}

fn iperf(
    path: &Path2,
    streams: u32,
    direction: Direction,
    seconds: u64,
) -> Result<(f64, u64, Option<f64>), Failed> {
    let (client, server) = match direction {
        Direction::BToAOpenedByB => (&path.server, &path.client),
        _ => (&path.client, &path.server),
    };
    let mut c = nsenter(client.pid);
    c.args(["iperf3", "-J", "-c", &server.ip])
        .args(["-p", &server.port.to_string()])
        .args(["-t", &seconds.to_string(), "-P", &streams.to_string()]);
    if let Direction::BToA = direction {
        c.arg("-R");
    }
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    // Weighed by the scheduler as a process of its end's container, as an algorithm is.
    join_cpu_cgroup(child.id(), client.pid)?;
    let out = child.wait_with_output()?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "iperf3 on {}: {e}: {}",
            path.name,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3 on {}: {e}", path.name).into());
    }
    let bits = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("iperf3 on {}: no rate in {}", path.name, v["end"]))?;
    let retransmits = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    // The sender's smoothed round-trip time (us), averaged over its streams; iperf3 knows it
    // only where the client sends (not with -R).
    let rtts: Vec<f64> = v["end"]["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["sender"]["mean_rtt"].as_f64())
        .filter(|&r| r > 0.0)
        .collect();
    let rtt = (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64);
    Ok((bits / 1e6, retransmits, rtt))
}

/// What one case saw on one path, over the rounds.
#[derive(Default)]
struct Seen {
    rates: Vec<f64>,
    /// UDP receive buffers at the OpenVPN server and at the two ends, tun0 TX at the two ends.
    drops: [u64; 3],
    retransmits: u64,
    /// The sender's mean TCP round-trip time per run (us), where iperf3 reports it.
    rtts: Vec<f64>,
    openvpn_cpu: f64,
    node_cpu: f64,
    /// Idle CPU of the machine.
    idle: f64,
    wall: f64,
}

impl Seen {
    /// CPU seconds as a share of one core over this case's runs.
    fn share(&self, cpu: f64) -> String {
        format!("{:.0}%", 100.0 * cpu / self.wall)
    }
}

/// A case's row label: "TCP 8 streams B -> A".
fn case_label(streams: u32, direction: Direction) -> String {
    let plural = if streams > 1 { "s" } else { "" };
    format!("TCP {streams} stream{plural} {}", direction.label())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The iperf3 image: host binaries, an algorithm whose port 5201 is `iperf`.
async fn build_image(docker: &Docker) -> Result<(), Failed> {
    let iperf3 = PathBuf::from("/usr/bin/iperf3");
    docker
        .import(
            IPERF_IMAGE,
            images::rootfs(&[(&iperf3, "/usr/bin/iperf3")])?,
            vec![
                format!(r#"ENTRYPOINT ["/usr/bin/iperf3", "-s", "-p", "{IPERF_PORT}"]"#),
                format!("EXPOSE {IPERF_PORT}/tcp"),
                format!(r#"LABEL p{IPERF_PORT}="iperf""#),
            ],
        )
        .await?;
    Ok(())
}

/// Starts iperf3 servers as an algorithm on both nodes; the two ends once both listen.
async fn algonet_ends(fed: &Federation, admin: &Session) -> Result<(End, End), Failed> {
    let input = codec::encode_json(&json!({}));
    let task: Task = admin
        .post(
            "/task",
            &NewTask {
                name: "iperf3".into(),
                description: "tunnel bench".into(),
                image: IPERF_IMAGE.into(),
                collaboration_id: Some(fed.collaboration),
                organizations: fed
                    .nodes
                    .iter()
                    .map(|n| TaskOrganization {
                        id: n.organization_id,
                        input: input.clone(),
                    })
                    .collect(),
                parent_id: None,
                databases: None,
            },
        )
        .await?;
    let until = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs: Page<Run> = admin.get(&format!("/run?task_id={}", task.id)).await?;
        let ready = runs.data.iter().all(|r| {
            r.status == RunStatus::Active
                && !r.ports.is_empty()
                && r.node.as_ref().is_some_and(|n| n.ip.is_some())
        });
        if ready && runs.data.len() == 2 {
            break runs.data;
        }
        if Instant::now() > until {
            return Err("the iperf3 runs did not become active with a port in 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut ends = Vec::new();
    for (run, node) in runs.iter().zip(&fed.nodes) {
        let owner = format!("node:{}-{}", fed.options.tag, node.organization);
        let containers = fed.docker.owned_by(&owner).await?;
        let name = containers
            .iter()
            .find(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_ROLE))
                    .map(String::as_str)
                    == Some(specs::Role::Algorithm.as_str())
            })
            .and_then(|c| c.names.as_ref()?.first().cloned())
            .ok_or_else(|| format!("no algorithm container of {owner}"))?;
        // The run of this node's organization.
        let run = runs
            .iter()
            .find(|r| r.organization.id == node.organization_id)
            .unwrap_or(run);
        ends.push(End {
            pid: fed.docker.pid(name.trim_start_matches('/')).await?,
            ip: run
                .node
                .as_ref()
                .and_then(|n| n.ip.clone())
                .unwrap_or_default(),
            port: run.ports[0].port.0,
        });
    }
    // The listener is up when a connection to it succeeds from the other end.
    wait_listening(&ends[0], &ends[1])?;
    Ok((ends.remove(0), ends.remove(0)))
}

/// A wireguard-go process of ours (in the foreground), ended with SIGTERM and waited for on
/// drop, before its namespace goes: Debian's wireguard-go killed otherwise, or outliving its
/// namespace or control socket, has been seen spinning in the kernel until a reboot.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A reference: a plain userspace WireGuard tunnel from Debian's wireguard-go and wg, each end
/// in a pause container of its own on the WireGuard federation's network. Of algonet's hub shape
/// (`Shape::Hub`): a hub and two clients, the hub's kernel forwarding between its two peers, so
/// each packet is decrypted and encrypted again there, as in algonet's hub. Of its direct shape
/// (`Shape::Direct`): the two clients peers of each other, as algonet's nodes are where they
/// reach each other.
struct Reference {
    /// The two clients' ends (iperf3 servers listening in both).
    a: End,
    b: End,
    /// The wireguard-go processes.
    tunnels: Vec<u32>,
    // Dropped in this order: iperf3 first, then the daemons.
    _iperf: Vec<Owned>,
    _daemons: Vec<Daemon>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Hub,
    Direct,
}

impl Shape {
    /// Its ends' roles; the clients are the last two. With the shape's prefix they name its
    /// containers and interfaces (wireguard-go's control sockets share one directory across
    /// namespaces, so no two may share a name).
    fn roles(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Shape::Hub => ("wgref", &["hub", "a", "b"]),
            Shape::Direct => ("wgdir", &["a", "b"]),
        }
    }
}

const REFERENCE_PORT: u16 = 51900;

fn reference_container(prefix: &str, role: &str) -> String {
    format!("algonet-{WG_TAG}-{prefix}-{role}")
}

/// Runs `command` (a host binary) in the network namespace of `pid`; its standard output.
fn run_in(pid: u32, command: &[&str], input: Option<&str>) -> Result<String, Failed> {
    let mut c = nsenter(pid);
    c.args(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn()?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        std::io::Write::write_all(&mut stdin, text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            command.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The address of `pid`'s namespace on the federation's network.
fn eth0_address(pid: u32) -> Result<String, Failed> {
    Ok(run_in(
        pid,
        &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
        None,
    )?
    .split_whitespace()
    .skip_while(|w| *w != "inet")
    .nth(1)
    .and_then(|a| a.split('/').next())
    .ok_or("a reference end has no address")?
    .to_string())
}

async fn wireguard_reference(fed: &Federation, shape: Shape) -> Result<Reference, Failed> {
    let (prefix, roles) = shape.roles();
    let mut pids = Vec::new();
    for role in roles {
        let name = reference_container(prefix, role);
        let sandbox = images::ImageNames::default().sandbox;
        let owner = format!("{WG_TAG}-{prefix}");
        fed.docker
            .run(&name, specs::hub(&sandbox, &owner, Some(&fed.network)))
            .await?;
        pids.push(fed.docker.pid(&name).await?);
    }
    let dir = std::env::temp_dir().join(format!("algonet-{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut daemons = Vec::new();
    let mut publics = Vec::new();
    let mut endpoints = Vec::new();
    let port = REFERENCE_PORT.to_string();
    for (role, &pid) in roles.iter().zip(&pids) {
        let secret = run_in(pid, &["wg", "genkey"], None)?;
        publics.push(run_in(pid, &["wg", "pubkey"], Some(&secret))?);
        endpoints.push(format!("{}:{port}", eth0_address(pid)?));
        let file = dir.join(format!("{role}.key"));
        algonet::private::file(&file, secret.as_bytes())?;
        let link = format!("{prefix}-{role}");
        let daemon = nsenter(pid)
            .args(["wireguard-go", "-f", &link])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        join_cpu_cgroup(daemon.id(), pid)?;
        daemons.push(Daemon(daemon));
        let socket = PathBuf::from(format!("/var/run/wireguard/{link}.sock"));
        let until = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > until {
                return Err(format!("wireguard-go made no {}", socket.display()).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let key = file.to_string_lossy();
        run_in(
            pid,
            &[
                "wg",
                "set",
                &link,
                "private-key",
                &key,
                "listen-port",
                &port,
            ],
            None,
        )?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Host addresses: the hub 10.77.0.1, the clients .2 and .3 (in either shape).
    let host = |i: usize| i + 4 - roles.len();
    let peer = |pid: u32, link: &str, j: usize, allowed: &str| {
        let keepalive = ["persistent-keepalive", "25"];
        let mut args = vec!["wg", "set", link, "peer", publics[j].as_str()];
        args.extend(["allowed-ips", allowed, "endpoint", endpoints[j].as_str()]);
        args.extend(keepalive);
        run_in(pid, &args, None).map(drop)
    };
    for (i, &pid) in pids.iter().enumerate() {
        let link = format!("{prefix}-{}", roles[i]);
        match (shape, i) {
            // The hub: each client's /32, its kernel forwarding between them.
            (Shape::Hub, 0) => {
                for j in [1, 2] {
                    peer(pid, &link, j, &format!("10.77.0.{}/32", host(j)))?;
                }
                run_in(pid, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], None)?;
            }
            (Shape::Hub, _) => peer(pid, &link, 0, "10.77.0.0/24")?,
            (Shape::Direct, _) => {
                let j = 1 - i;
                peer(pid, &link, j, &format!("10.77.0.{}/32", host(j)))?;
            }
        }
        let address = format!("10.77.0.{}/24", host(i));
        run_in(pid, &["ip", "addr", "add", &address, "dev", &link], None)?;
        run_in(
            pid,
            &["ip", "link", "set", &link, "mtu", "1420", "up"],
            None,
        )?;
    }
    let end = |pid, host: u8| End {
        pid,
        ip: format!("10.77.0.{host}"),
        port: IPERF_PORT,
    };
    let n = pids.len();
    let (a_end, b_end) = (end(pids[n - 2], 2), end(pids[n - 1], 3));
    let iperf = iperf_servers(&a_end, &b_end)?;
    Ok(Reference {
        a: a_end,
        b: b_end,
        tunnels: daemons.iter().map(|d| d.0.id()).collect(),
        _iperf: iperf,
        _daemons: daemons,
    })
}

/// An iperf3 server in each end's namespace, weighed as a process of its container (the
/// algorithms' servers are their containers' own); once each is reached from the other end.
fn iperf_servers(a: &End, b: &End) -> Result<Vec<Owned>, Failed> {
    let mut servers = Vec::new();
    for end in [a, b] {
        let server = nsenter(end.pid)
            .args(["iperf3", "-s", "-p", &IPERF_PORT.to_string()])
            .stdout(Stdio::null())
            .spawn()?;
        let id = server.id();
        servers.push(Owned(server));
        join_cpu_cgroup(id, end.pid)?;
    }
    wait_listening(a, b)?;
    wait_listening(b, a)?;
    Ok(servers)
}

fn wait_listening(from: &End, to: &End) -> Result<(), Failed> {
    for _ in 0..100 {
        let probe = nsenter(from.pid)
            .args([
                "iperf3",
                "-c",
                &to.ip,
                "-p",
                &to.port.to_string(),
                "-n",
                "1K",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if probe.success() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!("no iperf3 at {}:{}", to.ip, to.port).into())
}

/// Two OpenVPN clients without algonet: nodes of their own collaboration on the same server,
/// their profiles run by the same OpenVPN image with the nodes' settings, the kernel setting
/// tun0's address and route.
async fn plain_clients(fed: &Federation, admin: &Session) -> Result<Vec<(String, End)>, Failed> {
    let vpn_image = images::ImageNames::default().vpn_client;
    let mut orgs = Vec::new();
    for i in 0..2 {
        let o: Value = admin
            .post("/organization", &json!({"name": format!("plain-{i}")}))
            .await?;
        orgs.push(o["id"].clone());
    }
    let collab: Value = admin
        .post(
            "/collaboration",
            &json!({"name": "plain", "organization_ids": orgs, "encrypted": false}),
        )
        .await?;
    let mut ends = Vec::new();
    for (i, org) in orgs.iter().enumerate() {
        let node: Value = admin
            .post(
                "/node",
                &json!({"organization_id": org, "collaboration_id": collab["id"]}),
            )
            .await?;
        let api = algonet::api::client::Api::new(&fed.api)?;
        let login: Value = api
            .send(
                reqwest::Method::POST,
                "/token/node",
                None,
                Some(&json!({"api_key": node["api_key"]})),
            )
            .await?;
        let token = login["access_token"].as_str().ok_or("no node token")?;
        let profile: Value = Session::new(api, token.into()).get("/vpn").await?;
        let dir = fed.options.dir.join(format!("plain-{i}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("client.ovpn"),
            profile["ovpn_config"].as_str().unwrap_or(""),
        )?;
        let name = format!("algonet-{TAG}-plain-{i}");
        let mut args: Vec<String> = ["--config", "/vpn/client.ovpn", "--dev", "tun0"]
            .map(String::from)
            .to_vec();
        args.extend(
            algonet::node::vpn::openvpn::client_settings()
                .iter()
                .map(|s| s.to_string()),
        );
        fed.docker
            .run(
                &name,
                ContainerCreateBody {
                    image: Some(vpn_image.clone()),
                    cmd: Some(args),
                    labels: Some(HashMap::from([(
                        algonet::docker::LABEL_OWNER.into(),
                        TAG.into(),
                    )])),
                    host_config: Some(specs::with_tun(HostConfig {
                        network_mode: Some(fed.network.clone()),
                        binds: Some(vec![format!("{}:/vpn:ro", dir.display())]),
                        ..Default::default()
                    })),
                    networking_config: Some(NetworkingConfig {
                        endpoints_config: Some(
                            [(fed.network.clone(), EndpointSettings::default())].into(),
                        ),
                    }),
                    ..Default::default()
                },
            )
            .await?;
        let pid = fed.docker.pid(&name).await?;
        let until = Instant::now() + Duration::from_secs(30);
        let ip = loop {
            let out = nsenter(pid)
                .args(["ip", "-4", "-o", "addr", "show", "dev", "tun0"])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(ip) = text
                .split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .and_then(|a| a.split('/').next())
            {
                break ip.to_string();
            }
            if Instant::now() > until {
                return Err(format!("{name}: no address on tun0 in 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        ends.push((
            name,
            End {
                pid,
                ip,
                port: IPERF_PORT,
            },
        ));
    }
    Ok(ends)
}

/// Runs a set-up command of the vantage6 path; its failure ends the bench.
fn step(c: &mut Command) -> Result<(), Failed> {
    let out = c.stdout(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(format!("{c:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// vantage6's own path on the plain tunnel: behind each plain client an algorithm container
/// (the iperf3 image, no network of its own) on a veth into the client's namespace, reached
/// through the rules vantage6 4.14 writes there: DNAT of a public port from tun0 to the
/// container, MASQUERADE of the containers toward tun0, the kernel forwarding between them.
/// These iptables rules are the baseline's, in the plain clients' namespaces; algonet writes
/// none.
async fn vantage6_ends(fed: &Federation, plain: &[End]) -> Result<Vec<End>, Failed> {
    let mut ends = Vec::new();
    for (i, client) in plain.iter().enumerate() {
        let name = format!("algonet-{TAG}-v6-{i}");
        fed.docker
            .run(
                &name,
                ContainerCreateBody {
                    image: Some(IPERF_IMAGE.into()),
                    labels: Some(HashMap::from([(
                        algonet::docker::LABEL_OWNER.into(),
                        TAG.into(),
                    )])),
                    host_config: Some(HostConfig {
                        network_mode: Some("none".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await?;
        let pid = fed.docker.pid(&name).await?;
        let (hub, container) = (format!("172.29.{i}.1"), format!("172.29.{i}.2"));
        let public = V6_PORT.to_string();
        let to = format!("{container}:{IPERF_PORT}");
        let subnet = format!("172.29.{i}.0/24");
        let pid_text = pid.to_string();
        let veth: &[&str] = &["ip", "link", "add", "v6h", "type", "veth"];
        let dnat: &[&str] = &["iptables", "-t", "nat", "-A", "PREROUTING", "-i", "tun0"];
        let masquerade: &[&str] = &["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "tun0"];
        let in_client: [(&[&str], &[&str]); 6] = [
            (veth, &["peer", "name", "eth0", "netns", &pid_text]),
            (
                &["ip", "addr", "add", &format!("{hub}/24")],
                &["dev", "v6h"],
            ),
            (&["ip", "link", "set", "v6h", "up"], &[]),
            (&["sysctl", "-qw", "net.ipv4.ip_forward=1"], &[]),
            (
                dnat,
                &[
                    "-p",
                    "tcp",
                    "--dport",
                    &public,
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &to,
                ],
            ),
            (masquerade, &["-s", &subnet, "-j", "MASQUERADE"]),
        ];
        for (args, tail) in in_client {
            step(nsenter(client.pid).args(args).args(tail))?;
        }
        let in_container: [&[&str]; 4] = [
            &[
                "ip",
                "addr",
                "add",
                &format!("{container}/24"),
                "dev",
                "eth0",
            ],
            &["ip", "link", "set", "eth0", "up"],
            &["ip", "link", "set", "lo", "up"],
            &["ip", "route", "add", "default", "via", &hub],
        ];
        for args in in_container {
            step(nsenter(pid).args(args))?;
        }
        ends.push(End {
            pid,
            ip: client.ip.clone(),
            port: V6_PORT,
        });
    }
    wait_listening(&ends[0], &ends[1])?;
    wait_listening(&ends[1], &ends[0])?;
    Ok(ends)
}

async fn bench(
    fed: &Federation,
    wg: &Federation,
    rounds: usize,
    seconds: u64,
) -> Result<(), Failed> {
    build_image(&fed.docker).await?;
    let admin = fed.admin().await?;
    let (a, b) = algonet_ends(fed, &admin).await?;
    let (wg_a, wg_b) = algonet_ends(wg, &wg.admin().await?).await?;
    let reference = wireguard_reference(wg, Shape::Hub).await?;
    let direct = wireguard_reference(wg, Shape::Direct).await?;
    let plain = plain_clients(fed, &admin).await?;
    let (p0, p1) = (plain[0].1.clone(), plain[1].1.clone());
    let _plain_servers = iperf_servers(&p0, &p1)?;
    let v6 = vantage6_ends(fed, &[p0.clone(), p1.clone()]).await?;
    let server_pid = fed
        .docker
        .pid(
            fed.vpn_server
                .as_deref()
                .ok_or("the bench needs the OpenVPN server")?,
        )
        .await?;
    let mut node_vpn = Vec::new();
    for n in &fed.nodes {
        node_vpn.push(
            fed.docker
                .pid(&format!("algonet-{TAG}-{}-vpn", n.organization))
                .await?,
        );
    }
    let paths = [
        Path2 {
            name: "plain tunnel",
            client: p0.clone(),
            server: p1.clone(),
            openvpn: vec![server_pid, p0.pid, p1.pid],
            nodes: Vec::new(),
        },
        Path2 {
            name: "algonet",
            client: a,
            server: b,
            openvpn: [server_pid].into_iter().chain(node_vpn).collect(),
            nodes: fed
                .nodes
                .iter()
                .filter_map(|n| n.child.as_ref().map(Child::id))
                .collect(),
        },
        Path2 {
            name: "vantage6's forwarding",
            client: v6[0].clone(),
            server: v6[1].clone(),
            openvpn: vec![server_pid, p0.pid, p1.pid],
            nodes: Vec::new(),
        },
        // The hub is the server process (its socket in the host's namespace); each node's
        // tunnel is in the node's process, its socket and tun0 in the hub namespace.
        Path2 {
            name: "algonet on WireGuard",
            client: wg_a,
            server: wg_b,
            openvpn: vec![
                wg.server
                    .as_ref()
                    .map(Child::id)
                    .ok_or("the hub has ended")?,
                hub_pid(wg, 0).await?,
                hub_pid(wg, 1).await?,
            ],
            nodes: wg
                .nodes
                .iter()
                .filter_map(|n| n.child.as_ref().map(Child::id))
                .collect(),
        },
        Path2 {
            name: "plain userspace WireGuard",
            client: reference.a.clone(),
            server: reference.b.clone(),
            openvpn: reference.tunnels.clone(),
            nodes: Vec::new(),
        },
        Path2 {
            name: "plain userspace WireGuard, direct",
            client: direct.a.clone(),
            server: direct.b.clone(),
            openvpn: direct.tunnels.clone(),
            nodes: Vec::new(),
        },
    ];
    let cases = [1, 8].into_iter().flat_map(|streams| {
        [Direction::AToB, Direction::BToA, Direction::BToAOpenedByB].map(|d| (streams, d))
    });
    let cases: Vec<(u32, Direction)> = cases.collect();
    let mut seen: Vec<Vec<Seen>> = (0..cases.len())
        .map(|_| (0..paths.len()).map(|_| Seen::default()).collect())
        .collect();
    for round in 0..rounds {
        for (c, &(streams, direction)) in cases.iter().enumerate() {
            for (p, path) in paths.iter().enumerate() {
                // At the OpenVPN server (the first), and at the two ends.
                let drops = || {
                    let at = |pids: &[u32]| total(pids, |p| udp_rcvbuf_errors(p) as f64) as u64;
                    let tun = total(&path.openvpn[1..], |p| tun_tx_dropped(p) as f64) as u64;
                    [at(&path.openvpn[..1]), at(&path.openvpn[1..]), tun]
                };
                let (d0, o0, n0) = (
                    drops(),
                    total(&path.openvpn, cpu_secs),
                    total(&path.nodes, cpu_secs),
                );
                let i0 = algonet_testkit::idle_seconds();
                let t = Instant::now();
                let (rate, re, rtt) = iperf(path, streams, direction, seconds)?;
                let wall = t.elapsed().as_secs_f64();
                let s = &mut seen[c][p];
                s.rates.push(rate);
                let d1 = drops();
                for i in 0..3 {
                    s.drops[i] += d1[i] - d0[i];
                }
                s.retransmits += re;
                s.rtts.extend(rtt);
                s.openvpn_cpu += total(&path.openvpn, cpu_secs) - o0;
                s.node_cpu += total(&path.nodes, cpu_secs) - n0;
                s.idle += algonet_testkit::idle_seconds() - i0;
                s.wall += wall;
                eprintln!(
                    "round {} TCP {streams} {} {}: {rate:.1} Mbit/s",
                    round + 1,
                    direction.label(),
                    path.name,
                );
            }
        }
    }
    println!(
        "| traffic | plain tunnel Mbit/s | algonet Mbit/s | ratio | UDP drops at server + ends: plain / algonet | \
         tun0 TX drops plain / algonet | TCP retransmits plain / algonet | sender's RTT plain / algonet us | OpenVPN CPU plain / algonet | node CPU | idle CPU plain / algonet |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (c, &(streams, direction)) in cases.iter().enumerate() {
        let [plain, ours] = [&seen[c][0], &seen[c][1]];
        let rtt = |s: &Seen| {
            if s.rtts.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}", median(&s.rtts))
            }
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.2}x | {} + {} / {} + {} | {} / {} | {} / {} | {} / {} | {} / {} | {} | {} / {} |",
            case_label(streams, direction),
            median(&plain.rates),
            median(&ours.rates),
            median(&ours.rates) / median(&plain.rates),
            plain.drops[0],
            plain.drops[1],
            ours.drops[0],
            ours.drops[1],
            plain.drops[2],
            ours.drops[2],
            plain.retransmits,
            ours.retransmits,
            rtt(plain),
            rtt(ours),
            plain.share(plain.openvpn_cpu),
            ours.share(ours.openvpn_cpu),
            ours.share(ours.node_cpu),
            plain.share(plain.idle),
            ours.share(ours.idle),
        );
    }
    println!(
        "\n{rounds} rounds of {seconds} s per case and path, interleaved. Rates and RTTs are medians; drops \
         (UdpRcvbufErrors at the OpenVPN server and both clients; tun0's TX drops at both clients) and retransmits are sums over \
         the rounds; CPU is of one core, summed over the three OpenVPN processes, over the \
         two node processes, and over the machine's idle CPUs."
    );
    println!(
        "\n| traffic | plain tunnel Mbit/s | vantage6's forwarding Mbit/s | algonet Mbit/s | vantage6 / plain | \
         algonet / vantage6 | OpenVPN CPU plain / vantage6 / algonet | idle CPU plain / vantage6 / algonet |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (c, &(streams, direction)) in cases.iter().enumerate() {
        let [plain, ours, v6] = [&seen[c][0], &seen[c][1], &seen[c][2]];
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.2}x | {} / {} / {} | {} / {} / {} |",
            case_label(streams, direction),
            median(&plain.rates),
            median(&v6.rates),
            median(&ours.rates),
            median(&v6.rates) / median(&plain.rates),
            median(&ours.rates) / median(&v6.rates),
            plain.share(plain.openvpn_cpu),
            v6.share(v6.openvpn_cpu),
            ours.share(ours.openvpn_cpu),
            plain.share(plain.idle),
            v6.share(v6.idle),
            ours.share(ours.idle),
        );
    }
    println!(
        "\nvantage6's forwarding: the plain clients with an algorithm container each behind the \
         iptables rules vantage6 4.14 writes (DNAT from tun0, MASQUERADE toward it)."
    );
    println!(
        "\n| traffic | plain OpenVPN tunnel Mbit/s | algonet on OpenVPN Mbit/s | plain userspace WireGuard Mbit/s, hub / direct | \
         algonet on WireGuard Mbit/s | WireGuard / plain OpenVPN | WireGuard / plain WireGuard, hub / direct | \
         tunnel + node CPU plain OpenVPN / algonet on OpenVPN / plain WireGuard hub / direct / algonet on WireGuard | \
         machine CPU per Gbit/s, the same five |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (c, &(streams, direction)) in cases.iter().enumerate() {
        let [plain, ours, wg, hub, direct] = [0, 1, 3, 4, 5].map(|p| &seen[c][p]);
        // Cores the whole machine was busy (two vCPUs less their idle time) per Gbit/s carried.
        let per_gbit = |s: &Seen| {
            let busy = 2.0 - s.idle / s.wall;
            format!("{:.2}", busy / (median(&s.rates) / 1000.0))
        };
        let rate = |s: &Seen| median(&s.rates);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} / {:.0} | {:.0} | {:.2}x | {:.2}x / {:.2}x | {} / {} / {} / {} / {} | {} / {} / {} / {} / {} |",
            case_label(streams, direction),
            rate(plain),
            rate(ours),
            rate(hub),
            rate(direct),
            rate(wg),
            rate(wg) / rate(plain),
            rate(wg) / rate(hub),
            rate(wg) / rate(direct),
            plain.share(plain.openvpn_cpu),
            ours.share(ours.openvpn_cpu + ours.node_cpu),
            hub.share(hub.openvpn_cpu),
            direct.share(direct.openvpn_cpu),
            wg.share(wg.openvpn_cpu + wg.node_cpu),
            per_gbit(plain),
            per_gbit(ours),
            per_gbit(hub),
            per_gbit(direct),
            per_gbit(wg),
        );
    }
    println!(
        "\nalgonet on WireGuard: a second federation beside the first, the server process its hub \
         (its CPU is the tunnel's), each node's tunnel in the node's own process; its nodes reach \
         each other on the federation's network, so they trade packets directly. Plain userspace \
         WireGuard: Debian's wireguard-go in containers of their own on that network, as a hub and \
         two clients (the hub's kernel forwarding between its peers) and as two clients peered \
         directly. Machine CPU: both vCPUs less their idle time, iperf3 and the kernel included, \
         per Gbit/s received."
    );
    Ok(())
}

/// Gives each node a cgroup of its own beside its hub container's, with `weight`; and on
/// WireGuard the server (the hub) one with the weight of a container, as the OpenVPN server's.
async fn place_nodes(fed: &Federation, weight: u64) -> Result<Vec<OwnCgroup>, Failed> {
    let tag = &fed.options.tag;
    let mut services = Vec::new();
    for (i, n) in fed.nodes.iter().enumerate() {
        let Some(pid) = n.child.as_ref().map(Child::id) else {
            continue;
        };
        let name = format!("algonet-{tag}-{}", n.organization);
        services.push(OwnCgroup::new(&name, pid, hub_pid(fed, i).await?, weight)?);
    }
    if let (None, Some(server)) = (&fed.vpn_server, &fed.server) {
        let name = format!("algonet-{tag}-server");
        services.push(OwnCgroup::new(
            &name,
            server.id(),
            hub_pid(fed, 0).await?,
            100,
        )?);
    }
    Ok(services)
}

/// The namespace of node `i`'s hub container (where its tunnel's socket and tun0 are).
async fn hub_pid(fed: &Federation, i: usize) -> Result<u32, Failed> {
    let name = format!(
        "algonet-{}-{}-hub",
        fed.options.tag, fed.nodes[i].organization
    );
    Ok(fed.docker.pid(&name).await?)
}

#[tokio::main]
async fn main() -> Result<(), Failed> {
    // `cargo bench` runs every bench with `--bench` alone; this one needs its script.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        eprintln!("tunnel: skipped; run it with ./scripts/bench-tunnel.sh");
        return Ok(());
    }
    let mut args = args.into_iter();
    let algonet = PathBuf::from(args.next().ok_or("usage: tunnel <algonet binary>")?);
    let (mut rounds, mut seconds, mut node_settings) = (3usize, 5u64, String::new());
    let mut node_weight = NODE_CPU_WEIGHT;
    while let Some(a) = args.next() {
        let v = args.next().ok_or("a value after each option")?;
        match a.as_str() {
            "--rounds" => rounds = v.parse()?,
            "--seconds" => seconds = v.parse()?,
            "--node" => node_settings.push_str(&format!("{v}\n")),
            "--node-cpu-weight" => node_weight = v.parse()?,
            _ => return Err(format!("unknown option {a}").into()),
        }
    }
    let dir = std::env::temp_dir().join("algonet-tunnel-bench");
    let options = Options {
        dir: dir.clone(),
        tag: TAG.into(),
        organizations: vec!["alpha".into(), "beta".into()],
        server_port: 7631,
        tunnel: TunnelKind::OpenVpn,
        network: algonet::demo::DEMO_NETWORK,
        node_settings,
        server_vpn: None,
        algonet: std::fs::canonicalize(&algonet)?,
        encrypted: false,
    };
    let wg_options = Options {
        dir: std::env::temp_dir().join("algonet-tunnel-bench-wg"),
        tag: WG_TAG.into(),
        server_port: 7651,
        network: algonet::demo::DEMO_NETWORK + 1,
        tunnel: TunnelKind::WireGuard,
        ..options.clone()
    };
    let mut fed = Federation::up(options, Instant::now()).await?;
    let mut wg = match Federation::up(wg_options, Instant::now()).await {
        Ok(wg) => wg,
        Err(e) => {
            for e in fed.down().await {
                eprintln!("teardown: {e}");
            }
            return Err(e.into());
        }
    };
    let services = match place_nodes(&fed, node_weight).await {
        Ok(mut s) => place_nodes(&wg, node_weight).await.map(|more| {
            s.extend(more);
            s
        }),
        Err(e) => Err(e),
    };
    let outcome = match &services {
        Ok(_) => bench(&fed, &wg, rounds.max(1), seconds).await,
        Err(e) => Err(format!("a cgroup for the nodes: {e}").into()),
    };
    for shape in [Shape::Hub, Shape::Direct] {
        let (prefix, roles) = shape.roles();
        for role in roles {
            let _ = wg.docker.remove(&reference_container(prefix, role)).await;
        }
    }
    for e in wg.down().await {
        eprintln!("teardown: {e}");
    }
    let _ = std::fs::remove_dir_all(&wg.options.dir);
    for i in 0..2 {
        let _ = fed.docker.remove(&format!("algonet-{TAG}-v6-{i}")).await;
        let _ = fed.docker.remove(&format!("algonet-{TAG}-plain-{i}")).await;
    }
    for e in fed.down().await {
        eprintln!("teardown: {e}");
    }
    // The nodes have ended: their cgroups are empty.
    drop(services);
    let _ = std::fs::remove_dir_all(Path::new(&dir));
    outcome
}
