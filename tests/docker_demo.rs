//! Docker tier: `algonet demo` itself, as a newcomer runs it: three organizations, the feature
//! test across all of them (each node's own included), everything torn down.

use algonet_testkit as common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reaches_every_organization_and_leaves_nothing() {
    let Some(docker) = common::docker("demo").await else {
        return;
    };
    let firewall_before = common::firewall();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_algonet"))
        .arg("demo")
        .output()
        .expect("run algonet demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{stderr}\n{stdout}\ndemo took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "demo failed");
    for org in ["amsterdam", "berlin", "copenhagen"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(org))
            .unwrap_or_else(|| panic!("no row for {org}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        // organization, address, tcp port, udp port, tcp ok, udp ok, RTT, Mbit/s
        assert!(cols[1].starts_with("10.76."), "{row}");
        assert_eq!((cols[4], cols[5]), ("yes", "yes"), "{row}");
    }
    common::assert_nothing_left(
        &docker,
        &[
            "demo",
            "node:demo-amsterdam",
            "node:demo-berlin",
            "node:demo-copenhagen",
        ],
    )
    .await;
    assert_eq!(
        common::firewall(),
        firewall_before,
        "the host firewall changed"
    );
}
