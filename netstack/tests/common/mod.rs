//! Packet builders and an independent checksum oracle for netstack's tests and benches.
#![allow(dead_code)] // each test binary uses a different part

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::PacketBuilder;
use netstack::{Action, Config, Instant, Mapping, Meta, Protocol, Router, RunId, Vpn};

pub const V: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 2);
pub const PEER: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 3);
pub const PEER2: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 9);
pub const C1: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
pub const C2: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 3);
pub const RUN1: RunId = RunId(1);
pub const RUN2: RunId = RunId(2);
pub const MTU: u16 = 1400;

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// A router with V on 10.76.0.0/16, C1 (run 1) mapped at tcp/49152 -> 8888 and
/// udp/49153 -> 9000, C2 (run 2) mapped at tcp/49160 -> 8888.
pub fn lab(config: Config) -> Router {
    let mut r = Router::new(config).expect("config");
    r.set_vpn(Some(Vpn {
        address: V,
        prefix_len: 16,
        mtu: MTU,
    }))
    .expect("vpn");
    r.add_container(C1, RUN1, RUN1.0).expect("c1");
    r.add_container(C2, RUN2, RUN2.0).expect("c2");
    for (protocol, public_port, container, run) in [
        (Protocol::Tcp, 49152, sa(C1, 8888), RUN1),
        (Protocol::Udp, 49153, sa(C1, 9000), RUN1),
        (Protocol::Tcp, 49160, sa(C2, 8888), RUN2),
    ] {
        r.add_mapping(Mapping {
            protocol,
            public_port,
            container,
            run,
        })
        .expect("mapping");
    }
    r
}

#[derive(Clone, Copy, Debug, Default)]
pub enum Flags {
    #[default]
    Syn,
    SynAck,
    Ack,
    Fin,
    Rst,
}

pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: Flags, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64).tcp(
        src.port(),
        dst.port(),
        1000,
        65000,
    );
    let b = match flags {
        Flags::Syn => b.syn(),
        Flags::SynAck => b.syn().ack(1001),
        Flags::Ack => b.ack(5000),
        Flags::Fin => b.fin().ack(5000),
        Flags::Rst => b.rst(),
    };
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build tcp");
    set_df(&mut v);
    v
}

pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .udp(src.port(), dst.port())
        .write(&mut v, payload)
        .expect("build udp");
    v
}

pub fn ping(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, reply: bool) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
    let b = if reply {
        b.icmpv4_echo_reply(id, seq)
    } else {
        b.icmpv4_echo_request(id, seq)
    };
    let mut v = Vec::new();
    b.write(&mut v, b"abcdefgh").expect("build icmp");
    v
}

/// Sets DF (and fixes the header checksum), as TCP stacks doing PMTU discovery do.
pub fn set_df(pkt: &mut [u8]) {
    pkt[6] |= 0x40;
    fix_ip_checksum(pkt);
}

pub fn fix_ip_checksum(pkt: &mut [u8]) {
    let hl = usize::from(pkt[0] & 0x0f) * 4;
    pkt[10] = 0;
    pkt[11] = 0;
    let c = !fold(naive_sum(&pkt[..hl]));
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Splits an unfragmented packet into fragments that fit `mtu`.
pub fn fragment(pkt: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let hl = usize::from(pkt[0] & 0x0f) * 4;
    let payload = &pkt[hl..];
    let chunk = (mtu - hl) / 8 * 8;
    payload
        .chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut f = pkt[..hl].to_vec();
            f.extend_from_slice(part);
            let total = f.len() as u16;
            f[2..4].copy_from_slice(&total.to_be_bytes());
            let more = (i + 1) * chunk < payload.len();
            let word = ((i * chunk / 8) as u16) | if more { 0x2000 } else { 0 };
            f[6..8].copy_from_slice(&word.to_be_bytes());
            fix_ip_checksum(&mut f);
            f
        })
        .collect()
}

/// Joins fragments (in any order) back into one packet.
pub fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut parts: Vec<(usize, &[u8])> = frags
        .iter()
        .map(|f| {
            let hl = usize::from(f[0] & 0x0f) * 4;
            let off = usize::from(u16::from_be_bytes([f[6], f[7]]) & 0x1fff) * 8;
            (off, &f[hl..])
        })
        .collect();
    parts.sort_by_key(|p| p.0);
    let first = frags
        .iter()
        .find(|f| u16::from_be_bytes([f[6], f[7]]) & 0x1fff == 0)
        .expect("first");
    let hl = usize::from(first[0] & 0x0f) * 4;
    let mut pkt = first[..hl].to_vec();
    for (_, p) in parts {
        pkt.extend_from_slice(p);
    }
    let total = pkt.len() as u16;
    pkt[2..4].copy_from_slice(&total.to_be_bytes());
    pkt[6..8].copy_from_slice(&[0, 0]);
    fix_ip_checksum(&mut pkt);
    pkt
}

// ---- the oracle: plain full recomputation, independent of netstack's checksum module ----

pub fn naive_sum(data: &[u8]) -> u32 {
    let mut s: u32 = 0;
    for i in (0..data.len()).step_by(2) {
        let hi = u32::from(data[i]) << 8;
        let lo = data.get(i + 1).map_or(0, |b| u32::from(*b));
        s += hi | lo;
    }
    s
}

pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn expected(pseudo: u32, data: &[u8], field: usize) -> u16 {
    let mut copy = data.to_vec();
    copy[field] = 0;
    copy[field + 1] = 0;
    !fold(pseudo + naive_sum(&copy))
}

fn pseudo(pkt: &[u8], proto: u8, len: usize) -> u32 {
    naive_sum(&pkt[12..20]) + u32::from(proto) + len as u32
}

/// Checks that every checksum of an IPv4 packet equals its full recomputation, bit for bit.
/// Fragments are checked at the IP level only (check the reassembled datagram for L4).
pub fn assert_checksums(pkt: &[u8]) {
    let hl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    assert_eq!(total, pkt.len(), "total length");
    assert_eq!(
        u16::from_be_bytes([pkt[10], pkt[11]]),
        expected(0, &pkt[..hl], 10),
        "IP header checksum"
    );
    if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
        return;
    }
    let l4 = &pkt[hl..];
    match pkt[9] {
        6 => assert_eq!(
            u16::from_be_bytes([l4[16], l4[17]]),
            expected(pseudo(pkt, 6, l4.len()), l4, 16),
            "TCP checksum"
        ),
        17 => {
            let c = u16::from_be_bytes([l4[6], l4[7]]);
            if c != 0 {
                let e = match expected(pseudo(pkt, 17, l4.len()), l4, 6) {
                    0 => 0xffff,
                    e => e,
                };
                assert_eq!(c, e, "UDP checksum");
            }
        }
        1 => {
            assert_eq!(
                u16::from_be_bytes([l4[2], l4[3]]),
                expected(0, l4, 2),
                "ICMP checksum"
            );
            if matches!(l4[0], 3 | 4 | 11 | 12) {
                let q = &l4[8..];
                let qhl = usize::from(q[0] & 0x0f) * 4;
                assert_eq!(
                    u16::from_be_bytes([q[10], q[11]]),
                    expected(0, &q[..qhl], 10),
                    "quoted IP checksum"
                );
            }
        }
        p => panic!("unexpected protocol {p}"),
    }
}

/// Source and destination, with ports (ICMP echo: the identifier as both).
pub fn endpoints(pkt: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
    let hl = usize::from(pkt[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    let l4 = &pkt[hl..];
    let (sp, dp) = match pkt[9] {
        1 => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
        _ => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
    };
    (sa(src, sp), sa(dst, dp))
}

// ---- for the benches ----

pub const NOW: Instant = Instant::from_secs(1);

/// The `i`th of a million distinct VPN peers (address and port).
pub fn peer(i: usize) -> SocketAddrV4 {
    // Spread over the VPN subnet, avoiding V (10.76.0.2) and the network/broadcast addresses.
    let host = 256 + (i % 60_000) as u32;
    let port = 1024 + (i / 60_000) as u16;
    sa(
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 76, 0, 0)) + host),
        port,
    )
}

/// A router with `n` established inbound connections of the given protocol.
pub fn populated(n: usize, udp_proto: bool) -> Router {
    let mut r = lab(Config {
        max_connections: n.max(16),
        max_connections_per_run: n.max(16),
        ..Config::default()
    });
    // Ethernet-sized packets, so that 1500-byte ones are forwarded, not refused as too big.
    r.set_vpn(Some(Vpn {
        address: V,
        prefix_len: 16,
        mtu: 1500,
    }))
    .expect("vpn");
    let mut buf = vec![0u8; 2048];
    for i in 0..n {
        let (fwd, back) = if udp_proto {
            (
                udp(peer(i), sa(V, 49153), b""),
                udp(sa(C1, 9000), peer(i), b""),
            )
        } else {
            (
                tcp(peer(i), sa(V, 49152), Flags::Syn, b""),
                tcp(sa(C1, 8888), peer(i), Flags::SynAck, b""),
            )
        };
        for p in [fwd, back] {
            buf[..p.len()].copy_from_slice(&p);
            assert!(matches!(
                r.process(&mut buf, p.len(), Meta::default(), NOW),
                Action::Forward { .. }
            ));
        }
    }
    assert_eq!(r.connections(), n);
    r
}
