//! Properties that must hold for any traffic: checksums equal a full recomputation, translation
//! is undone exactly by its reverse, every packet is accounted for once, tables stay bounded, and
//! removing what was added leaves no state.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::*;
use netstack::nat::{self, Mode};
use netstack::wire::{self, L4};
use netstack::{
    Action, Config, DropReason, Instant, L4Checksum, Mapping, Meta, Protocol, Reply, Router, RunId,
    Scope, Tuple,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Kind {
    Tcp(Flags),
    Udp,
    Ping,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        prop_oneof![
            Just(Flags::Syn),
            Just(Flags::SynAck),
            Just(Flags::Ack),
            Just(Flags::Fin),
            Just(Flags::Rst)
        ]
        .prop_map(Kind::Tcp),
        Just(Kind::Udp),
        Just(Kind::Ping),
    ]
}

fn build(kind: &Kind, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    match kind {
        Kind::Tcp(f) => tcp(src, dst, *f, payload),
        Kind::Udp => udp(src, dst, payload),
        Kind::Ping => ping(*src.ip(), *dst.ip(), src.port(), 1, false),
    }
}

fn peer() -> impl Strategy<Value = Ipv4Addr> {
    (0u8..4, 1u8..255)
        .prop_map(|(a, b)| Ipv4Addr::new(10, 76, a, b))
        .prop_filter("not V", |a| *a != V)
}

fn process(r: &mut Router, pkt: &[u8], now: Instant) -> (Action, Vec<u8>) {
    let mut buf = pkt.to_vec();
    buf.resize(pkt.len() + 600, 0);
    let a = r.process(&mut buf, pkt.len(), Meta::default(), now);
    let len = match a {
        Action::Forward { len, .. } | Action::Reply { len, .. } => usize::from(len),
        Action::Drop(_) => 0,
    };
    buf.truncate(len);
    (a, buf)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Inbound, outbound and hairpin translations: every checksum of the result equals a full
    /// recomputation, and rewriting the result back to the original tuple restores the original
    /// bytes exactly.
    #[test]
    fn rewrites_keep_checksums_exact_and_are_undone_by_their_reverse(
        k in kind(), q in peer(), qport in 1u16.., local in 1u16.., payload in proptest::collection::vec(any::<u8>(), 0..1300),
        direction in 0u8..3,
    ) {
        let mut r = lab(Config::default());
        let pkt = match (direction, &k) {
            (0, Kind::Ping) => ping(C2, q, local, 1, false),
            (0, _) => build(&k, sa(q, qport), sa(V, if matches!(k, Kind::Udp) { 49153 } else { 49152 }), &payload),
            (1, _) => build(&k, sa(C2, local), sa(q, qport), &payload),
            _ => build(&k, sa(C2, local), sa(V, if matches!(k, Kind::Udp) { 49153 } else { 49152 }), &payload),
        };
        let (a, out) = process(&mut r, &pkt, Instant::from_secs(1));
        match a {
            Action::Forward { len, .. } => {
                prop_assert_eq!(usize::from(len), pkt.len());
                assert_checksums(&out);
                prop_assert_eq!(&out[20..20 + 4].len(), &4);
                let p = wire::parse(&out).expect("still valid");
                let (s, d) = endpoints(&pkt);
                let (s, d) = match p.l4 {
                    L4::EchoRequest { .. } => (s, SocketAddrV4::new(*d.ip(), 0)),
                    _ => (s, d),
                };
                let (os, od) = p.l4.ports();
                let from = netstack::Tuple { src: SocketAddrV4::new(p.ip.src, os), dst: SocketAddrV4::new(p.ip.dst, od) };
                let to = netstack::Tuple { src: s, dst: d };
                let mut back = out.clone();
                nat::rewrite(&mut back, 0, p.ip.header_len, p.l4, to, nat::Change::new(from, to), Mode::Packet(L4Checksum::Complete));
                prop_assert_eq!(back, pkt);
            }
            Action::Reply { .. } => assert_checksums(&out),
            Action::Drop(reason) => prop_assert!(
                matches!(reason, DropReason::NoConnection | DropReason::NoMapping | DropReason::TooBig),
                "{:?} for {:?}", reason, k
            ),
        }
    }

    /// Whatever comes back for a translated packet goes back to exactly where the first came from.
    #[test]
    fn replies_return_to_the_original_sender(
        udp_kind in any::<bool>(), q in peer(), qport in 1u16.., local in 1u16.., inbound in any::<bool>(),
    ) {
        let mut r = lab(Config::default());
        let k = if udp_kind { Kind::Udp } else { Kind::Tcp(Flags::Syn) };
        let reply_kind = if udp_kind { Kind::Udp } else { Kind::Tcp(Flags::SynAck) };
        let public = if udp_kind { 49153 } else { 49152 };
        let (from, to) = if inbound { (sa(q, qport), sa(V, public)) } else { (sa(C2, local), sa(q, qport)) };
        let (a, out) = process(&mut r, &build(&k, from, to, b"req"), Instant::from_secs(1));
        prop_assert!(matches!(a, Action::Forward { .. }), "{:?}", a);
        let (s, d) = endpoints(&out);
        let (a, back) = process(&mut r, &build(&reply_kind, d, s, b"resp"), Instant::from_secs(2));
        prop_assert!(matches!(a, Action::Forward { .. }), "{:?}", a);
        prop_assert_eq!(endpoints(&back), (to, from));
    }

    /// Arbitrary bytes, and valid packets with arbitrary damage, never panic and are each
    /// accounted for exactly once.
    #[test]
    fn any_bytes_are_handled(
        noise in proptest::collection::vec(any::<u8>(), 0..200),
        k in kind(), q in peer(), damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut r = lab(Config::default());
        let mut pkt = build(&k, sa(q, 1000), sa(V, 49152), &noise);
        for (i, b) in damage {
            let i = i.index(pkt.len());
            pkt[i] ^= b;
        }
        for p in [&noise, &pkt] {
            let mut buf = p.clone();
            let n = buf.len();
            let _ = r.process(&mut buf, n, Meta { checksum: L4Checksum::Partial, gso_size: 100 }, Instant::ZERO);
            let _ = r.process(&mut buf, n, Meta::default(), Instant::ZERO);
        }
        let c = r.counters();
        let handled = c.forwarded_packets.iter().sum::<u64>() + c.total_drops() + c.replies(Reply::EchoReply);
        prop_assert_eq!(handled, 4);
    }

    /// Random traffic, mapping changes and clock steps: the tables never exceed their bounds,
    /// and removing every run leaves no connection behind.
    #[test]
    fn tables_stay_bounded_and_removal_leaves_nothing(
        ops in proptest::collection::vec((0u8..8, kind(), peer(), 1u16..2000, 0u16..4), 1..300),
    ) {
        let config = Config { max_connections: 50, max_fragmented: 4, ..Config::default() };
        let mut r = lab(config);
        let mut now = Instant::from_secs(1);
        let mut handled = 0u64;
        for (op, k, q, port, small) in ops {
            match op {
                0 => now = now.saturating_add(Duration::from_secs(u64::from(small) * 40)),
                1 => {
                    let public = 50000 + small;
                    let _ = r.add_mapping(Mapping { protocol: Protocol::Tcp, public_port: public, container: sa(C2, port), run: RUN2 });
                }
                2 => { r.remove_mapping(Protocol::Tcp, 50000 + small); }
                3 => r.poll(now),
                4 => {
                    // A fragmented datagram, maybe only in part.
                    let d = udp(sa(q, port), sa(V, 49153), &[0u8; 3000]);
                    for f in fragment(&d, 1400).iter().take(usize::from(small) + 1) {
                        process(&mut r, f, now);
                        handled += 1;
                    }
                }
                5 => { process(&mut r, &build(&k, sa(C1, port), sa(q, 80 + small), b"x"), now); handled += 1; }
                6 => { process(&mut r, &build(&k, sa(C2, port), sa(V, 49152 + small), b"x"), now); handled += 1; }
                _ => { process(&mut r, &build(&k, sa(q, port), sa(V, 49152 + small), b"x"), now); handled += 1; }
            }
            prop_assert!(r.connections() <= 50);
            prop_assert!(r.fragmented() <= 4);
        }
        let c = r.counters();
        prop_assert_eq!(c.forwarded_packets.iter().sum::<u64>() + c.total_drops() + c.replies(Reply::EchoReply), handled);
        // Every forwarded packet is some run's, counted once, by the side it came from; and a
        // run's connections are connections of the table.
        let runs = r.run_traffic();
        for side in 0..2 {
            prop_assert_eq!(runs.iter().map(|(_, t)| t.packets[side]).sum::<u64>(), c.forwarded_packets[side]);
            prop_assert_eq!(runs.iter().map(|(_, t)| t.bytes[side]).sum::<u64>(), c.forwarded_bytes[side]);
        }
        prop_assert!(runs.iter().map(|(_, t)| t.connections).sum::<u64>() <= 2 * r.connections() as u64);
        r.remove_run(RUN1);
        r.remove_run(RUN2);
        prop_assert_eq!(r.connections(), 0);
        prop_assert_eq!(r.mappings().count(), 0);
        // Fragments remembered for removed connections lead nowhere.
        let d = udp(sa(PEER, 7), sa(V, 49153), &[0u8; 3000]);
        let (a, _) = process(&mut r, &fragment(&d, 1400)[1], now);
        prop_assert_eq!(a, Action::Drop(DropReason::FragmentUnknown));
    }

    /// The flow a lookup ahead reads at fixed offsets is the flow the checked parse finds, for
    /// every TCP and UDP packet that parses.
    #[test]
    fn a_flow_hint_names_the_parsed_flow(
        k in kind(), q in peer(), sport in 1u16.., dport in 1u16..,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let pkt = build(&k, sa(q, sport), sa(V, dport), &payload);
        let p = wire::parse(&pkt).expect("a built packet parses");
        if let Some(protocol @ (Protocol::Tcp | Protocol::Udp)) = p.l4.protocol() {
            let (s, d) = p.l4.ports();
            let tuple = Tuple { src: sa(p.ip.src, s), dst: sa(p.ip.dst, d) };
            prop_assert_eq!(wire::flow_hint(&pkt), Some((protocol, tuple)));
        }
    }

    /// Looking a batch up ahead ([`Router::prefetch`]) changes no decision: two routers fed the
    /// same traffic (new and known flows of every kind, both directions, damaged bytes, clock
    /// steps past timeouts, connections removed in between) decide every packet alike and end
    /// with the same counters, one of them told of each batch before it comes.
    #[test]
    fn prefetching_changes_no_decision(
        batches in proptest::collection::vec(
            (
                proptest::collection::vec(
                    (0u8..4, kind(), 0u8..6, 1u16..6, any::<prop::sample::Index>(), any::<u8>()),
                    1..40,
                ),
                0u16..4,
            ),
            1..12,
        ),
    ) {
        let config = Config { max_connections: 24, max_connections_per_source: 8, ..Config::default() };
        let (mut plain, mut ahead) = (lab(config.clone()), lab(config));
        let mut now = Instant::from_secs(1);
        for (batch, step) in batches {
            let packets: Vec<Vec<u8>> = batch
                .iter()
                .map(|(way, k, who, port, at, flip)| {
                    let q = Ipv4Addr::new(10, 76, 0, 10 + who);
                    let mut pkt = match way {
                        0 | 1 => build(k, sa(q, 1000 + port), sa(V, 49152 + u16::from(*way)), b"x"),
                        2 => build(k, sa(C1, 8888), sa(q, 1000 + port), b"x"),
                        _ => build(k, sa(C2, 2000 + port), sa(q, 80), b"x"),
                    };
                    // Now and then a damaged byte: a hint read from it must lead nowhere wrong.
                    if flip & 7 == 0 {
                        let i = at.index(pkt.len());
                        pkt[i] ^= flip | 1;
                    }
                    pkt
                })
                .collect();
            ahead.prefetch(packets.iter().map(|p| &p[..]));
            for pkt in &packets {
                prop_assert_eq!(process(&mut plain, pkt, now), process(&mut ahead, pkt, now));
            }
            if step == 3 {
                plain.remove_run(RUN2);
                ahead.remove_run(RUN2);
            }
            now = now.saturating_add(Duration::from_secs(u64::from(step) * 50));
            plain.poll(now);
            ahead.poll(now);
        }
        prop_assert_eq!(plain.counters(), ahead.counters());
        prop_assert_eq!(plain.connections(), ahead.connections());
    }

    /// A peer outside every scope, whatever it sends to the node (any kind, any port, pings,
    /// while insiders have connections open), never has a packet forwarded nor gets an answer;
    /// and a container never gets a packet out to a target outside its scope.
    #[test]
    fn outside_the_scope_nothing_gets_through_and_nothing_answers(
        ops in proptest::collection::vec((any::<bool>(), kind(), peer(), 1u16..65535, 1u16..65535), 1..200),
    ) {
        let mut r = lab(Config { scoped: true, ..Config::default() });
        let scope = Scope {
            sources: [PEER].into(),
            targets: [sa(PEER, 7000)].into(),
        };
        r.set_scope(RUN1, scope.clone());
        r.set_scope(RUN2, scope);
        let now = Instant::from_secs(1);
        // An insider's connection, open throughout.
        process(&mut r, &tcp(sa(PEER, 1000), sa(V, 49152), Flags::Syn, b""), now);
        for (from_peer, k, q, sport, dport) in ops {
            if q == PEER {
                continue;
            }
            let (pkt, is_target) = if from_peer {
                (build(&k, sa(q, sport), sa(V, dport), b"x"), false)
            } else {
                let c = if sport % 2 == 0 { C1 } else { C2 };
                (build(&k, sa(c, sport), sa(q, dport), b"x"), true)
            };
            let (a, _) = process(&mut r, &pkt, now);
            prop_assert!(matches!(a, Action::Drop(_)), "{a:?} for {k:?} {q} (container side: {is_target})");
        }
    }

    /// Whatever two peers and a container flood the router with (SYNs, SYN+RST pairs, handshakes
    /// left half-open, answered UDP flows, first fragments, time passing), a newcomer (another
    /// peer, and the other run) still gets its connection and its fragmented datagram through.
    #[test]
    fn floods_never_take_a_newcomers_room(
        ops in proptest::collection::vec((0u8..6, 0u8..3, 1u16..60000, 0u8..3), 1..600),
    ) {
        let mut r = lab(Config {
            max_connections: 64,
            max_connections_per_source: 16,
            max_fragmented: 16,
            max_fragmented_per_source: 4,
            ..Config::default()
        });
        let mut now = Instant::from_secs(1);
        for (op, who, port, step) in ops {
            let peer = [PEER, PEER2, Ipv4Addr::new(10, 76, 0, 30)][usize::from(who)];
            match op {
                0 => { process(&mut r, &tcp(sa(peer, port), sa(V, 49152), Flags::Syn, b""), now); }
                1 => {
                    process(&mut r, &tcp(sa(peer, port), sa(V, 49152), Flags::Syn, b""), now);
                    process(&mut r, &tcp(sa(peer, port), sa(V, 49152), Flags::Rst, b""), now);
                }
                2 => {
                    process(&mut r, &tcp(sa(peer, port), sa(V, 49152), Flags::Syn, b""), now);
                    process(&mut r, &tcp(sa(C1, 8888), sa(peer, port), Flags::SynAck, b""), now);
                }
                3 => {
                    // The container floods its peers, who answer.
                    let (a, out) = process(&mut r, &udp(sa(C1, port), sa(peer, 53), b"q"), now);
                    if matches!(a, Action::Forward { .. }) {
                        let public = endpoints(&out).0.port();
                        process(&mut r, &udp(sa(peer, 53), sa(V, public), b"a"), now);
                    }
                }
                4 => {
                    let mut d = udp(sa(peer, port), sa(V, 49153), &[0u8; 3000]);
                    d[4..6].copy_from_slice(&port.to_be_bytes());
                    fix_ip_checksum(&mut d);
                    process(&mut r, &fragment(&d, 1400)[0], now);
                }
                _ => now = now.saturating_add(Duration::from_secs(u64::from(step) * 30)),
            }
        }
        let newcomer = Ipv4Addr::new(10, 76, 0, 40);
        let (a, _) = process(&mut r, &tcp(sa(newcomer, 50000), sa(V, 49160), Flags::Syn, b""), now);
        prop_assert!(matches!(a, Action::Forward { .. }), "a newcomer peer: {:?}", a);
        let (a, _) = process(&mut r, &udp(sa(C2, 7777), sa(newcomer, 53), b"q"), now);
        prop_assert!(matches!(a, Action::Forward { .. }), "the other run: {:?}", a);
        let d = udp(sa(newcomer, 7000), sa(V, 49153), &[1u8; 3000]);
        for part in fragment(&d, 1400) {
            let (a, _) = process(&mut r, &part, now);
            prop_assert!(matches!(a, Action::Forward { .. }), "a newcomer's fragment: {:?}", a);
        }
    }
}

/// Every drop reason can happen, and is counted when it does.
#[test]
fn every_drop_reason_is_reachable_and_counted() {
    let t = Instant::from_secs(1);
    let config = Config {
        outbound_ports: 40000..=40000,
        replies_per_sec: 1,
        reply_burst: 1,
        ..Config::default()
    };
    let mut r = lab(config.clone());
    // Two public ports for one container port: the second connection from the same peer port
    // would answer with the same tuple as the first.
    r.add_mapping(Mapping {
        protocol: Protocol::Tcp,
        public_port: 49154,
        container: sa(C1, 8888),
        run: RUN1,
    })
    .expect("mapping");
    let mut v6 = udp(sa(PEER, 1), sa(V, 2), b"");
    v6[0] = 0x60;
    let mut bad = udp(sa(PEER, 1), sa(V, 49153), b"");
    bad[10] ^= 1;
    let mut gre = udp(sa(PEER, 1), sa(V, 49153), b"");
    gre[9] = 47;
    fix_ip_checksum(&mut gre);
    let mut ts = ping(PEER, V, 1, 1, false);
    ts[20] = 13;
    let mut frag_ping = ping(PEER, V, 1, 1, false);
    frag_ping[6] = 0x20;
    fix_ip_checksum(&mut frag_ping);
    let dgram = udp(sa(PEER, 9), sa(V, 49153), &[0u8; 3000]);
    let mut stray = Vec::new();
    etherparse::PacketBuilder::ipv4(PEER.octets(), V.octets(), 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut stray, &udp(sa(V, 1), sa(PEER, 2), b"?"))
        .expect("icmp");
    let steps: Vec<Vec<u8>> = vec![
        vec![0x45, 0, 0],                                         // malformed
        bad,                                                      // bad checksum
        v6,                                                       // ipv6
        vec![0x15; 30],                                           // not ip
        gre,                                                      // unsupported protocol
        ts,                                                       // unsupported icmp
        udp(sa(Ipv4Addr::new(1, 2, 3, 4), 1), sa(V, 49153), b""), // unknown source
        udp(sa(PEER, 1), sa(C1, 9000), b""),                      // not for node
        udp(sa(C1, 1), sa(C2, 9000), b""),                        // container to internal
        udp(sa(C1, 1), sa(Ipv4Addr::new(1, 1, 1, 1), 53), b""),   // outside vpn
        udp(sa(C1, 1), sa(Ipv4Addr::new(10, 76, 0, 0), 53), b""), // broadcast (network)
        udp(sa(PEER, 1), sa(V, 50000), b""),                      // no mapping (answered)
        tcp(sa(PEER, 1), sa(V, 49152), Flags::Ack, b""),          // no connection
        tcp(sa(PEER, 5), sa(V, 49152), Flags::Syn, b""),          // (opens)
        tcp(sa(PEER, 5), sa(V, 49154), Flags::Syn, b""),          // tuple conflict
        udp(sa(C1, 1), sa(PEER, 53), b""),                        // (takes port 40000)
        udp(sa(C2, 1), sa(PEER, 53), b""),                        // no free port
        fragment(&dgram, 1400)[1].clone(),                        // fragment unknown
        frag_ping,                                                // fragmented local
        stray,                                                    // icmp error unmatched
        tcp(sa(PEER, 6), sa(V, 49152), Flags::Syn, &[0u8; 1500]), // too big (no tokens left)
    ];
    for s in &steps {
        process(&mut r, s, t);
    }
    // Tokens refill: the too-big answer goes out this time.
    process(
        &mut r,
        &tcp(sa(PEER, 6), sa(V, 49152), Flags::Syn, &[0u8; 1500]),
        Instant::from_secs(10),
    );
    // No room to build an answer.
    let small = udp(sa(PEER, 1), sa(V, 50000), b"");
    let mut buf = small.clone();
    r.process(
        &mut buf,
        small.len(),
        Meta::default(),
        Instant::from_secs(20),
    );
    // The tunnel went away: nothing leaves toward peers.
    r.set_tunnel_up(false);
    process(&mut r, &udp(sa(C1, 7), sa(PEER, 53), b""), t);
    let mut off = Router::new(config.clone()).expect("router");
    off.process(&mut small.clone(), small.len(), Meta::default(), t);
    let mut tiny = lab(Config {
        max_connections: 1,
        ..config
    });
    // A table full of established connections refuses the next.
    for p in [5, 6] {
        process(
            &mut tiny,
            &tcp(sa(PEER, p), sa(V, 49152), Flags::Syn, b""),
            t,
        );
        process(
            &mut tiny,
            &tcp(sa(C1, 8888), sa(PEER, p), Flags::SynAck, b""),
            t,
        );
        process(
            &mut tiny,
            &tcp(sa(PEER, p), sa(V, 49152), Flags::Ack, b""),
            t,
        );
    }
    // A source at its quota is refused its next connection.
    let mut quota = lab(Config {
        max_connections_per_source: 1,
        ..Config::default()
    });
    for p in [5, 6] {
        process(
            &mut quota,
            &tcp(sa(PEER, p), sa(V, 49152), Flags::Syn, b""),
            t,
        );
    }
    // A run family at its budget is refused its next connection, whichever source opens it.
    let mut family = lab(Config {
        max_connections_per_run: 1,
        ..Config::default()
    });
    for peer in [PEER, PEER2] {
        process(
            &mut family,
            &tcp(sa(peer, 5), sa(V, 49152), Flags::Syn, b""),
            t,
        );
    }
    // Scoped: an unknown peer, and a container toward the VPN server.
    let mut scoped = lab(Config {
        scoped: true,
        ..Config::default()
    });
    process(
        &mut scoped,
        &tcp(sa(PEER, 5), sa(V, 49152), Flags::Syn, b""),
        t,
    );
    let vpn_server = Ipv4Addr::new(10, 76, 0, 1);
    process(
        &mut scoped,
        &tcp(sa(C1, 5), sa(vpn_server, 22), Flags::Syn, b""),
        t,
    );
    let (c, o, f) = (r.counters(), off.counters(), tiny.counters());
    let (q, sc, fa) = (quota.counters(), scoped.counters(), family.counters());
    for reason in DropReason::ALL {
        assert!(
            c.drops(reason)
                + o.drops(reason)
                + f.drops(reason)
                + q.drops(reason)
                + sc.drops(reason)
                + fa.drops(reason)
                > 0,
            "{} never counted; counted: {:?}",
            reason.name(),
            c.nonzero_drops().collect::<Vec<_>>()
        );
    }
    assert_eq!(RunId(2), RUN2);
}
