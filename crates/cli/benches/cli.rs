//! Measures the inspector's query phase: `cat` and `blame` on a 10,000-iteration archive
//! (open the file, find the record, read/blame in place), at a recent and a far-back
//! iteration, through the same library calls the binary makes.
//!
//! Run: `cargo bench -p rewind-cli --bench cli`

#![allow(missing_docs)] // criterion_group! generates an undocumented `benches` function

use criterion::{criterion_group, criterion_main, Criterion};
use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_cli::inspect::{self, Target};
use rewind_history::{History, HistoryConfig};

const PAGE: usize = 4096;
const MEM: usize = 1 << 20;
const ITERS: u64 = 10_000;
/// The address blamed: written every 7th iteration.
const HOT: u64 = 0x4_0010;
/// Written only at iteration 5: a blame from the head walks back the whole history.
const COLD: u64 = 0x8_0020;

fn build(path: &std::path::Path) {
    let mut h = History::new(HistoryConfig::new(PAGE as u64).expect("page size").seed(1)).expect("history");
    let mut w = ArchiveWriter::create(path, &h, Durability::Manual).expect("create");
    let mut mem = vec![0u8; MEM];
    let mut x = 1u64;
    for it in 0..ITERS {
        let mut dirty = Vec::new();
        for _ in 0..8 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let a = (x >> 20) as usize % (MEM - 8);
            mem[a..a + 8].copy_from_slice(&x.to_le_bytes());
            dirty.push((a / PAGE) as u32);
            dirty.push(((a + 7) / PAGE) as u32);
        }
        if it % 7 == 0 {
            mem[HOT as usize..HOT as usize + 4].copy_from_slice(&(it as u32).to_le_bytes());
            dirty.push((HOT as usize / PAGE) as u32);
        }
        if it == 5 {
            mem[COLD as usize] = 0xaa;
            dirty.push((COLD as usize / PAGE) as u32);
        }
        h.capture(it, &mem, &[], Some(&dirty), None).expect("capture");
        w.append(&h).expect("append");
        // Keep memory small: only the head is needed to append the next record.
        let old: Vec<_> = h
            .records()
            .map(|r| r.id())
            .filter(|id| Some(*id) != h.head().map(|r| r.id()))
            .collect();
        for id in old {
            h.remove(id).expect("remove");
        }
    }
    w.sync().expect("sync");
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    // REWIND_BENCH_ARCHIVE=path keeps the archive there, for timing the binary on it.
    let path = std::env::var_os("REWIND_BENCH_ARCHIVE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("bench.rwd"));
    build(&path);
    let mut g = c.benchmark_group("query_10k");
    for (name, it) in [("recent", ITERS - 3), ("far_back", 20)] {
        g.bench_function(format!("cat_{name}"), |b| {
            b.iter(|| {
                let a = Archive::open(&path).expect("open");
                inspect::cat(&a, Target::Iteration(it), HOT, 16).expect("cat")
            })
        });
        g.bench_function(format!("blame_hot_{name}"), |b| {
            b.iter(|| {
                let a = Archive::open(&path).expect("open");
                inspect::blame(&a, Target::Iteration(it), HOT, 4, 1).expect("blame")
            })
        });
    }
    g.bench_function("blame_cold_from_head_walks_10k", |b| {
        b.iter(|| {
            let a = Archive::open(&path).expect("open");
            inspect::blame(&a, Target::Iteration(ITERS - 1), COLD, 1, 1).expect("blame")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
