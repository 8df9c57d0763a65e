//! Packets the router answers with itself: echo replies, TCP resets and ICMP errors, built in
//! the caller's buffer in place of the packet they answer.

use core::net::Ipv4Addr;

use crate::checksum::{self, Delta};
use crate::stats::DropReason;
use crate::time::Instant;
use crate::wire::{
    get16, get32, put16, put32, Ip, ICMP_CSUM, ICMP_ECHO_REPLY, IPPROTO_ICMP, IPPROTO_TCP, IP_CSUM,
    IP_DST, IP_SRC, TCP_ACK, TCP_ACK_FLAG, TCP_FIN, TCP_FLAGS, TCP_RST, TCP_SEQ, TCP_SYN,
};

const TTL: u8 = 64;
/// RFC 1812 4.3.2.3: an ICMP error quotes as much as fits in 576 bytes.
const ERROR_MAX: usize = 576;

/// Turns the echo request in `buf` into its reply, in place. Returns the reply's length.
pub fn echo_reply(buf: &mut [u8], ip: &Ip) -> usize {
    // Swapping source and destination leaves the header sum unchanged; only the TTL moves it.
    let mut d = Delta::ZERO;
    d.word(get16(buf, 8), u16::from_be_bytes([TTL, buf[9]]));
    buf[8] = TTL;
    let (src, dst) = (ip.src.octets(), ip.dst.octets());
    buf[IP_SRC..IP_SRC + 4].copy_from_slice(&dst);
    buf[IP_DST..IP_DST + 4].copy_from_slice(&src);
    put16(buf, IP_CSUM, d.apply_complete(get16(buf, IP_CSUM)));
    let l4 = ip.header_len;
    let mut d = Delta::ZERO;
    d.word(get16(buf, l4), u16::from(ICMP_ECHO_REPLY) << 8);
    buf[l4] = ICMP_ECHO_REPLY;
    buf[l4 + 1] = 0;
    put16(
        buf,
        l4 + ICMP_CSUM,
        d.apply_complete(get16(buf, l4 + ICMP_CSUM)),
    );
    ip.total_len
}

fn ip_header(buf: &mut [u8], total: usize, protocol: u8, src: Ipv4Addr, dst: Ipv4Addr, df: bool) {
    buf[0] = 0x45;
    buf[1] = 0;
    put16(buf, 2, total as u16);
    put32(buf, 4, if df { 0x4000 } else { 0 });
    buf[8] = TTL;
    buf[9] = protocol;
    put16(buf, IP_CSUM, 0);
    buf[IP_SRC..IP_SRC + 4].copy_from_slice(&src.octets());
    buf[IP_DST..IP_DST + 4].copy_from_slice(&dst.octets());
    let c = checksum::complete(0, &buf[..20]);
    put16(buf, IP_CSUM, c);
}

/// Answers the TCP segment in `buf` with a RST (RFC 9293 3.10.7.1, closed port). Returns `None`
/// for a segment that is itself a RST, which is never answered.
pub fn tcp_reset(buf: &mut [u8], ip: &Ip) -> Option<usize> {
    let l4 = ip.header_len;
    let flags = buf[l4 + TCP_FLAGS];
    if flags & TCP_RST != 0 {
        return None;
    }
    let (sport, dport) = (get16(buf, l4), get16(buf, l4 + 2));
    let (seq_in, ack_in) = (get32(buf, l4 + TCP_SEQ), get32(buf, l4 + TCP_ACK));
    let data_len = ip.total_len - l4 - usize::from(buf[l4 + 12] >> 4) * 4;
    let (seq, ack, out_flags) = if flags & TCP_ACK_FLAG != 0 {
        (ack_in, 0, TCP_RST)
    } else {
        let len =
            data_len as u32 + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
        (0, seq_in.wrapping_add(len), TCP_RST | TCP_ACK_FLAG)
    };
    ip_header(buf, 40, IPPROTO_TCP, ip.dst, ip.src, true);
    let t = &mut buf[20..40];
    put16(t, 0, dport);
    put16(t, 2, sport);
    put32(t, 4, seq);
    put32(t, 8, ack);
    t[12] = 5 << 4;
    t[13] = out_flags;
    put32(t, 14, 0); // window 0, checksum 0
    put16(t, 18, 0);
    let c = checksum::complete(checksum::pseudo_header(ip.dst, ip.src, IPPROTO_TCP, 20), t);
    put16(t, 16, c);
    Some(40)
}

/// Replaces the packet of length `len` in `buf` with an ICMP error from `src` about it, quoting
/// its beginning. `rest` is the ICMP header's second word (the next-hop MTU for "fragmentation
/// needed").
pub fn error(
    buf: &mut [u8],
    len: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    (icmp_type, code): (u8, u8),
    rest: u32,
) -> Result<usize, DropReason> {
    let quote = len.min(ERROR_MAX - 28).min(buf.len().saturating_sub(28));
    if quote < 28 {
        return Err(DropReason::BufferTooSmall);
    }
    buf.copy_within(0..quote, 28);
    let total = 28 + quote;
    ip_header(buf, total, IPPROTO_ICMP, src, dst, false);
    buf[20] = icmp_type;
    buf[21] = code;
    put16(buf, 22, 0);
    put32(buf, 24, rest);
    let c = checksum::complete(0, &buf[20..total]);
    put16(buf, 22, c);
    Ok(total)
}

/// A token bucket for the answers the router generates (RFC 1812 4.3.2.8), so that a scan or a
/// flood of unmapped ports cannot make the node send at line rate.
#[derive(Clone, Debug)]
pub struct RateLimit {
    per_sec: u64,
    burst: u64,
    /// In thousandths of a token.
    tokens: u64,
    last: Instant,
}

impl RateLimit {
    pub fn new(per_sec: u32, burst: u32) -> RateLimit {
        let burst = u64::from(burst);
        RateLimit {
            per_sec: u64::from(per_sec),
            burst,
            tokens: burst * 1000,
            last: Instant::ZERO,
        }
    }

    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.as_millis().saturating_sub(self.last.as_millis());
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed.saturating_mul(self.per_sec)).min(self.burst * 1000);
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }
}
