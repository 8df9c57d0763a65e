//! The one checked door for untrusted bytes. [`parse`] validates an IPv4 packet and the part of
//! its L4 header that the router reads or writes; after it returns `Ok`, every offset it reports
//! lies inside the buffer, so the rewrite code indexes without further checks.

use core::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::wire::Ipv4Packet;

use crate::checksum;
use crate::stats::DropReason;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const IP_SRC: usize = 12;
pub const IP_DST: usize = 16;
pub const IP_CSUM: usize = 10;
pub const TCP_SEQ: usize = 4;
pub const TCP_ACK: usize = 8;
pub const TCP_FLAGS: usize = 13;
pub const TCP_CSUM: usize = 16;
pub const UDP_CSUM: usize = 6;
pub const ICMP_CSUM: usize = 2;
pub const ICMP_ID: usize = 4;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK_FLAG: u8 = 0x10;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
pub const ICMP_CODE_PORT_UNREACHABLE: u8 = 3;
pub const ICMP_CODE_FRAG_NEEDED: u8 = 4;

/// The transport protocols the router translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP echo, tracked by identifier.
    Icmp,
}

impl Protocol {
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
            Protocol::Icmp => IPPROTO_ICMP,
        }
    }
}

// One bounds check per field (the slice), then a plain load or store.

#[inline]
pub fn get16(buf: &[u8], off: usize) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&buf[off..off + 2]);
    u16::from_be_bytes(b)
}

#[inline]
pub fn get32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_be_bytes(b)
}

#[inline]
pub fn get_addr(buf: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::from_bits(get32(buf, off))
}

#[inline]
pub fn put16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub fn put32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// The IPv4 header fields the router uses.
#[derive(Clone, Copy, Debug)]
pub struct Ip {
    pub header_len: usize,
    pub total_len: usize,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ident: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In units of 8 bytes.
    pub frag_offset: u16,
}

impl Ip {
    pub fn is_fragment(&self) -> bool {
        self.more_fragments || self.frag_offset != 0
    }
}

/// What the router needs of the L4 header, with ports in a uniform shape: for ICMP echo the
/// identifier stands in the "source port" of a request and in the "destination port" of a reply,
/// so a request and its reply form a tuple and its reverse like TCP and UDP do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    EchoRequest {
        id: u16,
    },
    EchoReply {
        id: u16,
    },
    /// An ICMP error (destination unreachable, source quench, time exceeded, parameter problem).
    IcmpError {
        icmp_type: u8,
        code: u8,
    },
    /// A fragment after the first: no L4 header.
    Fragment,
}

impl L4 {
    pub fn protocol(&self) -> Option<Protocol> {
        match self {
            L4::Tcp { .. } => Some(Protocol::Tcp),
            L4::Udp { .. } => Some(Protocol::Udp),
            L4::EchoRequest { .. } | L4::EchoReply { .. } => Some(Protocol::Icmp),
            L4::IcmpError { .. } | L4::Fragment => None,
        }
    }

    /// (source port, destination port) in the uniform shape described above.
    pub fn ports(&self) -> (u16, u16) {
        match *self {
            L4::Tcp {
                src_port, dst_port, ..
            }
            | L4::Udp { src_port, dst_port } => (src_port, dst_port),
            L4::EchoRequest { id } => (id, 0),
            L4::EchoReply { id } => (0, id),
            L4::IcmpError { .. } | L4::Fragment => (0, 0),
        }
    }
}

/// A validated packet: the IPv4 header and the L4 header that starts at `ip.header_len`.
#[derive(Clone, Copy, Debug)]
pub struct Parsed {
    pub ip: Ip,
    pub l4: L4,
}

/// Validates the packet in `buf` (exactly the packet's bytes, or more: trailing bytes beyond the
/// IP total length are ignored by the caller after this).
#[inline(always)]
pub fn parse(buf: &[u8]) -> Result<Parsed, DropReason> {
    let Some(first) = buf.first() else {
        return Err(DropReason::Malformed);
    };
    match first >> 4 {
        4 => {}
        6 => return Err(DropReason::Ipv6),
        _ => return Err(DropReason::NotIp),
    }
    let packet = Ipv4Packet::new_checked(buf).map_err(|_| DropReason::Malformed)?;
    let header_len = usize::from(packet.header_len());
    // Nearly every header has no options: a constant length lets the sum unroll.
    let header_sum = if header_len == 20 {
        checksum::sum(&buf[..20])
    } else {
        checksum::sum(&buf[..header_len])
    };
    if checksum::fold(header_sum) != 0xffff {
        return Err(DropReason::BadIpChecksum);
    }
    let ip = Ip {
        header_len,
        total_len: usize::from(packet.total_len()),
        protocol: u8::from(packet.next_header()),
        src: packet.src_addr(),
        dst: packet.dst_addr(),
        ident: packet.ident(),
        dont_fragment: packet.dont_frag(),
        more_fragments: packet.more_frags(),
        frag_offset: packet.frag_offset() / 8,
    };
    let l4 = parse_l4(&ip, &buf[header_len..ip.total_len])?;
    Ok(Parsed { ip, l4 })
}

/// The connection a TCP or UDP packet would belong to, read at fixed offsets without any
/// check: a hint for [`crate::Router::prefetch`], never a verdict. `None` where the bytes do not
/// even reach the ports, or for any other protocol.
#[inline]
pub fn flow_hint(buf: &[u8]) -> Option<(Protocol, Tuple)> {
    let protocol = match *buf.get(9)? {
        IPPROTO_TCP => Protocol::Tcp,
        IPPROTO_UDP => Protocol::Udp,
        _ => return None,
    };
    let l4 = usize::from(buf[0] & 0x0f) * 4;
    let ports = buf.get(l4..l4 + 4)?;
    let a = buf.get(12..20)?;
    Some((
        protocol,
        Tuple {
            src: SocketAddrV4::new(Ipv4Addr::new(a[0], a[1], a[2], a[3]), get16(ports, 0)),
            dst: SocketAddrV4::new(Ipv4Addr::new(a[4], a[5], a[6], a[7]), get16(ports, 2)),
        },
    ))
}

#[inline]
fn parse_l4(ip: &Ip, l4: &[u8]) -> Result<L4, DropReason> {
    if ip.frag_offset != 0 {
        // RFC 1858: a TCP fragment at offset 8 could overwrite the flags of the first one.
        if ip.protocol == IPPROTO_TCP && ip.frag_offset == 1 {
            return Err(DropReason::Malformed);
        }
        return match ip.protocol {
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP => Ok(L4::Fragment),
            _ => Err(DropReason::UnsupportedProtocol),
        };
    }
    match ip.protocol {
        IPPROTO_TCP => {
            // The whole header, options included, must be in the first fragment.
            if l4.len() < 20
                || usize::from(l4[12] >> 4) * 4 < 20
                || usize::from(l4[12] >> 4) * 4 > l4.len()
            {
                return Err(DropReason::Malformed);
            }
            let (src_port, dst_port) = (get16(l4, 0), get16(l4, 2));
            if src_port == 0 || dst_port == 0 {
                return Err(DropReason::Malformed);
            }
            Ok(L4::Tcp {
                src_port,
                dst_port,
                flags: l4[TCP_FLAGS],
            })
        }
        IPPROTO_UDP => {
            if l4.len() < 8 {
                return Err(DropReason::Malformed);
            }
            let udp_len = usize::from(get16(l4, 4));
            // A first fragment carries the length of the whole datagram.
            let len_ok = if ip.more_fragments {
                udp_len > l4.len()
            } else {
                (8..=l4.len()).contains(&udp_len)
            };
            let (src_port, dst_port) = (get16(l4, 0), get16(l4, 2));
            if !len_ok || src_port == 0 || dst_port == 0 {
                return Err(DropReason::Malformed);
            }
            Ok(L4::Udp { src_port, dst_port })
        }
        IPPROTO_ICMP => {
            if l4.len() < 8 {
                return Err(DropReason::Malformed);
            }
            let (icmp_type, code) = (l4[0], l4[1]);
            match icmp_type {
                ICMP_ECHO_REQUEST if code == 0 => Ok(L4::EchoRequest {
                    id: get16(l4, ICMP_ID),
                }),
                ICMP_ECHO_REPLY if code == 0 => Ok(L4::EchoReply {
                    id: get16(l4, ICMP_ID),
                }),
                ICMP_DEST_UNREACHABLE
                | ICMP_SOURCE_QUENCH
                | ICMP_TIME_EXCEEDED
                | ICMP_PARAMETER_PROBLEM => Ok(L4::IcmpError { icmp_type, code }),
                _ => Err(DropReason::UnsupportedIcmp),
            }
        }
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

/// The packet quoted inside an ICMP error: its IPv4 header and at least the first 8 bytes of
/// its L4 header (all RFC 792 promises). The quote is usually truncated, so its total length is
/// not checked against what is there.
#[derive(Clone, Copy, Debug)]
pub struct Quoted {
    pub header_len: usize,
    pub protocol: Protocol,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub l4: L4,
    /// Bytes of the quote from its IP header on.
    pub len: usize,
}

/// Validates the quote that starts 8 bytes into an ICMP error message `icmp`.
pub fn parse_quoted(icmp: &[u8]) -> Result<Quoted, DropReason> {
    let q = icmp.get(8..).ok_or(DropReason::Malformed)?;
    if q.len() < 20 || q[0] >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let header_len = usize::from(q[0] & 0x0f) * 4;
    if header_len < 20 || q.len() < header_len + 8 {
        return Err(DropReason::Malformed);
    }
    // Only a first fragment (or an unfragmented packet) quotes ports.
    if get16(q, 6) & 0x1fff != 0 {
        return Err(DropReason::IcmpErrorUnmatched);
    }
    let l4b = &q[header_len..];
    let (protocol, l4) = match q[9] {
        IPPROTO_TCP => (
            Protocol::Tcp,
            L4::Tcp {
                src_port: get16(l4b, 0),
                dst_port: get16(l4b, 2),
                flags: 0,
            },
        ),
        IPPROTO_UDP => (
            Protocol::Udp,
            L4::Udp {
                src_port: get16(l4b, 0),
                dst_port: get16(l4b, 2),
            },
        ),
        IPPROTO_ICMP => match (l4b[0], l4b[1]) {
            (ICMP_ECHO_REQUEST, 0) => (
                Protocol::Icmp,
                L4::EchoRequest {
                    id: get16(l4b, ICMP_ID),
                },
            ),
            (ICMP_ECHO_REPLY, 0) => (
                Protocol::Icmp,
                L4::EchoReply {
                    id: get16(l4b, ICMP_ID),
                },
            ),
            // Never answer an error about an error (RFC 1122 3.2.2).
            _ => return Err(DropReason::IcmpErrorUnmatched),
        },
        _ => return Err(DropReason::UnsupportedProtocol),
    };
    Ok(Quoted {
        header_len,
        protocol,
        src: get_addr(q, IP_SRC),
        dst: get_addr(q, IP_DST),
        l4,
        len: q.len(),
    })
}

/// Source and destination of a packet. For ICMP echo the identifier is the "port" (see
/// [`L4::ports`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

impl Tuple {
    pub const fn reverse(self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
        }
    }
}
