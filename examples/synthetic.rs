//! A synthetic guest recorded for 1,000 frames with late inputs that force rollbacks.
//!
//! The "guest" is a particle simulation that keeps its state in a 4 MiB byte buffer,
//! standing in for wasm linear memory. Every frame is recorded with a dirty hint (the
//! pages the simulation wrote); every so often an input arrives late, the recorder rolls
//! back to the frame it belonged to, the frames are re-simulated, and every re-simulated
//! state hash is checked against a straight run that had the input on time.
//!
//! Run: `cargo run --release -p rewind-examples --example synthetic`
//!
//! With `-- --archive PATH`, the live run's history is also written to a `.rwd` archive
//! (one commit after every record, default durability: synced on every append), which
//! the `rewind` inspector reads: `cargo run --release -p rewind-cli -- log PATH`.

use std::collections::BTreeMap;

use rewind::{Durability, GlobalValue, LiveMemory, Options, Policy, Recorder};

const PAGE: usize = 4096;
const MEMORY: usize = 4 << 20;
const PARTICLES: usize = 2_000;
const FRAMES: u64 = 1_000;
const WINDOW: usize = 600;

/// One frame of the simulation: particles move; an input kicks some of them.
/// Returns the pages written.
fn step(mem: &mut [u8], frame: u64, input: u8, dirty: &mut Vec<u32>) -> GlobalValue {
    dirty.clear();
    let mut energy = 0i64;
    for p in 0..PARTICLES {
        // particle p lives at a sparse address: 24 bytes, spread over the memory
        let at = (p * 2083) % (MEMORY - 24);
        let rd =
            |o: usize, m: &[u8]| i32::from_le_bytes([m[at + o], m[at + o + 1], m[at + o + 2], m[at + o + 3]]);
        let (mut x, mut y, mut vx, mut vy) = (rd(0, mem), rd(4, mem), rd(8, mem), rd(12, mem));
        if frame == 0 {
            (x, y, vx, vy) = (
                (p as i32 * 37) % 1000,
                (p as i32 * 91) % 1000,
                (p as i32 % 7) - 3,
                (p as i32 % 5) - 2,
            );
        }
        // only some particles move each frame, as real programs touch part of their state
        if !(p as u64 + frame).is_multiple_of(16) && frame != 0 {
            continue;
        }
        if input != 0 && p % 97 == input as usize % 97 {
            vx = -vx + input as i32 % 3;
            vy += 1;
        }
        x += vx;
        y += vy;
        if !(0..1000).contains(&x) {
            vx = -vx;
        }
        if !(0..1000).contains(&y) {
            vy = -vy;
        }
        for (o, v) in [(0, x), (4, y), (8, vx), (12, vy)] {
            mem[at + o..at + o + 4].copy_from_slice(&v.to_le_bytes());
        }
        energy += (vx * vx + vy * vy) as i64;
        dirty.push((at / PAGE) as u32);
        dirty.push(((at + 23) / PAGE) as u32);
    }
    GlobalValue::I64(energy)
}

/// `--archive PATH` from the command line, if given.
fn archive_arg() -> Result<Option<std::path::PathBuf>, Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let mut path = None;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--archive") => {
                path = Some(args.next().ok_or("--archive needs a path")?.into());
            }
            _ => return Err(format!("unknown argument {a:?} (usage: synthetic [--archive PATH])").into()),
        }
    }
    Ok(path)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let archive_path = archive_arg()?;
    // Inputs: frame -> input byte. Some arrive late (at frame + delay).
    let inputs: BTreeMap<u64, (u8, u64)> = (0..FRAMES)
        .filter(|f| f % 37 == 5)
        .map(|f| (f, ((f % 251) as u8 | 1, 1 + f % 7)))
        .collect();

    // The straight run: every input on time. Its state hashes are what a peer would send.
    let mut straight = Recorder::new(
        Options::new(PAGE as u64)?
            .seed(2024)
            .policy(Policy::default().keep_last(WINDOW)),
    )?;
    let mut mem = vec![0u8; MEMORY];
    let mut dirty = Vec::new();
    let mut expected = Vec::new();
    for f in 0..FRAMES {
        let input = inputs.get(&f).map_or(0, |i| i.0);
        let g = step(&mut mem, f, input, &mut dirty);
        let r = straight.capture(f, &mem, &[g], Some(&dirty), Some(&[input]))?;
        expected.push(r.state_hash);
    }

    // The live run: inputs arrive late; roll back and re-simulate.
    let mut options = Options::new(PAGE as u64)?
        .seed(2024)
        .policy(Policy::default().keep_last(WINDOW).abandoned_max_age(0));
    if let Some(p) = &archive_path {
        // Every record is appended as it is recorded; a re-run replaces the file.
        options = options.replace_archive(p, Durability::EveryAppend);
    }
    let mut rec = Recorder::new(options)?;
    let mut mem = vec![0u8; MEMORY];
    let mut known: BTreeMap<u64, u8> = BTreeMap::new();
    let (mut rollbacks, mut resimulated, mut pages_captured, mut captures) = (0u64, 0u64, 0u64, 0u64);
    let mut f = 0;
    while f < FRAMES {
        // inputs that arrive at this frame
        let arriving: Vec<(u64, u8)> = inputs
            .iter()
            .filter(|(at, (_, delay))| *at + *delay == f)
            .map(|(at, (v, _))| (*at, *v))
            .collect();
        for (at, v) in arriving {
            known.insert(at, v);
            if at < f {
                // Late: roll back to the state before frame `at` and re-simulate.
                let written = std::mem::take(&mut dirty);
                rec.rollback_to(at - 1, &mut mem, LiveMemory::WrittenSinceHead(&written))?;
                rollbacks += 1;
                for rf in at..f {
                    let g = step(&mut mem, rf, known.get(&rf).copied().unwrap_or(0), &mut dirty);
                    let r = rec.capture(
                        rf,
                        &mem,
                        &[g],
                        Some(&dirty),
                        Some(&[known.get(&rf).copied().unwrap_or(0)]),
                    )?;
                    resimulated += 1;
                    if r.state_hash != expected[rf as usize] {
                        return Err(format!("desync at frame {rf} after rollback").into());
                    }
                }
            }
        }
        let input = known.get(&f).copied().unwrap_or(0);
        let g = step(&mut mem, f, input, &mut dirty);
        let r = rec.capture(f, &mem, &[g], Some(&dirty), Some(&[input]))?;
        pages_captured += r.pages_changed as u64;
        captures += 1;
        f += 1;
    }
    for f in (FRAMES - WINDOW as u64)..FRAMES {
        if rec.state_hash(f)? != expected[f as usize] {
            return Err(format!("final timeline differs from the straight run at frame {f}").into());
        }
    }
    let stats = rec.history().store_stats();
    let ring = WINDOW as u64 * MEMORY as u64;
    let resident = rec.history().resident_bytes();
    println!("synthetic guest: {} KiB memory, {PAGE}-byte pages", MEMORY / 1024);
    println!("frames: {FRAMES} (+{resimulated} re-simulated), rollbacks: {rollbacks}, all state hashes match the straight run");
    println!(
        "pages changed per frame: {:.1} of {}",
        pages_captured as f64 / captures as f64,
        MEMORY / PAGE
    );
    println!(
        "store: {} objects ({} full of which {} raw, {} delta), dedup hits {}, compacted {}",
        stats.objects,
        stats.full_pages,
        stats.raw_pages,
        stats.delta_pages,
        stats.dedup_hits,
        stats.compacted_full + stats.compacted_rebased
    );
    println!(
        "resident for a {WINDOW}-frame window: {:.1} MiB vs {:.1} MiB for a full-copy ring ({:.0}x smaller)",
        resident as f64 / 1048576.0,
        ring as f64 / 1048576.0,
        ring as f64 / resident as f64
    );
    if let (Some(w), Some(p)) = (rec.archive(), &archive_path) {
        println!(
            "archive: {} ({:.1} MiB, {} records); inspect it with `cargo run --release -p rewind-cli -- log {}`",
            p.display(),
            w.len() as f64 / 1048576.0,
            w.records(),
            p.display()
        );
    }
    Ok(())
}
