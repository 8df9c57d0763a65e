//! The delivery thread (without offload), and reading or receiving with a poll window.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use crate::net::tun;

/// Packets that may wait for the delivery thread at once.
const DELIVERY_BUFFERS: usize = 256;

/// Writes packets bound for containers on a thread of its own (without offload). A TUN write
/// carries the kernel's receive work on the writing thread (copy, checksum check, GRO and, for
/// each merged packet, routing, the veth and the receiving container's TCP); without offload
/// that is most of the data plane's CPU time. With deliveries to containers here and to the tunnel
/// on the router's thread, one stream's two directions use two CPUs. Packets keep their order:
/// every container-bound packet the router forwards goes through the one queue.
pub(super) struct Delivery {
    /// `None` only while dropping: closing it ends the thread.
    queue: Option<SyncSender<(Vec<u8>, usize)>>,
    free: Receiver<Vec<u8>>,
    /// Bytes of each buffer.
    room: usize,
    pub(super) errors: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Delivery {
    pub(super) fn start(
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
    pub(super) fn send(&self, packet: &[u8]) -> bool {
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
pub(super) fn poll_device(
    tun: &mut std::fs::File,
    buf: &mut [u8],
    window: Duration,
) -> Option<usize> {
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
