//! The capture pipeline on 64 MiB of memory with 4 KiB pages and 1 % of pages written
//! per frame: the caller's share of a pipelined capture (the staged copy) beside the
//! synchronous capture, and the "GGRS pattern" frame (roll back 7 frames, capture the 7
//! re-simulated ones and the new frame), synchronous and pipelined, the pipelined one
//! including its wait for the worker.
//!
//! Run: `cargo bench -p rewind-bench --bench pipeline`
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rewind::{LiveMemory, Options, PipelineOptions, Policy, Recorder};
use rewind_bench::{Placement, Workload};

const MEM: usize = 64 << 20;
const PAGE: usize = 4096;
const ROLLBACK: u64 = 7;

fn recorder(pipelined: bool) -> Recorder {
    let mut o = Options::new(PAGE as u64)
        .expect("page size")
        .seed(1)
        .policy(Policy::default().keep_last(600).abandoned_max_age(0));
    if pipelined {
        o = o.pipeline(PipelineOptions::new());
    }
    Recorder::new(o).expect("recorder")
}

fn workload() -> Workload {
    Workload::new(MEM, PAGE, 0.01, Placement::Clustered, 7)
}

fn mode(pipelined: bool) -> &'static str {
    if pipelined {
        "pipelined"
    } else {
        "synchronous"
    }
}

/// Time on the caller's thread per hinted capture (`Recorder::submit`); the pipelined
/// worker's own time is not counted here, only what the frame waits for.
fn submit(c: &mut Criterion) {
    let mut g = c.benchmark_group("submit_64MiB_1pct");
    g.sample_size(20);
    for pipelined in [false, true] {
        g.bench_function(mode(pipelined), |b| {
            b.iter_custom(|iters| {
                let mut w = workload();
                let mut rec = recorder(pipelined);
                let mut dirty = Vec::new();
                rec.submit(0, &w.memory, &[], None, None).expect("first frame");
                let mut total = Duration::ZERO;
                for f in 1..=iters {
                    w.frame(&mut dirty);
                    let t = Instant::now();
                    rec.submit(f, &w.memory, &[], Some(&dirty), None).expect("submit");
                    total += t.elapsed();
                    // Leave the worker the time a frame's guest would: without it the
                    // staging budget, not the staged copy, would be measured.
                    if pipelined {
                        rec.settle().expect("settle");
                    }
                }
                total
            })
        });
    }
    g.finish();
}

/// One GGRS frame: roll back 7 frames, capture the 7 re-simulated ones and the new one
/// (the head moves on by one). The pipelined
/// figure includes the rollback's wait for the frames still in flight.
fn ggrs_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("ggrs_frame_64MiB_1pct");
    g.sample_size(20);
    for pipelined in [false, true] {
        g.bench_function(mode(pipelined), |b| {
            b.iter_custom(|iters| {
                let mut w = workload();
                let mut rec = recorder(pipelined);
                let mut dirty = Vec::new();
                rec.submit(0, &w.memory, &[], None, None).expect("first frame");
                let mut head = 0;
                for _ in 0..=ROLLBACK {
                    w.frame(&mut dirty);
                    head += 1;
                    rec.submit(head, &w.memory, &[], Some(&dirty), None)
                        .expect("warm-up");
                }
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    black_box(
                        rec.rollback_to(head - ROLLBACK, &mut w.memory, LiveMemory::AtHead)
                            .expect("rollback"),
                    );
                    let mut spent = t.elapsed();
                    for it in head - ROLLBACK + 1..=head + 1 {
                        w.frame(&mut dirty);
                        let t = Instant::now();
                        rec.submit(it, &w.memory, &[], Some(&dirty), None)
                            .expect("re-simulated capture");
                        spent += t.elapsed();
                    }
                    head += 1;
                    total += spent;
                }
                rec.settle().expect("settle");
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, submit, ggrs_frame);
criterion_main!(benches);
