//! rewind's archive: capture (hinted) + append per frame + GC step, then open and read
//! one old frame; and the open of the finished file against a postcard (serde) decode
//! of the same index.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use rewind::Collector;
use rewind::History;
use rewind_archive::{AppendReport, Archive, ArchiveWriter, Durability};

use super::{drive, history, policy, split_first, wall_cpu, GitRun, Peer, PeerRun};
use crate::args::Config;
use crate::workload::Spec;
use crate::{ms, Res};

/// Open the archive and read all of frame `iteration`'s memory with `Archive::read`.
fn read_frame(path: &Path, iteration: u64, buf: &mut [u8]) -> Res<()> {
    let a = Archive::open(path)?;
    let id = a.at(iteration)?.id;
    a.read_record(id, 0, buf)?;
    black_box(&buf);
    Ok(())
}

/// The same through the page vector: `Archive::pages` once, then `read_page` per page
/// (one change-list walk for the frame instead of one per page).
fn read_frame_pages(path: &Path, iteration: u64, buf: &mut [u8]) -> Res<()> {
    let a = Archive::open(path)?;
    let id = a.at(iteration)?.id;
    let pages = a.pages(id)?;
    let ps = a.page_size().bytes();
    for (page, h) in buf.chunks_mut(ps).zip(pages) {
        a.read_page(h, page)?;
    }
    black_box(&buf);
    Ok(())
}

/// Bytes of every page object in the archive at `path`, as stored.
fn object_bytes(path: &Path) -> Res<u64> {
    Ok(Archive::open(path)?
        .objects()?
        .iter()
        .map(|o| u64::from(o.stored_len))
        .sum())
}

/// Bytes of the archive at `path` past offset `from` that are index and commit framing
/// rather than data: runs segments, root segments and trailers, apart; and the data
/// segments' bytes (page objects, records, globals, inputs).
fn index_bytes(path: &Path, from: u64) -> Res<[u64; 4]> {
    use rewind_archive::format::{align_up, SegHeader, SegKind, Trailer, SEG_HEADER_LEN, TRAILER_LEN};
    let seed = Archive::open(path)?.info()?.seed;
    let bytes = std::fs::read(path)?;
    let end = bytes.len() as u64;
    let (mut off, mut total) = (from, [0u64; 4]);
    while off < end {
        if Trailer::has_magic(&bytes, off as usize) {
            total[2] += TRAILER_LEN as u64;
            off += TRAILER_LEN as u64;
            continue;
        }
        let h = SegHeader::decode(&bytes, off, end, seed)?;
        let next = align_up(off + SEG_HEADER_LEN as u64 + h.len).ok_or("segment length overflows")?;
        match h.kind {
            SegKind::Runs => total[0] += next - off,
            SegKind::Root => total[1] += next - off,
            SegKind::Data => total[3] += next - off,
            _ => {}
        }
        off = next;
    }
    Ok(total)
}

/// The sum of [`index_bytes`] per record, logged apart (runs, roots, trailers).
fn index_bytes_per_record(path: &Path, from: u64, records: f64, what: &str) -> Res<f64> {
    let [runs, roots, trailers, data] = index_bytes(path, from)?.map(|b| b as f64 / records);
    eprintln!(
        "  archive, {what}: per record, index runs {runs:.0} B, root {roots:.0} B, trailer {trailers:.0} B; data segments {data:.0} B"
    );
    Ok(runs + roots + trailers)
}

/// `reps` timed runs of `read` (ms each).
fn timed(reps: usize, mut read: impl FnMut() -> Res<()>) -> Res<Vec<f64>> {
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        read()?;
        out.push(ms(t.elapsed()));
    }
    Ok(out)
}

/// Frames per commit of the archive run beside the per-frame one ([`Batched`]).
pub const BATCH: u64 = 8;

/// The same history appended to a second archive once every [`BATCH`] frames (one
/// commit holds the records of [`BATCH`] captures), beside the per-frame archive in the
/// same run: what the per-commit index and framing cost, per record and per frame.
#[derive(Clone, Debug, Default)]
pub struct Batched {
    /// Frames per commit.
    pub every: u64,
    /// Each commit after frame 0's (the last one takes the frames left over): wall ms
    /// and the appending thread's CPU ms.
    pub commit: Vec<f64>,
    pub commit_cpu: Vec<f64>,
    /// Frames those commits hold (frames 1..).
    pub frames: usize,
    /// Bytes on disk, of page objects, and of index runs, roots and trailers per record.
    pub disk_per_frame: f64,
    pub page_bytes_per_frame: f64,
    pub index_bytes_per_frame: f64,
}

/// The second archive of [`run`], appended every [`BATCH`] frames, with what it
/// measured so far.
struct BatchedFile {
    writer: Option<ArchiveWriter>,
    path: std::path::PathBuf,
    len0: u64,
    objects0: u64,
    stats: Batched,
}

impl BatchedFile {
    /// A batched file beside the per-frame one, or none when the history does not keep
    /// the records of a whole batch.
    fn create(dir: &Path, h: &History, window: usize) -> Res<BatchedFile> {
        let path = dir.join("frames-batched.rwd");
        let writer = if window as u64 >= BATCH {
            Some(ArchiveWriter::create(&path, h, Durability::Manual)?)
        } else {
            None
        };
        Ok(BatchedFile {
            writer,
            path,
            len0: 0,
            objects0: 0,
            stats: Batched {
                every: BATCH,
                ..Batched::default()
            },
        })
    }

    /// After the capture of frame `f` (`first`: the first frame of the run): a commit
    /// every [`BATCH`] frames.
    fn on_frame(&mut self, f: u64, first: bool, h: &History) -> Res<()> {
        let Some(wb) = self.writer.as_mut().filter(|_| f.is_multiple_of(BATCH)) else {
            return Ok(());
        };
        let (wall, cpu, _) = timed_append(wb, h)?;
        if first {
            self.len0 = wb.len();
            self.objects0 = object_bytes(&self.path)?;
        } else {
            self.stats.commit.push(wall);
            self.stats.commit_cpu.push(cpu);
        }
        Ok(())
    }

    /// Commit the frames left over, measure the file and remove it.
    fn finish(mut self, h: &History, frames: usize, per_record: f64) -> Res<Option<Batched>> {
        let Some(mut wb) = self.writer.take() else {
            return Ok(None);
        };
        let (wall, cpu, rep) = timed_append(&mut wb, h)?;
        if rep.committed {
            self.stats.commit.push(wall);
            self.stats.commit_cpu.push(cpu);
        }
        wb.sync()?;
        let len = wb.len();
        drop(wb);
        let b = &mut self.stats;
        b.frames = frames.saturating_sub(1);
        b.disk_per_frame = (len - self.len0) as f64 / per_record;
        b.page_bytes_per_frame = (object_bytes(&self.path)? - self.objects0) as f64 / per_record;
        b.index_bytes_per_frame =
            index_bytes_per_record(&self.path, self.len0, per_record, "committing every 8 frames")?;
        std::fs::remove_file(&self.path)?;
        Ok((self.stats.frames > 0).then(|| self.stats.clone()))
    }
}

impl Batched {
    /// Append wall ms and CPU ms per frame (the commits' sum over the frames they hold).
    pub fn per_frame(&self) -> (f64, f64) {
        let n = self.frames.max(1) as f64;
        (
            self.commit.iter().sum::<f64>() / n,
            self.commit_cpu.iter().sum::<f64>() / n,
        )
    }
}

/// The calling thread's minor page faults and involuntary context switches so far
/// (`/proc/thread-self/stat` and `status`), for `COMPARE_TRACE`: what a slow append
/// spent its CPU time on besides the append's own work.
fn fault_and_switch_counts() -> (u64, u64) {
    let minflt = std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; minflt is the 10th field.
            let rest = s.rsplit_once(')')?.1;
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0);
    let switches = std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    (minflt, switches)
}

/// One timed append: wall ms and the thread's CPU ms, and what it wrote.
fn timed_append(
    w: &mut ArchiveWriter,
    h: &rewind::layers::history::History,
) -> Res<(f64, f64, AppendReport)> {
    let (rep, wall, cpu) = wall_cpu(|| Ok(w.append(h)?))?;
    Ok((wall, cpu, rep))
}

/// One `COMPARE_TRACE` line: a frame's time, its append (wall, CPU ms) and what the
/// append wrote, with the minor faults and involuntary switches it took.
fn trace_frame(
    f: u64,
    total: f64,
    (append, cpu): (f64, f64),
    rep: &AppendReport,
    counts: Option<(u64, u64)>,
) {
    eprintln!(
        "trace archive frame {f} total_ms {total:.4} append_ms {append:.4} append_cpu_ms {cpu:.4} objects {} checkpoints {} bytes {} minor_faults {} preempted {}",
        rep.objects,
        rep.checkpoints,
        rep.bytes,
        counts.map_or(0, |c| c.0),
        counts.map_or(0, |c| c.1),
    );
}

/// rewind's archive: capture (hinted) + append per frame + GC step; then open and read
/// frame [`Spec::old_frame`]. The size and ingest time after [`Spec::git_window`]
/// frames go to the returned [`GitRun`] (git's run over the same frames fills the
/// rest). Also runs the postcard-vs-rkyv open comparison on the finished file, and
/// appends the same history every [`BATCH`] frames to a second file ([`Batched`];
/// outside the per-frame figures).
pub fn run(spec: &Spec, cfg: &Config, dir: &Path) -> Res<(PeerRun, GitRun, SerdeRun)> {
    let (git_frames, old) = (spec.git_window(), spec.old_frame());
    let mut src = spec.source()?;
    let page = src.page_size();
    let m = src.memory().len();
    let path = dir.join("frames.rwd");
    let mut h = history(page)?;
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual)?;
    let mut batched = BatchedFile::create(dir, &h, cfg.window)?;
    let mut side = Vec::new();
    let mut gc = Collector::new(policy(cfg.window));
    let mut git = GitRun::default();
    let mut ingest = Duration::ZERO;
    let mut len0 = 0u64;
    let trace = std::env::var_os("COMPARE_TRACE").is_some();
    let mut f_done = 0usize;
    let (mut appends, mut appends_cpu) = (Vec::new(), Vec::new());
    let globals: Vec<_> = (0..spec.frames as u64).map(|f| spec.globals_at(f)).collect();
    let mut objects0 = 0u64;
    let times = drive(src.as_mut(), spec.frames, |f, mem, hint| {
        let t = Instant::now();
        let g = globals.get(f as usize).map_or(&[][..], |g| &g[..]);
        h.capture(f, mem, g, hint, None)?;
        let counts0 = trace.then(fault_and_switch_counts);
        let (append, append_cpu, rep) = timed_append(&mut w, &h)?;
        let counts = counts0.map(|(f0, s0)| {
            let (f1, s1) = fault_and_switch_counts();
            (f1.saturating_sub(f0), s1.saturating_sub(s0))
        });
        if f_done > 0 {
            appends.push(append);
            appends_cpu.push(append_cpu);
        }
        // The batched file: timed apart and left out of this frame's time.
        let tb = Instant::now();
        batched.on_frame(f, f_done == 0, &h)?;
        let aside = tb.elapsed();
        side.push(ms(aside));
        gc.collect_some(&mut h)?;
        if trace {
            trace_frame(f, ms(t.elapsed() - aside), (append, append_cpu), &rep, counts);
        }
        f_done += 1;
        if f_done == 1 {
            len0 = w.len();
        }
        if f_done == git_frames {
            w.sync()?;
            ingest += t.elapsed() - aside;
            git.archive_ingest_s = ingest.as_secs_f64();
            git.archive_bytes = w.len();
        } else {
            ingest += t.elapsed() - aside;
        }
        if f_done == 1 {
            // Outside the ingest time: the page bytes of the first frame, so the bytes
            // per record are those of the frames after it.
            objects0 = object_bytes(&path)?;
        }
        Ok(())
    })?;
    let times: Vec<f64> = times.iter().zip(&side).map(|(t, s)| t - s).collect();
    let t = Instant::now();
    w.sync()?;
    ingest += t.elapsed();
    let frames = times.len();
    let len = w.len();
    drop(w);
    let per_record = (frames as f64 - 1.0).max(1.0);
    let batched = batched.finish(&h, frames, per_record)?;
    let page_bytes = (object_bytes(&path)? - objects0) as f64 / per_record;
    let index_bytes = index_bytes_per_record(&path, len0, per_record, "committing every frame")?;
    let (first, capture) = split_first(times);
    let mut buf = vec![1u8; m];
    let open_read = timed(cfg.reps, || read_frame(&path, old, &mut buf))?;
    git.archive_read = open_read.clone();
    let mut check = vec![1u8; m];
    let open_read_pages = timed(cfg.reps, || read_frame_pages(&path, old, &mut check))?;
    if check != buf {
        return Err("Archive::read and pages + read_page disagree".into());
    }
    let serde = serde_vs_rkyv(&path, old, cfg.reps.max(5) * 3)?;
    Ok((
        PeerRun {
            capture,
            first_frame_ms: first,
            disk_per_frame: Some((len - len0) as f64 / per_record),
            page_bytes_per_frame: Some(page_bytes),
            index_bytes_per_frame: Some(index_bytes),
            disk_first: Some(len0 as f64),
            open_read,
            open_read_pages,
            append: appends,
            append_cpu: appends_cpu,
            batched,
            ingest_s: Some(ingest.as_secs_f64()),
            ..PeerRun::new(Peer::Archive)
        },
        git,
        serde,
    ))
}

/// The open of an archive (rkyv, zero-copy) against a postcard decode of its index.
#[derive(Default)]
pub struct SerdeRun {
    pub records: usize,
    pub objects: usize,
    pub blob_bytes: usize,
    pub archive_bytes: u64,
    /// `Archive::open` + `state_hash`, ms per repetition.
    pub rkyv: Vec<f64>,
    /// Read + postcard decode of the same index + the same lookup, ms per repetition.
    pub postcard: Vec<f64>,
}

/// The archive's index as a serde structure: every record (`RecEntry`), every page
/// object (`ObjEntry`) and the timeline, with the same fields as the rkyv runs.
#[derive(serde::Serialize, serde::Deserialize)]
struct SerdeIndex {
    /// hash, segment, position, depth, kind
    objects: Vec<([u8; 16], u64, u32, u8, u8)>,
    records: Vec<SerdeRecord>,
    /// (iteration, record id), sorted by iteration
    timeline: Vec<(u64, u64)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SerdeRecord {
    id: u64,
    iteration: u64,
    parent: u64,
    memory_len: u64,
    seg: u64,
    state_hash: [u8; 16],
    input: [u8; 16],
    has_input: u8,
    pos: u32,
    hops: u32,
    since: u64,
}

/// The serde index of the archive at `path`.
fn serde_index(a: &Archive) -> Res<SerdeIndex> {
    let recs = a.records()?;
    let info = a.info()?;
    let loaded = a.to_history()?;
    let mut objects: Vec<([u8; 16], u64, u32, u8, u8)> = loaded
        .store()
        .iter()
        .enumerate()
        .map(|(i, (h, o, _))| {
            let kind = match o {
                rewind::layers::store::ObjectRef::Delta { .. } => 2,
                _ => 1,
            };
            (h.0, 4096 + i as u64 / 64, i as u32, 0, kind)
        })
        .collect();
    // Objects the file holds that the loaded history no longer references (the file
    // never drops anything): same shape, so the index has the file's object count.
    let mut k = 0u64;
    while (objects.len() as u64) < info.objects {
        let h = xxhash_rust::xxh3::xxh3_128(&k.to_le_bytes()).to_le_bytes();
        objects.push((h, 4096 + k / 64, k as u32, 1, 2));
        k += 1;
    }
    objects.sort_unstable_by_key(|o| o.0);
    Ok(SerdeIndex {
        objects,
        records: recs
            .iter()
            .map(|r| SerdeRecord {
                id: r.id.0,
                iteration: r.iteration,
                parent: r.parent.map_or(u64::MAX, |p| p.0),
                memory_len: r.memory_len,
                seg: 64,
                state_hash: r.state_hash.0,
                input: [0; 16],
                has_input: 0,
                pos: r.id.0 as u32,
                hops: 0,
                since: 0,
            })
            .collect(),
        timeline: recs
            .iter()
            .filter(|r| r.on_timeline)
            .map(|r| (r.iteration, r.id.0))
            .collect(),
    })
}

fn serde_vs_rkyv(path: &Path, iteration: u64, reps: usize) -> Res<SerdeRun> {
    let a = Archive::open(path)?;
    let idx = serde_index(&a)?;
    let blob = postcard::to_allocvec(&idx)?;
    let blob_path = path.with_extension("postcard");
    std::fs::write(&blob_path, &blob)?;
    let expect = a.state_hash(iteration)?;
    drop(a);
    let mut run = SerdeRun {
        records: idx.records.len(),
        objects: idx.objects.len(),
        blob_bytes: blob.len(),
        archive_bytes: std::fs::metadata(path)?.len(),
        ..SerdeRun::default()
    };
    for _ in 0..reps {
        let t = Instant::now();
        let a = Archive::open(path)?;
        let h = a.state_hash(black_box(iteration))?;
        run.rkyv.push(ms(t.elapsed()));
        if h != expect {
            return Err("the archive's state hash changed between two opens".into());
        }
        let t = Instant::now();
        let bytes = std::fs::read(&blob_path)?;
        let i: SerdeIndex = postcard::from_bytes(&bytes)?;
        let pos = i
            .timeline
            .binary_search_by_key(&iteration, |e| e.0)
            .map_err(|_| "iteration")?;
        let id = i.timeline[pos].1;
        let r = i
            .records
            .binary_search_by_key(&id, |r| r.id)
            .map_err(|_| "record")?;
        let sh = i.records[r].state_hash;
        run.postcard.push(ms(t.elapsed()));
        if sh != expect.0 {
            return Err("the postcard index gives another state hash than the archive".into());
        }
    }
    Ok(run)
}
