//! Behaviour of the router as the node sees it: what comes out for what goes in.

mod common;

use std::time::Duration;

use common::*;
use netstack::{
    Action, Config, DropReason, Instant, L4Checksum, Mapping, Meta, Protocol, Reply, Router, RunId,
    Side, Timeouts, Vpn,
};

const T0: Instant = Instant::from_secs(1);

/// Runs one packet; returns the action and the bytes to write back (empty on drop).
fn go(r: &mut Router, pkt: &[u8], now: Instant) -> (Action, Vec<u8>) {
    go_meta(r, pkt, Meta::default(), now)
}

fn go_meta(r: &mut Router, pkt: &[u8], meta: Meta, now: Instant) -> (Action, Vec<u8>) {
    let mut buf = vec![0u8; 65536];
    buf[..pkt.len()].copy_from_slice(pkt);
    let a = r.process(&mut buf, pkt.len(), meta, now);
    let out = match a {
        Action::Forward { len, .. } | Action::Reply { len, .. } => buf[..usize::from(len)].to_vec(),
        Action::Drop(_) => Vec::new(),
    };
    if !out.is_empty() {
        assert_checksums(&out);
    }
    (a, out)
}

fn forwarded(r: &mut Router, pkt: &[u8], now: Instant) -> Vec<u8> {
    let (a, out) = go(r, pkt, now);
    assert!(
        matches!(a, Action::Forward { .. }),
        "expected forward, got {a:?}"
    );
    out
}

fn dropped(r: &mut Router, pkt: &[u8], now: Instant) -> DropReason {
    match go(r, pkt, now).0 {
        Action::Drop(reason) => reason,
        a => panic!("expected a drop, got {a:?}"),
    }
}

/// The side a forwarded packet leaves by: the driver writes container-bound packets from a
/// thread of its own and must not have to look at addresses to know which those are.
#[test]
fn a_forward_says_which_side_the_packet_leaves_by() {
    let mut r = lab(Config::default());
    let leaves = |r: &mut Router, pkt: &[u8]| match go(r, pkt, T0).0 {
        Action::Forward { to, .. } => to,
        a => panic!("expected forward, got {a:?}"),
    };
    let inbound = tcp(sa(PEER, 40000), sa(V, 49152), Flags::Syn, b"");
    assert_eq!(leaves(&mut r, &inbound), Side::Container);
    let answer = tcp(sa(C1, 8888), sa(PEER, 40000), Flags::SynAck, b"");
    assert_eq!(leaves(&mut r, &answer), Side::Vpn);
    let outbound = udp(sa(C2, 5000), sa(PEER, 53), b"q");
    let (a, out) = go(&mut r, &outbound, T0);
    assert!(matches!(a, Action::Forward { to: Side::Vpn, .. }), "{a:?}");
    let public = endpoints(&out).0.port();
    let back = udp(sa(PEER, 53), sa(V, public), b"a");
    assert_eq!(leaves(&mut r, &back), Side::Container);
    let hairpin = tcp(sa(C2, 41000), sa(V, 49152), Flags::Syn, b"");
    assert_eq!(leaves(&mut r, &hairpin), Side::Container);
    let ping_out = ping(C1, PEER, 7, 1, false);
    assert_eq!(leaves(&mut r, &ping_out), Side::Vpn);
}

/// While the tunnel is down nothing goes toward peers (counted as tunnel_down), the node's own
/// traffic between its containers goes on, and a connection made before carries on after.
#[test]
fn a_paused_tunnel_holds_back_what_goes_to_peers_and_resumes() {
    let mut r = lab(Config::default());
    let syn = tcp(sa(C1, 41000), sa(PEER, 443), Flags::Syn, b"");
    let out = forwarded(&mut r, &syn, T0);
    let public = endpoints(&out).0;
    r.set_tunnel_up(false);
    let data = tcp(sa(C1, 41000), sa(PEER, 443), Flags::Ack, b"x");
    assert_eq!(dropped(&mut r, &data, T0), DropReason::TunnelDown);
    assert_eq!(
        dropped(&mut r, &udp(sa(C2, 5000), sa(PEER, 53), b"q"), T0),
        DropReason::TunnelDown
    );
    let ping_out = ping(C1, PEER, 9, 1, false);
    assert_eq!(dropped(&mut r, &ping_out, T0), DropReason::TunnelDown);
    // Hairpin never crosses the tunnel.
    forwarded(
        &mut r,
        &tcp(sa(C2, 41001), sa(V, 49152), Flags::Syn, b""),
        T0,
    );
    assert_eq!(r.counters().drops(DropReason::TunnelDown), 3);
    r.set_tunnel_up(true);
    let again = forwarded(&mut r, &data, T0);
    assert_eq!(
        endpoints(&again).0,
        public,
        "the connection kept its public port"
    );
}

#[test]
fn peer_reaches_mapped_tcp_port_and_replies_come_back_from_the_public_port() {
    let mut r = lab(Config::default());
    let syn = forwarded(
        &mut r,
        &tcp(sa(PEER, 40000), sa(V, 49152), Flags::Syn, b""),
        T0,
    );
    assert_eq!(endpoints(&syn), (sa(PEER, 40000), sa(C1, 8888)));
    let synack = forwarded(
        &mut r,
        &tcp(sa(C1, 8888), sa(PEER, 40000), Flags::SynAck, b""),
        T0,
    );
    assert_eq!(endpoints(&synack), (sa(V, 49152), sa(PEER, 40000)));
    let data = forwarded(
        &mut r,
        &tcp(sa(PEER, 40000), sa(V, 49152), Flags::Ack, b"hello"),
        T0,
    );
    assert_eq!(endpoints(&data), (sa(PEER, 40000), sa(C1, 8888)));
    assert_eq!(&data[data.len() - 5..], b"hello");
    assert_eq!(r.connections(), 1);
    let c = r.counters();
    assert_eq!(c.forwarded_packets, [2, 1]);
    assert_eq!(c.total_drops(), 0);
}

#[test]
fn peer_reaches_mapped_udp_port() {
    let mut r = lab(Config::default());
    let out = forwarded(&mut r, &udp(sa(PEER, 5000), sa(V, 49153), b"ping"), T0);
    assert_eq!(endpoints(&out), (sa(PEER, 5000), sa(C1, 9000)));
    let back = forwarded(&mut r, &udp(sa(C1, 9000), sa(PEER, 5000), b"pong"), T0);
    assert_eq!(endpoints(&back), (sa(V, 49153), sa(PEER, 5000)));
}

#[test]
fn container_reaches_peer_from_the_vpn_address() {
    let mut r = lab(Config::default());
    // An ephemeral port in the outbound range is kept.
    let out = forwarded(
        &mut r,
        &tcp(sa(C2, 40001), sa(PEER, 49170), Flags::Syn, b""),
        T0,
    );
    assert_eq!(endpoints(&out), (sa(V, 40001), sa(PEER, 49170)));
    let back = forwarded(
        &mut r,
        &tcp(sa(PEER, 49170), sa(V, 40001), Flags::SynAck, b""),
        T0,
    );
    assert_eq!(endpoints(&back), (sa(PEER, 49170), sa(C2, 40001)));
    // A second container using the same port to the same peer gets another one.
    let out2 = forwarded(
        &mut r,
        &tcp(sa(C1, 40001), sa(PEER, 49170), Flags::Syn, b""),
        T0,
    );
    let (src, _) = endpoints(&out2);
    assert_eq!(*src.ip(), V);
    assert_ne!(src.port(), 40001);
    assert!((32768..=49151).contains(&src.port()));
    // A port outside the range is not kept.
    let out3 = forwarded(&mut r, &udp(sa(C2, 1234), sa(PEER, 53), b"q"), T0);
    assert_ne!(endpoints(&out3).0.port(), 1234);
}

#[test]
fn mapped_container_opens_connections_from_its_public_port() {
    let mut r = lab(Config::default());
    let out = forwarded(&mut r, &udp(sa(C1, 9000), sa(PEER, 49999), b"hi"), T0);
    assert_eq!(endpoints(&out), (sa(V, 49153), sa(PEER, 49999)));
}

#[test]
fn ping_to_the_node_is_answered_and_ping_from_a_container_is_translated() {
    let mut r = lab(Config::default());
    let (a, out) = go(&mut r, &ping(PEER, V, 7, 1, false), T0);
    assert_eq!(
        a,
        Action::Reply {
            len: u16::try_from(out.len()).expect("an IPv4 length"),
            reply: Reply::EchoReply
        }
    );
    assert_eq!(endpoints(&out), (sa(V, 7), sa(PEER, 7)));
    assert_eq!(out[20], 0, "echo reply type");
    let (a, out) = go(&mut r, &ping(C1, V, 8, 1, false), T0);
    assert!(matches!(a, Action::Reply { .. }));
    assert_eq!(endpoints(&out).1, sa(C1, 8));

    let out = forwarded(&mut r, &ping(C1, PEER, 9, 1, false), T0);
    let (src, dst) = endpoints(&out);
    assert_eq!((*src.ip(), *dst.ip()), (V, PEER));
    let back = forwarded(&mut r, &ping(PEER, V, src.port(), 1, true), T0);
    assert_eq!(endpoints(&back), (sa(PEER, 9), sa(C1, 9)));
    // An echo reply nobody asked for goes nowhere.
    assert_eq!(
        dropped(&mut r, &ping(PEER, V, 4242, 1, true), T0),
        DropReason::NoConnection
    );
}

#[test]
fn hairpin_between_containers_through_the_vpn_address() {
    let mut r = lab(Config::default());
    let out = forwarded(
        &mut r,
        &tcp(sa(C2, 45000), sa(V, 49152), Flags::Syn, b""),
        T0,
    );
    let (src, dst) = endpoints(&out);
    assert_eq!(dst, sa(C1, 8888));
    assert_eq!(
        *src.ip(),
        V,
        "the target sees the node's VPN address, not C2's"
    );
    let back = forwarded(&mut r, &tcp(sa(C1, 8888), src, Flags::SynAck, b""), T0);
    assert_eq!(endpoints(&back), (sa(V, 49152), sa(C2, 45000)));
    // A container may reach its own mapping too.
    let own = forwarded(&mut r, &udp(sa(C1, 45001), sa(V, 49153), b"self"), T0);
    assert_eq!(endpoints(&own).1, sa(C1, 9000));
}

#[test]
fn unmapped_ports_are_refused_like_a_closed_port() {
    let mut r = lab(Config::default());
    let syn = tcp(sa(PEER, 40000), sa(V, 50000), Flags::Syn, b"");
    let (a, rst) = go(&mut r, &syn, T0);
    assert!(
        matches!(
            a,
            Action::Reply {
                reply: Reply::TcpReset,
                ..
            }
        ),
        "{a:?}"
    );
    assert_eq!(endpoints(&rst), (sa(V, 50000), sa(PEER, 40000)));
    assert_eq!(rst[33], 0x14, "RST|ACK");
    assert_eq!(
        u32::from_be_bytes([rst[28], rst[29], rst[30], rst[31]]),
        1001,
        "ack = seq + SYN"
    );

    let (a, unreach) = go(&mut r, &udp(sa(PEER, 5000), sa(V, 50001), b"x"), T0);
    assert!(
        matches!(
            a,
            Action::Reply {
                reply: Reply::PortUnreachable,
                ..
            }
        ),
        "{a:?}"
    );
    assert_eq!((unreach[20], unreach[21]), (3, 3));
    assert_eq!(
        &unreach[28 + 12..28 + 20],
        &udp(sa(PEER, 5000), sa(V, 50001), b"x")[12..20]
    );
    // A RST is never answered.
    assert_eq!(
        dropped(
            &mut r,
            &tcp(sa(PEER, 40000), sa(V, 50000), Flags::Rst, b""),
            T0
        ),
        DropReason::NoMapping
    );
    assert_eq!(r.counters().drops(DropReason::NoMapping), 3);
    assert_eq!(r.connections(), 0);
}

#[test]
fn answers_are_rate_limited() {
    let mut r = lab(Config {
        replies_per_sec: 10,
        reply_burst: 5,
        ..Config::default()
    });
    let mut answered = 0;
    for port in 0..20 {
        if let (Action::Reply { .. }, _) =
            go(&mut r, &udp(sa(PEER, 5000 + port), sa(V, 50001), b"x"), T0)
        {
            answered += 1;
        }
    }
    assert_eq!(answered, 5);
    assert_eq!(r.counters().drops(DropReason::RateLimited), 15);
    // 100 ms later one more token is there.
    let (a, _) = go(
        &mut r,
        &udp(sa(PEER, 6000), sa(V, 50001), b"x"),
        Instant::from_millis(1100),
    );
    assert!(matches!(a, Action::Reply { .. }));
}

#[test]
fn bypass_attempts_are_dropped_and_counted() {
    let mut r = lab(Config::default());
    let cases = [
        (
            tcp(sa(PEER, 1), sa(C1, 8888), Flags::Syn, b""),
            DropReason::NotForNode,
        ),
        (
            tcp(sa(PEER, 1), sa(PEER2, 8888), Flags::Syn, b""),
            DropReason::NotForNode,
        ),
        (
            tcp(sa(C1, 40000), sa(C2, 8888), Flags::Syn, b""),
            DropReason::ContainerToInternal,
        ),
        (
            udp(
                sa(C1, 40000),
                sa(std::net::Ipv4Addr::new(8, 8, 8, 8), 53),
                b"",
            ),
            DropReason::OutsideVpn,
        ),
        (
            udp(
                sa(C1, 40000),
                sa(std::net::Ipv4Addr::new(10, 76, 255, 255), 9),
                b"",
            ),
            DropReason::Broadcast,
        ),
        (
            tcp(
                sa(std::net::Ipv4Addr::new(192, 168, 1, 5), 1),
                sa(V, 49152),
                Flags::Syn,
                b"",
            ),
            DropReason::UnknownSource,
        ),
        (
            tcp(sa(V, 1), sa(V, 49152), Flags::Syn, b""),
            DropReason::UnknownSource,
        ),
        (
            tcp(sa(PEER, 1), sa(V, 49152), Flags::Ack, b""),
            DropReason::NoConnection,
        ),
    ];
    for (pkt, reason) in &cases {
        assert_eq!(dropped(&mut r, pkt, T0), *reason, "{reason:?}");
        assert!(r.counters().drops(*reason) >= 1);
    }
    assert_eq!(r.connections(), 0);
}

#[test]
fn malformed_and_foreign_packets_are_dropped_with_a_reason() {
    let mut r = lab(Config::default());
    let good = udp(sa(PEER, 5000), sa(V, 49153), b"abcd");
    let mut bad_csum = good.clone();
    bad_csum[10] ^= 0xff;
    let mut short_udp = good.clone();
    short_udp[24..26].copy_from_slice(&100u16.to_be_bytes());
    let mut gre = good.clone();
    gre[9] = 47;
    fix_ip_checksum(&mut gre);
    let mut timestamp = ping(PEER, V, 1, 1, false);
    timestamp[20] = 13;
    let mut v6 = good.clone();
    v6[0] = 0x60;
    let cases: [(&[u8], DropReason); 8] = [
        (&[], DropReason::Malformed),
        (&good[..19], DropReason::Malformed),
        (&bad_csum, DropReason::BadIpChecksum),
        (&short_udp, DropReason::Malformed),
        (&gre, DropReason::UnsupportedProtocol),
        (&timestamp, DropReason::UnsupportedIcmp),
        (&v6, DropReason::Ipv6),
        (&[0x15; 40], DropReason::NotIp),
    ];
    for (pkt, reason) in cases {
        assert_eq!(dropped(&mut r, pkt, T0), reason, "{reason:?}");
    }
    let mut off = Router::new(Config::default()).expect("router");
    assert_eq!(dropped(&mut off, &good, T0), DropReason::NoVpn);
}

#[test]
fn removing_a_mapping_stops_it_at_once_and_frees_its_state() {
    let mut r = lab(Config::default());
    forwarded(
        &mut r,
        &tcp(sa(PEER, 40000), sa(V, 49152), Flags::Syn, b""),
        T0,
    );
    forwarded(
        &mut r,
        &tcp(sa(C2, 45000), sa(V, 49152), Flags::Syn, b""),
        T0,
    );
    forwarded(&mut r, &udp(sa(PEER, 5000), sa(V, 49153), b""), T0);
    assert_eq!(r.connections(), 3);
    let m = r.remove_mapping(Protocol::Tcp, 49152).expect("was mapped");
    assert_eq!(m.container, sa(C1, 8888));
    assert_eq!(
        r.connections(),
        1,
        "both TCP connections through the mapping are gone"
    );
    // The established flow's next packet is refused, not delivered.
    let (a, _) = go(
        &mut r,
        &tcp(sa(PEER, 40000), sa(V, 49152), Flags::Ack, b"late"),
        T0,
    );
    assert!(
        matches!(
            a,
            Action::Reply {
                reply: Reply::TcpReset,
                ..
            }
        ),
        "{a:?}"
    );
    r.remove_run(RUN1);
    assert_eq!(r.connections(), 0);
    assert_eq!(r.mappings().count(), 1, "only run 2's mapping is left");
    assert_eq!(
        dropped(&mut r, &udp(sa(C1, 9000), sa(PEER, 5000), b""), T0),
        DropReason::UnknownSource
    );
}

#[test]
fn control_errors_say_what_is_wrong() {
    let mut r = lab(Config::default());
    let m = |port, ip| Mapping {
        protocol: Protocol::Tcp,
        public_port: port,
        container: sa(ip, 80),
        run: RUN1,
    };
    assert_eq!(
        r.add_mapping(m(49152, C1))
            .expect_err("must be refused")
            .to_string(),
        "public port 49152/Tcp is already mapped"
    );
    assert!(r
        .add_mapping(m(40000, C1))
        .expect_err("must be refused")
        .to_string()
        .contains("outbound range 32768-49151"));
    assert!(r
        .add_mapping(m(50000, PEER))
        .expect_err("must be refused")
        .to_string()
        .contains("not registered"));
    assert!(r
        .add_container(PEER, RunId(9), 9)
        .expect_err("must be refused")
        .to_string()
        .contains("VPN subnet"));
    assert!(r
        .add_container(C1, RunId(9), 9)
        .expect_err("must be refused")
        .to_string()
        .contains("already registered"));
    let bad = Config {
        timeouts: Timeouts {
            udp: Duration::from_secs(30),
            ..Timeouts::default()
        },
        ..Config::default()
    };
    assert!(Router::new(bad)
        .expect_err("must be refused")
        .to_string()
        .contains("RFC 4787"));
    // The index names at most 2^24 - 2 connections: a table that large is accepted, one more
    // is refused, and so is none.
    for (max, accepted) in [(0, false), ((1 << 24) - 2, true), ((1 << 24) - 1, false)] {
        let config = Config {
            max_connections: max,
            ..Config::default()
        };
        assert_eq!(
            Router::new(config).is_ok(),
            accepted,
            "max_connections {max}"
        );
    }
    assert!(r
        .set_vpn(Some(Vpn {
            address: V,
            prefix_len: 16,
            mtu: 500
        }))
        .is_err());
}

#[test]
fn idle_connections_expire_by_class() {
    let mut r = lab(Config::default());
    forwarded(&mut r, &udp(sa(PEER, 5000), sa(V, 49153), b""), T0);
    forwarded(&mut r, &udp(sa(C1, 9000), sa(PEER, 5000), b""), T0);
    // Replied UDP lives 300 s after its last packet.
    let t = T0.saturating_add(Duration::from_secs(200));
    forwarded(&mut r, &udp(sa(PEER, 5000), sa(V, 49153), b""), t);
    r.poll(T0.saturating_add(Duration::from_secs(400)));
    assert_eq!(r.connections(), 1, "refreshed at 200 s");
    let late = T0.saturating_add(Duration::from_secs(501));
    r.poll(late);
    assert_eq!(r.connections(), 0);
    assert_eq!(r.counters().connections_expired, 1);
    assert!(r.poll_at().is_none());

    // A TCP connection closed by FIN in both directions goes within the closing timeout.
    forwarded(
        &mut r,
        &tcp(sa(PEER, 40000), sa(V, 49152), Flags::Syn, b""),
        late,
    );
    forwarded(
        &mut r,
        &tcp(sa(C1, 8888), sa(PEER, 40000), Flags::SynAck, b""),
        late,
    );
    forwarded(
        &mut r,
        &tcp(sa(PEER, 40000), sa(V, 49152), Flags::Fin, b""),
        late,
    );
    forwarded(
        &mut r,
        &tcp(sa(C1, 8888), sa(PEER, 40000), Flags::Fin, b""),
        late,
    );
    let at = r.poll_at().expect("something to expire");
    assert!(at <= late.saturating_add(Duration::from_secs(61)), "{at:?}");
    r.poll(late.saturating_add(Duration::from_secs(61)));
    assert_eq!(r.connections(), 0);
}

#[test]
fn a_stale_connection_is_not_used_even_before_it_is_reaped() {
    let mut r = lab(Config::default());
    let out = forwarded(&mut r, &udp(sa(C2, 1234), sa(PEER, 53), b""), T0);
    let public = endpoints(&out).0;
    // Unanswered for 121 s: the peer's late answer finds nothing, without any poll, and is
    // refused like any packet to a closed port.
    let t = T0.saturating_add(Duration::from_secs(121));
    let (a, _) = go(&mut r, &udp(sa(PEER, 53), public, b""), t);
    assert!(
        matches!(
            a,
            Action::Reply {
                reply: Reply::PortUnreachable,
                ..
            }
        ),
        "{a:?}"
    );
    assert_eq!(r.connections(), 0);
}

#[test]
fn a_full_table_evicts_unanswered_connections_first() {
    let mut r = lab(Config {
        max_connections: 64,
        ..Config::default()
    });
    // Ten established connections.
    for i in 0..10 {
        forwarded(
            &mut r,
            &tcp(sa(PEER2, 30000 + i), sa(V, 49152), Flags::Syn, b""),
            T0,
        );
        forwarded(
            &mut r,
            &tcp(sa(C1, 8888), sa(PEER2, 30000 + i), Flags::SynAck, b""),
            T0,
        );
        // The originator's ACK completes the handshake.
        forwarded(
            &mut r,
            &tcp(sa(PEER2, 30000 + i), sa(V, 49152), Flags::Ack, b""),
            T0,
        );
    }
    // A SYN flood.
    for i in 0..1000 {
        forwarded(
            &mut r,
            &tcp(sa(PEER, 1000 + i), sa(V, 49152), Flags::Syn, b""),
            T0,
        );
        assert!(r.connections() <= 64);
    }
    assert_eq!(r.connections(), 64);
    assert_eq!(r.counters().connections_evicted, 1000 - 54);
    for i in 0..10 {
        let d = forwarded(
            &mut r,
            &tcp(sa(PEER2, 30000 + i), sa(V, 49152), Flags::Ack, b"still"),
            T0,
        );
        assert_eq!(endpoints(&d).1, sa(C1, 8888));
    }
    // With only established connections, a new one is refused.
    let mut r = lab(Config {
        max_connections: 2,
        ..Config::default()
    });
    for i in 0..2 {
        forwarded(
            &mut r,
            &tcp(sa(PEER2, 30000 + i), sa(V, 49152), Flags::Syn, b""),
            T0,
        );
        forwarded(
            &mut r,
            &tcp(sa(C1, 8888), sa(PEER2, 30000 + i), Flags::SynAck, b""),
            T0,
        );
        // The originator's ACK completes the handshake.
        forwarded(
            &mut r,
            &tcp(sa(PEER2, 30000 + i), sa(V, 49152), Flags::Ack, b""),
            T0,
        );
    }
    assert_eq!(
        dropped(&mut r, &tcp(sa(PEER, 1), sa(V, 49152), Flags::Syn, b""), T0),
        DropReason::TableFull
    );
}

#[test]
fn too_big_packets_with_df_get_fragmentation_needed() {
    let mut r = lab(Config::default());
    let big = tcp(sa(PEER, 40000), sa(V, 49152), Flags::Syn, &[7u8; 1500]);
    let (a, out) = go(&mut r, &big, T0);
    assert!(
        matches!(
            a,
            Action::Reply {
                reply: Reply::FragmentationNeeded,
                ..
            }
        ),
        "{a:?}"
    );
    assert_eq!(endpoints(&out).0.ip(), &V);
    assert_eq!((out[20], out[21]), (3, 4));
    assert_eq!(u16::from_be_bytes([out[26], out[27]]), MTU, "next-hop MTU");
    assert!(out.len() <= 576);
    assert_eq!(&out[28..48], &big[..20], "quotes the original header");
    // A GSO super-packet whose segments fit is forwarded whole.
    let meta = Meta {
        checksum: L4Checksum::Complete,
        gso_size: 1300,
    };
    let gso = tcp(sa(PEER, 40001), sa(V, 49152), Flags::Syn, &[7u8; 5000]);
    let mut buf = gso.clone();
    buf.resize(65536, 0);
    assert!(matches!(
        r.process(&mut buf, gso.len(), meta, T0),
        Action::Forward { .. }
    ));
    let meta = Meta {
        gso_size: 1400,
        ..meta
    };
    let mut buf = tcp(sa(PEER, 40002), sa(V, 49152), Flags::Syn, &[7u8; 5000]);
    buf.resize(65536, 0);
    assert!(matches!(
        r.process(&mut buf, gso.len(), meta, T0),
        Action::Reply { .. }
    ));
}

#[test]
fn icmp_errors_are_translated_both_ways() {
    let mut r = lab(Config::default());
    // C2 talks UDP to a peer; a router on the VPN path says the packet was too big.
    let sent = forwarded(&mut r, &udp(sa(C2, 40010), sa(PEER, 7000), &[1u8; 100]), T0);
    let mut err = Vec::new();
    etherparse::PacketBuilder::ipv4(PEER2.octets(), V.octets(), 64)
        .icmpv4_raw(3, 4, [0, 0, 0x04, 0xb0])
        .write(&mut err, &sent)
        .expect("icmp");
    let out = forwarded(&mut r, &err, T0);
    assert_eq!(
        &out[12..20],
        &[PEER2.octets(), C2.octets()].concat()[..],
        "outer goes to the container"
    );
    let quoted = &out[28..];
    assert_eq!(
        endpoints(quoted),
        (sa(C2, 40010), sa(PEER, 7000)),
        "quote as the container sent it"
    );

    // A peer's UDP reaches C1; C1 answers port unreachable; the peer sees it from V:49153.
    let inbound = forwarded(&mut r, &udp(sa(PEER, 5000), sa(V, 49153), b"data"), T0);
    let mut err = Vec::new();
    etherparse::PacketBuilder::ipv4(C1.octets(), PEER.octets(), 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut err, &inbound)
        .expect("icmp");
    let out = forwarded(&mut r, &err, T0);
    assert_eq!(&out[12..16], &V.octets(), "the peer hears it from the node");
    assert_eq!(endpoints(&out[28..]), (sa(PEER, 5000), sa(V, 49153)));

    // A container may not speak for another one.
    let mut spoof = Vec::new();
    etherparse::PacketBuilder::ipv4(C2.octets(), PEER.octets(), 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut spoof, &inbound)
        .expect("icmp");
    assert_eq!(dropped(&mut r, &spoof, T0), DropReason::IcmpErrorUnmatched);
    // Errors about unknown flows go nowhere.
    let mut stray = Vec::new();
    etherparse::PacketBuilder::ipv4(PEER.octets(), V.octets(), 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut stray, &udp(sa(V, 1), sa(PEER, 2), b"?"))
        .expect("icmp");
    assert_eq!(dropped(&mut r, &stray, T0), DropReason::IcmpErrorUnmatched);
}

#[test]
fn fragmented_datagrams_are_translated_and_arrive_intact() {
    let mut r = lab(Config::default());
    let payload: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let dgram = udp(sa(PEER, 5000), sa(V, 49153), &payload);
    let frags = fragment(&dgram, usize::from(MTU));
    assert!(frags.len() > 40);
    let out: Vec<Vec<u8>> = frags.iter().map(|f| forwarded(&mut r, f, T0)).collect();
    let whole = reassemble(&out);
    assert_checksums(&whole);
    assert_eq!(endpoints(&whole), (sa(PEER, 5000), sa(C1, 9000)));
    assert_eq!(&whole[28..], &payload[..]);
    assert_eq!(r.fragmented(), 1);
    // A later fragment whose first never came is dropped.
    let mut other = udp(sa(PEER, 5001), sa(V, 49153), &payload);
    other[4] = 0x77;
    fix_ip_checksum(&mut other);
    let frags = fragment(&other, usize::from(MTU));
    assert_eq!(dropped(&mut r, &frags[3], T0), DropReason::FragmentUnknown);
    // After removing the mapping, the remembered fragments go nowhere either.
    r.remove_mapping(Protocol::Udp, 49153);
    let frags = fragment(&dgram, usize::from(MTU));
    assert_eq!(dropped(&mut r, &frags[5], T0), DropReason::FragmentUnknown);
    // And after the fragment timeout they are forgotten.
    r.poll(T0.saturating_add(Duration::from_secs(31)));
    assert_eq!(r.fragmented(), 0);
}

#[test]
fn a_tiny_tcp_fragment_cannot_hide_the_header() {
    let mut r = lab(Config::default());
    let mut f = tcp(sa(PEER, 40000), sa(V, 49152), Flags::Ack, &[0u8; 16]);
    f[6] = 0x00;
    f[7] = 0x01; // offset 8 bytes
    fix_ip_checksum(&mut f);
    assert_eq!(dropped(&mut r, &f, T0), DropReason::Malformed);
}

#[test]
fn partial_checksums_from_offload_stay_partial_and_right() {
    let mut r = lab(Config::default());
    for (pkt, proto) in [
        (
            tcp(sa(PEER, 40000), sa(V, 49152), Flags::Syn, &[9u8; 333]),
            6u8,
        ),
        (udp(sa(PEER, 5000), sa(V, 49153), &[9u8; 333]), 17u8),
    ] {
        // What the kernel hands over with NEEDS_CSUM: the pseudo-header sum, not complemented.
        let off = if proto == 6 { 36 } else { 26 };
        let l4_len = pkt.len() - 20;
        let mut partial = pkt.clone();
        let s = fold(naive_sum(&partial[12..20]) + u32::from(proto) + l4_len as u32);
        partial[off..off + 2].copy_from_slice(&s.to_be_bytes());
        let mut buf = partial.clone();
        buf.resize(65536, 0);
        let meta = Meta {
            checksum: L4Checksum::Partial,
            gso_size: 0,
        };
        assert!(matches!(
            r.process(&mut buf, pkt.len(), meta, T0),
            Action::Forward { .. }
        ));
        let mut out = buf[..pkt.len()].to_vec();
        // The translated field is the pseudo-header sum of the new addresses.
        let want = fold(naive_sum(&out[12..20]) + u32::from(proto) + l4_len as u32);
        assert_eq!(u16::from_be_bytes([out[off], out[off + 1]]), want);
        // Completing it as the NIC would gives the full checksum; so does the router's own
        // completion (for merged delivery).
        let mut completed = out.clone();
        assert!(netstack::complete_partial(&mut completed));
        let done = !fold(naive_sum(&out[20..]));
        out[off..off + 2].copy_from_slice(&done.to_be_bytes());
        assert_checksums(&out);
        assert_eq!(completed, out);
    }
}

#[test]
fn completing_a_partial_checksum_takes_only_whole_tcp_and_udp() {
    let partial = |mut pkt: Vec<u8>, off: usize| {
        let l4_len = (pkt.len() - 20) as u32;
        let s = fold(naive_sum(&pkt[12..20]) + u32::from(pkt[9]) + l4_len);
        pkt[off..off + 2].copy_from_slice(&s.to_be_bytes());
        pkt
    };
    // A UDP datagram whose checksum computes to 0 is sent with all ones (RFC 768).
    let mut zero = None;
    for b in 0..=u16::MAX {
        let pkt = udp(sa(PEER, 5000), sa(V, 49153), &b.to_be_bytes());
        if pkt[26..28] == [0xff, 0xff] {
            zero = Some(pkt);
            break;
        }
    }
    let want = zero.expect("a payload whose checksum is all ones");
    let mut got = partial(want.clone(), 26);
    assert!(netstack::complete_partial(&mut got));
    assert_eq!(got, want);
    // Not completed, and left as they are: ICMP, a fragment, a UDP length short of the IP
    // payload, a packet shorter than its header says.
    let frag = {
        let mut f = partial(udp(sa(PEER, 5000), sa(V, 49153), &[1; 64]), 26);
        f[6] = 0x20; // more fragments
        fix_ip_checksum(&mut f);
        f
    };
    let short_udp = {
        let mut f = partial(udp(sa(PEER, 5000), sa(V, 49153), &[1; 64]), 26);
        f[25] -= 8;
        f
    };
    let truncated = udp(sa(PEER, 5000), sa(V, 49153), &[1; 64])[..50].to_vec();
    for pkt in [ping(PEER, V, 7, 1, false), frag, short_udp, truncated] {
        let mut p = pkt.clone();
        assert!(!netstack::complete_partial(&mut p));
        assert_eq!(p, pkt);
    }
}

#[test]
fn udp_without_checksum_stays_without() {
    let mut r = lab(Config::default());
    let mut pkt = udp(sa(PEER, 5000), sa(V, 49153), b"no checksum");
    pkt[26] = 0;
    pkt[27] = 0;
    let out = forwarded(&mut r, &pkt, T0);
    assert_eq!(&out[26..28], &[0, 0]);
}

#[test]
fn a_new_vpn_address_ends_all_connections() {
    let mut r = lab(Config::default());
    forwarded(
        &mut r,
        &tcp(sa(PEER, 40000), sa(V, 49152), Flags::Syn, b""),
        T0,
    );
    let new = std::net::Ipv4Addr::new(10, 76, 0, 77);
    r.set_vpn(Some(Vpn {
        address: new,
        prefix_len: 16,
        mtu: MTU,
    }))
    .expect("vpn");
    assert_eq!(r.connections(), 0);
    let out = forwarded(
        &mut r,
        &tcp(sa(PEER, 40000), sa(new, 49152), Flags::Syn, b""),
        T0,
    );
    assert_eq!(endpoints(&out).1, sa(C1, 8888));
}

#[test]
fn each_run_counts_its_own_packets_bytes_and_connections() {
    let mut r = lab(Config::default());
    let traffic = |r: &Router| -> Vec<(RunId, netstack::RunTraffic)> { r.run_traffic() };
    // A peer opens run 1's TCP port; the container answers; the peer sends a UDP datagram.
    let syn = tcp(sa(PEER, 40000), sa(V, 49152), Flags::Syn, b"");
    forwarded(&mut r, &syn, T0);
    let synack = tcp(sa(C1, 8888), sa(PEER, 40000), Flags::SynAck, b"");
    forwarded(&mut r, &synack, T0);
    let datagram = udp(sa(PEER, 40001), sa(V, 49153), &[7; 100]);
    forwarded(&mut r, &datagram, T0);
    // Run 2's container opens a connection to a peer.
    let out = udp(sa(C2, 5000), sa(PEER2, 6000), &[1; 10]);
    forwarded(&mut r, &out, T0);
    // Refused packets count for nobody.
    dropped(
        &mut r,
        &tcp(sa(PEER, 40002), sa(V, 49152), Flags::Ack, b""),
        T0,
    );

    let t = traffic(&r);
    assert_eq!(t.len(), 2, "{t:?}");
    let (run1, run2) = (t[0].1, t[1].1);
    assert_eq!((t[0].0, t[1].0), (RUN1, RUN2));
    assert_eq!(run1.packets, [2, 1]);
    assert_eq!(
        run1.bytes,
        [(syn.len() + datagram.len()) as u64, synack.len() as u64]
    );
    assert_eq!(run1.connections, 2);
    assert_eq!(run2.packets, [0, 1]);
    assert_eq!(run2.bytes, [0, out.len() as u64]);
    assert_eq!(run2.connections, 1);
    // Every forwarded packet here is some container's.
    let forwarded = r.counters().forwarded_packets;
    assert_eq!(forwarded.iter().sum::<u64>(), 4);
    // Gone with the run: its counters and its connections.
    r.remove_run(RUN1);
    let t = traffic(&r);
    assert_eq!(t.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![RUN2]);
    assert_eq!(r.connections(), 1);
}
