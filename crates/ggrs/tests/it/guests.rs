//! GGRS's sync test judging every real guest (rapier2d, SQLite, Lua, Doom)
//! run by `rewind-guests` under its deterministic host.
//!
//! Each frame GGRS saves, advances, loads `CHECK_DISTANCE` frames back and
//! re-simulates; a re-simulated checksum (rewind's state hash: memory,
//! globals) that differs from the first fails the test with rewind's report
//! of the differing page and bytes. The default run is 1,000 frames per
//! guest at check distance 2; `-- --ignored` adds check distance 8.

use std::time::Instant;

use rewind::StateHash;
use rewind_ggrs::{run_sync_test, RewindBackend, Simulation};
use rewind_guests::{GuestDir, GuestKind, GuestRun};
use rewind_wasmer::{Session, StepReport};

use crate::common::{sync_test, OnePlayer};

/// A real guest as the backend's simulation: its frames go through
/// [`GuestRun`], which checkpoints and restores the host's state (clock,
/// random generator, open files) with the guest's.
struct Real(GuestRun);

impl Simulation for Real {
    type Error = rewind_guests::Error;

    fn session(&self) -> &Session {
        self.0.session()
    }

    fn step(&mut self, input: &[u8]) -> Result<StepReport, Self::Error> {
        let mut word = [0u8; 8];
        let n = input.len().min(8);
        word[..n].copy_from_slice(&input[..n]);
        self.0.step(u64::from_le_bytes(word))
    }

    fn rollback_to(&mut self, iteration: u64) -> Result<StateHash, Self::Error> {
        self.0.rollback_to(iteration)
    }
}

fn guests() -> GuestDir {
    match GuestDir::locate() {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    }
}

/// The input of frame `f`: a pure function of the frame (the same inputs
/// as the guests' own tests).
fn input(kind: GuestKind, f: i32) -> u64 {
    let k = f as u64;
    match kind {
        GuestKind::Lua if k.is_multiple_of(37) => k.wrapping_mul(2_654_435_761) % 2304 + 1,
        GuestKind::Lua => 0,
        GuestKind::Sqlite => k.wrapping_mul(0x9E37_79B9),
        // Doom: Enter pressed and released now and then (driver events:
        // key code | 1 << 8 pressed, 2 << 8 released); rapier: none.
        GuestKind::Doom if k % 50 == 10 => 0x010d,
        GuestKind::Doom if k % 50 == 12 => 0x020d,
        GuestKind::Doom | GuestKind::Rapier => 0,
    }
}

fn sync_test_guest(kind: GuestKind, frames: i32, check_distance: usize) {
    let t0 = Instant::now();
    let run = GuestRun::start(kind, &guests(), 17).unwrap_or_else(|e| panic!("{kind}: {e}"));
    let mut backend = RewindBackend::new(Real(run));
    let mut ggrs = sync_test::<OnePlayer>(1, check_distance);
    let summary = run_sync_test(&mut backend, &mut ggrs, frames, |f, _| input(kind, f))
        .unwrap_or_else(|e| panic!("{kind} under GGRS's sync test: {e}"));
    let stats = summary.stats;
    let checked = (frames as u64 + 1).saturating_sub(check_distance as u64);
    assert!(stats.loads >= checked - 1, "{kind}: {stats:?}");
    assert!(
        stats.resimulated >= (checked - 1) * check_distance as u64,
        "{kind}: {stats:?}"
    );
    assert_eq!(backend.session().head_iteration(), summary.frames as u64);
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{kind}: {} frames at check distance {check_distance}: {} advances ({} re-simulated), {} loads; \
         {:.1} s; per advance: run {:.2} ms, capture {:.2} ms; per load {:.2} ms; per save {:.4} ms",
        summary.frames,
        stats.advances,
        stats.resimulated,
        stats.loads,
        secs,
        stats.run_time.as_secs_f64() * 1e3 / stats.advances as f64,
        stats.capture_time.as_secs_f64() * 1e3 / stats.advances as f64,
        stats.load_time.as_secs_f64() * 1e3 / stats.loads.max(1) as f64,
        stats.save_time.as_secs_f64() * 1e3 / stats.saves.max(1) as f64,
    );
}

#[test]
fn sync_test_rapier() {
    sync_test_guest(GuestKind::Rapier, 1_000, 2);
}

#[test]
fn sync_test_sqlite() {
    sync_test_guest(GuestKind::Sqlite, 1_000, 2);
}

#[test]
fn sync_test_lua() {
    sync_test_guest(GuestKind::Lua, 1_000, 2);
}

#[test]
fn sync_test_doom() {
    sync_test_guest(GuestKind::Doom, 1_000, 2);
}

#[test]
#[ignore = "long: 1,000 frames per guest at check distance 8"]
fn sync_test_all_guests_distance_8() {
    for kind in [
        GuestKind::Rapier,
        GuestKind::Sqlite,
        GuestKind::Lua,
        GuestKind::Doom,
    ] {
        sync_test_guest(kind, 1_000, 8);
    }
}
