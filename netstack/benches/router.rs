//! Cost per packet of the router's decision and in-place rewrite, by packet size, protocol and
//! number of tracked connections.
//!
//! `cargo bench -p netstack --bench router` (criterion; add `-- --quick` for a fast pass).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use common::*;
use criterion::{BenchmarkId, Criterion, Throughput};
use netstack::{Action, Meta};

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward");
    for n in [10usize, 10_000, 1_000_000] {
        for udp_proto in [false, true] {
            let mut r = populated(n, udp_proto);
            for size in [64usize, 576, 1500] {
                // One busy flow (a TCP stream, a GSO batch), and 4096 flows in turn spread
                // over the table (every packet a cache miss once the table outgrows the cache).
                for flows in [1, n.min(4096)] {
                    let templates = flow_packets(n, flows, udp_proto, size);
                    let mut bufs = templates.clone();
                    for b in bufs.iter_mut().take(8) {
                        let a = r.process(b, size, Meta::default(), NOW);
                        assert!(matches!(a, Action::Forward { .. }), "{a:?}");
                    }
                    let proto = if udp_proto { "udp" } else { "tcp" };
                    g.throughput(Throughput::Bytes(size as u64));
                    let id = BenchmarkId::new(
                        format!("{proto}/{size}B/{flows}flows"),
                        format!("{n}conns"),
                    );
                    g.bench_function(id, |b| {
                        let mut k = 0;
                        b.iter(|| {
                            // Not `%`: a division per packet would be measured as router time.
                            k += 1;
                            if k == flows {
                                k = 0;
                            }
                            // Restore the rewritten header; the payload is never touched.
                            bufs[k][..40].copy_from_slice(&templates[k][..40]);
                            black_box(r.process(&mut bufs[k], size, Meta::default(), NOW))
                        })
                    });
                }
            }
        }
    }
    g.finish();
}

/// A packet of each of `flows` established connections spread evenly over the `n` of
/// [`populated`].
fn flow_packets(n: usize, flows: usize, udp_proto: bool, size: usize) -> Vec<Vec<u8>> {
    (0..flows)
        .map(|f| {
            let i = f * (n / flows);
            if udp_proto {
                udp(peer(i), sa(V, 49153), &vec![0xab; size - 28])
            } else {
                tcp(peer(i), sa(V, 49152), Flags::Ack, &vec![0xab; size - 40])
            }
        })
        .collect()
}

/// Packets decided 16 at a time, as by a driver that reads a batch: one after another, and
/// with the batch looked up ahead first ([`netstack::Router::prefetch`]). The 16 buffers are
/// reused, so each packet is in the cache as a fresh read leaves it. 4096 flows in turn make
/// every lookup a cache miss once the table outgrows the caches; 16 busy flows show what
/// looking ahead costs when the recent-lookup cache knows every flow already. Time per batch.
fn batched(c: &mut Criterion) {
    const BATCH: usize = 16;
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in [10_000usize, 1_000_000] {
        for udp_proto in [false, true] {
            let mut r = populated(n, udp_proto);
            for size in [64usize, 1500] {
                for flows in [BATCH, 4096] {
                    let templates = flow_packets(n, flows, udp_proto, size);
                    let heads: Vec<[u8; 40]> = templates
                        .iter()
                        .map(|t| t[..40].try_into().expect("40 bytes"))
                        .collect();
                    let mut bufs = templates[..BATCH].to_vec();
                    for ahead in [false, true] {
                        let proto = if udp_proto { "udp" } else { "tcp" };
                        let how = if ahead { "prefetched" } else { "one-by-one" };
                        let id = BenchmarkId::new(
                            format!("{proto}/{size}B/{flows}flows/{how}"),
                            format!("{n}conns"),
                        );
                        g.bench_function(id, |b| {
                            let mut k = 0;
                            b.iter(|| {
                                for (buf, head) in bufs.iter_mut().zip(&heads[k..k + BATCH]) {
                                    buf[..40].copy_from_slice(head);
                                }
                                if ahead {
                                    r.prefetch(bufs.iter().map(|b| &b[..]));
                                }
                                for buf in &mut bufs {
                                    black_box(r.process(buf, size, Meta::default(), NOW));
                                }
                                k += BATCH;
                                if k == flows {
                                    k = 0;
                                }
                            })
                        });
                    }
                }
            }
        }
    }
    g.finish();
}

/// What choosing the router costs a packet when several share the traffic (`Router::owner`,
/// asked by the queue's worker before it hands the packet on or decides on it).
fn owner(c: &mut Criterion) {
    let mut g = c.benchmark_group("owner");
    let r = lab(netstack::Config::default().split(2));
    for (name, pkt) in [
        (
            "tcp/from-vpn",
            tcp(peer(1), sa(V, 49152), Flags::Ack, &[0xab; 1460]),
        ),
        (
            "udp/from-container",
            udp(sa(C1, 9000), peer(1), &[0xab; 1472]),
        ),
    ] {
        g.bench_function(name, |b| b.iter(|| black_box(r.owner(black_box(&pkt)))));
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    forward(&mut c);
    batched(&mut c);
    owner(&mut c);
    c.final_summary();
}
