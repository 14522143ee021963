//! Building an archive from raw memory images: one file per iteration, or one file of
//! equal-size frames.
//!
//! Each frame is compared with the previous one page by page (a memcmp, cheaper than
//! hashing), the differing pages go to [`History::capture`] as its dirty hint, and the
//! records are appended to the archive with [`ArchiveWriter::append`] in batches
//! ([`ImportOptions::batch`] frames, or fewer when their changed pages pass
//! [`BATCH_BYTES`]): each commit writes an index and a trailer, so a commit per frame
//! made the archive of many small frames larger than its input. Reading and
//! comparing run on a second thread, a cache-sized chunk at a time, and only the
//! differing pages cross to the thread that captures. Records already written are
//! dropped from the in-memory history, so memory stays at about two frames plus the
//! stored pages of one batch however long the input is. The archive is written through
//! [`crate::output::Output`]: to a temporary file beside the output, renamed over it
//! only when complete.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};

use anyhow::{bail, Context, Result};
use rewind_archive::{ArchiveWriter, Durability};
use rewind_history::{History, HistoryConfig};
use rewind_store::PageSize;
use serde::Serialize;

/// Where the frames come from.
#[derive(Clone, Debug)]
pub enum Frames {
    /// One raw memory image per file, one file per iteration, in order.
    Files(Vec<PathBuf>),
    /// One file of back-to-back frames of `frame_size` bytes.
    Packed {
        /// The file.
        path: PathBuf,
        /// Bytes per frame.
        frame_size: u64,
    },
}

impl Frames {
    /// The input files.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Frames::Files(v) => v.iter().map(PathBuf::as_path).collect(),
            Frames::Packed { path, .. } => vec![path.as_path()],
        }
    }
}

/// How to import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Page size of the archive.
    pub page_size: u64,
    /// Hash seed (`None`: a random one).
    pub seed: Option<u64>,
    /// The iteration number of the first frame.
    pub first_iteration: u64,
    /// Frames per commit (at least 1; fewer when a batch's changed pages pass
    /// [`BATCH_BYTES`]).
    pub batch: u64,
}

/// Frames committed together by default: few enough commits that their indexes and
/// trailers cost little beside the pages (100,000 frames of 2 KiB: 62 MiB in 100
/// commits, 401 MiB in one commit per frame; `docs/cli.md`), while the records held in
/// memory until their commit stay few.
pub const DEFAULT_BATCH: u64 = 1000;

/// Bytes of changed pages after which a batch is committed early, whatever its frame
/// count: the pages wait in memory until their commit.
pub const BATCH_BYTES: u64 = 64 << 20;

impl ImportOptions {
    /// Defaults for a page size: random seed, iterations from 0.
    pub fn new(page_size: u64) -> Self {
        ImportOptions {
            page_size,
            seed: None,
            first_iteration: 0,
            batch: DEFAULT_BATCH,
        }
    }
}

/// What an import wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    /// Always `"import"`.
    pub kind: &'static str,
    /// Frames (iterations) imported.
    pub frames: u64,
    /// Bytes per frame.
    pub frame_size: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes of the archive written.
    pub archive_bytes: u64,
    /// Pages that differed from the previous frame, over all frames.
    pub pages_changed: u64,
    /// Page objects written.
    pub objects: u64,
    /// Commits written after the first, empty one (one per batch).
    pub commits: u64,
}

/// Check the frames before anything is written: sizes equal, non-zero, a whole number
/// of pages, at most 4 GiB. Returns `(frame size, frame count)`.
pub fn plan(frames: &Frames, page_size: u64) -> Result<(u64, u64)> {
    let ps = PageSize::new(page_size).map_err(|_| {
        anyhow::anyhow!(
            "page size {page_size} is not a power of two from {} to {}",
            PageSize::MIN,
            PageSize::MAX
        )
    })?;
    let ps = ps.bytes() as u64;
    let size_of = |p: &Path| -> Result<u64> {
        let m = std::fs::metadata(p).with_context(|| format!("cannot open frame file {}", p.display()))?;
        if !m.is_file() {
            bail!("{} is not a regular file", p.display());
        }
        Ok(m.len())
    };
    let (frame_size, count) = match frames {
        Frames::Files(paths) => {
            let Some(first) = paths.first() else {
                bail!("no frame files given");
            };
            let size = size_of(first)?;
            for p in paths.iter().skip(1) {
                let s = size_of(p)?;
                if s != size {
                    bail!(
                        "frames of unequal size: {} is {size} bytes but {} is {s} bytes",
                        first.display(),
                        p.display()
                    );
                }
            }
            (size, paths.len() as u64)
        }
        Frames::Packed { path, frame_size } => {
            let size = size_of(path)?;
            if *frame_size == 0 {
                bail!("--frame-size must be at least one page");
            }
            if size % frame_size != 0 {
                bail!(
                    "frames of unequal size: {} is {size} bytes, not a whole number of {frame_size}-byte frames (the last frame would be {} bytes)",
                    path.display(),
                    size % frame_size
                );
            }
            (*frame_size, size / frame_size)
        }
    };
    if frame_size == 0 || count == 0 {
        bail!("the frames are empty");
    }
    if frame_size % ps != 0 {
        bail!("frame size {frame_size} is not a multiple of the page size {ps}");
    }
    if frame_size > 1 << 32 {
        bail!("frame size {frame_size} is over the 4 GiB wasm32 memory limit");
    }
    Ok((frame_size, count))
}

/// Import frames into a new archive at `out` (replacing it only when complete).
/// `progress` gets `(bytes read, total bytes)`.
pub fn import(
    frames: &Frames,
    out: &Path,
    opts: &ImportOptions,
    progress: crate::Progress<'_>,
) -> Result<ImportReport> {
    let (frame_size, count) = plan(frames, opts.page_size)?;
    last_iteration(opts.first_iteration, count)?;
    crate::output::check(out, &frames.paths(), true)?;
    let mut config = HistoryConfig::new(opts.page_size)?;
    if let Some(seed) = opts.seed {
        config = config.seed(seed);
    }
    let history = History::new(config)?;
    let output = crate::output::Output::new(out)?;
    // A writer appending to an archive at `out` would lose its appends to the
    // replacement: refuse while one holds its lock.
    let _lock = output.lock()?;
    output.write_file(|tmp| write_archive(frames, tmp, opts, history, frame_size, count, progress))
}

/// Read the frames and write their archive to `path`.
fn write_archive(
    frames: &Frames,
    path: &Path,
    opts: &ImportOptions,
    mut history: History,
    frame_size: u64,
    count: u64,
    progress: crate::Progress<'_>,
) -> Result<ImportReport> {
    let ps = usize::try_from(opts.page_size).context("page size does not fit in memory")?;
    let mut writer = ArchiveWriter::create(path, &history, Durability::Manual)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let n = usize::try_from(frame_size).context("frame size does not fit in memory")?;
    let mut rep = ImportReport {
        kind: "import",
        frames: count,
        frame_size,
        bytes_in: 0,
        archive_bytes: 0,
        pages_changed: 0,
        objects: 0,
        commits: 0,
    };
    let batch = opts.batch.max(1);
    let mut pending = Pending::default();
    let total = frame_size * count;
    // Two threads share the work. The reader reads each frame a chunk at a time into a
    // small buffer that stays in cache, compares each page with the previous frame (its
    // own copy, updated in place) and sends on only the pages that differ; this thread
    // writes them into its copy of the memory and captures it with those pages as the
    // hint. Memory is two frames plus a few batches in flight.
    std::thread::scope(|scope| -> Result<()> {
        // The channels live in this closure: when it returns (an error included) they
        // drop, so the reader's next send or receive fails and it ends.
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Result<Batch>>(IN_FLIGHT);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Batch>();
        scope.spawn(move || {
            let mut reader = FrameReader {
                frames,
                page_size: ps,
                prev: vec![0u8; n],
                chunk: vec![0u8; CHUNK.min(n)],
                file: None,
                out: full_tx,
                free: free_rx,
            };
            for k in 0..count {
                match reader.frame(k) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        let _ = reader.out.send(Err(e));
                        return;
                    }
                }
            }
        });
        let mut memory = vec![0u8; n];
        let mut hint: Vec<u32> = Vec::new();
        for k in 0..count {
            hint.clear();
            loop {
                let batch = full_rx.recv().context("the frame reader stopped")??;
                for (&i, page) in batch.pages.iter().zip(batch.bytes.chunks_exact(ps)) {
                    let at = i as usize * ps;
                    memory
                        .get_mut(at..at + ps)
                        .context("a changed page lies outside the frame")?
                        .copy_from_slice(page);
                }
                hint.extend_from_slice(&batch.pages);
                let end = batch.end;
                let _ = free_tx.send(batch);
                if end {
                    break;
                }
            }
            rep.pages_changed += hint.len() as u64;
            let iteration = opts
                .first_iteration
                .checked_add(k)
                .context("iteration number past 2^64 - 1")?;
            history
                .capture(iteration, &memory, &[], Some(&hint), None)
                .with_context(|| format!("cannot capture frame {k}"))?;
            pending.frames += 1;
            pending.bytes += hint.len() as u64 * ps as u64;
            if pending.frames >= batch || pending.bytes >= BATCH_BYTES || k + 1 == count {
                commit(&mut writer, &mut history, &mut rep)?;
                pending = Pending::default();
            }
            rep.bytes_in += frame_size;
            progress(rep.bytes_in, total);
        }
        Ok(())
    })?;
    writer.sync().context("cannot sync the archive")?;
    rep.archive_bytes = writer.len();
    Ok(rep)
}

/// Frames captured since the last commit.
#[derive(Default)]
struct Pending {
    /// Frames.
    frames: u64,
    /// Bytes of their changed pages.
    bytes: u64,
}

/// Append the records captured since the last commit as one commit, then drop them from
/// memory but the head, the parent of the next record.
fn commit(writer: &mut ArchiveWriter, history: &mut History, rep: &mut ImportReport) -> Result<()> {
    let a = writer.append(history).context("cannot append to the archive")?;
    rep.objects += a.objects;
    rep.commits += 1;
    let head = history.head().map(|h| h.id());
    let old: Vec<_> = history
        .records()
        .map(|r| r.id())
        .filter(|id| Some(*id) != head)
        .collect();
    for id in old {
        history
            .remove(id)
            .context("cannot drop a written record from memory")?;
    }
    Ok(())
}

/// The iteration of the last of `count` frames numbered from `first`, or an error when it
/// would be past the largest iteration number.
pub fn last_iteration(first: u64, count: u64) -> Result<u64> {
    count
        .checked_sub(1)
        .and_then(|n| first.checked_add(n))
        .with_context(|| {
            format!(
                "--first-iteration {first} with {count} frames runs past the largest iteration number ({})",
                u64::MAX
            )
        })
}

/// Bytes read and compared at a time: small enough to stay in a core's cache between the
/// read and the comparison, a multiple of every page size (at most 64 KiB).
const CHUNK: usize = 256 << 10;

/// Batches queued between the reader and the importer: enough for the reader to keep
/// reading while the importer captures and appends a frame (a burst of a millisecond
/// or more), at most about `IN_FLIGHT` × 2 × [`CHUNK`] bytes.
const IN_FLIGHT: usize = 16;

/// Pages of one frame that differ from the previous frame, in the order of the frame; a
/// batch holds about [`CHUNK`] bytes of pages. The frame's last batch has `end` set (it
/// may hold no page). In the first frame every page counts as differing.
#[derive(Default)]
struct Batch {
    /// Page indexes, ascending.
    pages: Vec<u32>,
    /// Their bytes, back to back.
    bytes: Vec<u8>,
    /// True for the last batch of a frame.
    end: bool,
}

/// The reader thread: reads frames, keeps the previous one, sends the pages that differ.
struct FrameReader<'a> {
    frames: &'a Frames,
    page_size: usize,
    /// The previous frame, brought up to date page by page as the next one is read.
    prev: Vec<u8>,
    /// Where each chunk is read.
    chunk: Vec<u8>,
    /// The file being read: the packed input, or the current frame's file.
    file: Option<File>,
    out: SyncSender<Result<Batch>>,
    /// Batches the importer is done with, to reuse.
    free: Receiver<Batch>,
}

impl FrameReader<'_> {
    /// Read frame `k` and send its differing pages. False when the importer has gone (it
    /// stopped on an error of its own).
    fn frame(&mut self, k: u64) -> Result<bool> {
        let ps = self.page_size;
        let frame_size = self.prev.len();
        let (file, name) = open_frame(self.frames, &mut self.file, frame_size, k)?;
        let mut batch = reuse(&self.free);
        let mut first: u32 = 0;
        let chunks = frame_size.div_ceil(CHUNK);
        for (c, old) in self.prev.chunks_mut(CHUNK).enumerate() {
            let cur = self
                .chunk
                .get_mut(..old.len())
                .context("read buffer smaller than a chunk")?;
            file.read_exact(cur)
                .with_context(|| format!("cannot read {name}"))?;
            for (i, (o, p)) in (first..).zip(old.chunks_exact_mut(ps).zip(cur.chunks_exact(ps))) {
                if k == 0 || o != p {
                    o.copy_from_slice(p);
                    batch.pages.push(i);
                    batch.bytes.extend_from_slice(p);
                }
            }
            first += u32::try_from(old.len() / ps).context("too many pages in a frame")?;
            let last = c + 1 == chunks;
            if last || batch.bytes.len() >= CHUNK {
                batch.end = last;
                if self.out.send(Ok(std::mem::take(&mut batch))).is_err() {
                    return Ok(false);
                }
                if !last {
                    batch = reuse(&self.free);
                }
            }
        }
        Ok(true)
    }
}

/// An empty batch, reusing one the importer returned when there is one.
fn reuse(free: &Receiver<Batch>) -> Batch {
    let mut b = free.try_recv().unwrap_or_default();
    b.pages.clear();
    b.bytes.clear();
    b.end = false;
    b
}

/// The file to read frame `k` from, positioned at its start, and its name for errors.
/// `slot` keeps the packed input open between frames.
fn open_frame<'f>(
    frames: &Frames,
    slot: &'f mut Option<File>,
    frame_size: usize,
    k: u64,
) -> Result<(&'f mut File, String)> {
    match frames {
        Frames::Files(paths) => {
            let p = paths
                .get(usize::try_from(k).context("too many frames")?)
                .context("frame list changed")?;
            let f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let name = format!("{} ({frame_size} bytes expected)", p.display());
            Ok((slot.insert(f), name))
        }
        Frames::Packed { path, .. } => {
            let f = match slot.take() {
                Some(f) => f,
                None => File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
            };
            Ok((slot.insert(f), format!("frame {k} of {}", path.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_archive::Archive;

    /// Frames of several read chunks (the last one partial), with writes on both sides of
    /// chunk boundaries, in the first and last page, and frames equal to their previous.
    fn frames(frame_size: usize, count: usize) -> Vec<Vec<u8>> {
        let mut mem = vec![0u8; frame_size];
        let mut out = Vec::new();
        for f in 0..count {
            let at = [
                0,
                CHUNK - 1,
                CHUNK,
                2 * CHUNK + 17 * f,
                frame_size - 1,
                (f * 7919) % frame_size,
            ];
            if f % 3 != 2 {
                for (i, &a) in at.iter().enumerate() {
                    mem[a] = mem[a].wrapping_add((f + i + 1) as u8);
                }
            }
            out.push(mem.clone());
        }
        out
    }

    fn check(frame_size: usize, page_size: u64, packed: bool) {
        let dir = tempfile::tempdir().expect("temp dir");
        let want = frames(frame_size, 9);
        let input = if packed {
            let path = dir.path().join("frames.bin");
            std::fs::write(&path, want.concat()).expect("write frames");
            Frames::Packed {
                path,
                frame_size: frame_size as u64,
            }
        } else {
            let mut paths = Vec::new();
            for (i, f) in want.iter().enumerate() {
                let p = dir.path().join(format!("{i}.bin"));
                std::fs::write(&p, f).expect("write frame");
                paths.push(p);
            }
            Frames::Files(paths)
        };
        let out = dir.path().join("out.rwd");
        let mut opts = ImportOptions::new(page_size);
        opts.seed = Some(5);
        opts.first_iteration = 100;
        let rep = import(&input, &out, &opts, &mut |_, _| {}).expect("import");
        assert_eq!(rep.frames, want.len() as u64);
        let archive = Archive::open(&out).expect("open");
        let mut got = vec![0u8; frame_size];
        for (i, f) in want.iter().enumerate() {
            archive.read(100 + i as u64, 0, &mut got).expect("read");
            assert!(got == *f, "frame {i} reads back different");
        }
    }

    #[test]
    fn frames_of_several_chunks_read_back_exactly() {
        check(2 * CHUNK + 5 * 4096, 4096, true);
        check(2 * CHUNK + 5 * 4096, 4096, false);
    }

    #[test]
    fn largest_pages_across_chunks_read_back_exactly() {
        check(3 * CHUNK + (64 << 10), 64 << 10, true);
    }
}
