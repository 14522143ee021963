//! Real guests recorded every frame, rolled back at random and re-simulated,
//! checked against a straight re-run: state hashes at every iteration, the
//! hash of every restored state, and memory read from history byte for byte.
//!
//! The guests come from `scripts/fetch-guests.sh`; without them every test
//! here FAILS (never skips) with a message saying to run it.
//!
//! `cargo test -p rewind-guests --release -- --nocapture` prints per-frame
//! figures; `-- --ignored` runs the long (3,000-frame) versions.

use std::path::PathBuf;

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::SplitMix64;
use rewind_guests::{Error, GuestDir, GuestKind, GuestRun};
use rewind_wasmer::{Availability, CaptureMode, CapturePreference, DirtyTracker};

fn guests() -> GuestDir {
    match GuestDir::locate() {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    }
}

/// The input of frame `k`: a pure function of `k`, so that re-simulation and
/// the straight run see the same inputs.
fn input(kind: GuestKind, k: u64) -> u64 {
    match kind {
        // A glider now and then.
        GuestKind::Lua => {
            if k.is_multiple_of(37) {
                k.wrapping_mul(2_654_435_761) % 2304 + 1
            } else {
                0
            }
        }
        // Mixed into the guest's generator.
        GuestKind::Sqlite => k.wrapping_mul(0x9E37_79B9),
        // Doom: no keys (the attract-mode demos play); rapier: no input.
        GuestKind::Doom | GuestKind::Rapier => 0,
    }
}

#[derive(Debug, Default)]
struct Figures {
    frames: u64,
    rollbacks: usize,
    pages_changed: u64,
    pages_hashed: u64,
    bytes_stored: u64,
    max_memory: u64,
    memory_checks: u64,
}

/// Doom's framebuffer: (pointer, width, height).
fn screen(run: &mut GuestRun) -> (u64, usize, usize) {
    let ptr = run.call_i32("screen_ptr").expect("doom exports screen_ptr");
    let w = run.call_i32("screen_width").expect("doom exports screen_width");
    let h = run.call_i32("screen_height").expect("doom exports screen_height");
    (ptr as u32 as u64, w as usize, h as usize)
}

fn verify(kind: GuestKind, frames: u64, memory_stride: u64, seed: u64) -> Figures {
    let dir = guests();
    let mut figures = Figures::default();

    // 1. The recorded run: every frame recorded, random rollbacks of 1–16
    //    frames, then re-simulation by stepping on with the same inputs.
    let mut a = GuestRun::start(kind, &dir, seed).unwrap_or_else(|e| panic!("{kind}: start: {e}"));
    if matches!(DirtyTracker::probe(), Availability::Available) {
        assert_eq!(
            a.mode(),
            CaptureMode::KernelDirty,
            "{kind}: kernel dirty pages are available"
        );
    }
    let mut rng = SplitMix64::seed_from_u64(seed ^ 0xA5A5_5A5A);
    let mut restored = Vec::new();
    while a.head() < frames {
        let head = a.head();
        if head >= 10 && rng.next_u64() % 25 == 0 {
            let k = head - 1 - rng.next_u64() % head.min(16);
            let hash = a
                .rollback_to(k)
                .unwrap_or_else(|e| panic!("{kind}: rollback to {k}: {e}"));
            assert_eq!(a.head(), k);
            restored.push((k, hash));
            continue;
        }
        let r = a.step(input(kind, head + 1)).unwrap_or_else(|e| {
            panic!(
                "{kind}: frame {}: {e}: {:?}\nguest output:\n{}\nhost calls: {:?}",
                head + 1,
                std::error::Error::source(&e),
                a.host().output(),
                a.host().calls()
            )
        });
        figures.frames += 1;
        figures.pages_changed += r.pages_changed as u64;
        figures.pages_hashed += r.pages_hashed as u64;
        figures.bytes_stored += r.bytes_stored;
        figures.max_memory = figures.max_memory.max(r.memory_len);
    }
    figures.rollbacks = restored.len();
    assert!(
        restored.len() >= frames as usize / 50,
        "{kind}: too few rollbacks: {}",
        restored.len()
    );

    // 2. The straight run: no rollbacks, every page hashed at every capture
    //    (so a page the kernel hints missed in the recorded run would show).
    //    Every iteration's state hash must equal the recorded run's, and
    //    memory read from the recorded run's history must equal the straight
    //    run's live memory byte for byte.
    let mut b = GuestRun::start_with(kind, &dir, seed, CapturePreference::FullScan)
        .unwrap_or_else(|e| panic!("{kind}: start: {e}"));
    assert_eq!(b.mode(), CaptureMode::FullScan);
    let doom_frame = frames.saturating_sub(10).max(1);
    let mut doom_straight = None;
    let mut straight = vec![b.state_hash(0).expect("iteration 0 is recorded")];
    let mut scan_hashed = 0u64;
    for k in 0..=frames {
        if k > 0 {
            let r = b
                .step(input(kind, k))
                .unwrap_or_else(|e| panic!("{kind}: straight frame {k}: {e}"));
            straight.push(r.state_hash);
            scan_hashed += r.pages_hashed as u64;
        }
        assert_eq!(
            a.state_hash(k).expect("every iteration is on the timeline"),
            straight[k as usize],
            "{kind}: state hash of iteration {k} differs from the straight run's"
        );
        if k.is_multiple_of(memory_stride) || k == frames {
            let live = b.live_memory().expect("live memory");
            assert_eq!(
                a.memory_len_at(k).expect("recorded"),
                live.len() as u64,
                "{kind}: memory length at {k}"
            );
            let mut from_history = vec![0u8; live.len()];
            a.read(k, 0, &mut from_history).expect("read from history");
            if let Some(at) = from_history.iter().zip(&live).position(|(x, y)| x != y) {
                panic!("{kind}: memory of iteration {k} read from history differs from the straight run at byte {at:#x}");
            }
            figures.memory_checks += 1;
        }
        if kind == GuestKind::Doom && k == doom_frame {
            let (ptr, w, h) = screen(&mut b);
            let mut fb = vec![0u8; w * h * 4];
            b.read(k, ptr, &mut fb).expect("framebuffer");
            let live = b.live_memory().expect("live memory");
            let start = ptr as usize;
            assert_eq!(
                &live[start..start + fb.len()],
                &fb[..],
                "straight run's framebuffer"
            );
            // BGRX to RGB, as `GuestRun::doom_frame` gives it.
            let rgb: Vec<u8> = live[start..start + fb.len()]
                .chunks_exact(4)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect();
            doom_straight = Some(rgb);
        }
    }
    if a.mode() == CaptureMode::KernelDirty {
        // The hint is what makes kernel mode pay: fewer pages hashed per frame
        // than the straight run's full scans.
        let hinted = figures.pages_hashed as f64 / figures.frames.max(1) as f64;
        let scanned = scan_hashed as f64 / frames.max(1) as f64;
        assert!(
            hinted < scanned,
            "{kind}: {hinted:.1} pages hashed per frame with kernel hints, {scanned:.1} with full scans"
        );
    }
    for (k, hash) in &restored {
        assert_eq!(
            *hash, straight[*k as usize],
            "{kind}: restored state of iteration {k} differs from the straight run's"
        );
    }

    // 3. Doom: the framebuffer of a recorded iteration, read from history
    //    without restoring, as a PNG.
    if kind == GuestKind::Doom {
        let frame = a.doom_frame(doom_frame).expect("framebuffer from history");
        assert_eq!(
            Some(&frame.rgb),
            doom_straight.as_ref(),
            "doom: framebuffer of {doom_frame} differs from the straight run's"
        );
        assert!(
            frame.colours() >= 16,
            "doom: frame {doom_frame} looks blank ({} colours)",
            frame.colours()
        );
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("doom-frame-{doom_frame}.png"));
        frame.write_png(&path).expect("png");
        eprintln!("doom: frame {doom_frame} from history -> {}", path.display());
    }

    let n = figures.frames.max(1);
    eprintln!(
        "{kind}: {} frames recorded ({} rollbacks), {} memory checks; per frame: {:.1} pages changed of {:.1} hashed, \
         {:.1} KiB stored; max memory {} KiB ({} pages)",
        figures.frames,
        figures.rollbacks,
        figures.memory_checks,
        figures.pages_changed as f64 / n as f64,
        figures.pages_hashed as f64 / n as f64,
        figures.bytes_stored as f64 / n as f64 / 1024.0,
        figures.max_memory / 1024,
        figures.max_memory / 4096,
    );
    figures
}

#[test]
fn lua_rollbacks_match_a_straight_run() {
    verify(GuestKind::Lua, 300, 1, 1);
}

#[test]
fn sqlite_rollbacks_match_a_straight_run() {
    verify(GuestKind::Sqlite, 300, 1, 2);
}

#[test]
fn rapier_rollbacks_match_a_straight_run() {
    verify(GuestKind::Rapier, 300, 1, 3);
}

#[test]
fn doom_rollbacks_match_a_straight_run_and_renders_from_history() {
    verify(GuestKind::Doom, 400, 5, 4);
}

#[test]
#[ignore = "long: 3,000 frames per guest"]
fn long_all_guests() {
    for (i, kind) in GuestKind::ALL.into_iter().enumerate() {
        verify(kind, 3000, 25, 100 + i as u64);
    }
}

#[test]
fn missing_guests_fail_with_instructions() {
    let empty = std::env::temp_dir().join("rewind-guests-empty-dir");
    let err = GuestDir::at(&empty).expect_err("an empty directory has no guests");
    assert!(matches!(err, Error::NotBuilt { .. }));
    assert!(err.to_string().contains("scripts/fetch-guests.sh"), "{err}");
}
