//! In-place rewriting of addresses and ports with incremental checksum updates.

use crate::checksum::Delta;
use crate::conntrack::Tuple;
use crate::wire::{
    get16, get32, put16, put32, ICMP_CSUM, ICMP_ID, IP_CSUM, IP_DST, IP_SRC, L4, TCP_CSUM, UDP_CSUM,
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

fn set_word(buf: &mut [u8], off: usize, new: u16, d: &mut Delta) {
    d.word(get16(buf, off), new);
    put16(buf, off, new);
}

/// Writes a 32-bit field (an address, or two adjacent ports) only if it changes.
#[inline]
fn set_word32(buf: &mut [u8], off: usize, new: u32, d: &mut Delta) {
    let old = get32(buf, off);
    if old != new {
        d.word32(old, new);
        put32(buf, off, new);
    }
}

/// Rewrites the IPv4 packet that starts at `ip` (header length `header_len`, L4 shape `l4`) so
/// that its addresses and ports are `to`, and keeps every checksum right.
#[inline]
pub fn rewrite(buf: &mut [u8], ip: usize, header_len: usize, l4: L4, to: Tuple, mode: Mode) {
    rewrite_tracked::<false>(buf, ip, header_len, l4, to, mode);
}

/// Like [`rewrite`], and returns the change of all words written, checksums included: the delta
/// for a checksum that covers this packet (the ICMP checksum of an error that quotes it).
pub fn rewrite_quoted(
    buf: &mut [u8],
    ip: usize,
    header_len: usize,
    l4: L4,
    to: Tuple,
    end: usize,
) -> Delta {
    rewrite_tracked::<true>(buf, ip, header_len, l4, to, Mode::Quoted { end })
}

#[inline(always)]
fn rewrite_tracked<const TRACK: bool>(
    buf: &mut [u8],
    ip: usize,
    header_len: usize,
    l4: L4,
    to: Tuple,
    mode: Mode,
) -> Delta {
    let mut addrs = Delta::ZERO;
    set_word32(buf, ip + IP_SRC, to.src.ip().to_bits(), &mut addrs);
    set_word32(buf, ip + IP_DST, to.dst.ip().to_bits(), &mut addrs);
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
    let mut ports = Delta::ZERO;
    // (checksum offset, covers the pseudo-header, 0 means "no checksum")
    let csum = match l4 {
        L4::Tcp { .. } | L4::Udp { .. } => {
            let both = u32::from(to.src.port()) << 16 | u32::from(to.dst.port());
            set_word32(buf, l4o, both, &mut ports);
            let udp = matches!(l4, L4::Udp { .. });
            Some((l4o + if udp { UDP_CSUM } else { TCP_CSUM }, true, udp))
        }
        L4::EchoRequest { .. } => {
            set_word(buf, l4o + ICMP_ID, to.src.port(), &mut ports);
            Some((l4o + ICMP_CSUM, false, false))
        }
        L4::EchoReply { .. } => {
            set_word(buf, l4o + ICMP_ID, to.dst.port(), &mut ports);
            Some((l4o + ICMP_CSUM, false, false))
        }
        L4::IcmpError { .. } | L4::Fragment => None,
    };
    if TRACK {
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
