//! A worker: one router with its queue of the device, on a thread of its own, and the packets it
//! hands to the other workers' routers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netstack::{Fragments, Instant, Owner, Router};
use tokio::sync::{mpsc, oneshot};

use super::handle::Job;
use super::queue::Queue;
use super::tunnel::Port;
use super::{DataplaneConfig, DataplaneError, IoCounters, BATCH, BUF_LEN};
use crate::sync::lock;

/// Packets one worker may have handed to another at once; past that they are dropped (and
/// counted), as on a full device queue.
pub(super) const HANDOFF_QUEUE: usize = 256;

/// One router with its queue of the device. With several, the kernel picks a packet's queue
/// by a hash of its addresses and ports, and later by where the packets of the reverse flow
/// were written; a packet that lands on another router's queue than its connection's (see
/// [`Router::owner`]) is handed over, and the owner's write of the translated packet then
/// steers the flow's answers to its own queue.
pub(super) struct Worker {
    pub(super) index: usize,
    /// What the router's [`Instant`]s count from.
    pub(super) epoch: std::time::Instant,
    pub(super) router: Router,
    pub(super) jobs: mpsc::UnboundedReceiver<Job>,
    pub(super) shutdown: oneshot::Receiver<()>,
    /// Packets other workers read for this one's router (with their virtio-net header).
    pub(super) inbox: mpsc::Receiver<Handoff>,
    /// Every worker's inbox, by index.
    pub(super) peers: Arc<[mpsc::Sender<Handoff>]>,
    /// Buffers for hand-offs, shared by the workers.
    pub(super) pool: Arc<Pool>,
    /// With several routers: which one translated a fragmented datagram's first fragment.
    pub(super) later: Option<Arc<Mutex<Fragments<u16>>>>,
    /// The port to a tunnel in the node's process.
    pub(super) tunnel: Port,
    /// The first worker's: what that tunnel hands in, read like the worker's own queue.
    pub(super) inlet: Option<mpsc::Receiver<Handoff>>,
}

/// A packet read on one worker's queue for another's router: the buffer it was read into, and
/// its length.
pub(super) struct Handoff {
    pub(super) buf: Vec<u8>,
    pub(super) len: usize,
}

/// Spare read buffers: a worker hands a packet over in the buffer it read it into and reads on
/// into a spare from here; the receiving worker gives the buffer back once the packet is
/// written. So a hand-off copies nothing and, once the pool is warm, allocates nothing.
pub(super) struct Pool {
    spare: Mutex<Vec<Vec<u8>>>,
    /// Most buffers kept; more given back are freed.
    most: usize,
}

impl Pool {
    pub(super) fn new(most: usize) -> Pool {
        Pool {
            spare: Mutex::default(),
            most,
        }
    }

    pub(super) fn take(&self) -> Vec<u8> {
        lock(&self.spare)
            .pop()
            .unwrap_or_else(|| vec![0u8; BUF_LEN])
    }

    pub(super) fn give(&self, buf: Vec<u8>) {
        let mut spare = lock(&self.spare);
        if spare.len() < self.most {
            spare.push(buf);
        }
    }
}

impl Worker {
    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The worker whose router decides on `packet` (see [`Owner`]).
    fn owner(&self, packet: &[u8], now: Instant) -> usize {
        let Some(later) = &self.later else {
            return self.index;
        };
        // Should a worker have panicked holding the lock, what the map remembers is still usable
        // (at worst one datagram's owner is missing): `lock` takes it anyway.
        let fragments = || lock(later);
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

    /// Hands the packet in `buf[..n]` to worker `owner`, in `buf` itself; `buf` becomes a spare.
    fn hand_off(&self, owner: usize, buf: &mut Vec<u8>, n: usize, io: &mut IoCounters) {
        let full = std::mem::replace(buf, self.pool.take());
        match self.peers[owner].try_send(Handoff { buf: full, len: n }) {
            Ok(()) => io.handoffs += 1,
            Err(e) => {
                io.handoff_drops += 1;
                self.pool.give(e.into_inner().buf);
            }
        }
    }

    /// Reads what is queued (up to a batch) before control and timers get a look again: one
    /// wake-up per burst instead of per packet.
    async fn drain(
        &mut self,
        queue: &mut Queue,
        buf: &mut Vec<u8>,
        config: &DataplaneConfig,
    ) -> Result<(), DataplaneError> {
        let now = self.now();
        for _ in 0..BATCH {
            let Some(n) = queue.next_read(buf, config).await? else {
                break;
            };
            queue.io.reads += 1;
            if n < queue.hdr {
                queue.io.short_reads += 1;
                continue;
            }
            self.take(queue, buf, n, now).await;
        }
        queue.flush().await;
        Ok(())
    }

    /// Decides on the packet in `buf[..n]` if this worker's router owns it, or hands it to the
    /// one that does.
    async fn take(&mut self, queue: &mut Queue, buf: &mut Vec<u8>, n: usize, now: Instant) {
        let owner = self.owner(&buf[queue.hdr..n], now);
        if owner == self.index {
            queue.forward(&mut self.router, buf, n, now).await;
        } else {
            self.hand_off(owner, buf, n, &mut queue.io);
        }
    }

    /// Takes `first` and what else the tunnel has handed in (up to a batch), as read from the
    /// worker's queue; the buffers go back to the pool.
    async fn take_tunnelled(&mut self, queue: &mut Queue, first: Handoff) {
        let now = self.now();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(Handoff { mut buf, len }) = next.take() {
            queue.io.tunnel_in += 1;
            self.take(queue, &mut buf, len, now).await;
            self.pool.give(buf);
            taken += 1;
            if taken < BATCH {
                next = self.inlet.as_mut().and_then(|i| i.try_recv().ok());
            }
        }
        queue.flush().await;
    }

    /// When the router's next expiry poll is due: when it has work for one (never, while it
    /// tracks nothing), at most once a second (a lookup already treats an idle connection as
    /// gone, so a later poll only reclaims memory).
    fn poll_due(&self, last_poll: tokio::time::Instant) -> tokio::time::Instant {
        let epoch = tokio::time::Instant::from_std(self.epoch);
        self.router.poll_at().map_or(epoch + FAR, |t| {
            (epoch + Duration::from_millis(t.as_millis())).max(last_poll + POLL_EVERY)
        })
    }
}

/// The worker's life: opens its queue, then serves control, hand-offs from other workers, its
/// queue and the router's expiry until it is told to stop.
pub(super) async fn run(
    config: DataplaneConfig,
    mut w: Worker,
    ready: std::sync::mpsc::Sender<Result<(), DataplaneError>>,
) -> Result<(), DataplaneError> {
    let mut queue = match Queue::open(&config, w.index == 0, w.tunnel.clone()).await {
        Ok(queue) => {
            let _ = ready.send(Ok(()));
            queue
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let mut buf = vec![0u8; BUF_LEN];
    let expiry = tokio::time::sleep_until(w.poll_due(tokio::time::Instant::now()));
    tokio::pin!(expiry);
    let mut last_poll = tokio::time::Instant::now();
    loop {
        let due = w.poll_due(last_poll);
        if expiry.deadline() != due {
            expiry.as_mut().reset(due);
        }
        tokio::select! {
            // Control first: a mapping removed is gone before the next packet is looked at.
            biased;
            _ = &mut w.shutdown => return Ok(()),
            job = w.jobs.recv() => match job {
                Some(job) => job(&mut w.router, &queue.counters(w.index == 0)),
                None => return Ok(()),
            },
            Some(Handoff { buf: mut handed, len }) = w.inbox.recv() => {
                let now = w.now();
                queue.forward(&mut w.router, &mut handed, len, now).await;
                queue.flush().await;
                w.pool.give(handed);
            }
            Some(first) = next_in(&mut w.inlet) => w.take_tunnelled(&mut queue, first).await,
            ready = queue.dev.readable() => {
                ready.map_err(|source| DataplaneError::Read { name: config.tun.clone(), source })?;
                w.drain(&mut queue, &mut buf, &config).await?;
            }
            () = &mut expiry => {
                w.router.poll(w.now());
                last_poll = tokio::time::Instant::now();
            }
        }
    }
}

/// The next packet the tunnel hands in; never, for a worker without the inlet.
async fn next_in(inlet: &mut Option<mpsc::Receiver<Handoff>>) -> Option<Handoff> {
    match inlet {
        Some(inlet) => inlet.recv().await,
        None => std::future::pending().await,
    }
}

/// The shortest time between two expiry polls.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// A deadline that never comes (a century).
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
