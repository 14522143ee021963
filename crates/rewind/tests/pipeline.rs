//! The capture pipeline against the synchronous recorder: the same random operation
//! sequences (captures with exact, loose and no hints, growth, rollbacks and
//! re-simulation, reads, blame, diffs, GC, policy changes, archive syncs, drop with
//! captures in flight) run on both, and every answer, every retained record, the store
//! (`History::check`) and the archive bytes (host states included) must be the same.

use proptest::prelude::*;
use rewind::{Durability, GlobalValue, LiveMemory, Options, PipelineOptions, Policy, Recorder, Snapshot};

const PAGE: usize = 1024;

#[derive(Clone, Debug)]
enum Op {
    /// The guest writes bytes at a page/offset.
    Write { page: usize, off: usize, bytes: Vec<u8> },
    /// The guest grows its memory.
    Grow { pages: usize },
    /// Capture: exact hint, hint with extra pages, or none.
    Capture { hint: Hint, input: bool },
    /// Roll back k records and restore.
    Rollback { back: usize, known_dirty: bool },
    /// Read, blame, diff and state hash of a retained iteration.
    Inspect { pick: usize, addr: usize, len: usize },
    /// A full collection.
    Collect,
    /// Tighten or loosen the window.
    Policy { keep: usize },
    /// Append and sync the archive.
    Sync,
}

#[derive(Clone, Copy, Debug)]
enum Hint {
    Exact,
    Loose,
    None,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..24, 0usize..PAGE, proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(page, off, bytes)| Op::Write { page, off, bytes }),
        1 => (1usize..3).prop_map(|pages| Op::Grow { pages }),
        6 => (prop_oneof![6 => Just(Hint::Exact), 1 => Just(Hint::Loose), 1 => Just(Hint::None)], any::<bool>())
            .prop_map(|(hint, input)| Op::Capture { hint, input }),
        2 => (0usize..9, any::<bool>()).prop_map(|(back, known_dirty)| Op::Rollback { back, known_dirty }),
        2 => (0usize..64, 0usize..1 << 16, 1usize..2000).prop_map(|(pick, addr, len)| Op::Inspect { pick, addr, len }),
        1 => Just(Op::Collect),
        1 => (2usize..12).prop_map(|keep| Op::Policy { keep }),
        1 => Just(Op::Sync),
    ]
}

/// A recorder and the guest memory it follows.
struct Side {
    rec: Recorder,
    memory: Vec<u8>,
    dirty: Vec<u32>,
}

fn globals(memory: &[u8], iteration: u64) -> Vec<GlobalValue> {
    vec![
        GlobalValue::I32(memory.len() as i32),
        GlobalValue::I64(iteration as i64 * 3 + memory[0] as i64),
    ]
}

/// Everything observable about a history: records, timeline, abandoned records, store.
fn fingerprint(rec: &Recorder) -> Vec<String> {
    let h = rec.history();
    let mut out: Vec<String> = h
        .records()
        .map(|r| {
            format!(
                "{} it={} parent={:?} hash={:?} changes={:?} input={:?} host={:?} on={}",
                r.id(),
                r.iteration(),
                r.parent(),
                r.state_hash(),
                r.changes(),
                h.input(r.id()),
                h.host_state(r.id()),
                h.on_timeline(r.id())
            )
        })
        .collect();
    out.push(format!("head={:?}", h.head().map(|r| r.id())));
    out.push(format!("stats={:?}", h.store_stats()));
    out.push(format!("resident={}", h.resident_bytes()));
    out
}

fn answer<T: std::fmt::Debug>(r: Result<T, rewind::Error>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("err {e}"),
    }
}

/// The archive bytes without the header's creation time (bytes 40..48, see
/// `docs/format.md`) and the header checksum over it (56..64): two files written a
/// second apart differ there only.
fn without_creation_time(mut bytes: Vec<u8>) -> Vec<u8> {
    for range in [40..48, 56..64] {
        if let Some(b) = bytes.get_mut(range) {
            b.fill(0);
        }
    }
    bytes
}

fn run(ops: &[Op], budget_pages: usize, drop_in_flight: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = [dir.path().join("sync.rwd"), dir.path().join("pipe.rwd")];
    let mut sides: Vec<Side> = paths
        .iter()
        .enumerate()
        .map(|(k, path)| {
            let mut options = Options::new(PAGE as u64)
                .expect("page size")
                .seed(11)
                .max_chain(3)
                .policy(Policy::default().keep_last(6))
                .archive(path, Durability::Manual);
            if k == 1 {
                options = options.pipeline(PipelineOptions::new().staging_budget(budget_pages * PAGE));
            }
            Side {
                rec: Recorder::new(options).expect("recorder"),
                memory: vec![0u8; 4 * PAGE],
                dirty: Vec::new(),
            }
        })
        .collect();
    let mut next = 0u64;
    for op in ops {
        let mut answers = Vec::new();
        for side in &mut sides {
            let n = side.memory.len() / PAGE;
            let a = match op {
                Op::Write { page, off, bytes } => {
                    let p = page % n;
                    let start = p * PAGE + off;
                    let end = (start + bytes.len()).min((p + 1) * PAGE);
                    side.memory[start..end].copy_from_slice(&bytes[..end - start]);
                    side.dirty.push(p as u32);
                    String::new()
                }
                Op::Grow { pages } => {
                    if side.memory.len() < 24 * PAGE {
                        side.memory.resize(side.memory.len() + pages * PAGE, 0);
                    }
                    String::new()
                }
                Op::Capture { hint, input } => {
                    let mut h = side.dirty.clone();
                    if matches!(hint, Hint::Loose) {
                        h.push(0);
                        h.push((n - 1) as u32);
                    }
                    let hint = (!matches!(hint, Hint::None)).then_some(h.as_slice());
                    let g = globals(&side.memory, next);
                    let input = input.then(|| next.to_le_bytes());
                    // A host state that changes every third iteration (shared blobs).
                    let host = (next / 3).to_le_bytes();
                    let r = side.rec.submit_with_host_state(
                        next,
                        &side.memory,
                        &g,
                        hint,
                        input.as_ref().map(|i| &i[..]),
                        Some(&host),
                    );
                    side.dirty.clear();
                    answer(r)
                }
                Op::Rollback { back, known_dirty } => {
                    let target = {
                        let t: Vec<u64> = side.rec.history().timeline().map(|r| r.iteration()).collect();
                        t.len().checked_sub(back + 1).map(|i| t[i])
                    };
                    match target {
                        None => "none".into(),
                        Some(it) => {
                            let len = side.rec.history().at(it).map(|r| r.snapshot().memory_len());
                            let len = len.expect("target retained") as usize;
                            if len < side.memory.len() {
                                // Memory cannot shrink in place: a fresh guest.
                                side.memory = vec![0u8; len];
                                side.dirty.clear();
                                let r = side.rec.rollback_to(it, &mut side.memory, LiveMemory::Unknown);
                                format!("{:?}", r.map(|r| (r.iteration, r.state_hash, r.globals)).ok())
                            } else {
                                side.memory.resize(len, 0);
                                let live = if *known_dirty {
                                    LiveMemory::WrittenSinceHead(&side.dirty)
                                } else {
                                    LiveMemory::Unknown
                                };
                                let r = side.rec.rollback_to(it, &mut side.memory, live);
                                side.dirty.clear();
                                format!(
                                    "{:?}",
                                    r.map(|r| (r.iteration, r.state_hash, r.globals, r.restored)).ok()
                                )
                            }
                        }
                    }
                }
                Op::Inspect { pick, addr, len } => {
                    let t: Vec<u64> = side.rec.history().timeline().map(|r| r.iteration()).collect();
                    match t.get(pick % t.len().max(1)) {
                        None => "empty".into(),
                        Some(&it) => {
                            let mut buf = vec![0u8; *len];
                            let read = side.rec.read(it, *addr as u64, &mut buf).map(|_| buf);
                            format!(
                                "{} {} {} {} {}",
                                answer(read),
                                answer(side.rec.blame(it, *addr as u64, *len as u64)),
                                answer(side.rec.state_hash(it)),
                                answer(side.rec.diff(it, t[t.len() - 1])),
                                answer(side.rec.diff_bytes(t[0], it)),
                            )
                        }
                    }
                }
                Op::Collect => answer(side.rec.collect()),
                Op::Policy { keep } => {
                    side.rec.set_policy(Policy::default().keep_last(*keep));
                    String::new()
                }
                Op::Sync => answer(side.rec.sync()),
            };
            answers.push(a);
        }
        if matches!(op, Op::Capture { .. }) {
            next += 1;
        }
        prop_assert_eq!(&answers[0], &answers[1], "answers differ at {:?}", op);
        prop_assert_eq!(
            &sides[0].memory,
            &sides[1].memory,
            "memory differs after {:?}",
            op
        );
    }
    if !drop_in_flight {
        for side in &mut sides {
            side.rec.settle().expect("settle");
            side.rec
                .history()
                .check()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(fingerprint(&sides[0].rec), fingerprint(&sides[1].rec));
        prop_assert_eq!(sides[0].rec.pipeline_stats().staged, 0);
    }
    // Dropping finishes the captures in flight: the archives must hold the same bytes.
    drop(sides);
    let a = without_creation_time(std::fs::read(&paths[0]).expect("sync archive"));
    let b = without_creation_time(std::fs::read(&paths[1]).expect("pipelined archive"));
    prop_assert!(a == b, "archives differ ({} vs {} bytes)", a.len(), b.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pipeline_equals_synchronous(ops in proptest::collection::vec(op(), 1..80), budget in 1usize..40) {
        run(&ops, budget, false)?;
    }

    #[test]
    fn drop_with_captures_in_flight_finishes_them(ops in proptest::collection::vec(op(), 1..60), budget in 1usize..40) {
        run(&ops, budget, true)?;
    }
}

/// A capture whose hint names a page past the end fails at once in both modes, and the
/// recorder goes on.
#[test]
fn hint_out_of_range_fails_at_submit() {
    let mut rec = Recorder::new(
        Options::new(PAGE as u64)
            .expect("page size")
            .pipeline(PipelineOptions::new()),
    )
    .expect("recorder");
    let memory = vec![1u8; 4 * PAGE];
    rec.submit(0, &memory, &[], None, None).expect("first");
    let err = rec
        .submit(1, &memory, &[], Some(&[9]), None)
        .expect_err("out of range");
    assert!(err.to_string().contains("page 9"), "{err}");
    rec.submit(1, &memory, &[], Some(&[2]), None).expect("second");
    let err = rec
        .submit(1, &memory, &[], Some(&[2]), None)
        .expect_err("not after head");
    assert!(err.to_string().contains("does not come after"), "{err}");
    assert_eq!(rec.history().head().map(|h| h.iteration()), Some(1));
}

/// With a one-page budget every capture of more pages waits for the worker: the
/// blocked captures are counted, and the history is complete.
#[test]
fn backpressure_blocks_and_counts() {
    let mut rec = Recorder::new(
        Options::new(PAGE as u64)
            .expect("page size")
            .pipeline(PipelineOptions::new().staging_budget(PAGE)),
    )
    .expect("recorder");
    let mut memory = vec![0u8; 16 * PAGE];
    rec.submit(0, &memory, &[], None, None).expect("first");
    for it in 1..50u64 {
        memory[(it as usize % 16) * PAGE] = it as u8;
        memory[((it as usize + 5) % 16) * PAGE] = it as u8;
        let hint = [(it % 16) as u32, ((it + 5) % 16) as u32];
        rec.submit(it, &memory, &[], Some(&hint), None).expect("submit");
    }
    rec.settle().expect("settle");
    let stats = rec.pipeline_stats();
    assert_eq!(stats.staged, 49);
    assert_eq!(stats.worker_frames, 49);
    assert!(stats.max_staged_bytes <= 2 * PAGE as u64, "{stats:?}");
    assert_eq!(rec.history().len(), 50);
    rec.history().check().expect("consistent");
    let _: Option<&Snapshot> = rec.history().head().map(|h| h.snapshot());
}
