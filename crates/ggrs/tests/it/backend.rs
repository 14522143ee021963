//! The backend alone: how GGRS frames map onto iterations, and every bad
//! request as a clear error that leaves the session as it was.

use ggrs::{GameStateCell, GgrsRequest, InputStatus};
use rewind::Policy;
use rewind_ggrs::{BackendError, Handled, RewindBackend, SavedFrame};
use rewind_wasmer::{Session, SessionOptions};

use crate::common::{buttons, guest_session, sync_test, TwoPlayers};

/// Drives a sync test request by request and checks, for every request,
/// that frame f is iteration origin + f: a save points at the head and its
/// hash, an advance records exactly head + 1, a load makes the frame the
/// head; at the end the recorded inputs of iteration origin + f + 1 are the
/// inputs GGRS gave for frame f.
fn frames_map_onto_iterations(steps_before: u64) {
    let mut session = guest_session(11);
    for k in 0..steps_before {
        session.step(&[k as u8]).expect("a step before GGRS starts");
    }
    let origin = session.head_iteration();
    assert_eq!(origin, steps_before);
    let mut backend = RewindBackend::new(session);
    assert_eq!(backend.origin(), origin);
    let mut ggrs = sync_test::<TwoPlayers>(2, 3);
    let frames = 80;
    let mut saves_after_load = 0;
    let mut loaded = false;
    while ggrs.current_frame() < frames {
        let frame = ggrs.current_frame();
        for p in 0..2 {
            ggrs.add_local_input(p, buttons(frame, p)).expect("input");
        }
        let requests = ggrs.advance_frame().expect("the built-in guest is deterministic");
        for request in requests {
            let head = backend.session().head_iteration();
            let (kind, asked) = match &request {
                GgrsRequest::SaveGameState { frame, .. } => ("save", Some(*frame)),
                GgrsRequest::LoadGameState { frame, .. } => ("load", Some(*frame)),
                GgrsRequest::AdvanceFrame { .. } => ("advance", None),
            };
            match backend.handle::<TwoPlayers>(request).expect(kind) {
                Handled::Saved(s) => {
                    assert_eq!(Some(s.frame), asked);
                    assert_eq!(s.iteration, origin + s.frame as u64, "save of frame {}", s.frame);
                    assert_eq!(s.iteration, head, "a save is of the live frame");
                    assert_eq!(
                        s.state_hash,
                        backend.session().state_hash(head).expect("head hash")
                    );
                    saves_after_load += u32::from(loaded);
                }
                Handled::Loaded { frame, iteration, .. } => {
                    assert_eq!(Some(frame), asked);
                    assert_eq!(iteration, origin + frame as u64);
                    assert_eq!(backend.session().head_iteration(), iteration);
                    loaded = true;
                }
                Handled::Advanced { report, .. } => {
                    assert_eq!(
                        report.iteration,
                        head + 1,
                        "an advance records the next iteration"
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            backend.session().head_iteration(),
            origin + ggrs.current_frame() as u64,
            "after GGRS frame {}",
            ggrs.current_frame()
        );
        assert_eq!(backend.current_frame(), Some(ggrs.current_frame()));
    }
    let stats = backend.stats();
    assert!(stats.loads > 70 && stats.resimulated > 200, "{stats:?}");
    assert!(saves_after_load > 100, "saves after loads: {saves_after_load}");
    // The inputs recorded for iteration origin + f + 1 are frame f's.
    let recorded = backend
        .session()
        .recorded_inputs(origin + 1, origin + frames as u64)
        .expect("inputs retained");
    for (f, input) in recorded.iter().enumerate() {
        let want = [buttons(f as i32, 0), buttons(f as i32, 1)];
        assert_eq!(input.as_slice(), want, "iteration {}", origin + f as u64 + 1);
    }
    assert_eq!(backend.frame_of(origin), Some(0));
    assert_eq!(backend.frame_of(origin.wrapping_sub(1)), None);
}

#[test]
fn frames_map_onto_iterations_from_a_fresh_session() {
    frames_map_onto_iterations(0);
}

#[test]
fn frames_map_onto_iterations_from_a_session_already_running() {
    frames_map_onto_iterations(5);
}

fn advance(backend: &mut RewindBackend<Session>, input: [u8; 2]) {
    let inputs = [
        (input[0], InputStatus::Confirmed),
        (input[1], InputStatus::Confirmed),
    ];
    backend.advance(&inputs).expect("advance");
}

#[test]
fn bad_requests_are_clear_errors_and_change_nothing() {
    let mut backend = RewindBackend::new(guest_session(3));
    let cells: Vec<GameStateCell<SavedFrame>> = (0..4).map(|_| GameStateCell::default()).collect();
    for (f, cell) in cells.iter().enumerate().take(3) {
        backend.save(cell, f as i32).expect("save");
        advance(&mut backend, [f as u8, 0]);
    }
    let head = backend.session().head_iteration();
    let head_hash = backend.session().state_hash(head).expect("head");
    let unchanged = |b: &RewindBackend<Session>| {
        assert_eq!(b.session().head_iteration(), head);
        assert_eq!(b.session().state_hash(head).expect("head"), head_hash);
    };

    // A frame never saved.
    let err = backend
        .load(&GameStateCell::default(), 1)
        .expect_err("never saved");
    assert!(matches!(err, BackendError::NeverSaved { frame: 1 }), "{err}");
    unchanged(&backend);

    // A save of a frame that is not the live one; a negative frame.
    let err = backend.save(&cells[3], 1).expect_err("not the head");
    assert!(
        matches!(
            err,
            BackendError::SaveNotAtHead {
                frame: 1,
                iteration: 1,
                head: 3
            }
        ),
        "{err}"
    );
    let err = backend.save(&cells[3], -4).expect_err("negative");
    assert!(matches!(err, BackendError::BadFrame { frame: -4, .. }), "{err}");

    // The cell of frame 2 handed over for frame 1.
    let err = backend.load(&cells[2], 1).expect_err("wrong cell");
    assert!(
        matches!(err, BackendError::WrongCell { frame: 1, held: 2 }),
        "{err}"
    );
    unchanged(&backend);

    // A cell whose state was superseded: frame 1 re-simulated with another
    // input, then the old cell of frame 2 loaded.
    backend.load(&cells[1], 1).expect("load frame 1");
    advance(&mut backend, [0xFF, 0xFF]);
    let fresh_head = backend.session().head_iteration();
    let fresh_hash = backend.session().state_hash(fresh_head).expect("head");
    let err = backend.load(&cells[2], 2).expect_err("stale");
    assert!(
        matches!(
            err,
            BackendError::StaleCell {
                frame: 2,
                iteration: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(backend.session().head_iteration(), fresh_head);
    assert_eq!(
        backend.session().state_hash(fresh_head).expect("head"),
        fresh_hash
    );
    // The superseded state is still in the history (inspectable).
    assert!(backend
        .session()
        .recorder()
        .history()
        .records()
        .any(|r| r.state_hash() == head_hash));
}

#[test]
fn a_frame_no_longer_retained_is_an_error_and_the_session_goes_on() {
    let options = SessionOptions::new(4096)
        .expect("page size")
        .seed(5)
        .policy(Policy::default().keep_last(4));
    let session = Session::new(crate::common::GUEST_WAT, options).expect("guest");
    let mut backend = RewindBackend::new(session);
    let cell = GameStateCell::default();
    backend.save(&cell, 0).expect("save frame 0");
    for f in 0..20u8 {
        advance(&mut backend, [f, f]);
    }
    let err = backend
        .load(&cell, 0)
        .expect_err("frame 0 was dropped by the policy");
    assert!(
        matches!(
            err,
            BackendError::NotRetained {
                frame: 0,
                iteration: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(backend.session().head_iteration(), 20);
    // Still usable: a recent frame saves, loads and advances.
    let recent = GameStateCell::default();
    backend.save(&recent, 20).expect("save frame 20");
    advance(&mut backend, [1, 2]);
    backend.load(&recent, 20).expect("load frame 20");
    assert_eq!(backend.session().head_iteration(), 20);
}
