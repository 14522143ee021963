//! Time travel in Doom: play the attract-mode demo for a while recording every
//! tic, then read old frames straight from history (no restore) and write them
//! as PNGs; then roll back and re-simulate to show the same frames come back.
//!
//! Run (after `scripts/fetch-guests.sh`):
//!
//! ```sh
//! cargo run --release -p rewind-guests --example time_travel -- [--tics N] [--every K] [--out DIR]
//! ```
//!
//! Defaults: 700 tics (20 s of game time), a frame every 100 tics, PNGs in
//! `target/doom-frames/`.

use std::path::PathBuf;
use std::time::Instant;

use rewind_guests::{GuestDir, GuestKind, GuestRun};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let (mut tics, mut every, mut out) = (700u64, 100u64, PathBuf::from("target/doom-frames"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--tics" => tics = value()?.parse()?,
            "--every" => every = value()?.parse()?,
            "--out" => out = value()?.into(),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if every == 0 || every > tics {
        return Err("--every must be between 1 and --tics".into());
    }
    std::fs::create_dir_all(&out)?;
    let dir = GuestDir::locate()?;
    let mut doom = GuestRun::start(GuestKind::Doom, &dir, 1)?;
    let t = Instant::now();
    for _ in 0..tics {
        doom.step(0)?;
    }
    println!(
        "played {tics} tics in {:.2} s ({}), history holds {:.1} MiB",
        t.elapsed().as_secs_f64(),
        doom.mode(),
        doom.recorder().history().resident_bytes() as f64 / 1048576.0
    );
    // Back in time, from history only: the live game stays at the last tic.
    for k in (every..=tics).step_by(every as usize) {
        let t = Instant::now();
        let frame = doom.doom_frame(k)?;
        let took = t.elapsed();
        let path = out.join(format!("tic-{k:05}.png"));
        frame.write_png(&path)?;
        println!(
            "tic {k}: framebuffer read from history in {:.2} ms, {} colours -> {}",
            took.as_secs_f64() * 1e3,
            frame.colours(),
            path.display()
        );
    }
    // Roll back to the first of them and play on: the same frames come back.
    let first = every;
    let recorded: Vec<_> = (first..=tics)
        .step_by(every as usize)
        .map(|k| doom.doom_frame(k).map(|f| (k, f)))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    doom.rollback_to(first)?;
    println!(
        "rolled back {} tics in {:.2} ms",
        tics - first,
        t.elapsed().as_secs_f64() * 1e3
    );
    while doom.head() < tics {
        doom.step(0)?;
    }
    for (k, before) in &recorded {
        let again = doom.doom_frame(*k)?;
        if &again != before {
            return Err(format!("tic {k} differs after the re-simulation").into());
        }
    }
    println!(
        "re-simulated to tic {tics}: all {} frames identical",
        recorded.len()
    );
    Ok(())
}
