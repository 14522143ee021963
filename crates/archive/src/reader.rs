//! Reading an archive in place.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memmap2::Mmap;
use rewind_history::{Blame, History, RecordId};
use rewind_snapshot::{GlobalValue, PageVec, Snapshot, StateHash};
use rewind_store::codec;
use rewind_store::{Object, PageHash, PageSize, PageStore, StoreConfig};
use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::format::*;
use crate::index::{self, IndexEntry, RunKey as _};
use crate::ArchiveError;

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
    /// Number of globals.
    pub globals: u32,
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

enum Backing {
    Map(Mmap),
    Owned(AlignedVec<16>),
    Empty,
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Owned(v) => v.as_slice(),
            Backing::Empty => &[],
        }
    }
}

/// How open treats bytes after the last complete commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// A torn tail is fine; damage is an error.
    Strict,
    /// Everything after the last complete commit is a tail (for a forced repair).
    Salvage,
}

/// True when `have` (at most 64 bytes) is what a torn write of the trailer `want` can
/// leave: a prefix of it, with the 16-byte blocks not written reading as zeros, either
/// after the written ones or before them (a write split at a sector boundary).
fn torn_copy(have: &[u8], want: &[u8; TRAILER_LEN]) -> bool {
    let n = have.len();
    let want = want.get(..n).unwrap_or(&[]);
    let mut cuts = (0..=n).step_by(ALIGN as usize).chain([n]);
    cuts.any(|k| {
        let (h1, h2) = have.split_at(k);
        let (w1, w2) = want.split_at(k);
        (h1 == w1 && h2.iter().all(|b| *b == 0)) || (h1.iter().all(|b| *b == 0) && h2 == w2)
    })
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
        state_hash: PageHash(e.state_hash),
        input: (e.has_input != 0).then_some(PageHash(e.input)),
        on_timeline: false,
    }
}

fn global_of(g: &ArchivedGlobalRec, offset: u64) -> Result<GlobalValue, ArchiveError> {
    g.value().ok_or(ArchiveError::Inconsistent {
        offset,
        reason: "unknown global type",
    })
}

impl Archive {
    /// Open an archive file: map it and find its last complete commit.
    ///
    /// A torn tail (bytes after the last complete commit that a write cut short by a
    /// crash explains) is not an error: it is ignored and reported by
    /// [`Archive::torn_tail`]. Bytes after it that a torn write cannot explain (a
    /// commit trailer with a valid checksum whose commit does not check, or a complete
    /// commit whose trailer is damaged) are [`ArchiveError::DamagedTail`]: a damaged
    /// last commit never reads as if it had not been written.
    ///
    /// Only regular files are read: a directory, FIFO, device or socket is
    /// [`ArchiveError::NotAFile`], found without reading from it or blocking on it.
    pub fn open(path: impl AsRef<Path>) -> Result<Archive, ArchiveError> {
        Self::open_mode(path.as_ref(), Scan::Strict)
    }

    /// Open for a forced repair: a damaged tail is reported as a torn tail, found by a
    /// scan that checksums at most a bounded multiple of the file's size.
    pub(crate) fn open_salvage(path: &Path) -> Result<Archive, ArchiveError> {
        Self::open_mode(path, Scan::Salvage)
    }

    fn open_mode(path: &Path, mode: Scan) -> Result<Archive, ArchiveError> {
        let (file, len) = crate::lock::open_regular(path)?;
        let backing = if len < HEADER_LEN as u64 {
            let mut bytes = Vec::new();
            (&file)
                .take(HEADER_LEN as u64)
                .read_to_end(&mut bytes)
                .map_err(ArchiveError::io("read", path))?;
            let mut v = AlignedVec::<16>::new();
            v.extend_from_slice(&bytes);
            Backing::Owned(v)
        } else {
            // SAFETY: the mapping is read-only. It could change under us only if
            // another process truncated or rewrote the file in place below the length
            // mapped here, which rewind never does: a lock holder appends past the last
            // commit, `repair` truncates only bytes after it, and `create`, `replace`
            // and `compact` put new files in place by rename (the old inode, and so
            // this mapping, stays intact). Bytes are never trusted: every structure
            // read from them is bounds-checked, checksummed and rkyv-validated before
            // use. Documented in UNSAFE.md.
            #[allow(unsafe_code)]
            let map = unsafe { Mmap::map(&file) }.map_err(ArchiveError::io("map", path))?;
            Backing::Map(map)
        };
        Self::from_backing(Some(path.to_path_buf()), backing, mode)
    }

    /// Open an archive held in memory (copied into an aligned buffer). Used by tests and
    /// the fuzz target; behaves exactly like [`Archive::open`] on a file of these bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Archive, ArchiveError> {
        let backing = if bytes.is_empty() {
            Backing::Empty
        } else {
            let mut v = AlignedVec::<16>::with_capacity(bytes.len());
            v.extend_from_slice(bytes);
            Backing::Owned(v)
        };
        Self::from_backing(None, backing, Scan::Strict)
    }

    fn from_backing(path: Option<PathBuf>, backing: Backing, mode: Scan) -> Result<Archive, ArchiveError> {
        let header = Header::decode(backing.bytes())?;
        let page_size = PageSize::new(header.page_size as u64).map_err(|_| ArchiveError::BadHeader {
            reason: "page size is not a power of two from 1 KiB to 64 KiB",
        })?;
        let mut a = Archive {
            path,
            backing,
            header,
            commit: None,
            torn: None,
            checked: Mutex::new(HashSet::new()),
            hasher: rewind_store::Hasher::new(header.seed, page_size),
        };
        a.find_commit(mode)?;
        Ok(a)
    }

    fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// Scan back from the end for the last trailer whose commit checks.
    ///
    /// The cost is O(torn bytes): each 16-aligned offset costs a magic compare, each
    /// magic a 56-byte trailer checksum, and only a trailer whose checksum holds leads
    /// to checksumming its root segment. A torn write never leaves such a trailer
    /// behind an incomplete commit, so in strict mode the first one found decides:
    /// its commit is the last complete one, or the file is damaged. A salvage scan
    /// goes on past damaged commits, with a budget of checksummed root bytes.
    fn find_commit(&mut self, mode: Scan) -> Result<(), ArchiveError> {
        let len = self.bytes().len() as u64;
        let limit = len.saturating_mul(2).saturating_add(1 << 20);
        let mut budget = limit;
        let mut p = len.saturating_sub(TRAILER_LEN as u64) & !(ALIGN - 1);
        while p >= HEADER_LEN as u64 {
            let at = usize_of(p, p)?;
            if Trailer::has_magic(self.bytes(), at)
                && Trailer::decode(self.bytes(), p, self.header.seed).is_ok()
            {
                match self.check_commit(p, &mut budget) {
                    Ok(t) => {
                        self.commit = Some(Commit {
                            trailer_off: p,
                            trailer: t,
                        });
                        break;
                    }
                    Err(ArchiveError::ScanLimit { .. }) => return Err(ArchiveError::ScanLimit { limit }),
                    Err(_) if mode == Scan::Strict => {
                        return Err(ArchiveError::DamagedTail {
                            offset: p,
                            reason:
                                "a commit trailer with a valid checksum names a commit that does not check",
                        })
                    }
                    Err(_) => {}
                }
            }
            p -= ALIGN;
        }
        let end = self.committed_end();
        if end < len {
            if mode == Scan::Strict {
                if let Some((offset, reason)) = self.damaged_tail(end, len) {
                    return Err(ArchiveError::DamagedTail { offset, reason });
                }
            }
            self.torn = Some(TornTail {
                offset: end,
                len: len - end,
            });
        }
        Ok(())
    }

    /// Whether the bytes from `from` (the end of the last complete commit) to `len` are
    /// more than a torn write of the next commit. A writer writes a commit's segments in
    /// order, its root segment last, then the 64-byte trailer right after the root. So
    /// when the tail holds a complete, valid root segment of the next commit, the
    /// trailer it must be followed by is known byte for byte; a torn write leaves it
    /// missing, cut short, or with 16-byte blocks never written (zeros) at its start or
    /// end, and nothing but zeros after it. Anything else there (a flipped bit, a
    /// damaged magic) is damage. Each tail segment is checksummed once: O(tail bytes).
    fn damaged_tail(&self, from: u64, len: u64) -> Option<(u64, &'static str)> {
        let seed = self.header.seed;
        let (next_seq, prev) = self
            .commit
            .map_or((0, NONE), |c| (c.trailer.seq.saturating_add(1), c.trailer_off));
        let mut pos = from;
        let mut expected = None;
        while pos.saturating_add(SEG_HEADER_LEN as u64) <= len {
            let Ok(h) = SegHeader::decode(self.bytes(), pos, len, seed) else {
                break;
            };
            let start = pos + SEG_HEADER_LEN as u64;
            let Some(next) = start.checked_add(h.len).and_then(align_up) else {
                break;
            };
            let payload = usize::try_from(start)
                .ok()
                .zip(usize::try_from(start + h.len).ok())
                .and_then(|(a, b)| self.bytes().get(a..b));
            let Some(payload) = payload else { break };
            if h.kind == SegKind::Root && checksum(payload, seed) == h.sum {
                if let Ok(root) = rkyv::access::<ArchivedRootSeg, rancor::Error>(payload) {
                    if root.seq.to_native() == next_seq {
                        let t = Trailer {
                            seq: next_seq,
                            root: pos,
                            head: root.head.to_native(),
                            prev,
                            start: from,
                        };
                        expected = Some((next, t));
                    }
                }
                break;
            }
            pos = next;
        }
        let Some((at, t)) = expected else {
            // No commit at all checks, yet the file holds trailers: not a torn first
            // commit (its trailer is the last thing written) but, say, a header whose
            // seed no longer matches the file. Never read that as an empty archive.
            if self.commit.is_none() {
                let mut p = from;
                while p.saturating_add(TRAILER_LEN as u64) <= len {
                    if usize::try_from(p).is_ok_and(|at| Trailer::has_magic(self.bytes(), at)) {
                        return Some((p, "commit trailers are present but none checks"));
                    }
                    p += ALIGN;
                }
            }
            return None;
        };
        let want = t.encode(seed);
        let a = usize::try_from(at).ok()?;
        let have = self.bytes().get(a..).unwrap_or(&[]);
        let (trailer, rest) = have.split_at(have.len().min(TRAILER_LEN));
        if torn_copy(trailer, &want) && rest.iter().all(|b| *b == 0) {
            None
        } else {
            Some((at, "the last commit is complete but its trailer is damaged"))
        }
    }

    fn check_commit(&self, p: u64, budget: &mut u64) -> Result<Trailer, ArchiveError> {
        let t = Trailer::decode(self.bytes(), p, self.header.seed)?;
        let bad = |reason| ArchiveError::BadSegment { offset: p, reason };
        if t.root >= p || t.start > t.root || t.start < HEADER_LEN as u64 {
            return Err(bad("trailer offsets out of order"));
        }
        if t.prev != NONE && t.prev.checked_add(TRAILER_LEN as u64) != Some(t.start) {
            return Err(bad("trailer does not follow the previous commit"));
        }
        if t.prev == NONE && (t.seq != 0 || t.start != HEADER_LEN as u64) {
            return Err(bad("first commit does not start after the header"));
        }
        let h = SegHeader::decode(self.bytes(), t.root, p, self.header.seed)?;
        if h.kind != SegKind::Root {
            return Err(bad("trailer does not point at a root segment"));
        }
        let seg_end = t
            .root
            .checked_add(SEG_HEADER_LEN as u64 + h.len)
            .and_then(align_up);
        if seg_end != Some(p) {
            return Err(bad("root segment does not end at the trailer"));
        }
        *budget = budget
            .checked_sub(h.len)
            .ok_or(ArchiveError::ScanLimit { limit: 0 })?;
        let payload = self.payload_at(t.root, h, p)?;
        let root = rkyv::access::<ArchivedRootSeg, rancor::Error>(payload).map_err(vmsg(t.root))?;
        if root.seq.to_native() != t.seq || root.head.to_native() != t.head {
            return Err(bad("trailer and root disagree"));
        }
        Ok(t)
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
        let p = self
            .bytes()
            .get(usize_of(start, off)?..usize_of(stop, off)?)
            .ok_or(ArchiveError::Truncated {
                offset: off,
                needed: h.len,
                file_len: end,
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
        let h = SegHeader::decode(self.bytes(), off, end, self.header.seed)?;
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

    /// The bytes after the last complete commit, when a crash tore the tail.
    pub fn torn_tail(&self) -> Option<TornTail> {
        self.torn
    }

    /// The file this archive was opened from.
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

    // ---- index lookups ---------------------------------------------------------------

    pub(crate) fn run_refs(&self) -> Result<[Vec<RunRef>; 4], ArchiveError> {
        let Some(root) = self.root()? else {
            return Ok(Default::default());
        };
        let f = |v: &rkyv::vec::ArchivedVec<ArchivedRunRef>| v.iter().map(RunRef::from).collect::<Vec<_>>();
        Ok([
            f(&root.objects),
            f(&root.records),
            f(&root.inputs),
            f(&root.timeline),
        ])
    }

    /// The entries of one run of table `E`.
    pub(crate) fn run<E: IndexEntry>(&self, r: &RunRef) -> Result<&[E], ArchiveError> {
        let seg = self.runs(r.seg)?;
        slice_of(
            E::entries(seg),
            r.start,
            r.len,
            r.seg,
            "index run out of its segment",
        )
    }

    /// The entry of `key` in table `E`. The runs are probed newest first, skipping
    /// those whose key range cannot hold it, with a binary search in each; the first
    /// entry found is the answer.
    fn lookup<E: IndexEntry>(&self, key: &E::Key) -> Result<Option<&E>, ArchiveError> {
        let Some(root) = self.root()? else { return Ok(None) };
        let runs = E::runs(root).iter().map(RunRef::from);
        index::lookup(runs, |r| Some((r.first, r.last)), |r| self.run::<E>(r), key)
    }

    fn rec_entry(&self, id: u64) -> Result<RecEntry, ArchiveError> {
        self.lookup::<ArchivedRecEntry>(&id)?
            .map(RecEntry::from)
            .ok_or(ArchiveError::NoSuchRecord(RecordId(id)))
    }

    fn tl_lookup(&self, iteration: u64) -> Result<Option<u64>, ArchiveError> {
        Ok(self
            .lookup::<ArchivedTlEntry>(&iteration)?
            .map(|e| e.id.to_native()))
    }

    fn obj_entry(&self, hash: PageHash) -> Result<Option<ObjEntry>, ArchiveError> {
        Ok(self.lookup::<ArchivedObjEntry>(&hash.0)?.map(ObjEntry::from))
    }

    fn input_entry(&self, hash: PageHash) -> Result<Option<InputEntry>, ArchiveError> {
        Ok(self.lookup::<ArchivedInputEntry>(&hash.0)?.map(InputEntry::from))
    }

    /// Entry `pos` of one table of the data segment at `seg`, with the segment, checked
    /// against the index entry that points at it: `agrees` compares the fields both
    /// hold, and `what` gives the two error reasons (past the table, disagreeing).
    fn data_entry<'a, M>(
        &'a self,
        seg: u64,
        pos: u32,
        table: impl FnOnce(&'a ArchivedDataSeg) -> &'a [M],
        agrees: impl FnOnce(&M) -> bool,
        what: [&'static str; 2],
    ) -> Result<(&'a ArchivedDataSeg, &'a M), ArchiveError> {
        let [past, disagree] = what;
        let bad = |reason| ArchiveError::Inconsistent { offset: seg, reason };
        let data = self.data(seg)?;
        let m = table(data).get(pos as usize).ok_or(bad(past))?;
        if !agrees(m) {
            return Err(bad(disagree));
        }
        Ok((data, m))
    }

    fn rec_meta(&self, e: &RecEntry) -> Result<(&ArchivedDataSeg, &ArchivedRecMeta), ArchiveError> {
        self.data_entry(
            e.seg,
            e.pos,
            |d| &d.records,
            |m| m.id.to_native() == e.id && m.parent.to_native() == e.parent,
            [
                "record index points past its segment",
                "record index and record disagree",
            ],
        )
    }

    // ---- records ---------------------------------------------------------------------

    /// Every record in the file, by record number. Records on the last commit's
    /// timeline have `on_timeline` set; the others are abandoned branches (or records a
    /// collection dropped from memory before a compaction rewrote the file).
    pub fn records(&self) -> Result<Vec<RecordInfo>, ArchiveError> {
        let [_, recs, _, _] = self.run_refs()?;
        let mut out = Vec::new();
        for r in &recs {
            for e in self.run(r)? {
                let e = RecEntry::from(e);
                let mut info = info_of(&e);
                info.on_timeline = self.tl_lookup(e.iteration)? == Some(e.id);
                out.push(info);
            }
        }
        Ok(out)
    }

    /// The timeline of the last commit's head, oldest first.
    pub fn timeline(&self) -> Result<Vec<RecordInfo>, ArchiveError> {
        let [_, _, _, tl] = self.run_refs()?;
        let mut out = Vec::new();
        for r in &tl {
            for e in self.run::<ArchivedTlEntry>(r)? {
                let mut info = info_of(&self.rec_entry(e.id.to_native())?);
                info.on_timeline = true;
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Records off the timeline (abandoned branches), by record number.
    pub fn abandoned(&self) -> Result<Vec<RecordInfo>, ArchiveError> {
        Ok(self.records()?.into_iter().filter(|r| !r.on_timeline).collect())
    }

    /// A record by number.
    pub fn record(&self, id: RecordId) -> Result<RecordInfo, ArchiveError> {
        let e = self.rec_entry(id.0)?;
        let mut info = info_of(&e);
        info.on_timeline = self.tl_lookup(e.iteration)? == Some(e.id);
        Ok(info)
    }

    /// The record of `iteration` on the last commit's timeline.
    pub fn at(&self, iteration: u64) -> Result<RecordInfo, ArchiveError> {
        let id = self
            .tl_lookup(iteration)?
            .ok_or(ArchiveError::NotOnTimeline { iteration })?;
        let mut info = info_of(&self.rec_entry(id)?);
        if info.iteration != iteration {
            return Err(ArchiveError::Inconsistent {
                offset: self.committed_end(),
                reason: "timeline entry names a record of another iteration",
            });
        }
        info.on_timeline = true;
        Ok(info)
    }

    /// The state hash of `iteration` on the timeline. Touches the index only.
    pub fn state_hash(&self, iteration: u64) -> Result<StateHash, ArchiveError> {
        Ok(self.at(iteration)?.state_hash)
    }

    /// The globals of a record.
    pub fn globals(&self, id: RecordId) -> Result<Vec<GlobalValue>, ArchiveError> {
        let e = self.rec_entry(id.0)?;
        let (data, m) = self.rec_meta(&e)?;
        let gs = slice_of(
            &data.globals,
            m.globals_start.to_native(),
            m.globals_len.to_native() as u64,
            e.seg,
            "globals out of their segment",
        )?;
        gs.iter().map(|g| global_of(g, e.seg)).collect()
    }

    /// The input blob recorded with a record, borrowed from the file.
    pub fn input(&self, id: RecordId) -> Result<Option<&[u8]>, ArchiveError> {
        let e = self.rec_entry(id.0)?;
        if e.has_input == 0 {
            return Ok(None);
        }
        let hash = PageHash(e.input);
        let ie = self.input_entry(hash)?.ok_or(ArchiveError::Inconsistent {
            offset: e.seg,
            reason: "record names an input the archive does not hold",
        })?;
        self.input_bytes(&ie).map(Some)
    }

    pub(crate) fn input_bytes(&self, ie: &InputEntry) -> Result<&[u8], ArchiveError> {
        let (data, m) = self.data_entry(
            ie.seg,
            ie.pos,
            |d| &d.inputs,
            |m| m.hash == ie.hash,
            [
                "input index points past its segment",
                "input index and input disagree",
            ],
        )?;
        slice_of(
            &data.input_bytes,
            m.start.to_native(),
            m.len.to_native(),
            ie.seg,
            "input bytes out of their segment",
        )
    }

    fn pages_count(&self, memory_len: u64, offset: u64) -> Result<usize, ArchiveError> {
        let ps = self.header.page_size as u64;
        if memory_len > MAX_MEMORY || !memory_len.is_multiple_of(ps) {
            return Err(ArchiveError::Inconsistent {
                offset,
                reason: "memory length is over 4 GiB or not a whole number of pages",
            });
        }
        usize_of(memory_len / ps, offset)
    }

    /// Walk from a record towards its checkpoint, at most `checkpoint_hops` change lists.
    /// Calls `visit` with each record's segment, meta and list; stops when `visit` says so.
    fn walk<'a>(
        &'a self,
        id: u64,
        mut visit: impl FnMut(&RecEntry, &'a ArchivedDataSeg, &'a ArchivedRecMeta) -> Result<bool, ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let mut cur = self.rec_entry(id)?;
        let mut hops = 0u32;
        loop {
            let (data, m) = self.rec_meta(&cur)?;
            if visit(&cur, data, m)? || m.checkpoint != 0 {
                return Ok(());
            }
            hops += 1;
            let parent = m.parent.to_native();
            if parent == NONE || parent >= cur.id || hops > self.header.checkpoint_hops {
                return Err(ArchiveError::Inconsistent {
                    offset: cur.seg,
                    reason: "change list without a reachable checkpoint",
                });
            }
            cur = self.rec_entry(parent)?;
        }
    }

    /// The page hash in slot `index` of a record (zero past its memory).
    pub fn page_at(&self, id: RecordId, index: u32) -> Result<PageHash, ArchiveError> {
        let mut found = PageHash::ZERO;
        let i = index as usize;
        self.walk(id.0, |e, data, m| {
            let n = self.pages_count(m.memory_len.to_native(), e.seg)?;
            if i >= n {
                found = PageHash::ZERO;
                return Ok(true);
            }
            let (start, len) = (m.list_start.to_native(), m.list_len.to_native() as u64);
            if m.checkpoint != 0 {
                let pages = slice_of(&data.pages, start, len, e.seg, "page vector out of its segment")?;
                found = PageHash(pages.get(i).copied().unwrap_or([0; 16]));
                return Ok(true);
            }
            let ch = slice_of(&data.changes, start, len, e.seg, "change list out of its segment")?;
            if let Ok(k) = ch.binary_search_by_key(&index, |c| c.index.to_native()) {
                found = PageHash(ch.get(k).map_or([0; 16], |c| c.hash));
                return Ok(true);
            }
            Ok(false)
        })?;
        Ok(found)
    }

    /// The full page vector of a record.
    pub fn pages(&self, id: RecordId) -> Result<Vec<PageHash>, ArchiveError> {
        let mut lists: Vec<(usize, &[ArchivedChangeRec])> = Vec::new();
        let mut base: Vec<PageHash> = Vec::new();
        self.walk(id.0, |e, data, m| {
            let n = self.pages_count(m.memory_len.to_native(), e.seg)?;
            let (start, len) = (m.list_start.to_native(), m.list_len.to_native() as u64);
            if m.checkpoint != 0 {
                let pages = slice_of(&data.pages, start, len, e.seg, "page vector out of its segment")?;
                if pages.len() != n {
                    return Err(ArchiveError::Inconsistent {
                        offset: e.seg,
                        reason: "checkpoint length differs from the memory length",
                    });
                }
                base = pages.iter().map(|p| PageHash(*p)).collect();
                return Ok(true);
            }
            let ch = slice_of(&data.changes, start, len, e.seg, "change list out of its segment")?;
            lists.push((n, ch));
            Ok(false)
        })?;
        for (n, ch) in lists.iter().rev() {
            base.resize(*n, PageHash::ZERO);
            for c in ch.iter() {
                if let Some(slot) = base.get_mut(c.index.to_native() as usize) {
                    *slot = PageHash(c.hash);
                }
            }
        }
        Ok(base)
    }

    /// The memory length of a record.
    pub fn memory_len(&self, id: RecordId) -> Result<u64, ArchiveError> {
        Ok(self.rec_entry(id.0)?.memory_len)
    }

    // ---- pages -----------------------------------------------------------------------

    /// The stored object of a page, borrowed from the file (`None` when absent).
    pub fn object(&self, hash: PageHash) -> Result<Option<rewind_store::ObjectRef<'_>>, ArchiveError> {
        let Some(e) = self.obj_entry(hash)? else {
            return Ok(None);
        };
        self.object_of(&e).map(Some)
    }

    /// The Data-segment meta of an object index entry, which must agree with it on hash,
    /// kind and depth.
    fn obj_meta(&self, e: &ObjEntry) -> Result<(&ArchivedDataSeg, &ArchivedObjMeta), ArchiveError> {
        self.data_entry(
            e.seg,
            e.pos,
            |d| &d.objects,
            |m| m.hash == e.hash && m.kind == e.kind && m.depth == e.depth,
            OBJECT_REASONS,
        )
    }

    pub(crate) fn object_of(&self, e: &ObjEntry) -> Result<rewind_store::ObjectRef<'_>, ArchiveError> {
        let (data, m) = self.obj_meta(e)?;
        let bad = |reason| ArchiveError::Inconsistent {
            offset: e.seg,
            reason,
        };
        let bytes = slice_of(
            &data.object_bytes,
            m.start.to_native(),
            m.len.to_native() as u64,
            e.seg,
            "object bytes out of their segment",
        )?;
        let kind = ObjectKind::from_tag(m.kind).ok_or(bad("unknown object kind"))?;
        Ok(match kind.encoding() {
            Some(encoding) => rewind_store::ObjectRef::Full { encoding, bytes },
            None => rewind_store::ObjectRef::Delta {
                parent: PageHash(m.parent),
                runs: bytes,
            },
        })
    }

    /// Rebuild one page into `out` (page-size bytes): decompresses only this page and the
    /// deltas under it, at most `max_chain` of them.
    pub fn read_page(&self, hash: PageHash, out: &mut [u8]) -> Result<(), ArchiveError> {
        let ps = self.header.page_size as usize;
        if out.len() != ps {
            return Err(ArchiveError::OutOfBounds {
                addr: 0,
                len: out.len() as u64,
                memory_len: ps as u64,
            });
        }
        let limit = self.header.max_chain as usize;
        let mut chain: Vec<(PageHash, &[u8])> = Vec::new();
        let mut cur = hash;
        loop {
            if cur.is_zero() {
                out.fill(0);
                break;
            }
            let e = self
                .obj_entry(cur)?
                .ok_or(ArchiveError::MissingObject { hash: cur })?;
            match self.object_of(&e)? {
                rewind_store::ObjectRef::Full { encoding, bytes } => {
                    codec::decode_full(encoding, bytes, out)
                        .map_err(|source| ArchiveError::Codec { hash: cur, source })?;
                    break;
                }
                rewind_store::ObjectRef::Delta { parent, runs, .. } => {
                    if chain.len() >= limit {
                        return Err(ArchiveError::ChainTooLong { hash, limit });
                    }
                    chain.push((cur, runs));
                    cur = parent;
                }
            }
        }
        for (h, runs) in chain.iter().rev() {
            codec::apply_delta(out, runs).map_err(|source| ArchiveError::Codec { hash: *h, source })?;
        }
        // Content addressing is only as good as this check: a page whose bytes were
        // edited (and its segment checksum re-sealed) must not be returned as `hash`.
        // One xxh3-128 pass over a page costs far less than decoding it.
        let found = self.hasher.page(out);
        if found != hash {
            return Err(ArchiveError::ObjectHashMismatch { hash, found });
        }
        Ok(())
    }

    /// Read `out.len()` bytes at `addr` of a record's memory.
    pub fn read(&self, id: RecordId, addr: u64, out: &mut [u8]) -> Result<(), ArchiveError> {
        let e = self.rec_entry(id.0)?;
        let len = out.len() as u64;
        if addr.checked_add(len).is_none_or(|end| end > e.memory_len) {
            return Err(ArchiveError::OutOfBounds {
                addr,
                len,
                memory_len: e.memory_len,
            });
        }
        let ps = self.header.page_size as u64;
        let mut buf = vec![0u8; ps as usize];
        // Finding one page walks change lists back to a checkpoint; past a few pages it
        // is cheaper to rebuild the record's page vector once.
        let first_page = addr / ps;
        let pages_touched = if len == 0 {
            0
        } else {
            (addr + len - 1) / ps - first_page + 1
        };
        let vector = if pages_touched > 8 {
            Some(self.pages(id)?)
        } else {
            None
        };
        let mut done = 0usize;
        while (done as u64) < len {
            let a = addr + done as u64;
            let idx = u32::try_from(a / ps).map_err(|_| ArchiveError::OutOfBounds {
                addr,
                len,
                memory_len: e.memory_len,
            })?;
            let off = (a % ps) as usize;
            let take = (ps as usize - off).min(out.len() - done);
            let h = match &vector {
                Some(v) => v.get(idx as usize).copied().ok_or(ArchiveError::OutOfBounds {
                    addr,
                    len,
                    memory_len: e.memory_len,
                })?,
                None => self.page_at(id, idx)?,
            };
            self.read_page(h, &mut buf)?;
            let (Some(dst), Some(src)) = (out.get_mut(done..done + take), buf.get(off..off + take)) else {
                break;
            };
            dst.copy_from_slice(src);
            done += take;
        }
        Ok(())
    }

    /// Read bytes of `iteration` on the timeline.
    pub fn read_at(&self, iteration: u64, addr: u64, out: &mut [u8]) -> Result<(), ArchiveError> {
        let id = self.at(iteration)?.id;
        self.read(id, addr, out)
    }

    // ---- inspection: change lists, blame, diff, objects -------------------------------

    /// How a record is stored: the summary plus its checkpoint flag and counters.
    pub fn record_detail(&self, id: RecordId) -> Result<RecordDetail, ArchiveError> {
        let e = self.rec_entry(id.0)?;
        let (_, m) = self.rec_meta(&e)?;
        let mut info = info_of(&e);
        info.on_timeline = self.tl_lookup(e.iteration)? == Some(e.id);
        Ok(RecordDetail {
            info,
            checkpoint: m.checkpoint != 0,
            hops: m.hops.to_native(),
            pages_changed: m.pages_changed.to_native(),
            bytes_stored: m.bytes_stored.to_native(),
            globals: m.globals_len.to_native(),
        })
    }

    /// The stored change list of a record (`None` for a checkpoint, which stores its full
    /// page vector instead), restricted to the slots `pages` and to the record's memory.
    /// A binary search in the list: O(log changes + slots in range).
    fn stored_changes(
        &self,
        e: &RecEntry,
        pages: std::ops::RangeInclusive<u32>,
    ) -> Result<Option<Vec<(u32, PageHash)>>, ArchiveError> {
        let (data, m) = self.rec_meta(e)?;
        if m.checkpoint != 0 {
            return Ok(None);
        }
        let n = self.pages_count(m.memory_len.to_native(), e.seg)?;
        let (start, len) = (m.list_start.to_native(), m.list_len.to_native() as u64);
        let ch = slice_of(&data.changes, start, len, e.seg, "change list out of its segment")?;
        let from = ch.partition_point(|c| c.index.to_native() < *pages.start());
        let out = ch
            .get(from..)
            .unwrap_or(&[])
            .iter()
            .map(|c| (c.index.to_native(), PageHash(c.hash)))
            .take_while(|(i, _)| i <= pages.end())
            .filter(|(i, _)| (*i as usize) < n)
            .collect();
        Ok(Some(out))
    }

    /// The pages a record changed against its parent, by slot, with their new hashes.
    ///
    /// For a record stored as a change list this is the list (slots past the record's
    /// memory left out); for a checkpoint it is computed by comparing its page vector
    /// with its parent's (slots past the parent's memory count as zero pages); for a root
    /// it is every non-zero page.
    pub fn changes(&self, id: RecordId) -> Result<Vec<(u32, PageHash)>, ArchiveError> {
        let e = self.rec_entry(id.0)?;
        if let Some(c) = self.stored_changes(&e, 0..=u32::MAX)? {
            return Ok(c);
        }
        let pages = self.pages(id)?;
        let parent = match e.parent {
            NONE => Vec::new(),
            p => self.pages(RecordId(p))?,
        };
        Ok(pages
            .iter()
            .enumerate()
            .filter(|(i, h)| parent.get(*i).copied().unwrap_or(PageHash::ZERO) != **h)
            .map(|(i, h)| (i as u32, *h))
            .collect())
    }

    /// The pages in `pages` a record changed against its parent (as [`Archive::changes`],
    /// restricted to a range of slots). Costs a binary search for a change list and one
    /// page lookup per slot in the parent for a checkpoint.
    pub fn changes_in(
        &self,
        id: RecordId,
        pages: std::ops::RangeInclusive<u32>,
    ) -> Result<Vec<(u32, PageHash)>, ArchiveError> {
        let e = self.rec_entry(id.0)?;
        self.changes_in_entry(&e, pages)
    }

    fn changes_in_entry(
        &self,
        e: &RecEntry,
        pages: std::ops::RangeInclusive<u32>,
    ) -> Result<Vec<(u32, PageHash)>, ArchiveError> {
        if let Some(c) = self.stored_changes(e, pages.clone())? {
            return Ok(c);
        }
        let n = self.pages_count(e.memory_len, e.seg)?;
        let mut out = Vec::new();
        let last = (*pages.end()).min(u32::try_from(n).unwrap_or(u32::MAX).saturating_sub(1));
        if n == 0 || *pages.start() > last {
            return Ok(out);
        }
        for i in *pages.start()..=last {
            let now = self.page_at(RecordId(e.id), i)?;
            let before = match e.parent {
                NONE => PageHash::ZERO,
                p => self.page_at(RecordId(p), i)?,
            };
            if now != before {
                out.push((i, now));
            }
        }
        Ok(out)
    }

    /// The latest record at or before `id` (following parents) at which any byte of
    /// `[addr, addr + len)` changed: a reverse watchpoint, with the semantics of
    /// [`History::blame`]. `None` when the bytes are the same in every record back to the
    /// oldest and are all zero.
    ///
    /// Walks back record by record, but touches only each record's index entry and a
    /// binary search in its change list; bytes are read only at records whose change list
    /// touches the range's pages.
    pub fn blame(&self, id: RecordId, addr: u64, len: u64) -> Result<Option<Blame>, ArchiveError> {
        Ok(self.blame_chain(id, addr, len, 1)?.into_iter().next())
    }

    /// Up to `limit` successive changes of `[addr, addr + len)` walking back from `id`:
    /// the first is [`Archive::blame`]; each next one is the blame of the bytes as they
    /// were just before the previous change. The last may have `at_oldest` set.
    pub fn blame_chain(
        &self,
        id: RecordId,
        addr: u64,
        len: u64,
        limit: usize,
    ) -> Result<Vec<Blame>, ArchiveError> {
        let mut cur = self.rec_entry(id.0)?;
        let memory_len = cur.memory_len;
        if len == 0 || addr.checked_add(len).is_none_or(|e| e > memory_len) {
            return Err(ArchiveError::OutOfBounds {
                addr,
                len,
                memory_len,
            });
        }
        let n = usize_of(len, cur.seg)?;
        let ps = self.header.page_size as u64;
        let (first, last) = ((addr / ps) as u32, ((addr + len - 1) / ps) as u32);
        let mut here = vec![0u8; n];
        let mut before = vec![0u8; n];
        self.read(RecordId(cur.id), addr, &mut here)?;
        let mut out = Vec::new();
        while out.len() < limit {
            let parent = match cur.parent {
                NONE => None,
                p if p >= cur.id => {
                    return Err(ArchiveError::Inconsistent {
                        offset: cur.seg,
                        reason: "record's parent is not an earlier record",
                    })
                }
                p => Some(self.rec_entry(p)?),
            };
            let Some(parent) = parent else {
                if here.iter().any(|b| *b != 0) {
                    out.push(Blame {
                        record: RecordId(cur.id),
                        iteration: cur.iteration,
                        at_oldest: true,
                    });
                }
                break;
            };
            if !self.changes_in_entry(&cur, first..=last)?.is_empty() {
                // Bytes past a smaller parent memory count as zeros.
                let present = usize_of(parent.memory_len.saturating_sub(addr).min(len), cur.seg)?;
                before.fill(0);
                if let Some(b) = before.get_mut(..present).filter(|b| !b.is_empty()) {
                    self.read(RecordId(parent.id), addr, b)?;
                }
                if before != here {
                    out.push(Blame {
                        record: RecordId(cur.id),
                        iteration: cur.iteration,
                        at_oldest: false,
                    });
                    std::mem::swap(&mut here, &mut before);
                }
            }
            // Parents have smaller record numbers (checked above): the walk ends.
            cur = parent;
        }
        Ok(out)
    }

    /// Pages that differ between two records (slots past the shorter memory count as
    /// zero pages), in increasing order.
    pub fn diff(&self, a: RecordId, b: RecordId) -> Result<Vec<u32>, ArchiveError> {
        let (pa, pb) = (self.pages(a)?, self.pages(b)?);
        let n = pa.len().max(pb.len());
        Ok((0..n)
            .filter(|i| {
                pa.get(*i).copied().unwrap_or(PageHash::ZERO) != pb.get(*i).copied().unwrap_or(PageHash::ZERO)
            })
            .map(|i| i as u32)
            .collect())
    }

    /// Every page object in the file: how it is stored, without decoding it.
    pub fn objects(&self) -> Result<Vec<ObjectInfo>, ArchiveError> {
        let [objs, _, _, _] = self.run_refs()?;
        let mut out = Vec::new();
        for r in &objs {
            for e in self.run(r)? {
                let e = ObjEntry::from(e);
                let (_, m) = self.data_entry(
                    e.seg,
                    e.pos,
                    |d| &d.objects,
                    |m| m.hash == e.hash && m.kind == e.kind,
                    OBJECT_REASONS,
                )?;
                let kind = ObjectKind::from_tag(m.kind).ok_or(ArchiveError::Inconsistent {
                    offset: e.seg,
                    reason: "unknown object kind",
                })?;
                out.push(ObjectInfo {
                    hash: PageHash(e.hash),
                    kind,
                    parent: (kind == ObjectKind::Delta).then_some(PageHash(m.parent)),
                    depth: e.depth,
                    stored_len: m.len.to_native(),
                });
            }
        }
        Ok(out)
    }

    // ---- whole-file operations -------------------------------------------------------

    /// Load everything into a [`History`]: every record (timeline and abandoned), every
    /// object, every input; the head is the last commit's. Rebuilds each record's
    /// snapshot and checks its state hash.
    pub fn to_history(&self) -> Result<History, ArchiveError> {
        self.load(false)
    }

    /// [`Archive::to_history`]; with `deep`, also check every stored record field
    /// against what it can be derived from (see [`Archive::verify`]).
    fn load(&self, deep: bool) -> Result<History, ArchiveError> {
        let seed = self.header.seed;
        let config = StoreConfig::new(self.page_size())
            .seed(seed)
            .max_chain(self.header.max_chain);
        let hasher = rewind_store::Hasher::new(seed, self.page_size());
        let [objs, recs, inputs, _] = self.run_refs()?;
        // Records and their snapshots, in id order (parents come first).
        struct Loaded {
            e: RecEntry,
            snapshot: Snapshot,
            changes: Vec<(u32, PageHash)>,
            pages_changed: u32,
            bytes_stored: u64,
        }
        let mut loaded: Vec<Loaded> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut refs: HashMap<PageHash, u32> = HashMap::new();
        let mut last_id = None;
        for r in &recs {
            for e in self.run(r)? {
                let e = RecEntry::from(e);
                if last_id.is_some_and(|l| l >= e.id) {
                    return Err(ArchiveError::Inconsistent {
                        offset: r.seg,
                        reason: "record index out of order",
                    });
                }
                last_id = Some(e.id);
                let (data, m) = self.rec_meta(&e)?;
                let n = self.pages_count(e.memory_len, e.seg)?;
                let (start, len) = (m.list_start.to_native(), m.list_len.to_native() as u64);
                let parent = match e.parent {
                    NONE => None,
                    p => Some(*index.get(&p).ok_or(ArchiveError::Inconsistent {
                        offset: e.seg,
                        reason: "record's parent is not an earlier record",
                    })?),
                };
                let pages: PageVec = if m.checkpoint != 0 {
                    let v = slice_of(&data.pages, start, len, e.seg, "page vector out of its segment")?;
                    if v.len() != n {
                        return Err(ArchiveError::Inconsistent {
                            offset: e.seg,
                            reason: "checkpoint length differs from the memory length",
                        });
                    }
                    v.iter().map(|p| PageHash(*p)).collect()
                } else {
                    let p = parent
                        .and_then(|p| loaded.get(p))
                        .ok_or(ArchiveError::Inconsistent {
                            offset: e.seg,
                            reason: "change list without a parent",
                        })?;
                    let mut v = p.snapshot.pages().clone();
                    if v.len() > n {
                        v.truncate(n);
                    }
                    while v.len() < n {
                        v.push_back(PageHash::ZERO);
                    }
                    let ch = slice_of(&data.changes, start, len, e.seg, "change list out of its segment")?;
                    for c in ch {
                        let i = c.index.to_native() as usize;
                        if i < n {
                            v.set(i, PageHash(c.hash));
                        }
                    }
                    v
                };
                let gs = slice_of(
                    &data.globals,
                    m.globals_start.to_native(),
                    m.globals_len.to_native() as u64,
                    e.seg,
                    "globals out of their segment",
                )?;
                let globals = gs
                    .iter()
                    .map(|g| global_of(g, e.seg))
                    .collect::<Result<Vec<_>, _>>()?;
                let snapshot = Snapshot::from_parts(&hasher, pages, e.memory_len, globals);
                if snapshot.state_hash() != PageHash(e.state_hash) {
                    return Err(ArchiveError::StateHashMismatch {
                        record: RecordId(e.id),
                        stored: PageHash(e.state_hash),
                        computed: snapshot.state_hash(),
                    });
                }
                let changes: Vec<(u32, PageHash)> = match parent.and_then(|p| loaded.get(p)) {
                    Some(p) => rewind_snapshot::diff(&p.snapshot, &snapshot)
                        .into_iter()
                        .map(|i| (i, snapshot.page(i as usize)))
                        .collect(),
                    None => snapshot
                        .pages()
                        .iter()
                        .enumerate()
                        .filter(|(_, h)| !h.is_zero())
                        .map(|(i, h)| (i as u32, *h))
                        .collect(),
                };
                if deep {
                    let parent_entry = parent.and_then(|p| loaded.get(p)).map(|p| &p.e);
                    self.check_record(&e, data, m, parent_entry, &changes, gs)?;
                }
                if parent.is_some() {
                    for (_, h) in changes.iter().filter(|c| !c.1.is_zero()) {
                        *refs.entry(*h).or_default() += 1;
                    }
                } else {
                    for h in snapshot.pages().iter().filter(|h| !h.is_zero()) {
                        *refs.entry(*h).or_default() += 1;
                    }
                }
                index.insert(e.id, loaded.len());
                loaded.push(Loaded {
                    e,
                    snapshot,
                    changes,
                    pages_changed: m.pages_changed.to_native(),
                    bytes_stored: m.bytes_stored.to_native(),
                });
            }
        }
        // Objects: every referenced page and the delta bases under it, bases first.
        let mut entries: HashMap<PageHash, ObjEntry> = HashMap::new();
        for r in &objs {
            for e in self.run::<ArchivedObjEntry>(r)? {
                entries.insert(PageHash(e.hash), ObjEntry::from(e));
            }
        }
        // Every referenced page goes into the store as a full page (lz4 or raw): the
        // in-memory store chooses its own delta layout as the history moves on.
        let mut store = PageStore::new(config);
        let mut wanted: Vec<(PageHash, u32)> = refs.into_iter().collect();
        wanted.sort_unstable();
        let mut page = vec![0u8; self.header.page_size as usize];
        let mut scratch = codec::Scratch::new();
        for (h, n) in wanted {
            if !entries.contains_key(&h) {
                return Err(ArchiveError::MissingObject { hash: h });
            }
            self.read_page(h, &mut page)?;
            let (encoding, bytes) = codec::encode_full(&page, &mut scratch);
            store.insert_object(h, Object::Full { encoding, bytes }, n)?;
        }
        let mut history = History::from_loaded_store(store);
        for r in &inputs {
            for ie in self.run(r)? {
                let ie = InputEntry::from(ie);
                let bytes = self.input_bytes(&ie)?;
                history.push_loaded_input(PageHash(ie.hash), bytes.into());
            }
        }
        for l in loaded {
            let input = (l.e.has_input != 0).then_some(PageHash(l.e.input));
            history.push_loaded_record(
                RecordId(l.e.id),
                l.e.iteration,
                (l.e.parent != NONE).then_some(RecordId(l.e.parent)),
                l.snapshot,
                l.changes,
                input,
                l.pages_changed,
                l.bytes_stored,
            )?;
        }
        let head = self.head();
        if let Some(h) = head {
            if history.record(h).is_none() {
                return Err(ArchiveError::NoSuchRecord(h));
            }
        }
        history.finish_loading(head, self.next_record_id()?)?;
        Ok(history)
    }

    /// The stored fields of one record that `verify` can derive, checked against what
    /// they derive from: the index entry, the parent, the change list recomputed from
    /// the two page vectors, the counts.
    fn check_record(
        &self,
        e: &RecEntry,
        data: &ArchivedDataSeg,
        m: &ArchivedRecMeta,
        parent: Option<&RecEntry>,
        changes: &[(u32, PageHash)],
        globals: &[ArchivedGlobalRec],
    ) -> Result<(), ArchiveError> {
        let bad = |reason| {
            Err(ArchiveError::Inconsistent {
                offset: e.seg,
                reason,
            })
        };
        if m.iteration.to_native() != e.iteration
            || m.memory_len.to_native() != e.memory_len
            || m.state_hash != e.state_hash
            || m.input != e.input
            || m.has_input != e.has_input
            || m.hops.to_native() != e.hops
        {
            return bad("record index and record disagree");
        }
        if m.has_input > 1 || m.checkpoint > 1 {
            return bad("a flag is neither 0 nor 1");
        }
        if m.has_input == 0 && e.input != [0; 16] {
            return bad("an input hash on a record without input");
        }
        if m.has_input == 1 && self.input_entry(PageHash(e.input))?.is_none() {
            return bad("record names an input the archive does not hold");
        }
        if parent.is_some_and(|p| p.iteration >= e.iteration) {
            return bad("iteration not after its parent's");
        }
        let list_len = m.list_len.to_native() as u64;
        if m.checkpoint != 0 {
            if e.hops != 0 || e.since != 0 {
                return bad("checkpoint with change-list counters");
            }
        } else {
            let Some(p) = parent else {
                return bad("change list without a parent");
            };
            if p.hops.checked_add(1) != Some(e.hops) || p.since.checked_add(list_len) != Some(e.since) {
                return bad("hops or entries since the checkpoint do not follow the parent's");
            }
            if e.hops > self.header.checkpoint_hops {
                return bad("more change lists than the checkpoint interval");
            }
            // The stored list must be exactly the pages that differ from the parent's
            // vector: no omitted slot, no slot that did not change, sorted (reads
            // binary-search it).
            let stored = slice_of(
                &data.changes,
                m.list_start.to_native(),
                list_len,
                e.seg,
                "change list out of its segment",
            )?;
            let same = stored.len() == changes.len()
                && stored
                    .iter()
                    .zip(changes)
                    .all(|(c, (i, h))| c.index.to_native() == *i && c.hash == h.0);
            if !same {
                return bad("change list differs from the difference of the page vectors");
            }
        }
        // `pages_changed` counts the slots that differ from the parent. A record with
        // no parent in the file is either a first capture (every non-zero page) or one
        // a compaction cut from its expired parent, whose count is against a parent
        // the file no longer holds: only bounded by the slots of a 4 GiB memory.
        let ps = self.header.page_size as u64;
        let pages_changed = m.pages_changed.to_native();
        let derived_ok = match parent {
            Some(_) => pages_changed as usize == changes.len(),
            None => pages_changed as u64 <= MAX_MEMORY / ps,
        };
        if !derived_ok {
            return bad("pages_changed differs from the pages that changed");
        }
        if m.bytes_stored.to_native() > m.pages_changed.to_native() as u64 * ps {
            return bad("bytes_stored exceeds a full page per changed page");
        }
        for g in globals {
            let v = global_of(g, e.seg)?;
            if v.to_bits().to_le_bytes() != g.bits {
                return bad("global bits beyond its type's width");
            }
        }
        Ok(())
    }

    /// Check every index field against the entries and segments it describes: run
    /// bounds and key ranges, order within and across runs, counts, object and input
    /// entries against their metadata and bytes, the timeline against the head's chain
    /// of parents.
    fn check_index(&self) -> Result<(), ArchiveError> {
        let Some(root) = self.root()? else { return Ok(()) };
        let root_off = self.commit.map_or(0, |c| c.trailer.root);
        let bad = |offset, reason| ArchiveError::Inconsistent { offset, reason };
        let [objs, recs, inputs, tl] = self.run_refs()?;
        /// Each run non-empty, strictly sorted by key, `first`/`last` its end keys.
        fn runs_ok<E: IndexEntry>(
            a: &Archive,
            runs: &[RunRef],
        ) -> Result<Vec<(RunRef, Vec<u64>)>, ArchiveError> {
            let mut out = Vec::new();
            for r in runs {
                let v = a.run::<E>(r)?;
                let bad = |reason| ArchiveError::Inconsistent {
                    offset: r.seg,
                    reason,
                };
                if v.is_empty() {
                    return Err(bad("empty index run"));
                }
                if v.windows(2).any(|w| matches!(w, [x, y] if x.key() >= y.key())) {
                    return Err(bad("index run out of order"));
                }
                let (Some(f), Some(l)) = (v.first(), v.last()) else {
                    return Err(bad("empty index run"));
                };
                if f.key().range_key() != r.first || l.key().range_key() != r.last {
                    return Err(bad("index run's key range differs from its entries"));
                }
                out.push((*r, v.iter().map(|e| e.key().range_key()).collect()));
            }
            Ok(out)
        }
        runs_ok::<ArchivedObjEntry>(self, &objs)?;
        runs_ok::<ArchivedInputEntry>(self, &inputs)?;
        for (table, runs) in [
            (
                "record runs overlap or are out of order",
                runs_ok::<ArchivedRecEntry>(self, &recs)?,
            ),
            (
                "timeline runs overlap or are out of order",
                runs_ok::<ArchivedTlEntry>(self, &tl)?,
            ),
        ] {
            if runs
                .windows(2)
                .any(|w| matches!(w, [a, b] if a.0.last >= b.0.first))
            {
                return Err(bad(root_off, table));
            }
        }
        // Records: the count, and record numbers below the next one.
        let mut n_recs = 0u64;
        let mut max_id = None;
        for r in &recs {
            for e in self.run::<ArchivedRecEntry>(r)? {
                n_recs += 1;
                max_id = Some(e.id.to_native());
            }
        }
        if n_recs != root.record_count.to_native() {
            return Err(bad(root_off, "record count differs from the record index"));
        }
        if max_id.is_some_and(|m| m >= root.next_record_id.to_native()) {
            return Err(bad(root_off, "next record number is not after every record"));
        }
        // Objects: each hash once, counted, agreeing with its metadata; a delta's depth
        // one more than its base's, full pages at depth 0.
        let mut depths: HashMap<[u8; 16], u8> = HashMap::new();
        for r in &objs {
            for e in self.run::<ArchivedObjEntry>(r)? {
                if depths.insert(e.hash, e.depth).is_some() {
                    return Err(bad(r.seg, "an object is indexed twice"));
                }
            }
        }
        if depths.len() as u64 != root.object_count.to_native() {
            return Err(bad(root_off, "object count differs from the object index"));
        }
        for r in &objs {
            for e in self.run::<ArchivedObjEntry>(r)? {
                let e = ObjEntry::from(e);
                let (_, m) = self.obj_meta(&e)?;
                let ok = match ObjectKind::from_tag(m.kind) {
                    Some(ObjectKind::Raw | ObjectKind::Lz4) => m.depth == 0 && m.parent == [0; 16],
                    Some(ObjectKind::Delta) => {
                        m.depth <= self.header.max_chain
                            && m.parent != [0; 16]
                            && depths.get(&m.parent).and_then(|d| d.checked_add(1)) == Some(m.depth)
                    }
                    None => false,
                };
                if !ok {
                    return Err(bad(e.seg, "object kind, depth or delta base is wrong"));
                }
            }
        }
        // Inputs: each once, its bytes hashing to its name.
        let mut seen = HashSet::new();
        for r in &inputs {
            for e in self.run::<ArchivedInputEntry>(r)? {
                let e = InputEntry::from(e);
                if !seen.insert(e.hash) {
                    return Err(bad(r.seg, "an input is indexed twice"));
                }
                if self.hasher.bytes(self.input_bytes(&e)?) != PageHash(e.hash) {
                    return Err(bad(e.seg, "input bytes do not hash to their name"));
                }
            }
        }
        // The timeline is the head's chain of parents, from a root, by iteration.
        let mut prev: Option<u64> = None;
        for r in &tl {
            for t in self.run::<ArchivedTlEntry>(r)? {
                let rec = self.rec_entry(t.id.to_native())?;
                let expected_parent = prev.unwrap_or(NONE);
                if rec.iteration != t.iteration.to_native() || rec.parent != expected_parent {
                    return Err(bad(r.seg, "timeline is not the head's chain of parents"));
                }
                prev = Some(rec.id);
            }
        }
        if prev.unwrap_or(NONE) != root.head.to_native() {
            return Err(bad(root_off, "timeline does not end at the head"));
        }
        Ok(())
    }

    /// Check everything: every segment and trailer of the committed part (framing,
    /// checksum, rkyv validation, each commit complete), every index field against the
    /// entries it describes, every record field against what it derives from (its index
    /// entry, its parent, the difference of the page vectors), every object and input
    /// against its hash, every record's state hash, the timeline as the head's chain of
    /// parents, and that the whole archive loads into a consistent history.
    ///
    /// The checksum seed is in the header, so an edited and re-sealed file passes the
    /// checksums; this is what catches it. The fields nothing derives (creation time,
    /// writer parameters, capture statistics within their bounds) are listed in
    /// `docs/format.md`, "What `verify` proves".
    pub fn verify(&self) -> Result<VerifyReport, ArchiveError> {
        let mut rep = VerifyReport::default();
        let end = self.committed_end();
        let mut off = HEADER_LEN as u64;
        let mut prev_trailer = NONE;
        while off < end {
            let at = usize_of(off, off)?;
            if Trailer::has_magic(self.bytes(), at) {
                let t = self.check_commit(off, &mut u64::MAX.clone())?;
                if t.seq != rep.commits {
                    return Err(ArchiveError::BadSegment {
                        offset: off,
                        reason: "commit sequence numbers do not count up from 0",
                    });
                }
                if t.prev != prev_trailer {
                    return Err(ArchiveError::BadSegment {
                        offset: off,
                        reason: "trailer does not name the previous trailer",
                    });
                }
                prev_trailer = off;
                rep.commits += 1;
                off += TRAILER_LEN as u64;
                continue;
            }
            let h = SegHeader::decode(self.bytes(), off, end, self.header.seed)?;
            let p = self.payload_at(off, h, end)?;
            match h.kind {
                SegKind::Data => drop(rkyv::access::<ArchivedDataSeg, rancor::Error>(p).map_err(vmsg(off))?),
                SegKind::Runs => drop(rkyv::access::<ArchivedRunsSeg, rancor::Error>(p).map_err(vmsg(off))?),
                SegKind::Root => drop(rkyv::access::<ArchivedRootSeg, rancor::Error>(p).map_err(vmsg(off))?),
            }
            rep.segments += 1;
            let payload_end = off + SEG_HEADER_LEN as u64 + h.len;
            let next = align_up(payload_end).ok_or(ArchiveError::BadSegment {
                offset: off,
                reason: "segment length overflows",
            })?;
            let pad = self
                .bytes()
                .get(usize_of(payload_end, off)?..usize_of(next, off)?)
                .ok_or(ArchiveError::Truncated {
                    offset: off,
                    needed: next - off,
                    file_len: end,
                })?;
            if pad.iter().any(|b| *b != 0) {
                return Err(ArchiveError::BadSegment {
                    offset: off,
                    reason: "non-zero padding after the payload",
                });
            }
            off = next;
        }
        let [objs, _, _, _] = self.run_refs()?;
        let mut buf = vec![0u8; self.header.page_size as usize];
        for r in &objs {
            for e in self.run::<ArchivedObjEntry>(r)? {
                // `read_page` rehashes what it rebuilt (`ObjectHashMismatch`).
                self.read_page(PageHash(e.hash), &mut buf)?;
                rep.objects += 1;
            }
        }
        self.check_index()?;
        let history = self.load(true)?;
        rep.records = history.len() as u64;
        if let Err(_msg) = history.check() {
            return Err(ArchiveError::Inconsistent {
                offset: end,
                reason: "the loaded history's reference counts do not add up",
            });
        }
        Ok(rep)
    }
}
