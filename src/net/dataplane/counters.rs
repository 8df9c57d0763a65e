//! What the data plane counts beside the router: the device's I/O, and a [`Snapshot`] of both
//! added up over the workers.

use netstack::Counters;

/// Counters of the device I/O, beside the router's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    pub reads: u64,
    pub writes: u64,
    /// Writes the kernel refused (the packet is lost, as on a full queue).
    pub write_errors: u64,
    /// Reads too short to hold a virtio-net header.
    pub short_reads: u64,
    /// Packets read on one queue and handed to the worker whose router owns their connection.
    pub handoffs: u64,
    /// Packets lost because that worker's inbox was full.
    pub handoff_drops: u64,
    /// Packets a tunnel in the node's process handed to the routers, and those the routers
    /// handed to it (a super-packet counts once).
    pub tunnel_in: u64,
    pub tunnel_out: u64,
    /// Packets lost between the routers and that tunnel because the other side's queue was full.
    pub tunnel_drops: u64,
}

impl IoCounters {
    pub(super) fn add(&mut self, other: &IoCounters) {
        self.reads += other.reads;
        self.writes += other.writes;
        self.write_errors += other.write_errors;
        self.short_reads += other.short_reads;
        self.handoffs += other.handoffs;
        self.handoff_drops += other.handoff_drops;
        self.tunnel_in += other.tunnel_in;
        self.tunnel_out += other.tunnel_out;
        self.tunnel_drops += other.tunnel_drops;
    }
}

/// The router's counters and tables and the device's I/O at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub counters: Counters,
    /// The device's I/O over all queues, and by queue.
    pub io: IoCounters,
    pub io_by_queue: Vec<IoCounters>,
    pub connections: usize,
    pub capacity: usize,
    /// Fragmented packets whose later fragments are awaited.
    pub fragments: usize,
    pub runs: Vec<(netstack::RunId, netstack::RunTraffic)>,
}

impl Snapshot {
    /// Adds another worker's.
    pub(super) fn add(&mut self, other: Snapshot) {
        self.counters.add(&other.counters);
        self.io.add(&other.io);
        self.io_by_queue.extend(other.io_by_queue);
        self.connections += other.connections;
        self.capacity += other.capacity;
        self.fragments += other.fragments;
        for (run, t) in other.runs {
            match self.runs.iter_mut().find(|(r, _)| *r == run) {
                Some((_, mine)) => mine.add(&t),
                None => self.runs.push((run, t)),
            }
        }
        self.runs.sort_by_key(|(run, _)| *run);
    }
}
