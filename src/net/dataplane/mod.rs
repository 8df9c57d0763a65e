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
//!
//! One concern a file: [`handle`] (control from the node), [`counters`] (what is counted),
//! [`worker`] (a router with its queue: the event loop and hand-offs between queues),
//! [`queue`] (a queue of the device: set-up, reading, deciding, writing), [`merge`] (GRO of
//! what one wake-up forwards), [`delivery`] (the no-offload delivery thread) and [`tunnel`]
//! (the port to a tunnel in the node's process, which takes the device's place toward VPN
//! peers).

mod counters;
mod delivery;
mod handle;
mod merge;
mod queue;
mod tunnel;
mod worker;

pub use counters::{IoCounters, Snapshot};
pub use handle::DataplaneHandle;
pub use tunnel::{standalone, Attached, Outgoing, RouterSide, SegmentError, Segments, TunnelEnds};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netstack::{Config, Fragments, Router};
use tokio::sync::{mpsc, oneshot};

use crate::net::links::{IfName, LinkError};
use crate::net::netns::{Netns, NetnsError};
use worker::{Handoff, Pool, Worker, HANDOFF_QUEUE};

/// Length of the virtio-net header in front of each packet when offload is on.
const VNET_HDR_LEN: usize = 10;
/// Packets handled per wake-up before control and timers get a look in.
const BATCH: usize = 64;
/// Largest IPv4 packet (a GSO super-packet can be this big) plus the header.
const BUF_LEN: usize = VNET_HDR_LEN + 65_535;

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
        let peers: Arc<[mpsc::Sender<Handoff>]> = inboxes.into();
        let pool = Arc::new(Pool::new(HANDOFF_QUEUE));
        let hdr = if config.offload { VNET_HDR_LEN } else { 0 };
        let (port, inlet, ends) = tunnel::port(Arc::clone(&pool), hdr);
        let mut inlet = Some(inlet);
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
                pool: Arc::clone(&pool),
                later: later.clone(),
                tunnel: port.clone(),
                inlet: inlet.take(),
            };
            let config = config.clone();
            // Queues after the first attach to the device the first one made.
            let thread = ns.spawn(move || worker::run(config, worker, ready_tx))?;
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
            handle: DataplaneHandle::new(jobs, ends),
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
