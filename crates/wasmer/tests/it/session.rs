//! Session behaviour in whichever capture mode this machine offers.

use std::sync::{Arc, Mutex};

use rewind::GlobalValue;
use rewind_wasmer::guest::GuestError;
use rewind_wasmer::{CaptureMode, CapturePreference, Session, SessionError, SessionOptions, StepAbi};
use wasmer::TypedFunction;

use crate::guests::{self, grow, scribble, trap, work};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::SplitMix64;

const SEED: u64 = 0x5EED;

fn options() -> SessionOptions {
    SessionOptions::new(4096)
        .expect("4096 is a valid page size")
        .seed(SEED)
}

fn counter(capture: CapturePreference) -> Session {
    Session::new(guests::COUNTER, options().capture(capture)).expect("counter guest")
}

fn call_i32(s: &mut Session, name: &str) -> i32 {
    let f: TypedFunction<(), i32> = s
        .guest()
        .instance()
        .exports
        .get_typed_function(s.store(), name)
        .expect("export");
    f.call(s.store_mut()).expect("call")
}

/// A straight run's state hashes for `inputs` (index 0 = iteration 0).
fn straight(inputs: &[[u8; 8]]) -> Vec<rewind::StateHash> {
    let mut s = counter(CapturePreference::FullScan);
    let mut hashes = vec![s.state_hash(0).expect("iteration 0")];
    for input in inputs {
        hashes.push(s.step(input).expect("step").state_hash);
    }
    hashes
}

#[test]
fn reports_the_capture_mode() {
    let s = counter(CapturePreference::Auto);
    eprintln!("mode: {} ({:?})", s.mode(), s.fallback_reason());
    if crate::kernel_available() {
        assert_eq!(s.mode(), CaptureMode::KernelDirty);
        assert!(s.fallback_reason().is_none());
    } else {
        assert_eq!(s.mode(), CaptureMode::FullScan);
        assert!(s.fallback_reason().is_some());
    }
    let f = counter(CapturePreference::FullScan);
    assert_eq!(f.mode(), CaptureMode::FullScan);
    assert_eq!(f.step_abi(), StepAbi::Word);
}

/// Restoring memory alone leaves the non-exported globals of the later
/// iteration: detectably wrong. Rolling back through the session is exact.
#[test]
fn non_exported_globals_memory_only_restore_is_wrong_session_restore_is_exact() {
    let inputs: Vec<[u8; 8]> = (1..=10).map(work).collect();
    let expected = straight(&inputs);
    let mut s = counter(CapturePreference::Auto);
    for input in &inputs {
        s.step(input).expect("step");
    }
    assert_eq!(s.state_hash(10).expect("10"), expected[10]);

    // Memory only: write iteration 5's pages into live memory, keep globals.
    let globals5 = s
        .recorder()
        .history()
        .at(5)
        .expect("5")
        .snapshot()
        .globals()
        .to_vec();
    let guest = s.guest().clone();
    let history_restore = {
        // Copy iteration 5's bytes out, then write them with MemoryView::write.
        let len = s.recorder().history().at(5).expect("5").snapshot().memory_len() as usize;
        let mut bytes = vec![0u8; len];
        s.recorder().read(5, 0, &mut bytes).expect("read 5");
        bytes
    };
    guest
        .memory()
        .view(s.store_mut())
        .write(0, &history_restore)
        .expect("write memory");
    let mut live_globals = Vec::new();
    guest
        .read_global_values(s.store_mut(), &mut live_globals)
        .expect("globals");
    assert_ne!(
        live_globals, globals5,
        "memory-only restore must leave later globals"
    );
    // The guest's next step from this half-restored state is not iteration 6.
    let wrong = s.step(&work(6)).expect("step");
    assert_eq!(wrong.iteration, 11);
    assert_ne!(
        wrong.state_hash, expected[6],
        "memory-only restore must be detectably wrong"
    );

    // Through the session: memory and every global.
    let back = s.rollback_to(5).expect("rollback");
    assert_eq!(back.state_hash, expected[5]);
    guest_globals_eq(&mut s, &globals5);
    assert_eq!(call_i32(&mut s, "tick"), 5);
    for (i, input) in inputs.iter().enumerate().skip(5) {
        let r = s.step(input).expect("step");
        assert_eq!(r.state_hash, expected[i + 1], "iteration {}", i + 1);
    }
    s.recorder().history().check().expect("history invariant");
}

fn guest_globals_eq(s: &mut Session, want: &[GlobalValue]) {
    let guest = s.guest().clone();
    let mut got = Vec::new();
    guest
        .read_global_values(s.store_mut(), &mut got)
        .expect("globals");
    assert_eq!(got, want);
    // Every numeric type is covered.
    let types: Vec<_> = got.iter().map(|g| g.ty()).collect();
    assert!(types.contains(&rewind::GlobalType::V128) && types.contains(&rewind::GlobalType::F32));
}

#[test]
fn growth_then_rollback_to_before_the_growth() {
    for capture in [CapturePreference::Auto, CapturePreference::FullScan] {
        let inputs = [work(1), work(2), grow(3, 3), work(4), grow(10, 5), work(6)];
        let expected = straight(&inputs);
        let mut s = counter(capture);
        for input in &inputs {
            s.step(input).expect("step");
        }
        assert_eq!(s.memory_len(), 15 * 65536);
        assert_eq!(call_i32(&mut s, "size"), 15);
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&hooks);
        s.on_rollback(move |i| seen.lock().expect("not poisoned").push(i));

        let back = s.rollback_to(2).expect("rollback before growth");
        assert!(back.reinstantiated);
        let snap_len = s.recorder().history().at(2).expect("2").snapshot().memory_len();
        assert_eq!(s.memory_len(), snap_len);
        assert_eq!(back.memory_len, snap_len);
        assert_eq!(call_i32(&mut s, "size"), 2, "memory.size after rollback");
        assert_eq!(back.state_hash, expected[2]);
        // Re-simulation reproduces the straight run, growth included.
        for (i, input) in inputs.iter().enumerate().skip(2) {
            let r = s.step(input).expect("step");
            assert_eq!(r.state_hash, expected[i + 1], "iteration {} ({capture:?})", i + 1);
        }
        // A rollback within the same size does not re-instantiate.
        let back = s.rollback_to(5).expect("rollback");
        assert!(!back.reinstantiated);
        assert_eq!(back.state_hash, expected[5]);
        assert_eq!(*hooks.lock().expect("not poisoned"), [2, 5]);
        assert_eq!(s.stats().reinstantiations, 1);
    }
}

#[test]
fn trap_mid_step_keeps_history_and_restores_the_last_good_state() {
    for capture in [CapturePreference::Auto, CapturePreference::FullScan] {
        let inputs: Vec<[u8; 8]> = (1..=8).map(work).collect();
        let expected = straight(&inputs);
        let mut s = counter(capture);
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&hooks);
        s.on_rollback(move |i| seen.lock().expect("not poisoned").push(i));
        for input in &inputs[..4] {
            s.step(input).expect("step");
        }
        let records = s.recorder().history().len();
        // The trapping step changes globals, writes memory and grows it first.
        let err = s.step(&trap()).expect_err("the guest traps");
        assert!(matches!(err, SessionError::Trap { iteration: 5, .. }), "{err:?}");
        assert_eq!(s.head_iteration(), 4);
        assert_eq!(s.recorder().history().len(), records, "nothing recorded");
        s.recorder().history().check().expect("history invariant");
        assert_eq!(s.memory_len(), 2 * 65536, "growth undone");
        assert_eq!(call_i32(&mut s, "tick"), 4);
        assert_eq!(*hooks.lock().expect("not poisoned"), [4]);
        // Trap twice in a row, then carry on: the run is the straight run.
        assert!(matches!(s.step(&trap()), Err(SessionError::Trap { .. })));
        for (i, input) in inputs.iter().enumerate().skip(4) {
            assert_eq!(s.step(input).expect("step").state_hash, expected[i + 1]);
        }
        assert_eq!(s.stats().failed_steps, 2);
    }
}

/// Thousands of random steps and rollbacks (some re-instantiating after
/// growth, some after wrong "predicted" inputs): every state hash of a
/// correct prefix equals the straight run's.
#[test]
fn thousands_of_random_rollbacks_match_a_straight_run() {
    const N: usize = 300;
    let mut rng = SplitMix64::seed_from_u64(42);
    let inputs: Vec<[u8; 8]> = (1..=N as u64)
        .map(|i| {
            if i % 40 == 0 {
                grow(1, i)
            } else {
                work(rng.next_u64() >> 8)
            }
        })
        .collect();
    let expected = straight(&inputs);
    let mut s = counter(CapturePreference::Auto);
    let mut correct = 0u64; // the timeline equals the straight run up to here
    let mut rollbacks = 0;
    for _ in 0..3000 {
        let head = s.head_iteration();
        let r = rng.next_u64() % 10;
        if r < 2 && head > 0 {
            let back = (rng.next_u64() % 12).min(head);
            let target = head - back;
            let report = s.rollback_to(target).expect("rollback");
            rollbacks += 1;
            correct = correct.min(target);
            if target <= correct {
                assert_eq!(report.state_hash, expected[target as usize]);
            }
        } else if head as usize >= N {
            s.rollback_to(head - 30).expect("rollback");
            correct = correct.min(head - 30);
        } else if r == 2 {
            // A predicted input that turns out wrong.
            s.step(&work(rng.next_u64() >> 8 | 1 << 50)).expect("step");
        } else {
            let i = head as usize + 1;
            let report = s.step(&inputs[i - 1]).expect("step");
            if correct == head {
                correct += 1;
                assert_eq!(report.state_hash, expected[i], "iteration {i}");
            }
        }
    }
    assert!(rollbacks > 400, "{rollbacks}");
    assert!(s.stats().reinstantiations > 0);
    s.recorder().history().check().expect("history invariant");
}

#[test]
fn replay_reports_the_first_divergent_iteration_and_pages() {
    let inputs: Vec<[u8; 8]> = (1..=20).map(work).collect();
    let mut s = counter(CapturePreference::Auto);
    for input in &inputs {
        s.step(input).expect("step");
    }
    let hashes: Vec<_> = (11..=20).map(|i| s.state_hash(i).expect("hash")).collect();
    // Replaying with the recorded inputs matches.
    let recorded = s.recorded_inputs(11, 20).expect("inputs");
    assert_eq!(recorded[0], inputs[10]);
    let ok = s.replay(10, &recorded, &hashes).expect("replay");
    assert!(ok.divergence.is_none());
    // A different input at iteration 15 diverges there; the superseded
    // straight run still holds the expected snapshot, so pages are known.
    let mut wrong = recorded.clone();
    wrong[4] = work(999).to_vec();
    let replay = s.replay(10, &wrong, &hashes).expect("replay");
    let d = replay.divergence.expect("diverges");
    assert_eq!(d.iteration, 15);
    assert_eq!(d.expected, hashes[4]);
    let pages = d.pages.expect("a straight-run snapshot is retained");
    assert!(pages.globals_differ);
    assert!(pages.first.is_some());
    assert_eq!(pages.first, pages.pages.first().copied());
    assert!(
        !pages.pages.is_empty() && pages.pages.len() <= 4,
        "{:?}",
        pages.pages
    );

    // Against a peer's snapshot (same seed): the same pages.
    let mut peer = counter(CapturePreference::FullScan);
    for input in &inputs {
        peer.step(input).expect("step");
    }
    let theirs = peer.recorder().history().at(15).expect("15").snapshot().clone();
    let cmp = s
        .compare_snapshot(15, &theirs)
        .expect("compare")
        .expect("differs");
    assert_eq!(cmp.pages, pages.pages);
    assert!(s
        .compare_snapshot(14, peer.recorder().history().at(14).expect("14").snapshot())
        .expect("compare")
        .is_none());
}

#[test]
fn hash_seed_is_shared_by_peers() {
    let a = counter(CapturePreference::FullScan);
    let b = counter(CapturePreference::Auto);
    assert_eq!(a.state_hash(0).expect("0"), b.state_hash(0).expect("0"));
    let c = Session::new(guests::COUNTER, options().seed(SEED + 1)).expect("session");
    assert_ne!(a.state_hash(0).expect("0"), c.state_hash(0).expect("0"));
}

#[test]
fn buffer_abi_writes_the_input_into_memory() {
    let mut s = Session::new(guests::BUFFER, options()).expect("buffer guest");
    assert_eq!(
        s.step_abi(),
        StepAbi::Buffer {
            ptr: 1024,
            capacity: 64
        }
    );
    s.step(b"abc").expect("step");
    s.step(b"de").expect("step");
    assert_eq!(
        call_i32(&mut s, "sum"),
        [b'a', b'b', b'c', b'd', b'e']
            .iter()
            .map(|&b| i32::from(b))
            .sum::<i32>()
    );
    let mut log = [0u8; 5];
    s.recorder().read(2, 8192, &mut log).expect("read");
    assert_eq!(&log, b"abcde");
    let err = s.step(&[0u8; 65]).expect_err("too large");
    assert!(matches!(
        err,
        SessionError::InputTooLarge {
            len: 65,
            capacity: 64
        }
    ));
    s.rollback_to(1).expect("rollback");
    assert_eq!(
        call_i32(&mut s, "sum"),
        [b'a', b'b', b'c'].iter().map(|&b| i32::from(b)).sum::<i32>()
    );
    // The word ABI takes at most 8 bytes.
    let mut w = counter(CapturePreference::FullScan);
    assert!(matches!(
        w.step(&[0; 9]),
        Err(SessionError::InputTooLarge { capacity: 8, .. })
    ));
}

#[test]
fn bad_modules_are_refused_at_setup() {
    let err = |wat: &str| Session::new(wat, options()).expect_err("refused");
    assert!(matches!(
        err(guests::IMPORTED_MEMORY),
        SessionError::Guest(GuestError::ImportedMemory { .. })
    ));
    assert!(matches!(
        err(guests::TWO_MEMORIES),
        SessionError::Guest(GuestError::MultipleMemories { count: 2 })
    ));
    assert!(matches!(
        err(guests::MUTABLE_TABLE),
        SessionError::Guest(GuestError::MutableTable { .. })
    ));
    let e = err(guests::MUTABLE_TABLE);
    eprintln!(
        "{e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(matches!(
        Session::new(guests::COUNTER, options().step_export("nope")).expect_err("no export"),
        SessionError::StepExport { .. }
    ));
    assert!(matches!(
        Session::new(
            "(module (memory (export \"memory\") 1) (func (export \"step\") (param f32)))",
            options()
        )
        .expect_err("bad signature"),
        SessionError::StepExport { .. }
    ));
    assert!(matches!(
        Session::new("not wat", options()).expect_err("bad text"),
        SessionError::Guest(GuestError::Wat { .. })
    ));
    // A passive segment copied in and dropped: its dropped flag is not capturable.
    let passive = |body: &str| {
        format!(
            r#"(module (memory (export "memory") 1) (data $d "hello")
                 (func (export "step") (param i64) {body}))"#
        )
    };
    let dropped = passive("(memory.init $d (i32.const 0) (i32.const 0) (i32.const 5)) (data.drop $d)");
    assert!(
        matches!(
            err(&dropped),
            SessionError::Guest(GuestError::DroppedDataSegment {
                segment: 0,
                init_func: 0,
                drop_func: 0
            })
        ),
        "{}",
        err(&dropped)
    );
    assert!(
        err(&dropped)
            .to_string()
            .contains("dropped by data.drop (function 0)"),
        "{}",
        err(&dropped)
    );
    // A module exporting the metering middleware's global names itself is not
    // taken for a metered one.
    let engine = wasmer::Store::default().engine().clone();
    let posing = rewind_wasmer::GuestModule::from_wat(
        &engine,
        r#"(module (memory (export "memory") 1)
             (global (export "wasmer_metering_remaining_points") (mut i64) (i64.const 0))
             (global (export "wasmer_metering_points_exhausted") (mut i32) (i32.const 0))
             (func (export "step") (param i64)))"#,
    )
    .expect("module");
    let e = Session::from_module(engine, posing, options().fuel_per_step(10), |_| {
        wasmer::Imports::new()
    })
    .expect_err("not metered");
    assert!(matches!(e, SessionError::NotMetered { .. }), "{e}");
    // Either alone is harmless and accepted.
    Session::new(passive("(data.drop $d)"), options()).expect("drop only");
    Session::new(
        passive("(memory.init $d (i32.const 0) (i32.const 0) (i32.const 5))"),
        options(),
    )
    .expect("init only");
}

#[test]
fn memory_limit_undoes_a_hostile_growth() {
    let mut s = Session::new(guests::COUNTER, options().max_memory(8 * 65536)).expect("session");
    s.step(&work(1)).expect("step");
    let before = s.state_hash(1).expect("1");
    let err = s.step(&grow(40, 2)).expect_err("over the limit");
    assert!(
        matches!(err, SessionError::MemoryLimit { iteration: 2, .. }),
        "{err:?}"
    );
    assert_eq!(s.memory_len(), 2 * 65536);
    assert_eq!(s.head_iteration(), 1);
    // The live state is iteration 1's: the same step again gives the same hash.
    let again = s.step(&work(2)).expect("step");
    let mut fresh = counter(CapturePreference::FullScan);
    fresh.step(&work(1)).expect("step");
    assert_eq!(fresh.state_hash(1).expect("1"), before);
    assert_eq!(fresh.step(&work(2)).expect("step").state_hash, again.state_hash);
}

#[test]
fn a_guest_writing_every_page_is_captured_and_rolled_back() {
    let inputs = [work(1), scribble(7), work(3), scribble(9), work(5)];
    let expected = straight(&inputs);
    let mut s = counter(CapturePreference::Auto);
    for (i, input) in inputs.iter().enumerate() {
        let r = s.step(input).expect("step");
        assert_eq!(r.state_hash, expected[i + 1]);
    }
    let r = s.rollback_to(1).expect("rollback");
    assert!(r.pages_written >= 32, "{}", r.pages_written);
    for (i, input) in inputs.iter().enumerate().skip(1) {
        assert_eq!(s.step(input).expect("step").state_hash, expected[i + 1]);
    }
}

#[test]
fn rollback_to_an_unretained_iteration_is_an_error() {
    let mut s = Session::new(
        guests::COUNTER,
        options().policy(rewind::Policy::default().keep_last(5)),
    )
    .expect("session");
    for i in 1..=20 {
        s.step(&work(i)).expect("step");
    }
    assert!(matches!(s.rollback_to(3), Err(SessionError::Rewind(_))));
    assert!(matches!(s.rollback_to(21), Err(SessionError::Rewind(_))));
    s.rollback_to(17).expect("retained");
}

/// The unsafe memory slices are only handed out for the guest's own store.
#[test]
fn memory_slices_check_the_store() {
    let mut s = counter(CapturePreference::FullScan);
    let guest = s.guest().clone();
    let mut other = wasmer::Store::default();
    assert!(matches!(
        guest.with_memory(&mut other, |m| m.len()),
        Err(GuestError::WrongStore)
    ));
    assert!(matches!(
        guest.with_memory_mut(&mut other, |m| m.len()),
        Err(GuestError::WrongStore)
    ));
    let len = guest.with_memory(s.store_mut(), |m| m.len()).expect("own store");
    assert_eq!(len as u64, s.memory_len());
    // Writes through the mutable slice are seen by the guest.
    guest
        .with_memory_mut(s.store_mut(), |m| m[0..4].copy_from_slice(&77i32.to_le_bytes()))
        .expect("own store");
    let mut word = [0u8; 4];
    guest.memory().view(s.store()).read(0, &mut word).expect("read");
    assert_eq!(i32::from_le_bytes(word), 77);
}

/// A host-driven session on [`guests::HOST_DRIVEN`]: the world built by the
/// setup, its pointer handed back.
fn host_driven(capture: CapturePreference) -> (Session, i32) {
    let engine = wasmer::Store::default().engine().clone();
    let module = rewind_wasmer::GuestModule::from_wat(&engine, guests::HOST_DRIVEN).expect("module");
    Session::from_module_with_setup(
        engine,
        module,
        options().capture(capture).host_driven(),
        |_| wasmer::Imports::new(),
        |store, guest| {
            let new: TypedFunction<(), i32> =
                guest.instance().exports.get_typed_function(store, "world_new")?;
            Ok(new.call(store)?)
        },
    )
    .expect("host-driven session")
}

/// A host-driven frame of [`guests::HOST_DRIVEN`]: `world_step(world, input[0])`.
fn world_frame(
    world: i32,
) -> impl FnMut(&mut wasmer::Store, &rewind_wasmer::Guest, &[u8]) -> Result<(), wasmer::RuntimeError> {
    move |store, guest, input| {
        let f: TypedFunction<(i32, i64), ()> = guest
            .instance()
            .exports
            .get_typed_function(store, "world_step")
            .map_err(|e| wasmer::RuntimeError::user(Box::new(e)))?;
        f.call(store, world, i64::from(input.first().copied().unwrap_or(0)))
    }
}

fn world_step(s: &mut Session, world: i32, dt: u8) -> Result<rewind_wasmer::StepReport, SessionError> {
    s.step_with(&[dt], world_frame(world))
}

#[test]
fn host_driven_frames_record_roll_back_and_match_a_straight_run() {
    let dts: Vec<u8> = (1..=12).collect();
    // Straight run, full scan.
    let (mut straight, world) = host_driven(CapturePreference::FullScan);
    assert_eq!(world, 65536);
    assert_eq!(straight.step_abi(), StepAbi::HostDriven);
    let mut expected = vec![straight.state_hash(0).expect("iteration 0")];
    for &dt in &dts {
        let r = world_step(&mut straight, world, dt).expect("step");
        assert!(
            straight.written_pages().is_empty(),
            "full scan reports no written pages"
        );
        expected.push(r.state_hash);
    }
    // The setup's write is part of iteration 0.
    let mut word = [0u8; 8];
    straight.recorder().read(0, 65536, &mut word).expect("read");
    assert_eq!(u64::from_le_bytes(word), 7);

    let (mut s, world) = host_driven(CapturePreference::Auto);
    assert_eq!(s.state_hash(0).expect("iteration 0"), expected[0]);
    assert!(matches!(s.step(&[1]), Err(SessionError::HostDriven)));
    assert_eq!(s.head_iteration(), 0, "a refused step records nothing");
    for &dt in &dts[..8] {
        let r = world_step(&mut s, world, dt).expect("step");
        assert_eq!(r.state_hash, expected[r.iteration as usize]);
        if s.mode() == CaptureMode::KernelDirty {
            assert_eq!(
                s.written_pages(),
                &[16, 17, 18, 19],
                "the kernel saw the world's pages"
            );
            assert_eq!(r.pages_hashed, 4);
        }
    }
    // A frame that traps is undone: nothing recorded, live state at the head.
    let err = world_step(&mut s, world, 255).expect_err("trap");
    assert!(matches!(err, SessionError::Trap { iteration: 9, .. }), "{err}");
    assert_eq!(s.head_iteration(), 8);
    assert!(s.written_pages().is_empty());
    // Roll back and re-simulate; then run on to the end.
    s.rollback_to(3).expect("rollback");
    assert!(s.written_pages().is_empty(), "a rollback is not a step");
    for &dt in &dts[3..] {
        let r = world_step(&mut s, world, dt).expect("step");
        assert_eq!(
            r.state_hash, expected[r.iteration as usize],
            "iteration {}",
            r.iteration
        );
    }
    assert_eq!(s.head_iteration(), dts.len() as u64);
    // resimulate_with re-runs host-driven frames from an earlier iteration.
    let report = s
        .resimulate_with(5, dts[5..].iter().map(|&d| [d]), world_frame(world))
        .expect("resimulate_with");
    assert_eq!(report.rollback.iteration, 5);
    assert_eq!(report.rollback.state_hash, expected[5]);
    assert_eq!(report.steps.len(), dts.len() - 5);
    for r in &report.steps {
        assert_eq!(
            r.state_hash, expected[r.iteration as usize],
            "iteration {}",
            r.iteration
        );
    }
    // resimulate needs a step export: refused before anything is rolled back.
    let err = s.resimulate(2, [[1u8]]).expect_err("host-driven");
    assert!(matches!(err, SessionError::HostDriven), "{err}");
    assert_eq!(s.head_iteration(), dts.len() as u64, "nothing rolled back");
    assert_eq!(s.recorded_inputs(4, 4).expect("inputs"), vec![vec![4u8]]);
    // replay_with: the host-driven replay, checked against the straight run.
    let hashes: Vec<_> = expected[4..].to_vec();
    let ok = s
        .replay_with(3, dts[3..].iter().map(|&d| [d]), &hashes, world_frame(world))
        .expect("replay_with");
    assert!(ok.divergence.is_none());
    assert_eq!(ok.resimulated.steps.len(), dts.len() - 3);
    let mut wrong: Vec<[u8; 1]> = dts[3..].iter().map(|&d| [d]).collect();
    wrong[2] = [wrong[2][0].wrapping_add(7)];
    let bad = s
        .replay_with(3, wrong, &hashes, world_frame(world))
        .expect("replay_with");
    assert_eq!(bad.divergence.expect("diverges").iteration, 6);
}

#[test]
fn host_driven_setup_failure_is_a_typed_error() {
    let engine = wasmer::Store::default().engine().clone();
    let module = rewind_wasmer::GuestModule::from_wat(&engine, guests::HOST_DRIVEN).expect("module");
    let err = Session::from_module_with_setup(
        engine,
        module,
        options().host_driven(),
        |_| wasmer::Imports::new(),
        |store, guest| {
            let f: TypedFunction<(), i32> = guest.instance().exports.get_typed_function(store, "missing")?;
            Ok(f.call(store)?)
        },
    )
    .expect_err("setup fails");
    assert!(matches!(err, SessionError::Setup { .. }), "{err}");
}

#[test]
fn fuel_stops_an_infinite_loop_and_the_step_is_undone() {
    let fueled = || Session::new(guests::LOOPER, options().fuel_per_step(100_000)).expect("metered session");
    let mut unmetered = Session::new(guests::LOOPER, options()).expect("session");
    let mut s = fueled();
    // The metering globals are not guest state: hashes equal the unmetered run's.
    assert_eq!(s.state_hash(0).expect("0"), unmetered.state_hash(0).expect("0"));
    for k in 1..=5u64 {
        let a = s.step(&k.to_le_bytes()).expect("metered step");
        let b = unmetered.step(&k.to_le_bytes()).expect("step");
        assert_eq!(a.state_hash, b.state_hash, "iteration {k}");
    }
    let head_hash = s.state_hash(5).expect("5");
    let err = s.step(&0xDEADu64.to_le_bytes()).expect_err("runs out of fuel");
    assert!(
        matches!(
            err,
            SessionError::OutOfFuel {
                iteration: 6,
                fuel: 100_000
            }
        ),
        "{err}"
    );
    assert_eq!(s.head_iteration(), 5, "nothing recorded");
    assert_eq!(s.stats().failed_steps, 1);
    // The live state is the head's: the next step continues from it, with a
    // full budget again, and matches the unmetered run.
    let a = s.step(&6u64.to_le_bytes()).expect("step after the undo");
    let b = unmetered.step(&6u64.to_le_bytes()).expect("step");
    assert_eq!(a.state_hash, b.state_hash);
    assert_eq!(s.state_hash(5).expect("5"), head_hash);
    let mut word = [0u8; 8];
    s.recorder().read(6, 0, &mut word).expect("read");
    assert_eq!(
        u64::from_le_bytes(word),
        21,
        "1 + … + 6, the looping frame's input undone"
    );
    // A frame that grows memory before running out: the undo re-instantiates,
    // and the fresh instance is metered too.
    let err = s.step(&0xBEEFu64.to_le_bytes()).expect_err("runs out of fuel");
    assert!(
        matches!(err, SessionError::OutOfFuel { iteration: 7, .. }),
        "{err}"
    );
    assert_eq!(s.stats().reinstantiations, 1);
    assert_eq!(s.memory_len(), 65536, "the growth was undone");
    let a = s
        .step(&7u64.to_le_bytes())
        .expect("step after the re-instantiation");
    let b = unmetered.step(&7u64.to_le_bytes()).expect("step");
    assert_eq!(a.state_hash, b.state_hash);
    let err = s
        .step(&0xDEADu64.to_le_bytes())
        .expect_err("the new instance is metered");
    assert!(
        matches!(err, SessionError::OutOfFuel { iteration: 8, .. }),
        "{err}"
    );
    // A rollback and a long-enough budget keep working.
    s.rollback_to(2).expect("rollback");
    assert_eq!(
        s.step(&3u64.to_le_bytes()).expect("step").state_hash,
        unmetered.state_hash(3).expect("3")
    );
}

#[test]
fn fuel_covers_host_driven_frames_and_the_setup() {
    let engine = rewind_wasmer::metered_engine(50_000);
    let module = rewind_wasmer::GuestModule::from_wat(&engine, guests::LOOPER).expect("module");
    let err = Session::from_module_with_setup(
        engine,
        module,
        options().fuel_per_step(50_000),
        |_| wasmer::Imports::new(),
        |store, guest| {
            let spin: TypedFunction<(), ()> = guest.instance().exports.get_typed_function(store, "spin")?;
            Ok(spin.call(store)?)
        },
    )
    .expect_err("the setup loops");
    assert!(
        matches!(err, SessionError::OutOfFuel { iteration: 0, .. }),
        "{err}"
    );

    let mut s = Session::new(guests::LOOPER, options().fuel_per_step(50_000).host_driven()).expect("session");
    let err = s
        .step_with(&[], |store, guest, _| {
            let spin: TypedFunction<(), ()> = guest
                .instance()
                .exports
                .get_typed_function(store, "spin")
                .map_err(|e| wasmer::RuntimeError::user(Box::new(e)))?;
            spin.call(store)
        })
        .expect_err("the frame loops");
    assert!(
        matches!(err, SessionError::OutOfFuel { iteration: 1, .. }),
        "{err}"
    );
    assert_eq!(s.head_iteration(), 0);
}

#[test]
fn fuel_needs_a_metered_module() {
    let engine = wasmer::Store::default().engine().clone();
    let module = rewind_wasmer::GuestModule::from_wat(&engine, guests::LOOPER).expect("module");
    let err = Session::from_module(engine, module, options().fuel_per_step(10), |_| {
        wasmer::Imports::new()
    })
    .expect_err("not metered");
    assert!(matches!(err, SessionError::NotMetered { .. }), "{err}");
}

#[test]
fn a_start_function_that_loops_runs_out_of_fuel() {
    const START_LOOPS: &str = r#"(module
        (memory (export "memory") 1)
        (func $start (loop $l (br $l)))
        (start $start)
        (func (export "step") (param i64)))"#;
    let err =
        Session::new(START_LOOPS, options().fuel_per_step(10_000)).expect_err("the start function loops");
    assert!(
        matches!(
            err,
            SessionError::OutOfFuel {
                iteration: 0,
                fuel: 10_000
            }
        ),
        "{err}"
    );
    // A start function that traps for another reason is not reported as fuel, even
    // when the module's own last globals look like the metering's and one is set.
    const START_TRAPS: &str = r#"(module
        (memory (export "memory") 1)
        (global $points (mut i64) (i64.const 0))
        (global $flag (mut i32) (i32.const 1))
        (func $start unreachable)
        (start $start)
        (func (export "step") (param i64)))"#;
    let err =
        Session::new(START_TRAPS, options().fuel_per_step(10_000)).expect_err("the start function traps");
    assert!(
        matches!(err, SessionError::Guest(GuestError::Instantiate { .. })),
        "{err}"
    );
}

/// A pipelined session (`SessionOptions::pipeline`) against a synchronous one on
/// the same random steps, traps, growths and rollbacks: every state hash and
/// rollback report, and the retained history, are the same.
#[test]
fn pipelined_session_equals_synchronous() {
    let mut rng = SplitMix64::seed_from_u64(7);
    let mut sync = counter(CapturePreference::Auto);
    let mut pipe = Session::new(
        guests::COUNTER,
        options()
            .capture(CapturePreference::Auto)
            .pipeline(rewind::PipelineOptions::new().staging_budget(3 * 4096)),
    )
    .expect("counter guest");
    for _ in 0..600 {
        let head = sync.head_iteration();
        assert_eq!(pipe.head_iteration(), head);
        let r = rng.next_u64() % 12;
        if (r < 2 && head > 0) || head >= 120 {
            let target = head - (rng.next_u64() % 12).min(head);
            let a = sync.rollback_to(target).expect("rollback");
            let b = pipe.rollback_to(target).expect("rollback");
            assert_eq!((a.state_hash, a.memory_len), (b.state_hash, b.memory_len));
        } else {
            let input = match r {
                2 => grow(1, head),
                3 => trap(),
                _ => work(rng.next_u64() >> 8),
            };
            let a = sync.step(&input);
            let b = pipe.step(&input);
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.iteration, b.iteration);
                    if rng.next_u64() % 3 == 0 {
                        assert_eq!(pipe.state_hash(b.iteration).expect("hash"), a.state_hash);
                    }
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("sync {a:?}, pipelined {b:?}"),
            }
        }
    }
    let records = |s: &Session| -> Vec<(u64, rewind::StateHash, bool)> {
        let h = s.recorder().history();
        h.records()
            .map(|r| (r.iteration(), r.state_hash(), h.on_timeline(r.id())))
            .collect()
    };
    assert_eq!(records(&sync), records(&pipe));
    pipe.recorder().history().check().expect("history invariant");
    if pipe.mode() == CaptureMode::KernelDirty {
        assert!(pipe.recorder().pipeline_stats().staged > 0);
    }
}
