//! Reading an archive in place, split by what a caller does with it:
//!
//! - `open`: map the file, check the header, find the last complete commit, classify
//!   the tail (a torn write or damage);
//! - `query`: index lookups, records, the timeline, globals, inputs, page vectors,
//!   page and byte reads;
//! - `inspect`: how records and objects are stored, change lists, blame, diff;
//! - `load`: the whole archive as a [`History`](rewind_history::History);
//! - `verify`: every field checked against what it derives from.
//!
//! This module holds the [`Archive`] itself, the types its queries return, and the
//! access to segments (checksummed on first touch, rkyv-validated on every access).
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memmap2::Mmap;
use rewind_history::RecordId;
use rewind_snapshot::{GlobalValue, StateHash};
use rewind_store::{PageHash, PageSize};
use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::format::*;
use crate::ArchiveError;

mod extra;
mod inspect;
mod lazy;
mod load;
mod open;
mod query;
mod verify;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;

/// Bytes at the end of a file that no complete commit covers (a write torn by a crash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Where the torn bytes start (the end of the last complete commit).
    pub offset: u64,
    /// How many bytes follow.
    pub len: u64,
}

/// The creation parameters of an archive, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Page size in bytes.
    pub page_size: u32,
    /// The hash seed.
    pub seed: u64,
    /// The longest delta chain.
    pub max_chain: u8,
    /// Change lists between checkpoints, at most.
    pub checkpoint_hops: u32,
    /// Index runs merged per level.
    pub merge_fanout: u32,
    /// Creation time (seconds since the Unix epoch).
    pub created_unix: u64,
    /// Commits in the file (the sequence number of the last one plus one; 0 for none).
    pub commits: u64,
    /// Records in the file.
    pub records: u64,
    /// Page objects in the file.
    pub objects: u64,
    /// Bytes covered by complete commits.
    pub committed_len: u64,
}

/// The summary of one record in an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// Record number.
    pub id: RecordId,
    /// Iteration.
    pub iteration: u64,
    /// Parent record (`None` for a root).
    pub parent: Option<RecordId>,
    /// Memory length in bytes.
    pub memory_len: u64,
    /// State hash.
    pub state_hash: StateHash,
    /// Hash of the recorded input.
    pub input: Option<PageHash>,
    /// True when the record is on the timeline of the last commit's head.
    pub on_timeline: bool,
}

/// A record as stored, from [`Archive::record_detail`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordDetail {
    /// The summary.
    pub info: RecordInfo,
    /// True when the record is stored with its full page vector (a checkpoint) rather
    /// than a change list against its parent.
    pub checkpoint: bool,
    /// Change lists between this record and its checkpoint.
    pub hops: u32,
    /// Pages that differ from the parent this file holds (as captured, unless a
    /// collection removed the record's capture-time parent before it was written).
    pub pages_changed: u32,
    /// Bytes the capture added to the in-memory store (as counted when it was captured,
    /// at most a page per changed page).
    pub bytes_stored: u64,
    /// Number of globals (for a record stored with changes, the count of the nearest
    /// whole list, at most `checkpoint_hops` records back).
    pub globals: u32,
    /// `Some(n)` when the record stores its globals as the `n` that changed against its
    /// parent's (format version 2), `None` when it stores the whole list.
    pub globals_changed: Option<u32>,
}

/// One page object of the file, from [`Archive::objects`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The page hash.
    pub hash: PageHash,
    /// How it is stored.
    pub kind: ObjectKind,
    /// The page a delta applies to.
    pub parent: Option<PageHash>,
    /// Deltas from this object down to a full page.
    pub depth: u8,
    /// Bytes it takes in the file.
    pub stored_len: u32,
}

/// What [`Archive::verify`] checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments whose checksum and validation passed.
    pub segments: u64,
    /// Commit trailers checked.
    pub commits: u64,
    /// Records whose page vector and state hash were rebuilt.
    pub records: u64,
    /// Objects rebuilt and hashed.
    pub objects: u64,
}

pub use lazy::{sidecar_path, LazyOptions, LazyStats, RangeSource, SourceError, LAZY_BLOCK};

enum Backing {
    Map(Mmap),
    Owned(AlignedVec<16>),
    Empty,
    /// Fetched on first touch into a sparse cache file (see `lazy`).
    Lazy(Box<lazy::Lazy>),
}

impl Backing {
    /// The file's length.
    fn len(&self) -> u64 {
        match self {
            Backing::Map(m) => m.len() as u64,
            Backing::Owned(v) => v.len() as u64,
            Backing::Empty => 0,
            Backing::Lazy(l) => l.len(),
        }
    }

    /// The bytes `off..off + len` ([`ArchiveError::Truncated`] past the end). A mapped
    /// file is sliced in place; a lazy one fetches absent blocks first.
    #[inline]
    fn range(&self, off: u64, len: u64) -> Result<&[u8], ArchiveError> {
        let whole: &[u8] = match self {
            Backing::Map(m) => m,
            Backing::Owned(v) => v.as_slice(),
            Backing::Empty => &[],
            Backing::Lazy(l) => return l.slice(off, len),
        };
        usize::try_from(off)
            .ok()
            .zip(usize::try_from(off.saturating_add(len)).ok())
            .and_then(|(a, b)| whole.get(a..b))
            .ok_or(ArchiveError::Truncated {
                offset: off,
                needed: len,
                file_len: whole.len() as u64,
            })
    }
}

#[derive(Clone, Copy, Debug)]
struct Commit {
    trailer_off: u64,
    trailer: Trailer,
}

/// An archive opened for reading: the file mapped into memory and read in place.
///
/// Opening checks the header, finds the last complete commit from the end of the file
/// (its trailer checksum, its root segment's checksum and rkyv validation) and nothing
/// else; every other segment is checksummed and validated the first time a query
/// touches it. [`Archive::verify`] checks everything. The mapping is fixed at open:
/// commits appended later are seen by opening again.
pub struct Archive {
    path: Option<PathBuf>,
    backing: Backing,
    header: Header,
    commit: Option<Commit>,
    torn: Option<TornTail>,
    checked: Mutex<HashSet<u64>>,
    hasher: rewind_store::Hasher,
    /// Host states and global names, read from the commit chain on first use.
    extras: std::sync::OnceLock<extra::Extras>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("commit", &self.commit)
            .field("torn", &self.torn)
            .finish()
    }
}

fn vmsg(offset: u64) -> impl FnOnce(rancor::Error) -> ArchiveError {
    move |e| ArchiveError::Validation {
        offset,
        message: e.to_string(),
    }
}

fn usize_of(v: u64, offset: u64) -> Result<usize, ArchiveError> {
    usize::try_from(v).map_err(|_| ArchiveError::Inconsistent {
        offset,
        reason: "length does not fit in memory",
    })
}

/// What a record stores in its data segment: its full page vector when it is a
/// checkpoint (checked to hold the `n` pages of its memory), else its change list.
enum StoredList<'a> {
    Checkpoint(&'a [[u8; 16]]),
    Changes(&'a [ArchivedChangeRec]),
}

fn stored_list<'a>(
    e: &RecEntry,
    data: &'a ArchivedDataSeg,
    m: &ArchivedRecMeta,
    n: usize,
) -> Result<StoredList<'a>, ArchiveError> {
    let (start, len) = (m.list_start.to_native(), m.list_len.to_native() as u64);
    if m.checkpoint == 0 {
        let ch = slice_of(&data.changes, start, len, e.seg, "change list out of its segment")?;
        return Ok(StoredList::Changes(ch));
    }
    let v = slice_of(&data.pages, start, len, e.seg, "page vector out of its segment")?;
    if v.len() != n {
        return Err(ArchiveError::Inconsistent {
            offset: e.seg,
            reason: "checkpoint length differs from the memory length",
        });
    }
    Ok(StoredList::Checkpoint(v))
}

fn slice_of<'v, T>(
    v: &'v [T],
    start: u64,
    len: u64,
    offset: u64,
    what: &'static str,
) -> Result<&'v [T], ArchiveError> {
    let s = usize_of(start, offset)?;
    let l = usize_of(len, offset)?;
    s.checked_add(l)
        .and_then(|e| v.get(s..e))
        .ok_or(ArchiveError::Inconsistent { offset, reason: what })
}

/// The reasons of [`Archive::data_entry`] for an object.
const OBJECT_REASONS: [&str; 2] = [
    "object index points past its segment",
    "object index and object disagree",
];

fn info_of(e: &RecEntry) -> RecordInfo {
    RecordInfo {
        id: RecordId(e.id),
        iteration: e.iteration,
        parent: (e.parent != NONE).then_some(RecordId(e.parent)),
        memory_len: e.memory_len,
        state_hash: StateHash(e.state_hash),
        input: (e.has_input != 0).then_some(PageHash(e.input)),
        on_timeline: false,
    }
}

/// How a record stores its globals: the whole list, or (format version 2) the changes
/// against its parent's globals.
enum StoredGlobals<'a> {
    Whole(&'a [ArchivedGlobalRec]),
    Changes(&'a [ArchivedChangeRec]),
}

/// The stored globals of the record `m` in `data` (the data segment at `seg`) of a file
/// of format `version`.
fn globals_of<'a>(
    data: &'a ArchivedDataSeg,
    m: &ArchivedRecMeta,
    seg: u64,
    version: u32,
) -> Result<StoredGlobals<'a>, ArchiveError> {
    let (start, len) = (m.globals_start.to_native(), m.globals_len.to_native());
    if len & GLOBALS_DELTA == 0 {
        let gs = slice_of(
            &data.globals,
            start,
            len as u64,
            seg,
            "globals out of their segment",
        )?;
        return Ok(StoredGlobals::Whole(gs));
    }
    if version < 2 {
        return Err(ArchiveError::Inconsistent {
            offset: seg,
            reason: "global changes in a version 1 file",
        });
    }
    let ch = slice_of(
        &data.changes,
        start,
        (len & !GLOBALS_DELTA) as u64,
        seg,
        "global changes out of their segment",
    )?;
    Ok(StoredGlobals::Changes(ch))
}

/// Apply the stored changes `ch` (of the record in the segment at `seg`) to its parent's
/// `globals`: each names a position within them, in increasing order, and its new bits
/// (the type is the parent's).
fn apply_global_changes(
    globals: &mut [GlobalValue],
    ch: &[ArchivedChangeRec],
    seg: u64,
) -> Result<(), ArchiveError> {
    let bad = |reason| ArchiveError::Inconsistent { offset: seg, reason };
    let mut next = 0u32;
    for c in ch {
        let i = c.index.to_native();
        if i < next {
            return Err(bad("global changes out of order"));
        }
        next = i.saturating_add(1);
        let slot = globals
            .get_mut(i as usize)
            .ok_or(bad("global change past the parent's globals"))?;
        *slot = GlobalValue::from_bits(slot.ty(), u128::from_le_bytes(c.hash));
    }
    Ok(())
}

fn global_of(g: &ArchivedGlobalRec, offset: u64) -> Result<GlobalValue, ArchiveError> {
    g.value().ok_or(ArchiveError::Inconsistent {
        offset,
        reason: "unknown global type",
    })
}

impl Archive {
    /// The file's bytes `off..off + len` (see `Backing::range`).
    #[inline]
    fn range(&self, off: u64, len: u64) -> Result<&[u8], ArchiveError> {
        self.backing.range(off, len)
    }

    /// The file's length.
    fn file_len(&self) -> u64 {
        self.backing.len()
    }

    /// Whether a commit trailer's magic starts at `p` (false past the end).
    fn magic_at(&self, p: u64) -> Result<bool, ArchiveError> {
        if p.saturating_add(TRAILER_MAGIC.len() as u64) > self.file_len() {
            return Ok(false);
        }
        Ok(self.range(p, TRAILER_MAGIC.len() as u64)? == TRAILER_MAGIC)
    }

    /// The commit trailer at `p`.
    fn trailer_at(&self, p: u64) -> Result<Trailer, ArchiveError> {
        let n = (TRAILER_LEN as u64).min(self.file_len().saturating_sub(p));
        Trailer::decode_at(self.range(p, n)?, p, self.header.seed)
    }

    /// The segment header at `off`, whose payload must end by `end`.
    fn seg_header(&self, off: u64, end: u64) -> Result<SegHeader, ArchiveError> {
        let n = (SEG_HEADER_LEN as u64).min(end.saturating_sub(off));
        if !off.is_multiple_of(ALIGN) || n < SEG_HEADER_LEN as u64 {
            return SegHeader::decode_at(&[], off, end, self.header.seed);
        }
        SegHeader::decode_at(self.range(off, n)?, off, end, self.header.seed)
    }

    /// The payload of a segment whose header is known, checksummed on first touch.
    fn payload_at(&self, off: u64, h: SegHeader, end: u64) -> Result<&[u8], ArchiveError> {
        let start = off
            .checked_add(SEG_HEADER_LEN as u64)
            .ok_or(ArchiveError::BadSegment {
                offset: off,
                reason: "offset overflows",
            })?;
        let stop = start
            .checked_add(h.len)
            .filter(|e| *e <= end)
            .ok_or(ArchiveError::Truncated {
                offset: off,
                needed: h.len,
                file_len: end,
            })?;
        usize_of(stop, off)?;
        let p = self.range(start, h.len).map_err(|e| match e {
            ArchiveError::Truncated { .. } => ArchiveError::Truncated {
                offset: off,
                needed: h.len,
                file_len: end,
            },
            e => e,
        })?;
        let done = self.checked.lock().map(|c| c.contains(&off)).unwrap_or(false);
        if !done {
            let found = checksum(p, self.header.seed);
            if found != h.sum {
                return Err(ArchiveError::ChecksumMismatch {
                    offset: off,
                    expected: h.sum,
                    found,
                });
            }
            if let Ok(mut c) = self.checked.lock() {
                c.insert(off);
            }
        }
        Ok(p)
    }

    fn payload(&self, off: u64, kind: SegKind) -> Result<&[u8], ArchiveError> {
        let end = self.committed_end();
        let h = self.seg_header(off, end)?;
        if h.kind != kind {
            return Err(ArchiveError::BadSegment {
                offset: off,
                reason: "segment of an unexpected kind",
            });
        }
        self.payload_at(off, h, end)
    }

    fn root(&self) -> Result<Option<&ArchivedRootSeg>, ArchiveError> {
        let Some(c) = self.commit else { return Ok(None) };
        let p = self.payload(c.trailer.root, SegKind::Root)?;
        rkyv::access::<ArchivedRootSeg, rancor::Error>(p)
            .map(Some)
            .map_err(vmsg(c.trailer.root))
    }

    fn data(&self, off: u64) -> Result<&ArchivedDataSeg, ArchiveError> {
        let p = self.payload(off, SegKind::Data)?;
        rkyv::access::<ArchivedDataSeg, rancor::Error>(p).map_err(vmsg(off))
    }

    fn runs(&self, off: u64) -> Result<&ArchivedRunsSeg, ArchiveError> {
        let p = self.payload(off, SegKind::Runs)?;
        rkyv::access::<ArchivedRunsSeg, rancor::Error>(p).map_err(vmsg(off))
    }

    /// The end of the last complete commit (the header's end when there is none).
    pub fn committed_end(&self) -> u64 {
        self.commit
            .map_or(HEADER_LEN as u64, |c| c.trailer_off + TRAILER_LEN as u64)
    }

    /// The file's bytes up to the end of the last complete commit, as mapped at open:
    /// what a copy of the archive must hold (a torn tail excluded). These bytes never
    /// change while the archive is open (writers only append past them).
    ///
    /// A lazily opened archive ([`Archive::open_lazy`]) fetches every absent byte
    /// first, and returns an empty slice when that fails: call
    /// [`Archive::fetch_committed`] for the error.
    pub fn committed_bytes(&self) -> &[u8] {
        self.fetch_committed().unwrap_or(&[])
    }

    /// [`Archive::committed_bytes`], with the error of a lazily opened archive whose
    /// source fails.
    pub fn fetch_committed(&self) -> Result<&[u8], ArchiveError> {
        let end = self.committed_end().min(self.file_len());
        self.range(0, end)
    }

    /// The bytes after the last complete commit, when a crash tore the tail.
    pub fn torn_tail(&self) -> Option<TornTail> {
        self.torn
    }

    /// What a lazily opened archive ([`Archive::open_lazy`]) has fetched and reused so
    /// far; `None` for a file or bytes in memory.
    pub fn lazy_stats(&self) -> Option<LazyStats> {
        match &self.backing {
            Backing::Lazy(l) => Some(l.stats()),
            _ => None,
        }
    }

    /// The file this archive was opened from (the cache file of a lazily opened one).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    pub(crate) fn last_trailer(&self) -> Option<(u64, Trailer)> {
        self.commit.map(|c| (c.trailer_off, c.trailer))
    }

    /// The header's parameters and the last commit's counts.
    pub fn info(&self) -> Result<ArchiveInfo, ArchiveError> {
        let root = self.root()?;
        Ok(ArchiveInfo {
            page_size: self.header.page_size,
            seed: self.header.seed,
            max_chain: self.header.max_chain,
            checkpoint_hops: self.header.checkpoint_hops,
            merge_fanout: self.header.merge_fanout,
            created_unix: self.header.created_unix,
            commits: self.commit.map_or(0, |c| c.trailer.seq + 1),
            records: root.map_or(0, |r| r.record_count.to_native()),
            objects: root.map_or(0, |r| r.object_count.to_native()),
            committed_len: self.committed_end(),
        })
    }

    /// The page size.
    pub fn page_size(&self) -> PageSize {
        // The header was checked at open.
        PageSize::new(self.header.page_size as u64).unwrap_or_default()
    }

    /// The head record at the last commit.
    pub fn head(&self) -> Option<RecordId> {
        self.commit
            .and_then(|c| (c.trailer.head != NONE).then_some(RecordId(c.trailer.head)))
    }

    /// The next record number of the history at the last commit.
    pub fn next_record_id(&self) -> Result<u64, ArchiveError> {
        Ok(self.root()?.map_or(0, |r| r.next_record_id.to_native()))
    }
}
