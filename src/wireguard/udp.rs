//! The WireGuard devices' UDP sockets, sending in bursts: gotatun's own sockets (their receive
//! already takes the kernel's GRO bursts, into a pool of their own here), but what a device
//! sends in one batch leaves as UDP GSO sends. A stream's encrypted packets to one peer are all
//! as long as the MTU lets them be, so a run of them is one `sendmsg` with a segment size
//! (`UDP_SEGMENT`) instead of one per packet: the kernel's UDP, routing, netfilter and veth work
//! is then done once per run of up to [`MOST_SEGMENTS`] packets, and a receiver with GRO (a
//! node's tunnel, the hub) takes the run whole as well.
//!
//! A socket whose route cannot take GSO (the kernel answers `EIO` where the device has no
//! checksum offload) sends one packet at a time from then on. A packet that cannot be sent does
//! not keep the rest of its batch from going out.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gotatun::packet::{Packet, PacketBufPool};
use gotatun::udp::socket::{UdpSocket, UdpSocketFactory};
use gotatun::udp::{UdpRecv, UdpSend, UdpTransportFactory, UdpTransportFactoryParams};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
use tokio::io::Interest;

/// The most packets of one GSO send (the kernel's bound is 64 or more, by version).
const MOST_SEGMENTS: usize = 64;
/// The most bytes of one GSO send: a UDP datagram's payload under IPv6, the smaller.
const MOST_BYTES: usize = 65_535 - 8 - 40;
/// Packets a device hands over in one batch at most.
const BATCH: usize = 256;

/// gotatun's socket factory whose sockets send through [`Gso`].
#[derive(Default)]
pub struct Factory(UdpSocketFactory);

impl std::fmt::Debug for Factory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factory").finish_non_exhaustive()
    }
}

impl UdpTransportFactory for Factory {
    type SendV4 = Gso;
    type SendV6 = Gso;
    type RecvV4 = Recv;
    type RecvV6 = Recv;

    async fn bind(
        &mut self,
        params: &UdpTransportFactoryParams,
    ) -> io::Result<((Gso, Recv), (Gso, Recv))> {
        let ((send4, recv4), (send6, recv6)) = self.0.bind(params).await?;
        for socket in [&recv4, &recv6] {
            // No IPv6 socket where the host has no IPv6: nothing to size.
            if let Ok(socket) = socket.socket() {
                size_buffers(socket);
            }
        }
        Ok((
            (Gso::new(send4), Recv::new(recv4)),
            (Gso::new(send6), Recv::new(recv6)),
        ))
    }
}

/// Each socket buffer's size, as wireguard-go sets it: the kernel's default (about 200 KB)
/// holds about a hundred packets, a few hundred microseconds of a stream, so a moment in which
/// the device's thread is not scheduled loses datagrams (and TCP halves its rate for each).
const BUFFER: usize = 7 << 20;

/// Sets both buffers of `socket` to [`BUFFER`]: beyond the host's `rmem_max`/`wmem_max` where the
/// process may (`CAP_NET_ADMIN`, as a node has), else as far as those let it (a hub run without
/// privileges).
fn size_buffers(socket: &tokio::net::UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let forced = setsockopt(socket, sockopt::RcvBufForce, &BUFFER)
        .and_then(|()| setsockopt(socket, sockopt::SndBufForce, &BUFFER));
    if forced.is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &BUFFER);
        let _ = setsockopt(socket, sockopt::SndBuf, &BUFFER);
    }
}

/// gotatun's receiving socket, its datagrams copied into a pool of its own (see
/// [`super::warm_pool`]).
pub struct Recv {
    socket: UdpSocket,
    pool: PacketBufPool,
}

impl std::fmt::Debug for Recv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recv").finish_non_exhaustive()
    }
}

impl Recv {
    fn new(socket: UdpSocket) -> Recv {
        Recv {
            socket,
            pool: super::warm_pool(),
        }
    }
}

impl UdpRecv for Recv {
    type RecvManyBuf = <UdpSocket as UdpRecv>::RecvManyBuf;

    async fn recv_from(&mut self, _pool: &mut PacketBufPool) -> io::Result<(Packet, SocketAddr)> {
        self.socket.recv_from(&mut self.pool).await
    }

    async fn recv_many_from(
        &mut self,
        buf: &mut Self::RecvManyBuf,
        _pool: &mut PacketBufPool,
        packets: &mut Vec<(Packet, SocketAddr)>,
    ) -> io::Result<()> {
        self.socket
            .recv_many_from(buf, &mut self.pool, packets)
            .await
    }

    fn enable_udp_gro(&self) -> io::Result<()> {
        self.socket.enable_udp_gro()
    }
}

/// A socket that sends a batch as runs of equal-length packets to one peer, each one GSO send.
#[derive(Clone)]
pub struct Gso {
    socket: UdpSocket,
    /// Set once the kernel refused a GSO send on this socket's route.
    refused: Arc<AtomicBool>,
}

impl std::fmt::Debug for Gso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gso")
            .field("refused", &self.refused.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Gso {
    fn new(socket: UdpSocket) -> Gso {
        Gso {
            socket,
            refused: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sends `run` (one of [`runs`]: packets to one peer, all but the last of the first one's
    /// length, at most [`MOST_SEGMENTS`]) as one datagram the kernel cuts into them.
    async fn send_run(&self, run: &[(Packet, SocketAddr)]) -> io::Result<()> {
        let socket = self.socket.socket()?;
        let target = SockaddrStorage::from(run[0].1);
        let segment = u16::try_from(run[0].0.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut slices = [IoSlice::new(&[]); MOST_SEGMENTS];
        for (slice, (p, _)) in slices.iter_mut().zip(run) {
            *slice = IoSlice::new(p);
        }
        // Longer than one send takes: refused, so it goes packet by packet.
        let slices = slices.get(..run.len()).ok_or(io::ErrorKind::InvalidInput)?;
        let segments = [ControlMessage::UdpGsoSegments(&segment)];
        socket
            .async_io(Interest::WRITABLE, || {
                sendmsg(
                    socket.as_raw_fd(),
                    slices,
                    &segments,
                    MsgFlags::MSG_DONTWAIT,
                    Some(&target),
                )
                .map_err(io::Error::from)
            })
            .await
            .map(drop)
    }

    /// Sends `run` as one GSO send, or packet by packet where the kernel refuses that: for
    /// good on this socket when its route cannot take GSO, for this run alone otherwise (a
    /// segment longer than the route's MTU, which a plain send would fragment). The first
    /// error of a packet sent on its own is answered after the rest are sent.
    async fn send_burst(&self, run: &[(Packet, SocketAddr)]) -> io::Result<()> {
        if run.len() > 1 && !self.refused.load(Ordering::Relaxed) {
            match self.send_run(run).await {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    self.refused.store(true, Ordering::Relaxed);
                    tracing::info!("the tunnel's route takes no UDP GSO: sending packet by packet");
                }
                Err(_) => {}
            }
        }
        let socket = self.socket.socket()?;
        let mut first = Ok(());
        for (packet, target) in run {
            if let Err(e) = socket.send_to(packet, *target).await {
                first = first.and(Err(e));
            }
        }
        first
    }
}

/// The runs `packets` falls into, in order: consecutive packets to one peer, each as long as
/// the run's first but the last, which may be shorter, within one GSO send's bounds.
fn runs(packets: &[(Packet, SocketAddr)]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        let (first, target) = packets.get(start).map(|(p, to)| (p.len(), *to))?;
        let (mut end, mut bytes) = (start + 1, first);
        while let Some((p, to)) = packets.get(end) {
            let fits = *to == target
                && p.len() <= first
                && packets[end - 1].0.len() == first
                && end - start < MOST_SEGMENTS
                && bytes + p.len() <= MOST_BYTES;
            if !fits {
                break;
            }
            bytes += p.len();
            end += 1;
        }
        let run = start..end;
        start = end;
        Some(run)
    })
}

impl UdpSend for Gso {
    type SendManyBuf = ();

    async fn send_to(&self, packet: Packet, target: SocketAddr) -> io::Result<()> {
        self.socket.send_to(packet, target).await
    }

    fn max_number_of_packets_to_send(&self) -> usize {
        BATCH
    }

    async fn send_many_to(
        &self,
        (): &mut (),
        packets: &mut Vec<(Packet, SocketAddr)>,
    ) -> io::Result<()> {
        let mut first = Ok(());
        for run in runs(packets) {
            if let Err(e) = self.send_burst(&packets[run]).await {
                first = first.and(Err(e));
            }
        }
        packets.clear();
        first
    }

    fn local_addr(&self) -> io::Result<Option<SocketAddr>> {
        UdpSend::local_addr(&self.socket)
    }

    fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        self.socket.set_fwmark(mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gotatun::udp::socket::SockOpt;

    /// A batch of `(length, to)` packets, packet `i` filled with byte `i` (mod 256).
    fn numbered(lens: &[(usize, SocketAddr)]) -> Vec<(Packet, SocketAddr)> {
        let pool: PacketBufPool = PacketBufPool::new(lens.len());
        lens.iter()
            .enumerate()
            .map(|(i, &(len, to))| {
                let mut p = pool.get();
                p.truncate(len);
                p.fill(i.to_le_bytes()[0]);
                (p, to)
            })
            .collect()
    }

    /// A loopback socket's sender and two receivers (without GRO: each datagram on its own).
    fn sockets() -> (Gso, [std::net::UdpSocket; 2]) {
        let sender = UdpSocket::bind(([127, 0, 0, 1], 0).into(), SockOpt::default())
            .expect("a sending socket");
        let receivers = [(); 2].map(|()| {
            let r = std::net::UdpSocket::bind(("127.0.0.1", 0)).expect("a receiver");
            r.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .expect("timeout");
            r
        });
        (Gso::new(sender), receivers)
    }

    /// What `receiver` got: each datagram's length and first byte.
    fn got(receiver: &std::net::UdpSocket, count: usize) -> Vec<(usize, u8)> {
        let mut buf = [0u8; 2048];
        (0..count)
            .map(|_| {
                let n = receiver.recv(&mut buf).expect("a datagram");
                assert!(buf[..n].iter().all(|&b| b == buf[0]), "a datagram mixed");
                (n, buf[0])
            })
            .collect()
    }

    /// Sends a batch of runs to two receivers; each gets its own packets, whole and in order.
    async fn a_batch_arrives_packet_by_packet(gso: &Gso, to: &[std::net::UdpSocket; 2]) {
        let [a, b] = [0, 1].map(|i| to[i].local_addr().expect("bound"));
        let mut batch = numbered(&[
            (1000, a),
            (1000, a),
            (1000, a),
            (400, a),
            (1000, b),
            (1000, b),
            (1000, a),
            (32, b),
        ]);
        gso.send_many_to(&mut (), &mut batch).await.expect("sent");
        assert!(batch.is_empty());
        let want_a = vec![(1000, 0), (1000, 1), (1000, 2), (400, 3), (1000, 6)];
        assert_eq!(got(&to[0], want_a.len()), want_a);
        assert_eq!(got(&to[1], 3), vec![(1000, 4), (1000, 5), (32, 7)]);
    }

    /// The factory's sockets hold a burst of some thousands of packets: 7 MiB where the process
    /// may force it, else as much as the host's maximum lets (the kernel reports twice what was
    /// set, its own overhead included).
    #[tokio::test]
    async fn the_devices_sockets_hold_a_burst() {
        let params = UdpTransportFactoryParams {
            addr_v4: std::net::Ipv4Addr::LOCALHOST,
            addr_v6: std::net::Ipv6Addr::LOCALHOST,
            port: 0,
            fwmark: None,
        };
        let ((send, _), _) = Factory::default().bind(&params).await.expect("bound");
        let socket = send.socket.socket().expect("IPv4");
        let most = |name: &str| -> usize {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .expect("the host's maximum")
                .trim()
                .parse()
                .expect("a number")
        };
        use nix::sys::socket::{getsockopt, sockopt};
        let rcv = getsockopt(socket, sockopt::RcvBuf).expect("SO_RCVBUF");
        let snd = getsockopt(socket, sockopt::SndBuf).expect("SO_SNDBUF");
        assert!(
            rcv >= 2 * BUFFER.min(most("rmem_max")),
            "receive buffer {rcv}"
        );
        assert!(snd >= 2 * BUFFER.min(most("wmem_max")), "send buffer {snd}");
    }

    #[tokio::test]
    async fn runs_leave_as_gso_sends_the_kernel_cuts_into_the_packets() {
        let (gso, to) = sockets();
        a_batch_arrives_packet_by_packet(&gso, &to).await;
        assert!(!gso.refused.load(Ordering::Relaxed));
    }

    /// The kernel refuses GSO on a socket without UDP checksums (`EINVAL`): each run then
    /// goes packet by packet, and nothing is lost.
    #[tokio::test]
    async fn a_refused_gso_send_is_sent_packet_by_packet() {
        let (gso, to) = sockets();
        let fd = gso.socket.socket().expect("IPv4").as_raw_fd();
        let on: libc::c_int = 1;
        // SAFETY: setsockopt(2) on an open socket with a c_int option value of its size.
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                std::ptr::from_ref(&on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_NO_CHECK");
        a_batch_arrives_packet_by_packet(&gso, &to).await;
    }

    /// A batch of packets of the given lengths to local ports.
    fn batch(lens: &[(usize, u16)]) -> Vec<(Packet, SocketAddr)> {
        let to: Vec<_> = lens
            .iter()
            .map(|&(len, port)| (len, SocketAddr::from(([10, 0, 0, 1], port))))
            .collect();
        numbered(&to)
    }

    proptest::proptest! {
        /// Whatever a batch holds, its runs cover it in order, and each is a GSO send the
        /// kernel takes: one peer, every packet but the last as long as the first, the last no
        /// longer, within the bounds of one send.
        #[test]
        fn runs_cover_a_batch_with_sends_the_kernel_takes(
            lens in proptest::collection::vec((1usize..1500, 0u16..3), 0..300),
        ) {
            let packets = batch(&lens);
            let got: Vec<_> = runs(&packets).collect();
            let covered: Vec<usize> = got.iter().flat_map(Range::clone).collect();
            proptest::prop_assert_eq!(covered, (0..packets.len()).collect::<Vec<_>>());
            for run in got {
                let run = &packets[run];
                let first = run[0].0.len();
                let bytes: usize = run.iter().map(|(p, _)| p.len()).sum();
                proptest::prop_assert!(run.len() <= MOST_SEGMENTS && bytes <= MOST_BYTES);
                proptest::prop_assert!(run.iter().all(|(p, to)| *to == run[0].1 && p.len() <= first));
                proptest::prop_assert!(run[..run.len() - 1].iter().all(|(p, _)| p.len() == first));
            }
        }
    }

    #[test]
    fn a_run_is_equal_packets_to_one_peer_ending_in_at_most_one_shorter() {
        let packets = batch(&[
            (1452, 1),
            (1452, 1),
            (700, 1),
            (1452, 1),
            (1452, 2),
            (32, 2),
            (1452, 2),
            (1500, 2),
        ]);
        assert_eq!(
            runs(&packets).collect::<Vec<_>>(),
            vec![0..3, 3..4, 4..6, 6..7, 7..8]
        );
    }

    #[test]
    fn a_run_stays_within_one_gso_send() {
        let packets = batch(&[(1452, 1); 100]);
        let got: Vec<_> = runs(&packets).collect();
        assert!(got.iter().all(|r| r.len() * 1452 <= MOST_BYTES));
        assert_eq!(got.iter().map(Range::len).sum::<usize>(), 100);
        assert_eq!(got[0], 0..MOST_BYTES / 1452);
        let small = batch(&[(100, 1); 100]);
        assert_eq!(runs(&small).next(), Some(0..MOST_SEGMENTS));
    }
}
