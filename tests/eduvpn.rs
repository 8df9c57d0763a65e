//! The eduVPN connector against an eduVPN-like portal that follows the documented v3 flow
//! (`testkit::eduvpn`) and serves a real profile from the built-in PKI; and its failure paths.

use algonet_testkit as common;

use common::eduvpn::{vpn_server, EduVpnPortal, PortalOptions};
use common::server::server;
use serde_json::json;

/// A portal whose profiles are for `vpn.example.test`.
async fn portal(confidential: bool, no_profile: bool, tag: &str) -> EduVpnPortal {
    common::eduvpn::start(PortalOptions {
        tag: tag.to_string(),
        confidential,
        no_profile,
        vpn: algonet::server::pki::BuiltinVpn::new(
            "10.76.0.0/16",
            "vpn.example.test",
            None,
            algonet::server::pki::TunnelKind::OpenVpn,
        ),
        tls: false,
        wireguard: None,
        proxyguard: false,
    })
    .await
}

#[tokio::test]
async fn a_node_gets_a_real_profile_through_the_eduvpn_flow() {
    for (confidential, tag) in [(false, "public"), (true, "confidential")] {
        let p = portal(confidential, false, tag).await;
        let s = server(&format!("edu-{tag}"), &vpn_server(&p.url, "portal-pass")).await;
        let node = s.lone_node().await.1;
        let (st, v) = s.call("GET", "/vpn", Some(&node), None).await;
        assert_eq!(st, reqwest::StatusCode::OK, "{tag}: {v}");
        let profile = v["ovpn_config"].as_str().expect("profile");
        assert_eq!(
            v["expires"],
            json!("Fri, 26 Nov 2027 10:00:00 GMT"),
            "{tag}: the certificate's end is passed on"
        );
        for part in [
            "<ca>",
            "<cert>",
            "<key>",
            "<tls-crypt>",
            "remote vpn.example.test 1194",
        ] {
            assert!(profile.contains(part), "{tag}: profile lacks {part}");
        }
    }
}

#[tokio::test]
async fn eduvpn_failures_say_why() {
    // Wrong portal password: the portal answers with its login page, not a redirect.
    let p = portal(false, false, "wrongpass").await;
    let s = server("edu-wrongpass", &vpn_server(&p.url, "nope")).await;
    let (st, v) = s
        .call("GET", "/vpn", Some(&s.lone_node().await.1), None)
        .await;
    assert_eq!(st, reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        v["msg"].as_str().expect("msg").contains("portal login"),
        "{v}"
    );
    // No profile for the account.
    let p = portal(false, true, "noprofile").await;
    let s = server("edu-noprofile", &vpn_server(&p.url, "portal-pass")).await;
    let (st, v) = s
        .call("GET", "/vpn", Some(&s.lone_node().await.1), None)
        .await;
    assert_eq!(st, reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        v["msg"].as_str().expect("msg").contains("no VPN profile"),
        "{v}"
    );
    // The portal is down: 503.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let s = server("edu-down", &vpn_server(&dead, "portal-pass")).await;
    let (st, v) = s
        .call("GET", "/vpn", Some(&s.lone_node().await.1), None)
        .await;
    assert_eq!(st, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{v}");
}
