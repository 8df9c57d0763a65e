//! The data-plane driver: a task that owns the node's TUN device and runs every packet through
//! [`netstack::Router`].
//!
//! It lives on its own OS thread inside the hub namespace (the TUN device and its netlink
//! configuration are made there), with a current-thread runtime. With offload the device hands
//! over GSO super-packets behind a virtio-net header; they are translated whole, in place, and
//! written back behind the same header, so a 64 KB TCP burst costs one read, one decision and one
//! write. Without offload every packet is read and written alone; the kernel merges what is
//! written (see [`open_napi`]) and packets bound for containers are written by a delivery thread
//! (see [`Delivery`]). Control (mappings, containers, the VPN address, counters) reaches the router
//! through a [`DataplaneHandle`] and is applied between packets, so a change takes effect before
//! the next packet is read.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netstack::{
    Action, Config, Counters, Fragments, Instant, L4Checksum, Meta, Owner, Router, Side,
};
use tokio::sync::{mpsc, oneshot};

use crate::net::links::{set_device_attr, set_sysctl, IfName, LinkError, Netlink};
use crate::net::netns::{Netns, NetnsError};
use crate::net::tun;

/// Length of the virtio-net header in front of each packet when offload is on.
const VNET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// Packets handled per wake-up before control and timers get a look in.
const BATCH: usize = 64;
/// Largest IPv4 packet (a GSO super-packet can be this big) plus the header.
const BUF_LEN: usize = VNET_HDR_LEN + 65_535;
/// Packets that may wait for the delivery thread at once.
const DELIVERY_BUFFERS: usize = 256;
/// How long, in nanoseconds, the kernel may hold packets written to the device without offload
/// to merge them (GRO). A merged packet goes on at once on a TCP push, at 64 KB, or with the
/// first write in a later clock tick; the timeout bounds only the wait of a burst that ended
/// without a push and was followed by silence. It is longer than a tick (4 ms at Debian's
/// 250 Hz): a timeout that ends before the next tick is re-armed on every write, most likely
/// programming the timer device each time (the time under `napi_complete_done` halved from a
/// 50 us timeout to 5 ms), and one stream ran at 1.07-1.73 Gbit/s with 1 ms against
/// 1.51-2.26 Gbit/s with 5 ms (interleaved runs of the dataplane bench).
const GRO_FLUSH_TIMEOUT_NS: &str = "5000000";

/// How to build the data plane.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    pub tun: IfName,
    /// IFF_VNET_HDR with TSO/checksum offload (GSO super-packets in, whole packets out).
    pub offload: bool,
    /// MTU of the TUN device: the tunnel MTU.
    pub mtu: u16,
    /// Transmit queue length of the TUN device.
    pub txqueuelen: u32,
    /// How long the driver keeps reading the device once its queue ran empty before it sleeps
    /// in epoll (0: not at all). A sleeping driver is woken per packet, which on a VM costs tens
    /// of microseconds per direction; polling trades CPU time while traffic flows for latency.
    pub busy_poll: Duration,
    /// Queues of the TUN device, each with a router and a thread of its own (1 to 64). The
    /// router limits in `router` are for all of them together.
    pub queues: usize,
    pub router: Config,
}

/// What failed while starting or running the data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// the TUN device could not be created
    #[error("cannot create TUN device {name}: {source}")]
    Tun {
        name: IfName,
        source: std::io::Error,
    },
    #[error(transparent)]
    Link(#[from] LinkError),
    /// the router configuration is invalid
    #[error(transparent)]
    Router(#[from] netstack::Error),
    /// reading the TUN device failed
    #[error("reading {name} failed: {source}")]
    Read {
        name: IfName,
        source: std::io::Error,
    },
    /// the data plane is not running any more
    #[error("the data plane has stopped")]
    Stopped,
    /// the delivery thread or the descriptor for direct reads could not be set up
    #[error("cannot set up the delivery thread or direct reads of {name}: {source}")]
    Helpers {
        name: IfName,
        source: std::io::Error,
    },
}

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
}

impl IoCounters {
    fn add(&mut self, other: &IoCounters) {
        self.reads += other.reads;
        self.writes += other.writes;
        self.write_errors += other.write_errors;
        self.short_reads += other.short_reads;
        self.handoffs += other.handoffs;
        self.handoff_drops += other.handoff_drops;
    }
}

type Job = Box<dyn FnOnce(&mut Router, &IoCounters) + Send>;

/// Sends control to a running data plane. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DataplaneHandle {
    /// One per worker (per router and queue of the device).
    jobs: Vec<mpsc::UnboundedSender<Job>>,
}

impl DataplaneHandle {
    /// Runs `f` on every router between two packets and returns the first router's result:
    /// the routers sharing the traffic hold the same control (VPN, containers, mappings,
    /// scopes), so control answers alike on each. What is counted or tracked differs by router;
    /// [`DataplaneHandle::snapshot`] adds it up.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Router) -> T + Send + Sync + 'static,
    ) -> Result<T, DataplaneError> {
        let f = Arc::new(f);
        let answers = self.ask(move |r, _| f(r))?;
        let mut first = None;
        for answer in answers {
            let t = answer.await.map_err(|_| DataplaneError::Stopped)?;
            first.get_or_insert(t);
        }
        first.ok_or(DataplaneError::Stopped)
    }

    /// Queues `f` on every worker; its answers, in the workers' order.
    fn ask<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Router, &IoCounters) -> T + Send + Sync + 'static,
    ) -> Result<Vec<oneshot::Receiver<T>>, DataplaneError> {
        let f = Arc::new(f);
        let mut answers = Vec::with_capacity(self.jobs.len());
        for jobs in &self.jobs {
            let (tx, rx) = oneshot::channel();
            let f = Arc::clone(&f);
            let job: Job = Box::new(move |r, io| {
                let _ = tx.send(f(r, io));
            });
            jobs.send(job).map_err(|_| DataplaneError::Stopped)?;
            answers.push(rx);
        }
        Ok(answers)
    }

    /// What the routers and the device have counted, read between two batches of packets and
    /// added up over the workers.
    pub async fn snapshot(&self) -> Result<Snapshot, DataplaneError> {
        let answers = self.ask(|r, io| Snapshot {
            counters: r.counters(),
            io: io.clone(),
            io_by_queue: vec![io.clone()],
            connections: r.connections(),
            capacity: r.capacity(),
            fragments: r.fragmented(),
            runs: r.run_traffic(),
        })?;
        let mut total = Snapshot::default();
        for answer in answers {
            total.add(answer.await.map_err(|_| DataplaneError::Stopped)?);
        }
        Ok(total)
    }

    /// The routers' and the device's counters.
    pub async fn counters(&self) -> Result<(Counters, IoCounters), DataplaneError> {
        self.snapshot().await.map(|s| (s.counters, s.io))
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
    fn add(&mut self, other: Snapshot) {
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

/// A running data plane. [`Dataplane::stop`] ends it (handles then answer `Stopped`); the TUN
/// device goes with it.
#[derive(Debug)]
pub struct Dataplane {
    handle: DataplaneHandle,
    workers: Vec<Running>,
}

/// A worker's thread and what ends it.
#[derive(Debug)]
struct Running {
    shutdown: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Result<Result<(), DataplaneError>, NetnsError>>,
}

impl Running {
    fn stop(self) -> Result<(), DataplaneError> {
        let _ = self.shutdown.send(());
        self.thread.join().map_err(|_| DataplaneError::Stopped)??
    }
}

impl Dataplane {
    /// Creates the TUN device inside `ns` (with a queue per worker), configures it and starts
    /// forwarding. Returns once every queue is open, or with the reason it could not be made.
    pub fn start(ns: &Netns, config: DataplaneConfig) -> Result<Dataplane, DataplaneError> {
        let queues = config.queues;
        if !(1..=netstack::router::MAX_SHARDS).contains(&queues) {
            return Err(DataplaneError::Router(netstack::Error::Config(
                "queues must be between 1 and 64",
            )));
        }
        let shard = config.router.split(queues);
        let routers = (0..queues)
            .map(|_| Router::new(shard.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let (inboxes, letters): (Vec<_>, Vec<_>) =
            (0..queues).map(|_| mpsc::channel(HANDOFF_QUEUE)).unzip();
        let peers: Arc<[mpsc::Sender<Vec<u8>>]> = inboxes.into();
        let r = &config.router;
        let later = (queues > 1).then(|| {
            Arc::new(Mutex::new(Fragments::new(
                r.max_fragmented,
                r.max_fragmented_per_source,
                u64::try_from(r.timeouts.fragment.as_millis()).unwrap_or(u64::MAX),
                r.seed,
            )))
        });
        // One clock for all workers: they share what `later` remembers.
        let epoch = std::time::Instant::now();
        let mut workers = Vec::new();
        let mut jobs = Vec::new();
        for (index, (router, inbox)) in routers.into_iter().zip(letters).enumerate() {
            let (job_tx, job_rx) = mpsc::unbounded_channel();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (shutdown, stop_rx) = oneshot::channel();
            let worker = Worker {
                index,
                epoch,
                router,
                jobs: job_rx,
                shutdown: stop_rx,
                inbox,
                peers: Arc::clone(&peers),
                later: later.clone(),
            };
            let config = config.clone();
            // Queues after the first attach to the device the first one made.
            let thread = ns.spawn(move || run(config, worker, ready_tx))?;
            let failed = match ready_rx.recv() {
                Ok(Ok(())) => {
                    workers.push(Running { shutdown, thread });
                    jobs.push(job_tx);
                    continue;
                }
                Ok(Err(e)) => {
                    let _ = thread.join();
                    e
                }
                Err(_) => match thread.join() {
                    Ok(Err(e)) => e.into(),
                    _ => DataplaneError::Stopped,
                },
            };
            for w in workers {
                let _ = w.stop();
            }
            return Err(failed);
        }
        Ok(Dataplane {
            handle: DataplaneHandle { jobs },
            workers,
        })
    }

    pub fn handle(&self) -> DataplaneHandle {
        self.handle.clone()
    }

    /// Stops forwarding and removes the TUN device. Waits for the threads; returns why one had
    /// stopped if it had stopped by itself.
    pub fn stop(self) -> Result<(), DataplaneError> {
        let outcomes: Vec<_> = self.workers.into_iter().map(Running::stop).collect();
        outcomes.into_iter().collect()
    }
}

async fn setup(config: &DataplaneConfig) -> Result<tun_rs::AsyncDevice, DataplaneError> {
    let name = &config.tun;
    let dev = tun::open(name, config.offload, config.queues > 1).map_err(|source| {
        DataplaneError::Tun {
            name: name.clone(),
            source,
        }
    })?;
    let nl = Netlink::connect()?;
    nl.configure(name, Some(u32::from(config.mtu)), Some(config.txqueuelen))
        .await?;
    if !config.offload {
        // A tuning, not a function: without it packets are merely passed on one by one.
        if let Err(e) = set_device_attr(name, "gro_flush_timeout", GRO_FLUSH_TIMEOUT_NS) {
            tracing::warn!("{e}; packets written to {name} are not merged");
        }
    }
    // The router is IPv4 only; an IPv6 link-local address would only invite traffic it drops.
    set_sysctl(&format!("net/ipv6/conf/{name}/disable_ipv6"), "1").or_else(|e| match e {
        LinkError::Setting { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        e => Err(e),
    })?;
    Ok(dev)
}

/// Writes packets bound for containers on a thread of its own (without offload). A TUN write
/// carries the kernel's receive work on the writing thread (copy, checksum check, GRO and, for
/// each merged packet, routing, the veth and the receiving container's TCP); without offload
/// that is most of the data plane's CPU time. With deliveries to containers here and to the tunnel
/// on the router's thread, one stream's two directions use two CPUs. Packets keep their order:
/// every container-bound packet the router forwards goes through the one queue.
struct Delivery {
    /// `None` only while dropping: closing it ends the thread.
    queue: Option<SyncSender<(Vec<u8>, usize)>>,
    free: Receiver<Vec<u8>>,
    /// Bytes of each buffer.
    room: usize,
    errors: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Delivery {
    fn start(
        dev: &tun_rs::AsyncDevice,
        room: usize,
        window: Duration,
    ) -> std::io::Result<Delivery> {
        let fd = tun::duplicate(dev)?;
        let (queue, queued) = sync_channel::<(Vec<u8>, usize)>(DELIVERY_BUFFERS);
        let (give_back, free) = sync_channel(DELIVERY_BUFFERS);
        for _ in 0..DELIVERY_BUFFERS {
            let _ = give_back.send(vec![0u8; room]);
        }
        let errors = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&errors);
        let thread = std::thread::Builder::new()
            .name("algonet-delivery".into())
            .spawn(move || {
                let mut tun = fd;
                while let Some((buf, len)) = recv_polling(&queued, window) {
                    if tun.write(&buf[..len]).is_err() {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    if give_back.send(buf).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Delivery {
            queue: Some(queue),
            free,
            room,
            errors,
            thread: Some(thread),
        })
    }

    /// Queues a copy of `packet`; false if it is not queued (larger than a buffer, or the
    /// thread is gone) and the caller writes it. When every buffer is queued this waits for
    /// one, as a writer waits on a full transmit queue.
    fn send(&self, packet: &[u8]) -> bool {
        // Checked before a buffer is taken, so every buffer goes back to the pool.
        if packet.len() > self.room {
            return false;
        }
        let (Some(queue), Ok(mut buf)) = (&self.queue, self.free.recv()) else {
            return false;
        };
        buf[..packet.len()].copy_from_slice(packet);
        queue.send((buf, packet.len())).is_ok()
    }
}

/// Calls `attempt` until it answers or `window` passes (then `None`), yielding the CPU between
/// calls to anything else runnable there (the containers' own work, the other data-plane
/// thread): a poll holds a CPU only when nothing else wants it.
fn poll_for<T>(window: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(answer) = attempt() {
            return Some(answer);
        }
        if start.elapsed() >= window {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Reads the device directly until a packet comes or `window` passes. `try_recv` cannot do
/// this: tokio's readiness, which it checks first, only changes when the task yields.
fn poll_device(tun: &mut std::fs::File, buf: &mut [u8], window: Duration) -> Option<usize> {
    poll_for(window, || match tun.read(buf) {
        Ok(n) => Some(Some(n)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        // An error the next `try_recv` will report.
        Err(_) => Some(None),
    })
    .flatten()
}

/// Receives from `rx`, polling for up to `window` before it sleeps: a sleeping thread costs the
/// sender a wake-up. `None` once the sender is gone.
fn recv_polling<T>(rx: &Receiver<T>, window: Duration) -> Option<T> {
    use std::sync::mpsc::TryRecvError;
    poll_for(window, || match rx.try_recv() {
        Ok(item) => Some(Some(item)),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => Some(None),
    })
    .unwrap_or_else(|| rx.recv().ok())
}

impl Drop for Delivery {
    /// Writes what is queued, then ends the thread (and with it its handle on the device).
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whole single packets (no GSO; a partial checksum completed first) forwarded during one
/// wake-up, written together through tun-rs's GRO: consecutive segments of one TCP flow (and
/// equal datagrams of one UDP flow, where the kernel has USO) reach the kernel as one
/// super-packet, checksums verified before merging. Packets from the tunnel arrive this way
/// (OpenVPN's tun0 has no offload), and so do a container's datagrams, so a burst costs one
/// write, one pass through routing and the veth and one receive at the other end instead of one
/// per packet, and a receiving container acknowledges less often. Nothing waits for more
/// packets beyond one yield of the CPU once the device's queue ran empty (see `run`).
struct Merge {
    slots: Vec<Slot>,
    len: usize,
    gro: tun_rs::GROTable,
}

/// A packet behind room for its virtio-net header; a merge grows it up to the largest IPv4
/// packet.
struct Slot(Vec<u8>);

/// What tun-rs may grow a slot to: it merges into a slot only while this holds twice the
/// header plus the merged packet, which keeps the merged packet within IPv4's 64 KB.
const SLOT_CAPACITY: usize = 2 * VNET_HDR_LEN + 65_535;

impl AsRef<[u8]> for Slot {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for Slot {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl tun_rs::ExpandBuffer for Slot {
    fn buf_capacity(&self) -> usize {
        SLOT_CAPACITY
    }
    fn buf_resize(&mut self, new_len: usize, value: u8) {
        self.0.resize(new_len, value)
    }
    fn buf_extend_from_slice(&mut self, extend: &[u8]) {
        self.0.extend_from_slice(extend)
    }
}

impl Merge {
    fn new() -> Merge {
        Merge {
            // Only the pages a packet touches become resident.
            slots: (0..BATCH)
                .map(|_| Slot(Vec::with_capacity(SLOT_CAPACITY)))
                .collect(),
            len: 0,
            gro: tun_rs::GROTable::new(),
        }
    }

    /// Queues a copy of `packet`; the caller flushes before the batch is full.
    fn push(&mut self, packet: &[u8]) {
        let slot = &mut self.slots[self.len].0;
        slot.clear();
        slot.resize(VNET_HDR_LEN, 0);
        slot.extend_from_slice(packet);
        self.len += 1;
    }

    /// Writes what is queued. `writes` counts the packets handed over, merged or not.
    async fn flush(&mut self, dev: &tun_rs::AsyncDevice, io: &mut IoCounters) {
        let n = std::mem::take(&mut self.len);
        if n == 0 {
            return;
        }
        match dev
            .send_multiple(&mut self.gro, &mut self.slots[..n], VNET_HDR_LEN)
            .await
        {
            Ok(_) => io.writes += n as u64,
            Err(_) => io.write_errors += 1,
        }
    }
}

/// Packets one worker may have handed to another at once; past that they are dropped (and
/// counted), as on a full device queue.
const HANDOFF_QUEUE: usize = 256;

/// One router with its queue of the device. With several, the kernel picks a packet's queue
/// by a hash of its addresses and ports, and later by where the packets of the reverse flow
/// were written; a packet that lands on another router's queue than its connection's (see
/// [`Router::owner`]) is handed over, and the owner's write of the translated packet then
/// steers the flow's answers to its own queue.
struct Worker {
    index: usize,
    /// What the router's [`Instant`]s count from.
    epoch: std::time::Instant,
    router: Router,
    jobs: mpsc::UnboundedReceiver<Job>,
    shutdown: oneshot::Receiver<()>,
    /// Packets other workers read for this one's router (with their virtio-net header).
    inbox: mpsc::Receiver<Vec<u8>>,
    /// Every worker's inbox, by index.
    peers: Arc<[mpsc::Sender<Vec<u8>>]>,
    /// With several routers: which one translated a fragmented datagram's first fragment.
    later: Option<Arc<Mutex<Fragments<u16>>>>,
}

impl Worker {
    /// The worker whose router decides on `packet` (see [`Owner`]).
    fn owner(&self, packet: &[u8], now: Instant) -> usize {
        let Some(later) = &self.later else {
            return self.index;
        };
        // Should a worker have panicked holding the lock, what the map remembers is still usable
        // (at worst one datagram's owner is missing).
        let fragments = || later.lock().unwrap_or_else(|e| e.into_inner());
        match self.router.owner(packet) {
            Owner::Shard {
                shard,
                first_fragment,
            } => {
                if let Some(key) = first_fragment {
                    fragments().insert(key, shard as u16, now);
                }
                shard
            }
            Owner::LaterFragment(key) => fragments()
                .lookup(&key, now)
                .map_or(self.index, usize::from),
            Owner::Any => self.index,
        }
    }
}

/// A worker's queue of the device and how it writes there.
struct Port {
    dev: tun_rs::AsyncDevice,
    /// The same queue, for reads beside tokio's.
    poller: std::fs::File,
    delivery: Option<Delivery>,
    merge: Merge,
    io: IoCounters,
    /// Length of the virtio-net header: 0 without offload.
    hdr: usize,
}

impl Port {
    /// Decides on the packet in `buf[..n]` (behind its virtio-net header with offload) and
    /// writes or queues what the router makes of it.
    async fn forward(&mut self, router: &mut Router, buf: &mut [u8], n: usize, now: Instant) {
        let hdr = self.hdr;
        let meta = if hdr == 0 {
            Meta::default()
        } else {
            vnet_meta(&buf[..hdr])
        };
        let out = match router.process(&mut buf[hdr..], n - hdr, meta, now) {
            Action::Forward { len, to } => {
                let len = usize::from(len);
                if let (Some(d), Side::Container) = (&self.delivery, to) {
                    if d.send(&buf[hdr..hdr + len]) {
                        self.io.writes += 1;
                        return;
                    }
                }
                // A partial checksum is finished here, as the kernel would finish it: the
                // merge takes only complete ones.
                if hdr > 0
                    && meta.gso_size == 0
                    && (meta.checksum == L4Checksum::Complete
                        || netstack::complete_partial(&mut buf[hdr..hdr + len]))
                {
                    self.merge.push(&buf[hdr..hdr + len]);
                    return;
                }
                hdr + len
            }
            Action::Reply { len, .. } => {
                // A packet the router built: complete checksums, no segmentation.
                buf[..hdr].fill(0);
                hdr + usize::from(len)
            }
            Action::Drop(_) => return,
        };
        // What was queued before this packet goes first: order within a flow holds.
        self.flush().await;
        let sent = match self.dev.try_send(&buf[..out]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.dev.send(&buf[..out]).await
            }
            other => other,
        };
        match sent {
            Ok(_) => self.io.writes += 1,
            Err(_) => self.io.write_errors += 1,
        }
    }

    async fn flush(&mut self) {
        self.merge.flush(&self.dev, &mut self.io).await;
    }

    /// The counters, with the delivery thread's write errors.
    fn counters(&self) -> IoCounters {
        let mut io = self.io.clone();
        if let Some(d) = &self.delivery {
            io.write_errors += d.errors.load(Ordering::Relaxed);
        }
        io
    }
}

/// Opens the worker's queue (the first worker creates and configures the device) and its
/// helpers.
async fn open_port(config: &DataplaneConfig, first: bool) -> Result<Port, DataplaneError> {
    let dev = if first {
        setup(config).await?
    } else {
        tun::open(&config.tun, config.offload, true).map_err(|source| DataplaneError::Tun {
            name: config.tun.clone(),
            source,
        })?
    };
    let helpers = || {
        let delivery = (!config.offload)
            .then(|| Delivery::start(&dev, usize::from(config.mtu), config.busy_poll))
            .transpose()?;
        Ok((delivery, tun::duplicate(&dev)?))
    };
    let (delivery, poller) = helpers().map_err(|source| DataplaneError::Helpers {
        name: config.tun.clone(),
        source,
    })?;
    Ok(Port {
        dev,
        poller,
        delivery,
        merge: Merge::new(),
        io: IoCounters::default(),
        hdr: if config.offload { VNET_HDR_LEN } else { 0 },
    })
}

async fn run(
    config: DataplaneConfig,
    mut w: Worker,
    ready: std::sync::mpsc::Sender<Result<(), DataplaneError>>,
) -> Result<(), DataplaneError> {
    let mut port = match open_port(&config, w.index == 0).await {
        Ok(port) => {
            let _ = ready.send(Ok(()));
            port
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let epoch = w.epoch;
    let now =
        || Instant::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
    let hdr = port.hdr;
    let mut buf = vec![0u8; BUF_LEN];
    // Expiry sleeps until the router has work for it (never, while it tracks nothing), and
    // runs at most once a second: a lookup already treats an idle connection as gone, so a
    // later poll only reclaims memory.
    let expiry = tokio::time::sleep_until(tokio::time::Instant::from_std(epoch) + FAR);
    tokio::pin!(expiry);
    let mut last_poll = tokio::time::Instant::now();
    loop {
        let due = w
            .router
            .poll_at()
            .map_or(tokio::time::Instant::from_std(epoch) + FAR, |t| {
                let at =
                    tokio::time::Instant::from_std(epoch) + Duration::from_millis(t.as_millis());
                at.max(last_poll + POLL_EVERY)
            });
        if expiry.deadline() != due {
            expiry.as_mut().reset(due);
        }
        tokio::select! {
            // Control first: a mapping removed is gone before the next packet is looked at.
            biased;
            _ = &mut w.shutdown => return Ok(()),
            job = w.jobs.recv() => match job {
                Some(job) => job(&mut w.router, &port.counters()),
                None => return Ok(()),
            },
            Some(packet) = w.inbox.recv() => {
                let n = packet.len().min(BUF_LEN);
                buf[..n].copy_from_slice(&packet[..n]);
                port.forward(&mut w.router, &mut buf, n, now()).await;
                port.flush().await;
            }
            ready = port.dev.readable() => {
                ready.map_err(|source| DataplaneError::Read { name: config.tun.clone(), source })?;
                // Drain what is queued (up to a batch) before looking at control and timers
                // again: one wake-up per burst instead of per packet.
                let now = now();
                for _ in 0..BATCH {
                    let n = match port.dev.try_recv(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            // The queue ran empty. Before what this wake-up merged leaves, the
                            // CPU goes once to whatever else wants it (on a small host often
                            // the sender of the burst) and the queue is read again: a flood
                            // keeps merging, a lone packet waits one yield.
                            let again = (port.merge.len > 0)
                                .then(|| {
                                    std::thread::yield_now();
                                    poll_device(&mut port.poller, &mut buf, Duration::ZERO)
                                })
                                .flatten();
                            let next = match again {
                                Some(n) => Some(n),
                                None => {
                                    port.flush().await;
                                    // Without a poll window the thread goes back to sleep
                                    // rather than read once more: what came during the flush
                                    // wakes it at once, and what comes until then is read as
                                    // one burst and merged (see docs/performance.md).
                                    if config.busy_poll.is_zero() {
                                        break;
                                    }
                                    poll_device(&mut port.poller, &mut buf, config.busy_poll)
                                }
                            };
                            match next {
                                Some(n) => n,
                                None => break,
                            }
                        }
                        Err(source) => return Err(DataplaneError::Read { name: config.tun.clone(), source }),
                    };
                    port.io.reads += 1;
                    if n < hdr {
                        port.io.short_reads += 1;
                        continue;
                    }
                    let owner = w.owner(&buf[hdr..n], now);
                    if owner != w.index {
                        match w.peers[owner].try_send(buf[..n].to_vec()) {
                            Ok(()) => port.io.handoffs += 1,
                            Err(_) => port.io.handoff_drops += 1,
                        }
                        continue;
                    }
                    port.forward(&mut w.router, &mut buf, n, now).await;
                }
                port.flush().await;
            }
            () = &mut expiry => {
                w.router.poll(now());
                last_poll = tokio::time::Instant::now();
            }
        }
    }
}

/// The shortest time between two expiry polls.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// A deadline that never comes (a century).
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Reads the offload information of a virtio-net header (native endian, as the TUN device
/// writes it without TUNSETVNETLE).
fn vnet_meta(h: &[u8]) -> Meta {
    let flags = h[0];
    let gso_type = h[1];
    let gso_size = u16::from_ne_bytes([h[4], h[5]]);
    Meta {
        checksum: if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            L4Checksum::Partial
        } else {
            L4Checksum::Complete
        },
        gso_size: if gso_type & 0x7f == VIRTIO_NET_HDR_GSO_NONE {
            0
        } else {
            gso_size
        },
    }
}
