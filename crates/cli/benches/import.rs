//! Measures the import phase: `rewind import` of 1 GiB of frames (read, compare with the
//! previous frame, hash and store the changed pages, append the records to the archive)
//! against the floor of reading the input once and hashing every page with xxh3-128.
//! Timed runs, not criterion: one pass over 1 GiB is already a long sample. The floor and
//! the import alternate `REWIND_BENCH_REPS` times (default 5); prints the median of
//! each, their ratio and the range of the per-run ratios (goal: import within 2x of the
//! floor).
//!
//! Run: `REWIND_BENCH_FRAMES=/path/frames.bin REWIND_BENCH_FRAME_SIZE=16MiB \
//!   cargo bench -p rewind-cli --bench import`
//! Without `REWIND_BENCH_FRAMES`, 1 GiB of frames (64 × 16 MiB, ~400 32-byte writes
//! per frame) is generated in a temporary directory first; when it names a file that
//! does not exist, the frames are generated there once and reused by later runs.

use std::io::Read;
use std::time::Instant;

use rewind_cli::import::{self, Frames, ImportOptions};

const PAGE: usize = 4096;

fn generate(path: &std::path::Path, frame: usize, n: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut mem = vec![0u8; frame];
    let mut x = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for off in (0..frame / 2).step_by(PAGE) {
        for b in &mut mem[off..off + 256] {
            *b = next() as u8;
        }
    }
    for _ in 0..n {
        for _ in 0..400 {
            let a = next() as usize % (frame - 64);
            for b in &mut mem[a..a + 32] {
                *b = next() as u8;
            }
        }
        std::io::Write::write_all(&mut f, &mem).expect("write");
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let frame_size = std::env::var("REWIND_BENCH_FRAME_SIZE")
        .ok()
        .map(|s| rewind_cli::inspect::parse_u64(&s).expect("frame size"))
        .unwrap_or(16 << 20);
    let path: std::path::PathBuf = match std::env::var_os("REWIND_BENCH_FRAMES") {
        Some(p) => {
            let p = std::path::PathBuf::from(p);
            if !p.exists() {
                eprintln!("{} is missing: generating 1 GiB of frames there", p.display());
                generate(&p, frame_size as usize, (1usize << 30) / frame_size as usize);
            }
            p
        }
        None => {
            let p = dir.path().join("frames.bin");
            generate(&p, frame_size as usize, (1usize << 30) / frame_size as usize);
            p
        }
    };
    let total = std::fs::metadata(&path).expect("stat").len();
    let mib = total as f64 / 1048576.0;
    // Warm the page cache so both runs read from memory.
    let mut buf = vec![0u8; frame_size as usize];
    let mut f = std::fs::File::open(&path).expect("open");
    while f.read(&mut buf).expect("read") > 0 {}

    // Floor and import alternate `reps` times (default 5), so both see the same machine
    // state; the medians and their ratio are reported, with the range of the per-pair
    // ratios (a loaded 2-core machine moves single runs by 2x).
    let reps: usize = std::env::var("REWIND_BENCH_REPS")
        .ok()
        .map(|s| s.parse().expect("REWIND_BENCH_REPS: a count"))
        .unwrap_or(5)
        .max(1);
    let out = dir.path().join("bench.rwd");
    let mut floors = Vec::new();
    let mut imports = Vec::new();
    let mut rep = None;
    for _ in 0..reps {
        // Floor: read once + xxh3-128 of every page.
        let t = Instant::now();
        let mut f = std::fs::File::open(&path).expect("open");
        let mut acc = 0u128;
        loop {
            let n = f.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            for p in buf[..n].chunks(PAGE) {
                acc ^= xxhash_rust::xxh3::xxh3_128_with_seed(p, 7);
            }
        }
        floors.push(t.elapsed().as_secs_f64());
        std::hint::black_box(acc);

        let t = Instant::now();
        rep = Some(
            import::import(
                &Frames::Packed {
                    path: path.clone(),
                    frame_size,
                },
                &out,
                &ImportOptions {
                    seed: Some(7),
                    ..ImportOptions::new(PAGE as u64)
                },
                &mut |_, _| {},
            )
            .expect("import"),
        );
        imports.push(t.elapsed().as_secs_f64());
    }
    let rep = rep.expect("at least one repetition");
    let mut ratios: Vec<f64> = imports.iter().zip(&floors).map(|(i, f)| i / f).collect();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (floor, imp) = (median(&mut floors), median(&mut imports));
    median(&mut ratios);
    println!(
        "input {mib:.0} MiB ({} frames of {} MiB, {} pages changed), {reps} runs each, medians",
        rep.frames,
        frame_size >> 20,
        rep.pages_changed
    );
    println!("read + xxh3-128 per page: {floor:.3} s, {:.0} MiB/s", mib / floor);
    println!(
        "import:                   {imp:.3} s, {:.0} MiB/s, archive {:.1} MiB",
        mib / imp,
        rep.archive_bytes as f64 / 1048576.0
    );
    println!(
        "import / floor: {:.2}x (per run {:.2}x to {:.2}x)",
        imp / floor,
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
