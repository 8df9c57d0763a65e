//! Internet checksum arithmetic (RFC 1071) and incremental updates (RFC 1624).
//!
//! Rewrites never re-sum a payload: each changed 16-bit word contributes `!old + new` to a
//! [`Delta`], and the delta is applied to every checksum that covers the word. Two kinds of
//! checksum field exist on the data path:
//!
//! - a *complete* checksum holds `!sum` (RFC 1624 eq. 3: `HC' = !(!HC + !m + m')`);
//! - a *partial* checksum (virtio-net `NEEDS_CSUM`, what the kernel hands a TUN with offload)
//!   holds the plain, non-complemented sum of the pseudo-header only; whoever finishes it adds
//!   the L4 header and payload later. It moves the other way: `S' = S + !m + m'`, and only for
//!   pseudo-header words (the ports are summed later from the packet itself).

use core::net::Ipv4Addr;

/// Ones' complement sum of `data` as big-endian 16-bit words (an odd last byte is padded with
/// zero), folded.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // The sum does not depend on byte order except for a swap of the result (RFC 1071 2.B), so
    // the words are summed as the machine loads them and only the folded sum is swapped. 32-bit
    // words summed in 64 bits fold to the same 16-bit sum as 16-bit words.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut rest = words.remainder().chunks_exact(2);
    for c in &mut rest {
        acc += u64::from(u16::from_ne_bytes([c[0], c[1]]));
    }
    if let [last] = rest.remainder() {
        acc += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    u32::from(u16::from_be(fold(acc as u32)))
}

/// Folds a 32-bit accumulator into 16 bits with end-around carry. Nonzero input never folds
/// to zero, which keeps results canonical (see the tests). Two steps always suffice, so there is
/// no loop to mispredict on the per-packet path.
#[inline]
pub fn fold(acc: u32) -> u16 {
    let s = (acc & 0xffff) + (acc >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Sum of the TCP/UDP pseudo-header.
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(protocol)
        + u32::from(l4_len)
}

/// The complete checksum of `data` plus an extra (pseudo-header) sum.
pub fn complete(extra: u32, data: &[u8]) -> u16 {
    !fold(fold(extra) as u32 + fold(sum(data)) as u32)
}

/// Accumulated change of a set of 16-bit words, unfolded: a u32 holds the change of tens of
/// thousands of words, far more than any rewrite makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta(u32);

impl Delta {
    pub const ZERO: Delta = Delta(0);

    /// Records that the word `old` became `new`. Folding waits until the delta is applied: a
    /// u32 holds the unfolded sum of thousands of words.
    #[inline]
    pub fn word(&mut self, old: u16, new: u16) {
        if old != new {
            self.0 += u32::from(!old) + u32::from(new);
        }
    }

    /// Records that the two words `old` (big-endian, as read from the packet) became `new`.
    #[inline]
    pub fn word32(&mut self, old: u32, new: u32) {
        if old != new {
            let o = !old;
            self.0 += (o >> 16) + (o & 0xffff) + (new >> 16) + (new & 0xffff);
        }
    }

    /// Adds another delta to this one.
    #[inline]
    pub fn add(&mut self, other: Delta) {
        self.0 += other.0;
    }

    /// The delta folded to 16 bits, to keep it compactly; zero only if the delta is.
    #[inline]
    pub fn folded(self) -> u16 {
        fold(self.0)
    }

    #[inline]
    pub fn from_folded(folded: u16) -> Delta {
        Delta(u32::from(folded))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Applies the delta to a complete checksum field.
    #[inline]
    pub fn apply_complete(self, checksum: u16) -> u16 {
        !fold(u32::from(!checksum) + self.0)
    }

    /// Applies the delta to a partial (pseudo-header only, not complemented) checksum field.
    #[inline]
    pub fn apply_partial(self, partial: u16) -> u16 {
        fold(u32::from(partial) + self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn word(b: &[u8], i: usize) -> u16 {
        u16::from_be_bytes([b[i], b[i + 1]])
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2 (folded).
        assert_eq!(
            fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            0xddf2
        );
    }

    proptest! {
        /// The word-at-a-time sum equals RFC 1071's definition: big-endian 16-bit words, an odd
        /// last byte padded with zero.
        #[test]
        fn sum_matches_the_definition(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let words = data.chunks(2).map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
            let naive: u32 = words.map(u32::from).sum();
            prop_assert_eq!(sum(&data), u32::from(fold(naive)));
        }

        /// Incremental update of one word equals full recomputation, bit for bit.
        #[test]
        fn incremental_equals_full(mut data in proptest::collection::vec(any::<u8>(), 2..64),
                                   idx in any::<prop::sample::Index>(), new in any::<u16>()) {
            // A nonzero word keeps the sum nonzero, as every IP/TCP/UDP header has one.
            data[0] |= 0x40;
            let words = data.len() / 2;
            let i = 2 * idx.index(words);
            prop_assume!(i != 0);
            let before = complete(0, &data);
            let old = word(&data, i);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let mut d = Delta::default();
            d.word(old, new);
            prop_assert_eq!(d.apply_complete(before), complete(0, &data));
        }

        /// The partial sum moves with the pseudo-header as the kernel would recompute it.
        #[test]
        fn partial_tracks_pseudo_header(a in any::<[u8; 4]>(), b in any::<[u8; 4]>(),
                                        c in any::<[u8; 4]>(), len in 8u16..) {
            let (a, b, c) = (Ipv4Addr::from(a), Ipv4Addr::from(b), Ipv4Addr::from(c));
            let before = fold(pseudo_header(a, b, 17, len));
            let mut d = Delta::default();
            d.word32(a.to_bits(), c.to_bits());
            prop_assert_eq!(d.apply_partial(before), fold(pseudo_header(c, b, 17, len)));
        }
    }
}
