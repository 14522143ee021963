//! Per-frame figures of the real guests under rewind: capture cost with kernel
//! dirty pages and with a full scan, pages changed, bytes stored per frame,
//! memory held for a 600-frame window against a full-copy ring of 600 frames,
//! and the cost of a 7-frame rollback.
//!
//! Run (after `scripts/fetch-guests.sh`):
//!
//! ```sh
//! cargo run --release -p rewind-guests --example figures
//! cargo run --release -p rewind-guests --example figures -- --record DIR [--frames N]
//! ```
//!
//! `--record DIR` also writes each guest's frames as `DIR/<guest>.frames`
//! (`rewind_bench::RecordedFrames`: the initial memory, then per frame the
//! pages the kernel reported written, with their content), for the comparison
//! harness: `cargo run --release -p rewind-bench --bin compare -- --recorded
//! DIR/lua.frames …`. `--frames N` records N frames (default 700: a full
//! 600-frame window plus the harness's rollback repetitions).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rewind_bench::RecordedFrames;
use rewind_guests::{GuestDir, GuestKind, GuestRun, PAGE_SIZE};
use rewind_wasmer::{CaptureMode, CapturePreference};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const WINDOW: u64 = 600;

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The input of frame `k` (SQLite mixes it into its generator; the others
/// run without input).
fn input(kind: GuestKind, k: u64) -> u64 {
    if kind == GuestKind::Sqlite {
        k.wrapping_mul(0x9E37_79B9)
    } else {
        0
    }
}

/// Frames kept for a recorded-frames file: the memory before the first frame
/// and, per frame, the pages reported written with their content.
struct Recording {
    initial: Vec<u8>,
    /// The live memory after the last frame (to find what changed).
    last: Vec<u8>,
    frames: Vec<(Vec<u32>, Vec<u8>)>,
}

impl Recording {
    fn new(run: &mut GuestRun) -> Res<Self> {
        let initial = run.live_memory()?;
        Ok(Self {
            last: initial.clone(),
            initial,
            frames: Vec::new(),
        })
    }

    /// Keeps the frame just run: the kernel's written pages (every changed
    /// page must be among them), or the changed pages in full-scan mode.
    fn frame(&mut self, run: &mut GuestRun) -> Res<()> {
        let page = PAGE_SIZE as usize;
        let now = run.live_memory()?;
        self.last.resize(now.len(), 0);
        let changed: Vec<u32> = (0..now.len() / page)
            .filter(|&p| now[p * page..(p + 1) * page] != self.last[p * page..(p + 1) * page])
            .map(|p| p as u32)
            .collect();
        let pages = if run.mode() == CaptureMode::KernelDirty {
            let written = run.written_pages().to_vec();
            if let Some(missed) = changed.iter().find(|p| written.binary_search(p).is_err()) {
                return Err(format!(
                    "{}: page {missed} changed but the kernel did not report it written",
                    run.name()
                )
                .into());
            }
            written
        } else {
            changed
        };
        let mut bytes = Vec::with_capacity(pages.len() * page);
        for &p in &pages {
            let at = p as usize * page;
            bytes.extend_from_slice(now.get(at..at + page).ok_or("written page past memory end")?);
        }
        self.frames.push((pages, bytes));
        self.last = now;
        Ok(())
    }

    /// Writes the file; memory growth is not represented in the format, so
    /// the initial memory is padded to the final length (zeros, as grown
    /// memory is).
    fn write(self, path: &Path) -> Res<()> {
        let page = PAGE_SIZE as usize;
        let mut memory = self.initial;
        memory.resize(self.last.len(), 0);
        let mut out = RecordedFrames::writer(path, page, &memory)?;
        for (pages, bytes) in &self.frames {
            for (i, &p) in pages.iter().enumerate() {
                let at = p as usize * page;
                memory[at..at + page].copy_from_slice(&bytes[i * page..(i + 1) * page]);
            }
            out.frame(&memory, pages)?;
        }
        out.finish()?;
        if memory != self.last {
            return Err(format!(
                "{}: replayed frames do not end at the live memory",
                path.display()
            )
            .into());
        }
        Ok(())
    }
}

struct Args {
    record: Option<PathBuf>,
    frames: u64,
}

fn args() -> Res<Args> {
    let mut args = Args {
        record: None,
        frames: 700,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--record" => args.record = Some(it.next().ok_or("--record needs a directory")?.into()),
            "--frames" => args.frames = it.next().ok_or("--frames needs a number")?.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if args.frames < WINDOW {
        return Err(format!("--frames must be at least {WINDOW}").into());
    }
    Ok(args)
}

fn main() -> Res<()> {
    let args = args()?;
    let dir = GuestDir::locate()?;
    if let Some(d) = &args.record {
        std::fs::create_dir_all(d)?;
    }
    println!(
        "| guest | memory | pages changed / hashed per frame | capture median (worst), kernel dirty pages | \
         capture median (worst), full scan | bytes stored per frame | held for {WINDOW} frames | \
         full-copy ring of {WINDOW} | ratio | 7-frame rollback median | rollbacks that re-instantiated |"
    );
    println!("| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |");
    for kind in GuestKind::ALL {
        let mut scan_captures = full_scan_captures(kind, &dir)?;

        let mut run = GuestRun::start(kind, &dir, 1)?;
        let mut recording = match args.record {
            Some(_) => Some(Recording::new(&mut run)?),
            None => None,
        };
        let base = run.recorder().history().resident_bytes();
        let mut captures = Vec::new();
        let (mut changed, mut hashed, mut stored, mut memory) = (0u64, 0u64, 0u64, 0u64);
        let mut held = 0;
        let frames = if recording.is_some() { args.frames } else { WINDOW };
        for k in 1..=frames {
            let r = run.step(input(kind, k))?;
            if let Some(rec) = &mut recording {
                rec.frame(&mut run)?;
            }
            if k > WINDOW {
                continue;
            }
            captures.push(r.capture_time);
            changed += r.pages_changed as u64;
            hashed += r.pages_hashed as u64;
            stored += r.bytes_stored;
            memory = memory.max(r.memory_len);
            if k == WINDOW {
                held = run.recorder().history().resident_bytes();
            }
        }
        if let (Some(rec), Some(d)) = (recording, &args.record) {
            let path = d.join(format!("{}.frames", kind.file_name().trim_end_matches(".wasm")));
            rec.write(&path)?;
            eprintln!("{kind}: {frames} frames -> {}", path.display());
        }
        let worst = captures.iter().max().copied().unwrap_or_default();
        let capture = median(&mut captures);
        let scan_worst = scan_captures.iter().max().copied().unwrap_or_default();
        let scan_capture = median(&mut scan_captures);
        let (mut rollbacks, mut reinstantiating) = rollbacks(&mut run, kind)?;
        let ring = WINDOW * memory;
        println!(
            "| {kind} ({}) | {:.1} MiB | {:.0} / {:.0} | {:.0} µs ({:.0} µs) | {:.0} µs ({:.0} µs) | {:.1} KiB | \
             {:.1} MiB | {:.0} MiB | 1/{:.0} | {:.0} µs (of {}) | {} |",
            if run.mode() == CaptureMode::KernelDirty {
                "kernel"
            } else {
                "full scan only"
            },
            memory as f64 / 1048576.0,
            changed as f64 / WINDOW as f64,
            hashed as f64 / WINDOW as f64,
            micros(capture),
            micros(worst),
            micros(scan_capture),
            micros(scan_worst),
            stored as f64 / WINDOW as f64 / 1024.0,
            held as f64 / 1048576.0,
            ring as f64 / 1048576.0,
            ring as f64 / held.max(base).max(1) as f64,
            micros(median(&mut rollbacks)),
            rollbacks.len(),
            if reinstantiating.is_empty() {
                "none".to_string()
            } else {
                format!(
                    "{} (median {:.0} µs)",
                    reinstantiating.len(),
                    micros(median(&mut reinstantiating))
                )
            },
        );
    }
    Ok(())
}

/// Capture times of the first [`WINDOW`] frames with every page hashed at every
/// capture. Run twice, timing the second: the first run in a process pays a first-touch
/// page fault for every page of heap it grows into, and the runs after it reuse that
/// heap (see docs/benchmarks.md).
fn full_scan_captures(kind: GuestKind, dir: &GuestDir) -> Res<Vec<Duration>> {
    let mut scan_captures = Vec::new();
    for timed in [false, true] {
        let mut scan = GuestRun::start_with(kind, dir, 1, CapturePreference::FullScan)?;
        for k in 1..=WINDOW {
            let t = scan.step(input(kind, k))?.capture_time;
            if timed {
                scan_captures.push(t);
            }
        }
    }
    Ok(scan_captures)
}

/// 7-frame rollbacks at 15 points 5 frames apart, each followed by re-simulating the 7
/// frames: the times of those that restored in place, and apart those that
/// re-instantiated the module (a rollback to before a memory growth: wasm memory cannot
/// shrink).
fn rollbacks(run: &mut GuestRun, kind: GuestKind) -> Res<(Vec<Duration>, Vec<Duration>)> {
    let (mut rollbacks, mut reinstantiating) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        for _ in 0..5 {
            let k = run.head() + 1;
            run.step(input(kind, k))?;
        }
        let head = run.head();
        let before = run.session().stats().reinstantiations;
        let t = Instant::now();
        run.rollback_to(head - 7)?;
        let took = t.elapsed();
        if run.session().stats().reinstantiations > before {
            reinstantiating.push(took);
        } else {
            rollbacks.push(took);
        }
        for k in head - 6..=head {
            run.step(input(kind, k))?;
        }
    }
    Ok((rollbacks, reinstantiating))
}
