//! Runs talk only within their scope: who reaches a run's public ports, where its containers may
//! open connections, what a peer outside learns (nothing), and how a scope changes.

mod common;

use std::net::Ipv4Addr;

use common::*;
use netstack::{Action, Config, DropReason, Instant, Meta, Reply, Router, Scope};

const T: Instant = Instant::from_secs(1);
const VPN_SERVER: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 1);

fn scoped() -> Router {
    lab(Config {
        scoped: true,
        ..Config::default()
    })
}

fn go(r: &mut Router, pkt: &[u8]) -> Action {
    let mut buf = pkt.to_vec();
    buf.resize(pkt.len() + 600, 0);
    r.process(&mut buf, pkt.len(), Meta::default(), T)
}

fn forwarded(a: Action) -> bool {
    matches!(a, Action::Forward { .. })
}

/// PEER may reach run 1, and run 1 may reach PEER's port 7000.
fn peer_only() -> Scope {
    Scope {
        sources: [PEER].into(),
        targets: [sa(PEER, 7000)].into(),
    }
}

#[test]
fn a_run_without_a_scope_reaches_no_one_and_no_one_learns_of_the_node() {
    let mut r = scoped();
    let refused = DropReason::PeerNotInScope;
    assert_eq!(
        go(&mut r, &tcp(sa(PEER, 1), sa(V, 49152), Flags::Syn, b"")),
        Action::Drop(refused)
    );
    // No echo reply, no RST, no port unreachable: nothing says the node is there.
    assert_eq!(
        go(&mut r, &ping(PEER, V, 1, 1, false)),
        Action::Drop(refused)
    );
    assert_eq!(
        go(&mut r, &tcp(sa(PEER, 1), sa(V, 50000), Flags::Syn, b"")),
        Action::Drop(refused)
    );
    assert_eq!(
        go(&mut r, &udp(sa(PEER, 1), sa(V, 50000), b"")),
        Action::Drop(refused)
    );
    assert_eq!(
        go(&mut r, &udp(sa(C1, 1), sa(PEER, 7000), b"")),
        Action::Drop(DropReason::DestinationNotInScope)
    );
    assert_eq!(r.counters().replies(Reply::TcpReset), 0);
}

#[test]
fn a_peer_in_the_scope_gets_in_and_the_run_reaches_only_its_targets() {
    let mut r = scoped();
    r.set_scope(RUN1, peer_only());
    assert!(forwarded(go(
        &mut r,
        &tcp(sa(PEER, 1), sa(V, 49152), Flags::Syn, b"")
    )));
    assert!(forwarded(go(&mut r, &udp(sa(PEER, 1), sa(V, 49153), b"x"))));
    assert!(matches!(
        go(&mut r, &ping(PEER, V, 1, 1, false)),
        Action::Reply {
            reply: Reply::EchoReply,
            ..
        }
    ));
    // Another member: nothing, wherever it knocks.
    for pkt in [
        tcp(sa(PEER2, 1), sa(V, 49152), Flags::Syn, b""),
        udp(sa(PEER2, 1), sa(V, 49153), b"x"),
        ping(PEER2, V, 1, 1, false),
        tcp(sa(PEER2, 1), sa(V, 50000), Flags::Syn, b""),
    ] {
        assert_eq!(go(&mut r, &pkt), Action::Drop(DropReason::PeerNotInScope));
    }
    // Run 2 has no scope: PEER does not reach it.
    assert_eq!(
        go(&mut r, &tcp(sa(PEER, 2), sa(V, 49160), Flags::Syn, b"")),
        Action::Drop(DropReason::PeerNotInScope)
    );
    // Run 1's container: PEER:7000 and pings to PEER, nothing else (the VPN server least).
    assert!(forwarded(go(&mut r, &udp(sa(C1, 5), sa(PEER, 7000), b"x"))));
    assert!(forwarded(go(&mut r, &ping(C1, PEER, 9, 1, false))));
    for pkt in [
        udp(sa(C1, 5), sa(PEER, 7001), b"x"),
        udp(sa(C1, 5), sa(PEER2, 7000), b"x"),
        tcp(sa(C1, 5), sa(VPN_SERVER, 22), Flags::Syn, b""),
        ping(C1, VPN_SERVER, 9, 1, false),
        udp(sa(C2, 5), sa(PEER, 7000), b"x"),
    ] {
        assert_eq!(
            go(&mut r, &pkt),
            Action::Drop(DropReason::DestinationNotInScope)
        );
    }
}

#[test]
fn a_scope_of_addresses_admits_every_port_of_them() {
    let mut r = scoped();
    r.set_scope(
        RUN1,
        Scope {
            sources: [PEER].into(),
            targets: [sa(PEER, 0)].into(),
        },
    );
    for port in [1, 7000, 65535] {
        assert!(forwarded(go(&mut r, &udp(sa(C1, 5), sa(PEER, port), b"x"))));
    }
    assert_eq!(
        go(&mut r, &udp(sa(C1, 5), sa(PEER2, 1), b"x")),
        Action::Drop(DropReason::DestinationNotInScope)
    );
}

#[test]
fn a_peer_added_gets_in_at_once_and_a_peer_removed_loses_its_connections() {
    let mut r = scoped();
    let syn = tcp(sa(PEER2, 1), sa(V, 49152), Flags::Syn, b"");
    assert_eq!(go(&mut r, &syn), Action::Drop(DropReason::PeerNotInScope));
    let mut both = peer_only();
    both.sources.insert(PEER2);
    both.targets.insert(sa(PEER2, 7000));
    r.set_scope(RUN1, both);
    assert!(forwarded(go(&mut r, &syn)));
    assert!(forwarded(go(
        &mut r,
        &tcp(sa(C1, 8888), sa(PEER2, 1), Flags::SynAck, b"")
    )));
    assert!(forwarded(go(
        &mut r,
        &udp(sa(C1, 6), sa(PEER2, 7000), b"x")
    )));
    assert!(forwarded(go(
        &mut r,
        &tcp(sa(PEER, 1), sa(V, 49152), Flags::Syn, b"")
    )));
    assert_eq!(r.connections(), 3);
    // PEER2 leaves the scope: both its connections end; PEER's goes on.
    r.set_scope(RUN1, peer_only());
    assert_eq!(r.connections(), 1);
    assert_eq!(
        go(&mut r, &tcp(sa(PEER2, 1), sa(V, 49152), Flags::Ack, b"")),
        Action::Drop(DropReason::NoConnection)
    );
    assert_eq!(
        go(&mut r, &tcp(sa(C1, 8888), sa(PEER2, 1), Flags::Ack, b"")),
        Action::Drop(DropReason::NoConnection)
    );
    assert!(forwarded(go(
        &mut r,
        &tcp(sa(C1, 8888), sa(PEER, 1), Flags::SynAck, b"")
    )));
}

#[test]
fn a_container_reaches_another_run_on_its_node_only_if_both_scopes_say_so() {
    let mut r = scoped();
    let hairpin = tcp(sa(C2, 5), sa(V, 49152), Flags::Syn, b"");
    // Run 2 may target run 1's public port, but run 1 does not admit the node itself.
    r.set_scope(
        RUN2,
        Scope {
            sources: [].into(),
            targets: [sa(V, 49152)].into(),
        },
    );
    r.set_scope(RUN1, peer_only());
    assert_eq!(
        go(&mut r, &hairpin),
        Action::Drop(DropReason::DestinationNotInScope)
    );
    let mut with_node = peer_only();
    with_node.sources.insert(V);
    r.set_scope(RUN1, with_node);
    assert!(forwarded(go(&mut r, &hairpin)));
    // Unscoped routers are as before: everyone reaches everyone.
    let mut open = lab(Config::default());
    assert!(forwarded(go(
        &mut open,
        &tcp(sa(PEER2, 1), sa(V, 49152), Flags::Syn, b"")
    )));
    assert!(forwarded(go(
        &mut open,
        &udp(sa(C1, 5), sa(VPN_SERVER, 22), b"x")
    )));
}
