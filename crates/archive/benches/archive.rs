//! Archive phases: (1) open + read one iteration's state hash on a large archive, against
//! deserializing the same index with postcard (serde); (2) the cost of appending one
//! iteration at 1 % dirty pages (64 MiB memory, 4 KiB pages), against the in-memory
//! capture alone; (3) bytes on disk per iteration against lz4 of the changed byte runs
//! (printed, not timed).
//!
//! `REWIND_BENCH_ARCHIVE_MB` sets the size of the large archive (default 1024).
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_gc::{Collector, Policy};
use rewind_history::{History, HistoryConfig};
use rewind_snapshot::GlobalValue;
use rewind_store::codec::ChangedRuns;

const PAGE: usize = 4096;
const MEM: usize = 64 << 20;
const PAGES: usize = MEM / PAGE;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A record entry of the serde twin.
type SerdeRec = (u64, u64, u64, u64, u64, [u8; 16], [u8; 16], u8, u32, u32, u64);

/// The serde twin of the archive's index, for the comparison.
#[derive(serde::Serialize, serde::Deserialize)]
struct SerdeIndex {
    objects: Vec<([u8; 16], u64, u32, u8, u8)>,
    records: Vec<SerdeRec>,
    timeline: Vec<(u64, u64)>,
}

fn big_archive(dir: &std::path::Path) -> (std::path::PathBuf, u64) {
    let mb: u64 = std::env::var("REWIND_BENCH_ARCHIVE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let path = dir.join("big.rwd");
    let mut h = History::new(HistoryConfig::new(PAGE as u64).expect("cfg").seed(1)).expect("history");
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual).expect("create");
    let mut gc = Collector::new(Policy::default().keep_last(2));
    let mut mem = vec![0u8; MEM];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let t = Instant::now();
    let mut i = 0u64;
    while w.len() < mb << 20 {
        // 10 % of the pages get fresh incompressible bytes: ~6.5 MB per iteration.
        let mut dirty: Vec<u32> = (0..PAGES / 10)
            .map(|_| (rng.next() % PAGES as u64) as u32)
            .collect();
        dirty.sort_unstable();
        dirty.dedup();
        for &p in &dirty {
            for chunk in mem[p as usize * PAGE..(p as usize + 1) * PAGE].chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
        }
        h.capture(i, &mem, &[GlobalValue::I64(i as i64)], Some(&dirty), None)
            .expect("capture");
        w.append(&h).expect("append");
        gc.collect_some(&mut h).expect("gc");
        i += 1;
    }
    w.sync().expect("sync");
    eprintln!(
        "large archive: {} iterations, {:.1} MiB, built in {:.1?}",
        i,
        w.len() as f64 / (1 << 20) as f64,
        t.elapsed()
    );
    (path, i)
}

fn open_and_state_hash(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let (path, n) = big_archive(dir.path());
    let target = n / 2;
    let mut g = c.benchmark_group("archive/open");
    g.sample_size(30);
    g.bench_function("open+state_hash", |b| {
        b.iter(|| {
            let a = Archive::open(&path).expect("open");
            black_box(a.state_hash(black_box(target)).expect("hash"))
        })
    });
    // The same index, as a serde (postcard) blob.
    let a = Archive::open(&path).expect("open");
    let recs = a.records().expect("records");
    let idx = SerdeIndex {
        objects: (0..a.info().expect("info").objects)
            .map(|k| ([(k % 251) as u8; 16], k * 4096, k as u32, 0, 1))
            .collect(),
        records: recs
            .iter()
            .map(|r| {
                (
                    r.id.0,
                    r.iteration,
                    0,
                    r.memory_len,
                    0,
                    r.state_hash.0,
                    [0; 16],
                    0,
                    0,
                    0,
                    0,
                )
            })
            .collect(),
        timeline: recs.iter().map(|r| (r.iteration, r.id.0)).collect(),
    };
    let blob = postcard::to_allocvec(&idx).expect("postcard");
    eprintln!(
        "serde index: {} objects, {} bytes of postcard",
        idx.objects.len(),
        blob.len()
    );
    g.bench_function("postcard_decode_index", |b| {
        b.iter(|| {
            let i: SerdeIndex = postcard::from_bytes(black_box(&blob)).expect("decode");
            black_box(i.timeline.len())
        })
    });
    g.finish();
}

/// One iteration at 1 % dirty: 164 pages each get four 32-byte runs.
fn step(mem: &mut [u8], rng: &mut Rng) -> Vec<u32> {
    let mut dirty: Vec<u32> = (0..PAGES / 100)
        .map(|_| (rng.next() % PAGES as u64) as u32)
        .collect();
    dirty.sort_unstable();
    dirty.dedup();
    for &p in &dirty {
        for _ in 0..4 {
            let off = p as usize * PAGE + (rng.next() as usize % (PAGE - 32));
            let v = rng.next();
            for (k, b) in mem[off..off + 32].iter_mut().enumerate() {
                *b = (v >> (k % 8 * 8)) as u8 ^ k as u8;
            }
        }
    }
    dirty
}

fn append_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("archive/append_1pct");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    for with_archive in [false, true] {
        let name = if with_archive {
            "capture+append"
        } else {
            "capture_only"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("dir");
                let mut h = History::new(HistoryConfig::new(PAGE as u64).expect("cfg").seed(3)).expect("h");
                let mut w =
                    ArchiveWriter::create(dir.path().join("a.rwd"), &h, Durability::Manual).expect("w");
                let mut gc = Collector::new(Policy::default().keep_last(64));
                let mut mem = vec![0u8; MEM];
                let mut rng = Rng(0xfeed_beef_1234_5678);
                h.capture(0, &mem, &[], None, None).expect("first");
                w.append(&h).expect("first append");
                let mut total = Duration::ZERO;
                for i in 1..=iters {
                    let dirty = step(&mut mem, &mut rng);
                    let t = Instant::now();
                    h.capture(i, &mem, &[], Some(&dirty), None).expect("capture");
                    if with_archive {
                        w.append(&h).expect("append");
                    }
                    total += t.elapsed();
                    gc.collect_some(&mut h).expect("gc");
                }
                total
            })
        });
    }
    g.finish();
}

fn bytes_per_iteration(_c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let mut h = History::new(HistoryConfig::new(PAGE as u64).expect("cfg").seed(5)).expect("h");
    let mut w = ArchiveWriter::create(dir.path().join("b.rwd"), &h, Durability::Manual).expect("w");
    let mut gc = Collector::new(Policy::default().keep_last(64));
    let mut mem = vec![0u8; MEM];
    let mut rng = Rng(0xabcd_ef01_2345_6789);
    h.capture(0, &mem, &[], None, None).expect("first");
    w.append(&h).expect("first append");
    let start = w.len();
    let mut lz4_total = 0u64;
    let iters = 300u64;
    for i in 1..=iters {
        let before = mem.clone();
        let dirty = step(&mut mem, &mut rng);
        let mut runs = Vec::new();
        for &p in &dirty {
            let r = p as usize * PAGE..(p as usize + 1) * PAGE;
            for (s, e) in ChangedRuns::new(&before[r.clone()], &mem[r.clone()]) {
                runs.extend_from_slice(&mem[r.start + s..r.start + e]);
            }
        }
        lz4_total += lz4_flex::block::compress(&runs).len() as u64;
        h.capture(i, &mem, &[], Some(&dirty), None).expect("capture");
        w.append(&h).expect("append");
        gc.collect_some(&mut h).expect("gc");
    }
    let disk = w.len() - start;
    eprintln!(
        "bytes per iteration (1 % dirty, 64 MiB, {iters} iterations): archive {} B, lz4 of changed runs {} B, ratio {:.2}",
        disk / iters,
        lz4_total / iters,
        disk as f64 / lz4_total as f64
    );
}

criterion_group!(benches, open_and_state_hash, append_cost, bytes_per_iteration);
criterion_main!(benches);
