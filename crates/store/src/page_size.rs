//! The page size of a history.

use crate::StoreError;

/// A page size: a power of two from [`PageSize::MIN`] to [`PageSize::MAX`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageSize(u32);

impl PageSize {
    /// Smallest page size: 1 KiB.
    pub const MIN: u32 = 1024;
    /// Largest page size: 64 KiB (one wasm page).
    pub const MAX: u32 = 65536;
    /// The default, 4 KiB: the OS page size, so kernel dirty hints map one to one
    /// (see `docs/benchmarks.md` for the measurement behind it).
    pub const DEFAULT: PageSize = PageSize(4096);

    /// Validate a page size.
    pub fn new(bytes: u64) -> Result<Self, StoreError> {
        if bytes.is_power_of_two() && (Self::MIN as u64..=Self::MAX as u64).contains(&bytes) {
            Ok(PageSize(bytes as u32))
        } else {
            Err(StoreError::InvalidPageSize { bytes })
        }
    }

    /// The size in bytes.
    #[inline]
    pub fn bytes(self) -> usize {
        self.0 as usize
    }

    /// log2 of the size.
    #[inline]
    pub fn shift(self) -> u32 {
        self.0.trailing_zeros()
    }

    /// The number of pages in `len` bytes of memory, or an error when `len` is not a
    /// multiple of the page size.
    pub fn pages_in(self, len: u64) -> Result<usize, StoreError> {
        if !len.is_multiple_of(self.0 as u64) {
            return Err(StoreError::MemoryNotPageAligned {
                len,
                page_size: self.0,
            });
        }
        usize::try_from(len >> self.shift()).map_err(|_| StoreError::MemoryNotPageAligned {
            len,
            page_size: self.0,
        })
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_powers_of_two_in_range() {
        for s in [1024u64, 2048, 4096, 8192, 16384, 32768, 65536] {
            assert_eq!(PageSize::new(s).unwrap().bytes() as u64, s);
        }
    }

    #[test]
    fn rejects_others() {
        for s in [0u64, 1, 512, 3000, 4095, 131072, u64::MAX] {
            assert!(matches!(
                PageSize::new(s),
                Err(StoreError::InvalidPageSize { .. })
            ));
        }
    }

    #[test]
    fn memory_must_divide() {
        let p = PageSize::new(4096).unwrap();
        assert_eq!(p.pages_in(8192).unwrap(), 2);
        assert!(matches!(
            p.pages_in(8193),
            Err(StoreError::MemoryNotPageAligned { .. })
        ));
    }
}
