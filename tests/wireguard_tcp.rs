//! Tier 1: the built-in hub's WireGuard over TCP (`GET /vpn/tcp`, ProxyGuard's protocol) at
//! the HTTP level, spoken by hand on a raw connection: a request that does not ask to switch
//! to `UoTLV/1` is refused with 426, a server without a WireGuard hub answers 404; a switched
//! connection carries datagrams both ways between it and the hub's UDP port on loopback, whole
//! and in order, however the stream is cut; and switched connections count against the
//! server's bounds on connections from one address for as long as they live, and in the
//! server's metrics.

use algonet_testkit as common;

use std::time::Duration;

use common::server::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A UDP socket on a free loopback port, standing where the hub listens: the hub binds its
/// port only once it admits a node, and these tests admit none.
async fn hub_port() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind")
}

/// A server whose built-in VPN is a WireGuard hub on `port`, with more configuration.
async fn hub_server(tag: &str, port: u16, more: &str) -> common::server::Server {
    let vpn = format!(
        "vpn: {{subnet: 10.76.0.0/16, remote: 127.0.0.1, port: {port}, tunnel: wireguard}}\n{more}"
    );
    server(tag, &vpn).await
}

/// The request's answer head, and the connection (switched, if it was).
async fn ask(base: &str, head: &str) -> (String, TcpStream) {
    let url = reqwest::Url::parse(base).expect("url");
    let at = format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port().expect("port")
    );
    let mut c = TcpStream::connect(at).await.expect("connect");
    let request = format!("GET /api/vpn/tcp HTTP/1.1\r\nHost: hub\r\n{head}\r\n");
    c.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut byte))
            .await
            .expect("an answer in time")
            .expect("read");
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.push(byte[0]);
    }
    (String::from_utf8_lossy(&answer).to_lowercase(), c)
}

const SWITCH: &str = "Connection: Upgrade\r\nUpgrade: UoTLV/1\r\n";

#[tokio::test]
async fn only_a_switch_to_uotlv_on_a_wireguard_hub_is_taken() {
    let hub = hub_port().await;
    let s = hub_server("wgtcp-refuse", hub.local_addr().expect("addr").port(), "").await;
    for head in [
        "",
        "Upgrade: UoTLV/1\r\n",
        "Connection: Upgrade\r\nUpgrade: websocket\r\n",
        "Connection: Upgrade\r\nUpgrade: UoTLV/2\r\n",
    ] {
        let (answer, _) = ask(&s.base, head).await;
        assert!(answer.starts_with("http/1.1 426"), "{head:?}: {answer}");
        assert!(answer.contains("upgrade: uotlv/1"), "{answer}");
    }
    let (answer, _) = ask(&s.base, SWITCH).await;
    assert!(answer.starts_with("http/1.1 101"), "{answer}");

    let openvpn = server(
        "wgtcp-openvpn",
        "vpn: {subnet: 10.76.0.0/16, remote: 127.0.0.1}\n",
    )
    .await;
    let (answer, _) = ask(&openvpn.base, SWITCH).await;
    assert!(answer.starts_with("http/1.1 404"), "{answer}");
}

#[tokio::test]
async fn a_switched_connection_carries_datagrams_to_the_hub_and_back() {
    let hub = hub_port().await;
    let s = hub_server("wgtcp-relay", hub.local_addr().expect("addr").port(), "").await;
    let (answer, mut c) = ask(&s.base, SWITCH).await;
    assert!(answer.starts_with("http/1.1 101"), "{answer}");

    // Datagrams of every size WireGuard sends and more (up to UDP's largest over IPv4),
    // framed, written in one piece and then a byte at a time: each arrives at the hub whole
    // and in order, from one socket. A frame longer than UDP carries is lost, as UDP would
    // lose it, and the rest still cross.
    let datagrams: Vec<Vec<u8>> = [148usize, 92, 32, 1420, 1, 9000, 65_507]
        .iter()
        .map(|&n| (0..n).map(|i| (i * 7 % 251) as u8).collect())
        .collect();
    let mut stream = Vec::new();
    for (i, d) in datagrams.iter().enumerate() {
        if i == 3 {
            uotlv::encode(&vec![1; 65_535], &mut stream).expect("frame");
        }
        uotlv::encode(d, &mut stream).expect("frame");
    }
    let (first, rest) = stream.split_at(stream.len() / 2);
    c.write_all(first).await.expect("write");
    for b in rest {
        c.write_all(std::slice::from_ref(b)).await.expect("write");
    }
    let mut buf = vec![0u8; 70_000];
    let mut from = None;
    for d in &datagrams {
        let (n, at) = tokio::time::timeout(Duration::from_secs(5), hub.recv_from(&mut buf))
            .await
            .expect("the datagram reached the hub")
            .expect("recv");
        assert_eq!(&buf[..n], &d[..], "{} bytes changed on the way", d.len());
        assert!(at.ip().is_loopback(), "from {at}");
        assert!(from.is_none_or(|f| f == at), "from two sockets");
        from = Some(at);
    }

    // The hub's answers come back framed, in order.
    let from = from.expect("a socket");
    for d in &datagrams[..4] {
        hub.send_to(d, from).await.expect("send");
    }
    let mut reader = uotlv::Reader::default();
    let mut back = Vec::new();
    while back.len() < 4 {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(reader.space()))
            .await
            .expect("the hub's answer came back")
            .expect("read");
        assert!(n > 0, "closed");
        reader.filled(n);
        while let Some(d) = reader.next() {
            back.push(d.to_vec());
        }
    }
    assert_eq!(back, datagrams[..4]);
}

#[tokio::test]
async fn switched_connections_count_against_the_bounds_while_they_live() {
    let hub = hub_port().await;
    let s = hub_server(
        "wgtcp-bounds",
        hub.local_addr().expect("addr").port(),
        "max_connections_per_address: 2\n",
    )
    .await;
    let (a, first) = ask(&s.base, SWITCH).await;
    let (b, second) = ask(&s.base, SWITCH).await;
    assert!(
        a.starts_with("http/1.1 101") && b.starts_with("http/1.1 101"),
        "{a} {b}"
    );
    assert_eq!(open_now(&s).await, 2);
    let (refused, _) = ask(&s.base, SWITCH).await;
    assert!(refused.starts_with("http/1.1 503"), "a third: {refused}");
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(open_now(&s).await, 0);
    let (again, _) = ask(&s.base, SWITCH).await;
    assert!(
        again.starts_with("http/1.1 101"),
        "once they closed: {again}"
    );
}

/// The server's `server_wireguard_tcp_connections` gauge.
async fn open_now(s: &common::server::Server) -> u64 {
    let hub = s.state.vpn.hub().map(|h| h.counters());
    let text =
        algonet::server::metrics::scrape(s.state.store.clone(), s.state.metrics.clone(), hub).await;
    text.lines()
        .find_map(|l| l.strip_prefix("algonet_server_wireguard_tcp_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no gauge in {text}"))
}
