//! Per-frame figures of the real guests under rewind: capture cost, pages changed,
//! bytes stored per frame, memory held for a 600-frame window against a full-copy ring
//! of 600 frames, and the cost of a 7-frame rollback.
//!
//! Run (after `scripts/fetch-guests.sh`):
//! `cargo run --release -p rewind-guests --example figures`

use std::time::{Duration, Instant};

use rewind_guests::{GuestDir, GuestKind, GuestRun};

const WINDOW: u64 = 600;

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = GuestDir::locate()?;
    println!("| guest | memory | pages changed / hashed per frame | capture median (worst) | bytes stored per frame | held for {WINDOW} frames | full-copy ring of {WINDOW} | ratio | 7-frame rollback median |");
    println!("| --- | --: | --: | --: | --: | --: | --: | --: | --: |");
    for kind in GuestKind::ALL {
        let mut run = GuestRun::start(kind, &dir, 1)?;
        let base = run.recorder().history().resident_bytes();
        let mut captures = Vec::new();
        let (mut changed, mut hashed, mut stored, mut memory) = (0u64, 0u64, 0u64, 0u64);
        for k in 1..=WINDOW {
            let input = if kind == GuestKind::Sqlite {
                k.wrapping_mul(0x9E37_79B9)
            } else {
                0
            };
            let r = run.step(input)?;
            captures.push(r.capture_time);
            changed += r.pages_changed as u64;
            hashed += r.pages_hashed as u64;
            stored += r.bytes_stored;
            memory = memory.max(r.memory_len);
        }
        let held = run.recorder().history().resident_bytes();
        let worst = captures.iter().max().copied().unwrap_or_default();
        let capture = median(&mut captures);
        // 7-frame rollbacks, each followed by re-simulating the 7 frames.
        let mut rollbacks = Vec::new();
        for _ in 0..9 {
            let head = run.head();
            let t = Instant::now();
            run.rollback_to(head - 7)?;
            rollbacks.push(t.elapsed());
            for k in head - 6..=head {
                let input = if kind == GuestKind::Sqlite {
                    k.wrapping_mul(0x9E37_79B9)
                } else {
                    0
                };
                run.step(input)?;
            }
        }
        let ring = WINDOW * memory;
        println!(
            "| {kind:?} | {:.1} MiB | {:.0} / {:.0} | {:.0} µs ({:.0} µs) | {:.1} KiB | {:.1} MiB | {:.0} MiB | 1/{:.0} | {:.0} µs |",
            memory as f64 / 1048576.0,
            changed as f64 / WINDOW as f64,
            hashed as f64 / WINDOW as f64,
            capture.as_secs_f64() * 1e6,
            worst.as_secs_f64() * 1e6,
            stored as f64 / WINDOW as f64 / 1024.0,
            held as f64 / 1048576.0,
            ring as f64 / 1048576.0,
            ring as f64 / held.max(base).max(1) as f64,
            median(&mut rollbacks).as_secs_f64() * 1e6,
        );
    }
    Ok(())
}
