//! One connection: its tuples, its TCP state and timeout class, and what a packet does to it.

use super::*;

/// A tuple and protocol packed as four words: compared in one go, hashed as two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Key(pub(super) [u32; 4]);

impl Key {
    #[inline]
    pub(super) fn new(protocol: Protocol, t: Tuple) -> Key {
        Key([
            t.src.ip().to_bits(),
            t.dst.ip().to_bits(),
            u32::from(t.src.port()) << 16 | u32::from(t.dst.port()),
            protocol as u32,
        ])
    }
}

impl Hash for Key {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        let k = &self.0;
        h.write_u64(u64::from(k[0]) << 32 | u64::from(k[1]));
        h.write_u64(u64::from(k[2]) << 8 | u64::from(k[3]));
    }
}

/// Which way a packet travels relative to the connection's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Original = 0,
    Reply = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    Unreplied,
    TcpHalfOpen,
    TcpEstablished,
    TcpClosing,
    Udp,
    Icmp,
}

pub(super) const CLASSES: usize = 6;

/// The classes a full table may evict from: connections that are not (or no longer) settled.
pub(super) const EVICTABLE: [Class; 3] = [Class::Unreplied, Class::TcpHalfOpen, Class::TcpClosing];

// Bits 0 and 1 say, for a packet travelling in that direction (`1 << dir`), that even one
// without SYN, FIN or RST changes the connection: so one test keeps quiet packets on the fast
// path.
/// The answer's SYN-ACK came; the originator's ACK has not.
pub(super) const AWAIT_ACK: u8 = 1 << Dir::Original as u8;

/// No answer has come yet.
pub(super) const UNREPLIED: u8 = 1 << Dir::Reply as u8;

pub(super) const ESTABLISHED: u8 = 4;

pub(super) const FIN_ORIGINAL: u8 = 8;

pub(super) const FIN_REPLY: u8 = 16;

pub(super) const CLOSED: u8 = 32;

/// A tracked connection. In declaration order, so that the tuples come first and `live`
/// last ([`Table::prefetch`] reads both ends).
#[derive(Clone, Debug)]
#[repr(C)]
pub struct Conn {
    pub original: Tuple,
    pub reply: Tuple,
    /// The checksum change of the rewrite, by direction ([`Dir`] as index): fixed for the
    /// connection's life, so packets do not recompute it.
    pub(super) changes: [Change; 2],
    /// Seconds since the driver's epoch.
    pub(super) last_seen: u32,
    pub(super) queued: u32,
    pub(super) prev: u32,
    pub(super) next: u32,
    pub(super) generation: u32,
    pub protocol: Protocol,
    pub(super) flags: u8,
    pub(super) class: Class,
    pub(super) live: bool,
}

impl Conn {
    /// The tuple a packet travelling in `dir` is rewritten to.
    pub fn translated(&self, dir: Dir) -> Tuple {
        match dir {
            Dir::Original => self.reply.reverse(),
            Dir::Reply => self.original.reverse(),
        }
    }

    /// The checksum change of rewriting a packet travelling in `dir`.
    pub fn change(&self, dir: Dir) -> Change {
        self.changes[dir as usize]
    }

    /// Whether the connection has been idle past its class's timeout (`timeouts` in seconds).
    #[inline]
    pub(super) fn is_idle(&self, timeouts: &[u32; CLASSES], now: u32) -> bool {
        now.saturating_sub(self.last_seen) > timeouts[self.class as usize]
    }

    /// The tuple packets travelling in `dir` arrive with.
    #[inline]
    pub(super) fn arrives_with(&self, dir: Dir) -> Tuple {
        match dir {
            Dir::Original => self.original,
            Dir::Reply => self.reply,
        }
    }

    /// Refreshes the connection for a packet travelling in `dir` and follows TCP's life cycle.
    /// Returns the packet's rewrite, and the connection's new class if it changed (the table
    /// moves it to that class's list).
    #[inline(always)]
    pub(super) fn record(
        &mut self,
        dir: Dir,
        tcp_flags: Option<u8>,
        now: u32,
    ) -> (Tuple, Change, Option<Class>) {
        self.last_seen = now;
        let (to, change) = (self.translated(dir), self.change(dir));
        // Nearly every packet changes nothing: no SYN, FIN or RST, no first answer, and not the
        // ACK that completes a handshake.
        let quiet = tcp_flags.is_none_or(|tf| tf & (TCP_SYN | TCP_FIN | TCP_RST) == 0);
        if quiet && self.flags & (1 << dir as u8) == 0 {
            return (to, change, None);
        }
        let mut f = self.flags;
        if dir == Dir::Reply {
            f &= !UNREPLIED;
        }
        if let Some(tf) = tcp_flags {
            let syn_only = tf & (TCP_SYN | TCP_ACK_FLAG) == TCP_SYN;
            if tf & TCP_RST != 0 {
                f |= CLOSED;
            } else if syn_only
                && dir == Dir::Original
                && f & (CLOSED | FIN_ORIGINAL | FIN_REPLY) != 0
            {
                // The same ports open a new connection after the old one closed.
                f = UNREPLIED;
            } else {
                let syn_ack = tf & (TCP_SYN | TCP_ACK_FLAG) == TCP_SYN | TCP_ACK_FLAG;
                if dir == Dir::Reply && syn_ack && f & ESTABLISHED == 0 {
                    f |= AWAIT_ACK;
                } else if dir == Dir::Original && f & AWAIT_ACK != 0 && tf & TCP_ACK_FLAG != 0 {
                    // The handshake is complete only with the originator's ACK: a SYN-ACK alone
                    // (a peer answering itself) holds no slot for long.
                    f = (f & !AWAIT_ACK) | ESTABLISHED;
                }
                if tf & TCP_FIN != 0 {
                    f |= if dir == Dir::Original {
                        FIN_ORIGINAL
                    } else {
                        FIN_REPLY
                    };
                }
            }
        }
        if f == self.flags {
            return (to, change, None);
        }
        self.flags = f;
        let class = self.class();
        (to, change, (class != self.class).then_some(class))
    }

    pub(super) fn class(&self) -> Class {
        let f = self.flags;
        match self.protocol {
            Protocol::Tcp
                if f & CLOSED != 0
                    || f & (FIN_ORIGINAL | FIN_REPLY) == FIN_ORIGINAL | FIN_REPLY =>
            {
                Class::TcpClosing
            }
            Protocol::Tcp if f & ESTABLISHED != 0 => Class::TcpEstablished,
            Protocol::Tcp if f & AWAIT_ACK != 0 => Class::TcpHalfOpen,
            Protocol::Udp if f & UNREPLIED == 0 => Class::Udp,
            Protocol::Icmp if f & UNREPLIED == 0 => Class::Icmp,
            _ => Class::Unreplied,
        }
    }
}
