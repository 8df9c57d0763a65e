//! Finding a packet's connection: the recent-lookup cache a busy flow hits, the hash index
//! behind it, and lookups ahead in batches.

use super::*;

/// An index value: the connection's slot, and whether the key is its reply tuple.
#[inline]
pub(super) fn unpack(v: u32) -> (u32, Dir) {
    let dir = if v & 1 == 0 {
        Dir::Original
    } else {
        Dir::Reply
    };
    (v >> 1, dir)
}

/// The recent-lookup cache's slot for `key`, and the mix kept there to recognise it.
#[inline]
pub(super) fn recent_slot(key: &Key) -> (usize, u32) {
    let k = &key.0;
    let mix = (k[0] ^ k[1] ^ k[2]).wrapping_mul(0x9e37_79b1);
    ((mix >> (32 - RECENT.trailing_zeros())) as usize, mix)
}

/// The key an index value stands for: its connection's tuple in that direction.
#[inline]
pub(super) fn key_of(chunks: &[Vec<Conn>], v: u32) -> Key {
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

impl Table {
    /// The index value of `key`.
    #[inline]
    pub(super) fn lookup(&self, key: &Key) -> Option<u32> {
        let chunks = &self.chunks;
        self.index
            .find(self.index_hash.hash_one(key), |v| key_of(chunks, v) == *key)
    }

    /// Adds index value `v`, whose connection's slot already holds its tuples.
    pub(super) fn index_insert(&mut self, v: u32) {
        let (chunks, hasher) = (&self.chunks, &self.index_hash);
        let hash = hasher.hash_one(key_of(chunks, v));
        self.index
            .insert(hash, v, |e| hasher.hash_one(key_of(chunks, e)));
    }

    /// Removes index value `v` (its connection still holds its tuples).
    pub(super) fn index_remove(&mut self, v: u32) {
        let hash = self.index_hash.hash_one(key_of(&self.chunks, v));
        self.index.remove(hash, v);
    }

    #[inline]
    pub(super) fn find(&self, protocol: Protocol, tuple: Tuple) -> Option<(u32, Dir)> {
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
    pub(super) fn fetch(&mut self, todo: &mut [(u64, u32)]) {
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
}
