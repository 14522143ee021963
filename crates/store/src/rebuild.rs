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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::Encoding;
    use std::collections::HashMap;

    /// Objects by hash, as a foreign file might hold them.
    struct Map(HashMap<PageHash, (Option<PageHash>, Vec<u8>)>);

    impl FindObject for Map {
        type Error = RebuildError;
        fn find_object(&self, hash: PageHash) -> Result<Option<ObjectRef<'_>>, RebuildError> {
            Ok(self.0.get(&hash).map(|(parent, bytes)| match parent {
                Some(parent) => ObjectRef::Delta {
                    parent: *parent,
                    runs: bytes,
                },
                None => ObjectRef::Full {
                    encoding: Encoding::Raw,
                    bytes,
                },
            }))
        }
    }

    fn h(n: u8) -> PageHash {
        PageHash([n; 16])
    }

    #[test]
    fn a_chain_rebuilds_and_every_failure_names_its_object() {
        // full page 1; 2 = 1 with byte 3 set to 9; 3 = 2 with byte 0 set to 7.
        let mut m = HashMap::new();
        m.insert(h(1), (None, vec![1u8; 8]));
        m.insert(h(2), (Some(h(1)), vec![3, 0, 0, 0, 9]));
        m.insert(h(3), (Some(h(2)), vec![0, 0, 0, 0, 7]));
        let mut out = [0u8; 8];
        rebuild(&Map(m.clone()), h(3), &mut out, 8).unwrap();
        assert_eq!(out, [7, 1, 1, 9, 1, 1, 1, 1]);
        assert_eq!(
            rebuild(&Map(m.clone()), h(3), &mut out, 1),
            Err(RebuildError::ChainTooLong { hash: h(3), limit: 1 })
        );
        assert_eq!(
            rebuild(&Map(m.clone()), h(4), &mut out, 8),
            Err(RebuildError::MissingObject { hash: h(4) })
        );
        // A delta on the zero page applies to zeros.
        m.insert(h(5), (Some(PageHash::ZERO), vec![1, 0, 0, 0, 5]));
        rebuild(&Map(m.clone()), h(5), &mut out, 8).unwrap();
        assert_eq!(out, [0, 5, 0, 0, 0, 0, 0, 0]);
        // A cycle stops at the bound; a run past the page is corrupt.
        m.insert(h(6), (Some(h(6)), vec![0, 0, 0, 0, 1]));
        assert!(matches!(
            rebuild(&Map(m.clone()), h(6), &mut out, 8),
            Err(RebuildError::ChainTooLong { .. })
        ));
        m.insert(h(7), (Some(h(1)), vec![7, 0, 3, 0, 1, 1, 1, 1]));
        assert!(matches!(
            rebuild(&Map(m), h(7), &mut out, 8),
            Err(RebuildError::Corrupt { hash, .. }) if hash == h(7)
        ));
    }
}
