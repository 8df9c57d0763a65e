//! Docker tier: an algonet node on vantage6's own server (`vantage6-server` 4.15.2 from PyPI,
//! run on the host). The node logs in as vantage6's node does, finds its run by polling
//! vantage6's `GET /run`, takes it, runs data-summary (vantage6's tools, `@data(1)`) on its
//! own CSV and reports the result, which vantage6's own `UserClient` reads; a run the user
//! kills is stopped on the node. vantage6's server hands out no VPN profile without eduVPN: the
//! node runs without VPN, and says so.

use algonet_testkit as common;

use std::time::{Duration, Instant};

use serde_json::json;

const IMAGE: &str = "algonet/data-summary:test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_algonet_node_computes_for_vantage6s_own_server() {
    let Some((docker, [python, server_python])) = common::docker_and_venvs(
        "an_algonet_node_computes_for_vantage6s_own_server",
        ["ALGONET_V6_PYTHON", "ALGONET_V6_SERVER_PYTHON"],
    )
    .await
    else {
        return;
    };
    let bin = env!("CARGO_BIN_EXE_algonet");
    common::node_images_and_data_summary(&docker, bin, IMAGE).await;

    let v6 = common::vantage6::start(&server_python, "node").await;
    let http = reqwest::Client::new();
    let login = common::call(
        &http,
        "POST",
        &format!("{}/token/user", v6.base),
        None,
        json!({"username": "root", "password": "root"}),
    )
    .await;
    let admin = login["access_token"].as_str().expect("token").to_string();
    let org = common::call(
        &http,
        "POST",
        &format!("{}/organization", v6.base),
        Some(&admin),
        json!({"name": "amsterdam"}),
    )
    .await["id"]
        .clone();
    // vantage6 lets a user create tasks only in a collaboration of its own organization (1).
    let col = common::call(
        &http,
        "POST",
        &format!("{}/collaboration", v6.base),
        Some(&admin),
        json!({"name": "mixed", "organization_ids": [1, org], "encrypted": false}),
    )
    .await["id"]
        .clone();
    let node = common::call(
        &http,
        "POST",
        &format!("{}/node", v6.base),
        Some(&admin),
        json!({"organization_id": org, "collaboration_id": col}),
    )
    .await;

    let dir = v6.dir.join("node");
    std::fs::create_dir_all(&dir).expect("node dir");
    let ages = [23, 35, 41, 29, 52];
    let csv: String = std::iter::once("id,age\n".to_string())
        .chain(ages.iter().enumerate().map(|(i, a)| format!("{i},{a}\n")))
        .collect();
    std::fs::write(dir.join("people.csv"), csv).expect("csv");
    let config = dir.join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "name: tv6s-amsterdam\nserver_url: http://127.0.0.1:{port}\napi_key: {key}\n\
             task_dir: {dir}/tasks\nmetrics_listen: null\n\
             databases:\n  - {{label: default, uri: {dir}/people.csv, type: csv}}\n",
            port = v6.port,
            key = node["api_key"].as_str().expect("api key"),
            dir = dir.display(),
        ),
    )
    .expect("node.yaml");
    let log_path = dir.join("node.log");
    let log_file = std::fs::File::create(&log_path).expect("log");
    let node = common::NodeProcess(
        std::process::Command::new(bin)
            .args(["node", "--config"])
            .arg(&config)
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("algonet node"),
    );

    let col = col.as_i64().expect("collaboration");
    let org = org.to_string();
    let started = Instant::now();
    let step =
        |args: &[&str]| common::user_step(&python, &v6.base, ("root", "root"), col, IMAGE, args);
    let answer = step(&["summary", &org]);
    eprintln!("task done in {:.1}s", started.elapsed().as_secs_f64());
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(
        answer["statuses"][&org],
        json!("completed"),
        "{answer}\n{}",
        log()
    );
    assert_eq!(
        answer["results"][&org]["rows"],
        json!(ages.len()),
        "{answer}"
    );
    assert_eq!(
        answer["results"][&org]["sum"],
        json!(ages.iter().sum::<i64>() as f64),
        "{answer}"
    );

    // vantage6 marks a killed run finished: it leaves the open runs the node follows, and the
    // node stops its container.
    let waiting = step(&["wait", &org]);
    let task = waiting["task"].as_i64().expect("task").to_string();
    let owner = "node:tv6s-amsterdam";
    let runs = || async {
        let owned = docker.owned_by(owner).await.expect("containers");
        owned
            .into_iter()
            .filter_map(|c| c.names?.into_iter().next())
            .filter(|n| n.contains("-run-"))
            .collect::<Vec<_>>()
    };
    assert!(!runs().await.is_empty(), "the run's containers");
    let killed = step(&["kill", &task]);
    assert_eq!(killed["statuses"], json!(["killed by user"]), "{killed}");
    let end = Instant::now() + Duration::from_secs(30);
    while !runs().await.is_empty() {
        assert!(
            Instant::now() < end,
            "the killed run still runs:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(log().contains("the server ended this run"), "{}", log());

    drop(node);
    let log = log();
    assert!(log.contains("the server is vantage6's own"), "{log}");
    common::assert_nothing_left(&docker, &["node:tv6s-amsterdam"]).await;
}
