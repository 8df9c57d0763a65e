//! Several routers sharing a node's traffic (one per TUN queue): every packet of a connection,
//! either way, must reach the router that holds it, whatever port the connection got, and the
//! routers together behave as one.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddrV4;

use common::*;
use netstack::{Action, Config, Fragments, Mapping, Meta, Owner, Protocol, Router};
use proptest::prelude::*;

/// A second public port for C1's tcp/8888 (besides the lab's 49152).
const PUB2: u16 = 49154;

/// `n` routers with the lab's control (and PUB2), and the memory of where first fragments went.
struct Shards {
    routers: Vec<Router>,
    later: Fragments<u16>,
}

impl Shards {
    fn new(n: usize) -> Shards {
        let config = Config::default().split(n);
        let routers = (0..n)
            .map(|_| {
                let mut r = lab(config.clone());
                r.add_mapping(Mapping {
                    protocol: Protocol::Tcp,
                    public_port: PUB2,
                    container: sa(C1, 8888),
                    run: RUN1,
                })
                .expect("second mapping");
                r
            })
            .collect();
        Shards {
            routers,
            later: Fragments::new(64, 64, 30_000, 7),
        }
    }

    /// The router `pkt` goes to, as the data plane picks it: every router names the same.
    fn owner(&mut self, pkt: &[u8]) -> usize {
        let owners: Vec<_> = self.routers.iter().map(|r| r.owner(pkt)).collect();
        assert!(
            owners.windows(2).all(|w| w[0] == w[1]),
            "the routers disagree: {owners:?}"
        );
        match owners[0] {
            Owner::Shard {
                shard,
                first_fragment,
            } => {
                if let Some(key) = first_fragment {
                    self.later.insert(key, shard as u16, NOW);
                }
                shard
            }
            Owner::LaterFragment(key) => usize::from(self.later.lookup(&key, NOW).expect("known")),
            Owner::Any => 0,
        }
    }

    /// Sends `pkt` to its router; which one, and the forwarded packet.
    fn forward(&mut self, pkt: &[u8]) -> (usize, Vec<u8>) {
        let shard = self.owner(pkt);
        let mut buf = vec![0u8; 65536];
        buf[..pkt.len()].copy_from_slice(pkt);
        match self.routers[shard].process(&mut buf, pkt.len(), Meta::default(), NOW) {
            Action::Forward { len, .. } => {
                let out = buf[..usize::from(len)].to_vec();
                assert_checksums(&out);
                (shard, out)
            }
            a => panic!("expected forward on router {shard}, got {a:?}"),
        }
    }

    fn connections(&self) -> Vec<usize> {
        self.routers.iter().map(Router::connections).collect()
    }
}

/// A container opens a connection and the peer answers; both directions must meet one router
/// and come out translated as one router translates them. Returns that router.
fn container_opens(s: &mut Shards, kind: Kind, from: SocketAddrV4, to: SocketAddrV4) -> usize {
    let (there, out) = s.forward(&kind.first(from, to));
    let (src, dst) = endpoints(&out);
    assert_eq!(
        (*src.ip(), *dst.ip()),
        (V, *to.ip()),
        "leaves from the VPN address"
    );
    let (back, answer) = s.forward(&kind.answer(dst, src));
    assert_eq!(
        back,
        there,
        "the answer to {from} -> {to} (port {}) met another router",
        src.port()
    );
    let (a, b) = endpoints(&answer);
    assert_eq!(
        (*a.ip(), b),
        (*to.ip(), from),
        "the answer reaches the container"
    );
    there
}

/// A peer opens a connection to a public port and the container answers.
fn peer_opens(s: &mut Shards, kind: Kind, from: SocketAddrV4, public: u16) -> usize {
    let (there, out) = s.forward(&kind.first(from, sa(V, public)));
    let (_, container) = endpoints(&out);
    let (back, answer) = s.forward(&kind.answer(container, from));
    assert_eq!(
        back, there,
        "the answer to {from} -> {public} met another router"
    );
    assert_eq!(
        endpoints(&answer),
        (sa(V, public), from),
        "the answer leaves from the public port"
    );
    there
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tcp,
    Udp,
    Ping,
}

impl Kind {
    fn first(self, from: SocketAddrV4, to: SocketAddrV4) -> Vec<u8> {
        match self {
            Kind::Tcp => tcp(from, to, Flags::Syn, b""),
            Kind::Udp => udp(from, to, b"question"),
            Kind::Ping => ping(*from.ip(), *to.ip(), from.port(), 1, false),
        }
    }

    fn answer(self, from: SocketAddrV4, to: SocketAddrV4) -> Vec<u8> {
        match self {
            Kind::Tcp => tcp(from, to, Flags::SynAck, b""),
            Kind::Udp => udp(from, to, b"answer"),
            Kind::Ping => ping(*from.ip(), *to.ip(), to.port(), 1, true),
        }
    }
}

#[test]
fn both_directions_of_every_connection_meet_one_router() {
    for n in [2, 3, 4, 7] {
        let mut s = Shards::new(n);
        let mut used = BTreeSet::new();
        let service = sa(PEER, 443);
        for kind in [Kind::Tcp, Kind::Udp, Kind::Ping] {
            // Ports in the outbound range are kept; ports below it get a random one; the second
            // container's same ports collide with the first's and get another.
            for port in (40_000..40_040).chain(1000..1020) {
                for c in [C1, C2] {
                    used.insert(container_opens(&mut s, kind, sa(c, port), service));
                }
            }
        }
        // From a mapped port: the connection leaves from the public port.
        for peer_port in 5000..5020 {
            let (there, out) = s.forward(&tcp(sa(C1, 8888), sa(PEER, peer_port), Flags::Syn, b""));
            let (src, _) = endpoints(&out);
            assert_eq!(src, sa(V, 49152));
            let (back, _) = s.forward(&tcp(sa(PEER, peer_port), src, Flags::SynAck, b""));
            assert_eq!(back, there);
        }
        // Peers to public ports, two of them to the same container port.
        for peer_port in 20_000..20_040 {
            used.insert(peer_opens(&mut s, Kind::Tcp, sa(PEER2, peer_port), 49152));
            used.insert(peer_opens(
                &mut s,
                Kind::Tcp,
                sa(PEER2, peer_port + 100),
                PUB2,
            ));
            used.insert(peer_opens(&mut s, Kind::Udp, sa(PEER2, peer_port), 49153));
        }
        assert_eq!(used.len(), n, "connections spread over all {n} routers");
        let total: usize = s.connections().iter().sum();
        assert_eq!(
            total,
            3 * 120 + 20 + 3 * 40,
            "one connection each, no copies"
        );
    }
}

#[test]
fn flows_between_containers_of_the_node_stay_on_router_zero() {
    let mut s = Shards::new(4);
    for port in 40_000..40_020 {
        let (there, out) = s.forward(&tcp(sa(C2, port), sa(V, 49152), Flags::Syn, b""));
        let (src, dst) = endpoints(&out);
        assert_eq!((*src.ip(), dst), (V, sa(C1, 8888)));
        let (back, answer) = s.forward(&tcp(dst, src, Flags::SynAck, b""));
        assert_eq!((there, back), (0, 0));
        assert_eq!(endpoints(&answer), (sa(V, 49152), sa(C2, port)));
    }
}

#[test]
fn icmp_errors_and_fragments_follow_their_connection() {
    let mut s = Shards::new(3);
    for port in 40_000..40_030 {
        // An error from the peer about what a container sent.
        let (there, out) = s.forward(&udp(sa(C1, port), sa(PEER, 53), b"query"));
        let error = icmp_error(PEER, V, &out);
        let (at, translated) = s.forward(&error);
        assert_eq!(at, there, "the error about {port} met another router");
        assert_eq!(endpoints(&translated).1.ip(), &C1);
        // A datagram the peer sends in fragments to a public port: the later fragments carry
        // no ports and still find the router of the first.
        let big = udp(sa(PEER2, port), sa(V, 49153), &[7u8; 3000]);
        let mut routers = BTreeSet::new();
        let mut pieces = Vec::new();
        for f in fragment(&big, usize::from(MTU)) {
            let (at, out) = s.forward(&f);
            routers.insert(at);
            pieces.push(out);
        }
        assert_eq!(routers.len(), 1, "fragments of one datagram on {routers:?}");
        let whole = reassemble(&pieces);
        assert_eq!(endpoints(&whole), (sa(PEER2, port), sa(C1, 9000)));
        // An error from the container about what a peer sent it.
        let error = icmp_error(
            C1,
            PEER2,
            &s.forward(&udp(sa(PEER2, port), sa(V, 49153), b"x")).1,
        );
        let (at, translated) = s.forward(&error);
        assert_eq!(at, *routers.first().expect("one"));
        assert_eq!(endpoints(&translated).1.ip(), &PEER2);
    }
}

/// ICMP port unreachable from `from` to `to` quoting `quoted`.
fn icmp_error(from: std::net::Ipv4Addr, to: std::net::Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4(from.octets(), to.octets(), 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut v, quoted)
        .expect("build icmp error");
    v
}

#[test]
fn limits_are_divided_and_the_count_is_checked() {
    let c = Config::default().split(3);
    assert_eq!(
        (
            c.shards,
            c.max_connections,
            c.max_connections_per_source,
            c.reply_burst
        ),
        (3, 21_846, 1366, 17)
    );
    assert_eq!(
        c.seed,
        Config::default().seed,
        "one seed: one owner for every router"
    );
    assert_eq!(
        Config::default().split(1),
        Config::default(),
        "one router keeps it all"
    );
    for shards in [0, 65] {
        let e = Router::new(Config {
            shards,
            ..Config::default()
        });
        assert!(e.is_err(), "{shards} routers must be refused");
    }
    // Without a VPN address, or alone, there is nothing to choose.
    let r = Router::new(Config::default().split(2)).expect("router");
    assert_eq!(r.owner(&udp(sa(PEER, 1), sa(V, 2), b"")), Owner::Any);
}

proptest! {
    /// Whatever the bytes, every router names the same owner and none panics.
    #[test]
    fn any_bytes_get_one_owner(
        bytes in proptest::collection::vec(any::<u8>(), 0..80),
        cut in 0usize..80,
    ) {
        let s = Shards::new(3);
        let mut pkt = udp(sa(PEER, 7), sa(V, 49153), b"payload");
        let at = cut.min(pkt.len());
        pkt.truncate(at);
        pkt.extend_from_slice(&bytes);
        let owners: Vec<_> = s.routers.iter().map(|r| r.owner(&pkt)).collect();
        prop_assert!(owners.windows(2).all(|w| w[0] == w[1]));
    }

    /// Any container port, any peer: the answer meets the router of the first packet.
    #[test]
    fn any_connection_meets_one_router(
        port in 1u16..,
        peer_port in 1u16..,
        host in 3u8..250,
        udp_kind in any::<bool>(),
    ) {
        let mut s = Shards::new(4);
        let peer = sa(std::net::Ipv4Addr::new(10, 76, 1, host), peer_port);
        let kind = if udp_kind { Kind::Udp } else { Kind::Tcp };
        container_opens(&mut s, kind, sa(C1, port), peer);
    }
}

#[test]
fn one_router_needs_no_choice() {
    let r = lab(Config::default());
    let pkt = tcp(sa(PEER, 1), sa(V, 49152), Flags::Syn, b"");
    assert_eq!(
        r.owner(&pkt),
        Owner::Shard {
            shard: 0,
            first_fragment: None
        }
    );
}
