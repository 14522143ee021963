//! The comparison harness (issue 8): rewind against the systems users would pick
//! instead, every peer fed exactly the same sequence of frames, every ratio taken from
//! the same run.
//!
//! ```sh
//! cargo run --release -p rewind-bench --bin compare            # full run, updates docs/benchmarks.md
//! cargo run --release -p rewind-bench --bin compare -- --quick # ~1 minute smoke run (no docs update)
//! ```
//!
//! Options: `--quick`, `--workloads a,b` (names or substrings, see `--list`), `--frames N`,
//! `--peers ring,hash,lz4,hint,scan,archive,git,pipe` (`pipe`: the capture pipeline and
//! the GGRS pattern),
//! `--git-frames N`, `--window W`, `--reps R`, `--no-git`, `--recorded PATH` (add a
//! workload replayed from a recorded-frames file, see `rewind_bench::RecordedFrames`),
//! `--write` / `--no-write` (update `docs/benchmarks.md`), `--doc PATH`, `--section NAME`
//! (write to the generated section NAME of the doc instead of the main one, e.g.
//! `guests` for the real-guest recordings).
//!
//! Phases per workload: reference passes (one memcpy and one xxh3-128 of the whole
//! memory), then each peer on a freshly built source: full-copy ring, ring + xxh3-128,
//! lz4 of the whole memory, rewind in memory with and without the dirty hint, rewind's
//! archive, git (`fast-import` + `gc --aggressive`), and the postcard-vs-rkyv open.

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rewind::layers::history::{History, HistoryConfig};
use rewind::{Collector, LiveMemory, Policy};
use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_bench::{FrameSource, Placement, RecordedFrames, Spread, Workload};

const PAGE: usize = 4096;
const MIB: usize = 1 << 20;
/// Frames of a rollback (the restore figure).
const ROLLBACK: u64 = 7;
/// The window the memory figures are quoted for.
const WINDOW_600: usize = 600;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Resident set size of this process, from `/proc/self/statm`.
fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

// ---------------------------------------------------------------------------------------
// Workloads

#[derive(Clone, Debug)]
enum Kind {
    Synthetic {
        memory: usize,
        dirty_pages: usize,
        placement: Placement,
    },
    Recorded(PathBuf),
}

#[derive(Clone, Debug)]
struct Spec {
    name: String,
    kind: Kind,
    frames: usize,
    git_frames: usize,
}

impl Spec {
    fn synthetic(memory: usize, dirty_pages: usize, placement: Placement, frames: usize, git: usize) -> Spec {
        let pages = memory / PAGE;
        let pct = dirty_pages as f64 * 100.0 / pages as f64;
        let mem = if memory.is_multiple_of(MIB) && memory < 100 * MIB {
            format!("{}MiB", memory / MIB)
        } else {
            format!("{}MB", memory / MIB)
        };
        let place = match placement {
            Placement::Clustered => "clustered",
            Placement::Scattered => "scattered",
        };
        // Name by the nominal fraction (16 of 16,384 pages is "0.1%").
        let nominal = [0.1, 1.0, 10.0]
            .into_iter()
            .find(|n: &f64| (pct / n - 1.0).abs() < 0.05);
        let name = if let Some(n) = nominal {
            format!("{mem}-{n}%-{place}")
        } else {
            format!("{mem}-{dirty_pages}p-{place}")
        };
        Spec {
            name,
            kind: Kind::Synthetic {
                memory,
                dirty_pages,
                placement,
            },
            frames,
            git_frames: git,
        }
    }

    fn source(&self) -> Res<Box<dyn FrameSource>> {
        Ok(match &self.kind {
            Kind::Synthetic {
                memory,
                dirty_pages,
                placement,
            } => Box::new(Workload::with_dirty_pages(
                *memory,
                PAGE,
                *dirty_pages,
                *placement,
                0x5eed_0001,
            )),
            Kind::Recorded(path) => Box::new(RecordedFrames::open(path)?),
        })
    }
}

fn default_specs(quick: bool) -> Vec<Spec> {
    let m64 = 64 * MIB;
    let p64 = m64 / PAGE;
    let pct = |f: f64| ((p64 as f64) * f).round() as usize;
    let m170 = 170 * MIB; // 170 × 2^20 = 43,520 pages of 4 KiB
    if quick {
        return vec![Spec::synthetic(m64, pct(0.01), Placement::Clustered, 50, 8)];
    }
    // Frame counts keep the default run under ~10 minutes on 2 cores: lz4 of the whole
    // memory (~75 ms a frame at 64 MiB) and `git gc --aggressive` (~2 minutes for the
    // 16,384 page blobs of the first frame alone) dominate. The 1 % workloads run past
    // a 600-frame window so the GC step and window memory are measured; git runs on one
    // workload (0 = no git), on the first `git` frames.
    vec![
        Spec::synthetic(m64, pct(0.001), Placement::Clustered, 150, 0),
        Spec::synthetic(m64, pct(0.001), Placement::Scattered, 150, 0),
        Spec::synthetic(m64, pct(0.01), Placement::Clustered, 650, 60),
        Spec::synthetic(m64, pct(0.01), Placement::Scattered, 150, 0),
        Spec::synthetic(m64, pct(0.10), Placement::Clustered, 150, 0),
        Spec::synthetic(m64, pct(0.10), Placement::Scattered, 150, 0),
        Spec::synthetic(m170, 1500, Placement::Clustered, 150, 0),
    ]
}

// ---------------------------------------------------------------------------------------
// Configuration

struct Cfg {
    quick: bool,
    window: usize,
    reps: usize,
    git: bool,
    write: bool,
    doc: PathBuf,
    ring_slots: usize,
    /// Peers to run (substrings of: ring, hash, lz4, hint, scan, archive, git).
    peers: Option<Vec<String>>,
}

impl Cfg {
    fn runs(&self, peer: &str) -> bool {
        self.peers.as_ref().is_none_or(|p| p.iter().any(|x| x == peer))
    }
}

// ---------------------------------------------------------------------------------------
// Results

#[derive(Default)]
struct Peer {
    name: String,
    /// Per-frame capture cost in ms, frames 1.. (frame 0, the initial snapshot, apart).
    capture: Vec<f64>,
    first_frame_ms: f64,
    /// Restore of a 7-frame rollback, ms, one per repetition.
    restore: Vec<f64>,
    /// Memory held for a 600-frame window, bytes.
    window_bytes: Option<f64>,
    window_note: &'static str,
    /// Bytes on disk per frame.
    disk_per_frame: Option<f64>,
    /// Open + read one old frame (all of its memory), ms per repetition.
    open_read: Vec<f64>,
    /// Total ingest wall time, s (archive and git).
    ingest_s: Option<f64>,
    /// Bytes of the first frame on disk (archive: the full initial snapshot).
    disk_first: Option<f64>,
    /// Archive only: the same read through `pages` + `read_page` (one walk per frame).
    open_read_pages: Vec<f64>,
}

#[derive(Default)]
struct Rewind {
    capture_only: Vec<f64>,
    gc_step: Vec<f64>,
    gc_after_window: bool,
    growth: Vec<(usize, u64, u64)>,
    resident: u64,
    rss_delta: Option<u64>,
    window_frames: usize,
}

#[derive(Default)]
struct GitRun {
    frames: usize,
    ingest_s: f64,
    gc_s: f64,
    pack_bytes: u64,
    idx_bytes: u64,
    read: Vec<f64>,
    // The archive over the same frames.
    archive_ingest_s: f64,
    archive_bytes: u64,
    archive_read: Vec<f64>,
    read_frame: u64,
}

#[derive(Default)]
struct SerdeRun {
    records: usize,
    objects: usize,
    blob_bytes: usize,
    archive_bytes: u64,
    rkyv: Vec<f64>,
    postcard: Vec<f64>,
}

struct WorkloadResult {
    spec: Spec,
    memory: usize,
    pages: usize,
    mean_dirty: f64,
    xxh3: Vec<f64>,
    memcpy: Vec<f64>,
    peers: Vec<Peer>,
    hinted: Rewind,
    scan: Rewind,
    git: Option<GitRun>,
    serde: Option<SerdeRun>,
    pipe: Option<Pipelined>,
}

impl WorkloadResult {
    fn peer(&self, name: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.name == name)
    }
}

// ---------------------------------------------------------------------------------------
// Peers

/// Run `frames` frames of `src`, calling `capture` (timed) for each; frame 0 is the
/// initial memory. Returns per-frame ms (frame 0 first).
fn drive(
    src: &mut dyn FrameSource,
    frames: usize,
    mut capture: impl FnMut(u64, &[u8], Option<&[u32]>) -> Res<()>,
) -> Res<Vec<f64>> {
    let mut dirty = Vec::new();
    let mut out = Vec::with_capacity(frames);
    for f in 0..frames {
        if f > 0 && !src.next_frame(&mut dirty) {
            break;
        }
        let t = Instant::now();
        capture(f as u64, src.memory(), (f > 0).then_some(&dirty[..]))?;
        out.push(ms(t.elapsed()));
    }
    Ok(out)
}

fn split_first(v: Vec<f64>) -> (f64, Vec<f64>) {
    let first = v.first().copied().unwrap_or(0.0);
    (first, v.into_iter().skip(1).collect())
}

fn references(spec: &Spec, reps: usize) -> Res<(Vec<f64>, Vec<f64>)> {
    let src = spec.source()?;
    let m = src.memory();
    let mut dst = vec![1u8; m.len()];
    let (mut h, mut c) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(5) * 3 {
        let t = Instant::now();
        black_box(xxhash_rust::xxh3::xxh3_128(black_box(m)));
        h.push(ms(t.elapsed()));
        let t = Instant::now();
        dst.copy_from_slice(black_box(m));
        black_box(&dst);
        c.push(ms(t.elapsed()));
    }
    Ok((h, c))
}

/// Full-copy ring (optionally with an xxh3-128 state hash per frame).
fn ring(spec: &Spec, cfg: &Cfg, hash: bool) -> Res<Peer> {
    let mut src = spec.source()?;
    let m = src.memory().len();
    let slots = cfg.ring_slots;
    // Pre-faulted slots (vec![0; n] would map lazily and time page faults).
    let mut ring: Vec<Vec<u8>> = (0..slots).map(|_| vec![1u8; m]).collect();
    let times = drive(src.as_mut(), spec.frames, |f, mem, _| {
        ring[f as usize % slots].copy_from_slice(mem);
        if hash {
            black_box(xxhash_rust::xxh3::xxh3_128(mem));
        }
        Ok(())
    })?;
    let mut head = times.len() as u64 - 1;
    let (first, capture) = split_first(times);
    let mut restore = Vec::new();
    let mut dirty = Vec::new();
    for _ in 0..cfg.reps {
        for _ in 0..ROLLBACK {
            src.next_frame(&mut dirty);
            head += 1;
            ring[head as usize % slots].copy_from_slice(src.memory());
        }
        let target = head - ROLLBACK;
        let t = Instant::now();
        src.memory_mut().copy_from_slice(&ring[target as usize % slots]);
        if hash {
            black_box(xxhash_rust::xxh3::xxh3_128(src.memory()));
        }
        restore.push(ms(t.elapsed()));
        head = target;
    }
    Ok(Peer {
        name: if hash {
            "full copy + xxh3-128"
        } else {
            "full-copy ring"
        }
        .into(),
        capture,
        first_frame_ms: first,
        restore,
        window_bytes: Some((WINDOW_600 * m) as f64),
        window_note: "computed W × M",
        ..Peer::default()
    })
}

/// lz4 (lz4_flex block) of the whole memory per frame, into a ring of reused buffers.
fn lz4(spec: &Spec, cfg: &Cfg) -> Res<Peer> {
    let mut src = spec.source()?;
    let m = src.memory().len();
    let slots = cfg.ring_slots;
    let cap = lz4_flex::block::get_maximum_output_size(m);
    let mut ring: Vec<(Vec<u8>, usize)> = (0..slots).map(|_| (vec![1u8; cap], 0)).collect();
    let mut sizes = Vec::new();
    let times = drive(src.as_mut(), spec.frames, |f, mem, _| {
        let slot = &mut ring[f as usize % slots];
        slot.1 = lz4_flex::block::compress_into(mem, &mut slot.0)?;
        sizes.push(slot.1 as f64);
        Ok(())
    })?;
    let mut head = times.len() as u64 - 1;
    let (first, capture) = split_first(times);
    let mut restore = Vec::new();
    let mut dirty = Vec::new();
    for _ in 0..cfg.reps {
        for _ in 0..ROLLBACK {
            src.next_frame(&mut dirty);
            head += 1;
            let slot = &mut ring[head as usize % slots];
            slot.1 = lz4_flex::block::compress_into(src.memory(), &mut slot.0)?;
        }
        let target = head - ROLLBACK;
        let slot = &ring[target as usize % slots];
        let t = Instant::now();
        let n = lz4_flex::block::decompress_into(&slot.0[..slot.1], src.memory_mut())?;
        restore.push(ms(t.elapsed()));
        assert_eq!(n, m, "lz4 frame decompresses to the whole memory");
        head = target;
    }
    let mean = sizes.iter().sum::<f64>() / sizes.len() as f64;
    Ok(Peer {
        name: "lz4 whole memory".into(),
        capture,
        first_frame_ms: first,
        open_read: restore.clone(),
        restore,
        window_bytes: Some(mean * WINDOW_600 as f64),
        window_note: "computed W × mean frame",
        disk_per_frame: Some(mean),
        ..Peer::default()
    })
}

fn history(page: usize) -> Res<History> {
    Ok(History::new(HistoryConfig::new(page as u64)?.seed(1))?)
}

fn policy(window: usize) -> Policy {
    Policy::default().keep_last(window).abandoned_max_age(0)
}

/// rewind in memory (what `Recorder::capture` does: capture, then one GC step), with
/// or without the dirty hint.
fn rewind_mem(spec: &Spec, cfg: &Cfg, hinted: bool) -> Res<(Peer, Rewind)> {
    let mut src = spec.source()?;
    let page = src.page_size();
    let m = src.memory().len();
    let growth_at: Vec<usize> = [25usize, 50, 100, 200, 300, 400, 600]
        .into_iter()
        .filter(|&w| w <= cfg.window && w < spec.frames)
        .chain(std::iter::once(cfg.window.min(spec.frames)))
        .collect();
    let trace = std::env::var_os("COMPARE_TRACE").is_some();
    let rss0 = rss_bytes();
    let mut h = history(page)?;
    let mut gc = Collector::new(policy(cfg.window));
    let mut r = Rewind::default();
    let mut changed = 0u64;
    let mut total = Vec::new();
    let mut dirty = Vec::new();
    let mut frames = 0usize;
    for f in 0..spec.frames {
        if f > 0 && !src.next_frame(&mut dirty) {
            break;
        }
        let hint = (hinted && f > 0).then_some(&dirty[..]);
        let t = Instant::now();
        let rep = h.capture(f as u64, src.memory(), &[], hint, None)?;
        let c = t.elapsed();
        let t = Instant::now();
        gc.collect_some(&mut h)?;
        let g = t.elapsed();
        changed += rep.pages_changed as u64 * page as u64;
        if trace {
            eprintln!(
                "trace {} frame {f} capture_ms {:.4} gc_ms {:.4} resident {}",
                if hinted { "hint" } else { "scan" },
                ms(c),
                ms(g),
                h.resident_bytes()
            );
        }
        if f > 0 {
            r.capture_only.push(ms(c));
            if f >= cfg.window || spec.frames <= cfg.window {
                r.gc_step.push(ms(g));
            }
        }
        total.push(ms(c + g));
        frames = f + 1;
        if growth_at.contains(&frames) && !r.growth.iter().any(|g| g.0 == frames) {
            r.growth.push((frames, h.resident_bytes(), changed));
        }
    }
    r.gc_after_window = frames > cfg.window;
    r.window_frames = frames.min(cfg.window);
    r.resident = h.resident_bytes();
    r.rss_delta = rss0.zip(rss_bytes()).map(|(a, b)| b.saturating_sub(a));
    let (first, capture) = split_first(total);
    // Rollback: seven more frames, then roll back over them, `reps` times.
    let mut restore = Vec::new();
    let mut head = frames as u64 - 1;
    for _ in 0..cfg.reps {
        for _ in 0..ROLLBACK {
            src.next_frame(&mut dirty);
            head += 1;
            h.capture(head, src.memory(), &[], hinted.then_some(&dirty[..]), None)?;
            gc.collect_some(&mut h)?;
        }
        let target = head - ROLLBACK;
        let t = Instant::now();
        black_box(h.rollback_to(target, src.memory_mut(), LiveMemory::AtHead)?);
        restore.push(ms(t.elapsed()));
        head = target;
    }
    let window_bytes = if r.window_frames >= WINDOW_600 {
        Some(r.resident as f64)
    } else {
        None
    };
    let _ = m;
    Ok((
        Peer {
            name: if hinted {
                "rewind (dirty hint)"
            } else {
                "rewind (full scan)"
            }
            .into(),
            capture,
            first_frame_ms: first,
            restore,
            window_bytes,
            window_note: "measured resident_bytes",
            ..Peer::default()
        },
        r,
    ))
}

/// CPU time of the calling thread, in ns, from `/proc/thread-self/schedstat` (the
/// scheduler's exact run time: unlike wall time it does not count the time other
/// processes on this shared machine took the core).
fn thread_cpu() -> Option<Duration> {
    schedstat(Path::new("/proc/thread-self/schedstat"))
}

fn schedstat(path: &Path) -> Option<Duration> {
    let s = std::fs::read_to_string(path).ok()?;
    Some(Duration::from_nanos(s.split_whitespace().next()?.parse().ok()?))
}

/// CPU time of this process's thread named `name` (the pipeline's worker).
fn named_thread_cpu(name: &str) -> Option<Duration> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .find_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            (comm.trim() == name).then(|| schedstat(&t.path().join("schedstat")))?
        })
}

/// The capture pipeline (`Options::pipeline`) on the hinted workload: per capture, the
/// caller's time (the copy into staging), the worker's time, and CPU over the run.
#[derive(Default)]
struct Pipelined {
    /// Caller-thread ms per capture (`Recorder::submit`).
    caller: Vec<f64>,
    /// The synchronous recorder's ms per capture (same `Recorder`, no pipeline).
    sync: Vec<f64>,
    /// Worker busy ms per frame (wall time while recording).
    worker_busy: f64,
    /// Worker thread CPU ms per frame.
    worker_cpu: Option<f64>,
    /// Caller-thread CPU ms per capture (mean over the run), pipelined and synchronous.
    caller_cpu: Option<f64>,
    sync_cpu: Option<f64>,
    /// Captures that blocked on the staging budget, and the final drain, ms.
    blocked: u64,
    drain_ms: f64,
    frames: usize,
    /// "GGRS pattern": per frame, roll back 7 and capture 7 re-simulated frames; the
    /// caller's rewind time per frame (ms), synchronous and pipelined.
    ggrs_sync: Vec<f64>,
    ggrs_pipe: Vec<f64>,
    /// Of the pipelined GGRS frame, the rollback's wait for the worker (ms per frame).
    ggrs_wait: f64,
    /// Caller-thread CPU per GGRS frame (ms), synchronous and pipelined, and the
    /// worker's CPU per pipelined GGRS frame.
    ggrs_sync_cpu: Vec<f64>,
    ggrs_pipe_cpu: Vec<f64>,
    ggrs_worker_cpu: Option<f64>,
}

fn recorder(page: usize, cfg: &Cfg, pipelined: bool) -> Res<rewind::Recorder> {
    let mut o = rewind::Options::new(page as u64)?
        .seed(1)
        .policy(policy(cfg.window));
    if pipelined {
        o = o.pipeline(rewind::PipelineOptions::new());
    }
    Ok(rewind::Recorder::new(o)?)
}

/// Frames through a `Recorder`, synchronous or pipelined: per-capture caller ms and the
/// process / worker CPU over the run.
fn recorder_run(spec: &Spec, cfg: &Cfg, pipelined: bool, out: &mut Pipelined) -> Res<Vec<f64>> {
    let mut src = spec.source()?;
    let mut rec = recorder(src.page_size(), cfg, pipelined)?;
    let mut dirty = Vec::new();
    let mut caller = Vec::new();
    // Frame 0 (the whole memory, no hint: recorded on the caller's thread in both
    // modes) is left out, as everywhere in this harness.
    rec.submit(0, src.memory(), &[], None, None)?;
    let cpu0 = thread_cpu();
    // Frames come at 60 fps: the caller sleeps the rest of each frame, as a game's
    // guest and renderer would run, so the worker has the time a real frame leaves it.
    let period = Duration::from_micros(16_667);
    let mut next = Instant::now() + period;
    for f in 1..spec.frames {
        if !src.next_frame(&mut dirty) {
            break;
        }
        let t = Instant::now();
        rec.submit(f as u64, src.memory(), &[], Some(&dirty), None)?;
        caller.push(ms(t.elapsed()));
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
            next += period;
        } else {
            next = now + period;
        }
    }
    let t = Instant::now();
    rec.settle()?;
    let drain = t.elapsed();
    let (cpu1, worker_cpu) = (thread_cpu(), named_thread_cpu("rewind-capture"));
    let n = caller.len().max(1) as f64;
    // The scheduler updates a running thread's run time only at ticks and switches, so
    // CPU is taken over the whole run (accurate in sum), less what the synthetic guest's
    // own writes cost in a run without captures.
    let guest = guest_cpu(spec, caller.len())?;
    let cpu = cpu0
        .zip(cpu1)
        .map(|(a, b)| (ms(b.saturating_sub(a)) - guest).max(0.0) / n);
    if pipelined {
        let st = rec.pipeline_stats();
        out.worker_busy = ms(st.worker_time) / st.worker_frames.max(1) as f64;
        out.worker_cpu = worker_cpu.map(|w| ms(w) / n);
        out.caller_cpu = cpu;
        out.blocked = st.blocked;
        out.drain_ms = ms(drain);
        out.frames = caller.len();
    } else {
        out.sync_cpu = cpu;
    }
    Ok(caller)
}

/// CPU ms of `frames` frames of the synthetic guest alone (no capture).
fn guest_cpu(spec: &Spec, frames: usize) -> Res<f64> {
    let mut src = spec.source()?;
    let mut dirty = Vec::new();
    let c0 = thread_cpu();
    for _ in 0..frames {
        if !src.next_frame(&mut dirty) {
            break;
        }
    }
    Ok(c0.zip(thread_cpu()).map_or(0.0, |(a, b)| ms(b.saturating_sub(a))))
}

/// The GGRS pattern: after a warm-up of 8 frames, every frame rolls back 7 frames and
/// captures 7 re-simulated ones. Returns the caller's rewind time per frame (ms: the
/// rollback plus the 7 captures, without the synthetic guest's own writes) and the
/// total time the rollbacks waited for the worker.
fn ggrs_run(spec: &Spec, cfg: &Cfg, pipelined: bool, frames: usize, out: &mut Pipelined) -> Res<Vec<f64>> {
    let mut src = spec.source()?;
    let mut rec = recorder(src.page_size(), cfg, pipelined)?;
    let mut dirty = Vec::new();
    let mut head = 0u64;
    rec.submit(0, src.memory(), &[], None, None)?;
    for _ in 0..ROLLBACK + 1 {
        src.next_frame(&mut dirty);
        head += 1;
        rec.submit(head, src.memory(), &[], Some(&dirty), None)?;
    }
    let mut times = Vec::with_capacity(frames);
    let mut cpu = Vec::with_capacity(frames);
    let wait0 = rec.pipeline_stats().wait_time;
    let worker0 = named_thread_cpu("rewind-capture");
    for _ in 0..frames {
        let c0 = thread_cpu();
        let t = Instant::now();
        rec.rollback_to(head - ROLLBACK, src.memory_mut(), LiveMemory::AtHead)?;
        let mut spent = t.elapsed();
        for k in 0..ROLLBACK {
            src.next_frame(&mut dirty);
            let t = Instant::now();
            rec.submit(head - ROLLBACK + 1 + k, src.memory(), &[], Some(&dirty), None)?;
            spent += t.elapsed();
        }
        times.push(ms(spent));
        // The caller's CPU over the frame; the guest's writes come off below.
        if let Some(c) = c0.zip(thread_cpu()).map(|(a, b)| ms(b.saturating_sub(a))) {
            cpu.push(c);
        }
    }
    let n = frames.max(1) as f64;
    let guest = guest_cpu(spec, ROLLBACK as usize * frames)? / n;
    for c in &mut cpu {
        *c = (*c - guest).max(0.0);
    }
    let wait = ms(rec.pipeline_stats().wait_time.saturating_sub(wait0)) / n;
    rec.settle()?;
    if pipelined {
        out.ggrs_wait = wait;
        out.ggrs_pipe_cpu = cpu;
        out.ggrs_worker_cpu = worker0
            .zip(named_thread_cpu("rewind-capture"))
            .map(|(a, b)| ms(b.saturating_sub(a)) / n);
    } else {
        out.ggrs_sync_cpu = cpu;
    }
    Ok(times)
}

fn pipelined(spec: &Spec, cfg: &Cfg) -> Res<Pipelined> {
    let mut out = Pipelined::default();
    out.sync = recorder_run(spec, cfg, false, &mut out)?;
    out.caller = recorder_run(spec, cfg, true, &mut out)?;
    let ggrs_frames = if spec.frames >= 150 {
        60
    } else {
        spec.frames.max(10)
    };
    out.ggrs_sync = ggrs_run(spec, cfg, false, ggrs_frames, &mut out)?;
    out.ggrs_pipe = ggrs_run(spec, cfg, true, ggrs_frames, &mut out)?;
    Ok(out)
}

/// Open the archive and read all of frame `iteration`'s memory with `Archive::read`.
fn read_archive_frame(path: &Path, iteration: u64, buf: &mut [u8]) -> Res<()> {
    let a = Archive::open(path)?;
    let id = a.at(iteration)?.id;
    a.read_record(id, 0, buf)?;
    black_box(&buf);
    Ok(())
}

/// The same through the page vector: `Archive::pages` once, then `read_page` per page
/// (one change-list walk for the frame instead of one per page).
fn read_archive_frame_pages(path: &Path, iteration: u64, buf: &mut [u8]) -> Res<()> {
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

/// rewind's archive: capture (hinted) + append per frame + GC step; then open and read
/// one old frame. Also runs the postcard-vs-rkyv open comparison on the finished file.
fn archive(spec: &Spec, cfg: &Cfg, dir: &Path, git_frames: usize, old: u64) -> Res<(Peer, GitRun, SerdeRun)> {
    let mut src = spec.source()?;
    let page = src.page_size();
    let m = src.memory().len();
    let path = dir.join("frames.rwd");
    let mut h = history(page)?;
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual)?;
    let mut gc = Collector::new(policy(cfg.window));
    let mut git = GitRun::default();
    let mut ingest = Duration::ZERO;
    let mut len0 = 0u64;
    let trace = std::env::var_os("COMPARE_TRACE").is_some();
    let times = {
        let mut f_done = 0usize;
        drive(src.as_mut(), spec.frames, |f, mem, hint| {
            let t = Instant::now();
            h.capture(f, mem, &[], hint, None)?;
            let ta = Instant::now();
            w.append(&h)?;
            let append = ta.elapsed();
            gc.collect_some(&mut h)?;
            if trace {
                eprintln!(
                    "trace archive frame {f} total_ms {:.4} append_ms {:.4}",
                    ms(t.elapsed()),
                    ms(append)
                );
            }
            f_done += 1;
            if f_done == 1 {
                len0 = w.len();
            }
            if f_done == git_frames {
                w.sync()?;
                ingest += t.elapsed();
                git.archive_ingest_s = ingest.as_secs_f64();
                git.archive_bytes = w.len();
            } else {
                ingest += t.elapsed();
            }
            Ok(())
        })?
    };
    let t = Instant::now();
    w.sync()?;
    ingest += t.elapsed();
    let frames = times.len();
    let len = w.len();
    drop(w);
    let (first, capture) = split_first(times);
    let mut buf = vec![1u8; m];
    let mut open_read = Vec::new();
    for _ in 0..cfg.reps {
        let t = Instant::now();
        read_archive_frame(&path, old, &mut buf)?;
        open_read.push(ms(t.elapsed()));
    }
    git.archive_read = open_read.clone();
    let mut open_read_pages = Vec::new();
    let mut check = vec![1u8; m];
    for _ in 0..cfg.reps {
        let t = Instant::now();
        read_archive_frame_pages(&path, old, &mut check)?;
        open_read_pages.push(ms(t.elapsed()));
    }
    if check != buf {
        return Err("Archive::read and pages + read_page disagree".into());
    }
    let serde = serde_vs_rkyv(&path, old, cfg.reps.max(5) * 3)?;
    Ok((
        Peer {
            name: "rewind archive".into(),
            capture,
            first_frame_ms: first,
            disk_per_frame: Some((len - len0) as f64 / (frames as f64 - 1.0).max(1.0)),
            disk_first: Some(len0 as f64),
            open_read,
            open_read_pages,
            ingest_s: Some(ingest.as_secs_f64()),
            ..Peer::default()
        },
        git,
        serde,
    ))
}

// ---------------------------------------------------------------------------------------
// serde (postcard) vs rkyv

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

fn serde_vs_rkyv(path: &Path, iteration: u64, reps: usize) -> Res<SerdeRun> {
    let a = Archive::open(path)?;
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
    let idx = SerdeIndex {
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
    };
    let blob = postcard::to_allocvec(&idx)?;
    let blob_path = path.with_extension("postcard");
    std::fs::write(&blob_path, &blob)?;
    let expect = a.state_hash(iteration)?;
    drop((a, loaded));
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
        assert_eq!(h, expect);
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
        assert_eq!(sh, expect.0);
    }
    Ok(run)
}

// ---------------------------------------------------------------------------------------
// git

fn git(dir: &Path, args: &[&str]) -> Res<std::process::Output> {
    let out = Command::new("git")
        .args(args)
        .env("GIT_DIR", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()?;
    if !out.status.success() {
        return Err(format!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(out)
}

fn page_path(p: usize) -> String {
    format!("{:03x}/{:02x}", p >> 7, p & 127)
}

const COMMIT_MARK: u64 = 1 << 40;

/// git as a content-addressed store: `fast-import` of one commit per frame with one blob
/// per 4 KiB page (every page in the first frame, the written pages after), pages in a
/// two-level tree (`xxx/yy`, 128 pages per directory); then `git gc --aggressive`; then
/// read frame `old` back (`ls-tree` + `cat-file --batch` of its blobs).
fn git_peer(spec: &Spec, cfg: &Cfg, dir: &Path, frames: usize, old: u64, run: &mut GitRun) -> Res<()> {
    let repo = dir.join("repo.git");
    Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&repo)
        .env("HOME", dir)
        .status()?;
    let mut src = spec.source()?;
    let page = src.page_size();
    let pages = src.memory().len() / page;
    let marks = dir.join("marks");
    let start = Instant::now();
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet", "--done"])
        .arg(format!("--export-marks={}", marks.display()))
        .env("GIT_DIR", &repo)
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut stdin = BufWriter::with_capacity(1 << 20, child.stdin.take().ok_or("stdin")?);
    let mut stepping = Duration::ZERO;
    let mut dirty: Vec<u32> = Vec::new();
    let mut mark = 1u64;
    let mut written: Vec<(usize, u64)> = Vec::new();
    let mut done = 0;
    for f in 0..frames {
        if f > 0 {
            let t = Instant::now();
            let more = src.next_frame(&mut dirty);
            stepping += t.elapsed();
            if !more {
                break;
            }
        }
        written.clear();
        let mem = src.memory();
        let list: Box<dyn Iterator<Item = usize>> = if f == 0 {
            Box::new(0..pages)
        } else {
            Box::new(dirty.iter().map(|&p| p as usize))
        };
        for p in list {
            write!(stdin, "blob\nmark :{mark}\ndata {page}\n")?;
            stdin.write_all(&mem[p * page..(p + 1) * page])?;
            stdin.write_all(b"\n")?;
            written.push((p, mark));
            mark += 1;
        }
        write!(
            stdin,
            "commit refs/heads/main\nmark :{}\ncommitter r <r@example.invalid> {} +0000\ndata 0\n",
            COMMIT_MARK + f as u64,
            1_700_000_000 + f
        )?;
        if f > 0 {
            writeln!(stdin, "from :{}", COMMIT_MARK + f as u64 - 1)?;
        }
        for &(p, m) in &written {
            writeln!(stdin, "M 100644 :{m} {}", page_path(p))?;
        }
        stdin.write_all(b"\n")?;
        done = f + 1;
    }
    stdin.write_all(b"done\n")?;
    drop(stdin.into_inner().map_err(|e| e.to_string())?);
    let status = child.wait()?;
    if !status.success() {
        return Err("git fast-import failed".into());
    }
    run.ingest_s = (start.elapsed() - stepping).as_secs_f64();
    run.frames = done;
    let t = Instant::now();
    if cfg.quick {
        git(&repo, &["gc", "--prune=now", "-q"])?;
    } else {
        git(&repo, &["gc", "--aggressive", "--prune=now", "-q"])?;
    }
    run.gc_s = t.elapsed().as_secs_f64();
    for e in std::fs::read_dir(repo.join("objects/pack"))? {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".pack") {
            run.pack_bytes += e.metadata()?.len();
        } else if n.ends_with(".idx") {
            run.idx_bytes += e.metadata()?.len();
        }
    }
    // Read frame `old` back.
    let marks_text = std::fs::read_to_string(&marks)?;
    let want = format!(":{} ", COMMIT_MARK + old);
    let commit = marks_text
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .ok_or("commit mark missing")?
        .to_string();
    let mut buf = vec![1u8; pages * page];
    for _ in 0..cfg.reps {
        let t = Instant::now();
        git_read_frame(&repo, &commit, &mut buf, page)?;
        run.read.push(ms(t.elapsed()));
    }
    run.read_frame = old;
    // Check the read against the archive-independent truth: replay the source.
    let mut check = spec.source()?;
    let mut d = Vec::new();
    for _ in 0..old {
        check.next_frame(&mut d);
    }
    if check.memory() != &buf[..] {
        return Err("git read-back differs from the frame".into());
    }
    Ok(())
}

fn git_read_frame(repo: &Path, commit: &str, buf: &mut [u8], page: usize) -> Res<()> {
    let tree = git(repo, &["ls-tree", "-r", commit])?;
    let mut order = Vec::new();
    let mut req = String::new();
    for line in String::from_utf8(tree.stdout)?.lines() {
        let (meta, path) = line.split_once('\t').ok_or("ls-tree line")?;
        let sha = meta.split_whitespace().nth(2).ok_or("ls-tree sha")?;
        let (d, f) = path.split_once('/').ok_or("path")?;
        let p = (usize::from_str_radix(d, 16)? << 7) | usize::from_str_radix(f, 16)?;
        order.push(p);
        req.push_str(sha);
        req.push('\n');
    }
    let mut child = Command::new("git")
        .args(["cat-file", "--batch"])
        .env("GIT_DIR", repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(req.as_bytes()));
    let mut out = BufReader::with_capacity(1 << 20, child.stdout.take().ok_or("stdout")?);
    let mut header = String::new();
    for &p in &order {
        header.clear();
        out.read_line(&mut header)?;
        let size: usize = header
            .split_whitespace()
            .nth(2)
            .ok_or("cat-file header")?
            .parse()?;
        if size != page {
            return Err("blob size".into());
        }
        out.read_exact(&mut buf[p * page..(p + 1) * page])?;
        let mut nl = [0u8; 1];
        out.read_exact(&mut nl)?;
    }
    writer.join().map_err(|_| "writer thread")??;
    child.wait()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Running a workload

fn run_workload(spec: &Spec, cfg: &Cfg) -> Res<WorkloadResult> {
    let t0 = Instant::now();
    let src = spec.source()?;
    let memory = src.memory().len();
    let pages = memory / src.page_size();
    drop(src);
    let mean_dirty = {
        let mut s = spec.source()?;
        let mut d = Vec::new();
        // Synthetic frames are alike: 50 tell the mean. Recorded ones change over
        // the run (rapier's bodies fall, collide, then rest): count them all.
        let n = match spec.kind {
            Kind::Recorded(_) => spec.frames.max(1),
            Kind::Synthetic { .. } => spec.frames.clamp(1, 50),
        };
        let mut total = 0usize;
        for _ in 0..n {
            s.next_frame(&mut d);
            total += d.len();
        }
        total as f64 / n as f64
    };
    eprintln!(
        "== {} ({} MiB, {} pages, ~{:.0} pages written per frame, {} frames)",
        spec.name,
        memory / MIB,
        pages,
        mean_dirty,
        spec.frames
    );
    let (xxh3, memcpy) = references(spec, cfg.reps)?;
    let mut peers = Vec::new();
    for (key, hash) in [("ring", false), ("hash", true)] {
        if cfg.runs(key) {
            let p = ring(spec, cfg, hash)?;
            eprintln!("  {:<22} done ({:.1?})", p.name, t0.elapsed());
            peers.push(p);
        }
    }
    if cfg.runs("lz4") {
        let p = lz4(spec, cfg)?;
        eprintln!("  {:<22} done ({:.1?})", p.name, t0.elapsed());
        peers.push(p);
    }
    let (mut hinted, mut scan) = (Rewind::default(), Rewind::default());
    // Allocator warm-up: the first run to allocate pays a first-touch page fault
    // for every page of heap it grows into, and later runs reuse that heap (a
    // hinted run measured alone was ~25 % slower per frame than right after
    // another run). A long-running game's history recycles its heap, so every
    // rewind peer is timed on a warm heap: one untimed hinted run first, whose
    // RSS growth is kept as the cross-check of `resident_bytes`.
    let mut cold_rss = None;
    if cfg.runs("hint") || cfg.runs("scan") {
        cold_rss = rewind_mem(spec, cfg, true)?.1.rss_delta;
        eprintln!("  {:<22} done ({:.1?})", "(allocator warm-up)", t0.elapsed());
    }
    if cfg.runs("hint") {
        let (p, mut r) = rewind_mem(spec, cfg, true)?;
        eprintln!("  {:<22} done ({:.1?})", p.name, t0.elapsed());
        peers.push(p);
        r.rss_delta = cold_rss;
        hinted = r;
    }
    if cfg.runs("scan") {
        let (p, r) = rewind_mem(spec, cfg, false)?;
        eprintln!("  {:<22} done ({:.1?})", p.name, t0.elapsed());
        peers.push(p);
        scan = r;
    }
    let pipe = if cfg.runs("pipe") {
        let p = pipelined(spec, cfg)?;
        eprintln!(
            "  {:<22} done ({:.1?}): caller {:.3} ms, worker {:.3} ms per capture; GGRS frame p50 {:.2} ms sync, {:.2} ms pipelined",
            "pipeline",
            t0.elapsed(),
            med(&p.caller),
            p.worker_busy,
            med(&p.ggrs_sync),
            med(&p.ggrs_pipe)
        );
        Some(p)
    } else {
        None
    };
    let dir = tempfile::tempdir()?;
    let git_on = cfg.git && spec.git_frames > 0 && cfg.runs("git");
    let git_frames = if spec.git_frames > 0 {
        spec.git_frames.min(spec.frames)
    } else {
        spec.frames
    };
    let old = (git_frames / 2) as u64;
    let (mut git_run, mut serde) = (GitRun::default(), None);
    if cfg.runs("archive") {
        let (p, g, s) = archive(spec, cfg, dir.path(), git_frames, old)?;
        eprintln!("  {:<22} done ({:.1?})", p.name, t0.elapsed());
        peers.push(p);
        git_run = g;
        serde = Some(s);
    }
    let git = if git_on {
        git_peer(spec, cfg, dir.path(), git_frames, old, &mut git_run)?;
        eprintln!(
            "  {:<22} done ({:.1?}): {} frames, ingest {:.2} s, gc {:.2} s, pack {} B",
            "git",
            t0.elapsed(),
            git_run.frames,
            git_run.ingest_s,
            git_run.gc_s,
            git_run.pack_bytes
        );
        peers.push(Peer {
            name: "git fast-import + gc".into(),
            disk_per_frame: Some(git_run.pack_bytes as f64 / git_run.frames as f64),
            open_read: git_run.read.clone(),
            ingest_s: Some(git_run.ingest_s + git_run.gc_s),
            ..Peer::default()
        });
        Some(git_run)
    } else {
        None
    };
    Ok(WorkloadResult {
        spec: spec.clone(),
        memory,
        pages,
        mean_dirty,
        xxh3,
        memcpy,
        peers,
        hinted,
        scan,
        git,
        serde,
        pipe,
    })
}

// ---------------------------------------------------------------------------------------
// Report

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else if v >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

fn fmt_bytes(b: f64) -> String {
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= MIB as f64 {
        format!("{:.1} MiB", b / MIB as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 1.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.3}×")
    }
}

fn spread_cell(v: &[f64]) -> String {
    if v.is_empty() {
        return "—".into();
    }
    let s = Spread::of(v);
    format!("{} / {} / {}", fmt_ms(s.min), fmt_ms(s.median), fmt_ms(s.max))
}

fn med(v: &[f64]) -> f64 {
    Spread::of(v).median
}

/// The `q` quantile (nearest rank).
fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut x = v.to_vec();
    x.sort_by(f64::total_cmp);
    x[((x.len() as f64 * q).ceil() as usize).clamp(1, x.len()) - 1]
}

fn p99(v: &[f64]) -> f64 {
    percentile(v, 0.99)
}

fn p95(v: &[f64]) -> f64 {
    percentile(v, 0.95)
}

struct Goal {
    what: String,
    workload: String,
    measured: String,
    target: String,
    met: Option<bool>,
}

fn status(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**MISSED**",
        None => "not measured",
    }
}

fn goals(results: &[WorkloadResult], window: usize) -> Vec<Goal> {
    let mut g = Vec::new();
    for r in results {
        pipeline_goals(r, &mut g);
    }
    for r in results {
        let one_pct = r.spec.name.contains("-1%-");
        let (Some(ring), Some(hint), Some(scan)) = (
            r.peer("full-copy ring"),
            r.peer("rewind (dirty hint)"),
            r.peer("rewind (full scan)"),
        ) else {
            continue;
        };
        let w = r.spec.name.clone();
        if one_pct {
            let ring_mem = (WINDOW_600 * r.memory) as f64;
            let ok = r.hinted.window_frames >= WINDOW_600;
            let ratio = r.hinted.resident as f64 / ring_mem;
            g.push(Goal {
                what: "memory of a 600-frame window vs full-copy ring".into(),
                workload: w.clone(),
                measured: if ok {
                    format!(
                        "{} / {} = 1/{:.0}",
                        fmt_bytes(r.hinted.resident as f64),
                        fmt_bytes(ring_mem),
                        1.0 / ratio
                    )
                } else {
                    format!(
                        "window only {} frames (need `--window 600` and more frames)",
                        r.hinted.window_frames
                    )
                },
                target: "≤ 1/20".into(),
                met: ok.then_some(ratio <= 0.05),
            });
            let c = med(&hint.capture) / med(&ring.capture);
            g.push(Goal {
                what: "capture per frame (with hint, incl. GC step) vs full-copy ring".into(),
                workload: w.clone(),
                measured: format!(
                    "{} ms / {} ms = 1/{:.0}",
                    fmt_ms(med(&hint.capture)),
                    fmt_ms(med(&ring.capture)),
                    1.0 / c
                ),
                target: "≤ 1/20".into(),
                met: Some(c <= 0.05),
            });
        }
        // Core goals, every workload.
        let s = med(&r.scan.capture_only) / med(&r.xxh3);
        g.push(Goal {
            what: "capture without hint / one xxh3-128 pass".into(),
            workload: w.clone(),
            measured: format!(
                "{} ms / {} ms = {}",
                fmt_ms(med(&r.scan.capture_only)),
                fmt_ms(med(&r.xxh3)),
                fmt_ratio(s)
            ),
            target: "≤ 1.3".into(),
            met: Some(s <= 1.3),
        });
        let hc = med(&r.hinted.capture_only) / med(&r.memcpy);
        g.push(Goal {
            what: "capture with hint / memcpy of the whole memory".into(),
            workload: w.clone(),
            measured: format!(
                "{} ms / {} ms = {}",
                fmt_ms(med(&r.hinted.capture_only)),
                fmt_ms(med(&r.memcpy)),
                fmt_ratio(hc)
            ),
            target: "≤ 0.05".into(),
            met: Some(hc <= 0.05),
        });
        if one_pct {
            let gs = Spread::of(&r.hinted.gc_step);
            let gp95 = p95(&r.hinted.gc_step);
            let cap = med(&r.hinted.capture_only);
            let note = if r.hinted.gc_after_window {
                format!("{} steps after the window filled", gs.n)
            } else {
                format!("window of {window} never filled: steps free nothing")
            };
            g.push(Goal {
                what: "GC step median / capture median (hinted)".into(),
                workload: w.clone(),
                measured: format!(
                    "{} ms / {} ms = {} ({note})",
                    fmt_ms(gs.median),
                    fmt_ms(cap),
                    fmt_ratio(gs.median / cap)
                ),
                target: "≤ 1×".into(),
                met: r.hinted.gc_after_window.then_some(gs.median <= cap),
            });
            g.push(Goal {
                what: "worst GC step / GC step median".into(),
                workload: w.clone(),
                measured: format!(
                    "{} ms / {} ms = {} (p95 {} = {})",
                    fmt_ms(gs.max),
                    fmt_ms(gs.median),
                    fmt_ratio(gs.max / gs.median),
                    fmt_ms(gp95),
                    fmt_ratio(gp95 / gs.median)
                ),
                target: "≤ 2×".into(),
                met: r.hinted.gc_after_window.then_some(gs.max <= 2.0 * gs.median),
            });
        }
        let _ = scan;
        if let Some(gr) = &r.git {
            let size = gr.archive_bytes as f64 / gr.pack_bytes as f64;
            g.push(Goal {
                what: format!("archive size vs git pack ({} frames)", gr.frames),
                workload: w.clone(),
                measured: format!(
                    "{} / {} = {}",
                    fmt_bytes(gr.archive_bytes as f64),
                    fmt_bytes(gr.pack_bytes as f64),
                    fmt_ratio(size)
                ),
                target: "≤ 1×".into(),
                met: Some(size <= 1.0),
            });
            let git_total = gr.ingest_s + gr.gc_s;
            let ing = git_total / gr.archive_ingest_s;
            g.push(Goal {
                what: "ingest speed vs git (fast-import + gc --aggressive)".into(),
                workload: w.clone(),
                measured: format!(
                    "{:.2} s (+{:.2} s gc) / {:.3} s = {} faster ({} without gc)",
                    gr.ingest_s,
                    gr.gc_s,
                    gr.archive_ingest_s,
                    fmt_ratio(ing),
                    fmt_ratio(gr.ingest_s / gr.archive_ingest_s)
                ),
                target: "≥ 50×".into(),
                met: Some(ing >= 50.0),
            });
            let rd = med(&gr.read) / med(&gr.archive_read);
            g.push(Goal {
                what: format!("open + read old frame {} vs git", gr.read_frame),
                workload: w.clone(),
                measured: format!(
                    "{} ms / {} ms = {} faster",
                    fmt_ms(med(&gr.read)),
                    fmt_ms(med(&gr.archive_read)),
                    fmt_ratio(rd)
                ),
                target: "≥ 10×".into(),
                met: Some(rd >= 10.0),
            });
        }
        if let Some(s) = &r.serde {
            let o = med(&s.postcard) / med(&s.rkyv);
            g.push(Goal {
                what: "open + one state hash vs postcard decode of the index".into(),
                workload: w.clone(),
                measured: format!(
                    "{} ms / {} ms = {} faster",
                    fmt_ms(med(&s.postcard)),
                    fmt_ms(med(&s.rkyv)),
                    fmt_ratio(o)
                ),
                target: "≥ 1,000×".into(),
                met: Some(o >= 1000.0),
            });
        }
    }
    g
}

/// Goals of the capture pipeline (caller-thread time, the GGRS pattern). Judged on the
/// caller thread's CPU time, which other load on a shared machine does not inflate;
/// the wall time is shown beside it.
fn pipeline_goals(r: &WorkloadResult, g: &mut Vec<Goal>) {
    let Some(p) = &r.pipe else { return };
    let w = r.spec.name.clone();
    let kept = if p.blocked == 0 {
        "the worker kept up".to_string()
    } else {
        format!(
            "the worker fell behind: {} of {} captures blocked on the staging budget, worker {} ms CPU per capture",
            p.blocked,
            p.frames,
            p.worker_cpu.map_or("—".into(), fmt_ms)
        )
    };
    let wall = med(&p.caller);
    let cpu = p.caller_cpu.unwrap_or(wall);
    // The floor: a memcpy of the written pages at this run's memcpy speed.
    let floor = med(&r.memcpy) * r.mean_dirty / r.pages.max(1) as f64;
    if r.spec.name.starts_with("170MB") {
        g.push(Goal {
            what: "caller-thread time per capture, pipelined (hinted)".into(),
            workload: w.clone(),
            measured: format!(
                "{} ms CPU, {} ms wall; floor (memcpy of the written pages at this run's memcpy speed) {} ms (synchronous: {} ms CPU, {} ms wall); {kept}",
                fmt_ms(cpu),
                fmt_ms(wall),
                fmt_ms(floor),
                p.sync_cpu.map_or("—".into(), fmt_ms),
                fmt_ms(med(&p.sync))
            ),
            target: "≤ 0.5 ms".into(),
            met: Some(cpu <= 0.5 && p.blocked == 0),
        });
    }
    if r.spec.name.contains("-1%-") {
        let ratio = cpu / med(&r.memcpy);
        g.push(Goal {
            what: "caller-thread capture, pipelined / memcpy of the whole memory".into(),
            workload: w.clone(),
            measured: format!(
                "{} ms CPU ({} ms wall) / {} ms = {}; {kept}",
                fmt_ms(cpu),
                fmt_ms(wall),
                fmt_ms(med(&r.memcpy)),
                fmt_ratio(ratio)
            ),
            target: "≤ 0.02".into(),
            met: Some(ratio <= 0.02 && p.blocked == 0),
        });
        let worst = Spread::of(&p.caller).max;
        g.push(Goal {
            what: "worst caller-thread capture / median, pipelined (wall)".into(),
            workload: w.clone(),
            measured: format!(
                "{} ms / {} ms = {} (p99 {} ms)",
                fmt_ms(worst),
                fmt_ms(wall),
                fmt_ratio(worst / wall),
                fmt_ms(p99(&p.caller))
            ),
            target: "≤ 2×".into(),
            met: Some(worst <= 2.0 * wall),
        });
    }
    let cpu50 = med(&p.ggrs_pipe_cpu);
    g.push(Goal {
        what: "GGRS pattern (roll back 7, capture 7) per frame, caller thread, pipelined".into(),
        workload: w,
        measured: format!(
            "CPU p50 {} ms, p99 {} ms; wall p50 {} ms, p99 {} ms, of which waiting for the worker {} ms (worker CPU {} ms per frame); synchronous: CPU p50 {} ms, wall p50 {} ms, p99 {} ms",
            fmt_ms(cpu50),
            fmt_ms(p99(&p.ggrs_pipe_cpu)),
            fmt_ms(med(&p.ggrs_pipe)),
            fmt_ms(p99(&p.ggrs_pipe)),
            fmt_ms(p.ggrs_wait),
            p.ggrs_worker_cpu.map_or("—".into(), fmt_ms),
            fmt_ms(med(&p.ggrs_sync_cpu)),
            fmt_ms(med(&p.ggrs_sync)),
            fmt_ms(p99(&p.ggrs_sync))
        ),
        target: "≤ 5 ms".into(),
        met: Some(cpu50 <= 5.0 && med(&p.ggrs_pipe) <= 5.0),
    });
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / (1 << 20) as f64))
        .unwrap_or_default();
    let git = Command::new("git")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{nproc} cores (nproc), {cpu}, {mem} RAM, Linux {kernel}, {git}")
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn report(results: &[WorkloadResult], cfg: &Cfg, command: &str, elapsed: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Generated by `{command}` on {} in {:.0} s.",
        date(),
        elapsed.as_secs_f64()
    );
    let _ = writeln!(s, "Machine: {}.", machine());
    let _ = writeln!(
        s,
        "Window W = {} frames, page 4 KiB, rollback {ROLLBACK} frames, {} repetitions of each restore/read.\n",
        cfg.window, cfg.reps
    );

    let _ = writeln!(s, "### Goals\n");
    let _ = writeln!(s, "| goal | workload | measured (same run) | target | status |");
    let _ = writeln!(s, "| --- | --- | --- | --- | --- |");
    for g in goals(results, cfg.window) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            g.what,
            g.workload,
            g.measured,
            g.target,
            status(g.met)
        );
    }

    if results.iter().any(|r| r.pipe.is_some()) {
        let _ = writeln!(s, "\n### Capture pipeline\n");
        let _ = writeln!(
            s,
            "Per capture with the dirty hint, through `Recorder` (capture, GC step). Wall = time on the caller's thread (median / p99); CPU = the caller thread's run time per capture from `/proc/…/schedstat`, summed over the run less a run of the synthetic guest alone (a mean: the scheduler updates a running thread's time only at ticks and switches); on a loaded machine it is the cost itself (wall time also counts the time other processes held the core). Worker = the pipeline worker's busy wall time per frame and its thread's CPU per frame. Frames come at 60 fps (the caller sleeps the rest of each 16.7 ms frame, where a game's guest would run); kept up = no capture blocked on the 64 MiB staging budget (the final drain is the wait for the frames still in flight after the last one). GGRS = per frame, roll back {ROLLBACK} and capture {ROLLBACK} re-simulated frames: the caller's rewind time (wall, p50 / p99) and CPU (p50 / p99).\n"
        );
        let _ = writeln!(
            s,
            "| workload | caller wall, sync (ms) | caller wall, pipelined (ms) | caller CPU, sync / pipelined (ms) | worker busy / CPU (ms) | total CPU, pipelined (ms) | blocked | kept up | GGRS wall, sync (ms) | GGRS wall, pipelined (ms) | GGRS caller CPU, sync / pipelined p50 (ms) | GGRS worker CPU (ms) |"
        );
        let _ = writeln!(
            s,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
        );
        let opt = |v: Option<f64>| v.map_or("—".to_string(), fmt_ms);
        for r in results {
            let Some(p) = &r.pipe else { continue };
            let _ = writeln!(
                s,
                "| {} | {} / {} | {} / {} | {} / {} | {} / {} | {} | {} of {} | {} (final drain {} ms) | {} / {} | {} / {} | {} / {} | {} |",
                r.spec.name,
                fmt_ms(med(&p.sync)),
                fmt_ms(p99(&p.sync)),
                fmt_ms(med(&p.caller)),
                fmt_ms(p99(&p.caller)),
                opt(p.sync_cpu),
                opt(p.caller_cpu),
                fmt_ms(p.worker_busy),
                opt(p.worker_cpu),
                opt(p.caller_cpu.zip(p.worker_cpu).map(|(a, b)| a + b)),
                p.blocked,
                p.frames,
                if p.blocked == 0 { "yes" } else { "no" },
                fmt_ms(p.drain_ms),
                fmt_ms(med(&p.ggrs_sync)),
                fmt_ms(p99(&p.ggrs_sync)),
                fmt_ms(med(&p.ggrs_pipe)),
                fmt_ms(p99(&p.ggrs_pipe)),
                fmt_ms(med(&p.ggrs_sync_cpu)),
                fmt_ms(med(&p.ggrs_pipe_cpu)),
                opt(p.ggrs_worker_cpu),
            );
        }
    }

    for r in results {
        let _ = writeln!(
            s,
            "\n### {} — {} memory, {} pages, ~{:.0} pages written per frame, {} frames\n",
            r.spec.name,
            fmt_bytes(r.memory as f64),
            r.pages,
            r.mean_dirty,
            r.spec.frames
        );
        let ring = r
            .peer("full-copy ring")
            .map(|p| med(&p.capture))
            .unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "| peer | capture / frame, median (ms) | worst (ms) | vs ring | restore, {ROLLBACK}-frame rollback (ms) | memory, {WINDOW_600}-frame window | disk / frame | open + read old frame (ms) |"
        );
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for p in &r.peers {
            let (cm, cw, vs) = if p.capture.is_empty() {
                let per = p.ingest_s.map(|i| {
                    let frames = r.git.as_ref().map_or(1, |g| g.frames.max(1));
                    format!("{} (mean incl. gc)", fmt_ms(i * 1e3 / frames as f64))
                });
                (per.unwrap_or("—".into()), "—".into(), "—".into())
            } else {
                let sp = Spread::of(&p.capture);
                (fmt_ms(sp.median), fmt_ms(sp.max), fmt_ratio(sp.median / ring))
            };
            let mem = match p.window_bytes {
                Some(b) => format!("{} ({})", fmt_bytes(b), p.window_note),
                None if p.name.starts_with("rewind (") => format!(
                    "{} at {} frames (measured)",
                    fmt_bytes(if p.name.contains("hint") {
                        r.hinted.resident
                    } else {
                        r.scan.resident
                    } as f64),
                    r.hinted.window_frames
                ),
                None => "—".into(),
            };
            let restore = if p.restore.is_empty() {
                "—".into()
            } else {
                fmt_ms(med(&p.restore))
            };
            let disk = match (p.disk_per_frame, p.disk_first) {
                (Some(d), Some(f)) => format!("{} (first frame {})", fmt_bytes(d), fmt_bytes(f)),
                (Some(d), None) if p.name.starts_with("git") => format!("{} (pack / frames)", fmt_bytes(d)),
                (Some(d), None) => fmt_bytes(d),
                _ => "—".into(),
            };
            let open = if p.open_read.is_empty() {
                "—".into()
            } else {
                fmt_ms(med(&p.open_read))
            };
            let _ = writeln!(
                s,
                "| {} | {cm} | {cw} | {vs} | {restore} | {mem} | {disk} | {open} |",
                p.name
            );
        }
        // Details.
        let _ = writeln!(s, "\nDetails (min / median / max, ms):\n");
        let _ = writeln!(
            s,
            "- references: one xxh3-128 pass {} ; one memcpy of the memory {}",
            spread_cell(&r.xxh3),
            spread_cell(&r.memcpy)
        );
        for p in &r.peers {
            if !p.capture.is_empty() {
                let _ = writeln!(
                    s,
                    "- {}: capture {} (p95 {}; first frame {} ms); restore {}",
                    p.name,
                    spread_cell(&p.capture),
                    fmt_ms(p95(&p.capture)),
                    fmt_ms(p.first_frame_ms),
                    spread_cell(&p.restore)
                );
            }
        }
        let _ = writeln!(
            s,
            "- rewind capture alone (no GC step): hinted {} (p95 {}), full scan {}; GC step (hinted run{}) {} (p95 {})",
            spread_cell(&r.hinted.capture_only),
            fmt_ms(p95(&r.hinted.capture_only)),
            spread_cell(&r.scan.capture_only),
            if r.hinted.gc_after_window { ", after the window filled" } else { ", window never filled" },
            spread_cell(&r.hinted.gc_step),
            fmt_ms(p95(&r.hinted.gc_step))
        );
        if let Some(rss) = r.hinted.rss_delta {
            let _ = writeln!(
                s,
                "- process RSS growth over the untimed warm-up run (hinted): {} (`History::resident_bytes()` says {}; RSS also counts allocator slack and memory freed by earlier peers being reused, so it is a rough cross-check)",
                fmt_bytes(rss as f64),
                fmt_bytes(r.hinted.resident as f64)
            );
        }
        if let Some(p) = r.peer("rewind archive") {
            let _ = writeln!(
                s,
                "- archive: ingest {:.3} s for {} frames (capture + append + GC step, one sync at the end); open + read frame {} (all of its memory) with `Archive::read` {}; with `Archive::pages` + `read_page` {}",
                p.ingest_s.unwrap_or(0.0),
                r.spec.frames,
                r.git.as_ref().map_or(
                    (if r.spec.git_frames > 0 { r.spec.git_frames.min(r.spec.frames) } else { r.spec.frames } / 2) as u64,
                    |g| g.read_frame
                ),
                spread_cell(&p.open_read),
                spread_cell(&p.open_read_pages)
            );
        }
        if let Some(g) = &r.git {
            let _ = writeln!(
                s,
                "- git over the first {} frames: fast-import {:.2} s, gc --aggressive {:.2} s, pack {} (+ idx {}); read frame {} (ls-tree + cat-file --batch) {}; rewind archive over the same frames: {:.3} s, {} (synced), read {}",
                g.frames,
                g.ingest_s,
                g.gc_s,
                fmt_bytes(g.pack_bytes as f64),
                fmt_bytes(g.idx_bytes as f64),
                g.read_frame,
                spread_cell(&g.read),
                g.archive_ingest_s,
                fmt_bytes(g.archive_bytes as f64),
                spread_cell(&g.archive_read)
            );
        }
        if let Some(sr) = &r.serde {
            let _ = writeln!(
                s,
                "- open: `Archive::open` + `state_hash` {} vs read + postcard decode of the same index ({} records, {} objects, {} of postcard; archive file {}) {}",
                spread_cell(&sr.rkyv),
                sr.records,
                sr.objects,
                fmt_bytes(sr.blob_bytes as f64),
                fmt_bytes(sr.archive_bytes as f64),
                spread_cell(&sr.postcard)
            );
        }
        if !r.hinted.growth.is_empty() {
            let _ = writeln!(
                s,
                "\nMemory vs retained iterations (hinted run; window = frames so far, up to {}):\n",
                cfg.window
            );
            let _ = writeln!(s, "| retained frames | resident_bytes | per retained frame | pages changed × 4 KiB (cumulative) | resident / changed | full-copy ring of the same window |");
            let _ = writeln!(s, "| ---: | ---: | ---: | ---: | ---: | ---: |");
            for &(n, res, changed) in &r.hinted.growth {
                let _ = writeln!(
                    s,
                    "| {n} | {} | {} | {} | {:.3} | {} |",
                    fmt_bytes(res as f64),
                    fmt_bytes(res as f64 / n as f64),
                    fmt_bytes(changed as f64),
                    res as f64 / changed.max(1) as f64,
                    fmt_bytes((n * r.memory) as f64)
                );
            }
        }
    }
    s
}

/// Replaces the generated section `section` of the doc (empty: the main one;
/// a name such as `guests` for another, so runs over different workloads keep
/// their own sections), or appends it.
fn update_doc(path: &Path, section: &str, body: &str) -> Res<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("reading {}: {e}", path.display()).into()),
    };
    let tag = if section.is_empty() {
        String::new()
    } else {
        format!(":{section}")
    };
    // Up to the space: `<!-- compare:begin:guests ` is not a prefix of the
    // main section's `<!-- compare:begin (`.
    let begin_key = format!("<!-- compare:begin{tag} ");
    let begin =
        format!("{begin_key}(generated by benches/src/bin/compare.rs; edits inside are overwritten) -->");
    let end = format!("<!-- compare:end{tag} -->");
    let block = format!("{begin}\n{body}\n{end}");
    let begin_at = old.find(&begin_key);
    let end_at = begin_at.and_then(|a| old[a..].find(&end).map(|b| a + b));
    let new = match (begin_at, end_at) {
        (Some(a), Some(b)) => format!("{}{}{}", &old[..a], block, &old[b + end.len()..]),
        (Some(_), None) => {
            return Err(format!(
                "{}: the section begins but its end marker {end} is missing; fix the file by hand",
                path.display()
            )
            .into())
        }
        (None, _) => {
            let title = if section.is_empty() {
                "Comparison harness results".to_string()
            } else {
                format!("Comparison harness results: {section}")
            };
            format!("{old}\n## {title}\n\n{block}\n")
        }
    };
    std::fs::write(path, new)?;
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = Cfg {
        quick: false,
        window: WINDOW_600,
        reps: 5,
        git: true,
        write: true,
        doc: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/benchmarks.md")),
        ring_slots: 8,
        peers: None,
    };
    let mut filter: Option<Vec<String>> = None;
    let mut frames: Option<usize> = None;
    let mut git_frames: Option<usize> = None;
    let mut recorded: Vec<PathBuf> = Vec::new();
    let mut write: Option<bool> = None;
    let mut section = String::new();
    let mut window: Option<usize> = None;
    let mut list = false;
    let mut i = 0;
    let val = |i: &mut usize| -> Res<String> {
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| format!("{} needs a value", args[*i - 1]).into())
    };
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => cfg.quick = true,
            "--workloads" => filter = Some(val(&mut i)?.split(',').map(str::to_string).collect()),
            "--frames" => frames = Some(val(&mut i)?.parse()?),
            "--git-frames" => git_frames = Some(val(&mut i)?.parse()?),
            "--window" => window = Some(val(&mut i)?.parse()?),
            "--reps" => cfg.reps = val(&mut i)?.parse()?,
            "--no-git" => cfg.git = false,
            "--peers" => cfg.peers = Some(val(&mut i)?.split(',').map(str::to_string).collect()),
            "--recorded" => recorded.push(val(&mut i)?.into()),
            "--write" => write = Some(true),
            "--no-write" => write = Some(false),
            "--doc" => cfg.doc = val(&mut i)?.into(),
            "--section" => {
                section = val(&mut i)?;
                if !section.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err("--section takes letters, digits and '-'".into());
                }
            }
            "--list" => list = true,
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("compare.rs")
                        .lines()
                        .take_while(|l| l.starts_with("//!"))
                        .map(|l| l.trim_start_matches("//!").trim_start())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                return Ok(());
            }
            other => return Err(format!("unknown option {other} (see --help)").into()),
        }
        i += 1;
    }
    if cfg.quick {
        cfg.window = 60;
        cfg.reps = 3;
    }
    if let Some(w) = window {
        cfg.window = w;
    }
    cfg.write = write.unwrap_or(!cfg.quick);
    let mut specs = default_specs(cfg.quick);
    for path in recorded {
        let name = format!(
            "recorded:{}",
            path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default()
        );
        specs.push(Spec {
            name,
            kind: Kind::Recorded(path),
            frames: usize::MAX,
            git_frames: 200,
        });
    }
    if let Some(f) = &filter {
        specs.retain(|s| f.iter().any(|w| s.name == *w || s.name.contains(w.as_str())));
    }
    for s in &mut specs {
        if let Some(f) = frames {
            s.frames = f;
        }
        if let Some(g) = git_frames {
            s.git_frames = g;
        }
        if s.frames == usize::MAX {
            // A recorded source: as many frames as the file holds, less the rollback reps.
            let mut src = s.source()?;
            let mut d = Vec::new();
            let mut n = 1usize;
            while src.next_frame(&mut d) {
                n += 1;
            }
            s.frames = n.saturating_sub(cfg.reps * ROLLBACK as usize + 1).max(2);
        }
    }
    if list {
        for s in &specs {
            println!(
                "{} ({} frames, git {} frames)",
                s.name,
                s.frames,
                s.git_frames.min(s.frames)
            );
        }
        return Ok(());
    }
    if specs.is_empty() {
        return Err("no workload matches --workloads".into());
    }
    let command = {
        let mut c = "cargo run --release -p rewind-bench --bin compare".to_string();
        if !args.is_empty() {
            c.push_str(" -- ");
            c.push_str(&args.join(" "));
        }
        c
    };
    let start = Instant::now();
    let mut results = Vec::new();
    for spec in &specs {
        results.push(run_workload(spec, &cfg)?);
    }
    let body = report(&results, &cfg, &command, start.elapsed());
    println!("{body}");
    if cfg.write {
        update_doc(&cfg.doc, &section, &body)?;
        eprintln!("updated {}", cfg.doc.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::update_doc;

    #[test]
    fn named_sections_are_replaced_independently() {
        let dir = tempfile::tempdir().expect("temp dir");
        let doc = dir.path().join("b.md");
        std::fs::write(&doc, "# Benchmarks\n\nhand-written\n").expect("write");
        update_doc(&doc, "", "main 1").expect("main");
        update_doc(&doc, "guests", "guests 1").expect("guests");
        update_doc(&doc, "", "main 2").expect("main again");
        update_doc(&doc, "guests", "guests 2").expect("guests again");
        let text = std::fs::read_to_string(&doc).expect("read");
        assert!(text.starts_with("# Benchmarks\n\nhand-written\n"), "{text}");
        for (gone, kept) in [("main 1", "main 2"), ("guests 1", "guests 2")] {
            assert!(!text.contains(gone), "{text}");
            assert_eq!(text.matches(kept).count(), 1, "{text}");
        }
        assert_eq!(text.matches("<!-- compare:begin ").count(), 1, "{text}");
        assert_eq!(text.matches("<!-- compare:begin:guests ").count(), 1, "{text}");
        assert!(
            text.find("main 2") < text.find("guests 2"),
            "sections stay in place: {text}"
        );
    }

    #[test]
    fn a_section_without_its_end_marker_is_an_error_and_the_file_is_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let doc = dir.path().join("b.md");
        update_doc(&doc, "guests", "guests 1").expect("guests");
        let text = std::fs::read_to_string(&doc).expect("read");
        let cut = text.replace("<!-- compare:end:guests -->", "") + "\nhand-written after\n";
        std::fs::write(&doc, &cut).expect("write");
        update_doc(&doc, "guests", "guests 2").expect_err("no end marker");
        assert_eq!(
            std::fs::read_to_string(&doc).expect("read"),
            cut,
            "nothing rewritten"
        );
    }
}
