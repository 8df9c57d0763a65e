//! The shares of the table: by source bucket and by run family.

use super::*;

impl Table {
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
    pub(super) fn family(&self, original: &Tuple, reply: &Tuple) -> Option<u64> {
        self.family_of
            .get(original.src.ip())
            .or_else(|| self.family_of.get(reply.src.ip()))
            .copied()
    }

    pub(super) fn family_count(&self, family: u64) -> u32 {
        self.per_family.get(&family).copied().unwrap_or(0)
    }

    /// Live connections of `family`.
    pub fn family_connections(&self, family: u64) -> u32 {
        self.family_count(family)
    }

    pub(super) fn source_bucket(&self, source: Ipv4Addr) -> usize {
        self.source_hash.hash_one(source.to_bits()) as usize % SOURCE_BUCKETS
    }
}
