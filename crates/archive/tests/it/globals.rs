//! Globals stored as the changes against the parent's (format version 2): a guest whose
//! state is mostly globals costs archive bytes in proportion to what changed, and every
//! read, the load and `verify` rebuild the same globals.

use proptest::prelude::*;
use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_history::{History, HistoryConfig, RecordId};
use rewind_snapshot::GlobalValue;

use crate::common::*;

const PAGE: usize = 1024;
/// Globals of the heavy history (an emulator keeps its CPU in a few hundred).
const N: usize = 300;
/// Each global changes once in this many frames, so ~N / PERIOD change per frame.
const PERIOD: u64 = 64;

/// Global `j` at `frame`: a value of one of the four scalar types and the V128 type
/// that moves once every [`PERIOD`] frames, each global at its own phase.
fn global(j: usize, frame: u64) -> GlobalValue {
    let epoch = (frame + j as u64 * 13) / PERIOD + 1;
    let v = epoch * (j as u64 + 1);
    match j % 5 {
        0 => GlobalValue::I32(v as i32),
        1 => GlobalValue::I64(v as i64),
        2 => GlobalValue::F32(v as u32),
        3 => GlobalValue::F64(v),
        _ => GlobalValue::V128(u128::from(v) << 64 | j as u128),
    }
}

fn globals(frame: u64, with: bool) -> Vec<GlobalValue> {
    if with {
        (0..N).map(|j| global(j, frame)).collect()
    } else {
        Vec::new()
    }
}

/// A history of 16 pages with two small page edits per frame, the heavy globals (or
/// none), one record appended per commit, and a rollback of five frames at frame 120;
/// written to `path`.
fn heavy(path: &std::path::Path, with_globals: bool) -> History {
    let cfg = HistoryConfig::new(PAGE as u64).expect("cfg").seed(0x610b);
    let mut h = History::new(cfg).expect("history");
    let mut w = ArchiveWriter::create(path, &h, Durability::Manual).expect("create");
    let mut mem = vec![0u8; 16 * PAGE];
    let mut iteration = 0u64;
    for frame in 0..200u64 {
        if frame == 120 {
            let target = iteration - 5;
            let id = h.at(target).expect("target").id();
            mem = memory_of(&h, id);
            h.set_head(target).expect("rollback");
            iteration = target + 1;
        }
        for k in 0..2u64 {
            let at = ((frame * 2 + k) as usize * 4099) % (mem.len() - 8);
            mem[at..at + 8].copy_from_slice(&(frame * 31 + k).to_le_bytes());
        }
        h.capture(iteration, &mem, &globals(frame, with_globals), None, None)
            .expect("capture");
        w.append(&h).expect("append");
        iteration += 1;
    }
    w.sync().expect("sync");
    h
}

#[test]
fn a_globals_heavy_history_round_trips_and_costs_what_changed() {
    let dir = tmpdir();
    let (with, without) = (dir.path().join("with.rwd"), dir.path().join("without.rwd"));
    let history = heavy(&with, true);
    heavy(&without, false);
    let a = Archive::open(&with).expect("open");
    check_same(&history, &a);
    let report = a.verify().expect("verify");
    assert_eq!(report.records, history.len() as u64);
    let loaded = a.to_history().expect("load");
    assert_eq!(loaded.len(), history.len());
    for r in history.records() {
        let l = loaded.record(r.id()).expect("loaded record");
        assert_eq!(l.state_hash(), r.state_hash());
        assert_eq!(l.snapshot().globals(), r.snapshot().globals());
    }

    // A late joiner's manifest, built from the archive, carries the rebuilt globals.
    let head = history.head().expect("head");
    let manifest = rewind_archive::Manifest::from_archive(&a, head.iteration()).expect("manifest");
    assert_eq!(manifest.globals(), head.snapshot().globals());

    // Each record stores either the whole list or exactly the globals that differ
    // from its parent's.
    let (mut whole, mut changes) = (0u64, 0u64);
    for r in history.records() {
        let d = a.record_detail(r.id()).expect("detail");
        assert_eq!(d.globals as usize, N);
        match d.globals_changed {
            None => whole += 1,
            Some(n) => {
                let p = history.record(r.parent().expect("a parent")).expect("parent");
                let differ = p
                    .snapshot()
                    .globals()
                    .iter()
                    .zip(r.snapshot().globals())
                    .filter(|(x, y)| x != y)
                    .count();
                assert_eq!(n as usize, differ, "changes of {}", r.id());
                changes += u64::from(n);
            }
        }
    }
    let records = history.len() as u64;
    assert!(
        whole < records / 8,
        "{whole} of {records} records store the whole list"
    );

    // What the globals cost in the file: the difference to the same history without
    // globals is the whole lists and the change entries (plus alignment per commit),
    // far below storing every record's whole list.
    let size = |p: &std::path::Path| std::fs::metadata(p).expect("stat").len();
    let extra = size(&with) - size(&without);
    let (whole_bytes, change_bytes) = (17 * N as u64, 20u64);
    let commits = a.info().expect("info").commits;
    let bound = whole * whole_bytes + changes * change_bytes + commits * 32;
    eprintln!(
        "globals: {extra} bytes for {records} records ({whole} whole lists, {changes} changes), bound {bound}"
    );
    assert!(extra <= bound, "globals took {extra} bytes, bound {bound}");
    assert!(
        extra / records < whole_bytes / 4,
        "{} bytes per record for globals against {whole_bytes} for a whole list",
        extra / records
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any pattern of changing globals reads back record by record, loads and
    /// verifies, whether the writer stored them whole or as changes.
    #[test]
    fn any_globals_round_trip(
        types in proptest::collection::vec(0u8..5, 0..24),
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 1..24),
        rollback in any::<prop::sample::Index>(),
    ) {
        let dir = tmpdir();
        let path = dir.path().join("a.rwd");
        let cfg = HistoryConfig::new(PAGE as u64).expect("cfg").seed(7);
        let mut h = History::new(cfg).expect("history");
        let mut w = ArchiveWriter::create(&path, &h, Durability::Manual).expect("create");
        let mut values: Vec<u64> = vec![0; types.len()];
        let mut mem = vec![0u8; 4 * PAGE];
        let back = rollback.index(frames.len());
        let mut iteration = 0u64;
        for (f, changed) in frames.iter().enumerate() {
            if f == back && iteration > 2 {
                h.set_head(iteration - 2).expect("rollback");
                iteration -= 1;
            }
            for &c in changed {
                if let Some(v) = values.get_mut(c as usize % types.len().max(1)) {
                    *v = v.wrapping_mul(6364136223846793005).wrapping_add(c as u64 + 1);
                }
            }
            let globals: Vec<GlobalValue> = types
                .iter()
                .zip(&values)
                .map(|(t, v)| match t {
                    0 => GlobalValue::I32(*v as i32),
                    1 => GlobalValue::I64(*v as i64),
                    2 => GlobalValue::F32(*v as u32),
                    3 => GlobalValue::F64(*v),
                    _ => GlobalValue::V128(u128::from(*v) * 3),
                })
                .collect();
            let at = f % mem.len();
            mem[at] ^= 1;
            h.capture(iteration, &mem, &globals, None, None).expect("capture");
            w.append(&h).expect("append");
            iteration += 1;
        }
        drop(w);
        let a = Archive::open(&path).expect("open");
        for r in h.records() {
            prop_assert_eq!(a.globals(r.id()).expect("globals"), r.snapshot().globals());
        }
        a.verify().expect("verify");
        let loaded = a.to_history().expect("load");
        for r in h.records() {
            let l = loaded.record(RecordId(r.id().0)).expect("loaded");
            prop_assert_eq!(l.state_hash(), r.state_hash());
        }
    }
}
