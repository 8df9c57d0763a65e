//! The harness of algonet's tests and network benches: a gate that skips a privileged test when
//! not root (and fails it under CI), network namespaces named after the test and removed on
//! drop, the namespace topology of the data-plane tests and benches ([`topology`]), a server
//! under test ([`server`]), vantage6's own server ([`vantage6`]) and PostgreSQL clusters ([`postgres`]). A crate of its own, so tests and benches share it without reaching
//! into each other's files; never a dependency of the product.

pub mod capture;
pub mod eduvpn;
pub mod postgres;
pub mod server;
pub mod stand_in;
pub mod tls;
pub mod topology;
pub mod vantage6;
pub mod vantage6_node;

use std::process::Command;

use std::net::Ipv4Addr;

use algonet::net::links::{IfName, Netlink};
use algonet::net::netns::Netns;

/// Whether a privileged test may run. Not root: skip with a message, or panic when `CI` is set,
/// because CI must run every tier.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root, and CI runs every tier"
    );
    eprintln!("skipping {test}: needs root");
    false
}

/// A named network namespace (`/run/netns/<name>`) that exists for the life of the value.
#[derive(Debug)]
pub struct TestNs {
    pub name: String,
    pub ns: Netns,
}

impl TestNs {
    /// Creates `an-<tag>-<pid>` (the tag names the test and the namespace's role in it),
    /// replacing a leftover of the same name.
    pub fn new(tag: &str) -> TestNs {
        let name = format!("an-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(ok.success(), "ip netns add {name}");
        let ns = Netns::open(format!("/run/netns/{name}")).expect("open test netns");
        TestNs { name, ns }
    }

    /// Reads `/sys/<path>` as the namespace sees it (`ip netns exec` mounts its own sysfs).
    pub fn sysfs(&self, path: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "cat"])
            .arg(format!("/sys/{path}"))
            .output()
            .expect("run ip netns exec");
        assert!(out.status.success(), "read /sys/{path} in {}", self.name);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Turns offload `features` of `link` on or off (`ethtool -K <link> <features>`).
    pub fn ethtool(&self, link: &str, features: &[&str]) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.name, "ethtool", "-K", link])
            .args(features)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run ethtool");
        assert!(
            status.success(),
            "ethtool -K {link} {features:?} in {}",
            self.name
        );
    }

    /// Runs `ip -n <name> <args>` and returns its standard output (for assertions from outside).
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl TestNs {
    /// Makes the namespace a host: `lo` and `link` up (`link` with `mtu` if given), and `addr`
    /// on `link`.
    pub fn host(&self, link: &str, addr: Ipv4Addr, prefix_len: u8, mtu: Option<u32>) {
        let link = IfName::new(link).expect("name");
        self.ns
            .run(move || async move {
                let nl = Netlink::connect()?;
                nl.configure(&IfName::new("lo")?, None, None).await?;
                nl.configure(&link, mtu, None).await?;
                nl.add_address(&link, addr, prefix_len).await
            })
            .expect("enter ns")
            .expect("host plumbing");
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The MAC address of a link in a namespace, read with `ip -j`.
pub fn mac(ns: &TestNs, link: &str) -> String {
    let out = ns.ip(&["-j", "link", "show", link]);
    let at = out.find("\"address\":\"").expect("address in ip -j output") + 11;
    out[at..at + 17].to_string()
}

/// Idle CPU time of the whole machine (idle and I/O wait, all CPUs), in seconds of one core,
/// from the first line of `/proc/stat`. On a tickless kernel idle time is measured exactly,
/// while busy time is sampled by ticks and mostly misses a thread that wakes for microseconds
/// at a time: busy CPU is the time that was not idle.
pub fn idle_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .expect("the cpu line")
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().expect("ticks"))
        .collect();
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // user nice system idle iowait ...
    (ticks[3] + ticks[4]) / hz
}

/// Whether a Docker-tier test may run: root and a Docker daemon that answers. Without them:
/// skip with a message, or panic when `CI` is set (`.ci/run` starts dockerd).
pub async fn docker(test: &str) -> Option<algonet::docker::Docker> {
    if !privileged(test) {
        return None;
    }
    match algonet::docker::Docker::connect().await {
        Ok(d) => Some(d),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: {e}, and CI runs every tier"
            );
            eprintln!("skipping {test}: {e}");
            None
        }
    }
}

/// The python of a venv the test command made (named by `var`), or `None` (skip, with a
/// message) outside CI; under CI a missing venv fails the test.
pub fn venv_python(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(p) => Some(p),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} is not set: ./scripts/test.sh makes the venv, and CI runs it"
            );
            eprintln!("skipping: {var} is not set (./scripts/test.sh sets it)");
            None
        }
    }
}

/// Asserts that no container of these owners (their label) is left.
pub async fn assert_nothing_left(docker: &algonet::docker::Docker, owners: &[&str]) {
    for owner in owners {
        assert!(
            docker.owned_by(owner).await.expect("list").is_empty(),
            "{owner} left containers"
        );
    }
}

/// The host's firewall rules, without comments and packet counters (which move by themselves:
/// `--stateless` for nft),
/// to show that a test changed none of them.
pub fn firewall() -> String {
    let run = |cmd: &str, args: &[&str]| {
        let out = Command::new(cmd)
            .args(args)
            .output()
            .expect("run firewall dump");
        assert!(out.status.success(), "{cmd} {args:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "{}\n{}",
        run("iptables-save", &[]),
        run("nft", &["--stateless", "list", "ruleset"])
    )
}

/// Samples of an OpenMetrics text: sample name -> (labels, value) pairs.
pub type Samples =
    std::collections::BTreeMap<String, Vec<(std::collections::BTreeMap<String, String>, f64)>>;

/// The samples of an OpenMetrics text as prometheus_client's own parser (Python, from PyPI)
/// reads it. Panics with the parser's reason if it
/// refuses the text. `python` is a venv's interpreter that has prometheus_client
/// (vantage6-server's venv does).
pub fn openmetrics(python: &str, text: &str) -> Samples {
    use std::io::Write;
    let mut child = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/python/openmetrics.py"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the OpenMetrics parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the text");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "{}\n--- the text:\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

/// The value of the sample `name` whose labels include every one of `labels`.
pub fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples.get(name)?.iter().find_map(|(l, v)| {
        labels
            .iter()
            .all(|(k, want)| l.get(*k).map(String::as_str) == Some(*want))
            .then_some(*v)
    })
}

/// Runs `tests/python/<script>` with vantage6's `UserClient` (the venv's `python`) against a
/// demo federation's server on `port`, as its administrator: the script's arguments are the
/// server, the API path, the credentials, the collaboration, the organization to send to and
/// the algorithm image, then `extra`.
pub fn user_client_script(
    python: &str,
    script: &str,
    port: u16,
    collaboration: algonet::api::CollaborationId,
    organization: algonet::api::OrganizationId,
    image: &str,
    extra: &[&str],
) -> std::process::Output {
    user_client_script_as(
        python,
        script,
        (port, algonet::demo::ADMIN),
        collaboration,
        organization,
        image,
        extra,
    )
}

/// vpn-average sent to the federation's first organization by vantage6's `UserClient`
/// (`tests/python/vpn_average.py`, with `extra` arguments such as a key), and the task as the
/// client read it at the end; or why there is none, with the nodes' logs.
pub fn vpn_average_answer(
    python: &str,
    fed: &algonet::demo::Federation,
    extra: &[&str],
) -> Result<serde_json::Value, String> {
    let out = user_client_script(
        python,
        "vpn_average.py",
        fed.options.server_port,
        fed.collaboration,
        fed.nodes[0].organization_id,
        algonet::docker::images::VPN_AVERAGE_IMAGE,
        extra,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answer = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    answer.ok_or_else(|| {
        let logs: Vec<String> = fed
            .nodes
            .iter()
            .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
            .collect();
        format!(
            "no answer from the user client: {stdout}\n{}\nnode logs:\n{}",
            String::from_utf8_lossy(&out.stderr),
            logs.join("\n---\n")
        )
    })
}

/// `algonet node status --json` of the node configured in `config`, as an operator asks it.
pub fn node_status(algonet: &str, config: &std::path::Path) -> serde_json::Value {
    try_node_status(algonet, config).unwrap_or_else(|e| panic!("algonet node status: {e}"))
}

/// [`node_status`], or why the node did not answer (not running yet, say).
pub fn try_node_status(
    algonet: &str,
    config: &std::path::Path,
) -> Result<serde_json::Value, String> {
    let out = Command::new(algonet)
        .args(["node", "status", "--json", "--config"])
        .arg(config)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// [`user_client_script`] against the server on a port as a user (name, password).
pub fn user_client_script_as(
    python: &str,
    script: &str,
    (port, (username, password)): (u16, (&str, &str)),
    collaboration: algonet::api::CollaborationId,
    organization: algonet::api::OrganizationId,
    image: &str,
    extra: &[&str],
) -> std::process::Output {
    std::process::Command::new(python)
        .arg(format!(
            "{}/../tests/python/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([
            "http://127.0.0.1",
            &port.to_string(),
            "/api",
            username,
            password,
            &collaboration.to_string(),
            &organization.to_string(),
            image,
        ])
        .args(extra)
        .output()
        .expect("run the user client")
}

/// The algorithm proxy on 127.0.0.1 in front of the server at `base` (its API root), serving
/// 127.0.0.1 as its one container; `key`: an encrypted collaboration's. Returns its address.
pub fn proxy(
    base: String,
    key: Option<std::sync::Arc<algonet::crypto::PrivateKey>>,
) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let clients: algonet::node::proxy::Clients = std::sync::Arc::default();
    clients.lock().expect("lock").insert(Ipv4Addr::LOCALHOST);
    tokio::spawn(algonet::node::proxy::serve(
        listener,
        reqwest::Client::new(),
        base,
        clients,
        key,
    ));
    addr
}

/// `tests/python/cipher_vectors.py MODE WHERE` with vantage6's cryptor (the venv's `python`),
/// fed `stdin`: its answer (stdout), or its error (stderr).
pub fn cipher_vectors(
    python: &str,
    mode: &str,
    place: &std::path::Path,
    stdin: &str,
) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new(python)
        .arg(format!(
            "{}/../tests/python/cipher_vectors.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(mode)
        .arg(place)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A port for a demo federation's server: it and the 16 after it (the server's metrics, each
/// node's) free now, below Linux's ephemeral range (32768 and up), so that no outgoing
/// connection takes one of them before the federation binds it. Each call of a process starts
/// its search at a range of its own, so that tests running at once do not pick the same.
pub fn federation_port() -> u16 {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = (std::process::id() % 500) as u16 * 20 + call * 20;
    (0..600u16)
        .map(|i| 20_000 + (start + i * 20) % 12_000)
        .find(|&p| (p..p + 17).all(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok()))
        .expect("a free range of ports below 32000")
}

/// A UDP port free on every address of the host.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// The feature test reached every one of the demo's three organizations over TCP and UDP.
pub fn assert_feature_ok(
    rows: Result<Vec<algonet::feature::Row>, algonet::feature::FeatureError>,
    when: &str,
) {
    let rows = rows.unwrap_or_else(|e| panic!("the feature test {when}: {e}"));
    let table = algonet::feature::table(&rows);
    eprintln!("{when}:\n{table}");
    assert_eq!(rows.len(), 3, "{when}: {table}");
    assert!(rows.iter().all(|r| r.probe.ok()), "{when}: {table}");
}

/// For each node of `fed`, whether its VPN client container runs (`None`: there is none, as
/// on WireGuard).
pub async fn vpn_containers(
    docker: &algonet::docker::Docker,
    fed: &algonet::demo::Federation,
) -> Vec<Option<bool>> {
    let mut found = Vec::new();
    for n in &fed.nodes {
        let name = format!("algonet-{}-{}-vpn", fed.options.tag, n.organization);
        found.push(docker.running(&name).await.expect("inspect"));
    }
    found
}

/// vpn-average's answer over the demo's three organizations: completed, the average of all
/// their ages, each partial having reached the others over the VPN.
pub fn assert_demo_average(answer: Result<serde_json::Value, String>) {
    let answer = answer.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer["status"], serde_json::json!("completed"), "{answer}");
    let result = &answer["results"][0];
    let ages: Vec<i64> = (0..3).flat_map(algonet::demo::demo_ages).collect();
    let average = ages.iter().sum::<i64>() as f64 / ages.len() as f64;
    assert_eq!(result["average"], serde_json::json!(average), "{answer}");
    let over_vpn = result["over_vpn"]
        .as_object()
        .expect("what each partial answered over the VPN");
    assert_eq!(over_vpn.len(), 3, "{answer}");
}

/// A node's status on WireGuard (`algonet node status --json`): connected through its own
/// device, a recent handshake with the hub at `endpoint`, bytes both ways, and the router
/// forwarding what came from the tunnel.
pub fn assert_wireguard_status(s: &serde_json::Value, endpoint: &str) {
    let v = &s["vpn"];
    assert_eq!(v["state"], "CONNECTED", "{s}");
    let w = &v["wireguard"];
    assert!(w["handshakes"].as_u64() >= Some(1), "{s}");
    assert!(w["handshake_age_secs"].as_u64() < Some(180), "{s}");
    assert_eq!(w["endpoint"], serde_json::json!(endpoint), "{s}");
    assert!(w["rx_bytes"].as_u64() > Some(0), "{s}");
    assert!(w["tx_bytes"].as_u64() > Some(0), "{s}");
    assert!(
        s["router"]["forwarded_packets_from_vpn"].as_u64() > Some(0),
        "{s}"
    );
}

/// vpn-average built offline from the venv's Python, and the demo's three organizations
/// (amsterdam, berlin, copenhagen) up as a federation tagged `tag` (`encrypted`: each with its
/// key, see `algonet::demo::Options`) on `tunnel`, its server on [`federation_port`] with the
/// built-in VPN or `server_vpn`'s provider.
pub async fn vpn_average_federation(
    docker: &algonet::docker::Docker,
    python: &str,
    algonet: &str,
    tag: &str,
    encrypted: bool,
    tunnel: algonet::server::pki::TunnelKind,
    server_vpn: Option<String>,
) -> algonet::demo::Federation {
    let started = std::time::Instant::now();
    algonet::docker::python::build_vpn_average(docker, std::path::Path::new(python))
        .await
        .expect("build vpn-average from this host's Python");
    eprintln!(
        "vpn-average built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    algonet::demo::Federation::up(
        algonet::demo::Options {
            dir: std::env::temp_dir().join(format!("algonet-{tag}-{}", std::process::id())),
            tag: tag.into(),
            organizations: vec!["amsterdam".into(), "berlin".into(), "copenhagen".into()],
            server_port: federation_port(),
            tunnel,
            network: algonet::demo::DEMO_NETWORK,
            node_settings: String::new(),
            server_vpn,
            algonet: algonet.into(),
            encrypted,
        },
        std::time::Instant::now(),
    )
    .await
    .expect("federation up")
}

/// `algorithms/data-summary` packaged offline as `tag` by `algonet images build --algorithm`.
pub fn build_data_summary(algonet: &str, tag: &str) {
    let started = std::time::Instant::now();
    let built = Command::new(algonet)
        .args(["images", "build", "--algorithm"])
        .arg(format!(
            "{}/../algorithms/data-summary",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(["--tag", tag])
        .output()
        .expect("algonet images build --algorithm");
    assert!(
        built.status.success(),
        "{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    eprintln!(
        "data-summary built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// One step of `tests/python/user_steps.py` (vantage6's own `UserClient` from the venv of
/// `python`) against the API at `base` as `user` (name, password), with data-summary's `image`
/// in `collaboration`: its JSON answer. A step that hangs fails after four minutes.
pub fn user_step(
    python: &str,
    base: &str,
    user: (&str, &str),
    collaboration: i64,
    image: &str,
    args: &[&str],
) -> serde_json::Value {
    let out = Command::new("timeout")
        .args(["240", python])
        .arg(format!(
            "{}/../tests/python/user_steps.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([base, user.0, user.1, &collaboration.to_string(), image])
        .args(args)
        .output()
        .expect("the user client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "{args:?}: no answer: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// An `algonet node` process, stopped as its operator would stop it (SIGTERM, then its own
/// clean-up) when dropped, also when a test fails on the way.
#[derive(Debug)]
pub struct NodeProcess(pub std::process::Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        algonet::demo::stop(&mut self.0, std::time::Duration::from_secs(30));
    }
}

/// `method url` with an optional bearer token and JSON body (`null`: none): the JSON answer,
/// which must be a success.
pub async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> serde_json::Value {
    let mut req = http.request(method.parse().expect("method"), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if !body.is_null() {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.expect("JSON");
    assert!(status.is_success(), "{method} {url}: {status} {v}");
    v
}

/// What a lone algonet node running data-summary needs: the node's images and data-summary as
/// `tag`, both built offline with the `algonet` binary `bin`.
pub async fn node_images_and_data_summary(docker: &algonet::docker::Docker, bin: &str, tag: &str) {
    algonet::docker::images::build(
        docker,
        &algonet::docker::images::ImageNames::default(),
        std::path::Path::new(bin),
    )
    .await
    .expect("the node's images");
    build_data_summary(bin, tag);
}

/// The Docker daemon and the interpreters of the venvs named by `vars` that a Docker test of
/// vantage6's packages needs, or `None` (skip, with a message) outside CI; see [`docker`] and
/// [`venv_python`].
pub async fn docker_and_venvs<const N: usize>(
    test: &str,
    vars: [&str; N],
) -> Option<(algonet::docker::Docker, [String; N])> {
    let docker = docker(test).await?;
    let mut pythons = Vec::with_capacity(N);
    for var in vars {
        pythons.push(venv_python(var)?);
    }
    Some((docker, pythons.try_into().ok()?))
}
