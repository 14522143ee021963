//! Core phases of rewind on 64 MiB of memory with 4 KiB pages and 1 % of pages written
//! per frame: capture with and without a dirty hint, beside one xxh3-128 pass and one
//! memcpy of the whole memory (the reference points of docs/benchmarks.md); restore
//! after a 7-frame rollback; blame; the per-iteration GC step with a 600-frame window;
//! lz4 of single pages.
//!
//! Run: `cargo bench -p rewind-bench --bench core`
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rewind::{LiveMemory, Options, Policy, Recorder};
use rewind_bench::{Placement, Workload};

const MEM: usize = 64 << 20;
const PAGE: usize = 4096;

fn recorder(window: usize) -> Recorder {
    Recorder::new(
        Options::new(PAGE as u64)
            .expect("page size")
            .seed(1)
            .policy(Policy::default().keep_last(window).abandoned_max_age(0)),
    )
    .expect("recorder")
}

fn warm(rec: &mut Recorder, w: &mut Workload, frames: u64) -> u64 {
    let mut dirty = Vec::new();
    for f in 0..frames {
        if f > 0 {
            w.frame(&mut dirty);
        }
        rec.capture(f, &w.memory, &[], (f > 0).then_some(&dirty[..]), None)
            .expect("record");
    }
    frames
}

fn references(c: &mut Criterion) {
    let w = Workload::new(MEM, PAGE, 0.01, Placement::Clustered, 7);
    let mut g = c.benchmark_group("reference_64MiB");
    g.sample_size(20);
    g.bench_function("xxh3_128_whole_memory", |b| {
        b.iter(|| black_box(xxhash_rust::xxh3::xxh3_128(black_box(&w.memory))))
    });
    let mut dst = vec![0u8; MEM];
    g.bench_function("memcpy_whole_memory", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&w.memory));
            black_box(&dst);
        })
    });
    g.finish();
}

fn capture(c: &mut Criterion) {
    let mut g = c.benchmark_group("capture_64MiB_1pct");
    g.sample_size(20);
    for hinted in [true, false] {
        let name = if hinted { "with_hint" } else { "full_scan" };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut w = Workload::new(MEM, PAGE, 0.01, Placement::Clustered, 7);
                let mut rec = recorder(600);
                let first = warm(&mut rec, &mut w, 8);
                let mut dirty = Vec::new();
                let mut total = Duration::ZERO;
                for f in first..first + iters {
                    w.frame(&mut dirty);
                    let t = Instant::now();
                    let hint = hinted.then_some(&dirty[..]);
                    black_box(
                        rec.history_mut()
                            .capture(f, &w.memory, &[], hint, None)
                            .expect("capture"),
                    );
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn gc_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("gc_step_64MiB_1pct_window600");
    g.sample_size(20);
    g.bench_function("step", |b| {
        b.iter_custom(|iters| {
            let mut w = Workload::new(MEM, PAGE, 0.01, Placement::Clustered, 7);
            let mut rec = recorder(600);
            let first = warm(&mut rec, &mut w, 620);
            let mut dirty = Vec::new();
            let mut total = Duration::ZERO;
            let mut collector = rewind::Collector::new(Policy::default().keep_last(600).abandoned_max_age(0));
            for f in first..first + iters {
                w.frame(&mut dirty);
                rec.history_mut()
                    .capture(f, &w.memory, &[], Some(&dirty), None)
                    .expect("capture");
                let t = Instant::now();
                black_box(collector.collect_some(rec.history_mut()).expect("gc"));
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn rollback(c: &mut Criterion) {
    let mut g = c.benchmark_group("rollback_64MiB_1pct");
    g.sample_size(20);
    g.bench_function("restore_7_frames", |b| {
        b.iter_custom(|iters| {
            let mut w = Workload::new(MEM, PAGE, 0.01, Placement::Clustered, 7);
            let mut rec = recorder(600);
            let mut f = warm(&mut rec, &mut w, 16);
            let mut dirty = Vec::new();
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // seven more frames, then roll back over them
                for _ in 0..7 {
                    w.frame(&mut dirty);
                    rec.capture(f, &w.memory, &[], Some(&dirty), None)
                        .expect("record");
                    f += 1;
                }
                let t = Instant::now();
                black_box(
                    rec.rollback_to(f - 8, &mut w.memory, LiveMemory::AtHead)
                        .expect("rollback"),
                );
                total += t.elapsed();
                f -= 7;
            }
            total
        })
    });
    g.finish();
}

fn blame(c: &mut Criterion) {
    let mut w = Workload::new(MEM, PAGE, 0.01, Placement::Clustered, 7);
    let mut rec = recorder(600);
    let last = warm(&mut rec, &mut w, 600) - 1;
    let mut g = c.benchmark_group("blame_64MiB_600_frames");
    g.sample_size(20);
    g.bench_function("blame_8_bytes", |b| {
        let mut addr = 0u64;
        b.iter(|| {
            addr = (addr + 7_919 * 4096 + 40) % (MEM as u64 - 8);
            black_box(rec.blame(last, addr, 8).expect("blame"))
        })
    });
    g.finish();
}

/// lz4 of one 4 KiB page, as the store's GC step compresses aged pages and the archive
/// writer packs them: 256 pages of the workload's memory per iteration.
fn page_lz4(c: &mut Criterion) {
    let w = Workload::new(MEM, PAGE, 0.01, Placement::Clustered, 7);
    let pages: Vec<&[u8]> = w.memory.chunks(PAGE).step_by(61).take(256).collect();
    let mut scratch = rewind::layers::store::codec::Scratch::default();
    let mut g = c.benchmark_group("page_lz4");
    g.throughput(criterion::Throughput::Bytes((pages.len() * PAGE) as u64));
    g.bench_function("compress_256_pages", |b| {
        b.iter(|| {
            for p in &pages {
                black_box(
                    rewind::layers::store::codec::compress(black_box(p), &mut scratch).map(<[u8]>::len),
                );
            }
        })
    });
    g.finish();
}

criterion_group!(benches, references, capture, rollback, blame, gc_step, page_lz4);
criterion_main!(benches);
