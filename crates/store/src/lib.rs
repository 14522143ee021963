//! The content-addressed page store of rewind.
//!
//! A guest's linear memory is cut into pages of a fixed [`PageSize`]. Each page is named
//! by its [`PageHash`] (seeded xxh3-128 of its bytes) and stored once, as a full page
//! (raw when young, lz4 once it ages) or as a delta of changed byte runs against another
//! page: a page that is replaced in its slot becomes a delta against its replacement
//! (a reverse delta). The all-zero page has the reserved hash [`PageHash::ZERO`] and is
//! never stored. Reference counts say when an object can go; freeing a page that deltas
//! depend on first compacts those deltas, so no live page is ever rebuilt from freed
//! bytes.
//!
//! ```
//! use rewind_store::{PageSize, PageStore, StoreConfig, PageHash};
//!
//! # fn main() -> Result<(), rewind_store::StoreError> {
//! let mut store = PageStore::new(StoreConfig::new(PageSize::new(4096)?).seed(42).delta_after(1));
//! let mut page = vec![0u8; 4096];
//! page[10] = 7;
//! let v1 = store.hash(&page);
//! store.put(v1, &page, PageHash::ZERO)?;          // a full page
//! let old = page.clone();
//! page[11] = 8;
//! let v2 = store.hash(&page);
//! store.put(v2, &page, v1)?;                      // v1 replaced by v2 ...
//! store.advance_frame();                          // ... becomes a delta against it a frame later
//! assert_eq!(store.stats().delta_pages, 1);
//! store.release(v2)?;                             // v1 is compacted before v2 goes
//! let mut out = vec![0u8; 4096];
//! store.read(v1, &mut out)?;
//! assert_eq!(out, old);
//! assert_eq!(store.stats().objects, 1);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod codec;
mod error;
mod hash;
mod page_size;
mod rebuild;
mod store;

pub use codec::Encoding;
pub use error::{CodecError, StoreError};
pub use hash::{Hasher, InputHash, PageHash, ParseHashError, StateHash};
pub use page_size::PageSize;
pub use rebuild::{rebuild, FindObject, RebuildError};
pub use store::{Freed, Object, ObjectRef, PageStore, Put, StoreConfig, StoreStats};
