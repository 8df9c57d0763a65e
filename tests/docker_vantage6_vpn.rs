//! Docker tier: the VPN across algonet nodes on vantage6's own server (`vantage6-server`
//! 4.15.2 from PyPI, on the host). vantage6's server hands out VPN profiles from an eduVPN
//! portal; here that is the eduVPN-like portal of `testkit::eduvpn`, whose profiles are for an
//! OpenVPN server container on a Docker network of the test. Two algonet nodes get their
//! profiles through vantage6's own eduVPN connector, connect, register their addresses with
//! vantage6's `PATCH /node` and their ports with its `/port`; `algonet test` then runs the
//! VPN feature test across them, as a user of vantage6's server, and vantage6's `UserClient`
//! runs vpn-average (`@data(1)` on each node's CSV, partials talking over the VPN).

use algonet_testkit as common;

use std::time::{Duration, Instant};

use algonet::docker::images::ImageNames;
use serde_json::{json, Value};

const TAG: &str = "tv6vpn";
const NETWORK_SUBNET: &str = "172.29.78.0/24";
const VPN_SERVER_IP: &str = "172.29.78.10";
const VPN_SUBNET: &str = "10.78.0.0/16";
/// A researcher of amsterdam with vantage6's root role: vantage6 lets a user create tasks only
/// in collaborations of its own organization.
const RESEARCHER: (&str, &str) = ("researcher", "Researcher-pass-1!");

/// The test's network and OpenVPN server, removed when dropped.
struct Vpn {
    docker: algonet::docker::Docker,
    network: String,
    server: String,
}

impl Drop for Vpn {
    fn drop(&mut self) {
        let (docker, network, server) = (
            self.docker.clone(),
            self.network.clone(),
            self.server.clone(),
        );
        // Drop cannot await: the clean-up runs on a runtime of its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let _ = docker.remove(&server).await;
                let _ = docker.remove_network(&network).await;
            });
        })
        .join()
        .expect("clean-up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vpn_feature_test_runs_across_algonet_nodes_on_vantage6s_server() {
    let Some((docker, [python, server_python])) = common::docker_and_venvs(
        "the_vpn_feature_test_runs_across_algonet_nodes_on_vantage6s_server",
        ["ALGONET_V6_PYTHON", "ALGONET_V6_SERVER_PYTHON"],
    )
    .await
    else {
        return;
    };
    let bin = env!("CARGO_BIN_EXE_algonet");
    algonet::docker::images::build(&docker, &ImageNames::default(), std::path::Path::new(bin))
        .await
        .expect("the node's images");
    algonet::docker::python::build_vpn_average(&docker, std::path::Path::new(&python))
        .await
        .expect("vpn-average");

    let portal = common::eduvpn::start(common::eduvpn::PortalOptions {
        tag: TAG.to_string(),
        confidential: false,
        no_profile: false,
        vpn: algonet::server::pki::BuiltinVpn::new(
            VPN_SUBNET,
            VPN_SERVER_IP,
            None,
            algonet::server::pki::TunnelKind::OpenVpn,
        ),
        tls: true,
        wireguard: None,
        proxyguard: false,
    })
    .await;
    let owner = format!("federation:{TAG}");
    let vpn = Vpn {
        docker: docker.clone(),
        network: format!("algonet-{TAG}-net"),
        server: format!("algonet-{TAG}-openvpn-server"),
    };
    docker
        .internal_network(&vpn.network, NETWORK_SUBNET)
        .await
        .expect("network");
    docker
        .run(
            &vpn.server,
            algonet::docker::specs::openvpn_server(
                &ImageNames::default().vpn_client,
                &owner,
                &vpn.network,
                VPN_SERVER_IP.parse().expect("ip"),
                &portal.pki_dir,
            ),
        )
        .await
        .expect("the OpenVPN server");

    let ca = portal.ca_file.as_ref().expect("the portal's CA");
    let v6 = common::vantage6::start_with(
        &server_python,
        "vpn",
        &common::eduvpn::vpn_server(&portal.url, "portal-pass"),
        &[("REQUESTS_CA_BUNDLE", ca.as_os_str())],
    )
    .await;
    let http = reqwest::Client::new();
    let post = |path: &str, token: Option<String>, body: Value| {
        let (http, url) = (http.clone(), format!("{}{path}", v6.base));
        async move { common::call(&http, "POST", &url, token.as_deref(), body).await }
    };
    let login = json!({"username": "root", "password": "root"});
    let root = post("/token/user", None, login).await["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let mut orgs = Vec::new();
    for name in ["amsterdam", "berlin"] {
        let o = post("/organization", Some(root.clone()), json!({"name": name})).await;
        orgs.push(o["id"].as_i64().expect("id"));
    }
    let roles = common::call(
        &http,
        "GET",
        &format!("{}/role?name=Root", v6.base),
        Some(&root),
        json!(null),
    )
    .await;
    let root_role = roles["data"][0]["id"].as_i64().expect("the Root role");
    post(
        "/user",
        Some(root.clone()),
        json!({"username": RESEARCHER.0, "password": RESEARCHER.1,
               "email": "researcher@amsterdam.test", "firstname": "Re", "lastname": "Searcher",
               "organization_id": orgs[0],
               "roles": [root_role]}),
    )
    .await;
    let col = post(
        "/collaboration",
        Some(root.clone()),
        json!({"name": "vpn", "organization_ids": orgs, "encrypted": false}),
    )
    .await["id"]
        .as_i64()
        .expect("collaboration");

    let dir = v6.dir.join("nodes");
    std::fs::create_dir_all(&dir).expect("nodes dir");
    let mut nodes = Vec::new();
    for (i, (org, name)) in orgs.iter().zip(["amsterdam", "berlin"]).enumerate() {
        let csv = dir.join(format!("{name}.csv"));
        let rows: String = algonet::demo::demo_ages(i)
            .iter()
            .enumerate()
            .map(|(j, a)| format!("{j},{a}\n"))
            .collect();
        std::fs::write(&csv, format!("id,age\n{rows}")).expect("csv");
        let node = post(
            "/node",
            Some(root.clone()),
            json!({"organization_id": org, "collaboration_id": col}),
        )
        .await;
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "name: {TAG}-{name}\nserver_url: http://127.0.0.1:{port}\napi_key: {key}\n\
                 task_dir: {dir}/{name}\nmetrics_listen: null\nvpn_subnet: {VPN_SUBNET}\n\
                 wan_network: {network}\n\
                 databases:\n  - {{label: default, uri: {csv}, type: csv}}\n",
                port = v6.port,
                key = node["api_key"].as_str().expect("api key"),
                dir = dir.display(),
                network = vpn.network,
                csv = csv.display(),
            ),
        )
        .expect("node.yaml");
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
        nodes.push(common::NodeProcess(
            std::process::Command::new(bin)
                .args(["node", "--config"])
                .arg(&config)
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("algonet node"),
        ));
    }
    let logs = || {
        ["amsterdam", "berlin"]
            .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default())
            .join("\n---\n")
    };

    // Both nodes connect through profiles vantage6's server got from the portal, and register
    // their addresses with it.
    let started = Instant::now();
    loop {
        let listed = common::call(
            &http,
            "GET",
            &format!("{}/node?collaboration_id={col}", v6.base),
            Some(&root),
            json!(null),
        )
        .await;
        let ips: Vec<&str> = listed["data"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["ip"].as_str())
            .filter(|ip| ip.starts_with("10.78."))
            .collect();
        if ips.len() == 2 {
            eprintln!(
                "both nodes on the VPN in {:.1}s: {ips:?}",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the nodes did not register VPN addresses: {listed}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let out = std::process::Command::new(bin)
        .args([
            "test",
            "--server",
            &format!("http://127.0.0.1:{}", v6.port),
            "--collaboration",
            &col.to_string(),
            "--username",
            RESEARCHER.0,
            "--stream-secs",
            "1",
        ])
        .env("ALGONET_PASSWORD", RESEARCHER.1)
        .output()
        .expect("algonet test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    for name in ["amsterdam", "berlin"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {stdout}"));
        assert!(
            row.contains("yes  yes"),
            "{name} not reached both ways: {row}"
        );
    }
    eprintln!("{stdout}");

    let out = common::user_client_script_as(
        &python,
        "vpn_average.py",
        (v6.port, RESEARCHER),
        algonet::api::CollaborationId(col),
        algonet::api::OrganizationId(orgs[0]),
        algonet::docker::images::VPN_AVERAGE_IMAGE,
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answer: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "vpn-average: {stdout}\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                logs()
            )
        });
    eprintln!("vpn-average answered: {answer}");
    assert_eq!(answer["status"], json!("completed"), "{answer}");
    let ages: Vec<i64> = (0..2).flat_map(algonet::demo::demo_ages).collect();
    let result = &answer["results"][0];
    assert_eq!(
        result["average"],
        json!(ages.iter().sum::<i64>() as f64 / ages.len() as f64),
        "{answer}"
    );
    let over_vpn: Vec<i64> = result["over_vpn"]
        .as_object()
        .expect("what each partial answered over the VPN")
        .keys()
        .map(|k| k.parse().expect("organization id"))
        .collect();
    assert_eq!(
        over_vpn.len(),
        2,
        "both partials answered over the VPN: {answer}"
    );

    drop(nodes);
    assert!(
        logs().contains("the server is vantage6's own"),
        "{}",
        logs()
    );
    drop(vpn);
    common::assert_nothing_left(
        &docker,
        &[&owner, "node:tv6vpn-amsterdam", "node:tv6vpn-berlin"],
    )
    .await;
}
