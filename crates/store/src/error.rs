use crate::{PageHash, RebuildError};

/// Errors of the page store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The page size is not a power of two from 1 KiB to 64 KiB.
    #[error("page size {bytes} is not a power of two from 1 KiB to 64 KiB")]
    InvalidPageSize {
        /// The rejected size.
        bytes: u64,
    },
    /// A memory length that is not a whole number of pages.
    #[error("memory length {len} is not a multiple of the page size {page_size}")]
    MemoryNotPageAligned {
        /// The memory length in bytes.
        len: u64,
        /// The page size in bytes.
        page_size: u32,
    },
    /// A buffer whose length is not the page size.
    #[error("page buffer is {found} bytes, the page size is {expected}")]
    PageLength {
        /// The page size.
        expected: usize,
        /// The buffer length given.
        found: usize,
    },
    /// A stored object that is missing or does not rebuild (a hash naming no object, a
    /// corrupt object, a delta chain past the bound): the errors of [`crate::rebuild`],
    /// which the store meets on its own paths too.
    #[error(transparent)]
    Object(#[from] RebuildError),
    /// A reference released more often than it was taken.
    #[error("object {hash} released more often than it was referenced")]
    RefUnderflow {
        /// The object.
        hash: PageHash,
    },
    /// An object inserted from outside (an archive) that breaks the store's rules.
    #[error("object {hash} cannot be inserted: {reason}")]
    InvalidObject {
        /// The object.
        hash: PageHash,
        /// Why.
        reason: &'static str,
    },
}

/// Errors decoding stored page bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// A raw page of the wrong length.
    #[error("raw page is {found} bytes, expected {expected}")]
    RawLength {
        /// The page size.
        expected: usize,
        /// The stored length.
        found: usize,
    },
    /// An lz4 block that decompressed to the wrong length.
    #[error("lz4 page decompressed to {found} bytes, expected {expected}")]
    Lz4Length {
        /// The page size.
        expected: usize,
        /// The decompressed length.
        found: usize,
    },
    /// An lz4 block that does not decompress.
    #[error("lz4 block does not decompress: {0}")]
    Lz4(String),
    /// A delta that ends inside a run.
    #[error("delta is truncated")]
    DeltaTruncated,
    /// Delta runs out of order or overlapping.
    #[error("delta run at offset {offset} overlaps or precedes the previous run")]
    DeltaRunOrder {
        /// The run's offset.
        offset: usize,
    },
    /// A delta run that reaches past the page.
    #[error("delta run {offset}+{len} reaches past the {page}-byte page")]
    DeltaRunOutOfPage {
        /// The run's offset.
        offset: usize,
        /// The run's length.
        len: usize,
        /// The page size.
        page: usize,
    },
}
