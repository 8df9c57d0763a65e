//! The constant-time parts of unwrapping a key: the PKCS#1 v1.5 (type 2) padding check and the
//! masks that choose between the unwrapped and the substitute key without a branch.

/// Checks an encoded message `0x00 0x02 PS 0x00 M` (PS at least 8 non-zero bytes) in time that
/// depends on its length only; returns the mask of its validity and where M starts.
pub(super) fn pkcs1_type2(em: &[u8]) -> (u8, usize) {
    let mut valid =
        ct_eq(em.first().copied().unwrap_or(1), 0) & ct_eq(em.get(1).copied().unwrap_or(0), 2);
    let mut looking = 0xffu8;
    let mut zero_at = 0usize;
    for (i, &b) in em.iter().enumerate().skip(2) {
        let here = looking & ct_eq(b, 0);
        zero_at |= i & usize::from(here & 1).wrapping_neg();
        looking &= !here;
    }
    // Found, and at least 8 bytes of padding before it.
    valid &= !looking & ct_mask(zero_at >= 10);
    (valid, zero_at + 1)
}

/// 0xff if `a == b`, else 0, without a branch on the values.
fn ct_eq(a: u8, b: u8) -> u8 {
    let x = u16::from(a ^ b);
    // x - 1 underflows (top bits set) only for x == 0.
    (x.wrapping_sub(1) >> 8) as u8
}

/// 0xff for true, 0 for false.
pub(super) fn ct_mask(b: bool) -> u8 {
    u8::from(b).wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_checked_exactly() {
        let mut em = vec![0u8; 256];
        em[1] = 2;
        em[2..223].fill(7);
        em[224..].fill(9);
        // M of 32 bytes after the zero at 223.
        assert_eq!(pkcs1_type2(&em), (0xff, 224));
        let mut short_ps = em.clone();
        short_ps[9] = 0;
        assert_eq!(pkcs1_type2(&short_ps).0, 0, "7 bytes of padding");
        let mut ps8 = em.clone();
        ps8[10] = 0;
        assert_eq!(pkcs1_type2(&ps8), (0xff, 11), "8 bytes of padding");
        let mut no_zero = em.clone();
        no_zero[223] = 1;
        assert_eq!(pkcs1_type2(&no_zero).0, 0);
        let mut bad_type = em.clone();
        bad_type[1] = 1;
        assert_eq!(pkcs1_type2(&bad_type).0, 0);
        let mut bad_lead = em;
        bad_lead[0] = 1;
        assert_eq!(pkcs1_type2(&bad_lead).0, 0);
    }
}
