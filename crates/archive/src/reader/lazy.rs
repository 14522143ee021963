//! A lazily filled backing: an archive whose bytes live elsewhere (an object store)
//! and arrive block by block, on first touch, into a sparse local cache file that is
//! mapped read-only.
//!
//! The cache file has the archive's length; a block (64 KiB) is either absent (a hole,
//! never sliced) or present (written in full, then never written again while this
//! reader lives), so a slice handed out never changes. Misses found by one access are
//! fetched together (adjacent blocks coalesced into one range), and a run of misses
//! that continues the previous fetch (forward or backward, as when the commit chain is
//! walked) doubles a read-ahead window, so a sequential walk costs O(log n) fetches.
//!
//! A sidecar file (`<cache>.blocks`) lists the present blocks with an xxh3-64 of each,
//! so the next reader of the same archive reuses them: each is rehashed on its first
//! use in a process, and a block torn or damaged on disk is fetched again, not reported
//! as damage of the archive.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use memmap2::Mmap;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::ArchiveError;

/// The block size of a lazy cache: the unit fetched, cached and checked.
pub const LAZY_BLOCK: u64 = 64 << 10;

/// The error of a [`RangeSource`]: whatever its transport reports, kept as the source
/// of [`ArchiveError::Fetch`].
pub type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where the bytes of a lazily read archive come from (an object store, a test's
/// buffer). Implementations count and coalesce requests as they see fit; the reader
/// already asks for few, large, block-aligned ranges.
pub trait RangeSource: Send + Sync {
    /// The archive's length in bytes (the end of its last commit).
    fn len(&self) -> u64;

    /// Whether the archive is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of each range, in order. `ranges` are sorted, disjoint, non-empty and
    /// within `0..len()`; each returned buffer must be exactly its range's length (a
    /// shorter one is reported as [`ArchiveError::Fetch`]).
    fn fetch(&self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>, SourceError>;
}

/// How [`Archive::open_lazy`](crate::Archive::open_lazy) reads.
#[derive(Clone, Debug)]
pub struct LazyOptions {
    /// What identifies these bytes beyond their length: blocks cached under another
    /// generation are dropped; blocks cached under the same generation are reused as
    /// far as the old length reaches (a generation's bytes only ever grow by appends).
    pub generation: String,
    /// Bytes at the end of the archive fetched at open with the header, in the same
    /// call: the last trailer and, usually, its root segment (default 256 KiB).
    pub tail: u64,
    /// The largest read-ahead of a sequential walk (default 8 MiB).
    pub max_readahead: u64,
}

impl Default for LazyOptions {
    fn default() -> Self {
        LazyOptions {
            generation: String::new(),
            tail: 256 << 10,
            max_readahead: 8 << 20,
        }
    }
}

/// What a lazy archive has fetched and reused, from [`Archive::lazy_stats`](crate::Archive::lazy_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyStats {
    /// Calls of [`RangeSource::fetch`].
    pub fetches: u64,
    /// Ranges asked for in those calls.
    pub ranges: u64,
    /// Bytes fetched.
    pub bytes_fetched: u64,
    /// Blocks found in the cache file (listed by the sidecar, rehashed on first use).
    pub blocks_reused: u64,
    /// Blocks listed by the sidecar whose bytes no longer matched their hash (fetched
    /// again).
    pub blocks_refetched: u64,
    /// Blocks present now.
    pub blocks_present: u64,
    /// Blocks of the archive.
    pub blocks: u64,
}

const SIDECAR_MAGIC: [u8; 8] = *b"RWDBLKS1";
const SIDECAR_HEADER: u64 = 64;
const ENTRY: u64 = 16;
const ENTRY_MARK: u64 = 0x5257_4442_4c4b_0001;

/// The sidecar of a cache file.
pub fn sidecar_path(cache: &Path) -> PathBuf {
    let mut s = cache.as_os_str().to_owned();
    s.push(".blocks");
    PathBuf::from(s)
}

struct State {
    /// Blocks the sidecar lists, with their hash, not yet checked in this process.
    claimed: HashMap<u64, u64>,
    sidecar: Option<File>,
    /// The blocks of the last fetch.
    last: Option<Range<u64>>,
    /// The read-ahead window in blocks.
    window: u64,
    stats: LazyStats,
}

pub(crate) struct Lazy {
    source: Box<dyn RangeSource>,
    file: File,
    path: PathBuf,
    map: Mmap,
    len: u64,
    /// One bit per block: present (written or checked by this process).
    present: Vec<AtomicU64>,
    state: Mutex<State>,
    max_window: u64,
}

fn blocks_of(len: u64) -> u64 {
    len.div_ceil(LAZY_BLOCK)
}

fn header_bytes(len: u64, generation: &str) -> [u8; SIDECAR_HEADER as usize] {
    let mut b = [0u8; SIDECAR_HEADER as usize];
    b[..8].copy_from_slice(&SIDECAR_MAGIC);
    b[8..16].copy_from_slice(&LAZY_BLOCK.to_le_bytes());
    b[16..24].copy_from_slice(&len.to_le_bytes());
    b[24..40].copy_from_slice(&xxh3_128(generation.as_bytes()).to_le_bytes());
    let sum = xxh3_64(&b[..56]);
    b[56..64].copy_from_slice(&sum.to_le_bytes());
    b
}

fn le(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// The blocks an old sidecar vouches for under `generation` and the new length:
/// `(block, hash)`, or `None` when nothing can be reused.
fn read_sidecar(side: &File, len: u64, generation: &str) -> Option<HashMap<u64, u64>> {
    let mut h = [0u8; SIDECAR_HEADER as usize];
    side.read_exact_at(&mut h, 0).ok()?;
    let want = header_bytes(le(&h, 16), generation);
    if h != want {
        return None;
    }
    let old_len = le(&h, 16);
    if old_len > len {
        return None;
    }
    // The old last block is whole only if the length did not change.
    let usable = if old_len == len {
        blocks_of(len)
    } else {
        old_len / LAZY_BLOCK
    };
    let size = side.metadata().ok()?.len();
    let listed = size.saturating_sub(SIDECAR_HEADER) / ENTRY;
    let n = usable.min(listed);
    let mut entries = vec![0u8; usize::try_from(n * ENTRY).ok()?];
    side.read_exact_at(&mut entries, SIDECAR_HEADER).ok()?;
    let mut out = HashMap::new();
    for (i, e) in entries.chunks_exact(ENTRY as usize).enumerate() {
        if le(e, 0) == ENTRY_MARK {
            out.insert(i as u64, le(e, 8));
        }
    }
    Some(out)
}

impl Lazy {
    /// Open (or create) the cache file at `cache` for `source`, reusing what its
    /// sidecar vouches for. A cache file another live reader holds is left alone: this
    /// reader then uses a private file beside it, removed at once (its blocks are not
    /// kept).
    pub(crate) fn open(
        cache: &Path,
        source: Box<dyn RangeSource>,
        opts: &LazyOptions,
    ) -> Result<Lazy, ArchiveError> {
        let len = source.len();
        let io = |op| ArchiveError::io(op, cache);
        let open_rw = |p: &Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
        };
        let file = open_rw(cache).map_err(io("open the cache file"))?;
        let (file, path, shared) = match file.try_lock() {
            Ok(()) => (file, cache.to_path_buf(), true),
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut s = cache.as_os_str().to_owned();
                s.push(format!(".{}.private", std::process::id()));
                let private = PathBuf::from(s);
                let f =
                    open_rw(&private).map_err(ArchiveError::io("create a private cache file", &private))?;
                f.set_len(0)
                    .map_err(ArchiveError::io("truncate a private cache file", &private))?;
                // Removed now: the open file stays usable, nothing is left behind.
                std::fs::remove_file(&private)
                    .map_err(ArchiveError::io("remove a private cache file", &private))?;
                (f, private, false)
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock the cache file")(e)),
        };
        let mut claimed = HashMap::new();
        let mut sidecar = None;
        if shared {
            let side_path = sidecar_path(cache);
            let side = open_rw(&side_path).map_err(ArchiveError::io("open the cache sidecar", &side_path))?;
            match read_sidecar(&side, len, &opts.generation) {
                Some(c) => claimed = c,
                None => file.set_len(0).map_err(io("reset the cache file"))?,
            }
            let keep = claimed.keys().max().map_or(0, |b| b + 1);
            let side_io = ArchiveError::io("write the cache sidecar", &side_path);
            side.set_len(SIDECAR_HEADER + keep * ENTRY)
                .and_then(|()| side.write_all_at(&header_bytes(len, &opts.generation), 0))
                .map_err(side_io)?;
            sidecar = Some(side);
        }
        file.set_len(len).map_err(io("size the cache file"))?;
        // SAFETY: the mapping is read-only and `len` bytes long, the length the file was
        // just given. The file is this reader's: it holds the cache file's `flock` (or
        // the file is a private one, already unlinked), and rewind changes a locked cache
        // file only through this reader, which writes a block only while no slice of it
        // exists (absent blocks are never sliced) and never writes a block twice. So a
        // slice over present blocks never changes and is never cut off. As for an
        // archive file, a program ignoring the lock could still truncate it; and the
        // bytes are never trusted: every structure is checksummed and validated.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(io("map the cache file"))?;
        let n = blocks_of(len);
        let present = (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Ok(Lazy {
            source,
            file,
            path,
            map,
            len,
            present,
            state: Mutex::new(State {
                claimed,
                sidecar,
                last: None,
                window: 1,
                stats: LazyStats {
                    blocks: n,
                    ..LazyStats::default()
                },
            }),
            max_window: (opts.max_readahead / LAZY_BLOCK).max(1),
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn stats(&self) -> LazyStats {
        self.state.lock().map(|s| s.stats).unwrap_or_default()
    }

    fn is_present(&self, b: u64) -> bool {
        self.present
            .get((b / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (b % 64)) != 0)
    }

    fn set_present(&self, b: u64) {
        if let Some(w) = self.present.get((b / 64) as usize) {
            w.fetch_or(1 << (b % 64), Ordering::Release);
        }
    }

    fn block_range(&self, b: u64) -> Range<u64> {
        b * LAZY_BLOCK..((b + 1) * LAZY_BLOCK).min(self.len)
    }

    /// Make every byte of `ranges` (each `(offset, len)` within the file) present.
    pub(crate) fn ensure(&self, ranges: &[(u64, u64)]) -> Result<(), ArchiveError> {
        let blocks = |&(off, len): &(u64, u64)| {
            let end = off.saturating_add(len).min(self.len);
            (off / LAZY_BLOCK)..end.div_ceil(LAZY_BLOCK)
        };
        if ranges
            .iter()
            .filter(|r| r.1 > 0)
            .all(|r| blocks(r).all(|b| self.is_present(b)))
        {
            return Ok(());
        }
        let mut st = self.state.lock().map_err(|_| ArchiveError::Inconsistent {
            offset: 0,
            reason: "a reader of the cache file panicked",
        })?;
        // Blocks still missing (another thread may have fetched some meanwhile), with
        // those the sidecar vouches for checked against their hash first.
        let mut missing: Vec<u64> = Vec::new();
        let mut buf = Vec::new();
        for r in ranges.iter().filter(|r| r.1 > 0) {
            for b in blocks(r) {
                if self.is_present(b) || missing.last() == Some(&b) {
                    continue;
                }
                if let Some(want) = st.claimed.remove(&b) {
                    let br = self.block_range(b);
                    buf.resize((br.end - br.start) as usize, 0);
                    if self.file.read_exact_at(&mut buf, br.start).is_ok() && xxh3_64(&buf) == want {
                        self.set_present(b);
                        st.stats.blocks_reused += 1;
                        st.stats.blocks_present += 1;
                        continue;
                    }
                    st.stats.blocks_refetched += 1;
                }
                missing.push(b);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_unstable();
        missing.dedup();
        let mut runs: Vec<Range<u64>> = Vec::new();
        for b in missing {
            match runs.last_mut() {
                Some(r) if r.end == b => r.end = b + 1,
                _ => runs.push(b..b + 1),
            }
        }
        if let [run] = runs.as_mut_slice() {
            self.read_ahead(&mut st, run);
        }
        let byte_ranges: Vec<Range<u64>> = runs
            .iter()
            .map(|r| r.start * LAZY_BLOCK..(r.end * LAZY_BLOCK).min(self.len))
            .collect();
        let total: u64 = byte_ranges.iter().map(|r| r.end - r.start).sum();
        let first = byte_ranges.first().map_or(0, |r| r.start);
        let fetch_err = |source: SourceError| ArchiveError::Fetch {
            offset: first,
            len: total,
            source,
        };
        let got = self.source.fetch(&byte_ranges).map_err(fetch_err)?;
        st.stats.fetches += 1;
        st.stats.ranges += byte_ranges.len() as u64;
        if got.len() != byte_ranges.len() {
            return Err(fetch_err(
                format!("{} ranges asked for, {} returned", byte_ranges.len(), got.len()).into(),
            ));
        }
        for (r, bytes) in byte_ranges.iter().zip(&got) {
            if bytes.len() as u64 != r.end - r.start {
                return Err(ArchiveError::Fetch {
                    offset: r.start,
                    len: r.end - r.start,
                    source: format!(
                        "{} bytes returned for a range of {}",
                        bytes.len(),
                        r.end - r.start
                    )
                    .into(),
                });
            }
        }
        for (r, bytes) in byte_ranges.iter().zip(&got) {
            st.stats.bytes_fetched += bytes.len() as u64;
            self.file
                .write_all_at(bytes, r.start)
                .map_err(ArchiveError::io("write the cache file", &self.path))?;
            let mut entries = Vec::with_capacity(bytes.len().div_ceil(LAZY_BLOCK as usize) * ENTRY as usize);
            for chunk in bytes.chunks(LAZY_BLOCK as usize) {
                entries.extend_from_slice(&ENTRY_MARK.to_le_bytes());
                entries.extend_from_slice(&xxh3_64(chunk).to_le_bytes());
            }
            let b0 = r.start / LAZY_BLOCK;
            if let Some(side) = &st.sidecar {
                // Best effort: a sidecar that cannot be written only costs a refetch.
                let _ = side.write_all_at(&entries, SIDECAR_HEADER + b0 * ENTRY);
            }
            for b in b0..r.end.div_ceil(LAZY_BLOCK) {
                st.claimed.remove(&b);
                self.set_present(b);
                st.stats.blocks_present += 1;
            }
        }
        st.last = runs
            .last()
            .cloned()
            .zip(runs.first().cloned())
            .map(|(l, f)| f.start..l.end);
        Ok(())
    }

    /// Widen a lone run of missing blocks when it continues the previous fetch: the
    /// window doubles on each such run (up to the maximum), and resets otherwise. The
    /// widened run stops at the first present block and at the file's ends.
    fn read_ahead(&self, st: &mut State, run: &mut Range<u64>) {
        let n = blocks_of(self.len);
        let sequential = |last: &Range<u64>| {
            let forward = run.start >= last.end && run.start - last.end <= st.window;
            let backward = run.end <= last.start && last.start - run.end <= st.window;
            (forward, backward)
        };
        let (fwd, back) = st.last.as_ref().map_or((false, false), sequential);
        if !(fwd || back) {
            st.window = 1;
            return;
        }
        st.window = (st.window * 2).min(self.max_window);
        if fwd {
            let want = (run.start + st.window).min(n);
            while run.end < want && !self.is_present(run.end) && !st.claimed.contains_key(&run.end) {
                run.end += 1;
            }
        } else {
            let want = run.end.saturating_sub(st.window);
            while run.start > want
                && !self.is_present(run.start - 1)
                && !st.claimed.contains_key(&(run.start - 1))
            {
                run.start -= 1;
            }
        }
    }

    /// The bytes `off..off + len`, fetched first when absent.
    pub(crate) fn slice(&self, off: u64, len: u64) -> Result<&[u8], ArchiveError> {
        let end = off
            .checked_add(len)
            .filter(|e| *e <= self.len)
            .ok_or(ArchiveError::Truncated {
                offset: off,
                needed: len,
                file_len: self.len,
            })?;
        self.ensure(&[(off, len)])?;
        if len == 0 {
            return Ok(&[]);
        }
        let (start, n) = (
            usize::try_from(off).map_err(|_| too_big(off))?,
            usize::try_from(end - off).map_err(|_| too_big(off))?,
        );
        debug_assert!((off / LAZY_BLOCK..end.div_ceil(LAZY_BLOCK)).all(|b| self.is_present(b)));
        // SAFETY: `off..end` lies within the mapping (`end <= self.len`, the mapped
        // length), and every block it covers is present: `ensure` returned only after
        // writing or checking each one, and a present block is never written again while
        // `self` lives (see `Lazy::open`), so the bytes behind the slice stay unchanged
        // for its lifetime, which is tied to `&self` (and so to the mapping).
        #[allow(unsafe_code)]
        let s = unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), n) };
        Ok(s)
    }
}

fn too_big(offset: u64) -> ArchiveError {
    ArchiveError::Inconsistent {
        offset,
        reason: "length does not fit in memory",
    }
}
