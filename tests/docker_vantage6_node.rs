//! Docker tier: a mixed federation on an algonet server. vantage6's own node (4.14.0 from PyPI,
//! started with vantage6's `v6 node start`, see `testkit::vantage6_node`) and an algonet node
//! serve one collaboration; vantage6's `UserClient` runs data-summary (`@data(1)`) on both
//! nodes' CSVs and reads both results, kills a run on vantage6's node (which hears of it through
//! socket.io and stops the container), and lists as online only the nodes that run.
//! vantage6's VPN needs its own images, which cannot be pulled here: both nodes run without VPN.

use algonet_testkit as common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::server::server_on;
use common::vantage6_node;
use serde_json::{json, Value};

/// data-summary under a name whose registry is a closed port on loopback: vantage6's node tries
/// to pull every algorithm, and uses the local image when that fails and its policy
/// `require_algorithm_pull` is off (an offline site's setting).
const IMAGE: &str = "localhost:1/algonet/data-summary:mixed";

/// A Docker network of the test's own, removed when dropped.
struct Network(String);

impl Network {
    fn create(name: &str) -> (Network, String) {
        let made = Command::new("docker")
            .args(["network", "create", "--internal", name])
            .output()
            .expect("docker");
        assert!(made.status.success(), "{made:?}");
        let gateway = Command::new("docker")
            .args([
                "network",
                "inspect",
                "-f",
                "{{(index .IPAM.Config 0).Gateway}}",
                name,
            ])
            .output()
            .expect("docker");
        let gateway = String::from_utf8_lossy(&gateway.stdout).trim().to_string();
        assert!(!gateway.is_empty(), "no gateway on {name}");
        (Network(name.to_string()), gateway)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

/// A step of `tests/python/user_steps.py` (vantage6's `UserClient`) as algonet's administrator.
fn step(python: &str, base: &str, collab: i64, args: &[&str]) -> Value {
    common::user_step(
        python,
        base,
        ("root", "correct-horse-battery"),
        collab,
        IMAGE,
        args,
    )
}

fn csv(dir: &std::path::Path, name: &str, ages: &[i64]) -> std::path::PathBuf {
    let path = dir.join(name);
    let text: String = std::iter::once("id,age\n".to_string())
        .chain(ages.iter().enumerate().map(|(i, a)| format!("{i},{a}\n")))
        .collect();
    std::fs::write(&path, text).expect("csv");
    path
}

fn running(prefix: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("name={prefix}"),
        ])
        .output()
        .expect("docker");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vantage6s_own_node_computes_beside_an_algonet_node() {
    let Some((docker, [python, node_python])) = common::docker_and_venvs(
        "vantage6s_own_node_computes_beside_an_algonet_node",
        ["ALGONET_V6_PYTHON", "ALGONET_V6_NODE_PYTHON"],
    )
    .await
    else {
        return;
    };
    let bin = env!("CARGO_BIN_EXE_algonet");
    let started = Instant::now();
    common::node_images_and_data_summary(&docker, bin, IMAGE).await;
    vantage6_node::build_image(&docker, &node_python).await;
    eprintln!("images built in {:.1}s", started.elapsed().as_secs_f64());

    // vantage6's node runs in a container: the server listens on a network of the test's own.
    let (network, gateway) = Network::create(&format!("algonet-mixed-{}", std::process::id()));
    let s = server_on("mixed", &format!("{gateway}:0"), "").await;
    let port = s
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .expect("port");
    let admin = s.admin().await;
    let mut orgs = Vec::new();
    for name in ["amsterdam", "berlin", "copenhagen"] {
        let o = s
            .ok("POST", "/organization", Some(&admin), json!({"name": name}))
            .await;
        orgs.push(o["id"].as_i64().expect("id"));
    }
    let col = json!({"name": "mixed", "organization_ids": orgs});
    let collab = s.ok("POST", "/collaboration", Some(&admin), col).await["id"]
        .as_i64()
        .expect("id");
    let mut keys = Vec::new();
    for org in &orgs {
        let body = json!({"organization_id": org, "collaboration_id": collab});
        keys.push(s.ok("POST", "/node", Some(&admin), body).await["api_key"].clone());
    }

    let dir = s.dir.join("nodes");
    std::fs::create_dir_all(&dir).expect("nodes dir");
    let amsterdam_ages = [23, 35, 41];
    let berlin_ages = [50, 60, 70, 80];
    let amsterdam_csv = csv(&dir, "amsterdam.csv", &amsterdam_ages);
    let berlin_csv = csv(&dir, "berlin.csv", &berlin_ages);

    let config = dir.join("amsterdam.yaml");
    std::fs::write(
        &config,
        format!(
            "name: tmix-amsterdam\nserver_url: http://{gateway}:{port}\napi_key: {key}\n\
             task_dir: {dir}/tasks\nmetrics_listen: null\n\
             databases:\n  - {{label: default, uri: {csv}, type: csv}}\n",
            key = keys[0].as_str().expect("key"),
            dir = dir.display(),
            csv = amsterdam_csv.display(),
        ),
    )
    .expect("node.yaml");
    let log_path = dir.join("amsterdam.log");
    let log_file = std::fs::File::create(&log_path).expect("log");
    let amsterdam = common::NodeProcess(
        Command::new(bin)
            .args(["node", "--config"])
            .arg(&config)
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("algonet node"),
    );

    let berlin = vantage6_node::start(
        &node_python,
        "tmixberlin",
        &format!(
            "api_key: {key}\nserver_url: http://{gateway}\nport: {port}\napi_path: /api\n\
             task_dir: {dir}/berlin-tasks\n\
             databases:\n  - {{label: default, uri: {csv}, type: csv}}\n\
             encryption: {{enabled: false}}\n\
             policies: {{require_algorithm_pull: false}}\n\
             logging:\n  level: INFO\n  use_console: true\n  backup_count: 1\n  max_size: 1024\n\
             \x20 format: \"%(asctime)s %(name)s %(levelname)s %(message)s\"\n\
             \x20 datefmt: \"%H:%M:%S\"\n",
            key = keys[1].as_str().expect("key"),
            dir = dir.display(),
            csv = berlin_csv.display(),
        ),
    );
    let connected = Command::new("docker")
        .args(["network", "connect", &network.0, &berlin.container()])
        .output()
        .expect("docker");
    assert!(connected.status.success(), "{connected:?}");

    let ready = Instant::now();
    let berlin_id = orgs[1];
    loop {
        let nodes = s
            .ok(
                "GET",
                &format!("/node?organization_id={berlin_id}"),
                Some(&admin),
                json!(null),
            )
            .await;
        if nodes["data"][0]["status"] == "online" {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(120),
            "vantage6's node did not come online:\n{}",
            berlin.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "vantage6's node online in {:.1}s",
        ready.elapsed().as_secs_f64()
    );

    let amsterdam_org = orgs[0].to_string();
    let berlin_org = orgs[1].to_string();
    let both = step(
        &python,
        &s.base,
        collab,
        &["summary", &amsterdam_org, &berlin_org],
    );
    let node_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    for (org, ages) in [
        (&amsterdam_org, &amsterdam_ages[..]),
        (&berlin_org, &berlin_ages[..]),
    ] {
        assert_eq!(
            both["statuses"][org],
            "completed",
            "{both}\n{}\n{}",
            node_log(),
            berlin.log()
        );
        assert_eq!(both["results"][org]["rows"], json!(ages.len()), "{both}");
        assert_eq!(
            both["results"][org]["sum"],
            json!(ages.iter().sum::<i64>() as f64),
            "{both}"
        );
    }

    let online = step(&python, &s.base, collab, &["online"]);
    let names = |key: &str| -> Vec<String> {
        online[key]
            .as_array()
            .expect("names")
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    };
    assert!(
        names("online").iter().any(|n| n.contains("amsterdam")),
        "{online}"
    );
    assert!(
        names("online").iter().any(|n| n.contains("berlin")),
        "{online}"
    );
    assert!(
        names("offline").iter().any(|n| n.contains("copenhagen")),
        "{online}"
    );

    // A kill reaches vantage6's node: through socket.io, it stops its algorithm's container.
    let waiting = step(&python, &s.base, collab, &["wait", &berlin_org]);
    let task = waiting["task"].as_i64().expect("task").to_string();
    let prefix = "vantage6-tmixberlin-run-";
    assert!(
        !running(prefix).is_empty(),
        "no algorithm running:\n{}",
        berlin.log()
    );
    let killed = step(&python, &s.base, collab, &["kill", &task]);
    assert_eq!(killed["statuses"], json!(["killed by user"]), "{killed}");
    let end = Instant::now() + Duration::from_secs(30);
    while !running(prefix).is_empty() {
        assert!(
            Instant::now() < end,
            "the killed run's container still runs:\n{}",
            berlin.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        berlin.log().contains("Received instruction to kill task"),
        "{}",
        berlin.log()
    );

    // vantage6's node stops: offline at once; the algonet node stays online.
    let stopped = berlin.stop();
    assert!(stopped.status.success(), "{stopped:?}");
    let online = step(&python, &s.base, collab, &["online"]);
    let listed: Vec<String> = online["online"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    assert_eq!(listed.len(), 1, "{online}");
    assert!(listed[0].contains("amsterdam"), "{online}");

    drop(amsterdam);
    drop(berlin);
    drop(network);
    common::assert_nothing_left(&docker, &["node:tmix-amsterdam"]).await;
    assert!(running("vantage6-tmixberlin").is_empty());
}
