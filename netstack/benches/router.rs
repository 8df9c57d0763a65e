//! Cost per packet of the router's decision and in-place rewrite, by packet size, protocol and
//! number of tracked connections; and heap bytes per tracked connection.
//!
//! `cargo bench -p netstack --bench router` (criterion; add `-- --quick` for a fast pass).

#[path = "../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use criterion::{BenchmarkId, Criterion, Throughput};
use netstack::{Action, Config, Instant, Meta, Router, Vpn};

/// Counts live heap bytes, to measure the tables.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const NOW: Instant = Instant::from_secs(1);

fn peer(i: usize) -> SocketAddrV4 {
    // Spread over the VPN subnet, avoiding V (10.76.0.2) and the network/broadcast addresses.
    let host = 256 + (i % 60_000) as u32;
    let port = 1024 + (i / 60_000) as u16;
    sa(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 76, 0, 0)) + host), port)
}

/// A router with `n` established inbound connections of the given protocol.
fn populated(n: usize, udp_proto: bool) -> Router {
    let mut r = lab(Config { max_connections: n.max(16), ..Config::default() });
    // Ethernet-sized packets, so that 1500-byte ones are forwarded, not refused as too big.
    r.set_vpn(Some(Vpn { address: V, prefix_len: 16, mtu: 1500 })).expect("vpn");
    let mut buf = vec![0u8; 2048];
    for i in 0..n {
        let (fwd, back) = if udp_proto {
            (udp(peer(i), sa(V, 49153), b""), udp(sa(C1, 9000), peer(i), b""))
        } else {
            (tcp(peer(i), sa(V, 49152), Flags::Syn, b""), tcp(sa(C1, 8888), peer(i), Flags::SynAck, b""))
        };
        for p in [fwd, back] {
            buf[..p.len()].copy_from_slice(&p);
            assert!(matches!(r.process(&mut buf, p.len(), Meta::default(), NOW), Action::Forward { .. }));
        }
    }
    assert_eq!(r.connections(), n);
    r
}

fn report_memory() {
    for n in [10_000usize, 1_000_000] {
        for udp_proto in [false, true] {
            let before = LIVE.load(Ordering::Relaxed);
            let r = populated(n, udp_proto);
            let bytes = LIVE.load(Ordering::Relaxed) - before;
            println!(
                "memory: {} {n} connections: {:.1} bytes per connection (whole router heap)",
                if udp_proto { "udp" } else { "tcp" },
                bytes as f64 / n as f64
            );
            drop(r);
        }
    }
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward");
    for n in [10usize, 10_000, 1_000_000] {
        for udp_proto in [false, true] {
            let mut r = populated(n, udp_proto);
            // Packets of up to 4096 different connections, spread over the table, so that large
            // tables are measured with their cache misses.
            let flows = n.min(4096);
            for size in [64usize, 576, 1500] {
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
                g.bench_function(BenchmarkId::new(format!("{proto}/{size}B"), format!("{n}conns")), |b| {
                    let mut k = 0;
                    b.iter(|| {
                        k = (k + 1) % flows;
                        // Restore the rewritten header; the payload is never touched.
                        bufs[k][..40].copy_from_slice(&templates[k][..40]);
                        let a = r.process(&mut bufs[k], size, Meta::default(), NOW);
                        black_box(a)
                    })
                });
            }
        }
    }
    g.finish();
}

fn main() {
    report_memory();
    let mut c = Criterion::default().configure_from_args();
    forward(&mut c);
    c.final_summary();
}
