//! Sessions that persist to an archive and resume from it at any retained iteration.

use rewind::{Archive, Durability};
use rewind_wasmer::{CapturePreference, Session, SessionError, SessionOptions};
use wasmer::TypedFunction;

use crate::guests::{self, grow, work};

const SEED: u64 = 0x5EED;

fn options(capture: CapturePreference) -> SessionOptions {
    SessionOptions::new(4096)
        .expect("4096 is a valid page size")
        .seed(SEED)
        .capture(capture)
}

fn size(s: &mut Session) -> i32 {
    let f: TypedFunction<(), i32> = s
        .guest()
        .instance()
        .exports
        .get_typed_function(s.store(), "size")
        .expect("export");
    f.call(s.store_mut()).expect("call")
}

fn inputs() -> Vec<[u8; 8]> {
    let mut v = vec![work(1), work(2), grow(3, 3), work(4), grow(2, 5)];
    v.extend((6..30).map(work));
    v
}

#[test]
fn a_resumed_session_continues_like_a_straight_run() {
    let inputs = inputs();
    let mut straight = Session::new(guests::COUNTER, options(CapturePreference::FullScan)).expect("guest");
    let mut want = vec![straight.state_hash(0).expect("iteration 0")];
    for input in &inputs {
        want.push(straight.step(input).expect("step").state_hash);
    }
    for capture in [CapturePreference::Auto, CapturePreference::FullScan] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("counter.rwd");
        {
            // The first run records 20 frames and stops (a crash would do the same:
            // every append is synced).
            let mut s = Session::new(
                guests::COUNTER,
                options(capture).archive(&path, Durability::EveryAppend),
            )
            .expect("guest");
            for input in &inputs[..20] {
                s.step(input).expect("step");
            }
        }
        // Before the first growth, after it, after the second, and the last frame.
        for at in [1u64, 3, 6, 20] {
            let mut s = Session::new(
                guests::COUNTER,
                options(capture).resume_from(&path, at, Durability::EveryAppend),
            )
            .expect("resume");
            assert_eq!(s.head_iteration(), at);
            assert_eq!(s.state_hash(at).expect("head"), want[at as usize]);
            let len = s
                .recorder()
                .history()
                .at(at)
                .expect("head")
                .snapshot()
                .memory_len();
            assert_eq!(s.memory_len(), len, "memory size restored ({capture:?}, at {at})");
            assert_eq!(i64::from(size(&mut s)) * 65536, len as i64, "memory.size agrees");
            for (i, input) in inputs.iter().enumerate().skip(at as usize) {
                let r = s.step(input).expect("step");
                assert_eq!(r.iteration, i as u64 + 1);
                assert_eq!(
                    r.state_hash,
                    want[i + 1],
                    "iteration {} after resuming at {at} ({capture:?})",
                    i + 1
                );
            }
        }
        // Every resumed run was appended: the last one is the file's timeline.
        let archive = Archive::open(&path).expect("open");
        for (i, h) in want.iter().enumerate() {
            assert_eq!(archive.state_hash(i as u64).expect("retained"), *h);
        }
        archive.verify().expect("sound");
    }
}

#[test]
fn resuming_what_the_archive_does_not_hold_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("counter.rwd");
    {
        let mut s = Session::new(
            guests::COUNTER,
            options(CapturePreference::Auto).archive(&path, Durability::EveryAppend),
        )
        .expect("guest");
        for input in &inputs()[..5] {
            s.step(input).expect("step");
        }
    }
    let err = Session::new(
        guests::COUNTER,
        options(CapturePreference::Auto).resume_from(&path, 9, Durability::EveryAppend),
    )
    .expect_err("iteration 9 was never recorded");
    assert!(
        matches!(
            err,
            SessionError::Rewind(rewind::Error::NotRetained { iteration: 9, .. })
        ),
        "{err:?}"
    );
    // A module whose globals do not match the archive's is refused.
    let other = "(module (memory (export \"memory\") 1) (global $g (mut i32) (i32.const 0)) (global $h (mut i64) (i64.const 0)) (global $k (mut f32) (f32.const 0)) (func (export \"step\") (param i64)))";
    let err = Session::new(
        other,
        options(CapturePreference::Auto).resume_from(&path, 3, Durability::EveryAppend),
    )
    .expect_err("another module");
    assert!(matches!(err, SessionError::Guest(_)), "{err:?}");
    // Nothing was appended by the failed attempts.
    let archive = Archive::open(&path).expect("open");
    assert_eq!(archive.records().expect("records").len(), 6);
    archive.verify().expect("sound");
}

/// A pinned iteration outlives the window; a policy changed at run time applies at the
/// next step; an iteration already collected cannot be pinned.
#[test]
fn pins_and_policy_changes_at_run_time() {
    let mut s = Session::new(
        guests::COUNTER,
        options(CapturePreference::Auto).policy(rewind::Policy::default().keep_last(4)),
    )
    .expect("guest");
    for input in &inputs()[..3] {
        s.step(input).expect("step");
    }
    let pinned = s.pin(2).expect("iteration 2 is retained");
    for input in &inputs()[3..12] {
        s.step(input).expect("step");
    }
    assert!(s.state_hash(2).is_ok(), "the pin kept iteration 2");
    assert!(s.state_hash(5).is_err(), "outside the window and not pinned");
    assert!(matches!(
        s.pin(5),
        Err(SessionError::Rewind(rewind::Error::NotRetained {
            iteration: 5,
            ..
        }))
    ));
    assert!(s.unpin(pinned));
    s.set_policy(rewind::Policy::default().keep_last(2));
    s.step(&work(99)).expect("step");
    assert!(s.state_hash(2).is_err(), "unpinned and outside the new window");
    let kept: Vec<u64> = s.recorder().history().timeline().map(|r| r.iteration()).collect();
    assert_eq!(kept, [12, 13]);
}

/// The archive names the session's globals as its reports do: the export name, else
/// `$name` from the module's name section; an anonymous global stays unnamed.
#[test]
fn the_archive_names_the_globals_of_the_guest() {
    let wat = r#"(module
      (memory (export "memory") 1)
      (global $drift (mut i32) (i32.const 0))
      (global (mut i64) (i64.const 0))
      (global $score (export "score") (mut i32) (i32.const 0))
      (func (export "step") (param i64)
        (global.set $drift (i32.add (global.get $drift) (i32.const 3)))))"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("named.rwd");
    let mut s = Session::new(
        wat,
        options(CapturePreference::FullScan).archive(&path, Durability::EveryAppend),
    )
    .expect("guest");
    s.step(&[1]).expect("step");
    let labels: Vec<String> = s.guest().globals().iter().map(|g| g.label()).collect();
    assert_eq!(labels, ["$drift", "global 1", "score"]);
    drop(s);
    let archive = Archive::open(&path).expect("open");
    assert_eq!(
        archive.global_names().expect("names"),
        vec![Some("$drift".to_string()), None, Some("score".to_string())]
    );
    archive.verify().expect("sound");
}

#[test]
fn a_session_joined_from_a_bundle_continues_like_the_original() {
    use rewind::bundle::{self, Bundle, Manifest};
    let inputs = inputs();
    for capture in [CapturePreference::Auto, CapturePreference::FullScan] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("counter.rwd");
        let have = dir.path().join("have.rwd");
        // The original records 20 frames; a late joiner holds a copy of its archive as
        // of frame 6.
        let mut original = Session::new(
            guests::COUNTER,
            options(capture).archive(&path, Durability::EveryAppend),
        )
        .expect("guest");
        for (i, input) in inputs[..20].iter().enumerate() {
            original.step(input).expect("step");
            if i + 1 == 6 {
                std::fs::copy(&path, &have).expect("copy");
            }
        }
        // The exchange, each message through its bytes: manifest, want list, pages.
        let history = original.recorder().history();
        let manifest = Manifest::from_bytes(
            &Manifest::from_history(history, 20)
                .expect("manifest")
                .to_bytes()
                .expect("encode"),
        )
        .expect("decode");
        let local = Archive::open(&have).expect("open");
        let wanted = manifest.wanted(&local).expect("wanted");
        let wanted =
            bundle::want_from_bytes(&bundle::want_to_bytes(&wanted).expect("encode")).expect("decode");
        assert!(
            wanted.len() < manifest.distinct_pages().len(),
            "the copy holds some pages"
        );
        let pages = Bundle::build(&manifest, &wanted, history.store()).expect("build");
        let pages = Bundle::from_bytes(&pages.to_bytes().expect("encode")).expect("decode");
        let state = manifest.assemble(&pages, &local).expect("assemble");
        assert_eq!(state.pages_from_bundle(), wanted.len());

        let joined_path = dir.path().join("joined.rwd");
        let mut joined = Session::new(
            guests::COUNTER,
            options(capture)
                .archive(&joined_path, Durability::EveryAppend)
                .resume_from_bundle(state),
        )
        .expect("join");
        assert_eq!(joined.head_iteration(), 20);
        assert_eq!(
            joined.state_hash(20).expect("head"),
            original.state_hash(20).expect("head")
        );
        assert_eq!(
            joined.memory_len(),
            original.memory_len(),
            "memory size restored ({capture:?})"
        );
        assert_eq!(size(&mut joined), size(&mut original), "memory.size agrees");
        for input in &inputs[20..] {
            let a = original.step(input).expect("original");
            let b = joined.step(input).expect("joined");
            assert_eq!(
                (b.iteration, b.state_hash),
                (a.iteration, a.state_hash),
                "{capture:?}"
            );
        }
        // The joiner's own archive starts at the iteration it joined at.
        joined.sync().expect("sync");
        let mine = Archive::open(&joined_path).expect("open");
        assert_eq!(
            mine.timeline().expect("timeline").first().map(|r| r.iteration),
            Some(20)
        );
        assert_eq!(
            mine.state_hash(29).expect("head"),
            original.state_hash(29).expect("head")
        );
        mine.verify().expect("sound");
        // The joiner can roll back to where it joined, not before.
        joined.rollback_to(20).expect("rollback to the join");
        assert!(
            matches!(joined.rollback_to(19), Err(SessionError::Rewind(e)) if e.not_retained() == Some(19))
        );
    }
}
