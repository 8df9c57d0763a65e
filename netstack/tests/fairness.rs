//! One peer, or one algorithm, cannot starve everyone else: for each flood a hostile peer or
//! container can send, another peer's and another run's new connections still go through at
//! once. The tables are small here so that the floods fill them in a few thousand packets.

mod common;

use std::time::Duration;

use common::*;
use netstack::{Action, Config, DropReason, Instant, Meta, Reply, Router, Timeouts};

const T0: Instant = Instant::from_secs(1);
/// Another node of the VPN, honest.
const PEER3: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 76, 0, 20);

fn small() -> Config {
    Config {
        max_connections: 64,
        max_connections_per_source: 16,
        max_fragmented: 32,
        max_fragmented_per_source: 4,
        ..Config::default()
    }
}

fn go(r: &mut Router, pkt: &[u8], now: Instant) -> (Action, Vec<u8>) {
    let mut buf = vec![0u8; 65536];
    buf[..pkt.len()].copy_from_slice(pkt);
    let a = r.process(&mut buf, pkt.len(), Meta::default(), now);
    let out = match a {
        Action::Forward { len, .. } | Action::Reply { len, .. } => buf[..usize::from(len)].to_vec(),
        Action::Drop(_) => Vec::new(),
    };
    (a, out)
}

/// What the honest side can still do after a flood: a new connection of another peer to a run,
/// a new connection of the other run to a peer, and the answers to both.
fn others_still_connect(r: &mut Router, now: Instant) {
    let (a, _) = go(
        r,
        &tcp(sa(PEER3, 50001), sa(V, 49160), Flags::Syn, b""),
        now,
    );
    assert!(matches!(a, Action::Forward { .. }), "another peer: {a:?}");
    let (a, _) = go(
        r,
        &tcp(sa(C2, 8888), sa(PEER3, 50001), Flags::SynAck, b""),
        now,
    );
    assert!(matches!(a, Action::Forward { .. }), "its answer: {a:?}");
    let (a, out) = go(r, &udp(sa(C2, 6000), sa(PEER3, 53), b"q"), now);
    assert!(matches!(a, Action::Forward { .. }), "another run: {a:?}");
    let public = endpoints(&out).0.port();
    let (a, _) = go(r, &udp(sa(PEER3, 53), sa(V, public), b"a"), now);
    assert!(matches!(a, Action::Forward { .. }), "its answer: {a:?}");
}

#[test]
fn a_syn_rst_flood_parks_only_the_flooders_entries() {
    let mut r = lab(small());
    for i in 0..2000 {
        let port = 1000 + i;
        go(
            &mut r,
            &tcp(sa(PEER, port), sa(V, 49152), Flags::Syn, b""),
            T0,
        );
        go(
            &mut r,
            &tcp(sa(PEER, port), sa(V, 49152), Flags::Rst, b""),
            T0,
        );
    }
    assert!(r.counters().drops(DropReason::SourceQuota) > 0);
    others_still_connect(&mut r, T0);
}

#[test]
fn half_open_handshakes_hold_little_and_not_for_long() {
    let mut r = lab(small());
    // The flooder's SYNs are answered by the container, but it never completes the handshake.
    for i in 0..2000 {
        let port = 1000 + i;
        go(
            &mut r,
            &tcp(sa(PEER, port), sa(V, 49152), Flags::Syn, b""),
            T0,
        );
        go(
            &mut r,
            &tcp(sa(C1, 8888), sa(PEER, port), Flags::SynAck, b""),
            T0,
        );
    }
    others_still_connect(&mut r, T0);
    // Half-open entries live the half-open timeout (60 s), not the established one (2 h).
    let later = T0.saturating_add(Timeouts::default().tcp_half_open + Duration::from_secs(2));
    r.poll(later);
    assert!(
        r.connections() <= 4,
        "half-open entries outlived their timeout: {}",
        r.connections()
    );
}

#[test]
fn answered_udp_flows_of_one_peer_stay_within_its_quota() {
    let mut r = lab(small());
    for i in 0..2000 {
        let port = 1000 + i;
        go(&mut r, &udp(sa(PEER, port), sa(V, 49153), b"x"), T0);
        go(&mut r, &udp(sa(C1, 9000), sa(PEER, port), b"y"), T0);
    }
    // The peer's quota, and the container's own for the answers to flows it was refused.
    assert!(r.connections() <= 2 * 16, "{}", r.connections());
    others_still_connect(&mut r, T0);
}

#[test]
fn one_container_cannot_fill_the_table_for_the_other_runs() {
    let mut r = lab(small());
    // Flows that its peers answer, so none of them is unsettled.
    for i in 0..2000u16 {
        let (a, out) = go(&mut r, &udp(sa(C1, 20000 + i), sa(PEER, 53), b"q"), T0);
        if matches!(a, Action::Forward { .. }) {
            let public = endpoints(&out).0.port();
            go(&mut r, &udp(sa(PEER, 53), sa(V, public), b"a"), T0);
        }
    }
    assert!(r.counters().drops(DropReason::SourceQuota) > 0);
    others_still_connect(&mut r, T0);
}

#[test]
fn one_peers_fragments_do_not_push_out_anothers() {
    let mut r = lab(small());
    // The honest peer's fragmented datagram: its first fragment is translated...
    let honest = udp(sa(PEER3, 7000), sa(V, 49153), &[1u8; 3000]);
    let parts = fragment(&honest, 1400);
    let (a, _) = go(&mut r, &parts[0], T0);
    assert!(matches!(a, Action::Forward { .. }), "{a:?}");
    // ...then a flood of other datagrams' first fragments from one peer...
    for i in 0..500u16 {
        let mut d = udp(sa(PEER, 1000 + i), sa(V, 49153), &[2u8; 3000]);
        d[4..6].copy_from_slice(&(i + 100).to_be_bytes());
        fix_ip_checksum(&mut d);
        go(&mut r, &fragment(&d, 1400)[0], T0);
    }
    assert!(r.fragmented() <= 4 + 1, "{}", r.fragmented());
    // ...and the honest datagram's later fragments still find their translation.
    for p in &parts[1..] {
        let (a, _) = go(&mut r, p, T0);
        assert!(
            matches!(a, Action::Forward { .. }),
            "a later fragment: {a:?}"
        );
    }
}

#[test]
fn a_port_scan_does_not_silence_the_answers_to_others() {
    let mut r = lab(small());
    let mut answered = 0;
    for port in 1..=3000u16 {
        let (a, _) = go(
            &mut r,
            &tcp(sa(PEER, 40000), sa(V, port), Flags::Syn, b""),
            T0,
        );
        if matches!(a, Action::Reply { .. }) {
            answered += 1;
        }
    }
    assert!(
        answered <= 10,
        "the scanner got {answered} answers in one instant"
    );
    let (a, _) = go(
        &mut r,
        &tcp(sa(PEER3, 40000), sa(V, 1234), Flags::Syn, b""),
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
        "another peer still learns the port is closed: {a:?}"
    );
}

#[test]
fn icmp_errors_come_only_from_the_flows_own_peer() {
    let mut r = lab(small());
    // C1 talks to PEER over UDP.
    let (_, out) = go(&mut r, &udp(sa(C1, 5000), sa(PEER, 53), b"q"), T0);
    let public = endpoints(&out).0.port();
    let quoted = udp(sa(V, public), sa(PEER, 53), b"q");
    let error_from = |src: std::net::Ipv4Addr, icmp_type: u8, code: u8| {
        let mut e = Vec::new();
        etherparse::PacketBuilder::ipv4(src.octets(), V.octets(), 64)
            .icmpv4_raw(icmp_type, code, [0, 0, 5, 0x78])
            .write(&mut e, &quoted)
            .expect("icmp");
        e
    };
    // Another peer cannot end the flow with "port unreachable".
    let (a, _) = go(&mut r, &error_from(PEER3, 3, 3), T0);
    assert_eq!(a, Action::Drop(DropReason::IcmpErrorUnmatched));
    // The flow's peer can.
    let (a, _) = go(&mut r, &error_from(PEER, 3, 3), T0);
    assert!(matches!(a, Action::Forward { .. }), "{a:?}");
    // A router on the path may still report a smaller MTU.
    let (a, _) = go(&mut r, &error_from(PEER3, 3, 4), T0);
    assert!(matches!(a, Action::Forward { .. }), "{a:?}");
    // A hairpin flow never crossed the VPN: nobody there may speak for it.
    let (_, out) = go(
        &mut r,
        &tcp(sa(C2, 41000), sa(V, 49152), Flags::Syn, b""),
        T0,
    );
    let (src, dst) = endpoints(&out);
    let quoted = tcp(dst, src, Flags::SynAck, b"");
    for from in [PEER, PEER3] {
        let mut e = Vec::new();
        etherparse::PacketBuilder::ipv4(from.octets(), V.octets(), 64)
            .icmpv4_raw(3, 4, [0, 0, 5, 0x78])
            .write(&mut e, &quoted)
            .expect("icmp");
        let (a, _) = go(&mut r, &e, T0);
        assert_eq!(
            a,
            Action::Drop(DropReason::IcmpErrorUnmatched),
            "from {from}"
        );
    }
}

/// Copies of one algorithm: `n` containers of one job (each its own run and source), each
/// opening answered UDP flows to one peer port until refused. Together they never hold more
/// than the job's budget, however many copies there are, and another job's run still connects
/// both ways.
fn copies_of_one_job_stay_within_its_budget(n: u8, flows_each: u16) {
    const BUDGET: usize = 40;
    let config = Config {
        max_connections: 256,
        max_connections_per_source: 32,
        max_connections_per_run: BUDGET,
        ..Config::default()
    };
    let mut r = lab(config);
    const JOB: u64 = 77;
    let copies: Vec<std::net::Ipv4Addr> = (0..n)
        .map(|i| std::net::Ipv4Addr::new(172, 31, 1, i + 1))
        .collect();
    for (i, c) in copies.iter().enumerate() {
        r.add_container(*c, netstack::RunId(100 + i as u64), JOB)
            .expect("a copy");
    }
    let mut opened = 0usize;
    for c in &copies {
        for port in 0..flows_each {
            let (a, out) = go(&mut r, &udp(sa(*c, 20000 + port), sa(PEER, 53), b"q"), T0);
            if let Action::Forward { .. } = a {
                opened += 1;
                let public = endpoints(&out).0.port();
                go(&mut r, &udp(sa(PEER, 53), sa(V, public), b"a"), T0);
            }
        }
    }
    assert!(opened <= BUDGET, "{n} copies opened {opened}");
    assert!(r.family_connections(JOB) as usize <= BUDGET);
    // Each copy alone is held by its source quota (32): past the budget together, the job's.
    if usize::from(n) * usize::from(flows_each.min(32)) > BUDGET {
        assert!(r.counters().drops(DropReason::RunQuota) > 0);
    }
    others_still_connect(&mut r, T0);
    // A run that ends gives its share back.
    r.remove_run(netstack::RunId(100));
    let left = r.family_connections(JOB) as usize;
    assert!(left <= opened, "{left} > {opened}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    #[test]
    fn no_number_of_copies_of_one_job_fills_the_table(n in 1u8..24, flows_each in 1u16..80) {
        copies_of_one_job_stay_within_its_budget(n, flows_each);
    }
}
