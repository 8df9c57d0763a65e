//! Tier 2 (root): the built-in VPN on WireGuard for real. The server runs the hub in its own
//! process (a UDP port on the host); two nodes' WireGuard tunnels, each in a namespace of its
//! own reaching the host over a veth, get their profiles from `GET /vpn?public_key=` and pass
//! traffic through the hub; a peer with a key the hub never admitted gets no handshake; a
//! deleted node's traffic stops. And the same through eduVPN: a server with `vpn_server: {...,
//! tunnel: wireguard}` gets each node a WireGuard profile from an eduVPN-like portal for the key
//! the node sent, and the nodes reach each other through the portal's WireGuard server. A
//! replayed, changed or made-up handshake initiation gets no answer from the hub.

use algonet_testkit as common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use algonet::net::links::{IfName, Netlink};
use algonet::net::netns::Netns;
use algonet::node::vpn::wireguard::{WgError, WireGuard};
use algonet::node::vpn::Tunnel;
use algonet::server::pki::{BuiltinVpn, TunnelKind};
use algonet::wireguard::keys::KeyPair;
use algonet::wireguard::profile::WgProfile;
use common::eduvpn::{vpn_server, PortalOptions};
use common::server::{server, Server};
use common::stand_in::{stand_in, StandIn};
use common::{privileged, TestNs};
use serde_json::json;

const SUBNET: &str = "10.76.0.0/16";

/// A node's namespace, reaching the host at `10.98.<i>.1` over a veth.
fn site(i: u8) -> TestNs {
    let ns = TestNs::new(&format!("wg{i}"));
    let host_end = format!("awg{}{i}", std::process::id() % 100_000);
    let fd = ns.ns.fd().try_clone_to_owned().expect("fd");
    let host = IfName::new(&host_end).expect("name");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let nl = Netlink::connect().expect("netlink");
        nl.add_veth(
            &host,
            &IfName::new("wan0").expect("name"),
            std::os::fd::AsFd::as_fd(&fd),
            1500,
        )
        .await
        .expect("veth");
        nl.configure(&host, None, None).await.expect("up");
        nl.add_address(&host, Ipv4Addr::new(10, 98, i, 1), 24)
            .await
            .expect("host address");
    });
    ns.host("wan0", Ipv4Addr::new(10, 98, i, 2), 24, None);
    ns.ip(&["route", "add", "default", "via", &format!("10.98.{i}.1")]);
    ns
}

/// A UDP port no socket holds now (the tests of this file run side by side).
fn free_udp_port() -> u16 {
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// A server whose built-in VPN is WireGuard, its hub on a free UDP port (returned), its
/// profiles naming the host's address toward `site`.
async fn hub_server(tag: &str, site: u8) -> (Server, u16) {
    let port = free_udp_port();
    let vpn = format!(
        "vpn: {{subnet: {SUBNET}, remote: 10.98.{site}.1, port: {port}, tunnel: wireguard}}\n"
    );
    (server(tag, &vpn).await, port)
}

/// A node's tunnel in `ns`, `tun0` standing in for its routers (the tunnel goes first).
fn tunnel(ns: &TestNs, dir: &std::path::Path, timeout: Duration) -> (WireGuard, StandIn) {
    let handle = Arc::new(Netns::open(format!("/run/netns/{}", ns.name)).expect("netns"));
    let (ends, tun) = stand_in(ns, 1420);
    let wg = WireGuard::new(
        handle,
        ends,
        dir.to_path_buf(),
        SUBNET.parse().expect("subnet"),
        1420,
        timeout,
    );
    (wg, tun)
}

/// The answer to `GET /vpn?public_key=` for `key`.
async fn vpn_answer(s: &Server, token: &str, key: &KeyPair) -> serde_json::Value {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("public_key", &key.public_b64())
        .finish();
    s.ok("GET", &format!("/vpn?{q}"), Some(token), json!(null))
        .await
}

async fn profile(s: &Server, token: &str, key: &KeyPair) -> String {
    let p = vpn_answer(s, token, key).await;
    p["ovpn_config"].as_str().expect("profile").to_string()
}

/// Node tunnels in `sites`, connected with profiles `s` gave for each node's key; their
/// addresses, set on tun0 (the router owns the address in a node; here the test stands in for
/// it).
async fn connected(
    s: &Server,
    nodes: &[(i64, String)],
    sites: [&TestNs; 2],
    tag: &str,
) -> (Vec<(WireGuard, StandIn)>, Vec<Ipv4Addr>) {
    let mut tunnels = Vec::new();
    let mut addresses = Vec::new();
    for (i, ((_, token), ns)) in nodes.iter().zip(sites).enumerate() {
        let dir = s.dir.join(format!("{tag}{i}"));
        let key = WireGuard::keys(&dir).expect("key");
        let text = profile(s, token, &key).await;
        let (mut wg, tun) = tunnel(ns, &dir, Duration::from_secs(10));
        let address = wg.connect(&text).await.expect("handshake with the hub");
        ns.ip(&["addr", "add", &format!("{address}/16"), "dev", "tun0"]);
        tunnels.push((wg, tun));
        addresses.push(address);
    }
    (tunnels, addresses)
}

/// A UDP socket bound in `ns`.
fn udp_in(ns: &TestNs, addr: SocketAddrV4) -> UdpSocket {
    ns.ns
        .run(move || async move { UdpSocket::bind(addr) })
        .expect("enter ns")
        .expect("bind")
}

/// A socket on node a's VPN address, one on node b's, and where a sends to reach b.
fn pair(a: &TestNs, b: &TestNs, addresses: &[Ipv4Addr]) -> (UdpSocket, UdpSocket, SocketAddrV4) {
    let to_b = SocketAddrV4::new(addresses[1], 5000);
    (
        udp_in(a, SocketAddrV4::new(addresses[0], 0)),
        udp_in(b, to_b),
        to_b,
    )
}

/// 1300 bytes in which a changed or moved byte shows.
fn payload() -> Vec<u8> {
    (0..1300u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// Sends `payload` from `from` to `to` until it arrives (true) or `within` passed (false).
fn crosses(
    from: &UdpSocket,
    to: &UdpSocket,
    dest: SocketAddrV4,
    payload: &[u8],
    within: Duration,
) -> bool {
    to.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let start = Instant::now();
    let mut buf = vec![0u8; 2048];
    while start.elapsed() < within {
        from.send_to(payload, dest).expect("send");
        if let Ok(n) = to.recv(&mut buf) {
            assert_eq!(&buf[..n], payload, "bytes changed on the way");
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_each_other_through_the_servers_wireguard_hub() {
    if !privileged("nodes_reach_each_other_through_the_servers_wireguard_hub") {
        return;
    }
    let (s, _) = hub_server("wg-hub", 1).await;
    let nodes = s.nodes(2).await;
    let (a_ns, b_ns, c_ns) = tokio::task::spawn_blocking(|| (site(1), site(2), site(3)))
        .await
        .expect("sites");

    // A node asks with its public key; the profile it gets carries no private key, and its
    // address is fixed by the node's id.
    let (mut tunnels, addresses) = connected(&s, &nodes, [&a_ns, &b_ns], "node").await;
    for ((id, _), ((wg, _), address)) in nodes.iter().zip(tunnels.iter().zip(&addresses)) {
        let text = wg.saved_profile().expect("the profile it kept");
        assert!(!text.to_lowercase().contains("privatekey"), "{text}");
        let expected = Ipv4Addr::from_bits(Ipv4Addr::new(10, 76, 0, 0).to_bits() + *id as u32 + 1);
        assert_eq!(
            WgProfile::parse(&text).expect("a WireGuard profile").ip(),
            expected
        );
        assert_eq!(*address, expected);
        assert!(wg.health().expect("running").handshake_age.is_some());
    }

    let (a_sock, b_sock, to_b) = pair(&a_ns, &b_ns, &addresses);
    let payload = payload();
    assert!(
        crosses(&a_sock, &b_sock, to_b, &payload, Duration::from_secs(5)),
        "node a's datagram did not reach node b through the hub"
    );

    // A key the hub never admitted, with a copy of node a's profile: no handshake.
    let c_dir = s.dir.join("stranger");
    let stolen = tunnels[0].0.saved_profile().expect("a's profile");
    let (mut stranger, _tun) = tunnel(&c_ns, &c_dir, Duration::from_secs(5));
    match stranger.connect(&stolen).await {
        Err(WgError::Silent { .. }) => {}
        other => panic!("a stranger's tunnel: {other:?}"),
    }

    // Node b deleted: the hub drops its key, and a's traffic to it stops.
    let admin = s.admin().await;
    s.ok(
        "DELETE",
        &format!("/node/{}", nodes[1].0),
        Some(&admin),
        json!(null),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stopped = false;
    while Instant::now() < deadline && !stopped {
        stopped = !crosses(&a_sock, &b_sock, to_b, &payload, Duration::from_secs(1));
    }
    assert!(stopped, "a deleted node still gets traffic through the hub");

    for (t, _) in &mut tunnels {
        t.remove().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_use_wireguard_profiles_from_eduvpn() {
    if !privileged("nodes_use_wireguard_profiles_from_eduvpn") {
        return;
    }
    let port = free_udp_port();
    let portal = common::eduvpn::start(PortalOptions {
        tag: "wg".into(),
        confidential: false,
        no_profile: false,
        vpn: BuiltinVpn::new(SUBNET, "10.98.4.1", None, TunnelKind::OpenVpn),
        tls: false,
        wireguard: Some(port),
    })
    .await;
    let settings = vpn_server(&portal.url, "portal-pass").replace("}\n", ", tunnel: wireguard}\n");
    let s = server("wg-edu", &settings).await;
    let nodes = s.nodes(2).await;
    let (a_ns, b_ns) = tokio::task::spawn_blocking(|| (site(4), site(5)))
        .await
        .expect("sites");

    // Without a key the server cannot ask eduVPN for WireGuard: it says what to send.
    let refused = s.call("GET", "/vpn", Some(&nodes[0].1), None).await;
    assert_eq!(refused.0.as_u16(), 400, "{refused:?}");
    assert!(refused.1.to_string().contains("public_key"), "{refused:?}");

    // With one: eduVPN's profile (IPv6 and DNS beside the IPv4 address, no keepalive, no
    // private key) and its expiry, and the nodes reach each other through eduVPN's server.
    let key = WireGuard::keys(&s.dir.join("edu0")).expect("key");
    let answer = vpn_answer(&s, &nodes[0].1, &key).await;
    let text = answer["ovpn_config"].as_str().expect("profile");
    assert!(
        text.contains("fd43::") && !text.contains("PrivateKey"),
        "{text}"
    );
    assert_eq!(answer["expires"], "Fri, 26 Nov 2027 10:00:00 GMT");
    let (mut tunnels, addresses) = connected(&s, &nodes, [&a_ns, &b_ns], "edu").await;
    assert_ne!(addresses[0], addresses[1]);
    let (a_sock, b_sock, to_b) = pair(&a_ns, &b_ns, &addresses);
    let payload = payload();
    assert!(
        crosses(&a_sock, &b_sock, to_b, &payload, Duration::from_secs(5)),
        "node a's datagram did not reach node b through eduVPN's WireGuard server"
    );
    for (t, _) in &mut tunnels {
        t.remove().await;
    }
}

/// A UDP relay between one node and the hub that keeps every handshake initiation the node
/// sent (WireGuard message type 1, 148 bytes), as someone on the path could.
struct Relay {
    port: u16,
    initiations: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(hub: SocketAddr) -> Relay {
        let front = UdpSocket::bind("0.0.0.0:0").expect("relay front");
        let back = UdpSocket::bind("127.0.0.1:0").expect("relay back");
        let port = front.local_addr().expect("addr").port();
        let node: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let initiations: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for toward_hub in [true, false] {
            let (from, to) = if toward_hub {
                (front.try_clone(), back.try_clone())
            } else {
                (back.try_clone(), front.try_clone())
            };
            let (from, to) = (from.expect("socket"), to.expect("socket"));
            from.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let (node, seen, stop) = (node.clone(), initiations.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 2048];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok((n, src)) = from.recv_from(&mut buf) else {
                        continue;
                    };
                    let p = &buf[..n];
                    if toward_hub {
                        *node.lock().expect("lock") = Some(src);
                        if n == 148 && p[0] == 1 {
                            seen.lock().expect("lock").push(p.to_vec());
                        }
                        let _ = to.send_to(p, hub);
                    } else if let Some(node) = *node.lock().expect("lock") {
                        let _ = to.send_to(p, node);
                    }
                }
            }));
        }
        Relay {
            port,
            initiations,
            stop,
            threads,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_forged_handshake_gets_no_answer() {
    if !privileged("a_replayed_or_forged_handshake_gets_no_answer") {
        return;
    }
    let (s, port) = hub_server("wg-replay", 6).await;
    let nodes = s.nodes(1).await;
    let ns = tokio::task::spawn_blocking(|| site(6)).await.expect("site");
    let hub = SocketAddr::from(([127, 0, 0, 1], port));
    let relay = Relay::start(hub);

    // The node reaches the hub through the relay, which keeps its handshake initiation.
    let dir = s.dir.join("replayed");
    let key = WireGuard::keys(&dir).expect("key");
    let text = profile(&s, &nodes[0].1, &key)
        .await
        .replace(&format!(":{port}"), &format!(":{}", relay.port));
    let (mut wg, _tun) = tunnel(&ns, &dir, Duration::from_secs(10));
    wg.connect(&text)
        .await
        .expect("handshake through the relay");
    let initiation = relay.initiations.lock().expect("lock")[0].clone();
    let handshakes = wg.health().expect("running").handshakes;

    // Sent again, from elsewhere: the hub has seen its timestamp and answers nothing. Changed
    // anywhere (its MACs no longer fit), or made up: nothing either.
    let attacker = UdpSocket::bind("127.0.0.1:0").expect("socket");
    attacker
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut changed = initiation.clone();
    changed[40] ^= 0xff;
    let mut made_up: Vec<u8> = (0..148u32).map(|i| (i * 31 % 256) as u8).collect();
    made_up[..4].copy_from_slice(&[1, 0, 0, 0]);
    let mut buf = [0u8; 256];
    for (what, packet) in [
        ("a replayed", &initiation),
        ("a changed", &changed),
        ("a made-up", &made_up),
    ] {
        attacker.send_to(packet, hub).expect("send");
        let answer = attacker.recv(&mut buf);
        assert!(
            answer.is_err(),
            "the hub answered {what} handshake initiation"
        );
    }
    // The node's session is untouched.
    let health = wg.health().expect("running");
    assert_eq!(health.handshakes, handshakes, "{health:?}");
    assert!(health
        .handshake_age
        .is_some_and(|a| a < Duration::from_secs(60)));
    wg.remove().await;
    drop(relay);
}
