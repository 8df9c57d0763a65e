//! Docker tier: a real vantage6 algorithm over the VPN, with vantage6's own tools on both ends.
//! vpn-average (`algorithms/vpn-average`, written with `vantage6-algorithm-tools` 4.14.0 as
//! vantage6's documentation shows) in an image built offline from this host's Python and the
//! packages pip fetched from PyPI; three organizations as the demo builds them; the task started
//! and its result read by vantage6's own `UserClient`. The central function creates its
//! partials with `client.task.create`, finds them with `client.vpn.get_child_addresses()`, talks
//! to each over TCP directly through the VPN, and collects them with `wait_for_results`.

use algonet_testkit as common;

use std::collections::BTreeSet;

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vantage6_algorithm_talks_over_the_vpn() {
    let Some(docker) = common::docker("a_vantage6_algorithm_talks_over_the_vpn").await else {
        return;
    };
    let Some(python) = common::venv_python("ALGONET_V6_PYTHON") else {
        return;
    };
    let firewall_before = common::firewall();
    let mut fed = common::vpn_average_federation(
        &docker,
        &python,
        env!("CARGO_BIN_EXE_algonet"),
        "tv6",
        false,
        algonet::server::pki::TunnelKind::OpenVpn,
        None,
    )
    .await;
    let orgs: Vec<i64> = fed.nodes.iter().map(|n| n.organization_id.0).collect();
    let answer = common::vpn_average_answer(&python, &fed, &[]);
    let leftovers = fed.down().await;
    assert!(leftovers.is_empty(), "teardown left {leftovers:?}");
    let answer = answer.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("vpn-average answered: {answer}");
    assert_eq!(answer["status"], json!("completed"), "{answer}");
    let result = &answer["results"][0];
    // Each organization's demo data, read by its partial with @data(1): the average over all
    // of them, from what crossed the VPN.
    let ages: Vec<i64> = (0..orgs.len()).flat_map(algonet::demo::demo_ages).collect();
    let average = ages.iter().sum::<i64>() as f64 / ages.len() as f64;
    assert_eq!(result["average"], json!(average), "{answer}");
    let over_vpn: BTreeSet<i64> = result["over_vpn"]
        .as_object()
        .expect("what each partial answered over the VPN")
        .keys()
        .map(|k| k.parse().expect("organization id"))
        .collect();
    assert_eq!(over_vpn, orgs.iter().copied().collect(), "{answer}");
    // Each partial's own result, collected with wait_for_results: it served the central once.
    let served: BTreeSet<(i64, i64)> = result["subtask_results"]
        .as_array()
        .expect("the partials' results")
        .iter()
        .map(|r| {
            (
                r["organization_id"].as_i64().expect("org"),
                r["served"].as_i64().expect("served"),
            )
        })
        .collect();
    assert_eq!(served, orgs.iter().map(|&o| (o, 1)).collect(), "{answer}");
    for owner in [
        "node:tv6-amsterdam",
        "node:tv6-berlin",
        "node:tv6-copenhagen",
    ] {
        assert!(
            docker.owned_by(owner).await.expect("list").is_empty(),
            "{owner} left containers"
        );
    }
    assert_eq!(
        common::firewall(),
        firewall_before,
        "the host firewall changed"
    );
    // Its folder (logs, database, PKI) stays only when the test fails.
    let _ = std::fs::remove_dir_all(&fed.options.dir);
}
