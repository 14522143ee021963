//! Stable mutation fuzzing of the reader (the fallback for the cargo-fuzz target in
//! `fuzz/`). Mutations: bit flips, byte overwrites, truncation, u64::MAX length fields,
//! and payload edits whose segment checksums are recomputed, so rkyv validation and the
//! format's consistency checks are reached, not just the checksums.
//!
//! `REWIND_FUZZ_EXECS=N cargo test -p rewind-archive --release --test it fuzz -- --ignored`

use rewind_archive::format::{self, SEG_HEADER_LEN};
use rewind_archive::Archive;

use crate::corrupt::{exercise, layout, sample, SEED};

fn mutate(base: &[u8], segs: &[(u64, u64, bool)], rng: &mut u64) -> Vec<u8> {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let mut b = base.to_vec();
    for _ in 0..1 + next() % 4 {
        match next() % 6 {
            0 => {
                let p = (next() % b.len() as u64) as usize;
                b[p] ^= 1 << (next() % 8);
            }
            1 => {
                let p = (next() % b.len() as u64) as usize;
                b[p] = next() as u8;
            }
            2 => {
                let cut = format::HEADER_LEN + (next() % (b.len() - format::HEADER_LEN) as u64) as usize;
                b.truncate(cut);
            }
            _ => {
                // Edit inside a segment payload and fix its checksums.
                let (off, end, trailer) = segs[(next() % segs.len() as u64) as usize];
                if trailer || end as usize > b.len() {
                    continue;
                }
                let o = off as usize;
                let len = u64::from_le_bytes(b[o + 8..o + 16].try_into().expect("8 bytes")) as usize;
                // An earlier mutation may have rewritten this length field.
                if len < 8 || len > b.len().saturating_sub(o + SEG_HEADER_LEN) {
                    continue;
                }
                let p = o + SEG_HEADER_LEN + (next() % (len as u64 - 7)) as usize;
                let v: u64 = match next() % 4 {
                    0 => u64::MAX,
                    1 => next() % 64,
                    2 => u32::MAX as u64,
                    _ => next(),
                };
                let w = if next() % 2 == 0 { 8 } else { 4 };
                b[p..p + w].copy_from_slice(&v.to_le_bytes()[..w]);
                let sum = format::checksum(&b[o + SEG_HEADER_LEN..o + SEG_HEADER_LEN + len], SEED);
                b[o + 16..o + 24].copy_from_slice(&sum.to_le_bytes());
                let hs = format::checksum(&b[o..o + 24], SEED);
                b[o + 24..o + 32].copy_from_slice(&hs.to_le_bytes());
            }
        }
    }
    b
}

fn run(execs: u64, seed: u64) -> (u64, u64) {
    let (bytes, _, _) = sample(24);
    let segs = layout(&bytes);
    let mut rng = seed | 1;
    let (mut opened, mut errors) = (0, 0);
    for _ in 0..execs {
        let b = mutate(&bytes, &segs, &mut rng);
        match Archive::from_bytes(&b) {
            Ok(a) => {
                opened += 1;
                if a.verify().is_err() {
                    errors += 1;
                }
                exercise(&a);
            }
            Err(_) => errors += 1,
        }
    }
    (opened, errors)
}

#[test]
fn mutation_fuzz_smoke() {
    let (opened, _) = run(300, 0x5eed);
    assert!(opened > 0);
}

#[test]
#[ignore = "long: set REWIND_FUZZ_EXECS"]
fn mutation_fuzz_long() {
    let execs = std::env::var("REWIND_FUZZ_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let t = std::time::Instant::now();
    let (opened, errors) = run(execs, 0xfa11_5afe);
    eprintln!("mutation fuzz: {execs} executions, {opened} opened, {errors} rejected or failed verify, no panic, {:?}", t.elapsed());
}
