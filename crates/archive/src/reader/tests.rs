//! Unit tests of the reader on small archives written by this crate's writer.

use rewind_history::{lineage, History, HistoryConfig, Lineage, LiveMemory};

use super::*;
use crate::{ArchiveWriter, Durability};

const PAGE: usize = 1024;

/// A history of 30 frames with two rollbacks (so two abandoned branches) and one
/// memory growth (the second rollback goes back past it), written to `path` one commit
/// per frame; every other frame changes every page, so full page vectors are stored.
fn branched(path: &std::path::Path) -> History {
    let mut history =
        History::new(HistoryConfig::new(PAGE as u64).expect("page size").seed(3)).expect("history");
    let mut writer = ArchiveWriter::create(path, &history, Durability::Manual).expect("create");
    let mut memory = vec![0u8; 8 * PAGE];
    let mut frame = 0u64;
    for step in 0..30u64 {
        if step == 12 || step == 22 {
            frame -= 4;
            // Memory cannot shrink in place: a rollback past the growth starts from the
            // target's length.
            let len = history.at(frame).expect("record").snapshot().memory_len();
            memory.resize(len as usize, 0);
            history
                .rollback_to(frame, &mut memory, LiveMemory::AtHead)
                .expect("rollback");
        }
        if step == 18 {
            memory.resize(12 * PAGE, 0);
        }
        frame += 1;
        let at = (step as usize * 389) % memory.len();
        memory[at] = memory[at].wrapping_add(1 + step as u8);
        if step % 2 == 0 {
            // Many pages at once: the writer stores a checkpoint sooner.
            for p in 0..memory.len() / PAGE {
                memory[p * PAGE + 7] = step as u8;
            }
        }
        history.capture(frame, &memory, &[], None, None).expect("capture");
        writer.append(&history).expect("append");
    }
    history
}

fn open_branched() -> (tempfile::TempDir, History, Archive) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("b.rwd");
    let history = branched(&path);
    let archive = Archive::open(&path).expect("open");
    (dir, history, archive)
}

#[test]
fn blame_on_the_file_equals_blame_in_memory_on_every_record() {
    let (_dir, history, archive) = open_branched();
    assert!(
        history.abandoned().count() > 0,
        "the fixture has abandoned branches"
    );
    for r in history.records() {
        let len = r.snapshot().memory_len();
        for (addr, n) in [
            (0, 1),
            (7, 1),
            (389, 2),
            (PAGE as u64 - 1, 2),
            (len - 3, 3),
            (5 * 389, 40),
        ] {
            let mem = lineage::blame_chain(&history, r, addr, n, 4).expect("history blame");
            let file = archive.blame_chain(r.id(), addr, n, 4).expect("archive blame");
            assert_eq!(file, mem, "record {} bytes {addr}+{n}", r.id());
        }
    }
}

#[test]
fn change_lists_in_a_page_range_are_the_full_list_cut_to_it() {
    let (_dir, history, archive) = open_branched();
    let mut checkpoints = 0;
    for r in history.records() {
        let e = archive.rec_entry(r.id().0).expect("entry");
        checkpoints += usize::from(archive.record_detail(r.id()).expect("detail").checkpoint);
        let all = archive.changes(r.id()).expect("changes");
        for range in [0..=0u32, 2..=5, 7..=11, 0..=u32::MAX] {
            let want: Vec<_> = all.iter().copied().filter(|(i, _)| range.contains(i)).collect();
            assert_eq!(
                archive.changes_in_entry(&e, range.clone()).expect("in range"),
                want,
                "record {}",
                r.id()
            );
        }
    }
    assert!(checkpoints > 1, "the fixture stores checkpoints beyond the root");
}

#[test]
fn a_parent_that_is_not_an_earlier_record_is_inconsistent() {
    let (_dir, _history, archive) = open_branched();
    let mut e = archive.rec_entry(5).expect("entry");
    e.parent = e.id;
    assert!(matches!(
        Lineage::parent(&archive, &e),
        Err(ArchiveError::Inconsistent { .. })
    ));
    e.parent = e.id + 1;
    assert!(matches!(
        Lineage::parent(&archive, &e),
        Err(ArchiveError::Inconsistent { .. })
    ));
    e.parent = NONE;
    assert!(matches!(Lineage::parent(&archive, &e), Ok(None)));
}

#[test]
fn reads_and_blames_outside_memory_are_out_of_bounds() {
    let (_dir, history, archive) = open_branched();
    let first = history.records().next().expect("a record");
    let len = first.snapshot().memory_len();
    let mut out = [0u8; 4];
    assert!(matches!(
        archive.read_record(first.id(), len - 2, &mut out),
        Err(ArchiveError::OutOfBounds { memory_len, .. }) if memory_len == len
    ));
    for (addr, n) in [(0, 0), (len, 1), (u64::MAX, 2)] {
        assert!(matches!(
            archive.blame_record(first.id(), addr, n),
            Err(ArchiveError::OutOfBounds { .. })
        ));
    }
    assert!(matches!(
        archive.blame_record(RecordId(10_000), 0, 1),
        Err(ArchiveError::NoSuchRecord(RecordId(10_000)))
    ));
}
