//! Persistence through the facade: a recorder that writes its archive as it records,
//! and one that resumes a stored history from any retained iteration.

use rewind::{
    Archive, ArchiveError, Durability, Error, GlobalValue, LiveMemory, Options, Policy, Recorder, StateHash,
};

const PAGE: usize = 4096;
const PAGES: usize = 16;

/// One deterministic frame: the next state depends only on the current one, the frame
/// number and the input.
fn frame(memory: &mut [u8], iteration: u64, input: u8) -> Vec<u32> {
    let mut dirty = vec![];
    for k in 0..3u64 {
        let page = ((iteration * 7 + k * 5) as usize) % PAGES;
        let at = page * PAGE + ((iteration * 131 + k) as usize % (PAGE - 8));
        let prev = memory[at];
        memory[at] = prev
            .wrapping_mul(31)
            .wrapping_add(input)
            .wrapping_add(iteration as u8);
        dirty.push(page as u32);
    }
    dirty
}

fn globals(iteration: u64, memory: &[u8]) -> Vec<GlobalValue> {
    vec![
        GlobalValue::I64(iteration as i64),
        GlobalValue::I32(i32::from(memory[5])),
    ]
}

fn options(seed: u64) -> Result<Options, Error> {
    Ok(Options::new(PAGE as u64)?.seed(seed))
}

/// Record frames `range` (input 1) from `memory`; their state hashes.
fn run(rec: &mut Recorder, memory: &mut [u8], range: std::ops::Range<u64>) -> Vec<StateHash> {
    range
        .map(|it| {
            let dirty = frame(memory, it, 1);
            rec.capture(it, memory, &globals(it, memory), Some(&dirty), None)
                .expect("record")
                .state_hash
        })
        .collect()
}

/// A recorder that persists to a new archive at `path`, syncing every append.
fn persisting(path: &std::path::Path) -> Recorder {
    Recorder::new(
        options(3)
            .expect("options")
            .archive(path, Durability::EveryAppend),
    )
    .expect("recorder")
}

/// State hashes of a straight run of `frames` frames with input 1.
fn straight(frames: u64) -> Vec<StateHash> {
    let mut rec = Recorder::new(options(3).expect("options")).expect("recorder");
    run(&mut rec, &mut vec![0u8; PAGES * PAGE], 0..frames)
}

#[test]
fn every_recorded_iteration_reaches_the_archive_under_a_tight_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec.rwd");
    // A tight window and immediate collection of abandoned records: the file still
    // gets every record, each appended before the GC step of its capture.
    let policy = Policy::default().keep_last(4).abandoned_max_age(0);
    let mut rec = Recorder::new(
        options(5)
            .expect("options")
            .policy(policy)
            .archive(&path, Durability::Manual),
    )
    .expect("recorder");
    let mut memory = vec![0u8; PAGES * PAGE];
    let mut captured: Vec<(u64, StateHash)> = vec![];
    let mut it = 0u64;
    for step in 0..150u64 {
        let dirty = frame(&mut memory, it, step as u8);
        let r = rec
            .capture(it, &memory, &globals(it, &memory), Some(&dirty), None)
            .expect("record");
        captured.push((it, r.state_hash));
        if step % 10 == 9 {
            // A late input: back two frames, the next ones re-simulated differently.
            rec.rollback_to(it - 2, &mut memory, LiveMemory::AtHead)
                .expect("rollback");
            it -= 2;
        }
        it += 1;
    }
    assert!(
        rec.history().len() <= 4 + 1,
        "the policy held {} records",
        rec.history().len()
    );
    rec.sync().expect("sync");
    let archive = Archive::open(&path).expect("open");
    let records = archive.records().expect("records");
    assert_eq!(
        records.len(),
        captured.len(),
        "every capture is a record of the file"
    );
    for (r, (iteration, hash)) in records.iter().zip(&captured) {
        assert_eq!(r.iteration, *iteration);
        assert_eq!(r.state_hash, *hash, "record {:?}", r.id);
    }
    archive.verify().expect("sound");
}

#[test]
fn resume_from_an_archive_continues_like_a_straight_run() {
    let want = straight(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("game.rwd");
    // The recorder is dropped without a sync: every append was synced (EveryAppend).
    run(&mut persisting(&path), &mut vec![0u8; PAGES * PAGE], 0..60);
    let mut rec =
        Recorder::open(&path, Durability::EveryAppend, Policy::default().keep_last(600)).expect("open");
    assert_eq!(rec.history().head().map(|h| h.iteration()), Some(59));
    let state = rec.resume_at(40).expect("resume");
    assert_eq!(state.iteration, 40);
    assert_eq!(state.state_hash, want[40]);
    assert_eq!(state.globals, globals(40, &state.memory));
    let mut memory = state.memory;
    let resumed = run(&mut rec, &mut memory, 41..100);
    assert_eq!(resumed, want[41..], "every iteration after resuming at 40");
    drop(rec);
    // The file holds the resumed branch as its timeline, the first run's 41..59 as an
    // abandoned branch.
    let archive = Archive::open(&path).expect("reopen");
    for it in [0u64, 40, 41, 99] {
        assert_eq!(archive.state_hash(it).expect("retained"), want[it as usize]);
    }
    assert_eq!(archive.abandoned().expect("abandoned").len(), 19);
    archive.verify().expect("sound");
}

#[test]
fn resume_past_the_retained_window_is_an_error_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.rwd");
    run(&mut persisting(&path), &mut vec![0u8; PAGES * PAGE], 0..50);
    let mut rec =
        Recorder::open(&path, Durability::EveryAppend, Policy::default().keep_last(10)).expect("open");
    let err = rec.resume_at(20).expect_err("collected by the policy");
    assert!(matches!(err, Error::NotRetained { iteration: 20, .. }), "{err:?}");
    assert_eq!(rec.history().head().map(|h| h.iteration()), Some(49));
    let err = rec.resume_at(50).expect_err("never recorded");
    assert!(matches!(err, Error::NotRetained { .. }), "{err:?}");
    assert!(rec.resume_at(45).is_ok());
    drop(rec);
    // The file still holds every record (the policy only shaped what was loaded).
    assert_eq!(
        Archive::open(&path)
            .expect("open")
            .records()
            .expect("records")
            .len(),
        50
    );
}

#[test]
fn an_existing_archive_is_never_clobbered_and_one_writer_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keep.rwd");
    let mut rec = persisting(&path);
    run(&mut rec, &mut vec![0u8; PAGES * PAGE], 0..10);
    // While the first recorder writes: a second one on the same path is refused.
    let second = Recorder::open(&path, Durability::EveryAppend, Policy::default());
    assert!(
        matches!(second, Err(Error::Archive(ArchiveError::Locked { .. }))),
        "{:?}",
        second.err()
    );
    drop(rec);
    // A new recorder on the path is refused (it exists); the file is intact.
    let again = Recorder::new(
        options(3)
            .expect("options")
            .archive(&path, Durability::EveryAppend),
    );
    assert!(
        matches!(again, Err(Error::Archive(ArchiveError::Exists { .. }))),
        "{:?}",
        again.err()
    );
    let archive = Archive::open(&path).expect("open");
    assert_eq!(archive.records().expect("records").len(), 10);
    archive.verify().expect("sound");
    drop(archive);
    // Asked to replace, it starts over.
    let rec = Recorder::new(
        options(3)
            .expect("options")
            .replace_archive(&path, Durability::EveryAppend),
    )
    .expect("replace");
    drop(rec);
    assert_eq!(
        Archive::open(&path)
            .expect("open")
            .records()
            .expect("records")
            .len(),
        0
    );
}
