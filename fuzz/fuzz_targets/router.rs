//! The router fed arbitrary packets interleaved with mapping changes, run removals, VPN changes,
//! scope changes (the first byte decides whether the router is scoped, and whether it is one of
//! three sharing the traffic, whose owner it is asked for each packet) and clock steps, with the
//! partial checksums of forwarded packets completed as merged delivery does, and half the
//! packets looked up ahead (`Router::prefetch`). It must never panic, every packet must be
//! accounted for exactly once, and the tables must stay within their bounds.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use netstack::{
    Action, Config, Instant, L4Checksum, Mapping, Meta, Owner, Protocol, Reply, Router, RunId,
    Scope, Vpn,
};

const MAX_CONNS: usize = 64;
const MAX_FRAGS: usize = 8;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

fn container(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, 2 + i % 3)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else { return };
    let config = Config {
        scoped: first & 1 == 1,
        max_connections: MAX_CONNS,
        max_connections_per_source: MAX_CONNS / 4,
        max_connections_per_run: MAX_CONNS / 3,
        max_fragmented: MAX_FRAGS,
        max_fragmented_per_source: MAX_FRAGS / 4,
        outbound_ports: 40000..=40063,
        replies_per_sec: 100,
        reply_burst: 5,
        shards: if first & 2 != 0 { 3 } else { 1 },
        ..Config::default()
    };
    let mut r = Router::new(config).expect("valid config");
    let vpn = |last: u8| Vpn { address: Ipv4Addr::new(10, 76, 0, last), prefix_len: 16, mtu: 1400 };
    r.set_vpn(Some(vpn(2))).expect("vpn");
    for i in 0..3 {
        // Runs 0 and 2 are one job: they share its connection budget.
        r.add_container(container(i), RunId(u64::from(i)), u64::from(i % 2)).expect("container");
    }
    let mut input = Input(data);
    let mut now = Instant::ZERO;
    let mut packets = 0u64;
    let mut buf = vec![0u8; 4096];
    while let Some(op) = input.byte() {
        match op % 8 {
            0..=3 => {
                let Some(len) = input.u16() else { break };
                let pkt = input.bytes(usize::from(len) % 2048);
                let n = pkt.len();
                buf[..n].copy_from_slice(pkt);
                if let Owner::Shard { shard, .. } = r.owner(&buf[..n]) {
                    assert!(shard < 3);
                }
                // Half the packets are looked up ahead, as by a driver that reads in batches.
                if len & 0x8000 != 0 {
                    r.prefetch([&buf[..n]]);
                }
                let meta = if op & 0x80 != 0 {
                    Meta { checksum: L4Checksum::Partial, gso_size: u16::from(op & 0x70) * 16 }
                } else {
                    Meta::default()
                };
                let cap = if op & 0x08 != 0 { n } else { buf.len() };
                match r.process(&mut buf[..cap], n, meta, now) {
                    Action::Forward { len, .. } => {
                        assert!(usize::from(len) <= cap);
                        // What merged delivery does with a single packet's partial checksum.
                        if meta.checksum == L4Checksum::Partial && meta.gso_size == 0 {
                            netstack::complete_partial(&mut buf[..usize::from(len)]);
                        }
                    }
                    Action::Reply { len, .. } => assert!(usize::from(len) <= cap),
                    Action::Drop(_) => {}
                }
                packets += 1;
            }
            4 => {
                let (Some(c), Some(port), Some(cport)) = (input.byte(), input.u16(), input.u16()) else { break };
                let protocol = if c & 1 == 0 { Protocol::Tcp } else { Protocol::Udp };
                let _ = r.add_mapping(Mapping {
                    protocol,
                    public_port: port,
                    container: SocketAddrV4::new(container(c >> 1), cport),
                    run: RunId(u64::from((c >> 1) % 3)),
                });
            }
            5 => {
                let (Some(c), Some(port)) = (input.byte(), input.u16()) else { break };
                let protocol = if c & 1 == 0 { Protocol::Tcp } else { Protocol::Udp };
                r.remove_mapping(protocol, port);
            }
            6 => {
                let Some(step) = input.u16() else { break };
                now = now.saturating_add(Duration::from_millis(u64::from(step) * 100));
                r.poll(now);
            }
            _ => {
                let Some(what) = input.byte() else { break };
                match what % 4 {
                    0 => r.remove_run(RunId(u64::from(what / 4 % 3))),
                    1 => {
                        let _ = r.add_container(container(what), RunId(u64::from(what % 3)), u64::from(what % 3 % 2));
                    }
                    2 => r.set_vpn(Some(vpn(2 + what % 2))).expect("vpn"),
                    3 if what & 0x40 != 0 => {
                        // A scope of a few peers of 10.76.0.0/24 and their ports (or any port).
                        let (Some(a), Some(b)) = (input.byte(), input.byte()) else { break };
                        let peer = |x: u8| Ipv4Addr::new(10, 76, 0, x);
                        let port = |x: u8| if x & 1 == 0 { 0 } else { 49152 + u16::from(x >> 1) };
                        r.set_scope(
                            RunId(u64::from(what % 3)),
                            Scope {
                                sources: [peer(a), peer(b)].into(),
                                targets: [SocketAddrV4::new(peer(a), port(b)), SocketAddrV4::new(peer(b), port(a))].into(),
                            },
                        );
                    }
                    _ => r.set_tunnel_up(what & 0x80 != 0),
                }
            }
        }
        assert!(r.connections() <= MAX_CONNS);
        assert!(r.fragmented() <= MAX_FRAGS);
    }
    let c = r.counters();
    let accounted = c.forwarded_packets.iter().sum::<u64>() + c.total_drops() + c.replies(Reply::EchoReply);
    assert_eq!(accounted, packets);
});
