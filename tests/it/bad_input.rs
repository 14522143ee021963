//! Bad input gets a typed error and changes nothing already stored.

use rewind::{GlobalValue, History, HistoryConfig, HistoryError, LiveMemory, SnapshotError, StoreError};

fn history() -> History {
    History::new(HistoryConfig::new(1024).expect("valid").seed(3)).expect("history")
}

fn filled(pages: usize, v: u8) -> Vec<u8> {
    (0..pages * 1024).map(|i| (i as u8).wrapping_add(v)).collect()
}

/// Snapshot of everything observable, to show that a failed call changed nothing.
fn observe(h: &History) -> (usize, Option<u64>, u64, usize, Vec<u8>) {
    let head = h.head().map(|r| r.iteration());
    let mut mem = vec![];
    if let Some(r) = h.head() {
        mem = vec![0u8; r.snapshot().memory_len() as usize];
        h.read(r.iteration(), 0, &mut mem).expect("read head");
    }
    (
        h.len(),
        head,
        h.store_stats().stored_bytes,
        h.store_stats().objects,
        mem,
    )
}

#[test]
fn page_size_not_a_power_of_two_in_range() {
    for bad in [0u64, 1000, 3 * 1024, 512, 128 * 1024] {
        let err = HistoryConfig::new(bad).expect_err("must be refused");
        assert!(matches!(
            err,
            HistoryError::Store(StoreError::InvalidPageSize { .. })
        ));
        assert!(err.to_string().contains("power of two"), "{err}");
    }
}

#[test]
fn memory_not_a_multiple_of_the_page_size() {
    let mut h = history();
    h.capture(0, &filled(2, 1), &[], None, None).expect("capture");
    let before = observe(&h);
    let err = h
        .capture(1, &vec![1u8; 1500], &[], None, None)
        .expect_err("refused");
    assert!(matches!(
        err,
        HistoryError::Snapshot(SnapshotError::Store(StoreError::MemoryNotPageAligned {
            len: 1500,
            ..
        }))
    ));
    assert!(err.to_string().contains("not a multiple of the page size"));
    assert_eq!(observe(&h), before);
}

#[test]
fn rollback_to_an_iteration_not_retained() {
    let mut h = history();
    for i in 0..5 {
        h.capture(i, &filled(2, i as u8), &[], None, None)
            .expect("capture");
    }
    let before = observe(&h);
    let mut mem = filled(2, 4);
    for bad in [5u64, 100] {
        let err = h
            .rollback_to(bad, &mut mem, LiveMemory::AtHead)
            .expect_err("refused");
        assert!(
            matches!(err, HistoryError::NotRetained { iteration, oldest: Some(0), newest: Some(4) } if iteration == bad)
        );
        assert!(err.to_string().contains("0..=4"), "{err}");
    }
    assert_eq!(mem, filled(2, 4));
    assert_eq!(observe(&h), before);
    // after a rollback the iterations past it are no longer on the timeline
    h.set_head(2).expect("rollback");
    assert!(matches!(h.at(3), Err(HistoryError::NotRetained { .. })));
}

#[test]
fn dirty_hint_out_of_range() {
    let mut h = history();
    h.capture(0, &filled(2, 0), &[], None, None).expect("capture");
    let before = observe(&h);
    let err = h
        .capture(1, &filled(2, 9), &[], Some(&[0, 2]), None)
        .expect_err("refused");
    assert!(matches!(
        err,
        HistoryError::Snapshot(SnapshotError::HintOutOfRange { index: 2, pages: 2 })
    ));
    assert_eq!(observe(&h), before);
    assert!(h.check().is_ok());
}

#[test]
fn globals_of_wrong_arity_or_type() {
    let mut h = history();
    let g = [GlobalValue::I32(1), GlobalValue::F64(0)];
    h.capture(0, &filled(1, 0), &g, None, None).expect("capture");
    let before = observe(&h);
    let err = h
        .capture(1, &filled(1, 1), &g[..1], None, None)
        .expect_err("arity");
    assert!(matches!(
        err,
        HistoryError::Snapshot(SnapshotError::GlobalsArity {
            expected: 2,
            found: 1
        })
    ));
    let err = h
        .capture(
            1,
            &filled(1, 1),
            &[GlobalValue::I32(1), GlobalValue::I64(0)],
            None,
            None,
        )
        .expect_err("type");
    assert!(matches!(
        err,
        HistoryError::Snapshot(SnapshotError::GlobalType { index: 1, .. })
    ));
    assert!(err.to_string().contains("global 1 is i64"), "{err}");
    assert_eq!(observe(&h), before);
    assert!(h.check().is_ok());
}

#[test]
fn iteration_must_come_after_the_head() {
    let mut h = history();
    h.capture(5, &filled(1, 0), &[], None, None).expect("capture");
    let before = observe(&h);
    assert!(matches!(
        h.capture(5, &filled(1, 1), &[], None, None),
        Err(HistoryError::IterationNotAfterHead {
            iteration: 5,
            head: 5
        })
    ));
    assert_eq!(observe(&h), before);
}

#[test]
fn restore_into_memory_of_the_wrong_length() {
    let mut h = history();
    h.capture(0, &filled(2, 0), &[], None, None).expect("capture");
    h.capture(1, &filled(3, 1), &[], None, None).expect("capture");
    let mut live = filled(3, 1);
    let err = h
        .rollback_to(0, &mut live, LiveMemory::AtHead)
        .expect_err("refused");
    assert!(matches!(
        err,
        HistoryError::Snapshot(SnapshotError::MemoryLength {
            live: 3072,
            target: 2048
        })
    ));
    assert_eq!(live, filled(3, 1));
    assert_eq!(h.head().map(|r| r.iteration()), Some(1));
}

#[test]
fn reads_out_of_bounds() {
    let mut h = history();
    h.capture(0, &filled(2, 0), &[], None, None).expect("capture");
    let mut out = [0u8; 8];
    assert!(matches!(
        h.read(0, 2044, &mut out),
        Err(HistoryError::Snapshot(SnapshotError::OutOfBounds { .. }))
    ));
    assert!(matches!(
        h.read(0, u64::MAX - 2, &mut out),
        Err(HistoryError::Snapshot(SnapshotError::OutOfBounds { .. }))
    ));
    assert!(h.blame(0, 2040, 100).is_err());
    assert!(h.blame(0, 0, 0).is_err());
}
