//! GGRS's sync test judging the built-in WAT guest, and a guest made
//! nondeterministic on purpose.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ggrs::GgrsError;
use rewind_ggrs::{run_sync_test, RewindBackend, SyncTestError};
use rewind_wasmer::{Session, SessionOptions};
use wasmer::{imports, Function, FunctionEnv, FunctionEnvMut};

use crate::common::{buttons, guest_session, sync_test, TwoPlayers};

fn sync_test_built_in_guest(check_distance: usize, frames: i32) {
    let t0 = Instant::now();
    let mut backend = RewindBackend::new(guest_session(21));
    let mut ggrs = sync_test::<TwoPlayers>(2, check_distance);
    let summary = run_sync_test(&mut backend, &mut ggrs, frames, buttons)
        .unwrap_or_else(|e| panic!("the built-in guest must pass GGRS's sync test: {e}"));
    let stats = summary.stats;
    // Every frame past the first check_distance was loaded and re-simulated.
    let checked = (frames as u64 + 1).saturating_sub(check_distance as u64);
    assert!(stats.loads >= checked - 1, "{stats:?}");
    assert!(
        stats.resimulated >= (checked - 1) * check_distance as u64,
        "{stats:?}"
    );
    assert_eq!(backend.session().head_iteration(), summary.frames as u64);
    // Past frame 600 the guest grew its memory: rollbacks to before the growth
    // had to re-instantiate it.
    if frames > 610 {
        assert!(backend.session().stats().reinstantiations >= check_distance as u64);
        assert_eq!(backend.session().memory_len(), 160 * 65536);
    }
    eprintln!(
        "built-in guest, check distance {check_distance}: {} frames, {} loads, {} re-simulated, {:.1?}",
        summary.frames,
        stats.loads,
        stats.resimulated,
        t0.elapsed()
    );
}

#[test]
fn sync_test_built_in_guest_distance_8_over_1100_frames() {
    sync_test_built_in_guest(8, 1_100);
}

#[test]
fn sync_test_built_in_guest_distance_2() {
    sync_test_built_in_guest(2, 700);
}

/// A guest that stores what the host import `env.noise` returns at 0x5008
/// (page 5, bytes 8..12) every frame from frame 40 on, beside deterministic
/// work on other pages.
const NOISY: &str = r#"(module
  (import "env" "noise" (func $noise (result i32)))
  (memory (export "memory") 4 16)
  (global $frame (mut i32) (i32.const 0))
  (func (export "step") (param $input i64)
    (local $i i32)
    (global.set $frame (i32.add (global.get $frame) (i32.const 1)))
    ;; deterministic work: a running sum over pages 1 and 9
    (i64.store (i32.const 0x1000)
      (i64.add (i64.load (i32.const 0x1000)) (local.get $input)))
    (i32.store (i32.add (i32.const 0x9000) (i32.shl (i32.and (global.get $frame) (i32.const 255)) (i32.const 2)))
      (global.get $frame))
    (if (i32.ge_u (global.get $frame) (i32.const 40))
      (then (i32.store (i32.const 0x5008) (call $noise))))))"#;

/// The noise import's state: calls so far, and the value of the n-th call.
type Noise = (Arc<AtomicU32>, fn(u32) -> i32);

/// A session on [`NOISY`] whose `noise` returns `value(calls so far)`.
fn noisy_session(value: fn(u32) -> i32) -> Session {
    noisy_session_of(NOISY, value)
}

/// A session on `wat` (which imports `env.noise`) whose `noise` returns
/// `value(calls so far)`.
fn noisy_session_of(wat: &str, value: fn(u32) -> i32) -> Session {
    let calls = Arc::new(AtomicU32::new(0));
    Session::with_imports(
        wat,
        SessionOptions::new(4096).expect("page size").seed(9),
        move |store| {
            let env = FunctionEnv::new(store, (Arc::clone(&calls), value));
            let noise = Function::new_typed_with_env(store, &env, |env: FunctionEnvMut<Noise>| {
                let (calls, value) = env.data();
                value(calls.fetch_add(1, Ordering::Relaxed))
            });
            imports! { "env" => { "noise" => noise } }
        },
    )
    .expect("the noisy guest instantiates")
}

#[test]
fn a_host_import_that_changes_on_resimulation_fails_the_sync_test_and_rewind_names_the_bytes() {
    // noise = how many times it was called: the re-simulation of a frame
    // calls it again and gets another value.
    let mut backend = RewindBackend::new(noisy_session(|n| 1_000 + n as i32));
    let mut ggrs = sync_test::<TwoPlayers>(2, 4);
    let err =
        run_sync_test(&mut backend, &mut ggrs, 200, buttons).expect_err("GGRS must see the nondeterminism");
    let SyncTestError::Desync { ggrs, report } = &err else {
        panic!("expected a desync, got {err}");
    };
    let GgrsError::MismatchedChecksum {
        mismatched_frames, ..
    } = ggrs
    else {
        panic!("expected GGRS's MismatchedChecksum, got {ggrs:?}");
    };
    let report = report
        .as_ref()
        .expect("rewind keeps both simulations of the frame");
    eprintln!("{err}");
    assert!(mismatched_frames.contains(&report.frame), "{mismatched_frames:?}");
    // The noise is stored from frame 40 on (iteration 40 is after 40 steps).
    assert!(report.frame >= 40 && report.frame < 50, "frame {}", report.frame);
    assert_ne!(report.first, report.resimulated);
    assert_eq!(report.first_page, Some(5), "{report}");
    assert_eq!(report.pages, [5]);
    assert!(!report.bytes.is_empty());
    for range in &report.bytes {
        assert!(
            range.addr >= 0x5008 && range.addr + range.len <= 0x500C,
            "byte range {:#x}+{} outside the noise word",
            range.addr,
            range.len
        );
    }
    assert!(report.globals.is_empty(), "{report}");
    assert_eq!(report.memory_len.0, report.memory_len.1);
    let text = err.to_string();
    assert!(
        text.contains("first differing page 5") && text.contains("0x5008"),
        "{text}"
    );
}

#[test]
fn the_same_guest_with_a_deterministic_import_passes() {
    // The control: the same guest, the import a constant.
    let mut backend = RewindBackend::new(noisy_session(|_| 7));
    let mut ggrs = sync_test::<TwoPlayers>(2, 4);
    let summary = run_sync_test(&mut backend, &mut ggrs, 200, buttons).expect("deterministic");
    assert_eq!(summary.frames, 201);
}

/// Like [`NOISY`], but the noise lands in a non-exported global.
const NOISY_GLOBAL: &str = r#"(module
  (import "env" "noise" (func $noise (result i32)))
  (memory (export "memory") 1)
  (global $frame (mut i32) (i32.const 0))
  (global $drift (mut i32) (i32.const 0))
  (func (export "step") (param $input i64)
    (global.set $frame (i32.add (global.get $frame) (i32.const 1)))
    (if (i32.ge_u (global.get $frame) (i32.const 20))
      (then (global.set $drift (call $noise))))))"#;

#[test]
fn a_desync_in_a_non_exported_global_is_named_from_the_name_section() {
    let mut backend = RewindBackend::new(noisy_session_of(NOISY_GLOBAL, |n| n as i32));
    let mut ggrs = sync_test::<TwoPlayers>(2, 4);
    let err = run_sync_test(&mut backend, &mut ggrs, 100, buttons).expect_err("nondeterministic");
    let SyncTestError::Desync { report, .. } = &err else {
        panic!("expected a desync, got {err}");
    };
    let report = report.as_ref().expect("both simulations are kept");
    assert_eq!(report.globals, [1]);
    assert_eq!(report.global_labels, ["$drift"]);
    assert!(report.pages.is_empty(), "{report}");
    assert!(err.to_string().contains("globals $drift differ"), "{err}");
}
