//! The rollback soak: a game loop under the README's policy (`keep_last(600)`) where
//! every few frames a late input rolls back and re-simulates, to show that abandoned
//! branches do not accumulate. `cargo run --release -p rewind-bench --bin soak`.

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::SplitMix64;
use rewind::{GlobalValue, LiveMemory, Options, Policy, Recorder};

/// The soak's shape.
#[derive(Clone, Copy, Debug)]
pub struct SoakConfig {
    /// Frames to run.
    pub frames: u64,
    /// Every this many frames a late input arrives (0: never).
    pub rollback_every: u64,
    /// How many frames a late input reaches back.
    pub rollback_depth: u64,
    /// Guest memory in 4 KiB pages.
    pub pages: usize,
    /// Pages written per frame.
    pub written: usize,
    /// The retention window (`Policy::keep_last`).
    pub window: usize,
}

impl Default for SoakConfig {
    /// 1 MiB, 10 pages written per frame, a 3-frame rollback every 4th frame, a
    /// 600-frame window.
    fn default() -> Self {
        SoakConfig {
            frames: 100_000,
            rollback_every: 4,
            rollback_depth: 3,
            pages: 256,
            written: 10,
            window: 600,
        }
    }
}

/// What the soak held at one point of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoakSample {
    /// Frames run so far.
    pub frame: u64,
    /// Records retained (timeline and abandoned).
    pub records: usize,
    /// Abandoned records retained.
    pub abandoned: usize,
    /// The history's own estimate of its bytes ([`rewind::History::resident_bytes`]).
    pub resident_bytes: u64,
    /// Rollbacks so far.
    pub rollbacks: u64,
}

const PAGE: usize = 4096;

/// One frame of the soak's guest: `written` pages chosen by the frame number, each
/// changed at 64 bytes derived from the frame's input. Returns the pages written.
fn simulate(memory: &mut [u8], frame: u64, input: u64, config: &SoakConfig) -> Vec<u32> {
    let mut rng = SplitMix64::seed_from_u64(frame.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ input);
    let mut dirty = Vec::with_capacity(config.written);
    for _ in 0..config.written {
        let page = (rng.next_u64() % config.pages.max(1) as u64) as usize;
        let at = page * PAGE + (rng.next_u64() % (PAGE - 64) as u64) as usize;
        for b in memory.iter_mut().skip(at).take(64) {
            *b = rng.next_u64() as u8;
        }
        dirty.push(page as u32);
    }
    dirty
}

/// The input a frame gets: `late` is the corrected input that arrives after the frame
/// was first simulated with a prediction.
fn input(frame: u64, late: bool) -> u64 {
    frame.wrapping_mul(31) ^ u64::from(late)
}

/// Run the soak, calling `sample` every `every` frames (0: never) and after the last
/// frame.
pub fn run(
    config: &SoakConfig,
    every: u64,
    mut sample: impl FnMut(&SoakSample),
) -> Result<SoakSample, rewind::Error> {
    let policy = Policy::default().keep_last(config.window);
    let mut rec = Recorder::new(Options::new(PAGE as u64)?.seed(0x50A4).policy(policy))?;
    let mut seed = SplitMix64::seed_from_u64(7);
    let mut memory: Vec<u8> = (0..config.pages * PAGE).map(|_| seed.next_u64() as u8).collect();
    let mut rollbacks = 0;
    let mut frame = 0u64;
    let take = |rec: &Recorder, frame: u64, rollbacks: u64| SoakSample {
        frame,
        records: rec.history().len(),
        abandoned: rec.history().abandoned().count(),
        resident_bytes: rec.history().resident_bytes(),
        rollbacks,
    };
    while frame < config.frames {
        let dirty = simulate(&mut memory, frame, input(frame, false), config);
        let g = [GlobalValue::I64(frame as i64)];
        rec.capture(frame, &memory, &g, Some(&dirty), None)?;
        let late = config.rollback_every > 0
            && frame >= config.rollback_depth
            && (frame + 1).is_multiple_of(config.rollback_every);
        if late {
            // The input of frame - depth + 1 was mispredicted: back to the frame before
            // it, then re-simulate up to this frame with the corrected input.
            let to = frame - config.rollback_depth;
            rec.rollback_to(to, &mut memory, LiveMemory::AtHead)?;
            rollbacks += 1;
            for f in to + 1..=frame {
                let dirty = simulate(&mut memory, f, input(f, f == to + 1), config);
                let g = [GlobalValue::I64(f as i64)];
                rec.capture(f, &memory, &g, Some(&dirty), None)?;
            }
        }
        frame += 1;
        if every > 0 && frame.is_multiple_of(every) {
            sample(&take(&rec, frame, rollbacks));
        }
    }
    let last = take(&rec, frame, rollbacks);
    if every == 0 || !frame.is_multiple_of(every) {
        sample(&last);
    }
    Ok(last)
}
