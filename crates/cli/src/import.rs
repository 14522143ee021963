//! Building an archive from raw memory images: one file per iteration, or one file of
//! equal-size frames.
//!
//! Each frame is compared with the previous one page by page (a memcmp, cheaper than
//! hashing), the differing pages go to [`History::capture`] as its dirty hint, and the
//! record is appended to the archive with [`ArchiveWriter::append`]. Records already
//! written are dropped from the in-memory history, so memory stays at about one frame
//! plus its stored pages however long the input is. The archive is written to a
//! temporary file beside the output and renamed over it only when complete.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

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
}

impl ImportOptions {
    /// Defaults for a page size: random seed, iterations from 0.
    pub fn new(page_size: u64) -> Self {
        ImportOptions {
            page_size,
            seed: None,
            first_iteration: 0,
        }
    }
}

/// What an import wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
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

/// True when two paths name the same existing file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Refuse an output path that is one of the inputs.
pub fn check_output(out: &Path, inputs: &[&Path]) -> Result<()> {
    for i in inputs {
        if same_file(out, i) {
            bail!("refusing to write {}: it is an input", out.display());
        }
    }
    Ok(())
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
    check_output(out, &frames.paths())?;
    let ps = opts.page_size as usize;
    let mut config = HistoryConfig::new(opts.page_size)?;
    if let Some(seed) = opts.seed {
        config = config.seed(seed);
    }
    let mut history = History::new(config)?;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".rewind-import-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut writer = ArchiveWriter::create(tmp.path(), &history, Durability::Manual)
        .with_context(|| format!("cannot create {}", tmp.path().display()))?;
    let n = usize::try_from(frame_size).context("frame size does not fit in memory")?;
    let mut prev = vec![0u8; n];
    let mut hint: Vec<u32> = Vec::new();
    let mut rep = ImportReport {
        frames: count,
        frame_size,
        bytes_in: 0,
        archive_bytes: 0,
        pages_changed: 0,
        objects: 0,
    };
    let total = frame_size * count;
    // A reader thread reads the next frame while this one is captured and appended
    // (two frames in flight, buffers recycled), so reading overlaps the work.
    std::thread::scope(|scope| -> Result<()> {
        // The channels live in this closure: when it returns (an error included) they
        // drop, so the reader's next send or receive fails and it ends.
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(1);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        for _ in 0..2 {
            free_tx.send(vec![0u8; n]).context("reader buffers")?;
        }
        scope.spawn(move || {
            let read = |k: u64, buf: &mut [u8], packed: &mut Option<File>| -> Result<()> {
                match (frames, packed) {
                    (Frames::Files(paths), _) => {
                        let p = paths
                            .get(usize::try_from(k).context("too many frames")?)
                            .context("frame list changed")?;
                        let mut f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
                        f.read_exact(buf)
                            .with_context(|| format!("cannot read {} ({} bytes expected)", p.display(), n))
                    }
                    (Frames::Packed { path, .. }, Some(f)) => f
                        .read_exact(buf)
                        .with_context(|| format!("cannot read frame {k} of {}", path.display())),
                    (Frames::Packed { .. }, None) => bail!("packed input not open"),
                }
            };
            let mut packed = match frames {
                Frames::Packed { path, .. } => match File::open(path) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        let _ = full_tx.send(Err(
                            anyhow::Error::new(e).context(format!("cannot open {}", path.display()))
                        ));
                        return;
                    }
                },
                Frames::Files(_) => None,
            };
            for k in 0..count {
                let Ok(mut buf) = free_rx.recv() else { return };
                let r = read(k, &mut buf, &mut packed).map(|()| buf);
                let failed = r.is_err();
                if full_tx.send(r).is_err() || failed {
                    return;
                }
            }
        });
        for k in 0..count {
            let cur = full_rx.recv().context("the frame reader stopped")??;
            hint.clear();
            for (i, (a, b)) in prev.chunks_exact(ps).zip(cur.chunks_exact(ps)).enumerate() {
                if k == 0 || a != b {
                    hint.push(i as u32);
                }
            }
            rep.pages_changed += hint.len() as u64;
            let iteration = opts.first_iteration + k;
            history
                .capture(iteration, &cur, &[], Some(&hint), None)
                .with_context(|| format!("cannot capture frame {k}"))?;
            let a = writer.append(&history).context("cannot append to the archive")?;
            rep.objects += a.objects;
            // Keep only the head in memory: it is the parent of the next record.
            let old: Vec<_> = history
                .records()
                .filter(|r| Some(r.id()) != history.head().map(|h| h.id()))
                .map(|r| r.id())
                .collect();
            for id in old {
                history
                    .remove(id)
                    .context("cannot drop a written record from memory")?;
            }
            let done = std::mem::replace(&mut prev, cur);
            let _ = free_tx.send(done);
            rep.bytes_in += frame_size;
            progress(rep.bytes_in, total);
        }
        Ok(())
    })?;
    writer.sync().context("cannot sync the archive")?;
    rep.archive_bytes = writer.len();
    drop(writer);
    tmp.persist(out)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move the archive into place at {}", out.display()))?;
    Ok(rep)
}
