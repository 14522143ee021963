//! Unit tests of the policy rules on small histories.

use rewind_history::{HistoryConfig, LiveMemory};
use rewind_snapshot::GlobalValue;

use super::*;

const PAGE: usize = 1024;

/// A history of `frames` captures (iterations 0..frames), one byte changing per frame.
fn history(frames: u64) -> History {
    let config = HistoryConfig::new(PAGE as u64).expect("page size").seed(2);
    let mut h = History::new(config).expect("history");
    for frame in 0..frames {
        capture(&mut h, frame, frame as u8);
    }
    h
}

fn capture(h: &mut History, iteration: u64, byte: u8) {
    let mut memory = vec![0u8; 2 * PAGE];
    memory[(iteration as usize * 13) % (2 * PAGE)] = byte.wrapping_add(1);
    h.capture(
        iteration,
        &memory,
        &[GlobalValue::I64(iteration as i64)],
        None,
        None,
    )
    .expect("capture");
}

fn timeline(h: &History) -> Vec<u64> {
    h.timeline().map(|r| r.iteration()).collect()
}

#[test]
fn keep_last_keeps_the_newest_timeline_records() {
    let mut h = history(10);
    let report = Collector::new(Policy::default().keep_last(3))
        .collect_some(&mut h)
        .expect("step");
    assert_eq!(timeline(&h), [7, 8, 9]);
    assert_eq!(report.removed.records, 7);
    assert_eq!(h.check(), Ok(()));
}

#[test]
fn rules_compose_as_a_union() {
    let mut h = history(10);
    let policy = Policy::default().keep_last(2).keep_from(5);
    Collector::new(policy).collect_some(&mut h).expect("step");
    assert_eq!(timeline(&h), [5, 6, 7, 8, 9]);
}

#[test]
fn a_pin_outlives_the_window_until_unpinned() {
    let mut h = history(10);
    let mut c = Collector::new(Policy::default().keep_last(2));
    let pinned = c.pin(&h, 3).expect("pin");
    c.collect_some(&mut h).expect("step");
    assert_eq!(timeline(&h), [3, 8, 9]);
    assert!(c.unpin(pinned));
    assert!(!c.unpin(pinned), "a second unpin finds nothing");
    c.collect_some(&mut h).expect("step");
    assert_eq!(timeline(&h), [8, 9]);
    assert_eq!(h.check(), Ok(()));
}

#[test]
fn pinning_what_is_gone_is_an_error_that_changes_nothing() {
    let mut h = history(6);
    let mut c = Collector::new(Policy::default().keep_last(2));
    c.collect_some(&mut h).expect("step");
    let err = c.pin(&h, 1).expect_err("collected");
    assert!(
        matches!(
            err,
            GcError::History(HistoryError::NotRetained { iteration: 1, .. })
        ),
        "{err}"
    );
    let err = c.pin(&h, 60).expect_err("never captured");
    assert!(
        matches!(
            err,
            GcError::History(HistoryError::NotRetained { iteration: 60, .. })
        ),
        "{err}"
    );
    assert!(c.policy().pins.is_empty());
    assert_eq!(timeline(&h), [4, 5]);
}

/// Rolls back to iteration 5 of a 10-frame history and re-captures 6 and 7: records
/// of iterations 6..=9 of the first run are abandoned.
fn branched() -> History {
    let mut h = history(10);
    let mut memory = vec![0u8; 2 * PAGE];
    h.rollback_to(5, &mut memory, LiveMemory::Unknown)
        .expect("rollback");
    capture(&mut h, 6, 100);
    capture(&mut h, 7, 101);
    assert_eq!(h.abandoned().count(), 4);
    h
}

#[test]
fn abandoned_branches_go_with_the_window_by_default() {
    let mut h = branched();
    let mut c = Collector::new(Policy::default().keep_last(4));
    c.collect_some(&mut h).expect("step");
    // The window keeps 4..=7: the abandoned 6..=9 are not behind it yet.
    assert_eq!(timeline(&h), [4, 5, 6, 7]);
    assert_eq!(h.abandoned().count(), 4);
    for i in 8..14 {
        capture(&mut h, i, i as u8);
        c.collect_some(&mut h).expect("step");
    }
    assert_eq!(h.abandoned().count(), 0, "the window passed iteration 9");
    assert_eq!(h.check(), Ok(()));
}

#[test]
fn abandoned_max_age_and_keep() {
    let mut h = branched();
    Collector::new(Policy::default().abandoned_max_age(0))
        .collect_some(&mut h)
        .expect("step");
    assert_eq!(h.abandoned().count(), 0);
    assert_eq!(
        timeline(&h),
        (0..=7).collect::<Vec<_>>(),
        "no window rule: the timeline stays"
    );

    let mut h = branched();
    Collector::new(Policy::default().keep_last(1).abandoned(Abandoned::Keep))
        .collect_some(&mut h)
        .expect("step");
    assert_eq!(h.abandoned().count(), 4);
    assert_eq!(timeline(&h), [7]);
    assert_eq!(h.check(), Ok(()));
}

#[test]
fn a_budget_thins_the_past_and_says_when_it_cannot_be_met() {
    let mut h = history(40);
    let before = h.resident_bytes();
    let mut c = Collector::new(Policy::default().keep_last(5).budget(1));
    let report = c.collect(&mut h).expect("collect");
    assert!(
        report.over_budget,
        "the last 5 records and the head cannot fit in 1 byte"
    );
    assert!(h.resident_bytes() < before);
    assert_eq!(timeline(&h), [35, 36, 37, 38, 39]);
    let mut h = history(40);
    let report = Collector::new(Policy::default().budget(before))
        .collect(&mut h)
        .expect("collect");
    assert!(!report.over_budget);
    assert_eq!(h.len(), 40, "within the budget nothing is thinned");
}

/// A page lz4 compresses, distinct per `tag`.
fn compressible_page(tag: u64) -> Vec<u8> {
    let pattern = tag.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
    (0..PAGE).map(|i| pattern[(i / 16) % 8]).collect()
}

#[test]
fn pages_held_raw_for_rollbacks_stay_bounded_in_the_ggrs_pattern() {
    // Every frame rolls back 3, re-simulates 3 frames differently and captures a new one
    // (8 pages of 32 written per capture); the window holds replaced pages raw for 10
    // frames of progress, and compression keeps up with the rest.
    const PAGES: usize = 32;
    const WRITES: usize = 8;
    let config = HistoryConfig::new(PAGE as u64)
        .expect("page size")
        .seed(3)
        .compression(2, 10_000)
        .rollback_window(10);
    let mut h = History::new(config).expect("history");
    let mut gc = Collector::new(Policy::default().keep_last(30).abandoned_max_age(0));
    let mut memory = vec![0u8; PAGES * PAGE];
    let mut tag = 0u64;
    let mut frame = |h: &mut History, memory: &mut [u8], it: u64| {
        for k in 0..WRITES {
            tag += 1;
            let p = (it as usize * 5 + k * 7) % PAGES;
            memory[p * PAGE..(p + 1) * PAGE].copy_from_slice(&compressible_page(tag));
        }
        h.capture(it, memory, &[], None, None).expect("capture");
        gc.collect_some(h).expect("gc step");
    };
    for it in 0..=3 {
        frame(&mut h, &mut memory, it);
    }
    let mut raw_at = Vec::new();
    for (n, head) in (1..=300).zip(3u64..) {
        h.rollback_to(head - 3, &mut memory, LiveMemory::AtHead)
            .expect("rollback");
        for it in head - 2..=head + 1 {
            frame(&mut h, &mut memory, it);
        }
        if n % 50 == 0 {
            raw_at.push(h.store().stats().raw_pages);
        }
    }
    assert_eq!(h.check(), Ok(()));
    assert!(h.store().stats().inflated > 0 || h.store().stats().deltas_made > 0);
    // Raw: the live pages, the versions replaced inside the window (10 frames of
    // progress; the re-simulated branches are dropped) and those stored in the last 2
    // frames (not yet aged), whatever the run's length; the other retained versions
    // are deltas or compressed.
    let bound = PAGES + WRITES * (10 + 2);
    for (i, raw) in raw_at.iter().enumerate() {
        assert!(
            *raw <= bound,
            "after {} frames: {raw} raw pages > {bound}",
            (i + 1) * 50
        );
    }
    assert!(raw_at.iter().all(|&r| r > 0), "{raw_at:?}");
    assert!(h.store().stats().objects > 2 * bound, "{:?}", h.store().stats());
}

#[test]
fn a_dropped_branch_rewritten_by_the_re_simulation_is_revived_not_stored_again() {
    // Every frame rolls back 3 and re-simulates the same 3 frames exactly (no late
    // input changed anything), then captures a new one; the abandoned branch is dropped
    // right after the first re-simulated capture, before the others write its pages.
    const PAGES: usize = 8;
    let config = HistoryConfig::new(PAGE as u64).expect("page size").seed(3);
    let mut h = History::new(config).expect("history");
    let mut gc = Collector::new(Policy::default().keep_last(20).abandoned_max_age(0));
    let write = |memory: &mut [u8], it: u64| {
        for k in 0..3 {
            let p = (it as usize * 3 + k) % PAGES;
            memory[p * PAGE + (it as usize * 31 + k) % PAGE] ^= it as u8 | 1;
        }
    };
    let mut memory = vec![0u8; PAGES * PAGE];
    let mut hashes = std::collections::HashMap::new();
    for it in 0..=3 {
        write(&mut memory, it);
        let r = h.capture(it, &memory, &[], None, None).expect("capture");
        hashes.insert(it, r.state_hash);
        gc.collect_some(&mut h).expect("gc step");
    }
    for head in 3u64..60 {
        h.rollback_to(head - 3, &mut memory, LiveMemory::AtHead)
            .expect("rollback");
        for it in head - 2..=head + 1 {
            write(&mut memory, it);
            let r = h.capture(it, &memory, &[], None, None).expect("capture");
            assert_eq!(*hashes.entry(it).or_insert(r.state_hash), r.state_hash);
            gc.collect_some(&mut h).expect("gc step");
            assert_eq!(h.check(), Ok(()));
        }
    }
    let stats = h.store().stats();
    // The second and third re-simulated captures of every frame took back the pages
    // the dropped branch held.
    assert!(stats.revived >= 57 * 2, "{stats:?}");
    // Nothing waits past a frame of progress: a full collection frees what is left.
    Collector::new(Policy::default().keep_last(20).abandoned_max_age(0))
        .collect(&mut h)
        .expect("collect");
    assert_eq!(h.check(), Ok(()));
}
