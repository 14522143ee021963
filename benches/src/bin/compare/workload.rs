//! What the peers are fed (the synthetic workloads and recorded guests), and one
//! workload's run through every selected peer.

use std::path::PathBuf;
use std::time::Instant;

use rewind::GlobalValue;
use rewind_bench::{FrameSource, Placement, RecordedFrames, Workload};

use crate::args::{Args, Config};
use crate::peers::{self, GitRun, Peer, PeerRun, Pipelined, Rewind, SerdeRun};
use crate::{Res, MIB, PAGE, ROLLBACK};

/// Where a workload's frames come from.
#[derive(Clone, Debug)]
pub enum Kind {
    Synthetic {
        memory: usize,
        dirty_pages: usize,
        placement: Placement,
    },
    Recorded(PathBuf),
}

/// The mutable globals a workload's guest keeps: `count` of them, of which the first
/// `changed` move every frame (an emulator's program counter, cycle count and working
/// registers) and the rest hold their value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalsShape {
    pub count: usize,
    pub changed: usize,
}

/// One workload: its name, source and frame counts.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub kind: Kind,
    pub frames: usize,
    /// Frames git (and the archive beside it) run over; 0: no git.
    pub git_frames: usize,
    /// The guest's globals, recorded by the archive peer; `None`: no globals.
    pub globals: Option<GlobalsShape>,
}

impl Spec {
    pub fn synthetic(
        memory: usize,
        dirty_pages: usize,
        placement: Placement,
        frames: usize,
        git: usize,
    ) -> Spec {
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
            Placement::Sweep => "sweep",
        };
        // Name by the nominal fraction (16 of 16,384 pages is "0.1%").
        let nominal = [0.1, 1.0, 10.0, 90.0]
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
            globals: None,
        }
    }

    /// This workload with a guest that keeps `count` globals, `changed` of them moving
    /// every frame (named with a `-{count}globals` suffix).
    pub fn with_globals(mut self, count: usize, changed: usize) -> Spec {
        self.name = format!("{}-{count}globals", self.name);
        self.globals = Some(GlobalsShape {
            count,
            changed: changed.min(count),
        });
        self
    }

    /// Whether the workload's state is mostly globals.
    pub fn globals_heavy(&self) -> bool {
        self.globals.is_some_and(|g| g.count >= 100)
    }

    /// The guest's globals at `frame` (empty without globals): mostly 32-bit integers,
    /// every fourth a 64-bit one; the first `changed` move every frame.
    pub fn globals_at(&self, frame: u64) -> Vec<GlobalValue> {
        let Some(g) = self.globals else { return Vec::new() };
        (0..g.count)
            .map(|j| {
                let v = if j < g.changed {
                    frame.wrapping_mul(j as u64 * 2 + 1).wrapping_add(j as u64)
                } else {
                    j as u64 * 0x9e37
                };
                if j % 4 == 3 {
                    GlobalValue::I64(v as i64)
                } else {
                    GlobalValue::I32(v as i32)
                }
            })
            .collect()
    }

    fn recorded(path: PathBuf) -> Spec {
        let name = format!(
            "recorded:{}",
            path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default()
        );
        Spec {
            name,
            kind: Kind::Recorded(path),
            frames: usize::MAX,
            git_frames: 200,
            globals: None,
        }
    }

    /// A fresh source of this workload's frames (every source yields the same frames).
    pub fn source(&self) -> Res<Box<dyn FrameSource>> {
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

    /// Whether 1 % of the pages are written per frame (the workloads most goals are set for).
    pub fn one_percent(&self) -> bool {
        self.name.contains("-1%-")
    }

    /// Whether the workload rewrites most of its memory every frame.
    pub fn high_churn(&self) -> bool {
        self.name.ends_with("-sweep")
    }

    /// Frames git and the archive comparison run over.
    pub fn git_window(&self) -> usize {
        if self.git_frames > 0 {
            self.git_frames.min(self.frames)
        } else {
            self.frames
        }
    }

    /// The old frame read back by the archive and git peers.
    pub fn old_frame(&self) -> u64 {
        (self.git_window() / 2) as u64
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
        // A guest that rewrites most of its memory every frame (a JavaScript engine's
        // moving collector): 4 MiB, 90 % of its pages.
        Spec::synthetic(4 * MIB, 922, Placement::Sweep, 650, 0),
        // A guest whose state is mostly globals (an emulator keeping its CPU in 232
        // mutable globals, ~8 of them moving a frame): 4 MiB, 2 pages written a frame.
        Spec::synthetic(4 * MIB, 2, Placement::Clustered, 300, 0).with_globals(232, 8),
    ]
}

/// The workloads the arguments select, with their frame counts settled.
pub fn select(args: &Args, cfg: &Config) -> Res<Vec<Spec>> {
    let mut specs = default_specs(cfg.quick);
    specs.extend(args.recorded.iter().cloned().map(Spec::recorded));
    if let Some(f) = &args.workloads {
        specs.retain(|s| f.iter().any(|w| s.name == *w || s.name.contains(w.as_str())));
    }
    for s in &mut specs {
        if let Some(f) = args.frames {
            s.frames = f;
        }
        if let Some(g) = args.git_frames {
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
    Ok(specs)
}

/// Everything measured on one workload.
pub struct WorkloadResult {
    pub spec: Spec,
    pub memory: usize,
    pub pages: usize,
    pub mean_dirty: f64,
    /// Reference passes over the whole memory, ms.
    pub xxh3: Vec<f64>,
    pub memcpy: Vec<f64>,
    pub peers: Vec<PeerRun>,
    pub hinted: Rewind,
    pub scan: Rewind,
    pub git: Option<GitRun>,
    pub serde: Option<SerdeRun>,
    pub pipe: Option<Pipelined>,
}

impl WorkloadResult {
    pub fn peer(&self, peer: Peer) -> Option<&PeerRun> {
        self.peers.iter().find(|p| p.peer == peer)
    }
}

/// Mean pages written per frame. Synthetic frames are alike: 50 tell the mean.
/// Recorded ones change over the run (rapier's bodies fall, collide, then rest): count
/// them all.
fn mean_dirty(spec: &Spec) -> Res<f64> {
    let mut s = spec.source()?;
    let mut d = Vec::new();
    let n = match spec.kind {
        Kind::Recorded(_) => spec.frames.max(1),
        Kind::Synthetic { .. } => spec.frames.clamp(1, 50),
    };
    let mut total = 0usize;
    for _ in 0..n {
        s.next_frame(&mut d);
        total += d.len();
    }
    Ok(total as f64 / n as f64)
}

/// Run every selected peer on `spec`, in the order the report lists them.
pub fn run(spec: &Spec, cfg: &Config) -> Res<WorkloadResult> {
    let t0 = Instant::now();
    let done = |what: &str| eprintln!("  {what:<22} done ({:.1?})", t0.elapsed());
    let src = spec.source()?;
    let memory = src.memory().len();
    let pages = memory / src.page_size();
    drop(src);
    let mean_dirty = mean_dirty(spec)?;
    eprintln!(
        "== {} ({} MiB, {} pages, ~{:.0} pages written per frame, {} frames)",
        spec.name,
        memory / MIB,
        pages,
        mean_dirty,
        spec.frames
    );
    let (xxh3, memcpy) = peers::references(spec, cfg.reps)?;
    let mut runs = Vec::new();
    for peer in [Peer::Ring, Peer::Hash, Peer::Lz4] {
        if cfg.runs(peer) {
            let p = if peer == Peer::Lz4 {
                peers::copy::lz4(spec, cfg)?
            } else {
                peers::copy::ring(spec, cfg, peer == Peer::Hash)?
            };
            done(peer.label());
            runs.push(p);
        }
    }
    let (mut hinted, mut scan) = (Rewind::default(), Rewind::default());
    // Allocator warm-up: the first run to allocate pays a first-touch page fault
    // for every page of heap it grows into, and later runs reuse that heap (a
    // hinted run measured alone was ~25 % slower per frame than right after
    // another run). A long-running game's history recycles its heap, so every
    // rewind peer is timed on a warm heap: one untimed hinted run first, whose
    // RSS growth is kept as the cross-check of `resident_bytes`.
    let mut cold_rss = None;
    if cfg.runs(Peer::Hint) || cfg.runs(Peer::Scan) {
        cold_rss = peers::memory::run(spec, cfg, true)?.1.rss_delta;
        done("(allocator warm-up)");
    }
    if cfg.runs(Peer::Hint) {
        let (p, mut r) = peers::memory::run(spec, cfg, true)?;
        done(p.peer.label());
        runs.push(p);
        r.rss_delta = cold_rss;
        hinted = r;
    }
    if cfg.runs(Peer::Scan) {
        let (p, r) = peers::memory::run(spec, cfg, false)?;
        done(p.peer.label());
        runs.push(p);
        scan = r;
    }
    let pipe = if cfg.runs(Peer::Pipe) {
        let p = peers::pipeline::run(spec, cfg)?;
        eprintln!(
            "  {:<22} done ({:.1?}): caller {:.3} ms, worker {:.3} ms per capture; GGRS frame p50 {:.2} ms sync, {:.2} ms pipelined",
            Peer::Pipe.label(),
            t0.elapsed(),
            crate::report::med(&p.caller),
            p.worker_busy,
            crate::report::med(&p.ggrs_sync),
            crate::report::med(&p.ggrs_pipe)
        );
        Some(p)
    } else {
        None
    };
    let dir = tempfile::tempdir()?;
    let (mut git_run, mut serde) = (GitRun::default(), None);
    if cfg.runs(Peer::Archive) {
        let (p, g, s) = peers::archive::run(spec, cfg, dir.path())?;
        done(p.peer.label());
        runs.push(p);
        git_run = g;
        serde = Some(s);
    }
    let git = if cfg.git && spec.git_frames > 0 && cfg.runs(Peer::Git) {
        peers::git::run(spec, cfg, dir.path(), &mut git_run)?;
        eprintln!(
            "  {:<22} done ({:.1?}): {} frames, ingest {:.2} s, gc {:.2} s, pack {} B",
            "git",
            t0.elapsed(),
            git_run.frames,
            git_run.ingest_s,
            git_run.gc_s,
            git_run.pack_bytes
        );
        runs.push(git_run.peer_run());
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
        peers: runs,
        hinted,
        scan,
        git,
        serde,
        pipe,
    })
}
