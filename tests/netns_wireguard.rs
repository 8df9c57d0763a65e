//! Tier 2 (root): the built-in VPN on WireGuard for real. The server runs the hub in its own
//! process (a UDP port on the host); two nodes' WireGuard tunnels, each in a namespace of its
//! own reaching the host over a veth, get their profiles from `GET /vpn?public_key=` and pass
//! traffic through the hub; a node of another collaboration gets nothing through to them, nor
//! they to it; a peer with a key the hub never admitted gets no handshake; a deleted node's
//! traffic stops. Two nodes that reach each other by UDP trade packets directly, the hub seeing
//! none of them, stay connected and direct while idle for longer than a session lives, fall back to the hub when their link fails and go direct again when it is
//! back; a server told `direct: false` lists no direct peers. And the same through eduVPN: a server with `vpn_server: {...,
//! tunnel: wireguard}` gets each node a WireGuard profile from an eduVPN-like portal for the key
//! the node sent, and the nodes reach each other through the portal's WireGuard server; a node
//! that leaves has its eduVPN session ended (`/disconnect`) and its traffic stops. A
//! replayed, changed or made-up handshake initiation gets no answer from the hub. Nodes at
//! sites that let no UDP out reach each other over TCP, through the server's `GET /vpn/tcp`
//! or through eduVPN's ProxyGuard. And the
//! router's own path: a node's tunnel attached to a real data plane carries its containers'
//! traffic, bytes checked, with and without offload, and fails closed when it goes.

use algonet_testkit as common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use algonet::api::MeshPeer;
use algonet::net::links::{IfName, Netlink};
use algonet::net::netns::Netns;
use algonet::node::vpn::wireguard::{Health, WgError, WireGuard};
use algonet::node::vpn::Tunnel;
use algonet::server::pki::{BuiltinVpn, TunnelKind};
use algonet::wireguard::ip::router_ends;
use algonet::wireguard::keys::KeyPair;
use algonet::wireguard::profile::WgProfile;
use common::capture::Capture;
use common::eduvpn::{vpn_server, PortalOptions};
use common::server::{server, Server};
use common::stand_in::{stand_in, Running, StandIn};
use common::topology::{
    self, echo_server, send_bulk, sink, tcp_echo, udp_socket, Mode, Topology, ECHO_LINE,
};
use common::{privileged, TestNs};
use gotatun::device::Peer;
use gotatun::x25519::PublicKey;
use netstack::DropReason;
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

/// A server whose built-in VPN is WireGuard, its hub on a free UDP port (returned), its
/// profiles naming the host's address toward `site`.
async fn hub_server(tag: &str, site: u8) -> (Server, u16) {
    hub_server_with(tag, site, "").await
}

/// The same, with more keys in the `vpn` block (`, key: value`).
async fn hub_server_with(tag: &str, site: u8, more: &str) -> (Server, u16) {
    let port = common::free_udp_port();
    let vpn = format!(
        "vpn: {{subnet: {SUBNET}, remote: 10.98.{site}.1, port: {port}, tunnel: wireguard{more}}}\n"
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

    // A node of another collaboration shakes hands with the hub, but the hub turns none of
    // its packets around to this collaboration's nodes, nor theirs to it.
    let other = s.collaboration("x", 1).await;
    let d_ns = tokio::task::spawn_blocking(|| site(7)).await.expect("site");
    let d_dir = s.dir.join("other");
    let d_key = WireGuard::keys(&d_dir).expect("key");
    let d_text = profile(&s, &other[0].1, &d_key).await;
    let (mut d_wg, _d_tun) = tunnel(&d_ns, &d_dir, Duration::from_secs(10));
    let d_address = d_wg.connect(&d_text).await.expect("handshake with the hub");
    d_ns.ip(&["addr", "add", &format!("{d_address}/16"), "dev", "tun0"]);
    // Nor does the server list it to them as a direct peer, or them to it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(listed(&s, &other[0].1).await.is_empty());
    let d_key_text = d_key.public_b64();
    for (_, token) in &nodes {
        assert!(listed(&s, token)
            .await
            .iter()
            .all(|p| p.public_key != d_key_text));
    }
    let d_sock = udp_in(&d_ns, SocketAddrV4::new(d_address, 5000));
    let to_d = SocketAddrV4::new(d_address, 5000);
    assert!(
        !crosses(&d_sock, &b_sock, to_b, &payload, Duration::from_secs(2)),
        "another collaboration's node reached node b through the hub"
    );
    assert!(
        !crosses(&a_sock, &d_sock, to_d, &payload, Duration::from_secs(2)),
        "node a reached another collaboration's node through the hub"
    );
    assert!(
        crosses(&a_sock, &b_sock, to_b, &payload, Duration::from_secs(5)),
        "node a's datagram no longer reaches node b"
    );
    d_wg.remove().await;

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

/// Sites `i` and `j` that let no UDP out: policy rules after the local table's drop UDP to
/// anywhere but the namespace's own addresses (loopback included) and the VPN (into the
/// tunnel), as a site's firewall would. Checked: a datagram from the first to the host does
/// not arrive.
async fn sites_without_udp(i: u8, j: u8) -> (TestNs, TestNs) {
    let (a, b) = tokio::task::spawn_blocking(move || (site(i), site(j)))
        .await
        .expect("sites");
    for ns in [&a, &b] {
        ns.ip(&[
            "rule", "add", "priority", "90", "to", SUBNET, "lookup", "main",
        ]);
        ns.ip(&[
            "rule",
            "add",
            "priority",
            "100",
            "ipproto",
            "udp",
            "blackhole",
        ]);
    }
    let host = std::net::UdpSocket::bind((Ipv4Addr::new(10, 98, i, 1), 0)).expect("bind");
    let a_out = udp_in(&a, SocketAddrV4::new(Ipv4Addr::new(10, 98, i, 2), 0));
    let refused = a_out
        .send_to(&payload(), host.local_addr().expect("addr"))
        .is_err();
    host.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    assert!(
        refused && host.recv(&mut [0u8; 2048]).is_err(),
        "UDP leaves site {i}"
    );
    (a, b)
}

/// Each node's tunnel at its site, connected with the profile `s` gives for its key and
/// `prefer_tcp=yes`, which names `proxy` (how the profile writes it) as its `ProxyEndpoint`;
/// the node reaches its hub over TCP, `server_url` being where a path is joined. Their
/// addresses, set on tun0.
async fn connected_over_tcp(
    s: &Server,
    nodes: &[(i64, String)],
    sites: [&TestNs; 2],
    server_url: &str,
    proxy: &str,
) -> (Vec<(WireGuard, StandIn)>, Vec<Ipv4Addr>) {
    let mut tunnels = Vec::new();
    let mut addresses = Vec::new();
    for (i, ((_, token), ns)) in nodes.iter().zip(sites).enumerate() {
        let dir = s.dir.join(format!("tcp{i}"));
        let key = WireGuard::keys(&dir).expect("key");
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("public_key", &key.public_b64())
            .append_pair("prefer_tcp", "yes")
            .finish();
        let answer = s
            .ok("GET", &format!("/vpn?{q}"), Some(token), json!(null))
            .await;
        let text = answer["ovpn_config"].as_str().expect("profile").to_string();
        let parsed = WgProfile::parse(&text).expect("a WireGuard profile");
        assert_eq!(parsed.proxy.as_deref(), Some(proxy), "{text}");
        let (mut wg, tun) = tunnel(ns, &dir, Duration::from_secs(15));
        wg.over_tcp = true;
        wg.server_url = server_url.to_string();
        let address = wg
            .connect(&text)
            .await
            .expect("handshake with the hub over TCP");
        ns.ip(&["addr", "add", &format!("{address}/16"), "dev", "tun0"]);
        let health = wg.health().expect("running");
        let url = reqwest::Url::parse(server_url)
            .and_then(|u| u.join(proxy))
            .expect("url");
        assert_eq!(health.proxy.as_deref(), Some(url.as_str()));
        assert!(
            health.endpoint.is_some_and(|e| e.ip().is_loopback()),
            "{health:?}"
        );
        tunnels.push((wg, tun));
        addresses.push(address);
    }
    (tunnels, addresses)
}

/// Whether `payload` crosses from each of `sites` to the other's address.
fn crosses_both_ways(sites: [&TestNs; 2], addresses: &[Ipv4Addr]) -> bool {
    let (a_sock, b_sock, to_b) = pair(sites[0], sites[1], addresses);
    let (b_out, a_in, to_a) = pair(sites[1], sites[0], &[addresses[1], addresses[0]]);
    let payload = payload();
    crosses(&a_sock, &b_sock, to_b, &payload, Duration::from_secs(5))
        && crosses(&b_out, &a_in, to_a, &payload, Duration::from_secs(5))
}

/// That `capture` saw no UDP come in.
fn no_udp(capture: Capture) {
    let seen = capture.stop();
    let udp: Vec<&str> = seen.lines().filter(|l| l.contains(" UDP")).collect();
    assert!(udp.is_empty(), "UDP on the site's link: {udp:?}");
}

/// Nodes at sites that let no UDP out ask for profiles over TCP (`prefer_tcp=yes`): each names
/// the server's `GET /vpn/tcp`; the nodes shake hands with the built-in hub through it and
/// reach each other both ways, bytes unchanged; no UDP comes in on their links; the hub lists
/// neither as a direct peer (it hears them from loopback); and a node's
/// tunnel, stopped and started again from the kept profile, connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_site_blocks_udp_reach_each_other_over_tcp() {
    if !privileged("nodes_whose_site_blocks_udp_reach_each_other_over_tcp") {
        return;
    }
    let (a_ns, b_ns) = sites_without_udp(8, 9).await;
    let port = common::free_udp_port();
    let vpn =
        format!("vpn: {{subnet: {SUBNET}, remote: 10.98.8.1, port: {port}, tunnel: wireguard}}\n");
    let s = common::server::server_on("wg-tcp", "10.98.8.1:0", &vpn).await;
    let server_url = s.base.trim_end_matches("/api").to_string();
    let nodes = s.nodes(2).await;
    let capture = Capture::start(&a_ns, "wan0", "udp", &s.dir.join("site-a.txt"));
    let sites = [&a_ns, &b_ns];
    let (mut tunnels, addresses) =
        connected_over_tcp(&s, &nodes, sites, &server_url, "/api/vpn/tcp").await;
    assert!(
        crosses_both_ways(sites, &addresses),
        "the nodes do not reach each other over TCP"
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    for (_, token) in &nodes {
        assert!(listed(&s, token).await.is_empty());
    }

    let (a_sock, b_sock, to_b) = pair(&a_ns, &b_ns, &addresses);
    let payload = payload();
    let (wg, _) = &mut tunnels[0];
    wg.remove().await;
    assert!(
        !crosses(&a_sock, &b_sock, to_b, &payload, Duration::from_secs(1)),
        "a stopped tunnel still carries traffic"
    );
    wg.recover()
        .await
        .expect("connected again from the kept profile");
    assert!(
        crosses(&a_sock, &b_sock, to_b, &payload, Duration::from_secs(5)),
        "node a's datagram did not reach node b after its tunnel restarted"
    );

    no_udp(capture);
    for (t, _) in &mut tunnels {
        t.remove().await;
    }
}

/// The same through eduVPN: a server with `vpn_server: {..., tunnel: wireguard}` passes a
/// node's `prefer_tcp=yes` on to eduVPN's `/connect` with both WireGuard media types, gets a
/// profile over TCP in eduVPN's form (`Endpoint = 127.0.0.1:51820` and ProxyGuard's URL as
/// `ProxyEndpoint`), and the nodes reach each other through ProxyGuard (the portal's, written
/// from ProxyGuard's technical document) and eduVPN's WireGuard server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_each_other_over_tcp_through_eduvpns_proxyguard() {
    if !privileged("nodes_reach_each_other_over_tcp_through_eduvpns_proxyguard") {
        return;
    }
    let (a_ns, b_ns) = sites_without_udp(14, 15).await;
    let port = common::free_udp_port();
    let portal = common::eduvpn::start(PortalOptions {
        tag: "wg-tcp".into(),
        confidential: false,
        no_profile: false,
        vpn: BuiltinVpn::new(SUBNET, "10.98.14.1", None, TunnelKind::OpenVpn),
        tls: false,
        wireguard: Some(port),
        proxyguard: true,
    })
    .await;
    let settings = vpn_server(&portal.url, "portal-pass").replace("}\n", ", tunnel: wireguard}\n");
    let s = server("wg-edu-tcp", &settings).await;
    let nodes = s.nodes(2).await;
    let capture = Capture::start(&a_ns, "wan0", "udp", &s.dir.join("site-a.txt"));

    // The profile a node that did not ask for TCP gets is eduVPN's plain one.
    let key = WireGuard::keys(&s.dir.join("plain")).expect("key");
    let plain = WgProfile::parse(&profile(&s, &nodes[0].1, &key).await).expect("profile");
    assert_eq!(plain.proxy, None);

    let sites = [&a_ns, &b_ns];
    let proxy = portal.proxyguard.clone().expect("ProxyGuard runs");
    assert!(proxy.ends_with("/proxyguard/10.98.14.1"), "{proxy}");
    let (mut tunnels, addresses) =
        connected_over_tcp(&s, &nodes, sites, "http://server.invalid", &proxy).await;
    assert!(
        crosses_both_ways(sites, &addresses),
        "the nodes do not reach each other through ProxyGuard"
    );
    no_udp(capture);
    for (t, _) in &mut tunnels {
        t.remove().await;
    }
}

/// The WireGuard peers `GET /vpn/peers` lists for a node to reach directly.
async fn listed(s: &Server, token: &str) -> Vec<MeshPeer> {
    let v = s.ok("GET", "/vpn/peers", Some(token), json!(null)).await;
    serde_json::from_value(v.get("wireguard").cloned().unwrap_or(json!([]))).expect("peers")
}

/// Waits until `check` holds for each tunnel's health, or panics saying `what`.
async fn until_health(
    tunnels: &[&WireGuard],
    within: Duration,
    what: &str,
    check: fn(&Health) -> bool,
) {
    let deadline = Instant::now() + within;
    while !tunnels
        .iter()
        .all(|t| t.health().is_some_and(|h| check(&h)))
    {
        assert!(
            Instant::now() < deadline,
            "{what}: {:?}",
            tunnels.iter().map(|t| t.health()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The hub's share of what node `a` sent while `payload` crossed to b `n` times: bytes a's
/// device sent the hub meanwhile.
async fn through_hub(
    wg: &WireGuard,
    (from, to, dest): (&UdpSocket, &UdpSocket, SocketAddrV4),
    n: usize,
) -> usize {
    let before = wg.health().expect("running").tx_bytes;
    let payload = payload();
    for _ in 0..n {
        assert!(
            crosses(from, to, dest, &payload, Duration::from_secs(2)),
            "a datagram did not cross"
        );
    }
    // The device is looked at once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wg.health().expect("running").tx_bytes - before
}

/// Waits until both tunnels' health holds `check` (within, saying `what` if not), then sends
/// `n` datagrams from a to b: the bytes a's device sent the hub meanwhile.
async fn then_through_hub(
    (a, b): (&WireGuard, &WireGuard),
    sockets: (&UdpSocket, &UdpSocket, SocketAddrV4),
    (within, what, check): (Duration, &str, fn(&Health) -> bool),
    n: usize,
) -> usize {
    until_health(&[a, b], within, what, check).await;
    through_hub(a, sockets, n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_reach_each_other_trade_packets_directly_and_fall_back_to_the_hub() {
    if !privileged("nodes_that_reach_each_other_trade_packets_directly_and_fall_back_to_the_hub") {
        return;
    }
    let (s, _) = hub_server("wg-mesh", 10).await;
    let nodes = s.nodes(2).await;
    let (a_ns, b_ns) = tokio::task::spawn_blocking(|| (site(10), site(11)))
        .await
        .expect("sites");
    // A link of their own between the two sites, over which each reaches the other's WAN
    // address (where the hub hears it from); the hub stays behind the host.
    let status = std::process::Command::new("ip")
        .args([
            "link", "add", "mesh0", "netns", &a_ns.name, "type", "veth", "peer", "name", "mesh0",
            "netns", &b_ns.name,
        ])
        .status()
        .expect("ip");
    assert!(status.success(), "the sites' own link");
    let direct = [
        (
            &a_ns,
            "10.97.0.1",
            "10.98.11.2/32",
            "10.97.0.2",
            "10.98.10.2",
        ),
        (
            &b_ns,
            "10.97.0.2",
            "10.98.10.2/32",
            "10.97.0.1",
            "10.98.11.2",
        ),
    ];
    for (ns, own, other, via, src) in direct {
        ns.ip(&["addr", "add", &format!("{own}/30"), "dev", "mesh0"]);
        ns.ip(&["link", "set", "mesh0", "up"]);
        ns.ip(&["route", "add", other, "via", via, "src", src]);
    }

    // Each tunnel follows what the server lists for its node, as the node's scope follower
    // hands it on.
    let mut tunnels = Vec::new();
    let mut lists = Vec::new();
    let mut addresses = Vec::new();
    for (i, ((_, token), ns)) in nodes.iter().zip([&a_ns, &b_ns]).enumerate() {
        let dir = s.dir.join(format!("mesh{i}"));
        let key = WireGuard::keys(&dir).expect("key");
        let text = profile(&s, token, &key).await;
        let (mut wg, tun) = tunnel(ns, &dir, Duration::from_secs(10));
        let (list, mesh) = tokio::sync::watch::channel(Vec::new());
        wg.mesh = mesh;
        let address = wg.connect(&text).await.expect("handshake with the hub");
        ns.ip(&["addr", "add", &format!("{address}/16"), "dev", "tun0"]);
        tunnels.push((wg, tun));
        lists.push(list);
        addresses.push(address);
    }
    // The hub writes where it heard each node from every few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = [listed(&s, &nodes[0].1).await, listed(&s, &nodes[1].1).await];
        if got.iter().all(|l| l.len() == 1) {
            assert_eq!(got[0][0].address, addresses[1].to_string());
            assert_eq!(got[1][0].address, addresses[0].to_string());
            for (list, got) in lists.iter().zip(got) {
                list.send_replace(got);
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server lists no direct peers: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ab = (&tunnels[0].0, &tunnels[1].0);
    let (a_sock, b_sock, to_b) = pair(&a_ns, &b_ns, &addresses);
    let both = (&a_sock, &b_sock, to_b);
    let is_direct: fn(&Health) -> bool = |h| h.direct == 1;
    let first = (Duration::from_secs(15), "no direct path", is_direct);
    let via_hub = then_through_hub(ab, both, first, 50).await;
    assert!(
        via_hub < 1300,
        "{via_hub} bytes went to the hub while direct"
    );

    // Idle for longer than a WireGuard session lives (180 s) unless data renews it: the probes
    // keep renewing the sessions with the hub and between the two, so both stay connected and
    // direct.
    tokio::time::sleep(Duration::from_secs(190)).await;
    let renewed = |h: &Health| {
        let young = h
            .handshake_age
            .is_some_and(|a| a < Duration::from_secs(180));
        h.direct == 1 && h.handshakes > 1 && young
    };
    let idle = (
        Duration::from_secs(1),
        "an idle tunnel aged",
        renewed as fn(&Health) -> bool,
    );
    let via_hub = then_through_hub(ab, both, idle, 10).await;
    assert!(
        via_hub < 1300,
        "{via_hub} bytes went to the hub after an idle while"
    );

    // The sites' link fails both ways: both fall back to the hub, and the datagrams cross again.
    for (ns, _, other, ..) in direct {
        ns.ip(&["route", "replace", "blackhole", other]);
    }
    let fallback: fn(&Health) -> bool = |h| h.direct == 0;
    let failed = (Duration::from_secs(60), "no fallback to the hub", fallback);
    let via_hub = then_through_hub(ab, both, failed, 20).await;
    assert!(
        via_hub >= 20 * 1300,
        "only {via_hub} bytes went to the hub after the fallback"
    );

    // The link back: the next handshake takes them direct again.
    for (ns, _, other, via, src) in direct {
        ns.ip(&["route", "replace", other, "via", via, "src", src]);
    }
    let back = (
        Duration::from_secs(60),
        "the direct path did not come back",
        is_direct,
    );
    let via_hub = then_through_hub(ab, both, back, 50).await;
    assert!(
        via_hub < 1300,
        "{via_hub} bytes went to the hub after the path came back"
    );

    for (t, _) in &mut tunnels {
        t.remove().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_told_direct_false_lists_no_direct_peers() {
    if !privileged("a_server_told_direct_false_lists_no_direct_peers") {
        return;
    }
    let (s, _) = hub_server_with("wg-nodirect", 12, ", direct: false").await;
    let nodes = s.nodes(2).await;
    let (a_ns, b_ns) = tokio::task::spawn_blocking(|| (site(12), site(13)))
        .await
        .expect("sites");
    let (mut tunnels, _) = connected(&s, &nodes, [&a_ns, &b_ns], "nodirect").await;
    // Time for the hub to write where it heard both from (every 3 s): with `direct` left true,
    // each would list the other by now.
    tokio::time::sleep(Duration::from_secs(7)).await;
    for (_, token) in &nodes {
        assert_eq!(listed(&s, token).await, []);
    }
    for (t, _) in &mut tunnels {
        t.remove().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_use_wireguard_profiles_from_eduvpn() {
    if !privileged("nodes_use_wireguard_profiles_from_eduvpn") {
        return;
    }
    let port = common::free_udp_port();
    let portal = common::eduvpn::start(PortalOptions {
        tag: "wg".into(),
        confidential: false,
        no_profile: false,
        vpn: BuiltinVpn::new(SUBNET, "10.98.4.1", None, TunnelKind::OpenVpn),
        tls: false,
        wireguard: Some(port),
        proxyguard: false,
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

    // Node a stops, hours later (its access token long expired): it clears its address, and
    // the server ends its eduVPN session (`/disconnect`, as eduVPN's clients do on exit, with
    // a refreshed token): eduVPN forgets a's key.
    portal.expire_access_tokens();
    let ended = || {
        portal
            .disconnects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = ended();
    s.ok(
        "PATCH",
        &format!("/node/{}", nodes[0].0),
        Some(&nodes[0].1),
        json!({"clear_ip": true}),
    )
    .await;
    assert_eq!(ended(), before + 1, "no /disconnect for the node that left");
    assert!(
        !crosses(&a_sock, &b_sock, to_b, &payload, Duration::from_secs(2)),
        "traffic of a node whose eduVPN session ended"
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

/// The WireGuard peer of the router's own path: a device in the topology's outside world
/// (its WAN neighbour), listening on `PEER_PORT`, with `tun0` at `WG_PEER` standing in for a
/// far node's router. Stopped (then `tun0` removed) when dropped.
struct WgPeer {
    _device: Running,
    _tun: StandIn,
}

const WG_PEER: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 9);
const PEER_PORT: u16 = 51820;

impl WgPeer {
    /// Starts the peer in `ns`, admitting `node` at the node's VPN address.
    fn start(ns: &TestNs, keys: KeyPair, node: [u8; 32]) -> WgPeer {
        let (ends, tun) = stand_in(ns, topology::MTU);
        ns.ip(&["addr", "add", &format!("{WG_PEER}/16"), "dev", "tun0"]);
        let device = Running::start(ns, move |ready, stopped| async move {
            // The peer sends no probe: the node's handshake comes first.
            let (_, probed) = tokio::sync::mpsc::channel(1);
            let ip = router_ends(ends, topology::MTU, probed).expect("the port");
            let node_net = ipnetwork::Ipv4Network::new(topology::V, 32).expect("a /32");
            let device = gotatun::device::build()
                .with_default_udp()
                .with_ip_pair(ip.0, ip.1)
                .with_private_key(keys.secret)
                .with_listen_port(PEER_PORT)
                .with_peer(
                    Peer::new(PublicKey::from(node))
                        .with_allowed_ip(ipnetwork::IpNetwork::V4(node_net)),
                )
                .build()
                .await
                .expect("the peer's device");
            ready.send(()).expect("the test waits");
            let _ = stopped.await;
            device.stop().await;
        });
        WgPeer {
            _device: device,
            _tun: tun,
        }
    }
}

/// The router's own path over WireGuard, with no device between them: the node's tunnel
/// attached to a real data plane (containers on veths, mappings) and a WireGuard peer on the
/// WAN. TCP both ways with every byte checked (a container's TSO super-packets are cut to the
/// tunnel's MTU on the way out; a wrong checksum would stall the stream), UDP, and no tun0 in
/// the hub namespace. Then the tunnel down: what containers send to the peer is counted as
/// `tunnel_down`; and with the tunnel gone altogether, nothing for a peer leaves by the WAN
/// link in clear (tcpdump on the WAN neighbour) and the kernel, not the WAN, is where it ends.
///
/// The tunnel's encrypted packets leave in UDP GSO bursts (the WAN neighbour receives datagrams
/// longer than any MTU, which its kernel cuts or its socket's GRO keeps whole); with
/// `wan_gso` false the WAN link has no checksum offload, so no burst crosses it (the kernel cuts
/// them before the link, or, before Linux 6.11, refuses them and the tunnel sends packet by
/// packet) and nothing is lost.
fn wireguard_carries_the_routers_traffic(tag: &str, offload: bool, queues: usize, wan_gso: bool) {
    let t = Topology::new(
        tag,
        Mode::Algonet {
            offload,
            busy_poll_us: 0,
            queues,
        },
    );
    // The neighbour routes the VPN at the node in clear; here it reaches the peer by tun0.
    t.wan.ip(&["route", "del", "10.76.0.0/16"]);
    let dir = std::env::temp_dir().join(format!("algonet-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let node_key = WireGuard::keys(&dir).expect("the node's key");
    let peer_key = KeyPair::generate().expect("the peer's key");
    let peer_public = peer_key.public_b64();
    let peer = WgPeer::start(&t.wan, peer_key, node_key.public.to_bytes());
    let router_ns = Arc::new(Netns::open(format!("/run/netns/{}", t.router.name)).expect("netns"));
    let mut wg = WireGuard::new(
        router_ns,
        t.handle().tunnel(),
        dir.clone(),
        SUBNET.parse().expect("subnet"),
        topology::MTU,
        Duration::from_secs(10),
    );
    let profile = format!(
        "[Interface]\nAddress = {}/16\n\n[Peer]\nPublicKey = {peer_public}\n\
         AllowedIPs = {SUBNET}\nEndpoint = {}:{PEER_PORT}\n",
        topology::V,
        topology::WAN_HOST
    );
    let address = t.rt.block_on(wg.connect(&profile)).expect("handshake");
    assert_eq!(address, topology::V);
    assert!(
        !t.router.ip(&["-br", "link"]).contains("tun0"),
        "a tunnel device in the hub namespace"
    );

    // Peer -> node's public port -> container 1, and back.
    let seen = echo_server(&t.c1, 8888);
    let reach = SocketAddrV4::new(topology::V, 49152);
    assert_eq!(tcp_echo(&t.wan.ns, reach).expect("peer to c1"), ECHO_LINE);
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(2))
            .expect("accepted")
            .ip(),
        WG_PEER
    );

    // Bulk both ways, every byte checked.
    const BULK: usize = 16 << 20;
    if !wan_gso {
        t.router.ethtool("eth0", &["tx", "off"]);
    }
    let bursts = Capture::start(&t.wan, "eth0", "udp and greater 3000", &dir.join("gso.txt"));
    let at_peer = sink(&t.wan, 7000);
    send_bulk(&t.c2, SocketAddrV4::new(WG_PEER, 7000), BULK).expect("c2 to the peer");
    assert_eq!(at_peer.join().expect("sink") as usize, BULK, "c2 -> peer");
    let bursts = bursts
        .stop()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    if wan_gso {
        assert!(bursts > 0, "no GSO burst reached the WAN neighbour");
    } else {
        assert_eq!(bursts, 0, "GSO bursts where the link refuses them");
    }
    let at_c2 = sink(&t.c2, 8888);
    send_bulk(&t.wan, SocketAddrV4::new(topology::V, 49160), BULK).expect("peer to c2");
    assert_eq!(at_c2.join().expect("sink") as usize, BULK, "peer -> c2");

    // UDP: the answer comes from the public port.
    let c1_udp = udp_socket(&t.c1, 9000);
    let peer_udp = udp_socket(&t.wan, 5000);
    peer_udp
        .send_to(b"ping", SocketAddrV4::new(topology::V, 49153))
        .expect("send");
    let mut buf = [0u8; 16];
    let (n, from) = c1_udp.recv_from(&mut buf).expect("c1 receives");
    assert_eq!(&buf[..n], b"ping");
    c1_udp.send_to(b"pong", from).expect("answer");
    let (n, from) = peer_udp.recv_from(&mut buf).expect("peer receives");
    assert_eq!(
        (&buf[..n], from),
        (&b"pong"[..], SocketAddr::from((topology::V, 49153)))
    );
    let (counters, io) = t.rt.block_on(t.handle().counters()).expect("counters");
    assert!(io.tunnel_in > 1000 && io.tunnel_out > 100, "{io:?}");
    assert_eq!(counters.drops(DropReason::Malformed), 0);

    // The tunnel down (as the node marks it when handshakes stop): held back and counted.
    let capture = Capture::start(&t.wan, "eth0", "net 10.76.0.0/16", &dir.join("wan.txt"));
    let h = t.handle();
    t.rt.block_on(h.with(|r| r.set_tunnel_up(false)))
        .expect("running");
    let c2_udp = udp_socket(&t.c2, 6000);
    let to_peer = SocketAddrV4::new(WG_PEER, 5000);
    for _ in 0..20 {
        c2_udp.send_to(b"held back", to_peer).expect("send");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(t.drops(DropReason::TunnelDown) >= 20);
    // The tunnel gone, the router still forwarding: the kernel has no route out for a peer.
    t.rt.block_on(wg.remove());
    t.rt.block_on(h.with(|r| r.set_tunnel_up(true)))
        .expect("running");
    let before = t.rt.block_on(h.counters()).expect("counters").1;
    for _ in 0..20 {
        c2_udp.send_to(b"no tunnel", to_peer).expect("send");
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = t.rt.block_on(h.counters()).expect("counters").1;
    assert_eq!(
        after.tunnel_out, before.tunnel_out,
        "sent to a detached tunnel"
    );
    assert!(
        after.writes >= before.writes + 20,
        "{before:?} -> {after:?}"
    );
    let seen = capture.stop();
    assert!(seen.trim().is_empty(), "in clear on the WAN:\n{seen}");
    let clear = peer_udp.recv_from(&mut buf);
    assert!(clear.is_err(), "the peer got {clear:?}");
    drop(peer);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wireguard_carries_the_routers_traffic_with_offload() {
    if privileged("wireguard_carries_the_routers_traffic_with_offload") {
        wireguard_carries_the_routers_traffic("wgo", true, 1, true);
    }
}

#[test]
fn wireguard_carries_the_routers_traffic_without_offload() {
    if privileged("wireguard_carries_the_routers_traffic_without_offload") {
        wireguard_carries_the_routers_traffic("wgn", false, 1, true);
    }
}

/// With two queues the tunnel's packets enter at the first worker and go on to the router
/// owning their connection; every worker hands the tunnel what it sends to peers.
#[test]
fn wireguard_carries_the_routers_traffic_on_two_queues() {
    if privileged("wireguard_carries_the_routers_traffic_on_two_queues") {
        wireguard_carries_the_routers_traffic("wgq", true, 2, true);
    }
}

/// A WAN link without checksum offload, which cannot carry UDP GSO bursts.
#[test]
fn wireguard_carries_the_routers_traffic_where_the_wan_has_no_checksum_offload() {
    if privileged("wireguard_carries_the_routers_traffic_where_the_wan_has_no_checksum_offload") {
        wireguard_carries_the_routers_traffic("wgg", true, 1, false);
    }
}
