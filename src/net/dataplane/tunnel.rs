//! The data plane's port to a tunnel in the node's own process (WireGuard): the tunnel hands
//! decrypted packets to the routers without a device, and while a tunnel is attached what the
//! routers send toward VPN peers goes to it instead of back out of the device. No tunnel link
//! exists in the hub namespace then, so the kernel's only route for the VPN subnet is the
//! unreachable one: whatever reaches the device for a peer while no tunnel is attached is
//! dropped there, never sent out of the WAN link in clear.
//!
//! Packets cross in the workers' pooled buffers (a forwarded packet leaves in the buffer it was
//! read and translated in; a decrypted one is copied in once), so nothing is allocated per
//! packet once the pool is warm. A GSO super-packet from a container crosses whole and is cut
//! to the tunnel's MTU on the tunnel's side, on its thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex, OwnedMutexGuard};
use tun_rs::VirtioNetHdr;

use super::queue::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE};
use super::worker::{Handoff, Pool, HANDOFF_QUEUE};
use super::IoCounters;

/// The routers' side of the port: one per data plane, cloned into every worker.
#[derive(Clone)]
pub(super) struct Port {
    to_tunnel: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

/// What both sides of the port hold.
struct Shared {
    attached: AtomicBool,
    pool: Arc<Pool>,
    /// The virtio-net header in front of each packet (0 without offload).
    hdr: usize,
    /// Packets lost on the tunnel's side of the port: decrypted ones the routers' inbox had no
    /// room for, and ones for a peer the tunnel could not take.
    lost: AtomicU64,
}

/// The tunnel's side of the port. Cheap to clone; one tunnel at a time attaches.
#[derive(Clone)]
pub struct TunnelEnds {
    to_router: mpsc::Sender<Handoff>,
    from_router: Arc<Mutex<mpsc::Receiver<Outgoing>>>,
    shared: Arc<Shared>,
}

/// The port's types show whether a tunnel is attached, not their buffers.
macro_rules! debug_as_port {
    ($($t:ty => $($field:ident).+),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("attached", &self.$($field).+.attached.load(Ordering::Relaxed))
                    .finish_non_exhaustive()
            }
        }
    )*};
}
debug_as_port!(TunnelEnds => shared, Attached => shared, Outgoing => shared, RouterSide => port.shared);

/// A new port: the routers' side, the receiver of what the tunnel hands in (worker 0's), and
/// the tunnel's side.
pub(super) fn port(pool: Arc<Pool>, hdr: usize) -> (Port, mpsc::Receiver<Handoff>, TunnelEnds) {
    let (to_tunnel, from_router) = mpsc::channel(HANDOFF_QUEUE);
    let (to_router, inlet) = mpsc::channel(HANDOFF_QUEUE);
    let shared = Arc::new(Shared {
        attached: AtomicBool::new(false),
        pool,
        hdr,
        lost: AtomicU64::new(0),
    });
    let ends = TunnelEnds {
        to_router,
        from_router: Arc::new(Mutex::new(from_router)),
        shared: Arc::clone(&shared),
    };
    (Port { to_tunnel, shared }, inlet, ends)
}

impl Port {
    /// Whether a tunnel takes what goes to VPN peers.
    pub(super) fn attached(&self) -> bool {
        self.shared.attached.load(Ordering::Relaxed)
    }

    /// Hands the packet in `buf[..n]` (behind its virtio-net header) to the tunnel, in `buf`
    /// itself; `buf` becomes a spare.
    pub(super) fn send(&self, buf: &mut Vec<u8>, n: usize, io: &mut IoCounters) {
        let out = Outgoing {
            buf: std::mem::replace(buf, self.shared.pool.take()),
            len: n,
            shared: Arc::clone(&self.shared),
        };
        match self.to_tunnel.try_send(out) {
            Ok(()) => io.tunnel_out += 1,
            Err(_) => io.tunnel_drops += 1,
        }
    }

    /// What the tunnel's side of the port lost.
    pub(super) fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }
}

impl TunnelEnds {
    /// Whether a tunnel is attached.
    pub fn attached(&self) -> bool {
        self.shared.attached.load(Ordering::Relaxed)
    }

    /// Takes what the routers send to VPN peers until the returned [`Attached`] is dropped;
    /// `None` while another tunnel holds it.
    pub fn attach(&self) -> Option<Attached> {
        let from_router = Arc::clone(&self.from_router).try_lock_owned().ok()?;
        self.shared.attached.store(true, Ordering::Relaxed);
        Some(Attached {
            from_router,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Hands a decrypted packet to the routers (a copy in a pooled buffer), waiting while
    /// their inbox is full: the tunnel then stops taking datagrams, so a burst waits in its
    /// own queues and its socket's buffer instead of being lost here (TCP takes every loss as
    /// congestion and halves its rate). The routers never wait for the tunnel, so the wait
    /// ends. Counted as lost when the packet does not fit a buffer or the data plane has
    /// stopped.
    pub async fn deliver(&self, packet: &[u8]) {
        let hdr = self.shared.hdr;
        let mut buf = self.shared.pool.take();
        let len = hdr + packet.len();
        if len > buf.len() {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            self.shared.pool.give(buf);
            return;
        }
        buf[..hdr].fill(0);
        buf[hdr..len].copy_from_slice(packet);
        if let Err(e) = self.to_router.send(Handoff { buf, len }).await {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            self.shared.pool.give(e.0.buf);
        }
    }
}

/// A tunnel attached to the port: it receives what the routers send to VPN peers.
pub struct Attached {
    from_router: OwnedMutexGuard<mpsc::Receiver<Outgoing>>,
    shared: Arc<Shared>,
}

impl Attached {
    /// The next packet for a VPN peer; `None` once the data plane has stopped.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        self.from_router.recv().await
    }

    /// Counts a packet for a peer that the tunnel could not take.
    pub fn lost(&self) {
        self.shared.lost.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.shared.attached.store(false, Ordering::Relaxed);
    }
}

/// A packet a router sent toward a VPN peer, in the buffer it was translated in (given back to
/// the pool when dropped): one IPv4 packet, or with offload a GSO super-packet of a container's.
pub struct Outgoing {
    buf: Vec<u8>,
    len: usize,
    shared: Arc<Shared>,
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.shared.pool.give(std::mem::take(&mut self.buf));
    }
}

/// The most room one super-packet's segments may take.
const MOST_ROOM: usize = 4 << 20;

/// Room to cut super-packets in, kept by whoever reads [`Outgoing`]s.
#[derive(Debug, Default)]
pub struct Segments {
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
}

/// Why an [`Outgoing`] was not passed on.
#[derive(Debug, thiserror::Error)]
#[error("a packet for the tunnel could not be cut to its segments: {0}")]
pub struct SegmentError(std::io::Error);

impl Outgoing {
    /// Calls `each` with every IPv4 packet of it: a GSO super-packet cut into its segments (each
    /// with its own lengths, IP id, sequence number and checksums), a partial checksum completed
    /// as the kernel would before sending.
    pub fn packets(
        &mut self,
        room: &mut Segments,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), SegmentError> {
        let hdr = self.shared.hdr;
        if hdr == 0 {
            each(&self.buf[..self.len]);
            return Ok(());
        }
        let meta = VirtioNetHdr::decode(&self.buf[..hdr]).map_err(SegmentError)?;
        let packet = &mut self.buf[hdr..self.len];
        if meta.gso_type & !VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_NONE {
            // Not a super-packet: at most its checksum to finish.
            if meta.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 && !netstack::complete_partial(packet)
            {
                return Err(SegmentError(std::io::ErrorKind::InvalidData.into()));
            }
            each(packet);
            return Ok(());
        }
        let size = usize::from(meta.hdr_len) + usize::from(meta.gso_size);
        let count = packet.len().div_ceil(usize::from(meta.gso_size).max(1));
        // The kernel's headers cut a 64 KB packet into at most a few hundred segments of an
        // MTU each; anything past this room is refused before any of it is taken.
        if meta.gso_size == 0 || count.saturating_mul(size) > MOST_ROOM {
            return Err(SegmentError(std::io::ErrorKind::InvalidInput.into()));
        }
        if room.bufs.len() < count {
            room.bufs.resize_with(count, Vec::new);
            room.sizes.resize(count, 0);
        }
        for b in &mut room.bufs[..count] {
            b.resize(size.max(b.len()), 0);
        }
        let n = tun_rs::gso_split(
            packet,
            meta,
            &mut room.bufs[..count],
            &mut room.sizes[..count],
            0,
            false,
        )
        .map_err(SegmentError)?;
        for (b, &len) in room.bufs.iter().zip(&room.sizes).take(n) {
            each(&b[..len]);
        }
        Ok(())
    }
}

/// The routers' side of a port with no data plane behind it, for a driver of its own (a test
/// stands in for the routers with it). Packets cross without a virtio-net header.
pub struct RouterSide {
    port: Port,
    inlet: mpsc::Receiver<Handoff>,
}

/// A port with no data plane behind it: its routers' side and its tunnel's.
pub fn standalone() -> (RouterSide, TunnelEnds) {
    let (port, inlet, ends) = self::port(Arc::new(Pool::new(HANDOFF_QUEUE)), 0);
    (RouterSide { port, inlet }, ends)
}

impl RouterSide {
    /// Sends `packet` to the attached tunnel as a router would; false when none is attached
    /// or its queue is full.
    pub fn send(&self, packet: &[u8]) -> bool {
        if !self.port.attached() {
            return false;
        }
        let mut buf = self.port.shared.pool.take();
        let Some(room) = buf.get_mut(..packet.len()) else {
            return false;
        };
        room.copy_from_slice(packet);
        let mut io = IoCounters::default();
        self.port.send(&mut buf, packet.len(), &mut io);
        self.port.shared.pool.give(buf);
        io.tunnel_out == 1
    }

    /// The next packet the tunnel handed in; `None` once every tunnel side is gone.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let Handoff { mut buf, len } = self.inlet.recv().await?;
        buf.truncate(len);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dataplane::VNET_HDR_LEN;

    const TCPV4: u8 = 1;

    /// A packet for a peer as a router hands it to the port, behind `header`.
    fn outgoing(header: &[u8], packet: &[u8]) -> Outgoing {
        let (port, _inlet, _ends) = super::port(Arc::new(Pool::new(4)), VNET_HDR_LEN);
        let mut buf = port.shared.pool.take();
        buf[..VNET_HDR_LEN].copy_from_slice(header);
        buf[VNET_HDR_LEN..VNET_HDR_LEN + packet.len()].copy_from_slice(packet);
        Outgoing {
            buf,
            len: VNET_HDR_LEN + packet.len(),
            shared: port.shared,
        }
    }

    /// A container's TCP super-packet as the kernel hands it over with offload: the checksum
    /// field holds the pseudo-header sum, the header says how to cut it.
    fn super_packet(payload: &[u8], gso_size: u16) -> (Vec<u8>, Vec<u8>) {
        let builder = etherparse::PacketBuilder::ipv4([10, 76, 0, 2], [10, 76, 0, 3], 64)
            .tcp(49152, 7000, 1000, 65535)
            .ack(5)
            .psh();
        let mut packet = Vec::new();
        builder.write(&mut packet, payload).expect("a packet");
        let tcp_len = u16::try_from(packet.len() - 20).expect("fits");
        let partial = netstack::checksum::fold(netstack::checksum::pseudo_header(
            [10, 76, 0, 2].into(),
            [10, 76, 0, 3].into(),
            6,
            tcp_len,
        ));
        packet[36..38].copy_from_slice(&partial.to_be_bytes());
        let header = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: TCPV4,
            hdr_len: 40,
            gso_size,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut h = vec![0u8; VNET_HDR_LEN];
        header.encode(&mut h).expect("a header");
        (h, packet)
    }

    proptest::proptest! {
        /// A super-packet leaves as segments of its segment size, each a packet a peer takes:
        /// lengths, IP and TCP checksums right, sequence numbers in order, PSH on the last
        /// only, the payload whole and unchanged.
        #[test]
        fn super_packets_are_cut_into_segments_that_check(
            len in 1usize..20_000,
            gso_size in 536u16..1400,
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let (header, packet) = super_packet(&payload, gso_size);
            let mut out = outgoing(&header, &packet);
            let mut segments = Vec::new();
            out.packets(&mut Segments::default(), |p| segments.push(p.to_vec()))
                .expect("cut");
            let mut joined = Vec::new();
            let last = segments.len() - 1;
            for (i, s) in segments.iter().enumerate() {
                let (ip, rest) = etherparse::Ipv4Header::from_slice(s).expect("IPv4");
                proptest::prop_assert_eq!(ip.header_checksum, ip.calc_header_checksum());
                proptest::prop_assert_eq!(usize::from(ip.total_len), s.len());
                let (tcp, data) = etherparse::TcpHeader::from_slice(rest).expect("TCP");
                let want = tcp.calc_checksum_ipv4(&ip, data).expect("checksum");
                proptest::prop_assert_eq!(tcp.checksum, want);
                proptest::prop_assert!(data.len() <= usize::from(gso_size));
                let offset = u32::try_from(joined.len()).expect("fits");
                proptest::prop_assert_eq!(tcp.sequence_number, 1000 + offset);
                proptest::prop_assert_eq!(tcp.psh, i == last);
                joined.extend_from_slice(data);
            }
            proptest::prop_assert_eq!(joined, payload);
        }

        /// Whatever the header and the bytes behind it say, a packet is passed on, cut or
        /// refused, never a panic.
        #[test]
        fn any_header_and_packet_is_taken_or_refused(
            header in proptest::collection::vec(proptest::prelude::any::<u8>(), VNET_HDR_LEN),
            packet in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
        ) {
            let mut out = outgoing(&header, &packet);
            let _ = out.packets(&mut Segments::default(), |_| {});
        }
    }

    /// A decrypted packet waits while the routers' inbox is full and goes in once there is
    /// room: nothing is lost, nothing reordered. Once the routers are gone it is counted lost.
    #[tokio::test]
    async fn a_full_inbox_holds_the_tunnel_back_and_loses_nothing() {
        let (mut routers, ends) = standalone();
        let packets: Vec<Vec<u8>> = (0..=HANDOFF_QUEUE)
            .map(|i| i.to_le_bytes().to_vec())
            .collect();
        for p in &packets[..HANDOFF_QUEUE] {
            ends.deliver(p).await;
        }
        let waiting = ends.clone();
        let last = packets[HANDOFF_QUEUE].clone();
        let mut late = tokio::spawn(async move { waiting.deliver(&last).await });
        let held = tokio::time::timeout(std::time::Duration::from_millis(100), &mut late).await;
        assert!(held.is_err(), "a packet went past a full inbox");
        let mut got = vec![routers.recv().await.expect("the first packet")];
        late.await.expect("the waiting packet went in");
        for _ in 0..HANDOFF_QUEUE {
            got.push(routers.recv().await.expect("a packet"));
        }
        assert_eq!(got, packets);
        assert_eq!(routers.port.lost(), 0);

        drop(routers);
        ends.deliver(b"after").await;
        assert_eq!(ends.shared.lost.load(Ordering::Relaxed), 1);
    }

    /// A lone packet with a partial checksum leaves with a complete one.
    #[test]
    fn a_partial_checksum_alone_is_completed() {
        let (mut header, packet) = super_packet(b"hello", 1380);
        header[1] = VIRTIO_NET_HDR_GSO_NONE;
        let mut out = outgoing(&header, &packet);
        let mut seen = Vec::new();
        out.packets(&mut Segments::default(), |p| seen.push(p.to_vec()))
            .expect("taken");
        let (ip, rest) = etherparse::Ipv4Header::from_slice(&seen[0]).expect("IPv4");
        let (tcp, data) = etherparse::TcpHeader::from_slice(rest).expect("TCP");
        assert_eq!((seen.len(), data), (1, &b"hello"[..]));
        assert_eq!(
            tcp.checksum,
            tcp.calc_checksum_ipv4(&ip, data).expect("sum")
        );
    }
}
