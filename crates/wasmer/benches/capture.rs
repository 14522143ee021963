//! Capture and rollback of a live wasmer guest through `rewind_wasmer::Session`.
//!
//! Phase measured: the per-frame capture (dirty scan + globals + hashing +
//! storing + the GC step) and the restore of a rollback, on a WAT guest that
//! writes a fixed number of scattered 4 KiB pages per frame. Guest run time
//! (including the ~1 µs kernel write fault per first write to a protected
//! page) is excluded: `StepReport::capture_time` is summed with
//! `iter_custom`.
//!
//! - 64 MiB, 164 pages (~1 %) written per frame: kernel-hinted capture vs
//!   full-scan capture vs a memcpy of the whole memory (WASM-4 / GGPO style).
//! - 170 MB, 1,500 pages per frame: hinted capture, and a 7-frame rollback
//!   vs a memcpy of the 7 × 1,500 changed pages.
//!
//! Run: `cargo bench -p rewind-wasmer --bench capture`

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rewind::Policy;
use rewind_wasmer::{CapturePreference, DirtyTracker, Session, SessionOptions};

const PAGE: u64 = 4096;

/// A guest of `wasm_pages` 64 KiB pages whose `step(frame)` writes 8 bytes
/// into each of `per_frame` scattered 4 KiB pages.
fn guest(wasm_pages: u64, per_frame: u64) -> String {
    let pages = wasm_pages * 16;
    format!(
        r#"(module
  (memory (export "memory") {wasm_pages} {wasm_pages})
  (global $frame (mut i64) (i64.const 0))
  (func (export "step") (param $in i64)
    (local $i i64) (local $page i64)
    (global.set $frame (i64.add (global.get $frame) (i64.const 1)))
    (block $done
      (loop $each
        (br_if $done (i64.ge_u (local.get $i) (i64.const {per_frame})))
        (local.set $page (i64.rem_u
          (i64.add (i64.mul (local.get $in) (i64.const 7919))
                   (i64.mul (local.get $i) (i64.const 104729)))
          (i64.const {pages})))
        (i64.store
          (i32.wrap_i64 (i64.add (i64.mul (local.get $page) (i64.const 4096))
                                 (i64.and (i64.mul (local.get $in) (i64.const 8)) (i64.const 4088))))
          (i64.add (global.get $frame) (local.get $in)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $each)))))"#
    )
}

fn session(wat: &str, capture: CapturePreference) -> Session {
    let options = SessionOptions::new(PAGE)
        .expect("valid page size")
        .seed(1)
        .policy(Policy::default().keep_last(16))
        .capture(capture);
    Session::new(wat, options).expect("bench guest")
}

/// Sums the capture time of `iters` steps.
fn captures(s: &mut Session, frame: &mut u64, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        *frame += 1;
        total += s.step(&frame.to_le_bytes()).expect("step").capture_time;
    }
    total
}

fn bench_64mib(c: &mut Criterion) {
    let wat = guest(1024, 164);
    let mut g = c.benchmark_group("64MiB_164_pages_per_frame");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    if DirtyTracker::probe().is_available() {
        let mut s = session(&wat, CapturePreference::KernelDirty);
        let mut frame = 0;
        g.bench_function("capture_kernel_hinted", |b| {
            b.iter_custom(|iters| captures(&mut s, &mut frame, iters))
        });
    } else {
        eprintln!("kernel dirty tracking unavailable: {}", DirtyTracker::probe());
    }
    let mut s = session(&wat, CapturePreference::FullScan);
    let mut frame = 0;
    g.bench_function("capture_full_scan", |b| {
        b.iter_custom(|iters| captures(&mut s, &mut frame, iters))
    });
    let mut copy = vec![0u8; 64 << 20];
    let guest = s.guest().clone();
    g.bench_function("memcpy_whole_memory", |b| {
        b.iter(|| {
            guest
                .with_memory(s.store_mut(), |m| copy.copy_from_slice(m))
                .expect("own store");
            black_box(&copy);
        })
    });
    g.finish();
}

fn bench_170mb(c: &mut Criterion) {
    // 170 MB = 2,594 wasm pages (170,000,000 / 65,536).
    let wat = guest(2594, 1500);
    let mut g = c.benchmark_group("170MB_1500_pages_per_frame");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let mut s = session(&wat, CapturePreference::Auto);
    eprintln!("170 MB guest capture mode: {}", s.mode());
    let mut frame = 0;
    g.bench_function("capture_hinted", |b| {
        b.iter_custom(|iters| captures(&mut s, &mut frame, iters))
    });
    g.bench_function("rollback_7_frames", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                captures(&mut s, &mut frame, 7);
                let target = s.head_iteration() - 7;
                let t0 = Instant::now();
                s.rollback_to(target).expect("rollback");
                total += t0.elapsed();
            }
            total
        })
    });
    // The memcpy a snapshot-per-frame scheme would do for the same rollback:
    // copy back the 7 x 1,500 changed pages, page by page.
    let n_pages = (2594 * 65536 / PAGE) as usize;
    let source = vec![1u8; n_pages * PAGE as usize];
    let guest = s.guest().clone();
    g.bench_function("memcpy_changed_pages_7_frames", |b| {
        b.iter(|| {
            guest
                .with_memory_mut(s.store_mut(), |m| {
                    for f in 0..7u64 {
                        for i in 0..1500u64 {
                            let p = ((f * 7919 + i * 104_729) % n_pages as u64) as usize * PAGE as usize;
                            m[p..p + PAGE as usize].copy_from_slice(&source[p..p + PAGE as usize]);
                        }
                    }
                })
                .expect("own store");
        })
    });
    g.finish();
}

criterion_group!(benches, bench_64mib, bench_170mb);
criterion_main!(benches);
