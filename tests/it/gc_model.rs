//! Garbage collection against a model: every retained record reads back as captured,
//! nothing the policy drops is still held, and protected records are never dropped.

use std::collections::HashMap;

use proptest::prelude::*;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::SplitMix64;
use rewind::{Abandoned, GlobalValue, LiveMemory, Options, Policy, RecordId, Recorder, StateHash};

const PAGE: usize = 1024;
const PAGES: usize = 6;

#[derive(Clone, Debug)]
enum Op {
    Capture {
        writes: Vec<(usize, u8)>,
    },
    Rollback {
        back: usize,
    },
    Pin {
        pick: usize,
    },
    Unpin {
        pick: usize,
    },
    Policy {
        keep_last: Option<usize>,
        keep_from_back: Option<u64>,
        abandoned: Abandoned,
        budget: Option<u64>,
    },
    Collect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec((0usize..PAGES * PAGE, any::<u8>()), 0..6).prop_map(|writes| Op::Capture { writes }),
        2 => (0usize..8).prop_map(|back| Op::Rollback { back }),
        1 => (0usize..64).prop_map(|pick| Op::Pin { pick }),
        1 => (0usize..64).prop_map(|pick| Op::Unpin { pick }),
        1 => (proptest::option::of(1usize..12), proptest::option::of(0u64..10), abandoned(), proptest::option::of(1_000u64..40_000))
            .prop_map(|(keep_last, keep_from_back, abandoned, budget)| Op::Policy { keep_last, keep_from_back, abandoned, budget }),
        1 => Just(Op::Collect),
    ]
}

fn abandoned() -> impl Strategy<Value = Abandoned> {
    prop_oneof![
        Just(Abandoned::WithWindow),
        Just(Abandoned::Keep),
        (0u64..10).prop_map(Abandoned::MaxAge),
    ]
}

struct Captured {
    iteration: u64,
    memory: Vec<u8>,
    globals: Vec<GlobalValue>,
    hash: StateHash,
}

fn check_all(rec: &Recorder, model: &HashMap<RecordId, Captured>) -> Result<(), TestCaseError> {
    let h = rec.history();
    for r in h.records() {
        let want = model
            .get(&r.id())
            .ok_or_else(|| TestCaseError::fail("unknown record"))?;
        prop_assert_eq!(r.iteration(), want.iteration);
        prop_assert_eq!(r.state_hash(), want.hash);
        prop_assert_eq!(r.snapshot().globals(), &want.globals[..]);
        let mut mem = vec![0u8; want.memory.len()];
        rewind::layers::snapshot::read(h.store(), r.snapshot(), 0, &mut mem)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&mem, &want.memory, "record {} reads back wrong", r.id());
    }
    // No leak and no dangling reference: objects and counts are exactly what records own.
    h.check().map_err(|e| TestCaseError::fail(e.to_string()))?;
    // Protected records are present.
    for id in &rec.collector().policy().pins {
        prop_assert!(h.record(*id).is_some(), "pinned {} was collected", id);
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<usize, TestCaseError> {
    let mut rec =
        Recorder::new(Options::new(PAGE as u64).expect("page").seed(11).max_chain(4)).expect("recorder");
    let mut model: HashMap<RecordId, Captured> = HashMap::new();
    let mut live = vec![0u8; PAGES * PAGE];
    let mut iter = 0u64;
    let mut count = 0usize;
    for op in ops {
        count += 1;
        match op {
            Op::Capture { writes } => {
                let mut dirty = vec![];
                for (at, v) in writes {
                    live[at] = v;
                    dirty.push((at / PAGE) as u32);
                }
                let g = vec![GlobalValue::I64(iter as i64)];
                let r = rec.capture(iter, &live, &g, Some(&dirty), None).expect("record");
                model.insert(
                    r.record,
                    Captured {
                        iteration: iter,
                        memory: live.clone(),
                        globals: g,
                        hash: r.state_hash,
                    },
                );
                iter += 1;
                // Under the default rule, no unpinned abandoned record is older than the
                // oldest iteration a window rule keeps: the n-th newest timeline record
                // for keep_last(n) (all of them when fewer), K for keep_from(K).
                let policy = rec.collector().policy();
                if policy.abandoned == Abandoned::WithWindow {
                    let h = rec.history();
                    let timeline: Vec<u64> = h.timeline().map(|r| r.iteration()).collect();
                    let by_last = policy.keep_last.map(|n| match n.checked_sub(1) {
                        Some(back) => timeline
                            .iter()
                            .rev()
                            .nth(back)
                            .or(timeline.first())
                            .copied()
                            .unwrap_or(0),
                        None => iter,
                    });
                    let start = match (by_last, policy.keep_from) {
                        (Some(a), Some(k)) => Some(a.min(k)),
                        (a, k) => a.or(k),
                    };
                    if let Some(start) = start {
                        for r in h.abandoned() {
                            prop_assert!(
                                policy.pins.contains(&r.id()) || r.iteration() >= start,
                                "abandoned record {} (iteration {}) outlived the window starting at {}",
                                r.id(),
                                r.iteration(),
                                start
                            );
                        }
                    }
                }
                // The window rules hold after every step.
                if let Some(n) = rec.collector().policy().keep_last {
                    let h = rec.history();
                    let kept: Vec<u64> = h.timeline().map(|r| r.iteration()).collect();
                    let want_from = iter.saturating_sub(n as u64);
                    for it in want_from..iter {
                        if model.values().any(|c| c.iteration == it) && h.at(it).is_err() {
                            // may only be missing if it was never on this timeline
                            prop_assert!(!kept.contains(&it));
                        }
                    }
                    let extra = rec.collector().policy().pins.len() + 1;
                    let from_k = rec.collector().policy().keep_from;
                    if from_k.is_none() {
                        prop_assert!(
                            kept.len() <= n + extra,
                            "timeline {} > {} + {}",
                            kept.len(),
                            n,
                            extra
                        );
                    }
                }
            }
            Op::Rollback { back } => {
                let timeline: Vec<u64> = rec.history().timeline().map(|r| r.iteration()).collect();
                if timeline.is_empty() {
                    continue;
                }
                let target = timeline[timeline.len().saturating_sub(1 + back)];
                let rb = rec
                    .rollback_to(target, &mut live, LiveMemory::AtHead)
                    .expect("rollback");
                let want = &model[&rb.record];
                prop_assert_eq!(&live, &want.memory);
                iter = target + 1;
            }
            Op::Pin { pick } => {
                let ids: Vec<(RecordId, u64)> = rec
                    .history()
                    .timeline()
                    .map(|r| (r.id(), r.iteration()))
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                let (_, it) = ids[pick % ids.len()];
                rec.pin(it).expect("pin retained");
            }
            Op::Unpin { pick } => {
                let pins: Vec<RecordId> = rec.collector().policy().pins.iter().copied().collect();
                if !pins.is_empty() {
                    rec.unpin(pins[pick % pins.len()]);
                }
            }
            Op::Policy {
                keep_last,
                keep_from_back,
                abandoned,
                budget,
            } => {
                let p = Policy {
                    keep_last,
                    keep_from: keep_from_back.map(|b| iter.saturating_sub(b)),
                    abandoned,
                    budget,
                    pins: Default::default(),
                };
                rec.set_policy(p);
            }
            Op::Collect => {
                let report = rec.collect().expect("collect");
                if let Some(b) = rec.collector().policy().budget {
                    prop_assert!(report.over_budget || rec.history().resident_bytes() <= b);
                }
                // Pinning an iteration that was collected is a typed error, never stale data.
                let gone: Vec<u64> = model
                    .iter()
                    .filter(|(id, _)| rec.history().record(**id).is_none())
                    .map(|(_, c)| c.iteration)
                    .filter(|it| rec.history().at(*it).is_err())
                    .collect();
                for it in gone.into_iter().take(3) {
                    let pinned = rec.pin(it);
                    let typed = matches!(pinned, Err(rewind::Error::NotRetained { .. }));
                    prop_assert!(typed, "pin of collected iteration {} gave {:?}", it, pinned);
                    let mut tmp = live.clone();
                    prop_assert!(rec.rollback_to(it, &mut tmp, LiveMemory::AtHead).is_err());
                    prop_assert_eq!(&tmp, &live);
                }
            }
        }
        // A full check every few operations keeps the run fast; one more at the end.
        if count.is_multiple_of(5) {
            check_all(&rec, &model)?;
        }
    }
    check_all(&rec, &model)?;
    Ok(count)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Random interleavings of capture, rollback, branch, pin/unpin, policy change and GC
    /// (about 2,000 cases × 60 operations: over 100,000 operations per run).
    #[test]
    fn gc_keeps_what_the_policy_says_and_frees_the_rest(ops in proptest::collection::vec(op(), 20..100)) {
        run(ops)?;
    }
}

/// A deep delta chain whose root expires is compacted and still reads correctly, and the
/// chain-depth bound holds afterwards. Replaced pages are stored as deltas against their
/// replacement, so a pinned old iteration hangs off a chain whose newer links expire one
/// by one under a 10-frame window (deltas made at once: with the default delay no
/// page of a 10-frame window would become one).
#[test]
fn deep_chain_root_expiry_is_compacted() {
    let mut rec = Recorder::new(
        Options::new(4096)
            .expect("page")
            .seed(5)
            .max_chain(6)
            .delta_after(0)
            .policy(Policy::default().keep_last(10)),
    )
    .expect("recorder");
    let mut mem: Vec<u8> = (0..16 * 4096).map(|i| (i % 251) as u8).collect();
    let mut frames = vec![];
    for it in 0..200u64 {
        mem[(it as usize * 13) % 4096] ^= 0x5a; // page 0 changes a little every frame
        rec.capture(it, &mem, &[], Some(&[0]), None).expect("record");
        frames.push(mem.clone());
        if it == 3 {
            rec.pin(3).expect("pin");
        }
        let h = rec.history();
        for r in h.records() {
            let p0 = r.snapshot().page(0);
            assert!(h.store().chain_len(p0).expect("chain") <= 6);
        }
    }
    let stats = rec.history().store_stats();
    assert!(stats.compacted_full + stats.compacted_rebased > 0, "{stats:?}");
    assert!(stats.delta_pages > 0, "{stats:?}");
    let h = rec.history();
    assert_eq!(h.len(), 11);
    for r in h.records() {
        let mut out = vec![0u8; mem.len()];
        rewind::layers::snapshot::read(h.store(), r.snapshot(), 0, &mut out).expect("read");
        assert_eq!(out, frames[r.iteration() as usize], "iteration {}", r.iteration());
    }
    h.check().expect("consistent");
}

/// 100,000 iterations with a 600-frame window: resident bytes stay flat.
#[test]
fn long_run_window_keeps_resident_flat() {
    let mut rec = Recorder::new(
        Options::new(4096)
            .expect("page")
            .seed(8)
            .policy(Policy::default().keep_last(600).abandoned_max_age(0)),
    )
    .expect("recorder");
    let pages = 256; // 1 MiB
                     // Random contents from the start, so compressibility does not drift over the run.
    let mut rng = SplitMix64::seed_from_u64(0x9e37_79b9_7f4a_7c15);
    let mut mem: Vec<u8> = (0..pages * 4096).map(|_| rng.next_u64() as u8).collect();
    let mut at_1k = 0;
    let mut max_after = 0;
    for it in 0..100_000u64 {
        let mut dirty = [0u32; 3];
        for d in &mut dirty {
            let x = rng.next_u64();
            let at = (x as usize) % (mem.len() - 8);
            mem[at..at + 8].copy_from_slice(&x.to_le_bytes());
            *d = (at / 4096) as u32;
        }
        if it % 97 == 0 && it > 700 {
            // a rollback of 7 frames now and then, with re-simulation
            rec.rollback_to(it - 7, &mut mem, LiveMemory::WrittenSinceHead(&dirty))
                .expect("rollback");
            continue;
        }
        rec.capture(it, &mem, &[], Some(&dirty), None).expect("record");
        let resident = rec.history().resident_bytes();
        if it == 1_000 {
            at_1k = resident;
        }
        if it > 1_000 {
            max_after = max_after.max(resident);
        }
    }
    assert_eq!(rec.history().timeline_len(), 600);
    // Flat: after the window fills, resident bytes never exceed 1.5× the figure at 1,000.
    assert!(at_1k > 0);
    assert!(
        max_after * 2 <= at_1k * 3,
        "resident grew from {at_1k} to {max_after}"
    );
    println!(
        "resident bytes, 600-frame window over 1 MiB: at 1,000 iterations {at_1k}, max after {max_after}"
    );
    rec.history().check().expect("consistent");
}

/// Under the README's policy (`keep_last(600)`, nothing else), a game that rolls back 3
/// frames every 4th frame keeps a bounded history: abandoned branches leave with the
/// window. Before the default [`Abandoned::WithWindow`] rule they were kept forever
/// (about 0.75 abandoned records per frame, 16 KB of resident memory per frame).
#[test]
fn rollbacks_under_the_default_policy_keep_history_bounded() {
    use rewind_bench::soak::{self, SoakConfig};
    let config = SoakConfig {
        frames: 6_000,
        ..SoakConfig::default()
    };
    let mut max_records = 0;
    let mut max_abandoned = 0;
    let mut at_3000 = 0;
    let with = soak::run(&config, 500, |s| {
        max_records = max_records.max(s.records);
        max_abandoned = max_abandoned.max(s.abandoned);
        if s.frame == 3_000 {
            at_3000 = s.resident_bytes;
        }
    })
    .expect("soak with rollbacks");
    let without = soak::run(
        &SoakConfig {
            rollback_every: 0,
            ..config
        },
        0,
        |_| {},
    )
    .expect("soak without rollbacks");
    assert_eq!(with.rollbacks, 1_500); // frames 3, 7, …, 5,999
    assert_eq!(without.rollbacks, 0);
    assert_eq!(without.records, 600);
    // The window's 600 records, plus at most the 3 abandoned records of each of the
    // window's 150 rollbacks (and the ones of the rollback in flight).
    let bound = 600 + 3 * (600 / 4 + 1);
    assert!(max_records <= bound, "{max_records} records held, bound {bound}");
    assert!(
        max_abandoned <= 3 * (600 / 4 + 1),
        "{max_abandoned} abandoned records held"
    );
    // Flat once the window is full: the history at frame 6,000 is no larger than at
    // frame 3,000 (give or take 10 %), where keeping every branch grew it by about
    // 16 KB a frame.
    assert!(
        with.resident_bytes * 10 <= at_3000 * 11,
        "history grew from {at_3000} B at frame 3,000 to {} B at frame 6,000",
        with.resident_bytes
    );
    assert!(without.resident_bytes > 0);
}

// Named regressions: the cases proptest shrank to (seeds in
// tests/proptest-regressions/gc_model.txt), kept as plain tests.

fn empty_captures(n: usize) -> impl Iterator<Item = Op> {
    (0..n).map(|_| Op::Capture { writes: vec![] })
}

/// Pins taken across a rollback, then a one-record window and an unpin.
#[test]
fn regression_pins_across_a_rollback_under_a_one_record_window() {
    let mut ops = vec![
        Op::Capture { writes: vec![(0, 1)] },
        Op::Capture { writes: vec![(0, 2)] },
        Op::Rollback { back: 1 },
    ];
    ops.extend(empty_captures(4));
    ops.extend([Op::Pin { pick: 0 }, Op::Pin { pick: 0 }]);
    ops.extend(empty_captures(1));
    ops.push(Op::Pin { pick: 0 });
    ops.extend(empty_captures(6));
    ops.extend([
        Op::Policy {
            keep_last: Some(1),
            keep_from_back: None,
            abandoned: Abandoned::Keep,
            budget: None,
        },
        Op::Unpin { pick: 0 },
    ]);
    ops.extend(empty_captures(1));
    run(ops).expect("model holds");
}

/// A window shrunk to one record, a rollback, then a window measured from the back
/// and a pin.
#[test]
fn regression_window_changes_around_a_rollback() {
    let mut ops: Vec<Op> = empty_captures(7).collect();
    ops.extend([
        Op::Policy {
            keep_last: Some(1),
            keep_from_back: None,
            abandoned: Abandoned::WithWindow,
            budget: None,
        },
        Op::Rollback { back: 1 },
        Op::Capture { writes: vec![] },
        Op::Policy {
            keep_last: None,
            keep_from_back: Some(1),
            abandoned: Abandoned::WithWindow,
            budget: None,
        },
    ]);
    ops.extend(empty_captures(2));
    ops.push(Op::Pin { pick: 63 });
    ops.extend(empty_captures(6));
    run(ops).expect("model holds");
}
