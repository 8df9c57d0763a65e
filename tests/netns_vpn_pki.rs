//! Tier 2 (root): the built-in VPN provider for real. An OpenVPN server (Debian's openvpn) runs
//! with the configuration the server wrote, in one namespace; OpenVPN clients with profiles from
//! `GET /vpn` connect from another and pass traffic; a profile replaced by `POST /vpn/update` is
//! refused by the OpenVPN server.

use algonet_testkit as common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use algonet::net::links::{IfName, Netlink};
use algonet::node::vpn::openvpn::Management;
use common::server::server;
use common::{privileged, TestNs};
use serde_json::json;

const SERVER_WAN: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const CLIENT_WAN: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

/// An openvpn process we started, ended by PID on drop.
struct OpenVpn {
    child: Child,
    log: PathBuf,
}

impl OpenVpn {
    fn start(ns: &TestNs, log: &Path, args: &[&str]) -> OpenVpn {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "openvpn",
                "--log",
                &log.display().to_string(),
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openvpn");
        OpenVpn {
            child,
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `what`, or the timeout.
    fn wait_for(&self, what: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for OpenVpn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn name(s: &str) -> IfName {
    IfName::new(s).expect("name")
}

/// A server with the built-in VPN, its OpenVPN server running in one namespace, a client
/// namespace beside it, and a node with its first profile.
struct Lab {
    rt: tokio::runtime::Runtime,
    s: common::server::Server,
    vs: TestNs,
    vc: TestNs,
    server_vpn: OpenVpn,
    node: i64,
    token: String,
    first: String,
}

fn lab(tag: &str) -> Lab {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(server(
        tag,
        &format!("vpn: {{subnet: 10.76.0.0/16, remote: {SERVER_WAN}, port: 1194}}\n"),
    ));
    // Secrets are the server's alone.
    for secret in ["ca.key", "server.key", "tls-crypt.key"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(s.dir.join("vpn").join(secret))
                .expect("secret")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    let (node, token) = rt.block_on(s.lone_node());
    let first = rt.block_on(s.ok("GET", "/vpn", Some(&token), json!(null)));
    let first = first["ovpn_config"].as_str().expect("profile").to_string();
    assert!(first.contains("<tls-crypt>") && first.contains(&format!("remote {SERVER_WAN} 1194")));

    let vs = TestNs::new(&format!("{tag}-s"));
    let vc = TestNs::new(&format!("{tag}-c"));
    let vc_fd = vc.ns.fd().try_clone_to_owned().expect("fd");
    vs.ns
        .run(move || async move {
            let nl = Netlink::connect()?;
            nl.add_veth(
                &name("wan0"),
                &name("wan0"),
                std::os::fd::AsFd::as_fd(&vc_fd),
                1500,
            )
            .await?;
            Ok::<_, algonet::net::links::LinkError>(())
        })
        .expect("ns")
        .expect("server side");
    vs.host("wan0", SERVER_WAN, 24, None);
    vc.host("wan0", CLIENT_WAN, 24, None);

    let vpn_dir = s.dir.join("vpn");
    let vpn_dir_s = vpn_dir.display().to_string();
    let server_vpn = OpenVpn::start(
        &vs,
        &s.dir.join("server.log"),
        &["--cd", &vpn_dir_s, "--config", "server.conf"],
    );
    assert!(
        server_vpn.wait_for("Initialization Sequence Completed", Duration::from_secs(15)),
        "server: {}",
        server_vpn.log()
    );

    Lab {
        rt,
        s,
        vs,
        vc,
        server_vpn,
        node,
        token,
        first,
    }
}

#[test]
fn profiles_from_the_built_in_pki_connect_and_replaced_ones_are_refused() {
    if !privileged("profiles_from_the_built_in_pki_connect_and_replaced_ones_are_refused") {
        return;
    }
    let Lab {
        rt,
        s,
        vs: _vs,
        vc,
        server_vpn,
        node,
        token,
        first,
    } = lab("vpn-pki");
    let write = |file: &str, text: &str| {
        let p = s.dir.join(file);
        std::fs::write(&p, text).expect("write profile");
        p.display().to_string()
    };
    let client = |file: &str, log: &str| {
        OpenVpn::start(
            &vc,
            &s.dir.join(log),
            &[
                "--config",
                file,
                "--pull-filter",
                "ignore",
                "route-ipv6",
                "--pull-filter",
                "ignore",
                "ifconfig-ipv6",
            ],
        )
    };
    let first_file = write("first.ovpn", &first);
    {
        let c = client(&first_file, "client1.log");
        assert!(
            c.wait_for("Initialization Sequence Completed", Duration::from_secs(20)),
            "client: {}\nserver: {}",
            c.log(),
            server_vpn.log()
        );
        let ping = Command::new("ip")
            .args([
                "netns",
                "exec",
                &vc.name,
                "ping",
                "-c",
                "2",
                "-W",
                "2",
                "10.76.0.1",
            ])
            .output()
            .expect("ping");
        assert!(
            ping.status.success(),
            "traffic over the tunnel: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
    }

    // Renewal: a new key pair; the old certificate is revoked and refused at the next handshake.
    let second = rt.block_on(s.ok(
        "POST",
        "/vpn/update",
        Some(&token),
        json!({"vpn_config": first}),
    ));
    let second = second["ovpn_config"].as_str().expect("profile").to_string();
    assert_ne!(second, first);
    let old = client(&first_file, "client-old.log");
    assert!(
        server_vpn.wait_for("certificate revoked", Duration::from_secs(20)),
        "the server did not refuse the replaced profile: {}",
        server_vpn.log()
    );
    assert!(!old.log().contains("Initialization Sequence Completed"));
    drop(old);
    let second_file = write("second.ovpn", &second);
    let c = client(&second_file, "client2.log");
    assert!(
        c.wait_for("Initialization Sequence Completed", Duration::from_secs(20)),
        "renewed client: {}",
        c.log()
    );
    drop(c);

    // Removing the node revokes its certificate: the renewed profile is refused too.
    let refusals = |log: &str| log.matches("certificate revoked").count();
    let before = refusals(&server_vpn.log());
    let admin = rt.block_on(s.admin());
    rt.block_on(s.ok(
        "DELETE",
        &format!("/node/{node}"),
        Some(&admin),
        json!(null),
    ));
    let c = client(&second_file, "client3.log");
    let start = Instant::now();
    while refusals(&server_vpn.log()) == before && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        refusals(&server_vpn.log()) > before,
        "a removed node's profile still connects: {}",
        server_vpn.log()
    );
    assert!(!c.log().contains("Initialization Sequence Completed"));
}

#[test]
fn the_node_reads_its_vpn_address_from_openvpn_management() {
    if !privileged("the_node_reads_its_vpn_address_from_openvpn_management") {
        return;
    }
    let Lab {
        rt,
        s,
        vs: _vs,
        vc,
        server_vpn,
        first,
        ..
    } = lab("vpn-management");
    let profile = s.dir.join("node.ovpn");
    std::fs::write(&profile, &first).expect("profile");
    let sock = s.dir.join("mgmt.sock");
    let (profile, sock_s) = (profile.display().to_string(), sock.display().to_string());
    // As the node runs it: no address or route is set by OpenVPN.
    let client = OpenVpn::start(
        &vc,
        &s.dir.join("client.log"),
        &algonet::node::vpn::tunnel::client_args(&profile, &sock_s)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let start = Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (address, changes) = rt.block_on(async {
        let mut m = Management::connect(&sock).await.expect("management socket");
        let deadline = Instant::now() + Duration::from_secs(20);
        let state = loop {
            let st = m.state().await.expect("state");
            if st.connected() || Instant::now() > deadline {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            state.connected(),
            "never connected: {state:?}; {}",
            client.log()
        );
        let tun = vc.ip(&["-j", "addr", "show", "tun0"]);
        assert!(
            !tun.contains("\"local\":\"10.76."),
            "OpenVPN must not configure tun0: {tun}"
        );
        // The tunnel drops and comes back: the node sees both.
        m.follow().await.expect("follow");
        m.reconnect().await.expect("reconnect");
        let mut changes = Vec::new();
        while !changes
            .last()
            .is_some_and(|c: &algonet::node::vpn::openvpn::TunnelState| c.connected())
        {
            let c = tokio::time::timeout(Duration::from_secs(30), m.next_change())
                .await
                .expect("a change in time")
                .expect("readable");
            changes.push(c);
        }
        (state.address, changes)
    });
    let address = address.expect("an address");
    assert!(
        address.octets()[..2] == [10, 76],
        "{address} lies in the VPN subnet"
    );
    assert!(
        changes.iter().any(|c| c.name == "RECONNECTING"),
        "{changes:?}"
    );
    assert_eq!(
        changes.last().and_then(|c| c.address),
        Some(address),
        "the same address again"
    );
    drop(server_vpn);
}
