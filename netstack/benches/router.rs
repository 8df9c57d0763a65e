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
                    let templates: Vec<Vec<u8>> = (0..flows)
                        .map(|f| {
                            let i = f * (n / flows);
                            if udp_proto {
                                udp(peer(i), sa(V, 49153), &vec![0xab; size - 28])
                            } else {
                                tcp(peer(i), sa(V, 49152), Flags::Ack, &vec![0xab; size - 40])
                            }
                        })
                        .collect();
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
    owner(&mut c);
    c.final_summary();
}
