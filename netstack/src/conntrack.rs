//! Connection tracking: every translated flow is one [`Conn`] with its original tuple (as the
//! first packet arrived) and its reply tuple (as answers arrive), both indexed, so a packet of
//! either direction is found with one hash lookup on the tuple it arrives with.
//!
//! Expiry is lazy. Each connection sits in one list per timeout class, in the order it was queued;
//! a packet only stamps `last_seen`. [`Table::expire`] looks at list fronts: a connection idle
//! past its timeout is removed, a refreshed one is queued again at the back. A lookup that finds
//! a connection idle past its timeout treats it as gone, so the timeout holds exactly for
//! traffic; memory is reclaimed at most one timeout later.
//!
//! Times are kept in whole seconds (timeouts are tens of seconds and more), which keeps a
//! connection at 56 bytes; slots live in fixed chunks, so the table never copies itself to grow.
//!
//! The table is bounded, and so is each source's share of it. A source (the address that opened
//! the connection: a VPN peer or a container) holds at most `max_per_source` connections; past
//! that its new ones are refused ([`DropReason::SourceQuota`]), so one peer or one algorithm
//! cannot take the others' room. Counts are kept in [`SOURCE_BUCKETS`] buckets by a keyed hash
//! of the source, a fixed 16 KiB however many sources there are: sources that share a bucket
//! share its quota, and without the router's hash key nobody can choose whom it shares with.
//! When the table is full, a new connection first reclaims expired ones, then evicts the oldest
//! unsettled one (never answered, half-open, or closing: what a flood or a scan leaves), and
//! only then is refused with [`DropReason::TableFull`].
//! Beside the source, each connection counts for the run family of the container it serves (the
//! container that opened it, or the one a peer opened it to): a family (the runs of one job,
//! registered with [`Table::join`]) holds at most `max_per_family` connections, past that
//! [`DropReason::RunQuota`], so no number of copies of one algorithm can fill the table or an
//! outbound port range for the others. Both counts are kept off the per-packet path: only a
//! new connection and a removed one look them up.
//! Established connections are never evicted for new ones. A TCP connection is half-open, with a
//! short timeout, from the answer's SYN-ACK until the originator's ACK.

use core::hash::{BuildHasher, Hash, Hasher};
use core::net::Ipv4Addr;
use core::time::Duration;

use foldhash::fast::FixedState;
use std::collections::HashMap;

use crate::index::Index;
use crate::nat::Change;
use crate::stats::DropReason;
use crate::time::Instant;
use crate::wire::{Protocol, Tuple, TCP_ACK_FLAG, TCP_FIN, TCP_RST, TCP_SYN};

/// A tuple and protocol packed as four words: compared in one go, hashed as two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key([u32; 4]);

impl Key {
    #[inline]
    fn new(protocol: Protocol, t: Tuple) -> Key {
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

/// Idle timeouts by class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection that has seen no answer yet (TCP before SYN-ACK, UDP and ICMP before the
    /// first reply).
    pub unreplied: Duration,
    /// From the SYN-ACK until the originator's ACK completes the handshake (Linux's SYN_RECV).
    pub tcp_half_open: Duration,
    pub tcp_established: Duration,
    /// After FIN in both directions or a RST.
    pub tcp_closing: Duration,
    /// RFC 4787 REQ-5: at least two minutes.
    pub udp: Duration,
    /// RFC 5508 REQ-1: at least 60 seconds.
    pub icmp: Duration,
    /// How long the translation of a fragmented datagram waits for its remaining fragments.
    pub fragment: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            unreplied: Duration::from_secs(120),
            tcp_half_open: Duration::from_secs(60),
            // RFC 5382 REQ-5: 2 hours 4 minutes.
            tcp_established: Duration::from_secs(7440),
            tcp_closing: Duration::from_secs(60),
            udp: Duration::from_secs(300),
            icmp: Duration::from_secs(60),
            fragment: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Unreplied,
    TcpHalfOpen,
    TcpEstablished,
    TcpClosing,
    Udp,
    Icmp,
}

const CLASSES: usize = 6;
/// The classes a full table may evict from: connections that are not (or no longer) settled.
const EVICTABLE: [Class; 3] = [Class::Unreplied, Class::TcpHalfOpen, Class::TcpClosing];
const NONE: u32 = u32::MAX;
/// Slots per chunk: small enough that a small table stays small, large enough that the chunk
/// list stays short.
const CHUNK: usize = 1024;
/// Buckets of the per-source connection counts.
pub const SOURCE_BUCKETS: usize = 4096;
/// Entries of the recent-lookup cache (a power of two): 2 KiB, and few enough collisions
/// among the packets of one [`Table::prefetch`].
const RECENT: usize = 256;
/// The most packets [`Table::prefetch`] looks up at once: enough for their memory reads to
/// overlap, few enough that their entries rarely evict one another from the recent-lookup
/// cache.
const PREFETCH_BATCH: usize = 16;

// Bits 0 and 1 say, for a packet travelling in that direction (`1 << dir`), that even one
// without SYN, FIN or RST changes the connection: so one test keeps quiet packets on the fast
// path.
/// The answer's SYN-ACK came; the originator's ACK has not.
const AWAIT_ACK: u8 = 1 << Dir::Original as u8;
/// No answer has come yet.
const UNREPLIED: u8 = 1 << Dir::Reply as u8;
const ESTABLISHED: u8 = 4;
const FIN_ORIGINAL: u8 = 8;
const FIN_REPLY: u8 = 16;
const CLOSED: u8 = 32;

/// A tracked connection. In declaration order, so that the tuples come first and `live`
/// last ([`Table::prefetch`] reads both ends).
#[derive(Clone, Debug)]
#[repr(C)]
pub struct Conn {
    pub original: Tuple,
    pub reply: Tuple,
    /// The checksum change of the rewrite, by direction ([`Dir`] as index): fixed for the
    /// connection's life, so packets do not recompute it.
    changes: [Change; 2],
    /// Seconds since the driver's epoch.
    last_seen: u32,
    queued: u32,
    prev: u32,
    next: u32,
    generation: u32,
    pub protocol: Protocol,
    flags: u8,
    class: Class,
    live: bool,
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
    fn is_idle(&self, timeouts: &[u32; CLASSES], now: u32) -> bool {
        now.saturating_sub(self.last_seen) > timeouts[self.class as usize]
    }

    /// The tuple packets travelling in `dir` arrive with.
    #[inline]
    fn arrives_with(&self, dir: Dir) -> Tuple {
        match dir {
            Dir::Original => self.original,
            Dir::Reply => self.reply,
        }
    }

    /// Refreshes the connection for a packet travelling in `dir` and follows TCP's life cycle.
    /// Returns the packet's rewrite, and the connection's new class if it changed (the table
    /// moves it to that class's list).
    #[inline(always)]
    fn record(
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

    fn class(&self) -> Class {
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

/// A handle that stays valid only while the connection it names lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    id: u32,
    generation: u32,
}

#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
}

/// The connection table.
#[derive(Debug)]
pub struct Table {
    chunks: Vec<Vec<Conn>>,
    slots: u32,
    free: u32,
    /// Both tuples of every live connection, each as its index value (`id << 1 | reply`) alone:
    /// the key is the connection's own tuple.
    index: Index,
    index_hash: FixedState,
    /// Recent lookups as (mix of the key, index value `id << 1 | reply`), direct-mapped by the
    /// mix: a packet of a busy flow skips the hash and probe. A different mix misses without
    /// touching a connection (no extra cache miss when many flows take turns); a matching one
    /// is checked against the connection's own tuple, so entries never need invalidating.
    recent: [(u32, u32); RECENT],
    lists: [List; CLASSES],
    /// In seconds.
    timeouts: [u32; CLASSES],
    len: usize,
    max: usize,
    /// Live connections by (the bucket of) the address that opened them.
    per_source: Box<[u32; SOURCE_BUCKETS]>,
    source_hash: FixedState,
    max_per_source: u32,
    /// The family of each registered container address, and live connections by family.
    family_of: HashMap<Ipv4Addr, u64, FixedState>,
    per_family: HashMap<u64, u32, FixedState>,
    max_per_family: u32,
    pub expired: u64,
    pub evicted: u64,
    pub removed: u64,
}

/// An index value: the connection's slot, and whether the key is its reply tuple.
#[inline]
fn unpack(v: u32) -> (u32, Dir) {
    let dir = if v & 1 == 0 {
        Dir::Original
    } else {
        Dir::Reply
    };
    (v >> 1, dir)
}

/// The recent-lookup cache's slot for `key`, and the mix kept there to recognise it.
#[inline]
fn recent_slot(key: &Key) -> (usize, u32) {
    let k = &key.0;
    let mix = (k[0] ^ k[1] ^ k[2]).wrapping_mul(0x9e37_79b1);
    ((mix >> (32 - RECENT.trailing_zeros())) as usize, mix)
}

/// The key an index value stands for: its connection's tuple in that direction.
#[inline]
fn key_of(chunks: &[Vec<Conn>], v: u32) -> Key {
    let (id, dir) = unpack(v);
    let c = &chunks[id as usize / CHUNK][id as usize % CHUNK];
    Key::new(
        c.protocol,
        match dir {
            Dir::Original => c.original,
            Dir::Reply => c.reply,
        },
    )
}

/// Slot `id` of the chunks: borrows only them, so the table's other fields stay usable.
#[inline]
fn conn_mut(chunks: &mut [Vec<Conn>], id: u32) -> &mut Conn {
    &mut chunks[id as usize / CHUNK][id as usize % CHUNK]
}

fn secs(now: Instant) -> u32 {
    u32::try_from(now.as_millis() / 1000).unwrap_or(u32::MAX)
}

impl Table {
    pub fn new(
        max: usize,
        max_per_source: usize,
        max_per_family: usize,
        timeouts: &Timeouts,
        seed: u64,
    ) -> Table {
        let t = timeouts;
        Table {
            chunks: Vec::new(),
            slots: 0,
            free: NONE,
            index: Index::default(),
            index_hash: FixedState::with_seed(seed),
            recent: [(0, NONE); RECENT],
            lists: [List {
                head: NONE,
                tail: NONE,
            }; CLASSES],
            timeouts: [
                t.unreplied,
                t.tcp_half_open,
                t.tcp_established,
                t.tcp_closing,
                t.udp,
                t.icmp,
            ]
            .map(|d| {
                u32::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(u32::MAX)
            }),
            len: 0,
            max,
            per_source: Box::new([0; SOURCE_BUCKETS]),
            // Not the index's key: a bucket says nothing about where a tuple sits.
            source_hash: FixedState::with_seed(seed.rotate_left(32) ^ 0x5ca1_ab1e),
            max_per_source: u32::try_from(max_per_source).unwrap_or(u32::MAX),
            family_of: HashMap::with_hasher(FixedState::with_seed(seed)),
            per_family: HashMap::with_hasher(FixedState::with_seed(seed)),
            max_per_family: u32::try_from(max_per_family).unwrap_or(u32::MAX),
            expired: 0,
            evicted: 0,
            removed: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, id: u32) -> &Conn {
        &self.chunks[id as usize / CHUNK][id as usize % CHUNK]
    }

    #[inline]
    fn slot(&mut self, id: u32) -> &mut Conn {
        conn_mut(&mut self.chunks, id)
    }

    pub fn handle(&self, id: u32) -> ConnRef {
        ConnRef {
            id,
            generation: self.get(id).generation,
        }
    }

    pub fn is_live(&self, r: ConnRef) -> bool {
        r.id < self.slots && {
            let c = self.get(r.id);
            c.live && c.generation == r.generation
        }
    }

    /// Whether a tuple is tracked (in either direction), expired or not.
    pub fn contains(&self, protocol: Protocol, tuple: Tuple) -> bool {
        self.lookup(&Key::new(protocol, tuple)).is_some()
    }

    /// The index value of `key`.
    #[inline]
    fn lookup(&self, key: &Key) -> Option<u32> {
        let chunks = &self.chunks;
        self.index
            .find(self.index_hash.hash_one(key), |v| key_of(chunks, v) == *key)
    }

    /// Adds index value `v`, whose connection's slot already holds its tuples.
    fn index_insert(&mut self, v: u32) {
        let (chunks, hasher) = (&self.chunks, &self.index_hash);
        let hash = hasher.hash_one(key_of(chunks, v));
        self.index
            .insert(hash, v, |e| hasher.hash_one(key_of(chunks, e)));
    }

    /// Removes index value `v` (its connection still holds its tuples).
    fn index_remove(&mut self, v: u32) {
        let hash = self.index_hash.hash_one(key_of(&self.chunks, v));
        self.index.remove(hash, v);
    }

    #[inline]
    fn find(&self, protocol: Protocol, tuple: Tuple) -> Option<(u32, Dir)> {
        self.lookup(&Key::new(protocol, tuple)).map(unpack)
    }

    /// Finds the live connection a packet arriving with `tuple` belongs to, without touching it.
    pub fn peek(&self, protocol: Protocol, tuple: Tuple, now: Instant) -> Option<(u32, Dir)> {
        let (id, dir) = self.find(protocol, tuple)?;
        (!self.get(id).is_idle(&self.timeouts, secs(now))).then_some((id, dir))
    }

    /// The per-packet path's first try, the recent-lookup cache alone: if it names a live
    /// connection with `tuple` that is not idle, records the packet in it (as
    /// [`Table::on_packet`]) and returns the connection, the tuple the packet is rewritten to and
    /// the checksum change of that. Otherwise `None`, and [`Table::track`] decides.
    #[inline]
    pub fn track_recent(
        &mut self,
        protocol: Protocol,
        tuple: Tuple,
        tcp_flags: Option<u8>,
        now: Instant,
    ) -> Option<(u32, Tuple, Change)> {
        let (slot, mix) = recent_slot(&Key::new(protocol, tuple));
        let (seen_mix, cached) = self.recent[slot];
        if seen_mix != mix || cached == NONE {
            return None;
        }
        let (id, dir) = unpack(cached);
        let c = conn_mut(&mut self.chunks, id);
        let now = secs(now);
        if !c.live
            || c.protocol != protocol
            || c.arrives_with(dir) != tuple
            || c.is_idle(&self.timeouts, now)
        {
            return None;
        }
        let (to, change, class) = c.record(dir, tcp_flags, now);
        self.reclass(id, class, now);
        Some((id, to, change))
    }

    /// Looks up the connections of a batch of packets ahead of the packets, and leaves what it
    /// found in the recent-lookup cache, where [`Table::track_recent`] will find it. For up to
    /// 16 flows (`PREFETCH_BATCH`) the cache does not know at a time, every home bucket of the
    /// index is read before any is used, then every connection the buckets name: the batch
    /// waits for memory about twice instead of twice per packet. What it leaves is the likeliest
    /// entry, unconfirmed: an entry of the cache is checked against its connection when used,
    /// as every entry is, so a wrong one costs its packet the full lookup and changes nothing
    /// else.
    pub fn prefetch(&mut self, flows: impl IntoIterator<Item = (Protocol, Tuple)>) {
        let mut flows = flows.into_iter();
        loop {
            let mut todo = [(0u64, NONE); PREFETCH_BATCH];
            let mut n = 0;
            for (protocol, tuple) in flows.by_ref() {
                let key = Key::new(protocol, tuple);
                let (slot, mix) = recent_slot(&key);
                if self.recent[slot].0 != mix {
                    todo[n] = (self.index_hash.hash_one(key), slot as u32);
                    self.recent[slot].0 = mix;
                    n += 1;
                    if n == PREFETCH_BATCH {
                        break;
                    }
                }
            }
            if n == 0 {
                return;
            }
            self.fetch(&mut todo[..n]);
        }
    }

    /// [`Table::prefetch`]'s reads for `todo` (the hash and recent-lookup slot of each flow).
    fn fetch(&mut self, todo: &mut [(u64, u32)]) {
        // Loops of reads alone, whose results only feed this word: the processor issues every
        // read of a loop before the first arrives. `black_box` keeps the reads.
        let mut read = 0u32;
        for &(hash, _) in todo.iter() {
            read ^= self.index.warm(hash);
        }
        for (hash, slot) in todo.iter_mut() {
            let v = self.index.first_match(*hash).unwrap_or(NONE);
            self.recent[*slot as usize].1 = v;
            *slot = v;
        }
        for &(_, v) in todo.iter().filter(|&&(_, v)| v != NONE) {
            // A connection may straddle two cache lines: its first and last field.
            let c = self.get(v >> 1);
            read ^= c.original.src.ip().to_bits() ^ u32::from(c.live);
        }
        std::hint::black_box(read);
    }

    /// As [`Table::track_recent`], through the index: finds the live connection a packet
    /// arriving with `tuple` belongs to and records the packet in it; `None` if no live
    /// connection has the tuple (one found idle past its timeout is removed). Out of line, so
    /// that the probe's registers do not crowd the cache hit.
    #[inline(never)]
    pub fn track(
        &mut self,
        protocol: Protocol,
        tuple: Tuple,
        tcp_flags: Option<u8>,
        now: Instant,
    ) -> Option<(u32, Tuple, Change)> {
        let key = Key::new(protocol, tuple);
        let v = self.lookup(&key)?;
        let (slot, mix) = recent_slot(&key);
        self.recent[slot] = (mix, v);
        let (id, dir) = unpack(v);
        if self.get(id).is_idle(&self.timeouts, secs(now)) {
            self.remove(id);
            self.expired += 1;
            return None;
        }
        let (to, change) = self.on_packet(id, dir, tcp_flags, now);
        Some((id, to, change))
    }

    /// Records a packet of connection `id` travelling in `dir`: refreshes it and follows TCP's
    /// life cycle. Returns the tuple the packet is rewritten to and the checksum change of that.
    pub fn on_packet(
        &mut self,
        id: u32,
        dir: Dir,
        tcp_flags: Option<u8>,
        now: Instant,
    ) -> (Tuple, Change) {
        let now = secs(now);
        let (to, change, class) = self.slot(id).record(dir, tcp_flags, now);
        self.reclass(id, class, now);
        (to, change)
    }

    /// Moves connection `id` to the list of its new class, if it has one.
    #[inline]
    fn reclass(&mut self, id: u32, class: Option<Class>, now: u32) {
        if let Some(class) = class {
            self.unlink(id);
            self.slot(id).class = class;
            self.push_back(id, now);
        }
    }

    /// Starts tracking a new connection whose first packet arrived with `original` and whose
    /// answers will arrive with `reply`. The caller has checked that `original` is not tracked.
    pub fn insert(
        &mut self,
        protocol: Protocol,
        original: Tuple,
        reply: Tuple,
        now: Instant,
    ) -> Result<u32, DropReason> {
        let reply_key = Key::new(protocol, reply);
        if original == reply || self.lookup(&reply_key).is_some() {
            return Err(DropReason::TupleConflict);
        }
        let source = self.source_bucket(*original.src.ip());
        if self.per_source[source] >= self.max_per_source {
            // The source's own connections age out; nobody else's is taken for it.
            self.expire(now);
            if self.per_source[source] >= self.max_per_source {
                return Err(DropReason::SourceQuota);
            }
        }
        let family = self.family(&original, &reply);
        if let Some(f) = family {
            if self.family_count(f) >= self.max_per_family {
                self.expire(now);
                if self.family_count(f) >= self.max_per_family {
                    return Err(DropReason::RunQuota);
                }
            }
        }
        if self.len >= self.max {
            self.make_room(now)?;
        }
        let now = secs(now);
        let conn = Conn {
            original,
            reply,
            changes: [
                Change::new(original, reply.reverse()),
                Change::new(reply, original.reverse()),
            ],
            last_seen: now,
            queued: now,
            prev: NONE,
            next: NONE,
            generation: 0,
            protocol,
            flags: UNREPLIED,
            class: Class::Unreplied,
            live: true,
        };
        let id = if self.free != NONE {
            let id = self.free;
            let slot = self.slot(id);
            let next_free = slot.next;
            *slot = Conn {
                generation: slot.generation.wrapping_add(1),
                ..conn
            };
            self.free = next_free;
            id
        } else {
            let id = self.slots;
            if id >= NONE >> 1 {
                return Err(DropReason::TableFull);
            }
            if id as usize % CHUNK == 0 {
                self.chunks.push(Vec::with_capacity(CHUNK));
            }
            if let Some(chunk) = self.chunks.last_mut() {
                chunk.push(conn);
            }
            self.slots += 1;
            id
        };
        self.index_insert(id << 1);
        self.index_insert(id << 1 | 1);
        self.push_back(id, now);
        self.len += 1;
        self.per_source[source] += 1;
        if let Some(f) = family {
            *self.per_family.entry(f).or_insert(0) += 1;
        }
        Ok(id)
    }

    /// Registers a container address as one of `family`'s: the connections it opens, and those
    /// opened to it, count for the family from now on.
    pub fn join(&mut self, container: Ipv4Addr, family: u64) {
        self.family_of.insert(container, family);
    }

    /// Forgets a container address; call it after its connections are removed.
    pub fn leave(&mut self, container: Ipv4Addr) {
        if let Some(f) = self.family_of.remove(&container) {
            if self.family_count(f) == 0 && !self.family_of.values().any(|&g| g == f) {
                self.per_family.remove(&f);
            }
        }
    }

    /// The family a connection counts for: its opener's, if a container opened it, or else the
    /// container it was opened to.
    fn family(&self, original: &Tuple, reply: &Tuple) -> Option<u64> {
        self.family_of
            .get(original.src.ip())
            .or_else(|| self.family_of.get(reply.src.ip()))
            .copied()
    }

    fn family_count(&self, family: u64) -> u32 {
        self.per_family.get(&family).copied().unwrap_or(0)
    }

    /// Live connections of `family`.
    pub fn family_connections(&self, family: u64) -> u32 {
        self.family_count(family)
    }

    fn source_bucket(&self, source: Ipv4Addr) -> usize {
        self.source_hash.hash_one(source.to_bits()) as usize % SOURCE_BUCKETS
    }

    fn make_room(&mut self, now: Instant) -> Result<(), DropReason> {
        self.expire(now);
        if self.len < self.max {
            return Ok(());
        }
        let oldest = EVICTABLE
            .iter()
            .map(|&class| self.lists[class as usize].head)
            .filter(|&id| id != NONE)
            .min_by_key(|&id| self.get(id).queued)
            .ok_or(DropReason::TableFull)?;
        self.remove(oldest);
        self.evicted += 1;
        Ok(())
    }

    /// Stops tracking connection `id`. Out of line: on the per-packet path it only runs for a
    /// connection found idle, and inlined there it costs every packet a few instructions.
    #[cold]
    #[inline(never)]
    pub fn remove(&mut self, id: u32) {
        let c = self.get(id);
        if !c.live {
            return;
        }
        let (o, r) = (c.original, c.reply);
        self.index_remove(id << 1);
        self.index_remove(id << 1 | 1);
        let source = self.source_bucket(*o.src.ip());
        self.per_source[source] -= 1;
        if let Some(f) = self.family(&o, &r) {
            if let Some(n) = self.per_family.get_mut(&f) {
                *n = n.saturating_sub(1);
            }
        }
        self.unlink(id);
        let free = self.free;
        let slot = self.slot(id);
        slot.live = false;
        slot.next = free;
        self.free = id;
        self.len -= 1;
    }

    /// The connections tracked now (some may have timed out and wait for [`Table::expire`]).
    pub fn live(&self) -> impl Iterator<Item = &Conn> + '_ {
        (0..self.slots).map(|i| self.get(i)).filter(|c| c.live)
    }

    /// Removes every connection for which `doomed` says so; returns how many.
    pub fn remove_where(&mut self, mut doomed: impl FnMut(&Conn) -> bool) -> usize {
        let ids: Vec<u32> = (0..self.slots)
            .filter(|&i| {
                let c = self.get(i);
                c.live && doomed(c)
            })
            .collect();
        for &id in &ids {
            self.remove(id);
        }
        self.removed += ids.len() as u64;
        ids.len()
    }

    /// Removes connections idle past their timeout; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let now = secs(now);
        let mut n = 0;
        for class in 0..CLASSES {
            let timeout = self.timeouts[class];
            loop {
                let id = self.lists[class].head;
                if id == NONE {
                    break;
                }
                let c = self.get(id);
                if now.saturating_sub(c.queued) <= timeout {
                    break;
                }
                if now.saturating_sub(c.last_seen) > timeout {
                    self.remove(id);
                    n += 1;
                } else {
                    // Refreshed since it was queued: look again one timeout after its last
                    // packet (or after the back of the list, which keeps the list in order).
                    let last_seen = c.last_seen;
                    self.unlink(id);
                    let back = self.back_queued(class);
                    self.push_back(id, last_seen.max(back));
                }
            }
        }
        self.expired += n as u64;
        n
    }

    fn back_queued(&self, class: usize) -> u32 {
        match self.lists[class].tail {
            NONE => 0,
            t => self.get(t).queued,
        }
    }

    /// When [`Table::expire`] next has work to do.
    pub fn poll_at(&self) -> Option<Instant> {
        (0..CLASSES)
            .filter_map(|class| {
                let head = self.lists[class].head;
                (head != NONE).then(|| {
                    let due =
                        u64::from(self.get(head).queued) + u64::from(self.timeouts[class]) + 1;
                    Instant::from_secs(due)
                })
            })
            .min()
    }

    fn push_back(&mut self, id: u32, queued: u32) {
        let class = self.get(id).class as usize;
        let tail = self.lists[class].tail;
        let c = self.slot(id);
        c.prev = tail;
        c.next = NONE;
        c.queued = queued;
        if tail == NONE {
            self.lists[class].head = id;
        } else {
            self.slot(tail).next = id;
        }
        self.lists[class].tail = id;
    }

    fn unlink(&mut self, id: u32) {
        let c = self.get(id);
        let (prev, next, class) = (c.prev, c.next, c.class as usize);
        if prev == NONE {
            self.lists[class].head = next;
        } else {
            self.slot(prev).next = next;
        }
        if next == NONE {
            self.lists[class].tail = prev;
        } else {
            self.slot(next).prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::SocketAddrV4;

    use core::net::Ipv4Addr;
    use proptest::prelude::*;

    #[test]
    fn a_connection_is_56_bytes() {
        assert_eq!(core::mem::size_of::<Conn>(), 56);
    }

    fn tuple(n: u8) -> Tuple {
        Tuple {
            src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, n % 4), 1000 + u16::from(n % 3)),
            dst: SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 1), 80),
        }
    }

    proptest! {
        /// The recent-lookup cache is never stale: whatever was inserted, removed and reused
        /// before, a cache hit finds exactly what the index holds.
        #[test]
        fn recent_lookups_agree_with_the_index(
            ops in proptest::collection::vec((0u8..3, 0u8..12, any::<bool>()), 1..200),
        ) {
            let mut t = Table::new(8, 8, 8, &Timeouts::default(), 1);
            let now = Instant::from_secs(1);
            for (op, n, udp) in ops {
                let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
                let (original, reply) = (tuple(n), tuple(n).reverse());
                match (op, t.find(protocol, original)) {
                    (0, None) => {
                        let _ = t.insert(protocol, original, reply, now);
                    }
                    (1, Some((id, _))) => t.remove(id),
                    _ => {}
                }
                for probe in [original, reply] {
                    let indexed = t.find(protocol, probe).map(|(id, dir)| (id, t.get(id).translated(dir)));
                    // The cache may not know the tuple; what it names is what the index holds.
                    let cached = t.track_recent(protocol, probe, None, now).map(|(id, to, _)| (id, to));
                    prop_assert!(cached.is_none() || cached == indexed);
                    let tracked = t.track(protocol, probe, None, now).map(|(id, to, _)| (id, to));
                    prop_assert_eq!(tracked, indexed);
                    // A lookup through the index teaches the cache.
                    let cached = t.track_recent(protocol, probe, None, now).map(|(id, to, _)| (id, to));
                    prop_assert_eq!(cached, indexed);
                    // What a lookup ahead leaves there is never wrong either.
                    t.prefetch([(protocol, probe), (protocol, tuple(n.wrapping_add(1)))]);
                    let cached = t.track_recent(protocol, probe, None, now).map(|(id, to, _)| (id, to));
                    prop_assert!(cached.is_none() || cached == indexed);
                }
            }
        }
    }

    /// A flow looked up ahead is found in the recent-lookup cache: nearly always. A tag that
    /// matches another entry of the bucket first (7 bits, about 8 entries a bucket here: some
    /// 3%), or an entry stored past its full home bucket, sends the packet to the index instead.
    #[test]
    fn a_flow_looked_up_ahead_is_in_the_recent_cache() {
        let mut t = Table::new(1000, 1000, 1000, &Timeouts::default(), 7);
        let now = Instant::from_secs(1);
        // Peers by address, as the recent-lookup cache's cheap mix tells them apart (ports
        // counting up with the address would cancel out in it).
        let flow = |i: u16| Tuple {
            src: SocketAddrV4::new(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8), 5000),
            dst: SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 1), 80),
        };
        for i in 0..1000 {
            t.insert(Protocol::Udp, flow(i), flow(i).reverse(), now)
                .expect("room");
        }
        let found = (0..1000)
            .filter(|&i| {
                t.prefetch([(Protocol::Udp, flow(i).reverse())]);
                t.track_recent(Protocol::Udp, flow(i).reverse(), None, now)
                    .is_some()
            })
            .count();
        assert!(found >= 950, "{found} of 1000");
    }
}
