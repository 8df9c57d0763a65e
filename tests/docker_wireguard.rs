//! Docker tier: the demo federation on WireGuard (`algonet demo --tunnel wireguard`). The server
//! process is the hub, each node's tunnel runs in the node's own process: no VPN container
//! anywhere. The VPN feature test reaches every organization; vpn-average (vantage6's own
//! tools, sent and read by vantage6's own `UserClient`) computes over the tunnel; each node shows
//! its handshake with the hub; the nodes, on one Docker network, reach each other directly and
//! the hub relays next to nothing; no private key leaves its node. The hub restarted (the server
//! stopped and started on its database) and a node killed and started again: the tunnels and
//! the direct paths come back by themselves and the feature test passes again. Nothing is left
//! behind.

use algonet_testkit as common;

use std::time::{Duration, Instant};

use algonet::server::pki::TunnelKind;
use serde_json::{json, Value};

/// Whether `ready` holds within `timeout` (asked every half second).
async fn within(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if ready() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_federation_on_wireguard_computes_over_the_vpn() {
    let Some(docker) = common::docker("the_federation_on_wireguard_computes_over_the_vpn").await
    else {
        return;
    };
    let Some(python) = common::venv_python("ALGONET_V6_PYTHON") else {
        return;
    };
    let bin = env!("CARGO_BIN_EXE_algonet");
    let firewall_before = common::firewall();
    let mut fed = common::vpn_average_federation(
        &docker,
        &python,
        bin,
        "twg",
        false,
        TunnelKind::WireGuard,
        None,
    )
    .await;
    assert_eq!(fed.vpn_server, None, "no OpenVPN server on WireGuard");
    let vpn_containers = common::vpn_containers(&docker, &fed).await;
    let rows = fed.feature_test(None).await;
    let answer = common::vpn_average_answer(&python, &fed, &[]);
    // The nodes share a Docker network: each reaches the other two directly.
    let direct = |fed: &algonet::demo::Federation| {
        fed.nodes.iter().all(|n| {
            common::try_node_status(bin, &n.config).is_ok_and(|s| {
                let w = &s["vpn"]["wireguard"];
                w["direct"] == json!(2) && w["peers"] == json!(2)
            })
        })
    };
    let all_direct = within(Duration::from_secs(30), || direct(&fed)).await;
    let statuses: Vec<_> = fed
        .nodes
        .iter()
        .map(|n| common::node_status(bin, &n.config))
        .collect();
    let handshakes = |s: &Value| s["vpn"]["wireguard"]["handshakes"].as_u64().unwrap_or(0);
    let before: Vec<u64> = statuses.iter().map(handshakes).collect();
    fed.stop_server();
    fed.start_server().expect("the server again");
    fed.admin_when_up(Duration::from_secs(30))
        .await
        .expect("the server answers again");
    // The restarted hub knows the nodes' keys and where each was last heard from (its
    // database), not their sessions: it shakes hands with each at its first keepalive (25 s),
    // not waiting for the node's next rekey (up to two minutes).
    let restarted = Instant::now();
    for (i, n) in fed.nodes.iter().enumerate() {
        let shook = within(Duration::from_secs(60), || {
            common::try_node_status(bin, &n.config).is_ok_and(|s| handshakes(&s) > before[i])
        })
        .await;
        assert!(
            shook,
            "{}: no new handshake with the restarted hub",
            n.organization
        );
    }
    eprintln!(
        "every node shook hands with the restarted hub within {:.0} s",
        restarted.elapsed().as_secs_f64()
    );
    let after_hub_restart = fed.feature_test(None).await;
    let hub_metrics = reqwest::get(format!(
        "http://127.0.0.1:{}/metrics",
        fed.options.server_port + 10
    ))
    .await
    .expect("scrape the restarted server")
    .text()
    .await
    .expect("metrics");

    let killed = fed.nodes[1].child.as_mut().expect("node b");
    killed.kill().expect("kill -9");
    killed.wait().expect("reaped");
    fed.start_node(1).expect("node b again");
    let back = within(Duration::from_secs(90), || {
        common::try_node_status(bin, &fed.nodes[1].config)
            .is_ok_and(|s| s["vpn"]["state"] == "CONNECTED" && handshakes(&s) >= 1)
    })
    .await;
    let direct_again = within(Duration::from_secs(60), || direct(&fed)).await;
    let after_node_restart = fed.feature_test(None).await;

    let dir = fed.options.dir.clone();
    let hub = format!("{}:{}", fed.options.host_ip(), fed.options.server_port);
    let owners: Vec<String> = fed
        .nodes
        .iter()
        .map(|n| format!("node:twg-{}", n.organization))
        .collect();
    let leftovers = fed.down().await;
    assert!(leftovers.is_empty(), "teardown left {leftovers:?}");

    assert_eq!(
        vpn_containers,
        vec![None; 3],
        "a node started a VPN container"
    );
    common::assert_feature_ok(rows, "at first");
    common::assert_feature_ok(after_hub_restart, "after the hub restarted");
    assert!(back, "the restarted node's tunnel did not come back");
    assert!(
        all_direct,
        "the nodes did not all reach each other directly"
    );
    assert!(
        direct_again,
        "the nodes did not all reach each other directly after node b's restart"
    );
    common::assert_feature_ok(
        after_node_restart,
        "after node b was killed and started again",
    );

    common::assert_demo_average(answer);

    // Each node: connected through its own WireGuard device, handshake with the hub recent,
    // traffic both ways, the router forwarding what came from the tunnel.
    for s in &statuses {
        common::assert_wireguard_status(s, &hub);
    }

    // The restarted hub, every path direct, relayed next to nothing of the feature test's
    // traffic (its probes and streams went node to node).
    let forwarded = hub_metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("algonet_server_wireguard_forwarded_packets_total")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("the hub's count in\n{hub_metrics}"));
    assert!(forwarded < 100, "{hub_metrics}");

    // Each node's private key stays in its folder (0600); neither the server's database nor
    // any log holds one.
    let mut everything = std::fs::read(dir.join("server/algonet.sqlite")).expect("database");
    everything.extend(std::fs::read(dir.join("server/algonet.sqlite-wal")).unwrap_or_default());
    for entry in std::fs::read_dir(&dir)
        .expect("the federation's folder")
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "log") {
            everything.extend(std::fs::read(entry.path()).expect("log"));
        }
    }
    for n in &statuses {
        let name = n["node"].as_str().expect("node name");
        let organization = name.trim_start_matches("twg-");
        let key = dir.join(format!("node-{organization}/vpn/wireguard.key"));
        let meta = std::fs::metadata(&key).expect("the node's key");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        let secret = std::fs::read_to_string(&key).expect("key");
        let secret = secret.trim().as_bytes();
        assert!(
            !everything.windows(secret.len()).any(|w| w == secret),
            "{name}'s private key is outside its folder"
        );
    }

    let owners: Vec<&str> = owners.iter().map(String::as_str).collect();
    common::assert_nothing_left(&docker, &owners).await;
    assert_eq!(
        common::firewall(),
        firewall_before,
        "the host firewall changed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
