use proptest::prelude::*;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_gc::{Collector, Policy};
use rewind_history::{History, HistoryConfig};
use rewind_snapshot::GlobalValue;

use crate::common::*;

const PAGE: usize = 1024;

#[derive(Clone, Debug)]
enum Op {
    /// Capture after writing `(page, offset, len, byte)` runs; grow memory by pages.
    Capture {
        writes: Vec<(u8, u16, u8, u8)>,
        grow: u8,
        input: Option<u8>,
    },
    /// Roll back this many timeline records.
    Rollback(u8),
    /// Collect, keeping the last n timeline records and abandoned ones younger than age.
    Gc { keep: u8, age: u8 },
    /// Append to the archive now.
    Append,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (proptest::collection::vec((0u8..16, 0u16..1024, 1u8..80, any::<u8>()), 0..5), prop_oneof![4 => Just(0u8), 1 => 1u8..3], proptest::option::of(0u8..4))
            .prop_map(|(writes, grow, input)| Op::Capture { writes, grow, input }),
        1 => (1u8..6).prop_map(Op::Rollback),
        1 => (1u8..10, 0u8..10).prop_map(|(keep, age)| Op::Gc { keep, age }),
        2 => Just(Op::Append),
    ]
}

/// Run the ops; append after every op when `every`, else only on `Op::Append`.
fn run(ops: &[Op], every: bool, max_chain: u8) -> (History, tempfile::TempDir, std::path::PathBuf) {
    let dir = tmpdir();
    let path = dir.path().join("h.rwd");
    let mut h = History::new(
        HistoryConfig::new(PAGE as u64)
            .expect("cfg")
            .seed(11)
            .max_chain(max_chain),
    )
    .expect("history");
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual).expect("create");
    let mut mem = vec![0u8; 4 * PAGE];
    let mut iteration = 0u64;
    for op in ops {
        match op {
            Op::Capture { writes, grow, input } => {
                mem.resize(mem.len() + *grow as usize * PAGE, 0);
                let pages = mem.len() / PAGE;
                for &(p, off, len, b) in writes {
                    let start = (p as usize % pages) * PAGE + off as usize;
                    let end = (start + len as usize).min(mem.len());
                    mem[start..end].fill(b);
                }
                let blob = input.map(|i| vec![i; 3 + i as usize]);
                h.capture(
                    iteration,
                    &mem,
                    &[GlobalValue::I64(iteration as i64), GlobalValue::F32(7)],
                    None,
                    blob.as_deref(),
                )
                .expect("capture");
                iteration += 1;
            }
            Op::Rollback(k) => {
                let tl: Vec<u64> = h.timeline().map(|r| r.iteration()).collect();
                if tl.len() > *k as usize {
                    let target = tl[tl.len() - 1 - *k as usize];
                    let id = h.at(target).expect("at").id();
                    let target_mem = memory_of(&h, id);
                    h.set_head(target).expect("rollback");
                    mem = target_mem;
                }
            }
            Op::Gc { keep, age } => {
                Collector::new(
                    Policy::default()
                        .keep_last(*keep as usize)
                        .abandoned_max_age(*age as u64),
                )
                .collect(&mut h)
                .expect("gc");
            }
            Op::Append => {
                w.append(&h).expect("append");
            }
        }
        if every {
            w.append(&h).expect("append");
        }
    }
    w.append(&h).expect("final append");
    w.sync().expect("sync");
    (h, dir, path)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_every_op(ops in proptest::collection::vec(op(), 1..40)) {
        let (h, _dir, path) = run(&ops, true, 8);
        let a = Archive::open(&path).expect("open");
        assert!(a.torn_tail().is_none());
        check_same(&h, &a);
        a.verify().expect("verify");
    }

    #[test]
    fn round_trip_batches_and_export(ops in proptest::collection::vec(op(), 1..40), chain in 0u8..4) {
        let (h, dir, path) = run(&ops, false, chain);
        let a = Archive::open(&path).expect("open");
        check_same(&h, &a);
        // Export, check, rewrite, and read the rewrite back.
        let loaded = a.to_history().expect("to_history");
        loaded.check().expect("loaded history is consistent");
        for r in h.records() {
            let l = loaded.record(r.id()).expect("loaded record");
            assert_eq!(l.state_hash(), r.state_hash());
            assert_eq!(memory_of(&loaded, r.id()), memory_of(&h, r.id()));
        }
        let p2 = dir.path().join("copy.rwd");
        let mut w2 = ArchiveWriter::create(&p2, &loaded, Durability::Manual).expect("create copy");
        w2.append(&loaded).expect("append copy");
        let a2 = Archive::open(&p2).expect("open copy");
        check_same(&loaded, &a2);
    }
}

#[test]
fn reopen_and_continue_appending() {
    let dir = tmpdir();
    let path = dir.path().join("c.rwd");
    let mut h = History::new(HistoryConfig::new(1024).expect("cfg").seed(2)).expect("history");
    let mut w = ArchiveWriter::create(&path, &h, Durability::EveryAppend).expect("create");
    let mut mem = vec![0u8; 8 * 1024];
    for i in 0..30u64 {
        let n = mem.len();
        mem[(i as usize * 577) % n] = (i as u8).wrapping_add(1);
        h.capture(i, &mem, &[], None, None).expect("capture");
        w.append(&h).expect("append");
    }
    drop(w);
    let a = Archive::open(&path).expect("open");
    let mut h2 = a.to_history().expect("load");
    drop(a);
    let mut w = ArchiveWriter::open(&path, Durability::EveryAppend).expect("reopen");
    for i in 30..400u64 {
        let n = mem.len();
        mem[(i as usize * 577) % n] = (i as u8).wrapping_add(1);
        h2.capture(i, &mem, &[], None, None).expect("capture");
        h.capture(i, &mem, &[], None, None).expect("capture");
        w.append(&h2).expect("append");
    }
    let a = Archive::open(&path).expect("open");
    check_same(&h, &a);
    a.verify().expect("verify");
}

#[test]
fn compact_frees_what_the_policy_drops() {
    let dir = tmpdir();
    let path = dir.path().join("gc.rwd");
    let mut h = History::new(HistoryConfig::new(1024).expect("cfg").seed(4)).expect("history");
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual).expect("create");
    let mut mem = vec![0u8; 16 * 1024];
    for i in 0..200u64 {
        let at = (i as usize * 1031) % mem.len();
        mem[at..at + 16].fill(i as u8);
        h.capture(i, &mem, &[GlobalValue::I32(i as i32)], None, None)
            .expect("capture");
        w.append(&h).expect("append");
    }
    drop(w);
    let policy = Policy::default().keep_last(20);
    let rep = rewind_archive::compact(&path, &policy).expect("compact");
    assert_eq!(rep.records_before, 200);
    assert_eq!(rep.records_after, 20);
    assert!(rep.bytes_after < rep.bytes_before);
    let a = Archive::open(&path).expect("open");
    assert_eq!(a.records().expect("records").len(), 20);
    Collector::new(policy).collect(&mut h).expect("gc");
    check_same(&h, &a);
    a.verify().expect("verify");
    assert!(matches!(
        a.at(10),
        Err(rewind_archive::ArchiveError::NotOnTimeline { iteration: 10 })
    ));
}

/// A history whose middle records were collected before it was first written (kept
/// records with pins between them) writes each record's counts against its parent in
/// the file, which is further back than the one it was captured against: `verify`
/// derives `pages_changed` from the change lists and must find them equal.
#[test]
fn counts_of_a_collected_history_are_against_the_parents_the_file_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pinned.rwd");
    let mut history = History::new(HistoryConfig::new(PAGE as u64).expect("page").seed(4)).expect("history");
    let mut gc = Collector::new(Policy::default().keep_last(3));
    let mut memory = vec![0u8; 16 * PAGE];
    for it in 0..60u64 {
        memory[(it as usize % 16) * PAGE + it as usize] = it as u8 + 1;
        history
            .capture(it, &memory, &[GlobalValue::I64(it as i64)], None, None)
            .expect("capture");
        if it % 20 == 0 {
            gc.pin(&history, it).expect("pin");
        }
        gc.collect_some(&mut history).expect("gc");
    }
    let kept: Vec<u64> = history.timeline().map(|r| r.iteration()).collect();
    assert_eq!(kept, [0, 20, 40, 57, 58, 59]);
    let mut w = ArchiveWriter::create(&path, &history, Durability::EveryAppend).expect("create");
    w.append(&history).expect("append");
    let archive = Archive::open(&path).expect("open");
    archive.verify().expect("sound");
    // Record 20 changed one page at capture; against record 0, every page changed.
    let r20 = archive
        .record_detail(archive.at(20).expect("kept").id)
        .expect("detail");
    assert_eq!(r20.pages_changed, 16);
    assert_eq!(history.at(20).expect("kept").pages_changed(), 1);
}

/// Enough new objects per append that a tier merge of the object index is spread over
/// several commits: every commit in between verifies, reads back, and a writer reopened
/// in the middle of the merge goes on appending a valid file.
#[test]
fn index_merges_spread_over_commits_leave_a_valid_file_at_every_commit() {
    let dir = tmpdir();
    let path = dir.path().join("spread.rwd");
    let mut h = History::new(HistoryConfig::new(PAGE as u64).expect("cfg").seed(21)).expect("history");
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual).expect("create");
    let mut gc = Collector::new(Policy::default().keep_last(4));
    let pages = 512usize;
    let mut mem = vec![0u8; pages * PAGE];
    let mut rng = rand_xoshiro::SplitMix64::seed_from_u64(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next_u64();
    for frame in 0..84u64 {
        // 120 pages of fresh bytes: 120 new objects, a 960-entry level-1 run every 8
        // appends, and a level-2 merge of 7,680 entries after 64.
        for _ in 0..120 {
            let p = (next() % pages as u64) as usize;
            for chunk in mem[p * PAGE..(p + 1) * PAGE].chunks_mut(8) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
        }
        h.capture(frame, &mem, &[GlobalValue::I64(frame as i64)], None, None)
            .expect("capture");
        w.append(&h).expect("append");
        gc.collect_some(&mut h).expect("gc");
        if frame == 68 {
            drop(w);
            w = ArchiveWriter::open(&path, Durability::Manual).expect("reopen");
        }
        if frame >= 62 && frame % 2 == 0 || frame == 83 {
            let a = Archive::open(&path).expect("open");
            a.verify().expect("verify");
            let head = h.head().expect("head");
            assert_eq!(a.state_hash(frame).expect("state hash"), head.state_hash());
            let mut got = vec![0u8; mem.len()];
            a.read_record(head.id(), 0, &mut got).expect("read");
            assert!(got == mem, "memory of frame {frame}");
        }
    }
    let a = Archive::open(&path).expect("open");
    assert!(a.info().expect("info").objects > 8000);
    assert_eq!(a.to_history().expect("load").len(), 84);
}
