//! Tier 2 (root): the built-in VPN provider for real. An OpenVPN server (Debian's openvpn) runs
//! with the configuration the server wrote, in one namespace; OpenVPN clients with profiles from
//! `GET /vpn` connect from another and pass traffic; a profile replaced by `POST /vpn/update` is
//! refused by the OpenVPN server; a node's tunnel that goes away leaks nothing onto the WAN.

use algonet_testkit as common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use algonet::net::dataplane::{Dataplane, DataplaneConfig};
use algonet::net::links::{IfName, Netlink, Route};
use algonet::net::plan::{self, HubPlan, RunLinkPlan};
use algonet::node::vpn::openvpn::management::Management;
use common::capture::Capture;
use common::server::server;
use common::{privileged, TestNs};
use netstack::{Mapping, Protocol, RunId, Vpn};
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

/// The server's built-in VPN, as every test's server configures it.
fn vpn_config() -> String {
    format!("vpn: {{subnet: 10.76.0.0/16, remote: {SERVER_WAN}, port: 1194}}\n")
}

/// `extra`: more of the server's YAML.
fn lab(tag: &str, server_args: &[&str], extra: &str) -> Lab {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(server(tag, &format!("{}{extra}", vpn_config())));
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
    let args = [
        &["--cd", vpn_dir_s.as_str(), "--config", "server.conf"],
        server_args,
    ]
    .concat();
    let server_vpn = OpenVpn::start(&vs, &s.dir.join("server.log"), &args);
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

/// Writes a profile into the server's folder; its path.
fn write_profile(s: &common::server::Server, file: &str, text: &str) -> String {
    let p = s.dir.join(file);
    std::fs::write(&p, text).expect("write profile");
    p.display().to_string()
}

/// An OpenVPN client in `vc` with the profile at `file`, logging to `log` in the server's folder.
fn client(vc: &TestNs, s: &common::server::Server, file: &str, log: &str) -> OpenVpn {
    OpenVpn::start(
        vc,
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
}

/// Waits until `log()` says "certificate revoked" more often than `before` times.
fn refused_again(log: impl Fn() -> String, before: usize) -> bool {
    let refusals = |log: &str| log.matches("certificate revoked").count();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if refusals(&log()) > before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
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
    } = lab("vpn-pki", &[], "");
    let write = |file: &str, text: &str| write_profile(&s, file, text);
    let client = |file: &str, log: &str| client(&vc, &s, file, log);
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
    assert!(
        refused_again(|| server_vpn.log(), before),
        "a removed node's profile still connects: {}",
        server_vpn.log()
    );
    assert!(!c.log().contains("Initialization Sequence Completed"));
}

/// Two server processes on one PostgreSQL database, the OpenVPN server beside the second one:
/// a profile from the first connects to it (one CA, one tls-crypt key), a certificate the first
/// revokes (by issuing the next, then by deleting the node) is refused by it, from the CRL the
/// second wrote.
#[test]
fn a_certificate_revoked_through_one_replica_is_refused_by_the_others_openvpn_server() {
    let test = "a_certificate_revoked_through_one_replica_is_refused_by_the_others_openvpn_server";
    if !privileged(test) {
        return;
    }
    let Some(base) = common::postgres::shared(test) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = rt.block_on(common::postgres::database(&base, "vpn-replicas"));
    let database = format!("database: {url}\n");
    drop(rt);
    let Lab {
        rt,
        s: b,
        vs: _vs,
        vc,
        server_vpn,
        node,
        token,
        first,
    } = lab("vpn-rep-b", &[], &database);
    let a = rt.block_on(server("vpn-rep-a", &format!("{}{database}", vpn_config())));
    // The node's token from b serves at a; a's profile revokes b's.
    let from_a = rt.block_on(a.ok("GET", "/vpn", Some(&token), json!(null)));
    let from_a = from_a["ovpn_config"].as_str().expect("profile").to_string();
    let (first_file, a_file) = (
        write_profile(&b, "first.ovpn", &first),
        write_profile(&b, "from-a.ovpn", &from_a),
    );
    // b looks for revocations every 2 s.
    std::thread::sleep(Duration::from_secs(3));
    let old = client(&vc, &b, &first_file, "client-old.log");
    assert!(
        refused_again(|| server_vpn.log(), 0),
        "b's OpenVPN server still takes the certificate a revoked: {}",
        server_vpn.log()
    );
    assert!(!old.log().contains("Initialization Sequence Completed"));
    drop(old);
    let c = client(&vc, &b, &a_file, "client-a.log");
    assert!(
        c.wait_for("Initialization Sequence Completed", Duration::from_secs(20)),
        "a's profile at b's OpenVPN server: {}\nserver: {}",
        c.log(),
        server_vpn.log()
    );
    drop(c);
    // Deleted through a: refused by b's OpenVPN server.
    let before = server_vpn.log().matches("certificate revoked").count();
    let admin = rt.block_on(a.admin());
    rt.block_on(a.ok(
        "DELETE",
        &format!("/node/{node}"),
        Some(&admin),
        json!(null),
    ));
    std::thread::sleep(Duration::from_secs(3));
    let c = client(&vc, &b, &a_file, "client-a2.log");
    assert!(
        refused_again(|| server_vpn.log(), before),
        "a node deleted through a still connects at b: {}",
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
    } = lab("vpn-management", &[], "");
    let profile = s.dir.join("node.ovpn");
    std::fs::write(&profile, &first).expect("profile");
    let sock = s.dir.join("mgmt.sock");
    let (profile, sock_s) = (profile.display().to_string(), sock.display().to_string());
    // As the node runs it: no address or route is set by OpenVPN.
    let client = OpenVpn::start(
        &vc,
        &s.dir.join("client.log"),
        &algonet::node::vpn::openvpn::client_args(&profile, &sock_s)
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
            .is_some_and(|c: &algonet::node::vpn::openvpn::management::TunnelState| c.connected())
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

/// A socket made inside `ns` (it stays there), with a read timeout.
fn udp_in(ns: &TestNs, addr: SocketAddrV4) -> UdpSocket {
    let s = ns
        .ns
        .run(move || async move { UdpSocket::bind(addr) })
        .expect("ns")
        .expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    s
}

/// How many datagrams `s` receives within `d`.
fn received(s: &UdpSocket, d: Duration) -> usize {
    let (start, mut n, mut buf) = (Instant::now(), 0, [0u8; 64]);
    while start.elapsed() < d {
        if s.recv(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

/// The node's side of the tunnel for real, as the hub has it (Debian's OpenVPN with the node's
/// own client arguments, the data plane, the routing plan, a run's container behind a veth),
/// with a default route out of the WAN link as Docker gives one. While an algorithm keeps
/// sending to a VPN peer, the OpenVPN client is killed (tun0 goes) and started again, and the
/// OpenVPN server is killed for longer than the client's ping-restart: a capture on the WAN sees
/// no packet with a VPN address in either direction, a WAN packet spoofing a peer's source
/// reaches nothing, and the traffic comes back with the tunnel.
#[test]
fn a_lost_tunnel_leaks_nothing_onto_the_wan() {
    if !privileged("a_lost_tunnel_leaks_nothing_onto_the_wan") {
        return;
    }
    // A short keepalive (pushed to the client as ping 1, ping-restart 4) keeps the test short.
    let Lab {
        rt,
        s,
        vs,
        vc: hub,
        server_vpn,
        first,
        ..
    } = lab("vpn-fail-closed", &["--keepalive", "1", "4"], "");
    let container = TestNs::new("vpn-fail-closed-container");
    let c_addr = Ipv4Addr::new(100, 64, 0, 2);
    let server_vpn_addr = Ipv4Addr::new(10, 76, 0, 1);
    let plan = HubPlan {
        vpn_link: name("tun0"),
        tun: name("algonet0"),
        wan: Some(name("wan0")),
        vpn_subnet: Ipv4Addr::new(10, 76, 0, 0),
        vpn_prefix_len: 16,
    };
    let link = RunLinkPlan {
        hub_end: name("vr-1"),
        container_end: name("eth0"),
        container: c_addr,
        gateway: Ipv4Addr::new(169, 254, 1, 1),
        mtu: 1400,
    };
    let dataplane = Dataplane::start(
        &hub.ns,
        DataplaneConfig {
            tun: name("algonet0"),
            offload: true,
            mtu: 1500,
            txqueuelen: 1000,
            busy_poll: Duration::ZERO,
            // Two routers, as a node with `dataplane_queues: 2`: fail-closed holds for each.
            queues: 2,
            router: netstack::Config::default(),
        },
    )
    .expect("data plane");
    let dp = dataplane.handle();
    let (p, l) = (plan.clone(), link.clone());
    let container_fd = container.ns.fd().try_clone_to_owned().expect("fd");
    hub.ns
        .run(move || async move {
            let nl = Netlink::connect()?;
            nl.add_route(&Route {
                dest: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                dev: name("wan0"),
                via: Some(SERVER_WAN),
                table: plan::TABLE_MAIN,
            })
            .await?;
            plan::apply_base(&nl, &p).await?;
            plan::add_run_link(&nl, &l, std::os::fd::AsFd::as_fd(&container_fd)).await
        })
        .expect("hub ns")
        .expect("hub plumbing");
    let l = link.clone();
    container
        .ns
        .run(move || async move { plan::configure_container_end(&Netlink::connect()?, &l).await })
        .expect("container ns")
        .expect("container plumbing");
    rt.block_on(async {
        dp.with(move |r| {
            r.add_container(c_addr, RunId(1), 1)?;
            r.add_mapping(Mapping {
                protocol: Protocol::Udp,
                public_port: 49160,
                container: SocketAddrV4::new(c_addr, 7000),
                run: RunId(1),
            })
        })
        .await
        .expect("data plane")
        .expect("mapping");
    });

    // OpenVPN as the node runs it; connected, the node routes the tunnel and gives the router
    // the address.
    let profile = s.dir.join("node.ovpn");
    std::fs::write(&profile, &first).expect("profile");
    let sock = s.dir.join("mgmt.sock");
    let args = algonet::node::vpn::openvpn::client_args(
        &profile.display().to_string(),
        &sock.display().to_string(),
    );
    let start_client = |log: &str| {
        let _ = std::fs::remove_file(&sock);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        OpenVpn::start(&hub, &s.dir.join(log), &args)
    };
    let connect = |client: &OpenVpn| -> Ipv4Addr {
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = rt.block_on(async {
            loop {
                if let Ok(mut m) = Management::connect(&sock).await {
                    if let Ok(st) = m.state().await {
                        if st.connected() {
                            break st.address;
                        }
                    }
                }
                assert!(Instant::now() < deadline, "not connected: {}", client.log());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let address = address.expect("an address");
        let p = plan.clone();
        hub.ns
            .run(move || async move { plan::apply_vpn(&Netlink::connect()?, &p).await })
            .expect("hub ns")
            .expect("tunnel plumbing");
        let vpn = Vpn {
            address,
            prefix_len: 16,
            mtu: 1500,
        };
        rt.block_on(dp.with(move |r| r.set_vpn(Some(vpn))))
            .expect("data plane")
            .expect("vpn");
        address
    };
    let client = start_client("client1.log");
    let node_vpn = connect(&client);

    // The capture: anything the hub sends onto the WAN with a VPN address, as source or
    // destination (the WAN neighbour's own spoofed packets below are not the hub's).
    let capture = Capture::start(&vs, "wan0", "net 10.76.0.0/16", &s.dir.join("wan.txt"));
    let peer = udp_in(&vs, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9000));
    let inside = udp_in(&container, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7000));
    let sender = udp_in(&container, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let keep = sending.clone();
    let algorithm = std::thread::spawn(move || {
        let to = SocketAddrV4::new(server_vpn_addr, 9000);
        while keep.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = sender.send_to(b"patient data", to);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert!(
        received(&peer, Duration::from_secs(2)) > 0,
        "the peer hears the algorithm through the tunnel; client: {}",
        client.log()
    );

    // OpenVPN's client dies: tun0 and its route go.
    drop(client);
    std::thread::sleep(Duration::from_secs(2));
    let links = hub.ip(&["-o", "link"]);
    assert!(!links.contains("tun0"), "tun0 went with OpenVPN: {links}");
    // A WAN neighbour sends as if it were the VPN peer (its source is the peer's VPN address).
    vs.ns
        .run(move || async move {
            let nl = Netlink::connect()?;
            nl.add_route(&Route {
                dest: node_vpn,
                prefix_len: 32,
                dev: name("wan0"),
                via: Some(CLIENT_WAN),
                table: plan::TABLE_MAIN,
            })
            .await
        })
        .expect("server ns")
        .expect("spoofing route");
    let spoofer = udp_in(&vs, SocketAddrV4::new(server_vpn_addr, 0));
    for _ in 0..5 {
        let _ = spoofer.send_to(b"spoofed", SocketAddrV4::new(node_vpn, 49160));
    }
    assert_eq!(
        received(&inside, Duration::from_secs(1)),
        0,
        "a spoofed WAN packet reached the container"
    );
    let client = start_client("client2.log");
    connect(&client);
    let deadline = Instant::now() + Duration::from_secs(20);
    while received(&peer, Duration::from_millis(500)) == 0 {
        assert!(
            Instant::now() < deadline,
            "traffic did not come back after the client restart"
        );
    }

    // The OpenVPN server goes for longer than the client's ping-restart.
    drop(server_vpn);
    std::thread::sleep(Duration::from_secs(6));
    let vpn_dir_s = s.dir.join("vpn").display().to_string();
    let server_vpn = OpenVpn::start(
        &vs,
        &s.dir.join("server2.log"),
        &[
            "--cd",
            &vpn_dir_s,
            "--config",
            "server.conf",
            "--keepalive",
            "1",
            "4",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    while received(&peer, Duration::from_millis(500)) == 0 {
        assert!(
            Instant::now() < deadline,
            "traffic did not come back after the server returned; client: {}",
            client.log()
        );
    }
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    algorithm.join().expect("sender");
    let seen = capture.stop();
    assert!(
        seen.trim().is_empty(),
        "packets with VPN addresses crossed the WAN in clear:\n{seen}"
    );
    let counters = rt.block_on(dp.counters()).expect("counters").0;
    eprintln!(
        "forwarded {:?}, dropped: {:?}",
        counters.forwarded_packets,
        counters.nonzero_drops().collect::<Vec<_>>()
    );
    drop((client, server_vpn));
    dataplane.stop().expect("stop data plane");
}
