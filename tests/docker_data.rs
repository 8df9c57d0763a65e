//! Docker tier: algorithms compute on a node's own data. An algorithm written with vantage6's
//! own tools (`algorithms/data-summary`: `@data(1)` from `vantage6-algorithm-tools` 4.14.0),
//! packaged offline by `algonet images build --algorithm`, reads a CSV file, a Parquet file and
//! an SQLite database with a query as the node's `databases` give them; tasks are sent, read and
//! killed by vantage6's own `UserClient`. The run cannot write its data, sees only the databases
//! its task asked for and only their parameters, and no other run's folder; a task asking for a
//! database the node lacks fails saying so; an image the policies refuse ends `not allowed`
//! without a container; a killed run ends `killed by user` with nothing of it left.

use algonet_testkit as common;

use std::time::Instant;

use algonet::demo::{Federation, Options};
use algonet::server::pki::TunnelKind;
use serde_json::{json, Value};

const IMAGE: &str = "algonet/data-summary:test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithms_compute_on_the_nodes_data() {
    let Some(docker) = common::docker("algorithms_compute_on_the_nodes_data").await else {
        return;
    };
    let Some(python) = common::venv_python("ALGONET_V6_PYTHON") else {
        return;
    };
    let bin = env!("CARGO_BIN_EXE_algonet");
    common::build_data_summary(bin, IMAGE);
    // The node's data: the same people as CSV, Parquet and SQLite, written with the pandas
    // the algorithm reads them with (the algorithm's own venv, which has pyarrow).
    let dir = std::env::temp_dir().join(format!("algonet-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let ages = [23, 35, 41, 29, 52, 38, 61, 19];
    let csv: String = std::iter::once("id,age\n".to_string())
        .chain(ages.iter().enumerate().map(|(i, a)| format!("{i},{a}\n")))
        .collect();
    std::fs::write(dir.join("people.csv"), &csv).expect("csv");
    let venv = algonet_venv_python();
    let made = std::process::Command::new(&venv)
        .arg("-c")
        .arg(
            "import sys, sqlite3, pandas as pd\n\
             df = pd.read_csv(sys.argv[1] + '/people.csv')\n\
             df.to_parquet(sys.argv[1] + '/people.parquet')\n\
             with sqlite3.connect(sys.argv[1] + '/people.sqlite') as c:\n\
             \x20   df.to_sql('people', c, index=False)\n",
        )
        .arg(&dir)
        .output()
        .expect("write the data");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let node_settings = format!(
        "databases:\n\
         \x20 - {{label: default, uri: {d}/people.csv, type: csv, env: {{user: ann}}}}\n\
         \x20 - {{label: parq, uri: {d}/people.parquet, type: parquet}}\n\
         \x20 - {{label: lite, uri: {d}/people.sqlite, type: sql, env: {{password: hunter2}}}}\n\
         policies:\n\
         \x20 allowed_algorithms: ['^algonet/data-summary:.*', algonet/echo]\n",
        d = dir.display()
    );
    let port = common::federation_port();
    let mut fed = Federation::up(
        Options {
            dir: dir.join("federation"),
            tag: "tdata".into(),
            organizations: vec!["amsterdam".into()],
            server_port: port,
            tunnel: TunnelKind::OpenVpn,
            network: algonet::demo::DEMO_NETWORK,
            node_settings,
            server_vpn: None,
            algonet: bin.into(),
            encrypted: false,
        },
        Instant::now(),
    )
    .await
    .expect("federation up");
    let out = common::user_client_script(
        &python,
        "data_tasks.py",
        port,
        fed.collaboration,
        fed.nodes[0].organization_id,
        IMAGE,
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answers: std::collections::BTreeMap<String, Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| (v["name"].as_str().unwrap_or("?").to_string(), v))
        .collect();
    // The killed run gives back what it held: its containers (the hub and the VPN client
    // stay) and its port records at the server.
    let until = Instant::now() + std::time::Duration::from_secs(15);
    let mut left = usize::MAX;
    while Instant::now() < until {
        left = docker
            .owned_by("node:tdata-amsterdam")
            .await
            .unwrap_or_default()
            .len();
        if left == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let killed_task = answers
        .get("kill")
        .map_or(0, |k| k["id"].as_i64().unwrap_or(0));
    let admin = fed.admin().await.expect("admin");
    let killed_runs: Value = admin
        .get(&format!("/run?task_id={killed_task}"))
        .await
        .expect("runs");
    let log = std::fs::read_to_string(&fed.nodes[0].log).unwrap_or_default();
    let leftovers = fed.down().await;
    assert!(leftovers.is_empty(), "teardown left {leftovers:?}");
    let context = || {
        format!(
            "{stdout}\n{}\nnode log:\n{log}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert_eq!(answers.len(), 7, "{}", context());
    let sum: i64 = ages.iter().sum();
    let over_30: Vec<i64> = ages.iter().copied().filter(|a| *a > 30).collect();
    for (name, rows, total) in [
        ("csv", ages.len(), sum),
        ("parquet", ages.len(), sum),
        ("sqlite", over_30.len(), over_30.iter().sum()),
    ] {
        let a = &answers[name];
        assert_eq!(
            a["status"],
            json!("completed"),
            "{name}: {a}\n{}",
            context()
        );
        assert_eq!(a["result"]["rows"], json!(rows), "{name}: {a}");
        assert_eq!(a["result"]["sum"], json!(total as f64), "{name}: {a}");
    }
    let probe = &answers["probe"]["result"];
    assert_eq!(probe["writable"], json!(false), "{probe}");
    assert_eq!(probe["removable"], json!(false), "{probe}");
    assert_eq!(probe["db_labels"], json!("default"), "{probe}");
    assert_eq!(probe["params"], json!(["DEFAULT_DB_PARAM_USER"]), "{probe}");
    assert_eq!(probe["mounts"], json!(["algonet", "data"]), "{probe}");
    assert_eq!(
        probe["algonet"],
        json!(["input", "output", "tmp", "token"]),
        "{probe}"
    );
    let absent = &answers["absent"];
    assert_eq!(absent["status"], json!("failed"), "{absent}");
    assert!(
        absent["log"]
            .as_str()
            .is_some_and(|l| l.contains("\"nowhere\"")),
        "{absent}"
    );
    let forbidden = &answers["forbidden"];
    assert_eq!(forbidden["status"], json!("not allowed"), "{forbidden}");
    assert!(
        forbidden["log"]
            .as_str()
            .is_some_and(|l| l.contains("policies.allowed_algorithms")),
        "{forbidden}"
    );
    assert!(log.contains("policies.allowed_algorithms"), "{log}");
    let kill = &answers["kill"];
    assert_eq!(kill["status"], json!("killed by user"), "{kill}");
    assert!(kill["seconds"].as_f64().is_some_and(|s| s < 5.0), "{kill}");
    assert!(log.contains("the server ended this run"), "{log}");
    assert_eq!(
        killed_runs["data"][0]["ports"],
        json!([]),
        "the killed run's ports: {killed_runs}"
    );
    assert_eq!(
        left, 2,
        "only the hub and the VPN client were left running:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The interpreter of the venv `algonet images build --algorithm` made for data-summary.
fn algonet_venv_python() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("algorithms/data-summary")
        .canonicalize()
        .expect("algorithm folder");
    algonet::docker::python::venv_for(&dir).join("bin/python")
}
