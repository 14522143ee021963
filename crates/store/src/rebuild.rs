//! One page rebuild for any source of stored objects: the in-memory [`PageStore`] and an
//! archive on disk both find objects by hash ([`FindObject`]), and [`rebuild`] decodes
//! a page through its delta chain the same way for both.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::{codec, CodecError, ObjectRef, PageHash, PageStore, StoreError};

/// A source of stored page objects, by hash.
pub trait FindObject {
    /// The source's error; a rebuild's own failures ([`RebuildError`]) convert into it.
    type Error: From<RebuildError>;

    /// The object stored under `hash`, `None` when the source does not hold it.
    fn find_object(&self, hash: PageHash) -> Result<Option<ObjectRef<'_>>, Self::Error>;
}

/// Why a page could not be rebuilt, whatever its source.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RebuildError {
    /// A hash on the chain names no stored object.
    #[error("no stored object has hash {hash}")]
    MissingObject {
        /// The hash looked up.
        hash: PageHash,
    },
    /// An object on the chain whose bytes do not decode.
    #[error("stored object {hash} is corrupt")]
    Corrupt {
        /// The object.
        hash: PageHash,
        /// What is wrong with its bytes.
        #[source]
        source: CodecError,
    },
    /// More deltas than the bound under the page (or a cycle in corrupt input).
    #[error("delta chain under {hash} is longer than {limit}")]
    ChainTooLong {
        /// The page whose chain was walked.
        hash: PageHash,
        /// The bound.
        limit: usize,
    },
}

impl From<RebuildError> for StoreError {
    fn from(e: RebuildError) -> Self {
        match e {
            RebuildError::MissingObject { hash } => StoreError::MissingObject { hash },
            RebuildError::Corrupt { hash, source } => StoreError::Corrupt { hash, source },
            RebuildError::ChainTooLong { hash, limit } => StoreError::ChainTooLong { hash, limit },
        }
    }
}

impl FindObject for PageStore {
    type Error = StoreError;

    fn find_object(&self, hash: PageHash) -> Result<Option<ObjectRef<'_>>, StoreError> {
        Ok(self.get(hash))
    }
}

/// Rebuild page `hash` into `out` (page-size bytes) from `source`: follow its deltas
/// down to a full page, at most `max_chain` of them, decode that page and apply the
/// deltas back up. The zero hash, wherever the chain reaches it, reads as zeros (it is
/// never stored). The bytes are not checked against `hash`: a caller reading foreign
/// data rehashes them.
pub fn rebuild<S: FindObject + ?Sized>(
    source: &S,
    hash: PageHash,
    out: &mut [u8],
    max_chain: usize,
) -> Result<(), S::Error> {
    let mut chain: Vec<(PageHash, &[u8])> = Vec::new();
    let mut cur = hash;
    loop {
        if cur.is_zero() {
            out.fill(0);
            break;
        }
        match source
            .find_object(cur)?
            .ok_or(RebuildError::MissingObject { hash: cur })?
        {
            ObjectRef::Full { encoding, bytes } => {
                codec::decode_full(encoding, bytes, out)
                    .map_err(|source| RebuildError::Corrupt { hash: cur, source })?;
                break;
            }
            ObjectRef::Delta { parent, runs } => {
                if chain.len() >= max_chain {
                    return Err(RebuildError::ChainTooLong {
                        hash,
                        limit: max_chain,
                    }
                    .into());
                }
                chain.push((cur, runs));
                cur = parent;
            }
        }
    }
    for (h, runs) in chain.iter().rev() {
        codec::apply_delta(out, runs).map_err(|source| RebuildError::Corrupt { hash: *h, source })?;
    }
    Ok(())
}
