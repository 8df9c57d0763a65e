//! A worker's queue of the TUN device: set up, read (with a poll window), each packet decided by
//! the router and written, merged or handed to the delivery thread.

use std::sync::atomic::Ordering;
use std::time::Duration;

use netstack::{Action, L4Checksum, Meta, Router, Side};

use super::delivery::{poll_device, Delivery};
use super::merge::Merge;
use super::tunnel::Port;
use super::{DataplaneConfig, DataplaneError, IoCounters, VNET_HDR_LEN};
use crate::net::links::{set_device_attr, set_sysctl, LinkError, Netlink};
use crate::net::tun;
use netstack::Instant;

/// How long, in nanoseconds, the kernel may hold packets written to the device without offload
/// to merge them (GRO). A merged packet goes on at once on a TCP push, at 64 KB, or with the
/// first write in a later clock tick; the timeout bounds only the wait of a burst that ended
/// without a push and was followed by silence. It is longer than a tick (4 ms at Debian's
/// 250 Hz): a shorter one is re-armed on every write (docs/performance.md has the measurements).
const GRO_FLUSH_TIMEOUT_NS: &str = "5000000";
pub(super) const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
pub(super) const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// The flag beside a GSO type that says the TCP stream has ECN set.
pub(super) const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// A worker's queue of the device: how it reads there, and how it writes what the router makes
/// of a packet.
pub(super) struct Queue {
    pub(super) dev: tun_rs::AsyncDevice,
    /// The same queue, for reads beside tokio's.
    poller: std::fs::File,
    delivery: Option<Delivery>,
    merge: Merge,
    /// The port to a tunnel in the node's process.
    tunnel: Port,
    pub(super) io: IoCounters,
    /// Length of the virtio-net header: 0 without offload.
    pub(super) hdr: usize,
}

impl Queue {
    /// Decides on the packet in `buf[..n]` (behind its virtio-net header with offload) and
    /// writes or queues what the router makes of it. A packet for a VPN peer goes to the tunnel
    /// in `buf` itself while one is attached to the port (`buf` is then a spare).
    pub(super) async fn forward(
        &mut self,
        router: &mut Router,
        buf: &mut Vec<u8>,
        n: usize,
        now: Instant,
    ) {
        let hdr = self.hdr;
        let meta = if hdr == 0 {
            Meta::default()
        } else {
            vnet_meta(&buf[..hdr])
        };
        let out = match router.process(&mut buf[hdr..], n - hdr, meta, now) {
            Action::Forward { len, to } => {
                let len = usize::from(len);
                if to == Side::Vpn && self.tunnel.attached() {
                    self.tunnel.send(buf, hdr + len, &mut self.io);
                    return;
                }
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
                let len = hdr + usize::from(len);
                if self.tunnel.attached() && for_vpn(router, &buf[hdr..len]) {
                    self.tunnel.send(buf, len, &mut self.io);
                    return;
                }
                len
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

    pub(super) async fn flush(&mut self) {
        self.merge.flush(&self.dev, &mut self.io).await;
    }

    /// The counters, with the delivery thread's write errors and (the first queue's) the
    /// tunnel's lost packets.
    pub(super) fn counters(&self, first: bool) -> IoCounters {
        let mut io = self.io.clone();
        if first {
            io.tunnel_drops += self.tunnel.lost();
        }
        if let Some(d) = &self.delivery {
            io.write_errors += d.errors.load(Ordering::Relaxed);
        }
        io
    }

    /// The next packet of this wake-up, read into `buf`; `None` when the queue ran empty. Before
    /// what this wake-up merged leaves, the CPU goes once to whatever else wants it (on a small
    /// host often the sender of the burst) and the queue is read again: a flood keeps merging, a
    /// lone packet waits one yield. Without a poll window the thread then goes back to sleep
    /// rather than read once more: what came during the flush wakes it at once, and what comes
    /// until then is read as one burst and merged (see docs/performance.md).
    pub(super) async fn next_read(
        &mut self,
        buf: &mut [u8],
        config: &DataplaneConfig,
    ) -> Result<Option<usize>, DataplaneError> {
        match self.dev.try_recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if self.merge.len > 0 {
                    std::thread::yield_now();
                    if let Some(n) = poll_device(&mut self.poller, buf, Duration::ZERO) {
                        return Ok(Some(n));
                    }
                }
                self.flush().await;
                if config.busy_poll.is_zero() {
                    return Ok(None);
                }
                Ok(poll_device(&mut self.poller, buf, config.busy_poll))
            }
            Err(source) => Err(DataplaneError::Read {
                name: config.tun.clone(),
                source,
            }),
        }
    }

    /// Opens the worker's queue (the first worker creates and configures the device) and its
    /// helpers.
    pub(super) async fn open(
        config: &DataplaneConfig,
        first: bool,
        tunnel: Port,
    ) -> Result<Queue, DataplaneError> {
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
        Ok(Queue {
            dev,
            poller,
            delivery,
            merge: Merge::new(),
            tunnel,
            io: IoCounters::default(),
            hdr: if config.offload { VNET_HDR_LEN } else { 0 },
        })
    }
}

/// Creates the device with its first queue and configures it.
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

/// Whether a packet the router built is for a VPN peer (by its destination).
fn for_vpn(router: &Router, packet: &[u8]) -> bool {
    let dest = packet
        .get(16..20)
        .and_then(|d| <[u8; 4]>::try_from(d).ok())
        .map(std::net::Ipv4Addr::from);
    router
        .vpn()
        .zip(dest)
        .is_some_and(|(vpn, dest)| vpn.contains(dest))
}

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
        gso_size: if gso_type & !VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_NONE {
            0
        } else {
            gso_size
        },
    }
}
