//! Docker tier: `algonet demo` itself, as a newcomer runs it: three organizations, the feature
//! test across all of them (each node's own included); kept running, a second demo refused
//! without touching it, the nodes asked for their status, `algonet demo stop`, nothing left.

use algonet_testkit as common;

use std::process::{Command, Output};

fn algonet(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_algonet"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run algonet");
    eprintln!(
        "algonet {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Stops the kept demo also when the test fails half-way.
struct Kept;

impl Drop for Kept {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_algonet"))
            .args(["demo", "stop"])
            .output();
    }
}

/// Each organization's row says both probes got through.
fn assert_every_row_ok(stdout: &str) {
    for org in ["amsterdam", "berlin", "copenhagen"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(org))
            .unwrap_or_else(|| panic!("no row for {org}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        // organization, address, tcp port, udp port, tcp ok, udp ok, RTT, up and down Mbit/s
        assert!(cols[1].starts_with("10.76."), "{row}");
        assert_eq!((cols[4], cols[5]), ("yes", "yes"), "{row}");
        for rate in &cols[7..9] {
            let rate: f64 = rate.parse().unwrap_or_else(|_| panic!("a rate: {row}"));
            assert!(rate > 0.0, "{row}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reaches_every_organization_and_leaves_nothing() {
    let Some(docker) = common::docker("demo").await else {
        return;
    };
    let owners = [
        "demo",
        "node:demo-amsterdam",
        "node:demo-berlin",
        "node:demo-copenhagen",
    ];
    let firewall_before = common::firewall();
    let started = std::time::Instant::now();
    let out = algonet(&["demo", "--keep"], &[]);
    let _kept = Kept;
    eprintln!("demo took {:.1}s", started.elapsed().as_secs_f64());
    assert!(out.status.success(), "demo failed");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_every_row_ok(&stdout);
    assert!(stdout.contains("algonet demo stop"), "{stdout}");

    // The printed command works as printed: the server URL is one --server takes.
    let again = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Another test:"))
        .expect("the command for another test")
        .trim()
        .to_string();
    let (var, command) = again.split_once(' ').expect("VAR=value algonet test ...");
    let (name, value) = var.split_once('=').expect("VAR=value");
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let test = algonet(&args, &[(name, value)]);
    assert!(test.status.success(), "{again}");
    assert_every_row_ok(&String::from_utf8_lossy(&test.stdout));

    // A node's own view, over its status socket.
    let config = std::env::temp_dir().join("algonet-demo/node-amsterdam.yaml");
    let status = algonet(
        &[
            "node",
            "status",
            "--json",
            "--config",
            &config.to_string_lossy(),
        ],
        &[],
    );
    assert!(status.status.success());
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(s["vpn"]["state"], "CONNECTED", "{s}");
    assert!(
        s["router"]["forwarded_packets_from_vpn"].as_u64() > Some(0),
        "{s}"
    );

    // A second demo while this one is kept: refused, and the kept one untouched.
    let database = std::env::temp_dir().join("algonet-demo/server/algonet.sqlite");
    let second = algonet(&["demo"], &[]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("algonet demo stop"),
        "the refusal says how to stop the kept demo"
    );
    assert!(database.exists(), "the kept demo's database was removed");
    assert_eq!(
        docker
            .running("algonet-demo-openvpn-server")
            .await
            .expect("inspect"),
        Some(true),
        "the kept demo's OpenVPN server"
    );

    // One command ends it, nodes first.
    let stop = algonet(&["demo", "stop"], &[]);
    assert!(stop.status.success());
    let said = String::from_utf8_lossy(&stop.stdout).to_string();
    let order: Vec<usize> = [
        "stopped amsterdam",
        "stopped server",
        "removed algonet-demo-net",
    ]
    .iter()
    .map(|w| said.find(w).unwrap_or_else(|| panic!("{w:?} in {said}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{said}");
    let twice = algonet(&["demo", "stop"], &[]);
    assert!(twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stdout).contains("no kept demo"));
    common::assert_nothing_left(&docker, &owners).await;
    assert_eq!(
        common::firewall(),
        firewall_before,
        "the host firewall changed"
    );
}
