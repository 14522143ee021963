//! A real WebAssembly guest under rollback netcode, with nothing but cargo.
//!
//! The guest (`examples/guest.wat`, compiled at run time by wasmer) is a tiny
//! game: a Game of Life board the player seeds with gliders and 1,024
//! particles spread one per 4 KiB page. It keeps its frame counter, random
//! generator, player position and score in non-exported mutable globals, and
//! grows its memory by 4 MiB at frame 600.
//!
//! The run plays 1,000 frames of a remote player's inputs. Most inputs arrive
//! on time; some arrive up to 8 frames late. Until an input arrives the
//! previous one is predicted; when a late input differs from the prediction
//! the session rolls back to the frame before it and re-simulates up to the
//! present (re-instantiating the guest when the rollback crosses the memory
//! growth). Every rolled-back and every re-simulated state whose inputs are
//! all known is checked against the state hash of a straight run that had
//! every input on time (a separate session in full-scan mode, same seed).
//!
//! Run: `cargo run --release -p rewind-examples --example guest`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::SplitMix64;
use rewind::PipelineOptions;
use rewind::{Archive, Durability};
use rewind::{GlobalValue, Policy, StateHash};
use rewind_wasmer::{CapturePreference, Session, SessionOptions};

const GUEST: &str = include_str!("guest.wat");
const FRAMES: u64 = 1_000;
/// Frames of history kept (the rollback window).
const WINDOW: usize = 120;
const SEED: u64 = 0x7EA1_71AE;
const MAX_DELAY: u64 = 8;
const GROWTH_FRAME: u64 = 600;

/// The remote player's true inputs (index = frame; 0 unused) and the frame at
/// which each one arrives.
fn script() -> (Vec<u8>, Vec<u64>) {
    let mut rng = SplitMix64::seed_from_u64(SEED);
    let mut inputs = vec![0u8; FRAMES as usize + 1];
    let mut arrives = vec![0u64; FRAMES as usize + 1];
    let mut held = 0u8;
    for f in 1..=FRAMES {
        if rng.next_u64() % 5 == 0 {
            held = (rng.next_u64() & 0x1F) as u8; // buttons: 4 directions + fire
        }
        inputs[f as usize] = held;
        let late = rng.next_u64() % 4 == 0;
        let delay = if late { 1 + rng.next_u64() % MAX_DELAY } else { 0 };
        arrives[f as usize] = (f + delay).min(FRAMES);
    }
    // One input changes just before the growth and arrives after it, so a
    // rollback has to cross the growth (and re-instantiate the guest).
    let g = GROWTH_FRAME as usize - 2;
    inputs[g] ^= 0x10;
    arrives[g] = GROWTH_FRAME + 4;
    (inputs, arrives)
}

fn options() -> Result<SessionOptions, rewind_wasmer::SessionError> {
    Ok(SessionOptions::new(4096)?
        .seed(SEED)
        .policy(Policy::default().keep_last(WINDOW)))
}

struct Checks {
    checked: u64,
    failed: u64,
}

impl Checks {
    fn check(&mut self, what: &str, frame: u64, found: StateHash, straight: &[StateHash]) {
        self.checked += 1;
        if straight[frame as usize] != found {
            self.failed += 1;
            eprintln!(
                "MISMATCH: {what} frame {frame}: {found:?} != straight {:?}",
                straight[frame as usize]
            );
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let (inputs, arrives) = script();

    // The straight run: every input on time, every page hashed every frame.
    let mut reference = Session::new(GUEST, options()?.capture(CapturePreference::FullScan))?;
    let mut straight = vec![reference.state_hash(0)?];
    let mut full_scan_time = Duration::ZERO;
    for f in 1..=FRAMES {
        let r = reference.step(&[inputs[f as usize]])?;
        full_scan_time += r.capture_time;
        straight.push(r.state_hash);
    }

    // The netcode run.
    // The live session persists every record to the archive as it goes (a re-run
    // replaces the file).
    // Captures go through the pipeline: a step returns once the written pages
    // are copied; a worker thread records them.
    let mut s = Session::new(
        GUEST,
        options()?
            .replace_archive(archive_path(), Durability::Manual)
            .pipeline(PipelineOptions::new()),
    )?;
    let hook_calls = Arc::new(AtomicU64::new(0));
    let calls = Arc::clone(&hook_calls);
    // Host state tied to the guest (sound queues, UI) would be reset here.
    s.on_rollback(move |_iteration| {
        calls.fetch_add(1, Ordering::Relaxed);
    });
    let initial_len = s.memory_len();
    let mut known: Vec<Option<u8>> = vec![None; FRAMES as usize + 1];
    let mut used = vec![0u8; FRAMES as usize + 1];
    let mut first_unknown = 1u64; // every frame below this has its input
    let mut checks = Checks {
        checked: 0,
        failed: 0,
    };
    let (mut frame_captures, mut frame_pages_hashed, mut frame_pages_changed) = (0u64, 0u64, 0u64);
    let mut capture_time = Duration::ZERO;
    let mut scan_time = Duration::ZERO;
    let mut max_capture = Duration::ZERO;
    let (mut rollbacks, mut depth_total, mut resimulated, mut reinstantiated) = (0u64, 0u64, 0u64, 0u64);
    let mut rollback_time = Duration::ZERO;
    let mut arrivals: Vec<Vec<u64>> = vec![Vec::new(); FRAMES as usize + 1];
    for f in 1..=FRAMES {
        arrivals[arrives[f as usize] as usize].push(f);
    }

    for f in 1..=FRAMES {
        // Inputs arriving now; the earliest one that contradicts a prediction.
        let mut earliest_wrong = None;
        for &g in &arrivals[f as usize] {
            known[g as usize] = Some(inputs[g as usize]);
            if g < f && used[g as usize] != inputs[g as usize] {
                earliest_wrong = Some(earliest_wrong.map_or(g, |e: u64| e.min(g)));
            }
        }
        while first_unknown <= FRAMES && known[first_unknown as usize].is_some() {
            first_unknown += 1;
        }
        let predict = |h: u64, used: &[u8]| known[h as usize].unwrap_or(used[h as usize - 1]);
        if let Some(g) = earliest_wrong {
            let back = s.rollback_to(g - 1)?;
            rollbacks += 1;
            depth_total += f - g;
            rollback_time += back.time;
            reinstantiated += u64::from(back.reinstantiated);
            if g - 1 < first_unknown {
                checks.check("rollback to", g - 1, back.state_hash, &straight);
            }
            for h in g..f {
                used[h as usize] = predict(h, &used);
                s.step(&[used[h as usize]])?;
                resimulated += 1;
                if h < first_unknown {
                    checks.check("re-simulated", h, s.state_hash(h)?, &straight);
                }
            }
        }
        used[f as usize] = predict(f, &used);
        let r = s.step(&[used[f as usize]])?;
        frame_captures += 1;
        frame_pages_hashed += r.pages_hashed as u64;
        capture_time += r.capture_time;
        scan_time += r.scan_time;
        max_capture = max_capture.max(r.capture_time);
        if f < first_unknown {
            checks.check("frame", f, s.state_hash(f)?, &straight);
        }
        frame_pages_changed += s.recorder().history().at(f)?.pages_changed() as u64;
    }
    // Every input has arrived by the last frame: the retained timeline must be
    // the straight run's, frame by frame.
    let oldest = FRAMES + 1 - WINDOW as u64;
    let divergence = s.check((oldest..=FRAMES).map(|i| (i, straight[i as usize])))?;
    checks.checked += WINDOW as u64;
    if let Some(d) = &divergence {
        checks.failed += 1;
        eprintln!("MISMATCH: timeline diverges at frame {}: {d:?}", d.iteration);
    }

    // Report.
    let final_len = s.memory_len();
    let pages_total = final_len / 4096;
    let resident = s.recorder().history().resident_bytes();
    let records = s.recorder().history().len();
    let ring = WINDOW as u64 * final_len;
    let mut globals = Vec::new();
    let guest = s.guest().clone();
    guest.read_global_values(s.store_mut(), &mut globals)?;
    let mut header = [0u8; 16];
    s.recorder().read(FRAMES, 0, &mut header)?;
    let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let board = word(12) as u64;

    println!("rewind + wasmer: a Game of Life + particles guest under rollback netcode");
    println!("  capture mode      {}", s.mode());
    if let Some(why) = s.fallback_reason() {
        println!("                    ({why})");
    }
    println!(
        "  frames            {FRAMES} ({} steps with re-simulation), memory {} -> {} KiB (grown at frame {GROWTH_FRAME})",
        frame_captures + resimulated,
        initial_len / 1024,
        final_len / 1024
    );
    println!(
        "  rollbacks         {rollbacks} (mean depth {:.1} frames, {reinstantiated} re-instantiated across the growth), {resimulated} frames re-simulated, {} rollback hook calls",
        depth_total as f64 / rollbacks.max(1) as f64,
        hook_calls.load(Ordering::Relaxed)
    );
    println!(
        "  pages per frame   {:.1} hashed, {:.1} changed, of {pages_total} pages of 4 KiB",
        frame_pages_hashed as f64 / frame_captures as f64,
        frame_pages_changed as f64 / frame_captures as f64,
    );
    println!(
        "  time per capture  {:.1} us mean (of which dirty scan {:.1} us), {:.1} us max; full scan (straight run): {:.1} us mean",
        capture_time.as_secs_f64() * 1e6 / frame_captures as f64,
        scan_time.as_secs_f64() * 1e6 / frame_captures as f64,
        max_capture.as_secs_f64() * 1e6,
        full_scan_time.as_secs_f64() * 1e6 / FRAMES as f64,
    );
    let pipe = s.recorder().pipeline_stats();
    println!(
        "  capture pipeline  caller thread {:.1} us per capture (copy {:.1} us, {} of {} blocked on the staging budget); worker {:.1} us per capture ({} recorded)",
        capture_time.as_secs_f64() * 1e6 / frame_captures as f64,
        pipe.copy_time.as_secs_f64() * 1e6 / pipe.staged.max(1) as f64,
        pipe.blocked,
        pipe.staged,
        pipe.worker_time.as_secs_f64() * 1e6 / pipe.worker_frames.max(1) as f64,
        pipe.worker_frames,
    );
    println!(
        "  time per rollback {:.1} us mean (restore only)",
        rollback_time.as_secs_f64() * 1e6 / rollbacks.max(1) as f64
    );
    println!(
        "  bytes stored      {:.2} MiB for the last {WINDOW} frames ({} records) vs {:.0} MiB for a ring of {WINDOW} full copies ({:.0}x smaller)",
        resident as f64 / (1 << 20) as f64,
        records,
        ring as f64 / (1 << 20) as f64,
        ring as f64 / resident.max(1) as f64,
    );
    println!(
        "  checks            {} state hashes compared with the straight run, {} mismatches",
        checks.checked, checks.failed
    );
    let names = ["frame", "rng", "player x", "player y", "score", "particles"];
    let shown: Vec<String> = names
        .iter()
        .zip(&globals)
        .map(|(n, g)| match g {
            GlobalValue::I32(v) => format!("{n}={v}"),
            GlobalValue::I64(v) if *n == "rng" => format!("{n}={:#x}", *v as u64),
            GlobalValue::I64(v) => format!("{n}={v}"),
            other => format!("{n}={other}"),
        })
        .collect();
    println!("  non-exported globals at frame {FRAMES}: {}", shown.join(", "));
    println!("  board at frame {FRAMES} (population {}):", word(4));
    let mut cells = vec![0u8; 128 * 128];
    s.recorder().read(FRAMES, board, &mut cells)?;
    for row in 0..8 {
        let line: String = (0..64)
            .map(|col| {
                // one character per 2 x 16 cells
                let live: u32 = (0..32)
                    .map(|k| u32::from(cells[(row * 16 + k / 2) * 128 + col * 2 + k % 2]))
                    .sum();
                match live {
                    0 => ' ',
                    1..=2 => '.',
                    3..=5 => ':',
                    6..=9 => '*',
                    _ => '#',
                }
            })
            .collect();
        println!("    |{line}|");
    }
    // The session appended every record as it went: sync, then read the file back in
    // place, as the inspector does.
    s.sync()?;
    let path = archive_path();
    let archive = Archive::open(&path)?;
    let reopened = archive.state_hash(FRAMES)? == s.state_hash(FRAMES)?;
    let size = std::fs::metadata(&path)?.len();
    println!(
        "  archive           {} ({:.1} MiB, {} records); reopened in place, state hash of frame {FRAMES} {}",
        path.display(),
        size as f64 / 1048576.0,
        archive.records()?.len(),
        if reopened { "matches" } else { "DIFFERS" }
    );
    println!(
        "  inspect it        cargo run --release -p rewind-cli -- log {}",
        path.display()
    );
    println!(
        "                    cargo run --release -p rewind-cli -- blame {} {FRAMES} --addr 0 --len 8 --history",
        path.display()
    );
    println!("  total time        {:.2} s", started.elapsed().as_secs_f64());
    Ok(checks.failed == 0 && divergence.is_none() && reopened)
}

/// Where the archive goes: `--archive PATH`, else `rewind-guest.rwd` in the current directory.
fn archive_path() -> PathBuf {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--archive")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("rewind-guest.rwd"))
}
