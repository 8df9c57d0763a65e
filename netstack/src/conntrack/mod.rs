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

mod conn;
mod expiry;
mod lookup;
mod quota;

use conn::*;
pub use conn::{Conn, Dir};
pub use expiry::Timeouts;
use lookup::*;

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
            if (id as usize).is_multiple_of(CHUNK) {
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
