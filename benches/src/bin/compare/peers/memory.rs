//! rewind in memory: what `Recorder::capture` does (capture, then one GC step), with or
//! without the dirty hint.

use std::hint::black_box;
use std::time::Instant;

use rewind::{Collector, LiveMemory};

use super::{history, policy, rollbacks, split_first, Peer, PeerRun};
use crate::args::Config;
use crate::workload::Spec;
use crate::{ms, Res, WINDOW_600};

/// The rewind-only figures of an in-memory run.
#[derive(Default)]
pub struct Rewind {
    /// Capture alone (no GC step), ms per frame.
    pub capture_only: Vec<f64>,
    /// GC step, ms per frame (after the window filled, when it did).
    pub gc_step: Vec<f64>,
    pub gc_after_window: bool,
    /// (frames, resident bytes, bytes of the pages changed so far) at a few points.
    pub growth: Vec<(usize, u64, u64)>,
    pub resident: u64,
    /// Process RSS growth over the run.
    pub rss_delta: Option<u64>,
    pub window_frames: usize,
    /// Pages each 7-frame rollback wrote into memory.
    pub restored_pages: Vec<u64>,
    /// Per rollback, ms of a plain memcpy of exactly the pages it wrote, each to the
    /// same offset of a full-size buffer (what a full-copy ring's restore of the
    /// changed pages costs): the floor of a restore, scattered as it is.
    pub restored_memcpy: Vec<f64>,
}

/// Resident set size of this process, from `/proc/self/statm`.
fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// rewind in memory (what `Recorder::capture` does: capture, then one GC step), with
/// or without the dirty hint.
pub fn run(spec: &Spec, cfg: &Config, hinted: bool) -> Res<(PeerRun, Rewind)> {
    let mut src = spec.source()?;
    let page = src.page_size();
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
    let mut restored_pages = Vec::new();
    let mut restored_memcpy = Vec::new();
    // The floor copy's destination, touched once here so its page faults are not timed.
    let mut scratch = vec![1u8; src.memory().len()];
    let restore = rollbacks(
        src.as_mut(),
        &mut (h, gc),
        frames as u64 - 1,
        cfg.reps,
        |(h, gc), f, mem, dirty| {
            h.capture(f, mem, &[], hinted.then_some(dirty), None)?;
            gc.collect_some(h)?;
            Ok(())
        },
        |(h, _), f, mem| {
            // The pages the rollback writes, found before the timed restore starts.
            let written = match h.head() {
                Some(head) => rewind::layers::snapshot::diff(head.snapshot(), h.at(f)?.snapshot()),
                None => Vec::new(),
            };
            let t = Instant::now();
            let report = black_box(h.rollback_to(f, mem, LiveMemory::AtHead)?);
            let restore = t.elapsed();
            restored_pages.push(report.restored.pages_written as u64);
            // After the restore, so its source pages are as warm as the restore left them
            // (a bias toward a lower floor, never a higher one).
            let t = Instant::now();
            for &i in &written {
                let at = i as usize * page..(i as usize + 1) * page;
                if let (Some(d), Some(s)) = (scratch.get_mut(at.clone()), mem.get(at)) {
                    d.copy_from_slice(s);
                }
            }
            black_box(&scratch);
            restored_memcpy.push(ms(t.elapsed()));
            Ok(restore)
        },
    )?;
    r.restored_pages = restored_pages;
    r.restored_memcpy = restored_memcpy;
    let window_bytes = (r.window_frames >= WINDOW_600).then_some(r.resident as f64);
    Ok((
        PeerRun {
            capture,
            first_frame_ms: first,
            restore,
            window_bytes,
            window_note: "measured resident_bytes",
            ..PeerRun::new(if hinted { Peer::Hint } else { Peer::Scan })
        },
        r,
    ))
}
