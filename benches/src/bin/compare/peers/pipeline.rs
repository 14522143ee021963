//! The capture pipeline (`Options::pipeline`) on the hinted workload: per capture, the
//! caller's time (the copy into staging), the worker's time, and CPU over the run; and
//! the GGRS pattern (roll back 7, capture the 7 re-simulated frames and the new one) per frame.

use std::path::Path;
use std::time::{Duration, Instant};

use rewind::LiveMemory;

use super::{policy, wall_cpu};
use crate::args::Config;
use crate::workload::Spec;
use crate::{ms, Res, ROLLBACK};

/// The pipeline worker thread's name.
const WORKER: &str = "rewind-capture";

/// The capture pipeline's figures on one workload.
#[derive(Default)]
pub struct Pipelined {
    /// Caller-thread ms per capture (`Recorder::submit`).
    pub caller: Vec<f64>,
    /// The synchronous recorder's ms per capture (same `Recorder`, no pipeline).
    pub sync: Vec<f64>,
    /// Worker busy ms per frame (wall time while recording).
    pub worker_busy: f64,
    /// Worker thread CPU ms per frame.
    pub worker_cpu: Option<f64>,
    /// Caller-thread CPU ms of each capture, pipelined and synchronous.
    pub caller_cpu: Vec<f64>,
    pub sync_cpu: Vec<f64>,
    /// Captures that blocked on the staging budget, and the final drain, ms.
    pub blocked: u64,
    pub drain_ms: f64,
    pub frames: usize,
    /// "GGRS pattern": per frame, roll back 7, capture 7 re-simulated frames and a new one; the
    /// caller's rewind time per frame (ms), synchronous and pipelined.
    pub ggrs_sync: Vec<f64>,
    pub ggrs_pipe: Vec<f64>,
    /// Of the pipelined GGRS frame, the rollback's wait for the worker (ms per frame).
    pub ggrs_wait: f64,
    /// Caller-thread CPU per GGRS frame (ms), synchronous and pipelined, and the
    /// worker's CPU per pipelined GGRS frame.
    pub ggrs_sync_cpu: Vec<f64>,
    pub ggrs_pipe_cpu: Vec<f64>,
    pub ggrs_worker_cpu: Option<f64>,
}

/// Frames at 60 fps: [`Pacer::wait`] sleeps the rest of the current 16.7 ms frame (where
/// a game's guest would run), or starts the next frame at once when this one overran.
struct Pacer {
    period: Duration,
    next: Instant,
}

impl Pacer {
    fn sixty_fps() -> Pacer {
        let period = Duration::from_micros(16_667);
        Pacer {
            period,
            next: Instant::now() + period,
        }
    }

    fn wait(&mut self) {
        let now = Instant::now();
        if now < self.next {
            std::thread::sleep(self.next - now);
            self.next += self.period;
        } else {
            self.next = now + self.period;
        }
    }
}

fn schedstat(path: &Path) -> Option<Duration> {
    let s = std::fs::read_to_string(path).ok()?;
    Some(Duration::from_nanos(s.split_whitespace().next()?.parse().ok()?))
}

/// CPU time of this process's thread named `name` (the pipeline's worker), from its
/// `/proc/self/task/…/schedstat` (updated at ticks and switches: exact in sum over a
/// run, not per call).
fn named_thread_cpu(name: &str) -> Option<Duration> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .find_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            (comm.trim() == name).then(|| schedstat(&t.path().join("schedstat")))?
        })
}

/// CPU ms spent from `a` to `b`.
fn cpu_ms(a: Duration, b: Duration) -> f64 {
    ms(b.saturating_sub(a))
}

fn recorder(page: usize, cfg: &Config, pipelined: bool) -> Res<rewind::Recorder> {
    let mut o = rewind::Options::new(page as u64)?
        .seed(1)
        .policy(policy(cfg.window));
    if pipelined {
        o = o.pipeline(rewind::PipelineOptions::new());
    }
    Ok(rewind::Recorder::new(o)?)
}

/// Frames through a `Recorder`, synchronous or pipelined: per-capture caller wall and
/// CPU ms, and the worker's CPU over the run.
fn recorder_run(spec: &Spec, cfg: &Config, pipelined: bool, out: &mut Pipelined) -> Res<Vec<f64>> {
    let mut src = spec.source()?;
    let mut rec = recorder(src.page_size(), cfg, pipelined)?;
    let mut dirty = Vec::new();
    let mut caller = Vec::new();
    let mut cpu = Vec::new();
    // Frame 0 (the whole memory, no hint: recorded on the caller's thread in both
    // modes) is left out, as everywhere in this harness.
    rec.submit(0, src.memory(), &[], None, None)?;
    // Frames come at 60 fps: the caller sleeps the rest of each frame, as a game's
    // guest and renderer would run, so the worker has the time a real frame leaves it.
    let mut pace = Pacer::sixty_fps();
    for f in 1..spec.frames {
        if !src.next_frame(&mut dirty) {
            break;
        }
        let (_, wall, c) = wall_cpu(|| Ok(rec.submit(f as u64, src.memory(), &[], Some(&dirty), None)?))?;
        caller.push(wall);
        cpu.push(c);
        pace.wait();
    }
    let t = Instant::now();
    rec.settle()?;
    let drain = t.elapsed();
    let worker_cpu = named_thread_cpu(WORKER);
    let n = caller.len().max(1) as f64;
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

/// The GGRS pattern: after a warm-up of 8 frames, every frame rolls back 7 frames,
/// captures the 7 re-simulated ones and then the new frame (8 captures; the head moves
/// on by one, as GGRS's loop does after a 7-frame rollback). Returns the caller's rewind time per frame (ms: the
/// rollback plus the 7 captures, without the synthetic guest's own writes) and the
/// total time the rollbacks waited for the worker.
fn ggrs_run(spec: &Spec, cfg: &Config, pipelined: bool, frames: usize, out: &mut Pipelined) -> Res<Vec<f64>> {
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
    let worker0 = named_thread_cpu(WORKER);
    // Frames come at 60 fps, as in `recorder_run`: the caller sleeps the rest of each
    // frame, where a game's guest would simulate and render.
    let mut pace = Pacer::sixty_fps();
    for _ in 0..frames {
        let (_, mut spent, mut spent_cpu) =
            wall_cpu(|| Ok(rec.rollback_to(head - ROLLBACK, src.memory_mut(), LiveMemory::AtHead)?))?;
        // The 7 re-simulated frames, then the new one: the head moves on by one.
        for it in head - ROLLBACK + 1..=head + 1 {
            src.next_frame(&mut dirty);
            let (_, wall, c) = wall_cpu(|| Ok(rec.submit(it, src.memory(), &[], Some(&dirty), None)?))?;
            spent += wall;
            spent_cpu += c;
        }
        head += 1;
        times.push(spent);
        cpu.push(spent_cpu);
        pace.wait();
    }
    let n = frames.max(1) as f64;
    let wait = ms(rec.pipeline_stats().wait_time.saturating_sub(wait0)) / n;
    rec.settle()?;
    if pipelined {
        out.ggrs_wait = wait;
        out.ggrs_pipe_cpu = cpu;
        out.ggrs_worker_cpu = worker0
            .zip(named_thread_cpu(WORKER))
            .map(|(a, b)| cpu_ms(a, b) / n);
    } else {
        out.ggrs_sync_cpu = cpu;
    }
    Ok(times)
}

/// The pipeline's figures: synchronous and pipelined recorders over the workload, then
/// the GGRS pattern with each.
pub fn run(spec: &Spec, cfg: &Config) -> Res<Pipelined> {
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
