//! Page hashes: xxh3-128 with a per-history seed.

use std::fmt;

use xxhash_rust::xxh3::xxh3_128_with_seed;

/// The identity of a page: the xxh3-128 hash of its uncompressed bytes, seeded per history.
///
/// [`PageHash::ZERO`] is reserved for the all-zero page, which is never stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PageHash(pub [u8; 16]);

impl PageHash {
    /// The reserved hash of the all-zero page (and of a slot that holds no page).
    pub const ZERO: PageHash = PageHash([0; 16]);

    /// True for the reserved all-zero hash.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// The hash as a little-endian `u128`.
    pub fn to_u128(self) -> u128 {
        u128::from_le_bytes(self.0)
    }

    /// A hash from a little-endian `u128`.
    pub fn from_u128(v: u128) -> Self {
        PageHash(v.to_le_bytes())
    }

    /// The bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lower-case hex, 32 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.0.iter().rev() {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The first 8 bytes of the hash as a number: handy for short display.
    pub fn short(&self) -> u64 {
        (self.to_u128() >> 64) as u64
    }
}

impl fmt::Debug for PageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageHash({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for PageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A seeded xxh3-128 hasher for pages and other objects of one history.
///
/// The seed is random per history unless chosen: two peers that compare state hashes
/// must agree on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hasher {
    seed: u64,
    zero_page: u128,
    page_size: usize,
}

impl Hasher {
    /// A hasher for pages of `page_size` bytes with the given seed.
    pub fn new(seed: u64, page_size: crate::PageSize) -> Self {
        let zeros = vec![0u8; page_size.bytes()];
        Hasher {
            seed,
            zero_page: xxh3_128_with_seed(&zeros, seed),
            page_size: page_size.bytes(),
        }
    }

    /// A fresh random seed from the operating system.
    pub fn random_seed() -> u64 {
        let mut b = [0u8; 8];
        // A failing OS random source leaves a fixed seed: hashes stay correct, only less
        // resistant to chosen collisions, so this is not an error for the caller.
        if getrandom::fill(&mut b).is_err() {
            return 0x5eed_5eed_5eed_5eed;
        }
        u64::from_le_bytes(b)
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Hash one page. The all-zero page hashes to [`PageHash::ZERO`].
    ///
    /// One pass over the bytes: the zero page is recognised by its precomputed hash.
    #[inline]
    pub fn page(&self, bytes: &[u8]) -> PageHash {
        let h = xxh3_128_with_seed(bytes, self.seed);
        if bytes.len() == self.page_size && h == self.zero_page {
            PageHash::ZERO
        } else {
            PageHash::from_u128(h)
        }
    }

    /// Hash arbitrary bytes (input blobs, tree nodes) with the history's seed.
    #[inline]
    pub fn bytes(&self, bytes: &[u8]) -> PageHash {
        PageHash::from_u128(xxh3_128_with_seed(bytes, self.seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PageSize;

    #[test]
    fn zero_page_has_reserved_hash() {
        let ps = PageSize::new(4096).unwrap();
        let h = Hasher::new(7, ps);
        assert_eq!(h.page(&[0u8; 4096]), PageHash::ZERO);
        let mut p = [0u8; 4096];
        p[100] = 1;
        assert_ne!(h.page(&p), PageHash::ZERO);
    }

    #[test]
    fn seed_changes_hash() {
        let ps = PageSize::new(1024).unwrap();
        let p = [3u8; 1024];
        assert_ne!(Hasher::new(1, ps).page(&p), Hasher::new(2, ps).page(&p));
        assert_eq!(Hasher::new(1, ps).page(&p), Hasher::new(1, ps).page(&p));
    }

    #[test]
    fn hex_round_trip_shape() {
        let h = PageHash::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(h.to_hex(), "0123456789abcdef0011223344556677");
        assert_eq!(PageHash::from_u128(h.to_u128()), h);
    }
}
