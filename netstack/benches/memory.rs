//! Heap bytes per tracked connection: the whole router's heap, measured by a counting
//! allocator, divided by the connections it tracks.
//!
//! `cargo bench -p netstack --bench memory`

#[path = "../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::populated;

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

fn main() {
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
