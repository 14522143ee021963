//! Snapshots of a guest's state: which page sits in every slot of linear memory, the
//! memory length and every global, with a state hash.
//!
//! A [`Snapshot`] keeps its page hashes in an `imbl` RRB vector ([`PageVec`]), so
//! consecutive snapshots share all unchanged structure and cloning one is O(1).
//! [`capture`] builds the next snapshot from live memory (hashing only the pages a dirty
//! hint names, when one is given), [`restore`] writes back only the pages that differ,
//! [`diff`] and [`diff_bytes`] compare two snapshots, and [`read`] reads bytes of any
//! snapshot without restoring it.
//!
//! ```
//! use rewind_store::{PageSize, PageStore, StoreConfig};
//! use rewind_snapshot::{capture, read, GlobalValue};
//!
//! # fn main() -> Result<(), rewind_snapshot::SnapshotError> {
//! let mut store = PageStore::new(StoreConfig::new(PageSize::new(1024)?).seed(1));
//! let mut memory = vec![0u8; 8 * 1024];
//! memory[5000] = 42;
//! let first = capture(&mut store, None, &memory, &[GlobalValue::I32(7)], None)?;
//! memory[5000] = 43;
//! // Only page 4 may have changed: hash just that one.
//! let second = capture(&mut store, Some(&first.snapshot), &memory, &[GlobalValue::I32(8)], Some(&[4]))?;
//! assert_eq!(second.changes.len(), 1);
//! let mut byte = [0u8; 1];
//! read(&store, &first.snapshot, 5000, &mut byte)?;
//! assert_eq!(byte, [42]);
//! assert_ne!(first.snapshot.state_hash(), second.snapshot.state_hash());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod global;
pub mod merkle;

use std::sync::Arc;

pub use global::{GlobalType, GlobalValue};
pub use merkle::Merkle;
use rewind_store::codec::{decode_full, ChangedRuns};
pub use rewind_store::StateHash;
use rewind_store::{Hasher, ObjectRef, PageHash, PageSize, PageStore, RebuildError, StoreError};

/// The persistent vector of page hashes of a snapshot. `imbl` (the maintained fork of
/// `im`) is used only through this alias (see `docs/architecture.md` for why).
pub type PageVec = imbl::Vector<PageHash>;

/// Errors of capture, restore and reads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// From the page store (bad page size, memory not a multiple of it, corrupt objects).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A dirty hint naming a page past the end of memory.
    #[error("dirty hint names page {index}, memory has {pages} pages")]
    HintOutOfRange {
        /// The page index in the hint.
        index: u32,
        /// Pages in memory.
        pages: usize,
    },
    /// Globals of a different count than the history's first snapshot.
    #[error("expected {expected} globals, got {found}")]
    GlobalsArity {
        /// The count fixed by earlier snapshots.
        expected: usize,
        /// The count given.
        found: usize,
    },
    /// A global of a different type than before.
    #[error("global {index} is {found}, earlier snapshots have {expected}")]
    GlobalType {
        /// The global's index.
        index: usize,
        /// The type fixed by earlier snapshots.
        expected: GlobalType,
        /// The type given.
        found: GlobalType,
    },
    /// A read outside the snapshot's memory.
    #[error("bytes {addr}..{addr}+{len} are outside the {memory_len}-byte memory")]
    OutOfBounds {
        /// Start address.
        addr: u64,
        /// Length.
        len: u64,
        /// The snapshot's memory length.
        memory_len: u64,
    },
    /// Live memory of a different length than the snapshot to restore.
    #[error("live memory is {live} bytes, the snapshot to restore has {target}: resize first")]
    MemoryLength {
        /// Live memory length.
        live: u64,
        /// The target snapshot's memory length.
        target: u64,
    },
    /// Staged pages ([`capture_staged`]) that are not the pages the capture examines
    /// after its previous snapshot.
    #[error("{pages} staged pages ({bytes} bytes) do not match the pages this capture examines")]
    StagedMismatch {
        /// Page indices staged.
        pages: usize,
        /// Bytes staged.
        bytes: usize,
    },
    /// More pages than a snapshot can index.
    #[error("memory of {len} bytes has more pages than a snapshot can index")]
    TooLarge {
        /// The memory length.
        len: u64,
    },
}

/// One guest state: page hashes, memory length, globals, and their state hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pages: PageVec,
    memory_len: u64,
    globals: Arc<[GlobalValue]>,
    tree: Merkle,
    state_hash: StateHash,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            pages: PageVec::new(),
            memory_len: 0,
            globals: Arc::from(Vec::new()),
            tree: Merkle::default(),
            state_hash: StateHash::default(),
        }
    }
}

/// One page slot that changed between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageChange {
    /// The page index in memory.
    pub index: u32,
    /// The hash before ([`PageHash::ZERO`] for a zero page or a slot that did not exist).
    pub old: PageHash,
    /// The hash after ([`PageHash::ZERO`] for a zero page or a slot that no longer exists).
    pub new: PageHash,
}

/// The result of [`capture`].
#[derive(Clone, Debug)]
pub struct Captured {
    /// The new snapshot.
    pub snapshot: Snapshot,
    /// The slots whose page changed, by increasing index. The store holds one reference
    /// for every non-zero `new` hash here: the caller owns them.
    pub changes: Vec<PageChange>,
    /// Pages hashed to find the changes.
    pub pages_hashed: usize,
}

/// A range of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Snapshot {
    /// Rebuild a snapshot from its parts (e.g. read from an archive). The tree and state
    /// hash are recomputed.
    pub fn from_parts(hasher: &Hasher, pages: PageVec, memory_len: u64, globals: Vec<GlobalValue>) -> Self {
        let tree = Merkle::build(hasher, &pages);
        let globals: Arc<[GlobalValue]> = globals.into();
        let state_hash = state_hash(hasher, memory_len, tree.root(), &globals);
        Snapshot {
            pages,
            memory_len,
            globals,
            tree,
            state_hash,
        }
    }

    /// The page hashes.
    pub fn pages(&self) -> &PageVec {
        &self.pages
    }

    /// The page at `index` ([`PageHash::ZERO`] past the end).
    pub fn page(&self, index: usize) -> PageHash {
        self.pages.get(index).copied().unwrap_or(PageHash::ZERO)
    }

    /// The memory length in bytes.
    pub fn memory_len(&self) -> u64 {
        self.memory_len
    }

    /// The globals, in the order the guest defines them.
    pub fn globals(&self) -> &[GlobalValue] {
        &self.globals
    }

    /// The Merkle tree over the pages.
    pub fn tree(&self) -> &Merkle {
        &self.tree
    }

    /// The state hash: memory length, the Merkle root of the pages, every global.
    pub fn state_hash(&self) -> StateHash {
        self.state_hash
    }

    /// The first page at which two snapshots differ, found in O(log pages) comparisons.
    pub fn first_differing_page(&self, other: &Snapshot) -> Option<u32> {
        Merkle::first_difference((&self.tree, &self.pages), (&other.tree, &other.pages))
    }
}

/// The state hash of a memory length, a page-tree root and globals.
pub fn state_hash(hasher: &Hasher, memory_len: u64, root: PageHash, globals: &[GlobalValue]) -> StateHash {
    let mut buf = Vec::with_capacity(32 + 17 * globals.len());
    buf.extend_from_slice(b"rewind-state-v1\0");
    buf.extend_from_slice(&memory_len.to_le_bytes());
    buf.extend_from_slice(root.as_bytes());
    buf.extend_from_slice(&(globals.len() as u64).to_le_bytes());
    for g in globals {
        buf.push(g.ty() as u8);
        buf.extend_from_slice(&g.to_bits().to_le_bytes());
    }
    hasher.state(&buf)
}

fn check_globals(prev: Option<&Snapshot>, globals: &[GlobalValue]) -> Result<(), SnapshotError> {
    let Some(prev) = prev else { return Ok(()) };
    check_globals_after(prev.memory_len, prev.pages.len(), &prev.globals, globals)
}

/// The check [`capture`] makes of `globals` against the previous snapshot's memory
/// length, page count and globals: the same count and types, unless that snapshot is
/// empty. For a caller that captures elsewhere and wants the error now.
pub fn check_globals_after(
    prev_memory_len: u64,
    prev_pages: usize,
    prev_globals: &[GlobalValue],
    globals: &[GlobalValue],
) -> Result<(), SnapshotError> {
    if prev_memory_len == 0 && prev_globals.is_empty() && prev_pages == 0 {
        return Ok(());
    }
    if prev_globals.len() != globals.len() {
        return Err(SnapshotError::GlobalsArity {
            expected: prev_globals.len(),
            found: globals.len(),
        });
    }
    for (index, (a, b)) in prev_globals.iter().zip(globals).enumerate() {
        if a.ty() != b.ty() {
            return Err(SnapshotError::GlobalType {
                index,
                expected: a.ty(),
                found: b.ty(),
            });
        }
    }
    Ok(())
}

/// Capture the next snapshot of `memory` and `globals` after `prev`.
///
/// `hint` names the pages that may have changed since `prev` (from the OS or from guest
/// instrumentation); `None` hashes every page. Pages past `prev`'s memory are always
/// examined. New pages are stored in `store` (as deltas against the page they replace
/// when small) and referenced once each; see [`Captured::changes`].
///
/// On error nothing is stored and `store` is as it was.
pub fn capture(
    store: &mut PageStore,
    prev: Option<&Snapshot>,
    memory: &[u8],
    globals: &[GlobalValue],
    hint: Option<&[u32]>,
) -> Result<Captured, SnapshotError> {
    let page = store.page_size().bytes();
    let n = page_count(store.page_size(), memory.len() as u64)?;
    check_globals(prev, globals)?;
    let old_n = prev.map_or(0, |p| p.pages.len());
    let candidates = candidate_pages(hint, n, old_n)?;
    capture_candidates(store, prev, memory.len() as u64, globals, &candidates, |_, i| {
        let start = i as usize * page;
        &memory[start..start + page]
    })
}

/// The pages of a memory of `len` bytes, checked to be a whole number of pages that a
/// snapshot can index.
pub fn page_count(page_size: PageSize, len: u64) -> Result<usize, SnapshotError> {
    let n = page_size.pages_in(len)?;
    if n > u32::MAX as usize {
        return Err(SnapshotError::TooLarge { len });
    }
    Ok(n)
}

/// The pages a capture examines, by increasing index: the hinted pages below `old_n`
/// (the previous snapshot's page count; every page when `hint` is `None`), then every
/// page from `old_n` to `n` (pages added by growth), all below `n`.
///
/// A capture that runs elsewhere ([`capture_staged`]) copies exactly these pages out of
/// live memory first.
pub fn candidate_pages(hint: Option<&[u32]>, n: usize, old_n: usize) -> Result<Vec<u32>, SnapshotError> {
    let Some(h) = hint else {
        return Ok((0..n as u32).collect());
    };
    let mut v = Vec::with_capacity(h.len() + n.saturating_sub(old_n));
    for &i in h {
        if i as usize >= n {
            return Err(SnapshotError::HintOutOfRange { index: i, pages: n });
        }
        if (i as usize) < old_n {
            v.push(i);
        }
    }
    v.sort_unstable();
    v.dedup();
    v.extend(old_n as u32..n as u32);
    Ok(v)
}

/// Pages copied out of live memory for a capture that runs later, on another thread:
/// the indices [`candidate_pages`] names for this capture and their bytes, one page
/// after another in the same order.
#[derive(Clone, Copy, Debug)]
pub struct StagedPages<'a> {
    /// The memory length at capture.
    pub memory_len: u64,
    /// The pages copied, as [`candidate_pages`] lists them.
    pub indices: &'a [u32],
    /// Their bytes: `indices.len()` pages.
    pub bytes: &'a [u8],
}

/// [`capture`] from pages copied earlier ([`StagedPages`]) instead of live memory: the
/// same snapshot, changes and store contents as `capture` of the memory they were
/// copied from with the same hint. Staged pages that do not match what `prev` makes
/// `capture` examine are refused ([`SnapshotError::StagedMismatch`]).
pub fn capture_staged(
    store: &mut PageStore,
    prev: Option<&Snapshot>,
    staged: StagedPages<'_>,
    globals: &[GlobalValue],
) -> Result<Captured, SnapshotError> {
    let page = store.page_size().bytes();
    let n = page_count(store.page_size(), staged.memory_len)?;
    check_globals(prev, globals)?;
    let old_n = prev.map_or(0, |p| p.pages.len());
    let grown = n.saturating_sub(old_n);
    let consistent = staged.bytes.len() == staged.indices.len() * page
        && staged.indices.len() >= grown
        && staged.indices[staged.indices.len() - grown..]
            .iter()
            .zip(old_n as u32..)
            .all(|(&a, b)| a == b)
        && staged.indices.windows(2).all(|w| w[0] < w[1])
        && staged.indices.last().is_none_or(|&i| (i as usize) < n);
    if !consistent {
        return Err(SnapshotError::StagedMismatch {
            pages: staged.indices.len(),
            bytes: staged.bytes.len(),
        });
    }
    capture_candidates(store, prev, staged.memory_len, globals, staged.indices, |k, _| {
        &staged.bytes[k * page..(k + 1) * page]
    })
}

/// The body of [`capture`] and [`capture_staged`]: `page(k, index)` gives the bytes of
/// `candidates[k]`, which is page `index`.
fn capture_candidates<'m>(
    store: &mut PageStore,
    prev: Option<&Snapshot>,
    memory_len: u64,
    globals: &[GlobalValue],
    candidates: &[u32],
    page: impl Fn(usize, u32) -> &'m [u8],
) -> Result<Captured, SnapshotError> {
    let n = page_count(store.page_size(), memory_len)?;
    let empty = Snapshot::default();
    let prev = prev.unwrap_or(&empty);
    let old_n = prev.pages.len();
    let mut pages = prev.pages.clone();
    let mut changes = Vec::new();
    // Slots past a shrunken memory: their pages leave the snapshot.
    if n < old_n {
        let mut focus = prev.pages.focus();
        for i in n..old_n {
            let old = focus.get(i).copied().unwrap_or(PageHash::ZERO);
            if !old.is_zero() {
                changes.push(PageChange {
                    index: i as u32,
                    old,
                    new: PageHash::ZERO,
                });
            }
        }
        pages.truncate(n);
    }
    while pages.len() < n {
        pages.push_back(PageHash::ZERO);
    }
    let hasher = *store.hasher();
    let mut new_changes = Vec::new();
    let mut prev_focus = prev.pages.focus();
    // Candidates come in increasing order: a focus keeps the current leaf chunk, so
    // neighbouring slots are set without a walk from the root each.
    let mut slots = pages.focus_mut();
    let mut hashed = 0;
    for (k, &i) in candidates.iter().enumerate() {
        if i as usize >= n {
            continue;
        }
        hashed += 1;
        let bytes = page(k, i);
        let h = hasher.page(bytes);
        let old = prev_focus.get(i as usize).copied().unwrap_or(PageHash::ZERO);
        if h != old {
            if let Err(e) = store.put(h, bytes, old) {
                for c in &new_changes {
                    let c: &PageChange = c;
                    let _ = store.release(c.new);
                }
                return Err(e.into());
            }
            slots.set(i as usize, h);
            new_changes.push(PageChange {
                index: i,
                old,
                new: h,
            });
        }
    }
    let mut changed_idx: Vec<u32> = new_changes.iter().map(|c| c.index).collect();
    let shrink_changes = changes;
    let mut changes = new_changes;
    changes.extend(shrink_changes);
    changed_idx.sort_unstable();
    let mut tree = prev.tree.clone();
    tree.update(&hasher, &pages, &changed_idx, old_n);
    let globals: Arc<[GlobalValue]> = if *prev.globals == *globals {
        prev.globals.clone()
    } else {
        globals.into()
    };
    let state_hash = state_hash(&hasher, memory_len, tree.root(), &globals);
    Ok(Captured {
        snapshot: Snapshot {
            pages,
            memory_len,
            globals,
            tree,
            state_hash,
        },
        changes,
        pages_hashed: hashed,
    })
}

/// What is known of live memory before a [`restore`].
#[derive(Clone, Copy, Debug)]
pub enum Live<'a> {
    /// Memory holds exactly this snapshot's pages.
    Exact(&'a Snapshot),
    /// Memory holds this snapshot's pages except the listed ones, which may have been
    /// written since (e.g. a kernel dirty list since the last capture).
    Dirty(&'a Snapshot, &'a [u32]),
    /// Nothing is known: every page is hashed and compared.
    Unknown,
}

/// What a [`restore`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Pages written.
    pub pages_written: usize,
    /// Pages hashed (only for [`Live::Unknown`]).
    pub pages_hashed: usize,
}

/// Make `memory` hold `target`'s pages, writing only the pages that differ.
///
/// `memory` must already be `target`'s length (wasm memory cannot shrink: a smaller
/// target needs a fresh instance). Globals are the caller's to set from
/// [`Snapshot::globals`]. A wrong length or a page missing from the store is found
/// before anything is written; a stored object that fails to decode stops the restore
/// part way, with the pages before it written.
pub fn restore(
    store: &PageStore,
    memory: &mut [u8],
    live: Live<'_>,
    target: &Snapshot,
) -> Result<RestoreReport, SnapshotError> {
    if memory.len() as u64 != target.memory_len {
        return Err(SnapshotError::MemoryLength {
            live: memory.len() as u64,
            target: target.memory_len,
        });
    }
    let page = store.page_size().bytes();
    let n = target.pages.len();
    let mut out = RestoreReport::default();
    let mut to_write: Vec<u32> = match live {
        Live::Exact(s) => diff(s, target),
        Live::Dirty(s, dirty) => {
            let mut v = diff(s, target);
            v.extend(dirty.iter().copied().filter(|&i| (i as usize) < n));
            v.sort_unstable();
            v.dedup();
            v
        }
        Live::Unknown => {
            let hasher = store.hasher();
            let mut focus = target.pages.focus();
            out.pages_hashed = n;
            (0..n)
                .filter(|&i| {
                    hasher.page(&memory[i * page..(i + 1) * page])
                        != focus.get(i).copied().unwrap_or_default()
                })
                .map(|i| i as u32)
                .collect()
        }
    };
    to_write.retain(|&i| (i as usize) < n);
    // Every page to write must be stored before the first write. The objects found
    // here are the ones written: one lookup per page.
    let mut focus = target.pages.focus();
    let mut plan: Vec<(u32, PageHash, Option<ObjectRef<'_>>)> = Vec::with_capacity(to_write.len());
    for &i in &to_write {
        let h = focus.get(i as usize).copied().unwrap_or_default();
        if h.is_zero() {
            plan.push((i, h, None));
            continue;
        }
        match store.get(h) {
            Some(object) => plan.push((i, h, Some(object))),
            None => return Err(StoreError::Object(RebuildError::MissingObject { hash: h }).into()),
        }
    }
    for (i, h, object) in plan {
        let start = i as usize * page;
        let dst = &mut memory[start..start + page];
        match object {
            None => dst.fill(0),
            // A whole page (raw inside the rollback window: a copy) is decoded in place.
            Some(ObjectRef::Full { encoding, bytes }) => decode_full(encoding, bytes, dst)
                .map_err(|source| StoreError::Object(RebuildError::Corrupt { hash: h, source }))?,
            Some(ObjectRef::Delta { .. }) => store.read(h, dst)?,
        }
        out.pages_written += 1;
    }
    Ok(out)
}

/// The indices of the pages that differ between two snapshots (a missing slot counts as
/// a zero page). Chunks the two vectors share are skipped without comparing them.
pub fn diff(a: &Snapshot, b: &Snapshot) -> Vec<u32> {
    let (pa, pb) = (&a.pages, &b.pages);
    let common = pa.len().min(pb.len());
    let mut out = Vec::new();
    let (mut fa, mut fb) = (pa.focus(), pb.focus());
    let mut i = 0;
    while i < common {
        let (ra, ca) = fa.chunk_at(i);
        let (rb, cb) = fb.chunk_at(i);
        let end = ra.end.min(rb.end).min(common);
        if ra == rb && std::ptr::eq(ca.as_ptr(), cb.as_ptr()) {
            i = end;
            continue;
        }
        let (oa, ob) = (i - ra.start, i - rb.start);
        for k in 0..end - i {
            if ca[oa + k] != cb[ob + k] {
                out.push((i + k) as u32);
            }
        }
        i = end;
    }
    let longer = if pa.len() > pb.len() { pa } else { pb };
    let mut f = longer.focus();
    for i in common..longer.len() {
        if f.get(i).is_some_and(|h| !h.is_zero()) {
            out.push(i as u32);
        }
    }
    out
}

/// The byte ranges that differ between two snapshots, merged across page boundaries.
/// Memory present in only one of them is compared against zeros.
pub fn diff_bytes(store: &PageStore, a: &Snapshot, b: &Snapshot) -> Result<Vec<ByteRange>, SnapshotError> {
    let page = store.page_size().bytes();
    let mut ba = vec![0u8; page];
    let mut bb = vec![0u8; page];
    let mut out: Vec<ByteRange> = Vec::new();
    for i in diff(a, b) {
        store.read(a.page(i as usize), &mut ba)?;
        store.read(b.page(i as usize), &mut bb)?;
        let base = i as u64 * page as u64;
        for (s, e) in ChangedRuns::new(&ba, &bb) {
            let addr = base + s as u64;
            match out.last_mut() {
                Some(last) if last.addr + last.len == addr => last.len += (e - s) as u64,
                _ => out.push(ByteRange {
                    addr,
                    len: (e - s) as u64,
                }),
            }
        }
    }
    Ok(out)
}

/// Read `out.len()` bytes at `addr` of a snapshot, without restoring it.
pub fn read(store: &PageStore, snapshot: &Snapshot, addr: u64, out: &mut [u8]) -> Result<(), SnapshotError> {
    let len = out.len() as u64;
    if addr.checked_add(len).is_none_or(|end| end > snapshot.memory_len) {
        return Err(SnapshotError::OutOfBounds {
            addr,
            len,
            memory_len: snapshot.memory_len,
        });
    }
    let page = store.page_size().bytes() as u64;
    let mut buf = vec![0u8; page as usize];
    let mut done = 0usize;
    let mut focus = snapshot.pages.focus();
    while done < out.len() {
        let a = addr + done as u64;
        let idx = (a / page) as usize;
        let off = (a % page) as usize;
        let take = (page as usize - off).min(out.len() - done);
        let h = focus.get(idx).copied().unwrap_or_default();
        if h.is_zero() {
            out[done..done + take].fill(0);
        } else {
            store.read(h, &mut buf)?;
            out[done..done + take].copy_from_slice(&buf[off..off + take]);
        }
        done += take;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
