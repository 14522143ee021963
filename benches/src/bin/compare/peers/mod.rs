//! The systems compared, one module each, and what they share: the frame loop
//! ([`drive`]) and the reference passes.

pub mod archive;
pub mod copy;
pub mod git;
pub mod memory;
pub mod pipeline;

use std::hint::black_box;
use std::time::{Duration, Instant};

use rewind::layers::history::{History, HistoryConfig};
use rewind::Policy;
use rewind_bench::FrameSource;

use crate::workload::Spec;
use crate::{ms, Res, ROLLBACK};

pub use archive::{Batched, SerdeRun};
pub use git::GitRun;
pub use memory::Rewind;
pub use pipeline::Pipelined;

/// A peer of the harness: a system rewind is compared with, or one of rewind's modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Full copy of the memory per frame into a ring.
    Ring,
    /// The full-copy ring plus an xxh3-128 state hash per frame.
    Hash,
    /// lz4 of the whole memory per frame.
    Lz4,
    /// rewind in memory, with the dirty hint.
    Hint,
    /// rewind in memory, scanning the whole memory.
    Scan,
    /// rewind's archive on disk.
    Archive,
    /// git: fast-import of one commit per frame, then `gc --aggressive`.
    Git,
    /// The capture pipeline and the GGRS pattern (a table of its own, not a peer row).
    Pipe,
}

impl Peer {
    /// The name the report gives the peer.
    pub fn label(self) -> &'static str {
        match self {
            Peer::Ring => "full-copy ring",
            Peer::Hash => "full copy + xxh3-128",
            Peer::Lz4 => "lz4 whole memory",
            Peer::Hint => "rewind (dirty hint)",
            Peer::Scan => "rewind (full scan)",
            Peer::Archive => "rewind archive",
            Peer::Git => "git fast-import + gc",
            Peer::Pipe => "pipeline",
        }
    }
}

/// One peer's figures on one workload (a row of the workload's table).
pub struct PeerRun {
    pub peer: Peer,
    /// Per-frame capture cost in ms, frames 1.. (frame 0, the initial snapshot, apart).
    pub capture: Vec<f64>,
    pub first_frame_ms: f64,
    /// Restore of a 7-frame rollback, ms, one per repetition.
    pub restore: Vec<f64>,
    /// Memory held for a 600-frame window, bytes.
    pub window_bytes: Option<f64>,
    pub window_note: &'static str,
    /// Bytes on disk per frame.
    pub disk_per_frame: Option<f64>,
    /// Archive only: bytes of the page objects written per frame (frames 1..).
    pub page_bytes_per_frame: Option<f64>,
    /// Archive only: bytes of index runs, roots and trailers written per frame.
    pub index_bytes_per_frame: Option<f64>,
    /// Open + read one old frame (all of its memory), ms per repetition.
    pub open_read: Vec<f64>,
    /// Total ingest wall time, s (archive and git).
    pub ingest_s: Option<f64>,
    /// Bytes of the first frame on disk (archive: the full initial snapshot).
    pub disk_first: Option<f64>,
    /// Archive only: the same read through `pages` + `read_page` (one walk per frame).
    pub open_read_pages: Vec<f64>,
    /// Archive only: the append of each frame, ms (frames 1..): wall time, and the
    /// appending thread's CPU time ([`thread_cpu_clock`]).
    pub append: Vec<f64>,
    pub append_cpu: Vec<f64>,
    /// Archive only: the same history committed every [`archive::BATCH`] frames, beside it.
    pub batched: Option<Batched>,
}

impl PeerRun {
    /// A row with no figures yet.
    pub fn new(peer: Peer) -> PeerRun {
        PeerRun {
            peer,
            capture: Vec::new(),
            first_frame_ms: 0.0,
            restore: Vec::new(),
            window_bytes: None,
            window_note: "",
            disk_per_frame: None,
            page_bytes_per_frame: None,
            index_bytes_per_frame: None,
            open_read: Vec::new(),
            ingest_s: None,
            disk_first: None,
            open_read_pages: Vec::new(),
            append: Vec::new(),
            append_cpu: Vec::new(),
            batched: None,
        }
    }
}

/// Run `frames` frames of `src`, calling `capture` (timed) for each; frame 0 is the
/// initial memory. Returns per-frame ms (frame 0 first).
pub fn drive(
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

/// The restore figure: `reps` times, run [`ROLLBACK`] more frames, each kept with `keep`
/// (given the frame, its memory and its written pages), then time `restore` of the
/// frame [`ROLLBACK`] back into the memory. `head` is the last frame kept so far;
/// `state` is what both closures work on; `restore` returns the time of the restore
/// itself (see [`timed`]), so it may do untimed work around it. Returns ms per restore.
pub fn rollbacks<S>(
    src: &mut dyn FrameSource,
    state: &mut S,
    mut head: u64,
    reps: usize,
    mut keep: impl FnMut(&mut S, u64, &[u8], &[u32]) -> Res<()>,
    mut restore: impl FnMut(&mut S, u64, &mut [u8]) -> Res<Duration>,
) -> Res<Vec<f64>> {
    let mut out = Vec::with_capacity(reps);
    let mut dirty = Vec::new();
    for _ in 0..reps {
        for _ in 0..ROLLBACK {
            src.next_frame(&mut dirty);
            head += 1;
            keep(state, head, src.memory(), &dirty)?;
        }
        let target = head - ROLLBACK;
        out.push(ms(restore(state, target, src.memory_mut())?));
        head = target;
    }
    Ok(out)
}

/// Run `f` and return how long it took.
pub fn timed(f: impl FnOnce() -> Res<()>) -> Res<Duration> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

/// Run `f`: what it returned, and the wall ms and the calling thread's CPU ms
/// ([`thread_cpu_clock`]) it took.
pub fn wall_cpu<T>(f: impl FnOnce() -> Res<T>) -> Res<(T, f64, f64)> {
    let (c, t) = (thread_cpu_clock(), Instant::now());
    let v = f()?;
    Ok((v, ms(t.elapsed()), ms(thread_cpu_clock().saturating_sub(c))))
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): exact at the moment of
/// the call (the kernel adds the running slice), unlike `/proc/thread-self/schedstat`,
/// which the scheduler updates only at ticks and switches. So it times one short call
/// (an archive append) without the time other processes held the core.
pub fn thread_cpu_clock() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Frame 0's time apart from the others'.
pub fn split_first(v: Vec<f64>) -> (f64, Vec<f64>) {
    let first = v.first().copied().unwrap_or(0.0);
    (first, v.into_iter().skip(1).collect())
}

/// The reference passes over the whole memory: one xxh3-128 and one memcpy, ms each.
pub fn references(spec: &Spec, reps: usize) -> Res<(Vec<f64>, Vec<f64>)> {
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

/// A history as every rewind peer configures it.
pub fn history(page: usize) -> Res<History> {
    Ok(History::new(HistoryConfig::new(page as u64)?.seed(1))?)
}

/// The retention policy of every rewind peer: the last `window` frames.
pub fn policy(window: usize) -> Policy {
    Policy::default().keep_last(window).abandoned_max_age(0)
}
