//! The goals table: every goal the harness checks, as one table of (what, target,
//! which workloads, how it is measured), and one loop that evaluates it over the
//! results and writes the Markdown table.

use std::fmt::Write as _;

use rewind_bench::Spread;

use crate::peers::{Peer, Pipelined};
use crate::report::{fmt_bytes, fmt_ms, fmt_ratio, mean, med, opt_med, p95, p99};
use crate::workload::WorkloadResult;
use crate::WINDOW_600;

/// Which workloads a goal is set for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every workload.
    Every,
    /// The workloads writing 1 % of their pages per frame.
    OnePercent,
    /// The 170 MB workload.
    Large,
    /// The workloads that rewrite most of their memory every frame.
    HighChurn,
    /// The workloads whose state is mostly globals.
    GlobalsHeavy,
}

/// The goals of the capture pipeline come first (for every workload), then the core
/// goals, which need the full-copy ring and both in-memory rewind peers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    Pipeline,
    Core,
}

/// A measurement of one goal on one workload.
struct Measured {
    /// Fills the `{}` of the goal's `what`, for goals that name a figure of the run.
    what: Option<String>,
    text: String,
    /// `None`: the run could not tell (e.g. the window never filled).
    met: Option<bool>,
}

fn measured(text: String, met: Option<bool>) -> Option<Measured> {
    Some(Measured {
        what: None,
        text,
        met,
    })
}

/// One goal: what is compared, the target, and how it is measured.
struct Goal {
    group: Group,
    scope: Scope,
    what: &'static str,
    target: &'static str,
    /// `None` when the run has no data for the goal (its peer did not run).
    measure: fn(&WorkloadResult, Ctx) -> Option<Measured>,
}

/// What a measurement may need beside the workload's results.
#[derive(Clone, Copy)]
struct Ctx {
    window: usize,
}

/// Every goal, in the order the report lists them.
const GOALS: &[Goal] = &[
    Goal {
        group: Group::Pipeline,
        scope: Scope::Large,
        what: "caller-thread time per capture, pipelined (hinted)",
        target: "≤ 0.5 ms",
        measure: pipeline_caller_time,
    },
    Goal {
        group: Group::Pipeline,
        scope: Scope::OnePercent,
        what: "caller-thread capture, pipelined / memcpy of the whole memory",
        target: "≤ 0.02",
        measure: pipeline_caller_vs_memcpy,
    },
    Goal {
        group: Group::Pipeline,
        scope: Scope::OnePercent,
        what: "worst caller-thread capture / median, pipelined (wall)",
        target: "≤ 2×",
        measure: pipeline_worst_capture,
    },
    Goal {
        group: Group::Pipeline,
        scope: Scope::Every,
        what:
            "GGRS pattern (roll back 7, capture 7 re-simulated + 1 new) per frame, caller thread, pipelined",
        target: "≤ 5 ms",
        measure: ggrs_frame,
    },
    Goal {
        group: Group::Pipeline,
        scope: Scope::Every,
        what: "7-frame rollback / memcpy of the pages it writes",
        target: "≤ 1.5×",
        measure: restore_vs_memcpy,
    },
    Goal {
        group: Group::Pipeline,
        scope: Scope::HighChurn,
        what: "capture p99 / median (hinted, incl. GC step)",
        target: "≤ 2×",
        measure: capture_p99,
    },
    Goal {
        group: Group::Pipeline,
        scope: Scope::HighChurn,
        what: "memory of a 600-frame window vs full-copy ring",
        target: "≤ 1/20",
        measure: window_memory,
    },
    Goal {
        group: Group::Pipeline,
        scope: Scope::Every,
        what: "archive append per frame / capture (hinted, alone)",
        target: "≤ 1.2×",
        measure: append_vs_capture,
    },
    Goal {
        group: Group::Pipeline,
        scope: Scope::Every,
        what: "worst archive append / append median (appending thread's CPU time)",
        target: "≤ 2×",
        measure: worst_append,
    },
    Goal {
        group: Group::Pipeline,
        scope: Scope::GlobalsHeavy,
        what: "archive bytes per record / page bytes per record",
        target: "≤ 2×",
        measure: archive_vs_page_bytes,
    },
    Goal {
        group: Group::Core,
        scope: Scope::OnePercent,
        what: "memory of a 600-frame window vs full-copy ring",
        target: "≤ 1/20",
        measure: window_memory,
    },
    Goal {
        group: Group::Core,
        scope: Scope::OnePercent,
        what: "capture per frame (with hint, incl. GC step) vs full-copy ring",
        target: "≤ 1/20",
        measure: capture_vs_ring,
    },
    Goal {
        group: Group::Core,
        scope: Scope::Every,
        what: "capture without hint / one xxh3-128 pass",
        target: "≤ 1.3",
        measure: scan_vs_xxh3,
    },
    Goal {
        group: Group::Core,
        scope: Scope::Every,
        what: "capture with hint / memcpy of the whole memory",
        target: "≤ 0.05",
        measure: hint_vs_memcpy,
    },
    Goal {
        group: Group::Core,
        scope: Scope::OnePercent,
        what: "GC step median / capture median (hinted)",
        target: "≤ 1×",
        measure: gc_step_vs_capture,
    },
    Goal {
        group: Group::Core,
        scope: Scope::OnePercent,
        what: "worst GC step / GC step median",
        target: "≤ 2×",
        measure: worst_gc_step,
    },
    Goal {
        group: Group::Core,
        scope: Scope::Every,
        what: "archive size vs git pack ({} frames)",
        target: "≤ 1×",
        measure: archive_vs_git_size,
    },
    Goal {
        group: Group::Core,
        scope: Scope::Every,
        what: "ingest speed vs git (fast-import + gc --aggressive)",
        target: "≥ 50×",
        measure: ingest_vs_git,
    },
    Goal {
        group: Group::Core,
        scope: Scope::Every,
        what: "open + read old frame {} vs git",
        target: "≥ 10×",
        measure: read_vs_git,
    },
    Goal {
        group: Group::Core,
        scope: Scope::Every,
        what: "open + one state hash vs postcard decode of the index",
        target: "≥ 1,000×",
        measure: open_vs_postcard,
    },
];

/// One evaluated goal: a row of the table.
struct Row {
    what: String,
    workload: String,
    measured: String,
    target: &'static str,
    met: Option<bool>,
}

fn applies(scope: Scope, r: &WorkloadResult) -> bool {
    match scope {
        Scope::Every => true,
        Scope::OnePercent => r.spec.one_percent(),
        Scope::Large => r.spec.name.starts_with("170MB"),
        Scope::HighChurn => r.spec.high_churn(),
        Scope::GlobalsHeavy => r.spec.globals_heavy(),
    }
}

fn has_core_peers(r: &WorkloadResult) -> bool {
    [Peer::Ring, Peer::Hint, Peer::Scan]
        .into_iter()
        .all(|p| r.peer(p).is_some())
}

/// Evaluate the table over `results`: every group, then every workload, then the
/// group's goals in table order.
fn evaluate(results: &[WorkloadResult], window: usize) -> Vec<Row> {
    let ctx = Ctx { window };
    let mut rows = Vec::new();
    for group in [Group::Pipeline, Group::Core] {
        for r in results {
            if group == Group::Core && !has_core_peers(r) {
                continue;
            }
            for goal in GOALS.iter().filter(|g| g.group == group && applies(g.scope, r)) {
                let Some(m) = (goal.measure)(r, ctx) else { continue };
                rows.push(Row {
                    what: match m.what {
                        Some(arg) => goal.what.replacen("{}", &arg, 1),
                        None => goal.what.to_string(),
                    },
                    workload: r.spec.name.clone(),
                    measured: m.text,
                    target: goal.target,
                    met: m.met,
                });
            }
        }
    }
    rows
}

fn status(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**MISSED**",
        None => "not measured",
    }
}

/// The goals section of the report.
pub fn write_table(s: &mut String, results: &[WorkloadResult], window: usize) {
    let _ = writeln!(s, "### Goals\n");
    let _ = writeln!(s, "| goal | workload | measured (same run) | target | status |");
    let _ = writeln!(s, "| --- | --- | --- | --- | --- |");
    for g in evaluate(results, window) {
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
}

// ---------------------------------------------------------------------------------------
// Capture pipeline goals: judged on the caller thread's CPU time, which other load on a
// shared machine does not inflate; the wall time is shown beside it.

/// Whether the worker kept up, in words.
fn kept_up(p: &Pipelined) -> String {
    if p.blocked == 0 {
        "the worker kept up".to_string()
    } else {
        format!(
            "the worker fell behind: {} of {} captures blocked on the staging budget, worker {} ms CPU per capture",
            p.blocked,
            p.frames,
            p.worker_cpu.map_or("—".into(), fmt_ms)
        )
    }
}

/// The pipelined caller's median wall and CPU ms per capture, and its mean CPU.
fn caller_wall_cpu(p: &Pipelined) -> (f64, f64, f64) {
    let wall = med(&p.caller);
    if p.caller_cpu.is_empty() {
        return (wall, wall, wall);
    }
    (wall, med(&p.caller_cpu), mean(&p.caller_cpu))
}

fn pipeline_caller_time(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let p = r.pipe.as_ref()?;
    let (wall, cpu, cpu_mean) = caller_wall_cpu(p);
    // The floor: a memcpy of the written pages at this run's memcpy speed.
    let floor = med(&r.memcpy) * r.mean_dirty / r.pages.max(1) as f64;
    measured(
        format!(
            "{} ms CPU (mean {} ms), {} ms wall; floor (memcpy of the written pages at this run's memcpy speed) {} ms (synchronous: {} ms CPU, {} ms wall); {}",
            fmt_ms(cpu),
            fmt_ms(cpu_mean),
            fmt_ms(wall),
            fmt_ms(floor),
            opt_med(&p.sync_cpu),
            fmt_ms(med(&p.sync)),
            kept_up(p)
        ),
        Some(cpu <= 0.5 && p.blocked == 0),
    )
}

fn pipeline_caller_vs_memcpy(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let p = r.pipe.as_ref()?;
    let (wall, cpu, cpu_mean) = caller_wall_cpu(p);
    let ratio = cpu / med(&r.memcpy);
    measured(
        format!(
            "{} ms CPU (mean {} ms; {} ms wall) / {} ms = {}; {}",
            fmt_ms(cpu),
            fmt_ms(cpu_mean),
            fmt_ms(wall),
            fmt_ms(med(&r.memcpy)),
            fmt_ratio(ratio),
            kept_up(p)
        ),
        Some(ratio <= 0.02 && p.blocked == 0),
    )
}

fn pipeline_worst_capture(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let p = r.pipe.as_ref()?;
    let (wall, ..) = caller_wall_cpu(p);
    let worst = Spread::of(&p.caller).max;
    measured(
        format!(
            "{} ms / {} ms = {} (p99 {} ms)",
            fmt_ms(worst),
            fmt_ms(wall),
            fmt_ratio(worst / wall),
            fmt_ms(p99(&p.caller))
        ),
        Some(worst <= 2.0 * wall),
    )
}

fn ggrs_frame(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let p = r.pipe.as_ref()?;
    let cpu50 = med(&p.ggrs_pipe_cpu);
    // The floor: memcpy, at this run's speed, of the pages a 7-frame rollback writes
    // and of the pages the 8 captures copy (when the hinted peer measured the former).
    let restored = &r.hinted.restored_pages;
    let floor = (!restored.is_empty() && r.pages > 0).then(|| {
        let pages = restored.iter().sum::<u64>() as f64 / restored.len() as f64 + 8.0 * r.mean_dirty;
        med(&r.memcpy) * pages / r.pages as f64
    });
    let floor = floor.map_or(String::new(), |f| {
        format!(
            "; floor (memcpy of the pages restored and of the 8 captures' written pages) {} ms",
            fmt_ms(f)
        )
    });
    measured(
        format!(
            "CPU p50 {} ms, p99 {} ms; wall p50 {} ms, p99 {} ms, of which waiting for the worker {} ms (worker CPU {} ms per frame); synchronous: CPU p50 {} ms, wall p50 {} ms, p99 {} ms{floor}",
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
        Some(cpu50 <= 5.0 && med(&p.ggrs_pipe) <= 5.0),
    )
}

fn restore_vs_memcpy(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let hint = r.peer(Peer::Hint)?;
    let h = &r.hinted;
    if hint.restore.is_empty() || h.restored_pages.is_empty() || h.restored_memcpy.is_empty() || r.memory == 0
    {
        return None;
    }
    let pages = h.restored_pages.iter().sum::<u64>() as f64 / h.restored_pages.len() as f64;
    // The floor: a memcpy of exactly the pages the rollback wrote, each to its offset
    // in a full-size buffer, timed in the same run. Beside it, the whole memory's
    // sequential memcpy scaled to those pages, which scattered 4 KiB copies do not reach.
    let page = (r.memory / r.pages.max(1)) as f64;
    let scaled = med(&r.memcpy) * pages * page / r.memory as f64;
    let floor = med(&h.restored_memcpy);
    let ratio = med(&hint.restore) / floor;
    measured(
        format!(
            "{} ms / {} ms ({:.0} pages) = {}; the whole memory's memcpy scaled to those pages {} ms ({})",
            fmt_ms(med(&hint.restore)),
            fmt_ms(floor),
            pages,
            fmt_ratio(ratio),
            fmt_ms(scaled),
            fmt_ratio(med(&hint.restore) / scaled)
        ),
        Some(ratio <= 1.5),
    )
}

fn capture_p99(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let hint = r.peer(Peer::Hint)?;
    let (p, m) = (p99(&hint.capture), med(&hint.capture));
    measured(
        format!("{} ms / {} ms = {}", fmt_ms(p), fmt_ms(m), fmt_ratio(p / m)),
        Some(p <= 2.0 * m),
    )
}

fn append_vs_capture(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let archive = r.peer(Peer::Archive)?;
    if archive.append.is_empty() || r.hinted.capture_only.is_empty() {
        return None;
    }
    let (append, capture) = (med(&archive.append), med(&r.hinted.capture_only));
    let ratio = append / capture;
    let mut text = format!(
        "{} ms / {} ms = {} (append CPU {} ms)",
        fmt_ms(append),
        fmt_ms(capture),
        fmt_ratio(ratio),
        fmt_ms(med(&archive.append_cpu))
    );
    if let Some(b) = &archive.batched {
        // Means: a batched commit lands on one frame in `every`.
        let mean = archive.append.iter().sum::<f64>() / archive.append.len() as f64;
        let (wall, cpu) = b.per_frame();
        let _ = write!(
            text,
            "; mean per frame, committing every frame {} ms, every {} frames {} ms ({} ms CPU) = {} the capture",
            fmt_ms(mean),
            b.every,
            fmt_ms(wall),
            fmt_ms(cpu),
            fmt_ratio(wall / capture)
        );
    }
    measured(text, Some(ratio <= 1.2))
}

/// Judged on the appending thread's CPU time, so a preemption (another process taking
/// the core mid-append) does not decide it; the wall time is shown beside it.
fn worst_append(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let archive = r.peer(Peer::Archive)?;
    if archive.append.is_empty() {
        return None;
    }
    let wall = Spread::of(&archive.append);
    let Some(cpu) = (!archive.append_cpu.is_empty()).then(|| Spread::of(&archive.append_cpu)) else {
        return measured(
            format!(
                "wall {} ms / {} ms = {} (p99 {} ms); no CPU time measured",
                fmt_ms(wall.max),
                fmt_ms(wall.median),
                fmt_ratio(wall.max / wall.median),
                fmt_ms(p99(&archive.append))
            ),
            None,
        );
    };
    measured(
        format!(
            "CPU {} ms / {} ms = {} (p99 {} ms); wall {} ms / {} ms = {} (p99 {} ms)",
            fmt_ms(cpu.max),
            fmt_ms(cpu.median),
            fmt_ratio(cpu.max / cpu.median),
            fmt_ms(p99(&archive.append_cpu)),
            fmt_ms(wall.max),
            fmt_ms(wall.median),
            fmt_ratio(wall.max / wall.median),
            fmt_ms(p99(&archive.append))
        ),
        Some(cpu.max <= 2.0 * cpu.median),
    )
}

fn archive_vs_page_bytes(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let archive = r.peer(Peer::Archive)?;
    let (total, pages) = (archive.disk_per_frame?, archive.page_bytes_per_frame?);
    let ratio = total / pages.max(1.0);
    let mut text = format!(
        "{} / {} = {} ({} globals; index runs, root and trailer {} a record)",
        fmt_bytes(total),
        fmt_bytes(pages),
        fmt_ratio(ratio),
        r.spec.globals.map_or(0, |g| g.count),
        archive.index_bytes_per_frame.map_or("—".into(), fmt_bytes)
    );
    if let Some(b) = &archive.batched {
        let _ = write!(
            text,
            "; committing every {} frames: {} / {} = {} (index runs, root and trailer {} a record)",
            b.every,
            fmt_bytes(b.disk_per_frame),
            fmt_bytes(b.page_bytes_per_frame),
            fmt_ratio(b.disk_per_frame / b.page_bytes_per_frame.max(1.0)),
            fmt_bytes(b.index_bytes_per_frame)
        );
    }
    measured(text, Some(ratio <= 2.0))
}

// ---------------------------------------------------------------------------------------
// Core goals

fn window_memory(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let ring_mem = (WINDOW_600 * r.memory) as f64;
    let ok = r.hinted.window_frames >= WINDOW_600;
    let ratio = r.hinted.resident as f64 / ring_mem;
    let text = if ok {
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
    };
    measured(text, ok.then_some(ratio <= 0.05))
}

fn capture_vs_ring(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let (ring, hint) = (r.peer(Peer::Ring)?, r.peer(Peer::Hint)?);
    let c = med(&hint.capture) / med(&ring.capture);
    measured(
        format!(
            "{} ms / {} ms = 1/{:.0}",
            fmt_ms(med(&hint.capture)),
            fmt_ms(med(&ring.capture)),
            1.0 / c
        ),
        Some(c <= 0.05),
    )
}

/// `a ms / b ms = ratio` for two medians, and whether the ratio is at most `max`.
fn ratio_of_medians(a: &[f64], b: &[f64], max: f64) -> Option<Measured> {
    let ratio = med(a) / med(b);
    measured(
        format!(
            "{} ms / {} ms = {}",
            fmt_ms(med(a)),
            fmt_ms(med(b)),
            fmt_ratio(ratio)
        ),
        Some(ratio <= max),
    )
}

fn scan_vs_xxh3(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    ratio_of_medians(&r.scan.capture_only, &r.xxh3, 1.3)
}

fn hint_vs_memcpy(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    ratio_of_medians(&r.hinted.capture_only, &r.memcpy, 0.05)
}

fn gc_step_vs_capture(r: &WorkloadResult, ctx: Ctx) -> Option<Measured> {
    let gs = Spread::of(&r.hinted.gc_step);
    let cap = med(&r.hinted.capture_only);
    let note = if r.hinted.gc_after_window {
        format!("{} steps after the window filled", gs.n)
    } else {
        format!("window of {} never filled: steps free nothing", ctx.window)
    };
    measured(
        format!(
            "{} ms / {} ms = {} ({note})",
            fmt_ms(gs.median),
            fmt_ms(cap),
            fmt_ratio(gs.median / cap)
        ),
        r.hinted.gc_after_window.then_some(gs.median <= cap),
    )
}

fn worst_gc_step(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let gs = Spread::of(&r.hinted.gc_step);
    let gp95 = p95(&r.hinted.gc_step);
    measured(
        format!(
            "{} ms / {} ms = {} (p95 {} = {})",
            fmt_ms(gs.max),
            fmt_ms(gs.median),
            fmt_ratio(gs.max / gs.median),
            fmt_ms(gp95),
            fmt_ratio(gp95 / gs.median)
        ),
        r.hinted.gc_after_window.then_some(gs.max <= 2.0 * gs.median),
    )
}

fn archive_vs_git_size(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let gr = r.git.as_ref()?;
    let size = gr.archive_bytes as f64 / gr.pack_bytes as f64;
    Some(Measured {
        what: Some(gr.frames.to_string()),
        text: format!(
            "{} / {} = {}",
            fmt_bytes(gr.archive_bytes as f64),
            fmt_bytes(gr.pack_bytes as f64),
            fmt_ratio(size)
        ),
        met: Some(size <= 1.0),
    })
}

fn ingest_vs_git(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let gr = r.git.as_ref()?;
    let ing = (gr.ingest_s + gr.gc_s) / gr.archive_ingest_s;
    measured(
        format!(
            "{:.2} s (+{:.2} s gc) / {:.3} s = {} faster ({} without gc)",
            gr.ingest_s,
            gr.gc_s,
            gr.archive_ingest_s,
            fmt_ratio(ing),
            fmt_ratio(gr.ingest_s / gr.archive_ingest_s)
        ),
        Some(ing >= 50.0),
    )
}

fn read_vs_git(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let gr = r.git.as_ref()?;
    let rd = med(&gr.read) / med(&gr.archive_read);
    Some(Measured {
        what: Some(gr.read_frame.to_string()),
        text: format!(
            "{} ms / {} ms = {} faster",
            fmt_ms(med(&gr.read)),
            fmt_ms(med(&gr.archive_read)),
            fmt_ratio(rd)
        ),
        met: Some(rd >= 10.0),
    })
}

fn open_vs_postcard(r: &WorkloadResult, _: Ctx) -> Option<Measured> {
    let s = r.serde.as_ref()?;
    let o = med(&s.postcard) / med(&s.rkyv);
    measured(
        format!(
            "{} ms / {} ms = {} faster",
            fmt_ms(med(&s.postcard)),
            fmt_ms(med(&s.rkyv)),
            fmt_ratio(o)
        ),
        Some(o >= 1000.0),
    )
}
