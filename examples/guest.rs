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
            eprintln!("error: {}", rewind::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run() -> Res<bool> {
    let started = Instant::now();
    let (inputs, arrives) = script();
    let (straight, full_scan_time) = straight_run(&inputs)?;
    let mut net = Netcode::new()?;
    net.play(&inputs, &arrives, &straight)?;
    // Every input has arrived by the last frame: the retained timeline must be
    // the straight run's, frame by frame.
    let oldest = FRAMES + 1 - WINDOW as u64;
    let divergence = net
        .s
        .check((oldest..=FRAMES).map(|i| (i, straight[i as usize])))?;
    net.checks.checked += WINDOW as u64;
    if let Some(d) = &divergence {
        net.checks.failed += 1;
        eprintln!("MISMATCH: timeline diverges at frame {}: {d:?}", d.iteration);
    }
    net.report(full_scan_time)?;
    print_guest_state(&mut net.s)?;
    let reopened = check_archive(&mut net.s)?;
    println!("  total time        {:.2} s", started.elapsed().as_secs_f64());
    Ok(net.checks.failed == 0 && divergence.is_none() && reopened)
}

/// The straight run: every input on time, every page hashed every frame. Returns the
/// state hash of every frame and the total capture time.
fn straight_run(inputs: &[u8]) -> Res<(Vec<StateHash>, Duration)> {
    let mut reference = Session::new(GUEST, options()?.capture(CapturePreference::FullScan))?;
    let mut straight = vec![reference.state_hash(0)?];
    let mut full_scan_time = Duration::ZERO;
    for f in 1..=FRAMES {
        let r = reference.step(&[inputs[f as usize]])?;
        full_scan_time += r.capture_time;
        straight.push(r.state_hash);
    }
    Ok((straight, full_scan_time))
}

/// The netcode run: the session, what it has counted, and the checks against the
/// straight run.
struct Netcode {
    s: Session,
    hook_calls: Arc<AtomicU64>,
    initial_len: u64,
    checks: Checks,
    frame_captures: u64,
    frame_pages_hashed: u64,
    frame_pages_changed: u64,
    capture_time: Duration,
    scan_time: Duration,
    max_capture: Duration,
    rollbacks: u64,
    depth_total: u64,
    resimulated: u64,
    reinstantiated: u64,
    rollback_time: Duration,
}

impl Netcode {
    fn new() -> Res<Netcode> {
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
        Ok(Netcode {
            s,
            hook_calls,
            initial_len,
            checks: Checks {
                checked: 0,
                failed: 0,
            },
            frame_captures: 0,
            frame_pages_hashed: 0,
            frame_pages_changed: 0,
            capture_time: Duration::ZERO,
            scan_time: Duration::ZERO,
            max_capture: Duration::ZERO,
            rollbacks: 0,
            depth_total: 0,
            resimulated: 0,
            reinstantiated: 0,
            rollback_time: Duration::ZERO,
        })
    }

    /// Every frame: take the inputs that arrive, roll back to the earliest one that
    /// contradicts a prediction and re-simulate, then step with the known or predicted
    /// input; every frame whose inputs are all known is checked against `straight`.
    fn play(&mut self, inputs: &[u8], arrives: &[u64], straight: &[StateHash]) -> Res<()> {
        let mut known: Vec<Option<u8>> = vec![None; FRAMES as usize + 1];
        let mut used = vec![0u8; FRAMES as usize + 1];
        let mut first_unknown = 1u64; // every frame below this has its input
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
                let back = self.s.rollback_to(g - 1)?;
                self.rollbacks += 1;
                self.depth_total += f - g;
                self.rollback_time += back.time;
                self.reinstantiated += u64::from(back.reinstantiated);
                if g - 1 < first_unknown {
                    self.checks.check("rollback to", g - 1, back.state_hash, straight);
                }
                for h in g..f {
                    used[h as usize] = predict(h, &used);
                    self.s.step(&[used[h as usize]])?;
                    self.resimulated += 1;
                    if h < first_unknown {
                        self.checks
                            .check("re-simulated", h, self.s.state_hash(h)?, straight);
                    }
                }
            }
            used[f as usize] = predict(f, &used);
            let r = self.s.step(&[used[f as usize]])?;
            self.frame_captures += 1;
            self.frame_pages_hashed += r.pages_hashed as u64;
            self.capture_time += r.capture_time;
            self.scan_time += r.scan_time;
            self.max_capture = self.max_capture.max(r.capture_time);
            if f < first_unknown {
                self.checks.check("frame", f, self.s.state_hash(f)?, straight);
            }
            self.frame_pages_changed += self.s.recorder().history().at(f)?.pages_changed() as u64;
        }
        Ok(())
    }

    /// The run's figures: frames, rollbacks, pages, times, bytes and checks.
    fn report(&self, full_scan_time: Duration) -> Res<()> {
        let s = &self.s;
        let final_len = s.memory_len();
        let pages_total = final_len / 4096;
        let resident = s.recorder().history().resident_bytes();
        let records = s.recorder().history().len();
        let ring = WINDOW as u64 * final_len;
        let captures = self.frame_captures as f64;
        let us = |d: Duration, n: f64| d.as_secs_f64() * 1e6 / n;
        println!("rewind + wasmer: a Game of Life + particles guest under rollback netcode");
        println!("  capture mode      {}", s.mode());
        if let Some(why) = s.fallback_reason() {
            println!("                    ({why})");
        }
        println!(
            "  frames            {FRAMES} ({} steps with re-simulation), memory {} -> {} KiB (grown at frame {GROWTH_FRAME})",
            self.frame_captures + self.resimulated,
            self.initial_len / 1024,
            final_len / 1024
        );
        println!(
            "  rollbacks         {} (mean depth {:.1} frames, {} re-instantiated across the growth), {} frames re-simulated, {} rollback hook calls",
            self.rollbacks,
            self.depth_total as f64 / self.rollbacks.max(1) as f64,
            self.reinstantiated,
            self.resimulated,
            self.hook_calls.load(Ordering::Relaxed)
        );
        println!(
            "  pages per frame   {:.1} hashed, {:.1} changed, of {pages_total} pages of 4 KiB",
            self.frame_pages_hashed as f64 / captures,
            self.frame_pages_changed as f64 / captures,
        );
        println!(
            "  time per capture  {:.1} us mean (of which dirty scan {:.1} us), {:.1} us max; full scan (straight run): {:.1} us mean",
            us(self.capture_time, captures),
            us(self.scan_time, captures),
            us(self.max_capture, 1.0),
            us(full_scan_time, FRAMES as f64),
        );
        let pipe = s.recorder().pipeline_stats();
        println!(
            "  capture pipeline  caller thread {:.1} us per capture (copy {:.1} us, {} of {} blocked on the staging budget); worker {:.1} us per capture ({} recorded)",
            us(self.capture_time, captures),
            us(pipe.copy_time, pipe.staged.max(1) as f64),
            pipe.blocked,
            pipe.staged,
            us(pipe.worker_time, pipe.worker_frames.max(1) as f64),
            pipe.worker_frames,
        );
        println!(
            "  time per rollback {:.1} us mean (restore only)",
            us(self.rollback_time, self.rollbacks.max(1) as f64)
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
            self.checks.checked, self.checks.failed
        );
        Ok(())
    }
}

/// The guest's non-exported globals and its board at the last frame.
fn print_guest_state(s: &mut Session) -> Res<()> {
    let mut globals = Vec::new();
    let guest = s.guest().clone();
    guest.read_global_values(s.store_mut(), &mut globals)?;
    let mut header = [0u8; 16];
    s.recorder().read(FRAMES, 0, &mut header)?;
    let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let board = word(12) as u64;
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
    Ok(())
}

/// The session appended every record as it went: sync, then read the file back in
/// place, as the inspector does. Whether the last frame's state hash matches.
fn check_archive(s: &mut Session) -> Res<bool> {
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
    Ok(reopened)
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
