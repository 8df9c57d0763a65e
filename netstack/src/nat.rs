//! In-place rewriting of addresses and ports with incremental checksum updates.

use core::net::{Ipv4Addr, SocketAddrV4};

use crate::checksum::Delta;
use crate::wire::{
    get16, put16, put32, Ip, Tuple, ICMP_CSUM, ICMP_ID, IP_CSUM, IP_DST, IP_SRC, L4, TCP_CSUM,
    UDP_CSUM,
};

/// How the L4 checksum field of a packet is to be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L4Checksum {
    /// A complete checksum (or, for UDP, 0 for "none").
    #[default]
    Complete,
    /// virtio-net `NEEDS_CSUM`: the TCP/UDP checksum field holds the pseudo-header sum, and the
    /// kernel or NIC completes it over the segment later.
    Partial,
}

/// Where the L4 checksum of the packet being rewritten stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The packet itself, with its checksum kind.
    Packet(L4Checksum),
    /// A packet quoted in an ICMP error, whose bytes end at the given offset: fields beyond it are
    /// missing from the quote and left alone.
    Quoted { end: usize },
}

/// The checksum change of rewriting one tuple into another, folded: `!old + new` over the
/// address words and over the port words. A connection rewrites every packet of one direction
/// from the same tuple to the same tuple, so conntrack computes this once per direction and the
/// per-packet rewrite only applies it, without reading or comparing the old fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Source and destination address: the IP header checksum and the pseudo-header.
    addrs: u16,
    /// Source and destination port (the ICMP identifier stands in one of them, see
    /// [`crate::wire::L4::ports`], and the other is 0 on both sides).
    ports: u16,
}

impl Change {
    pub fn new(from: Tuple, to: Tuple) -> Change {
        let mut addrs = Delta::ZERO;
        addrs.word32(from.src.ip().to_bits(), to.src.ip().to_bits());
        addrs.word32(from.dst.ip().to_bits(), to.dst.ip().to_bits());
        let mut ports = Delta::ZERO;
        ports.word(from.src.port(), to.src.port());
        ports.word(from.dst.port(), to.dst.port());
        Change {
            addrs: addrs.folded(),
            ports: ports.folded(),
        }
    }
}

/// Rewrites the IPv4 packet that starts at `ip` (header length `header_len`, L4 shape `l4`) so
/// that its addresses and ports are `to`, and keeps every checksum right. `change` must be
/// [`Change::new`] of the tuple the packet holds and `to`.
#[inline]
pub fn rewrite(
    buf: &mut [u8],
    ip: usize,
    header_len: usize,
    l4: L4,
    to: Tuple,
    change: Change,
    mode: Mode,
) {
    rewrite_tracked::<false>(buf, ip, header_len, l4, to, change, mode);
}

/// Rewrites only the addresses of the IPv4 packet `ip` at the start of `buf`, and its header
/// checksum: a fragment after the first (no L4 header), or an ICMP error (its quote is
/// translated on its own).
pub fn rewrite_addresses(buf: &mut [u8], ip: &Ip, src: Ipv4Addr, dst: Ipv4Addr) {
    let from = Tuple {
        src: SocketAddrV4::new(ip.src, 0),
        dst: SocketAddrV4::new(ip.dst, 0),
    };
    let to = Tuple {
        src: SocketAddrV4::new(src, 0),
        dst: SocketAddrV4::new(dst, 0),
    };
    let mode = Mode::Packet(L4Checksum::Complete);
    rewrite(
        buf,
        0,
        ip.header_len,
        L4::Fragment,
        to,
        Change::new(from, to),
        mode,
    );
}

/// Like [`rewrite`], and returns the change of all words written, checksums included: the delta
/// for a checksum that covers this packet (the ICMP checksum of an error that quotes it).
pub fn rewrite_quoted(
    buf: &mut [u8],
    ip: usize,
    header_len: usize,
    l4: L4,
    to: Tuple,
    change: Change,
    end: usize,
) -> Delta {
    rewrite_tracked::<true>(buf, ip, header_len, l4, to, change, Mode::Quoted { end })
}

#[inline(always)]
fn rewrite_tracked<const TRACK: bool>(
    buf: &mut [u8],
    ip: usize,
    header_len: usize,
    l4: L4,
    to: Tuple,
    change: Change,
    mode: Mode,
) -> Delta {
    let addrs = Delta::from_folded(change.addrs);
    let ports = Delta::from_folded(change.ports);
    put32(buf, ip + IP_SRC, to.src.ip().to_bits());
    put32(buf, ip + IP_DST, to.dst.ip().to_bits());
    let mut all = addrs;
    if !addrs.is_zero() {
        let old = get16(buf, ip + IP_CSUM);
        let new = addrs.apply_complete(old);
        put16(buf, ip + IP_CSUM, new);
        if TRACK {
            all.word(old, new);
        }
    }
    let l4o = ip + header_len;
    // (checksum offset, covers the pseudo-header, 0 means "no checksum")
    let csum = match l4 {
        L4::Tcp { .. } | L4::Udp { .. } => {
            let both = u32::from(to.src.port()) << 16 | u32::from(to.dst.port());
            put32(buf, l4o, both);
            let udp = matches!(l4, L4::Udp { .. });
            Some((l4o + if udp { UDP_CSUM } else { TCP_CSUM }, true, udp))
        }
        L4::EchoRequest { .. } => {
            put16(buf, l4o + ICMP_ID, to.src.port());
            Some((l4o + ICMP_CSUM, false, false))
        }
        L4::EchoReply { .. } => {
            put16(buf, l4o + ICMP_ID, to.dst.port());
            Some((l4o + ICMP_CSUM, false, false))
        }
        L4::IcmpError { .. } | L4::Fragment => None,
    };
    if TRACK && csum.is_some() {
        all.add(ports);
    }
    let Some((off, pseudo, zero_is_none)) = csum else {
        return all;
    };
    if let Mode::Quoted { end } = mode {
        if off + 2 > end {
            return all;
        }
    }
    let old = get16(buf, off);
    let new = match mode {
        Mode::Packet(L4Checksum::Partial) if pseudo => addrs.apply_partial(old),
        _ if zero_is_none && old == 0 => 0,
        _ => {
            let mut d = ports;
            if pseudo {
                d.add(addrs);
            }
            match d.apply_complete(old) {
                // RFC 768: a computed 0 is sent as all ones; 0 means "no checksum".
                0 if zero_is_none => 0xffff,
                c => c,
            }
        }
    };
    put16(buf, off, new);
    if TRACK {
        all.word(old, new);
    }
    all
}

/// Finishes the partial L4 checksum (virtio-net `NEEDS_CSUM`) of a whole IPv4 TCP or UDP packet,
/// as the kernel would before it leaves: the packet can then go where only complete checksums
/// are taken (merged delivery, whose merge verifies each one before joining packets). `packet`
/// is the packet as the router forwarded it (its pseudo-header sum already rewritten). Returns
/// false and leaves the packet alone for anything else: other protocols, fragments, a UDP length
/// short of the IP payload (the sum would have to stop where the kernel stops it), anything
/// malformed.
pub fn complete_partial(packet: &mut [u8]) -> bool {
    let Ok(p) = crate::wire::parse(packet) else {
        return false;
    };
    let (start, end) = (p.ip.header_len, p.ip.total_len);
    let off = match p.l4 {
        _ if p.ip.is_fragment() => return false,
        L4::Tcp { .. } => TCP_CSUM,
        L4::Udp { .. } if usize::from(get16(packet, start + 4)) == end - start => UDP_CSUM,
        _ => return false,
    };
    let l4 = &mut packet[start..end];
    // The field holds the pseudo-header sum, so the sum over the segment covers both.
    let done = match !crate::checksum::fold(crate::checksum::sum(l4)) {
        // RFC 768: a computed 0 is sent as all ones; 0 means "no checksum".
        0 if off == UDP_CSUM => 0xffff,
        c => c,
    };
    put16(l4, off, done);
    true
}
