//! Docker tier: the whole system on one host, as `algonet demo` builds it — a server process with
//! the built-in VPN, an OpenVPN server container on an internal Docker network, node processes
//! with their router, OpenVPN client, sandbox and algorithm containers — and what must survive:
//! a bypass attempt, `kill -9` of a node, a broken profile, a killed OpenVPN container.

use algonet_testkit as common;

use common::topology::{tcp_echo, ECHO_LINE};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use algonet::api::client::Session;
use algonet::api::{CollaborationId, OrganizationId};
use algonet::demo::{Federation, Options};
use algonet::net::netns::Netns;
use algonet::server::pki::TunnelKind;
use serde_json::{json, Value};

/// The federations of this file share the demo's Docker network range: one at a time.
static ONE_FEDERATION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One number from the server's real SQLite file.
async fn query(dir: &Path, sql: &'static str, arg: Option<i64>) -> i64 {
    let url = format!(
        "sqlite://{}?mode=ro",
        dir.join("server/algonet.sqlite").display()
    );
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the server's SQLite file");
    let mut q = sqlx::query_scalar(sql);
    if let Some(a) = arg {
        q = q.bind(a);
    }
    let n = q.fetch_one(&pool).await.expect(sql);
    pool.close().await;
    n
}

async fn port_records(dir: &Path) -> i64 {
    query(dir, "SELECT count(*) FROM port", None).await
}

/// Port records of a run.
async fn run_ports(dir: &Path, run: i64) -> i64 {
    query(dir, "SELECT count(*) FROM port WHERE run_id = ?", Some(run)).await
}

/// The public port of a run's `echo` label.
async fn echo_port(dir: &Path, run: i64) -> u16 {
    let sql = "SELECT port FROM port WHERE run_id = ? AND label = 'echo'";
    u16::try_from(query(dir, sql, Some(run)).await).expect("port")
}

/// Waits until `log` holds `needle` `times` times.
async fn wait_log(log: &Path, needle: &str, times: usize, timeout: Duration) {
    let until = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= times {
            return;
        }
        assert!(
            Instant::now() < until,
            "{needle:?} not in {} within {timeout:?}:\n{text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run_statuses(fed: &Federation, task: i64) -> Vec<String> {
    let admin = fed.admin().await.expect("admin");
    let runs: serde_json::Value = admin
        .get(&format!("/run?task_id={task}"))
        .await
        .expect("runs");
    // The server lists runs newest first; these are in the order the runs were made.
    let mut runs = runs["data"].as_array().cloned().unwrap_or_default();
    runs.sort_by_key(|r| r["id"].as_i64());
    runs.iter()
        .map(|r| r["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// An echo child task on `orgs`, each child up for `window_secs` (or until told QUIT).
async fn echo_children(
    admin: &Session,
    collaboration: CollaborationId,
    orgs: &[OrganizationId],
    window_secs: u64,
) -> serde_json::Value {
    // As vantage6 sends an input: base64 of its JSON.
    let input =
        algonet::api::codec::encode_json(&json!({ "method": "child", "window_secs": window_secs }));
    let orgs: Vec<_> = orgs
        .iter()
        .map(|o| json!({ "id": o, "input": input }))
        .collect();
    let body = json!({
        "name": "echo children", "image": algonet::docker::images::ECHO_IMAGE,
        "collaboration_id": collaboration, "organizations": orgs,
    });
    admin.post("/task", &body).await.expect("task")
}

/// A node's VPN address as the server has it.
async fn node_ip(fed: &Federation, admin: &Session, org: OrganizationId) -> Ipv4Addr {
    fed.addresses(admin)
        .await
        .expect("addresses")
        .iter()
        .find(|(o, _)| *o == org)
        .and_then(|(_, ip)| ip.as_deref()?.parse().ok())
        .expect("the node's address")
}

/// `algonet node status --json` of the federation's node `i`.
fn node_status(fed: &Federation, i: usize) -> Value {
    common::node_status(env!("CARGO_BIN_EXE_algonet"), &fed.nodes[i].config)
}

/// The metrics at `127.0.0.1:<port>`, as prometheus_client's parser reads them (`None` where
/// the test runs without the venv, outside CI).
async fn scrape(port: u16) -> Option<common::Samples> {
    let python = common::venv_python("ALGONET_V6_SERVER_PYTHON")?;
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    Some(common::openmetrics(&python, &text))
}

fn assert_all_ok(rows: &[algonet::feature::Row], n: usize) {
    let table = algonet::feature::table(rows);
    eprintln!("{table}");
    assert_eq!(rows.len(), n, "{table}");
    assert!(rows.iter().all(|r| r.probe.ok()), "{table}");
}

/// A federation as the demo builds it, named `tag`, of these organizations, with more lines of
/// YAML for each node; and its folder.
async fn federation(
    tag: &str,
    organizations: &[&str],
    node_settings: &str,
) -> (Federation, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("algonet-{tag}-{}", std::process::id()));
    let fed = Federation::up(
        Options {
            dir: dir.clone(),
            tag: tag.into(),
            organizations: organizations.iter().map(|o| o.to_string()).collect(),
            server_port: common::federation_port(),
            tunnel: TunnelKind::OpenVpn,
            network: algonet::demo::DEMO_NETWORK,
            node_settings: node_settings.into(),
            server_vpn: None,
            algonet: env!("CARGO_BIN_EXE_algonet").into(),
            encrypted: false,
        },
        Instant::now(),
    )
    .await
    .expect("federation up");
    (fed, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_on_docker() {
    let Some(docker) = common::docker("federation_on_docker").await else {
        return;
    };
    let _one = ONE_FEDERATION.lock().await;
    let firewall_before = common::firewall();
    let tag = "tfed";
    let (mut fed, dir) = federation(tag, &["a", "b"], "").await;
    let admin = fed.admin().await.expect("admin");

    // 1. Each node's algorithm reaches the other's (and its own) over TCP and UDP through the
    //    VPN address and public ports the proxy's address lookup returned.
    // The parent on each node in turn: a's algorithm reaches b's, and b's reaches a's.
    let mut rows = fed
        .feature_test(None)
        .await
        .expect("feature test, parent on a");
    assert_all_ok(&rows, 2);
    let reverse = fed
        .feature_test(Some(fed.nodes[1].organization_id))
        .await
        .expect("feature test, parent on b");
    assert_all_ok(&reverse, 2);
    rows.extend(reverse);
    let registered = fed.addresses(&admin).await.expect("addresses");
    for r in &rows {
        let node_ip = registered
            .iter()
            .find(|(org, _)| *org == r.probe.organization_id)
            .and_then(|(_, ip)| ip.clone());
        assert_eq!(
            r.probe.ip, node_ip,
            "lookup returned the node's registered address"
        );
        for port in [r.probe.port, r.probe.udp_port] {
            assert!(port.is_some_and(|p| p.0 >= 49152), "public port {port:?}");
        }
    }
    // After the runs: no port records, no run containers.
    let until = Instant::now() + Duration::from_secs(30);
    while port_records(&dir).await > 0 {
        assert!(
            Instant::now() < until,
            "port records left after the runs ended"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for org in ["a", "b"] {
        let left: Vec<String> = docker
            .owned_by(&format!("node:{tag}-{org}"))
            .await
            .expect("list")
            .into_iter()
            .filter_map(|c| c.labels?.get("algonet.role").cloned())
            .collect();
        let mut roles = left.clone();
        roles.sort();
        assert_eq!(
            roles,
            ["hub", "vpn"],
            "node {org} keeps only its hub and VPN"
        );
        // No run link is left in the hub namespace (checked from outside, with ip).
        let pid = docker
            .pid(&format!("algonet-{tag}-{org}-hub"))
            .await
            .expect("hub pid");
        let links = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "ip", "-o", "link", "show"])
            .output()
            .expect("nsenter ip link");
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(links.contains("algonet0"), "{links}");
        assert!(
            !links.contains("vr-"),
            "run links left on node {org}: {links}"
        );
    }

    // A run's series go with the run.
    let until = Instant::now() + Duration::from_secs(30);
    while !node_status(&fed, 0)["runs"]
        .as_array()
        .is_some_and(Vec::is_empty)
    {
        assert!(Instant::now() < until, "node a still lists runs");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (metrics_a, metrics_b) = (fed.options.server_port + 11, fed.options.server_port + 12);
    if let Some(m) = scrape(metrics_a).await {
        assert!(!m.contains_key("algonet_node_run_packets_total"), "{m:?}");
        assert_eq!(
            common::sample(&m, "algonet_node_runs", &[("phase", "running")]),
            Some(0.0)
        );
    }

    // 2. Long child runs on both nodes. Node a's algorithm reaches the proxy (which forwards to
    //    the server) but not the host behind the WAN network. Node b's algorithm, a real VPN
    //    peer, reaches node a's algorithm through a's public port, but not a's proxy.
    let orgs: Vec<OrganizationId> = fed.nodes.iter().map(|n| n.organization_id).collect();
    let task = echo_children(&admin, fed.collaboration, &orgs, 300).await;
    let task_id = task["id"].as_i64().expect("task id");
    let runs: Vec<Value> = admin
        .all(&format!("/run?task_id={task_id}"))
        .await
        .expect("runs");
    let run_of = |org: OrganizationId| {
        runs.iter()
            .find(|r| r["organization"]["id"] == json!(org))
            .and_then(|r| r["id"].as_i64())
            .expect("run id")
    };
    let (run_a, run_b) = (run_of(orgs[0]), run_of(orgs[1]));
    let until = Instant::now() + Duration::from_secs(60);
    while run_statuses(&fed, task_id).await != ["active", "active"] {
        assert!(
            Instant::now() < until,
            "the child runs did not become active"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A run's folder holds its container token: the node's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        let run_dir = dir.join("node-a").join(format!("run-{run_a}"));
        assert_eq!(mode(&dir.join("node-a")), 0o700, "task dir");
        assert_eq!(mode(&run_dir), 0o700, "run folder");
        assert_eq!(mode(&run_dir.join("token")), 0o600, "container token");
    }
    let algorithm_ns = |org: &str, run: i64| {
        let docker = docker.clone();
        let name = format!("algonet-{tag}-{org}-run-{run}-sandbox");
        async move { Netns::of_pid(docker.pid(&name).await.expect("sandbox pid")).expect("netns") }
    };
    let ns_a = algorithm_ns("a", run_a).await;
    let ns_b = algorithm_ns("b", run_b).await;
    let host = TcpListener::bind("0.0.0.0:0").expect("host listener");
    let host_port = host.local_addr().expect("addr").port();
    let bridge = SocketAddrV4::new(Ipv4Addr::new(172, 29, 76, 1), host_port);
    assert!(
        tcp_echo(&ns_a, bridge).is_err(),
        "an algorithm reached the host over the WAN network"
    );
    let proxy_answer = ns_a
        .run(|| async {
            let proxy = SocketAddrV4::new(algonet::node::hub::GATEWAY, 8080);
            let mut answer = String::new();
            if let Ok(mut s) = TcpStream::connect_timeout(&proxy.into(), Duration::from_secs(2)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.write_all(b"GET /vpn/algorithm/addresses HTTP/1.0\r\n\r\n");
                let _ = s.read_to_string(&mut answer);
            }
            answer
        })
        .expect("in the algorithm's namespace");
    assert!(
        proxy_answer.starts_with("HTTP/1.0 401") || proxy_answer.starts_with("HTTP/1.1 401"),
        "the proxy forwards to the server (which wants a token): {proxy_answer:?}"
    );
    let a_ip = node_ip(&fed, &admin, orgs[0]).await;
    let a_public = SocketAddrV4::new(a_ip, echo_port(&dir, run_a).await);
    assert_eq!(
        tcp_echo(&ns_b, a_public).expect("b -> a's algorithm over the VPN"),
        ECHO_LINE
    );
    let to_proxy = tcp_echo(&ns_b, SocketAddrV4::new(a_ip, 8080));
    assert!(
        to_proxy.is_err(),
        "a VPN peer reached node a's proxy: {to_proxy:?}"
    );

    // 3. The OpenVPN client container of node b killed while both runs are active: the node
    //    brings the tunnel back by itself, and b's algorithm reaches a's again.
    let log_b = fed.nodes[1].log.clone();
    let killed = std::process::Command::new("docker")
        .args(["kill", &format!("algonet-{tag}-b-vpn")])
        .output()
        .expect("docker kill");
    assert!(killed.status.success(), "{killed:?}");
    wait_log(&log_b, "VPN back with address", 1, Duration::from_secs(120)).await;
    let until = Instant::now() + Duration::from_secs(30);
    while tcp_echo(&ns_b, a_public).is_err() {
        assert!(
            Instant::now() < until,
            "connectivity did not come back after the OpenVPN restart"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        run_statuses(&fed, task_id).await,
        ["active", "active"],
        "the runs went on"
    );

    // What an operator sees: `algonet node status` and the metrics of both nodes and the server.
    {
        use std::os::unix::fs::PermissionsExt;
        let socket = dir.join("node-a").join("status.sock");
        let mode = std::fs::metadata(&socket)
            .expect("status socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the status socket is the node's alone");
    }
    let status_a = node_status(&fed, 0);
    assert_eq!(status_a["vpn"]["state"], "CONNECTED", "{status_a}");
    assert_eq!(status_a["vpn"]["address"], a_ip.to_string(), "{status_a}");
    let run = status_a["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["id"] == json!(run_a)))
        .unwrap_or_else(|| panic!("run {run_a} in {status_a}"));
    assert_eq!(run["phase"], "running", "{run}");
    assert!(
        run["ports"]
            .as_array()
            .expect("ports")
            .contains(&json!({"public": a_public.port(), "container": 8888, "protocol": "tcp"})),
        "{run}"
    );
    // b's algorithm reached a's: packets came from the VPN to a's container and went back.
    for key in ["packets_in", "bytes_in", "packets_out"] {
        assert!(run["traffic"][key].as_u64() > Some(0), "{key}: {run}");
    }
    let status_b = node_status(&fed, 1);
    assert!(
        status_b["vpn"]["reconnects"].as_u64() >= Some(1),
        "{status_b}"
    );
    assert!(
        status_b["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|p| p["message"]
                .as_str()
                .is_some_and(|m| m.contains("management connection"))),
        "the lost tunnel is among node b's recent problems: {status_b}"
    );
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_algonet"))
        .args(["node", "status", "--config"])
        .arg(&fed.nodes[0].config)
        .output()
        .expect("algonet node status");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("VPN CONNECTED")
            && table.contains(&format!(
                "{a_public_port}->8888/tcp",
                a_public_port = a_public.port()
            )),
        "{table}"
    );
    if let Some(m) = scrape(metrics_a).await {
        let run = run_a.to_string();
        let packets = |direction| {
            common::sample(
                &m,
                "algonet_node_run_packets_total",
                &[("run", &run), ("direction", direction)],
            )
        };
        assert!(
            packets("in") > Some(0.0) && packets("out") > Some(0.0),
            "{m:?}"
        );
        assert_eq!(
            m.get("algonet_node_drops_total").map(Vec::len),
            Some(algonet::netstack::DropReason::ALL.len()),
            "every drop reason, zeros too"
        );
        assert_eq!(
            common::sample(&m, "algonet_node_vpn_connected", &[]),
            Some(1.0)
        );
        assert_eq!(
            common::sample(&m, "algonet_node_runs", &[("phase", "running")]),
            Some(1.0)
        );
        assert!(common::sample(&m, "algonet_node_connection_capacity", &[]) > Some(0.0));
        assert!(common::sample(&m, "algonet_node_run_start_seconds_count", &[]) >= Some(1.0));
    }
    if let Some(m) = scrape(metrics_b).await {
        assert!(common::sample(&m, "algonet_node_vpn_reconnects_total", &[]) >= Some(1.0));
    }
    if let Some(m) = scrape(fed.options.server_port + 10).await {
        assert!(
            common::sample(&m, "algonet_server_runs", &[("status", "active")]) >= Some(2.0),
            "{m:?}"
        );
        assert_eq!(
            common::sample(&m, "algonet_server_nodes_with_vpn_address", &[]),
            Some(2.0)
        );
        assert!(
            common::sample(
                &m,
                "algonet_server_requests_total",
                &[("route", "/api/run"), ("status", "200")]
            ) > Some(0.0),
            "the nodes' polls are counted: {m:?}"
        );
    }

    // 4. kill -9 of node a mid-run: its containers stay behind; the next start (with a broken
    //    profile on disk) removes them, marks the run crashed, drops its port records, and gets a
    //    working profile via /vpn/update, then /vpn.
    let mut a = fed.nodes[0].child.take().expect("node a");
    a.kill().expect("kill -9");
    a.wait().expect("reap");
    let left = docker
        .owned_by(&format!("node:{tag}-a"))
        .await
        .expect("list");
    assert!(
        left.len() >= 4,
        "router, vpn, sandbox, algorithm left: {}",
        left.len()
    );
    std::fs::write(
        dir.join("node-a/vpn/node.ovpn"),
        "this is not an OpenVPN profile\n",
    )
    .expect("break the profile");
    fed.start_node(0).expect("restart node a");
    let log_a = fed.nodes[0].log.clone();
    wait_log(
        &log_a,
        "VPN connected with address",
        1,
        Duration::from_secs(120),
    )
    .await;
    let text = std::fs::read_to_string(&log_a).expect("log");
    assert!(text.contains("(New profile)"), "{text}");
    assert!(text.contains("removing"), "{text}");
    assert_eq!(run_statuses(&fed, task_id).await[0], "crashed");
    assert_eq!(
        run_ports(&dir, run_a).await,
        0,
        "the crashed run's port records"
    );
    assert!(
        docker
            .running(&format!("algonet-{tag}-a-run-{run_a}-sandbox"))
            .await
            .expect("inspect")
            .is_none(),
        "old sandbox removed"
    );
    assert!(
        std::fs::read_to_string(dir.join("node-a/vpn/node.ovpn"))
            .expect("profile")
            .contains("<cert>"),
        "the working profile is kept"
    );
    // b's run ends when told; then the whole federation works again.
    let b_ip = node_ip(&fed, &admin, orgs[1]).await;
    let b_public = SocketAddrV4::new(b_ip, echo_port(&dir, run_b).await);
    let _ = ns_b.run(move || async move {
        TcpStream::connect_timeout(&b_public.into(), Duration::from_secs(2))
            .and_then(|mut s| s.write_all(b"QUIT\n"))
    });
    // 5. The server away for a while: the nodes wait and retry, and carry on when it is back.
    fed.stop_server();
    wait_log(
        &log_b,
        "asking for runs: server unreachable",
        1,
        Duration::from_secs(30),
    )
    .await;
    fed.start_server().expect("server again");
    fed.admin_when_up(Duration::from_secs(30))
        .await
        .expect("server back");

    // 5b. The VPN server unreachable while a node starts (its container paused, node b with a
    //     short connect timeout): the node runs without VPN for the moment, keeps trying, and
    //     connects by itself once the VPN server answers again.
    let docker_cmd = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .expect("docker");
        assert!(out.status.success(), "docker {args:?}: {out:?}");
    };
    let mut b = fed.nodes[1].child.take().expect("node b");
    algonet::demo::stop(&mut b, Duration::from_secs(60));
    let b_config = fed.nodes[1].config.clone();
    let text = std::fs::read_to_string(&b_config).expect("node-b.yaml");
    std::fs::write(&b_config, format!("{text}vpn_connect_timeout_secs: 3\n")).expect("write");
    let server_log = dir.join("server.log");
    let issued = || {
        std::fs::read_to_string(&server_log)
            .expect("server.log")
            .matches("VPN certificate issued")
            .count()
    };
    let issued_before = issued();
    let vpn_server = fed
        .vpn_server
        .clone()
        .expect("the OpenVPN server container");
    docker_cmd(&["pause", &vpn_server]);
    fed.start_node(1).expect("node b again");
    wait_log(
        &log_b,
        "running without VPN for now",
        1,
        Duration::from_secs(60),
    )
    .await;
    let text = std::fs::read_to_string(&log_b).expect("log");
    assert!(
        text.contains("the VPN server did not answer within 3s"),
        "{text}"
    );
    assert_eq!(
        issued(),
        issued_before,
        "no new certificate for a silent VPN server"
    );
    docker_cmd(&["unpause", &vpn_server]);
    wait_log(
        &log_b,
        "VPN connected with address",
        1,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(node_status(&fed, 1)["vpn"]["state"], "CONNECTED");

    // 5c. The OpenVPN server restarted: the nodes reconnect at once (it tells them as it stops)
    //     and keep their addresses (fixed per certificate by the server).
    let before = [
        node_ip(&fed, &admin, orgs[0]).await,
        node_ip(&fed, &admin, orgs[1]).await,
    ];
    let again = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("VPN connected again with address")
            .count()
    };
    let (again_a, again_b) = (again(&log_a), again(&log_b));
    docker_cmd(&["restart", &vpn_server]);
    wait_log(
        &log_a,
        "VPN connected again with address",
        again_a + 1,
        Duration::from_secs(40),
    )
    .await;
    wait_log(
        &log_b,
        "VPN connected again with address",
        again_b + 1,
        Duration::from_secs(40),
    )
    .await;
    for (i, org) in [orgs[0], orgs[1]].into_iter().enumerate() {
        assert_eq!(node_ip(&fed, &admin, org).await, before[i], "node {i}");
        let status = node_status(&fed, i);
        assert_eq!(status["vpn"]["address"], before[i].to_string(), "{status}");
    }

    // The feature test once more, as an operator runs it: `algonet test`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_algonet"))
        .args([
            "test",
            "--server",
            fed.api.trim_end_matches("/api"),
            "--collaboration",
        ])
        .arg(fed.collaboration.to_string())
        .args([
            "--username",
            algonet::demo::ADMIN.0,
            "--password",
            algonet::demo::ADMIN.1,
        ])
        .output()
        .expect("algonet test");
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}{table}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "algonet test failed");
    for org in ["a ", "b "] {
        let row = table
            .lines()
            .find(|l| l.starts_with(org))
            .expect("a row per organization");
        assert!(row.contains(" yes  yes "), "{row}");
    }

    // 6. Down: nothing left, the host firewall untouched.
    let errors = fed.down().await;
    assert!(errors.is_empty(), "{errors:?}");
    for owner in [
        format!("node:{tag}-a"),
        format!("node:{tag}-b"),
        tag.to_string(),
    ] {
        let left = docker.owned_by(&owner).await.expect("list");
        assert!(left.is_empty(), "{owner} left {} container(s)", left.len());
    }
    let nets = std::process::Command::new("docker")
        .args(["network", "ls", "--format", "{{.Name}}"])
        .output()
        .expect("docker network ls");
    assert!(!String::from_utf8_lossy(&nets.stdout).contains(&format!("algonet-{tag}-net")));
    assert_eq!(
        common::firewall(),
        firewall_before,
        "the host firewall changed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Processes a test started, stopped newest first with SIGTERM (the node's clean-up) also when
/// the test fails.
struct Procs(Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for mut c in self.0.drain(..).rev() {
            algonet::demo::stop(&mut c, Duration::from_secs(30));
        }
    }
}

/// A server without VPN: the node warns once, runs without VPN, still executes runs, and runs
/// at most `max_concurrent_runs` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_vpn_at_the_server() {
    let Some(docker) = common::docker("node_without_vpn_at_the_server").await else {
        return;
    };
    algonet::docker::images::build(
        &docker,
        &Default::default(),
        Path::new(env!("CARGO_BIN_EXE_algonet")),
    )
    .await
    .expect("images");
    let dir = std::env::temp_dir().join(format!("algonet-novpn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let bin = env!("CARGO_BIN_EXE_algonet");
    let spawn = |args: &[&str], log: &str| {
        let out = std::fs::File::create(dir.join(log)).expect("log");
        std::process::Command::new(args[0])
            .args(&args[1..])
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn")
    };
    std::fs::write(
        dir.join("server.yaml"),
        format!(
            "listen: 127.0.0.1:{port}\nmetrics_listen: null\ndata_dir: {}\n\
             admin: {{username: root, password: correct-horse-battery}}\n",
            dir.join("server").display()
        ),
    )
    .expect("server.yaml");
    let mut procs = Procs(vec![spawn(
        &[
            bin,
            "server",
            "--config",
            &dir.join("server.yaml").to_string_lossy(),
        ],
        "server.log",
    )]);
    let api = format!("http://127.0.0.1:{port}/api");
    let until = Instant::now() + Duration::from_secs(20);
    let admin = loop {
        match Session::login_user(&api, "root", "correct-horse-battery").await {
            Ok(a) => break a,
            Err(e) => {
                assert!(Instant::now() < until, "server did not start: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let org = admin
        .post::<Value>("/organization", &json!({"name": "o"}))
        .await
        .expect("org")["id"]
        .clone();
    let col = admin
        .post::<Value>(
            "/collaboration",
            &json!({"name": "c", "organization_ids": [org]}),
        )
        .await
        .expect("collaboration")["id"]
        .clone();
    let node: Value = admin
        .post(
            "/node",
            &json!({"organization_id": org, "collaboration_id": col}),
        )
        .await
        .expect("node");
    std::fs::write(
        dir.join("node.yaml"),
        format!(
            "name: tnovpn\nserver_url: http://127.0.0.1:{port}\napi_key: {}\nvpn_subnet: 10.76.0.0/16\n\
             task_dir: {}\nmetrics_listen: null\nmax_concurrent_runs: 1\n",
            node["api_key"].as_str().expect("key"),
            dir.join("tasks").display()
        ),
    )
    .expect("node.yaml");
    // Started as systemd starts a Type=notify service with a watchdog of 1 s: the socket to
    // tell, the watchdog's period and the pid it is meant for (the shell's, which exec keeps).
    let notify = dir.join("notify.sock");
    let said = std::os::unix::net::UnixDatagram::bind(&notify).expect("notify socket");
    said.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let systemd = format!(
        "export NOTIFY_SOCKET={} WATCHDOG_USEC=1000000 WATCHDOG_PID=$$; exec \"$0\" \"$@\"",
        notify.display()
    );
    procs.0.push(spawn(
        &[
            "sh",
            "-c",
            &systemd,
            bin,
            "node",
            "--config",
            &dir.join("node.yaml").to_string_lossy(),
        ],
        "node.log",
    ));
    let next = || {
        let mut buf = [0u8; 512];
        let n = said.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let ready = next();
    assert!(
        ready.contains("READY=1") && ready.contains("no VPN"),
        "{ready}"
    );
    for _ in 0..3 {
        assert_eq!(next(), "WATCHDOG=1\n", "fed every half second");
    }
    // From here on the notifications are read as systemd reads them, all along.
    let reader = said.try_clone().expect("socket");
    let heard = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 512];
        reader
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        while let Ok(n) = reader.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            let stopping = m.contains("STOPPING=1");
            all.push(m);
            if stopping {
                break;
            }
        }
        all
    });
    let log = dir.join("node.log");
    wait_log(&log, "running without VPN", 1, Duration::from_secs(60)).await;
    // The same configuration started again (by hand, beside the service): refused, naming the
    // running node, whose containers stay.
    let before = docker.owned_by("node:tnovpn").await.expect("list").len();
    let second = std::process::Command::new(bin)
        .args(["node", "--config"])
        .arg(dir.join("node.yaml"))
        .output()
        .expect("a second node");
    let refusal = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{refusal}");
    assert!(refusal.contains("another algonet node (pid"), "{refusal}");
    assert_eq!(
        docker.owned_by("node:tnovpn").await.expect("list").len(),
        before,
        "the running node's containers"
    );
    let status = std::process::Command::new(bin)
        .args(["node", "status", "--json", "--config"])
        .arg(dir.join("node.yaml"))
        .output()
        .expect("node status");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["vpn"]["state"], "retrying", "{status}");
    let (col, org) = (
        CollaborationId(col.as_i64().expect("id")),
        OrganizationId(org.as_i64().expect("id")),
    );
    let task = echo_children(&admin, col, &[org], 1).await;
    let task_id = task["id"].as_i64().expect("id");
    let until = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let runs: Value = admin
            .get(&format!("/run?task_id={task_id}"))
            .await
            .expect("runs");
        let run = runs["data"][0].clone();
        if ["completed", "failed", "crashed"].contains(&run["status"].as_str().unwrap_or("")) {
            break run;
        }
        assert!(Instant::now() < until, "the run did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(run["status"], "completed", "{run}");
    assert!(
        run["log"].as_str().unwrap_or("").contains("no VPN"),
        "{run}"
    );
    // A run still going when the node is told to stop ends as killed.
    let long = echo_children(&admin, col, &[org], 300).await;
    let long_runs = format!("/run?task_id={}", long["id"].as_i64().expect("id"));
    let status = || async {
        let runs: Value = admin.get(&long_runs).await.expect("runs");
        runs["data"][0]["status"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };
    let until = Instant::now() + Duration::from_secs(60);
    while status().await != "active" {
        assert!(Instant::now() < until, "the long run did not become active");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The node runs one run at a time (`max_concurrent_runs: 1`): another waits, pending.
    let other = echo_children(&admin, col, &[org], 1).await;
    let other_runs = format!("/run?task_id={}", other["id"].as_i64().expect("id"));
    let other_status = || async {
        let runs: Value = admin.get(&other_runs).await.expect("runs");
        runs["data"][0]["status"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };
    for _ in 0..12 {
        assert_eq!(other_status().await, "pending", "a second run at once");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut node = procs.0.pop().expect("the node");
    algonet::demo::stop(&mut node, Duration::from_secs(60));
    assert_eq!(status().await, "killed by user");
    assert_eq!(other_status().await, "pending", "never claimed");
    let rest = heard.join().expect("notifications");
    assert!(
        rest.iter().any(|m| m.contains("STOPPING=1")),
        "told systemd it stops: {rest:?}"
    );
    drop(procs);
    let text = std::fs::read_to_string(&log).expect("log");
    assert_eq!(
        text.matches("running without VPN").count(),
        1,
        "warned once:\n{text}"
    );
    assert!(
        text.contains("stopped; nothing of this node is left running"),
        "{text}"
    );
    let left = docker.owned_by("node:tnovpn").await.expect("list");
    assert!(left.is_empty(), "containers left: {}", left.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A UDP datagram from `ns` to `to`; the answer, if one comes within 2 s.
fn udp_echo(ns: &Netns, to: SocketAddrV4) -> std::io::Result<Vec<u8>> {
    ns.run(move || async move {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(b"hello\n", to)?;
        let mut buf = vec![0u8; 64];
        let n = s.recv(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
    .expect("in the namespace")
}

/// No answer at all: the connection attempt times out (a RST would say "refused").
fn assert_silence(what: &str, r: std::io::Result<Vec<u8>>) {
    match r {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) => {}
        other => panic!("{what}: expected silence, got {other:?}"),
    }
}

/// Four organizations, two collaborations, one VPN server: a run's ports open only to the nodes
/// of its own task family, its algorithm reaches only them, and a subtask on a new
/// organization opens the way for that node at once. The would-be intruders (d, and c before
/// the subtask) run with `peer_scope: vpn`: their own routers let everything out, as a node
/// whose operator wants in would, so what stops them is the router of the node they knock at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_talk_only_within_their_task_family() {
    let Some(docker) = common::docker("runs_talk_only_within_their_task_family").await else {
        return;
    };
    let _one = ONE_FEDERATION.lock().await;
    let firewall_before = common::firewall();
    let tag = "tscope";
    // Two routers on each of a, b and c: every scope holds on every router of a node.
    let (mut fed, dir) = federation(tag, &["a", "b", "c"], "dataplane_queues: 2\n").await;
    let admin = fed.admin().await.expect("admin");
    // Collaboration 2: organization d and its node, on the same VPN server.
    let d: Value = admin
        .post("/organization", &json!({"name": "d"}))
        .await
        .expect("org d");
    let col2: Value = admin
        .post(
            "/collaboration",
            &json!({"name": "other", "organization_ids": [d["id"]]}),
        )
        .await
        .expect("collaboration 2");
    let node_d: Value = admin
        .post(
            "/node",
            &json!({"organization_id": d["id"], "collaboration_id": col2["id"]}),
        )
        .await
        .expect("node d");
    let config = dir.join("node-d.yaml");
    std::fs::write(
        &config,
        format!(
            "name: {tag}-d\nserver_url: http://127.0.0.1:{}\napi_key: {}\nvpn_subnet: {}\n\
             task_dir: {}\nwan_network: {}\nmetrics_listen: null\npeer_scope: vpn\n",
            fed.options.server_port,
            node_d["api_key"].as_str().expect("key"),
            algonet::demo::VPN_SUBNET,
            dir.join("node-d").display(),
            fed.network
        ),
    )
    .expect("node-d.yaml");
    let d_org = OrganizationId(d["id"].as_i64().expect("id"));
    fed.nodes.push(algonet::demo::NodeProc {
        organization: "d".into(),
        organization_id: d_org,
        config,
        log: dir.join("node-d.log"),
        child: None,
    });
    fed.start_node(3).expect("node d");
    // Node c too, restarted with its router open.
    let mut c = fed.nodes[2].child.take().expect("node c");
    algonet::demo::stop(&mut c, Duration::from_secs(60));
    let c_config = fed.nodes[2].config.clone();
    let text = std::fs::read_to_string(&c_config).expect("node-c.yaml");
    std::fs::write(&c_config, format!("{text}peer_scope: vpn\n")).expect("node-c.yaml");
    fed.start_node(2).expect("node c again");
    for org in ["c", "d"] {
        let log = dir.join(format!("node-{org}.log"));
        wait_log(
            &log,
            "VPN connected with address",
            1,
            Duration::from_secs(90),
        )
        .await;
    }
    let until = Instant::now() + Duration::from_secs(60);
    while fed
        .addresses(&admin)
        .await
        .expect("addresses")
        .iter()
        .any(|(_, ip)| ip.is_none())
    {
        assert!(
            Instant::now() < until,
            "node c did not register its address again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let d_col = CollaborationId(col2["id"].as_i64().expect("id"));

    // Inside collaboration 1 everything works as before.
    let rows = fed.feature_test(None).await.expect("feature test");
    assert_all_ok(&rows, 3);

    // Long runs on a and b (one task family), and one on d (collaboration 2).
    let orgs: Vec<OrganizationId> = fed.nodes.iter().map(|n| n.organization_id).collect();
    let task = echo_children(&admin, fed.collaboration, &orgs[..2], 300).await;
    let task_id = task["id"].as_i64().expect("id");
    let other = echo_children(&admin, d_col, &[d_org], 300).await;
    let other_id = other["id"].as_i64().expect("id");
    // A run on c in a family of its own.
    let elsewhere = echo_children(&admin, fed.collaboration, &orgs[2..3], 300).await;
    let elsewhere_id = elsewhere["id"].as_i64().expect("id");
    let until = Instant::now() + Duration::from_secs(60);
    while run_statuses(&fed, task_id).await != ["active", "active"]
        || run_statuses(&fed, other_id).await != ["active"]
        || run_statuses(&fed, elsewhere_id).await != ["active"]
    {
        assert!(
            Instant::now() < until,
            "the long runs did not become active"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let run_of = |runs: &Vec<Value>, org: OrganizationId| {
        runs.iter()
            .find(|r| r["organization"]["id"] == json!(org))
            .and_then(|r| r["id"].as_i64())
            .expect("run id")
    };
    let runs: Vec<Value> = admin
        .all(&format!("/run?task_id={task_id}"))
        .await
        .expect("runs");
    let (run_a, run_b) = (run_of(&runs, orgs[0]), run_of(&runs, orgs[1]));
    let runs_d: Vec<Value> = admin
        .all(&format!("/run?task_id={other_id}"))
        .await
        .expect("runs");
    let run_d = run_of(&runs_d, d_org);
    let runs_c: Vec<Value> = admin
        .all(&format!("/run?task_id={elsewhere_id}"))
        .await
        .expect("runs");
    let run_c = run_of(&runs_c, orgs[2]);
    let a_ip = node_ip(&fed, &admin, orgs[0]).await;
    let d_nodes: Vec<Value> = admin
        .all(&format!("/node?collaboration_id={}", d_col.0))
        .await
        .expect("collaboration 2's nodes");
    let d_ip: Ipv4Addr = d_nodes[0]["ip"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .expect("d's address");
    // What an attacker in collaboration 2 could know: address and public ports, from the
    // server's SQLite file.
    let udp_sql = "SELECT port FROM port WHERE run_id = ? AND label = 'echo-udp'";
    let a_tcp = SocketAddrV4::new(a_ip, echo_port(&dir, run_a).await);
    let a_udp = SocketAddrV4::new(
        a_ip,
        u16::try_from(query(&dir, udp_sql, Some(run_a)).await).expect("port"),
    );
    let d_tcp = SocketAddrV4::new(d_ip, echo_port(&dir, run_d).await);
    let sandbox = |org: &str, run: i64| {
        let docker = docker.clone();
        let name = format!("algonet-{tag}-{org}-run-{run}-sandbox");
        async move { Netns::of_pid(docker.pid(&name).await.expect("sandbox pid")).expect("netns") }
    };
    let ns_b = sandbox("b", run_b).await;
    assert_eq!(
        tcp_echo(&ns_b, a_tcp).expect("b reaches a: one family"),
        ECHO_LINE
    );
    assert_eq!(
        udp_echo(&ns_b, a_udp).expect("b reaches a over UDP"),
        b"hello\n"
    );

    // Node d, another collaboration's member, knowing both: no connection, no answer.
    let ns_d = sandbox("d", run_d).await;
    assert_silence("d -> a's TCP port", tcp_echo(&ns_d, a_tcp));
    assert_silence("d -> a's UDP port", udp_echo(&ns_d, a_udp));
    let unmapped = SocketAddrV4::new(a_ip, 50000);
    assert_silence("d -> an unmapped port of a", tcp_echo(&ns_d, unmapped));

    // Collaboration 1's algorithm reaches neither the VPN server nor d.
    let ns_a = sandbox("a", run_a).await;
    let vpn_server = SocketAddrV4::new(Ipv4Addr::new(10, 76, 0, 1), 22);
    assert!(
        tcp_echo(&ns_a, vpn_server).is_err(),
        "a's algorithm reached the VPN server"
    );
    assert!(
        tcp_echo(&ns_a, d_tcp).is_err(),
        "a's algorithm reached collaboration 2's node"
    );
    let status = node_status(&fed, 0);
    let drops = &status["router"]["drops"];
    assert!(drops["peer_not_in_scope"].as_u64() >= Some(3), "{status}");
    assert!(
        drops["destination_not_in_scope"].as_u64() >= Some(2),
        "{status}"
    );

    // A subtask on c (in collaboration 1, not in this family yet), made by a's algorithm: c is
    // let in as soon as the server has the subtask. Until then c gets silence too.
    let ns_c = sandbox("c", run_c).await;
    assert_silence("c before the subtask", tcp_echo(&ns_c, a_tcp));
    let token =
        std::fs::read_to_string(dir.join(format!("node-a/run-{run_a}/token"))).expect("a's token");
    let api = algonet::api::client::Api::new(&fed.api).expect("api");
    let algorithm = Session::new(api, token.trim().to_string());
    let input = algonet::api::codec::encode_json(&json!({"method": "child", "window_secs": 300}));
    let made = Instant::now();
    let _: Value = algorithm
        .post(
            "/task",
            &json!({"name": "more", "image": algonet::docker::images::ECHO_IMAGE,
                    "organizations": [{"id": orgs[2], "input": input}]}),
        )
        .await
        .expect("subtask on c");
    let admitted = loop {
        let attempt = ns_c
            .run(move || async move {
                TcpStream::connect_timeout(&a_tcp.into(), Duration::from_millis(100))
            })
            .expect("ns");
        if attempt.is_ok() {
            break made.elapsed();
        }
        assert!(
            made.elapsed() < Duration::from_secs(10),
            "c was never let in"
        );
    };
    eprintln!("node c reached a's algorithm {admitted:?} after the subtask was made");
    assert!(
        admitted < Duration::from_secs(1),
        "c let in after {admitted:?}"
    );

    // Down: nothing left, the host firewall untouched.
    let errors = fed.down().await;
    assert!(errors.is_empty(), "{errors:?}");
    for org in ["a", "b", "c", "d"] {
        common::assert_nothing_left(&docker, &[&format!("node:{tag}-{org}")]).await;
    }
    assert_eq!(
        common::firewall(),
        firewall_before,
        "the host firewall changed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
