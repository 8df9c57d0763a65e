//! Docker tier: whole nodes on eduVPN's WireGuard. The server's VPN provider is an eduVPN v3
//! portal (`testkit::eduvpn`, written from eduVPN's API document, with a WireGuard server of
//! its own on the host: a hub turning packets around between the keys `/connect` admitted).
//! The server asks the portal for each node's profile with the node's public key; each node's
//! tunnel runs in the node's process and reaches the portal's WireGuard server from its hub
//! namespace on the federation's network. The VPN feature test reaches every organization and
//! vpn-average (vantage6's own tools, sent and read by vantage6's own `UserClient`) computes
//! over the tunnel; no VPN container runs and no private key reaches the portal; each node
//! leaving ends its eduVPN session (`/disconnect`). Nothing is left behind, and the host's
//! firewall is as it was.

use algonet_testkit as common;

use std::sync::atomic::Ordering;

use algonet::server::pki::{BuiltinVpn, TunnelKind};
use common::eduvpn::{vpn_server, PortalOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_eduvpns_wireguard_compute_over_the_vpn() {
    let Some(docker) = common::docker("nodes_on_eduvpns_wireguard_compute_over_the_vpn").await
    else {
        return;
    };
    let Some(python) = common::venv_python("ALGONET_V6_PYTHON") else {
        return;
    };
    let bin = env!("CARGO_BIN_EXE_algonet");
    let firewall_before = common::firewall();
    // The portal's WireGuard server is reached where the nodes reach the host: Docker's gateway
    // on the federation's network.
    let host = algonet::demo::host_ip(algonet::demo::DEMO_NETWORK).to_string();
    let port = common::free_udp_port();
    let portal = common::eduvpn::start(PortalOptions {
        tag: "twge".into(),
        confidential: false,
        no_profile: false,
        vpn: BuiltinVpn::new(algonet::demo::VPN_SUBNET, &host, None, TunnelKind::OpenVpn),
        tls: false,
        wireguard: Some(port),
        proxyguard: false,
    })
    .await;
    let provider = vpn_server(&portal.url, "portal-pass").replace("}\n", ", tunnel: wireguard}\n");
    let mut fed = common::vpn_average_federation(
        &docker,
        &python,
        bin,
        "twge",
        false,
        TunnelKind::WireGuard,
        Some(provider),
    )
    .await;
    assert_eq!(fed.vpn_server, None, "no OpenVPN server with eduVPN");
    let vpn_containers = common::vpn_containers(&docker, &fed).await;
    let rows = fed.feature_test(None).await;
    let answer = common::vpn_average_answer(&python, &fed, &[]);
    let statuses: Vec<_> = fed
        .nodes
        .iter()
        .map(|n| common::node_status(bin, &n.config))
        .collect();
    // Each node's profile, as kept in its VPN folder while it runs: eduVPN's (its IPv6
    // address beside the IPv4 one), no private key in it.
    let profiles: Vec<String> = fed
        .nodes
        .iter()
        .map(|n| {
            let organization = &n.organization;
            let path = fed.options.dir.join(format!(
                "node-{organization}/vpn/{}",
                algonet::node::vpn::wireguard::PROFILE
            ));
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect();
    let owners: Vec<String> = fed
        .nodes
        .iter()
        .map(|n| format!("node:twge-{}", n.organization))
        .collect();
    let before = portal.disconnects.load(Ordering::Relaxed);
    let leftovers = fed.down().await;
    let ended = portal.disconnects.load(Ordering::Relaxed) - before;
    assert!(leftovers.is_empty(), "teardown left {leftovers:?}");

    assert_eq!(
        vpn_containers,
        vec![None; 3],
        "a node started a VPN container"
    );
    common::assert_feature_ok(rows, "through eduVPN's WireGuard server");
    common::assert_demo_average(answer);

    // Each node shook hands with the portal's server at the profile's endpoint.
    let endpoint = format!("{host}:{port}");
    for s in &statuses {
        common::assert_wireguard_status(s, &endpoint);
    }
    for p in &profiles {
        assert!(p.contains("fd43::") && !p.contains("PrivateKey"), "{p}");
    }
    let owners: Vec<&str> = owners.iter().map(String::as_str).collect();
    common::assert_nothing_left(&docker, &owners).await;
    assert_eq!(
        common::firewall(),
        firewall_before,
        "the host firewall changed"
    );
    assert_eq!(ended, 3, "each node leaving ends its eduVPN session");
}
