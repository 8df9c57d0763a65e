//! The connection table's index: from a key's hash to the index values (`id << 1 | reply`)
//! whose keys may match, with the key itself kept only in the connection.
//!
//! Open addressing over buckets of one cache line: fifteen entries and a count of the entries
//! stored beyond the bucket because it was full when they came (as folly's F14 does). A lookup
//! reads its home bucket and goes on to the next only while that count is not zero, so a
//! removed entry leaves no tombstone. Each entry carries seven bits of its key's hash above
//! the value, so a lookup reads a connection only for an entry whose bits match: one bucket
//! and one connection per packet, and the bucket's place follows from the hash alone, so a
//! batch of packets can fetch theirs before any of them needs it ([`Index::warm`]).

/// Entries per bucket: fifteen values and the overflow count fill 64 bytes.
const SLOTS: usize = 15;
/// Bits of an entry that hold the index value; the bits above hold the tag.
const VALUE_BITS: u32 = 25;
const VALUE: u32 = (1 << VALUE_BITS) - 1;
/// An empty slot: tag 127 and the value of a connection slot the table never has.
const EMPTY: u32 = u32::MAX;
/// The most connections an index can name: every index value but [`EMPTY`]'s fits below the
/// tag.
pub const MAX_CONNECTIONS: usize = (VALUE as usize >> 1) - 1;

#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Bucket {
    slots: [u32; SLOTS],
    /// Entries stored in later buckets whose home bucket is this one or an earlier one that
    /// passed this one full.
    passed: u32,
}

impl Bucket {
    /// The slots whose tag is `tag`, as bits: compared all at once, without a branch per slot
    /// (an empty slot matches tag 127).
    #[inline]
    fn matches(&self, tag: u32) -> u32 {
        self.slots
            .iter()
            .enumerate()
            .fold(0, |m, (i, &e)| m | u32::from(e & !VALUE == tag) << i)
    }
}

const FREE: Bucket = Bucket {
    slots: [EMPTY; SLOTS],
    passed: 0,
};

#[inline]
fn tag(hash: u64) -> u32 {
    ((hash >> 57) as u32) << VALUE_BITS
}

#[derive(Debug, Default)]
pub struct Index {
    buckets: Vec<Bucket>,
    len: usize,
}

impl Index {
    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & (self.buckets.len() - 1)
    }

    /// The index value with `hash` for which `eq` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let tag = tag(hash);
        let mut b = self.home(hash);
        // Bounded, though the load factor keeps a bucket free: the counts can never send a
        // lookup round for ever, whatever they hold.
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            let mut matches = bucket.matches(tag);
            while matches != 0 {
                let e = bucket.slots[matches.trailing_zeros() as usize];
                if e != EMPTY && eq(e & VALUE) {
                    return Some(e & VALUE);
                }
                matches &= matches - 1;
            }
            if bucket.passed == 0 {
                return None;
            }
            b = (b + 1) & (self.buckets.len() - 1);
        }
        None
    }

    /// The home bucket of `hash`, if there are buckets.
    #[inline]
    fn home_bucket(&self, hash: u64) -> Option<&Bucket> {
        self.buckets
            .get(hash as usize & self.buckets.len().wrapping_sub(1))
    }

    /// Reads the home bucket of `hash`, so that it is in the cache when the lookup comes. The
    /// word it returns is only for the caller to keep the read from being optimised away.
    #[inline]
    pub fn warm(&self, hash: u64) -> u32 {
        self.home_bucket(hash).map_or(0, |b| b.passed)
    }

    /// The first value of the home bucket of `hash` whose tag matches: the connection a lookup
    /// will most likely read.
    #[inline]
    pub fn first_match(&self, hash: u64) -> Option<u32> {
        let bucket = self.home_bucket(hash)?;
        let e = *bucket
            .slots
            .get(bucket.matches(tag(hash)).trailing_zeros() as usize)?;
        (e != EMPTY).then_some(e & VALUE)
    }

    /// Adds `value` (not present) with `hash`; `rehash` gives the hash of any value already
    /// in, for growing.
    pub fn insert(&mut self, hash: u64, value: u32, rehash: impl Fn(u32) -> u64) {
        debug_assert!(value <= VALUE && value >> 1 < MAX_CONNECTIONS as u32);
        // At most 7/8 full: a bucket is always free and probes stay short.
        if (self.len + 1) * 8 > self.buckets.len() * SLOTS * 7 {
            self.grow(&rehash);
        }
        self.place(tag(hash) | value, self.home(hash));
        self.len += 1;
    }

    /// Stores `entry` in the first bucket from `home` with a free slot, counting it in every
    /// full bucket it passes.
    fn place(&mut self, entry: u32, home: usize) {
        let mask = self.buckets.len() - 1;
        let mut b = home;
        loop {
            let bucket = &mut self.buckets[b];
            if let Some(slot) = bucket.slots.iter_mut().find(|e| **e == EMPTY) {
                *slot = entry;
                return;
            }
            bucket.passed += 1;
            b = (b + 1) & mask;
        }
    }

    /// Removes `value`, whose hash is `hash`, if present.
    pub fn remove(&mut self, hash: u64, value: u32) {
        if self.buckets.is_empty() {
            return;
        }
        let (entry, home, mask) = (tag(hash) | value, self.home(hash), self.buckets.len() - 1);
        let mut b = home;
        for steps in 0..self.buckets.len() {
            if let Some(slot) = self.buckets[b].slots.iter_mut().find(|e| **e == entry) {
                *slot = EMPTY;
                self.len -= 1;
                // The buckets it passed on its way in no longer lead to it.
                for s in 0..steps {
                    self.buckets[(home + s) & mask].passed -= 1;
                }
                return;
            }
            if self.buckets[b].passed == 0 {
                return;
            }
            b = (b + 1) & mask;
        }
    }

    /// Doubles the buckets and places every entry again by its hash.
    #[cold]
    fn grow(&mut self, rehash: &impl Fn(u32) -> u64) {
        let count = (self.buckets.len() * 2).max(1);
        let old = std::mem::replace(&mut self.buckets, vec![FREE; count]);
        for e in old.iter().flat_map(|b| b.slots).filter(|&e| e != EMPTY) {
            let hash = rehash(e & VALUE);
            self.place(e, self.home(hash));
        }
    }

    /// Heap bytes held.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<Bucket>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(size_of::<Bucket>(), 64);
        assert_eq!(align_of::<Bucket>(), 64);
    }

    #[test]
    fn an_entry_costs_at_most_ten_bytes() {
        let mut index = Index::default();
        let hash = |v: u32| u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for v in 0..20_000 {
            index.insert(hash(v), v, hash);
        }
        // 64 bytes for 15 entries, at least 7/16 full after doubling: 9.75 bytes each.
        assert!(index.bytes() <= 20_000 * 10, "{}", index.bytes());
    }

    proptest! {
        /// Whatever is added and removed, a lookup finds exactly what is present, also when
        /// many values share a bucket (hashes from a few values only) and buckets overflow.
        #[test]
        fn lookups_agree_with_a_map(
            ops in proptest::collection::vec((any::<bool>(), 0u32..400), 1..1500),
            spread in prop_oneof![Just(3u64), Just(64), Just(u64::MAX)],
        ) {
            // The hash of a value: its home bucket from `spread` values only, its tag from
            // all of it.
            let hash = move |v: u32| {
                let h = u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                (h & !(u64::MAX >> 7)) | (u64::from(v) % spread.max(1))
            };
            let mut index = Index::default();
            let mut model = BTreeMap::new();
            for (add, v) in ops {
                if add && !model.contains_key(&v) {
                    index.insert(hash(v), v, hash);
                    model.insert(v, ());
                } else if !add {
                    index.remove(hash(v), v);
                    model.remove(&v);
                }
                prop_assert_eq!(index.len, model.len());
            }
            for v in 0..400 {
                prop_assert_eq!(index.find(hash(v), |e| e == v), model.get(&v).map(|_| v));
            }
            // Every count is what the entries stored beyond their homes make it.
            if index.buckets.is_empty() {
                return Ok(());
            }
            let mask = index.buckets.len() - 1;
            let mut expected = vec![0u32; index.buckets.len()];
            for (b, bucket) in index.buckets.iter().enumerate() {
                for &e in bucket.slots.iter().filter(|&&e| e != EMPTY) {
                    let home = index.home(hash(e & VALUE));
                    let mut p = home;
                    while p != b {
                        expected[p] += 1;
                        p = (p + 1) & mask;
                    }
                }
            }
            let counts: Vec<u32> = index.buckets.iter().map(|b| b.passed).collect();
            prop_assert_eq!(counts, expected);
        }
    }
}
