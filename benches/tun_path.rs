//! Packets through the real TUN path (root): UDP from the peer namespace to the node's VPN
//! address and public port, through the kernel, the TUN device and the router, to a container,
//! in windows of 32 datagrams. Reports packets/s and bytes/s, so regressions of the whole path
//! show up in `cargo bench`. Also the time from a mapping being installed through the data
//! plane's handle (as the node does before it starts an algorithm) to the first datagram
//! arriving through it. Not root: prints that it skipped.
//!
//! `cargo bench --bench tun_path`

use algonet_testkit as common;

use algonet::node::config::DEFAULT_BUSY_POLL_US;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use common::topology::{Mode, Topology, C1, V};
use common::TestNs;
use criterion::{BenchmarkId, Criterion, Throughput};
use netstack::{Mapping, Protocol, RunId};

const WINDOW: usize = 32;

fn socket(ns: &TestNs, port: u16) -> UdpSocket {
    let s: UdpSocket = ns
        .ns
        .run(move || async move { UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)) })
        .expect("ns")
        .expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    s
}

fn main() {
    if !common::privileged("tun_path bench") {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("tun_path");
    for offload in [true, false] {
        let t = Topology::new(
            if offload {
                "bench-tun-path-offload"
            } else {
                "bench-tun-path-no-offload"
            },
            Mode::Algonet {
                offload,
                busy_poll_us: DEFAULT_BUSY_POLL_US,
                queues: 1,
            },
        );
        let rx = socket(&t.c1, 9000);
        let tx = socket(&t.peer, 5000);
        tx.connect(SocketAddrV4::new(V, 49153)).expect("connect");
        for size in [64usize, 1372] {
            let payload = vec![0x42u8; size];
            let mut buf = vec![0u8; 2048];
            let bytes = (WINDOW * (size + 28)) as u64;
            g.throughput(Throughput::ElementsAndBytes {
                elements: WINDOW as u64,
                bytes,
            });
            let id = BenchmarkId::new(
                if offload {
                    "udp/offload"
                } else {
                    "udp/no-offload"
                },
                format!("{}B", size + 28),
            );
            g.bench_function(id, |b| {
                b.iter(|| {
                    for _ in 0..WINDOW {
                        tx.send(&payload).expect("send");
                    }
                    for _ in 0..WINDOW {
                        // A lost datagram costs the timeout once; it does not stop the bench.
                        if rx.recv(&mut buf).is_err() {
                            break;
                        }
                    }
                })
            });
        }
        if offload {
            // A public port no traffic used before: install, then the first datagram through.
            let port = 50_000;
            let to_new = socket(&t.peer, 5001);
            to_new.connect(SocketAddrV4::new(V, port)).expect("connect");
            let handle = t.dataplane.as_ref().expect("data plane").handle();
            g.throughput(Throughput::Elements(1));
            g.bench_function("mapping_installed_to_first_packet", |b| {
                b.iter(|| {
                    t.rt.block_on(handle.with(move |r| {
                        r.add_mapping(Mapping {
                            protocol: Protocol::Udp,
                            public_port: port,
                            container: SocketAddrV4::new(C1, 9000),
                            run: RunId(1),
                        })
                    }))
                    .expect("data plane")
                    .expect("mapping");
                    to_new.send(b"first").expect("send");
                    rx.recv(&mut [0u8; 64]).expect("first packet through");
                    t.rt.block_on(handle.with(move |r| r.remove_mapping(Protocol::Udp, port)))
                        .expect("data plane");
                })
            });
        }
    }
    g.finish();
    c.final_summary();
}
