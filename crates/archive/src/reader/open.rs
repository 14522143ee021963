//! Opening an archive: the header, the last complete commit found from the end of the
//! file, and what the bytes after it are (a torn write, or damage).

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memmap2::Mmap;
use rewind_store::PageSize;
use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::*;

/// How open treats bytes after the last complete commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scan {
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

    pub(super) fn open_mode(path: &Path, mode: Scan) -> Result<Archive, ArchiveError> {
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

    /// Open an archive whose bytes come from `source` (an object store), fetched on
    /// first touch into the sparse cache file `cache` (created when missing; its
    /// directory must exist) and read in place from there.
    ///
    /// Opening fetches the header and the last `options.tail` bytes in one call of
    /// [`RangeSource::fetch`] (the last trailer and, usually, its root segment), then
    /// reads the rest only as queries touch it, in 64 KiB blocks ([`LAZY_BLOCK`]):
    /// adjacent misses are fetched as one range, and a walk that continues the last
    /// fetch reads ahead by a window that doubles up to `options.max_readahead`. The
    /// cache file's sidecar (`<cache>.blocks`, [`sidecar_path`]) lists the blocks held,
    /// so the next reader reuses them when `options.generation` is the same and the
    /// archive has only grown; each listed block is rehashed on its first use, and one
    /// found damaged is fetched again.
    ///
    /// Everything else is as for [`Archive::open`]: every segment is checksummed on
    /// first touch, so a wrong byte from the source is an error, never a wrong answer.
    /// A failing source is [`ArchiveError::Fetch`], from open or from the query that
    /// needed the bytes. While open, the archive holds an exclusive `flock` on `cache`;
    /// a second reader of the same cache file meanwhile fetches into a private file.
    ///
    /// ```
    /// use std::ops::Range;
    /// use rewind_archive::{Archive, ArchiveWriter, Durability, LazyOptions, RangeSource, SourceError};
    /// use rewind_history::{History, HistoryConfig};
    ///
    /// /// Bytes in memory standing in for an object store.
    /// struct Bytes(Vec<u8>);
    /// impl RangeSource for Bytes {
    ///     fn len(&self) -> u64 {
    ///         self.0.len() as u64
    ///     }
    ///     fn fetch(&self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>, SourceError> {
    ///         Ok(ranges.iter().map(|r| self.0[r.start as usize..r.end as usize].to_vec()).collect())
    ///     }
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let file = dir.path().join("a.rwd");
    /// let mut history = History::new(HistoryConfig::new(1024)?.seed(3))?;
    /// let mut writer = ArchiveWriter::create(&file, &history, Durability::Manual)?;
    /// for frame in 0..10u64 {
    ///     history.capture(frame, &vec![frame as u8; 4096], &[], None, None)?;
    ///     writer.append(&history)?;
    /// }
    /// let source = Box::new(Bytes(std::fs::read(&file)?));
    /// let lazy = Archive::open_lazy(&dir.path().join("cache"), source, &LazyOptions::default())?;
    /// assert_eq!(lazy.state_hash(4)?, history.at(4)?.state_hash());
    /// assert_eq!(lazy.lazy_stats().map(|s| s.fetches), Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_lazy(
        cache: &Path,
        source: Box<dyn RangeSource>,
        options: &LazyOptions,
    ) -> Result<Archive, ArchiveError> {
        let len = source.len();
        if len == 0 {
            return Self::from_backing(Some(cache.to_path_buf()), Backing::Empty, Scan::Strict);
        }
        let lazy = lazy::Lazy::open(cache, source, options)?;
        let tail = options.tail.min(len);
        lazy.ensure(&[(0, (HEADER_LEN as u64).min(len)), (len - tail, tail)])?;
        Self::from_backing(
            Some(cache.to_path_buf()),
            Backing::Lazy(Box::new(lazy)),
            Scan::Strict,
        )
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

    pub(super) fn from_backing(
        path: Option<PathBuf>,
        backing: Backing,
        mode: Scan,
    ) -> Result<Archive, ArchiveError> {
        let head_len = backing.len().min(HEADER_LEN as u64);
        let header = Header::decode(backing.range(0, head_len)?)?;
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
            extras: std::sync::OnceLock::new(),
            hasher: rewind_store::Hasher::new(header.seed, page_size),
        };
        a.find_commit(mode)?;
        Ok(a)
    }

    /// Scan back from the end for the last trailer whose commit checks.
    ///
    /// The cost is O(torn bytes): each 16-aligned offset costs a magic compare, each
    /// magic a 56-byte trailer checksum, and only a trailer whose checksum holds leads
    /// to checksumming its root segment. A torn write never leaves such a trailer
    /// behind an incomplete commit, so in strict mode the first one found decides:
    /// its commit is the last complete one, or the file is damaged. A salvage scan
    /// goes on past damaged commits, with a budget of checksummed root bytes.
    pub(super) fn find_commit(&mut self, mode: Scan) -> Result<(), ArchiveError> {
        let len = self.file_len();
        let limit = len.saturating_mul(2).saturating_add(1 << 20);
        let mut budget = limit;
        let mut p = len.saturating_sub(TRAILER_LEN as u64) & !(ALIGN - 1);
        while p >= HEADER_LEN as u64 {
            usize_of(p, p)?;
            if self.magic_at(p)? && self.trailer_at(p).is_ok() {
                match self.check_commit(p, &mut budget) {
                    Ok(t) => {
                        self.commit = Some(Commit {
                            trailer_off: p,
                            trailer: t,
                        });
                        break;
                    }
                    Err(ArchiveError::ScanLimit { .. }) => return Err(ArchiveError::ScanLimit { limit }),
                    // A lazily read archive whose source or cache failed: not damage.
                    Err(e @ (ArchiveError::Fetch { .. } | ArchiveError::Io { .. })) => return Err(e),
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
    pub(super) fn damaged_tail(&self, from: u64, len: u64) -> Option<(u64, &'static str)> {
        let seed = self.header.seed;
        let (next_seq, prev) = self
            .commit
            .map_or((0, NONE), |c| (c.trailer.seq.saturating_add(1), c.trailer_off));
        let mut pos = from;
        let mut expected = None;
        let mut extra = 0;
        while pos.saturating_add(SEG_HEADER_LEN as u64) <= len {
            let Ok(h) = self.seg_header(pos, len) else {
                break;
            };
            let start = pos + SEG_HEADER_LEN as u64;
            let Some(next) = start.checked_add(h.len).and_then(align_up) else {
                break;
            };
            let Ok(payload) = self.range(start, h.len) else {
                break;
            };
            if h.kind == SegKind::Root && checksum(payload, seed) == h.sum {
                if let Ok(root) = rkyv::access::<ArchivedRootSeg, rancor::Error>(payload) {
                    if root.seq.to_native() == next_seq {
                        let t = Trailer {
                            seq: next_seq,
                            root: pos,
                            head: root.head.to_native(),
                            prev,
                            start: from,
                            extra,
                        };
                        expected = Some((next, t));
                    }
                }
                break;
            }
            if h.kind == SegKind::Extra {
                extra = pos;
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
                    if self.magic_at(p).unwrap_or(false) {
                        return Some((p, "commit trailers are present but none checks"));
                    }
                    p += ALIGN;
                }
            }
            return None;
        };
        let want = t.encode(seed);
        let have = self.range(at, len.saturating_sub(at)).unwrap_or(&[]);
        let (trailer, rest) = have.split_at(have.len().min(TRAILER_LEN));
        if torn_copy(trailer, &want) && rest.iter().all(|b| *b == 0) {
            None
        } else {
            Some((at, "the last commit is complete but its trailer is damaged"))
        }
    }

    pub(super) fn check_commit(&self, p: u64, budget: &mut u64) -> Result<Trailer, ArchiveError> {
        let t = self.trailer_at(p)?;
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
        let h = self.seg_header(t.root, p)?;
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
}
