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
use std::sync::Arc;
use std::time::Duration;

use netstack::{Action, Config, Counters, Instant, L4Checksum, Meta, Router, Side};
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
}

type Job = Box<dyn FnOnce(&mut Router, &IoCounters) + Send>;

/// Sends control to a running data plane. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DataplaneHandle {
    jobs: mpsc::UnboundedSender<Job>,
}

impl DataplaneHandle {
    /// Runs `f` on the router between two packets and returns its result.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Router) -> T + Send + 'static,
    ) -> Result<T, DataplaneError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |r, _| {
            let _ = tx.send(f(r));
        });
        self.jobs.send(job).map_err(|_| DataplaneError::Stopped)?;
        rx.await.map_err(|_| DataplaneError::Stopped)
    }

    /// What the router and the device have counted, read between two batches of packets.
    pub async fn snapshot(&self) -> Result<Snapshot, DataplaneError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |r, io| {
            let _ = tx.send(Snapshot {
                counters: r.counters(),
                io: io.clone(),
                connections: r.connections(),
                capacity: r.capacity(),
                fragments: r.fragmented(),
                runs: r.run_traffic(),
            });
        });
        self.jobs.send(job).map_err(|_| DataplaneError::Stopped)?;
        rx.await.map_err(|_| DataplaneError::Stopped)
    }

    /// The router's and the device's counters.
    pub async fn counters(&self) -> Result<(Counters, IoCounters), DataplaneError> {
        self.snapshot().await.map(|s| (s.counters, s.io))
    }
}

/// The router's counters and tables and the device's I/O at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub counters: Counters,
    pub io: IoCounters,
    pub connections: usize,
    pub capacity: usize,
    /// Fragmented packets whose later fragments are awaited.
    pub fragments: usize,
    pub runs: Vec<(netstack::RunId, netstack::RunTraffic)>,
}

/// A running data plane. [`Dataplane::stop`] ends it (handles then answer `Stopped`); the TUN
/// device goes with it.
#[derive(Debug)]
pub struct Dataplane {
    handle: DataplaneHandle,
    shutdown: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Result<Result<(), DataplaneError>, NetnsError>>,
}

impl Dataplane {
    /// Creates the TUN device inside `ns`, configures it and starts forwarding. Returns once the
    /// device is up, or with the reason it could not be made.
    pub fn start(ns: &Netns, config: DataplaneConfig) -> Result<Dataplane, DataplaneError> {
        let router = Router::new(config.router.clone())?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (shutdown, stop_rx) = oneshot::channel();
        let thread = ns.spawn(move || run(config, router, rx, stop_rx, ready_tx))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Dataplane {
                handle: DataplaneHandle { jobs },
                shutdown,
                thread,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(DataplaneError::Stopped),
            },
        }
    }

    pub fn handle(&self) -> DataplaneHandle {
        self.handle.clone()
    }

    /// Stops forwarding and removes the TUN device. Waits for the thread; returns why it had
    /// stopped if it had stopped by itself.
    pub fn stop(self) -> Result<(), DataplaneError> {
        let _ = self.shutdown.send(());
        self.thread.join().map_err(|_| DataplaneError::Stopped)??
    }
}

async fn setup(config: &DataplaneConfig) -> Result<tun_rs::AsyncDevice, DataplaneError> {
    let name = &config.tun;
    let dev = tun::open(name, config.offload).map_err(|source| DataplaneError::Tun {
        name: name.clone(),
        source,
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

async fn run(
    config: DataplaneConfig,
    mut router: Router,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut shutdown: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), DataplaneError>>,
) -> Result<(), DataplaneError> {
    let started = setup(&config).await.and_then(|dev| {
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
        Ok((dev, delivery, poller))
    });
    let (dev, delivery, mut poller) = match started {
        Ok(started) => {
            let _ = ready.send(Ok(()));
            started
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let epoch = std::time::Instant::now();
    let now =
        || Instant::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
    let hdr = if config.offload { VNET_HDR_LEN } else { 0 };
    let mut buf = vec![0u8; BUF_LEN];
    let mut merge = Merge::new();
    let mut io = IoCounters::default();
    // Expiry sleeps until the router has work for it (never, while it tracks nothing), and
    // runs at most once a second: a lookup already treats an idle connection as gone, so a
    // later poll only reclaims memory.
    let expiry = tokio::time::sleep_until(tokio::time::Instant::from_std(epoch) + FAR);
    tokio::pin!(expiry);
    let mut last_poll = tokio::time::Instant::now();
    loop {
        let due = router
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
            _ = &mut shutdown => return Ok(()),
            job = jobs.recv() => match job {
                Some(job) => {
                    let mut io = io.clone();
                    if let Some(d) = &delivery {
                        io.write_errors += d.errors.load(Ordering::Relaxed);
                    }
                    job(&mut router, &io)
                }
                None => return Ok(()),
            },
            ready = dev.readable() => {
                ready.map_err(|source| DataplaneError::Read { name: config.tun.clone(), source })?;
                // Drain what is queued (up to a batch) before looking at control and timers
                // again: one wake-up per burst instead of per packet.
                let now = now();
                for _ in 0..BATCH {
                    let n = match dev.try_recv(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            // The queue ran empty. Before what this wake-up merged leaves, the
                            // CPU goes once to whatever else wants it (on a small host often
                            // the sender of the burst) and the queue is read again: a flood
                            // keeps merging, a lone packet waits one yield.
                            let again = (merge.len > 0)
                                .then(|| {
                                    std::thread::yield_now();
                                    poll_device(&mut poller, &mut buf, Duration::ZERO)
                                })
                                .flatten();
                            let next = match again {
                                Some(n) => Some(n),
                                None => {
                                    merge.flush(&dev, &mut io).await;
                                    poll_device(&mut poller, &mut buf, config.busy_poll)
                                }
                            };
                            match next {
                                Some(n) => n,
                                None => break,
                            }
                        }
                        Err(source) => return Err(DataplaneError::Read { name: config.tun.clone(), source }),
                    };
                    io.reads += 1;
                    if n < hdr {
                        io.short_reads += 1;
                        continue;
                    }
                    let meta = if hdr == 0 { Meta::default() } else { vnet_meta(&buf[..hdr]) };
                    let out = match router.process(&mut buf[hdr..], n - hdr, meta, now) {
                        Action::Forward { len, to } => {
                            let len = usize::from(len);
                            if let (Some(d), Side::Container) = (&delivery, to) {
                                if d.send(&buf[hdr..hdr + len]) {
                                    io.writes += 1;
                                    continue;
                                }
                            }
                            // A partial checksum is finished here, as the kernel would
                            // finish it: the merge takes only complete ones.
                            if hdr > 0
                                && meta.gso_size == 0
                                && (meta.checksum == L4Checksum::Complete
                                    || netstack::complete_partial(&mut buf[hdr..hdr + len]))
                            {
                                merge.push(&buf[hdr..hdr + len]);
                                continue;
                            }
                            hdr + len
                        }
                        Action::Reply { len, .. } => {
                            // A packet the router built: complete checksums, no segmentation.
                            buf[..hdr].fill(0);
                            hdr + usize::from(len)
                        }
                        Action::Drop(_) => continue,
                    };
                    // What was queued before this packet goes first: order within a flow holds.
                    merge.flush(&dev, &mut io).await;
                    let sent = match dev.try_send(&buf[..out]) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => dev.send(&buf[..out]).await,
                        other => other,
                    };
                    match sent {
                        Ok(_) => io.writes += 1,
                        Err(_) => io.write_errors += 1,
                    }
                }
                merge.flush(&dev, &mut io).await;
            }
            () = &mut expiry => {
                router.poll(now());
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
