//! Page hashes: xxh3-128 with a per-history seed.

use std::fmt;

use xxhash_rust::xxh3::xxh3_128_with_seed;

/// A hash parsed from text was not 32 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a hash is 32 hexadecimal digits; got {found:?}")]
pub struct ParseHashError {
    /// The text that did not parse (cut to 64 characters).
    pub found: String,
}

/// Defines a 128-bit hash type: full-hex `Display`/`Debug`/`FromStr`, `u128` and byte
/// conversions. Each kind of hash is its own type, so a page hash cannot be passed
/// where a state hash is expected.
macro_rules! hash128 {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// The hash as a little-endian `u128`.
            pub fn to_u128(self) -> u128 {
                u128::from_le_bytes(self.0)
            }

            /// A hash from a little-endian `u128`.
            pub fn from_u128(v: u128) -> Self {
                $name(v.to_le_bytes())
            }

            /// The bytes of the hash.
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// Lower-case hex, 32 characters, most significant digit first (the
            /// form `Display` prints and `FromStr` reads).
            pub fn to_hex(&self) -> String {
                format!("{:032x}", self.to_u128())
            }
        }

        impl From<[u8; 16]> for $name {
            fn from(bytes: [u8; 16]) -> Self {
                $name(bytes)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:032x})"), self.to_u128())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.to_u128())
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseHashError;

            /// Reads the 32 hex digits `Display` prints (either case).
            fn from_str(s: &str) -> Result<Self, ParseHashError> {
                parse_hex128(s).map(Self::from_u128)
            }
        }
    };
}

fn parse_hex128(s: &str) -> Result<u128, ParseHashError> {
    let bad = || ParseHashError {
        found: s.chars().take(64).collect(),
    };
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u128::from_str_radix(s, 16).map_err(|_| bad())
}

hash128!(
    /// The identity of a page: the xxh3-128 hash of its uncompressed bytes, seeded per history.
    ///
    /// [`PageHash::ZERO`] is reserved for the all-zero page, which is never stored.
    PageHash
);

hash128!(
    /// The hash of a whole guest state (memory length, the Merkle root of the pages,
    /// every global) under the history's seed: what peers compare.
    StateHash
);

hash128!(
    /// The hash of an input blob recorded with an iteration, under the history's seed.
    InputHash
);

impl PageHash {
    /// The reserved hash of the all-zero page (and of a slot that holds no page).
    pub const ZERO: PageHash = PageHash([0; 16]);

    /// True for the reserved all-zero hash.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
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

    /// Hash arbitrary bytes (tree nodes) with the history's seed.
    #[inline]
    pub fn bytes(&self, bytes: &[u8]) -> PageHash {
        PageHash::from_u128(xxh3_128_with_seed(bytes, self.seed))
    }

    /// Hash an input blob with the history's seed.
    #[inline]
    pub fn input(&self, bytes: &[u8]) -> InputHash {
        InputHash::from_u128(xxh3_128_with_seed(bytes, self.seed))
    }

    /// Hash the canonical encoding of a guest state with the history's seed.
    #[inline]
    pub fn state(&self, encoded: &[u8]) -> StateHash {
        StateHash::from_u128(xxh3_128_with_seed(encoded, self.seed))
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

    #[test]
    fn display_debug_and_from_str_carry_all_32_digits() {
        let h = StateHash::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(h.to_string(), "0123456789abcdef0011223344556677");
        assert_eq!(format!("{h:?}"), "StateHash(0123456789abcdef0011223344556677)");
        assert_eq!(h.to_string().parse::<StateHash>(), Ok(h));
        assert_eq!("0123456789ABCDEF0011223344556677".parse::<StateHash>(), Ok(h));
        let small = InputHash::from_u128(5);
        assert_eq!(small.to_string(), "00000000000000000000000000000005");
        assert_eq!(small.to_string().parse::<InputHash>(), Ok(small));
    }

    #[test]
    fn from_str_refuses_what_is_not_32_hex_digits() {
        for bad in [
            "",
            "0123",
            "0123456789abcdef0011223344556677ff",
            "g123456789abcdef0011223344556677",
            "+123456789abcdef0011223344556677",
            "é12345678abcdef0011223344556677",
        ] {
            let err = bad.parse::<StateHash>().expect_err(bad);
            assert_eq!(err.found, bad);
        }
    }
}
