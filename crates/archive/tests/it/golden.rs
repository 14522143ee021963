//! The golden archives: small `.rwd` files written by the writer, checked in at
//! `crates/archive/tests/data/golden-v*.rwd`, that guard the format against a layout
//! slip or an rkyv feature unification (which would change every archived type's bytes
//! without a compile error).
//!
//! [`write_golden`] builds the same history every time (fixed seed, a deterministic
//! byte generator, no clock) and appends it commit by commit: several records and
//! commits (enough for the index to merge level-0 runs), forward deltas, lz4 and raw
//! pages, a checkpoint, a memory growth, every global type, input blobs (one repeated),
//! a rollback with an abandoned branch, a pinned record, and records a collection
//! removed from memory before they were written. The only field that depends on when
//! the file was written, the header's creation time, is set to [`CREATED_UNIX`].
//!
//! Format version 1 files were written from a history with five globals, all changing
//! every frame ([`Globals::V1`]); the version 2 file from the same history with a
//! dozen more globals that change rarely ([`Globals::V2`]), so that it stores most
//! records' globals as changes against their parent's, and some whole.
//!
//! Tests pin them: today's reader reads every checked-in file exactly as the history it
//! was written from (records, page vectors, memory bytes, globals, inputs, state
//! hashes, blame, diff) and `verify` passes; today's writer reproduces the file of the
//! version it writes byte for byte; appending to a version 1 file keeps it version 1.
//! A deliberate format change adds a file of the new version (and bumps the format
//! version, keeping a reader for the old ones); regenerating the current one:
//!
//! ```text
//! cargo test -p rewind-archive --test it golden::regenerate -- --ignored
//! ```

use std::path::{Path, PathBuf};

use rewind_archive::format::{Header, HEADER_LEN};
use rewind_archive::{Archive, ArchiveWriter, Durability, ObjectKind};
use rewind_gc::{Collector, Policy};
use rewind_history::{History, HistoryConfig};
use rewind_snapshot::GlobalValue;

use crate::common::*;

const PAGE: usize = 1024;
/// The header's creation time in the golden file (2026-11-26 00:00 UTC).
const CREATED_UNIX: u64 = 1_795_651_200;

/// The globals a golden history records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Globals {
    /// Five, every type, all changing every frame (the version 1 files).
    V1,
    /// Those five and twelve more that change every eighth frame or never (the version 2
    /// file).
    V2,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The checked-in golden archive of the version this crate writes.
fn golden_path() -> PathBuf {
    data_dir().join("golden-v2.rwd")
}

/// Every checked-in file, with the globals of the history it holds: the version 1
/// golden archive and one of the same format written when re-simulated captures still
/// aged pages (so other pages were compressed when it was written), both reading back
/// as the same history; and the version 2 golden archive.
fn golden_paths() -> [(PathBuf, Globals); 3] {
    [
        (data_dir().join("golden-v1.rwd"), Globals::V1),
        (data_dir().join("golden-v1-earlier.rwd"), Globals::V1),
        (golden_path(), Globals::V2),
    ]
}

/// xorshift64: the golden file must not depend on any crate's random number generator.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One frame's writes to memory, chosen by the frame number.
fn write_frame(mem: &mut [u8], frame: u64, rng: &mut Bytes) {
    let pages = mem.len() / PAGE;
    // Small edits of a few pages: forward deltas in the file.
    for _ in 0..3 {
        let at = rng.below(pages) * PAGE + rng.below(PAGE - 16);
        let v = rng.next().to_le_bytes();
        if let Some(d) = mem.get_mut(at..at + 8) {
            d.copy_from_slice(&v);
        }
    }
    // Every fourth frame a page of noise (raw: lz4 does not pay).
    if frame % 4 == 1 {
        let p = rng.below(pages);
        for chunk in mem[p * PAGE..(p + 1) * PAGE].chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
    }
    // Every fifth frame a page of a repeating pattern (lz4).
    if frame % 5 == 2 {
        let p = rng.below(pages);
        let pattern = rng.next().to_le_bytes();
        for (i, b) in mem[p * PAGE..(p + 1) * PAGE].iter_mut().enumerate() {
            *b = pattern[(i / 32) % 8];
        }
    }
}

/// Every global type, with values that move with the frame.
fn globals(frame: u64) -> Vec<GlobalValue> {
    vec![
        GlobalValue::I32(-(frame as i32)),
        GlobalValue::I64(frame as i64 * 1_000_003),
        GlobalValue::F32((frame as f32 * 0.5).to_bits()),
        GlobalValue::F64((frame as f64 / 3.0).to_bits()),
        GlobalValue::V128(u128::from(frame) << 64 | 0xfeed),
    ]
}

/// The globals of `frame` in a history of `kind`.
fn globals_of(kind: Globals, frame: u64) -> Vec<GlobalValue> {
    let mut g = globals(frame);
    if kind == Globals::V2 {
        for k in 0..12u64 {
            g.push(match k % 3 {
                0 => GlobalValue::I32((frame / 8 + k) as i32),
                1 => GlobalValue::I64(k as i64 * -7),
                _ => GlobalValue::F64(((k as f64) * 0.25).to_bits()),
            });
        }
    }
    g
}

/// Build the golden history with the globals of `kind` and write it to `path` (which
/// must not exist), with the header's creation time set to [`CREATED_UNIX`]. Returns
/// the history as it was at the last append.
fn write_golden(path: &Path, kind: Globals) -> History {
    let mut history = History::new(
        HistoryConfig::new(PAGE as u64)
            .expect("config")
            .seed(0x60_1d_e2)
            .delta_after(0),
    )
    .expect("history");
    let mut writer = ArchiveWriter::create(path, &history, Durability::Manual).expect("create");
    let mut gc = Collector::new(Policy::default().keep_last(6));
    let mut rng = Bytes(0x0123_4567_89ab_cdef);
    let mut mem = vec![0u8; 16 * PAGE];
    let mut iteration = 0u64;
    for frame in 0..44u64 {
        if frame == 12 {
            // memory.grow by eight pages
            mem.resize(24 * PAGE, 0);
        }
        if frame == 22 {
            // A late input: roll back five iterations and simulate again differently.
            let target = iteration - 5;
            let id = history.at(target).expect("target").id();
            mem = memory_of(&history, id);
            history.set_head(target).expect("rollback");
            iteration = target + 1;
        }
        write_frame(&mut mem, frame, &mut rng);
        // Inputs: one per frame, the same blob every third frame (stored once).
        let input = if frame % 3 == 0 {
            b"idle".to_vec()
        } else {
            format!("frame {frame}").into_bytes()
        };
        history
            .capture(iteration, &mem, &globals_of(kind, frame), None, Some(&input))
            .expect("capture");
        if frame == 3 {
            gc.pin(&history, iteration).expect("pin");
        }
        iteration += 1;
        // Frames 28..=36 are not appended until frame 37: the collection removes
        // some of them from memory before they reach the file.
        if !(28..=36).contains(&frame) {
            writer.append(&history).expect("append");
        }
        gc.collect_some(&mut history).expect("gc");
    }
    writer.append(&history).expect("last append");
    writer.sync().expect("sync");
    drop(writer);
    set_created(path, CREATED_UNIX);
    history
}

/// Rewrite the header of the archive at `path` with another creation time (and its
/// checksum).
fn set_created(path: &Path, created_unix: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    let mut header = Header::decode(&bytes).expect("header");
    header.created_unix = created_unix;
    bytes[..HEADER_LEN].copy_from_slice(&header.encode());
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn golden_file_reads_as_the_history_it_was_written_from() {
    for (path, kind) in golden_paths() {
        golden_file_reads_as(&path, kind);
    }
}

fn golden_file_reads_as(path: &Path, kind: Globals) {
    let dir = tmpdir();
    let history = write_golden(&dir.path().join("fresh.rwd"), kind);
    let golden = Archive::open(path).expect("open the golden file");
    assert_eq!(golden.info().expect("info").created_unix, CREATED_UNIX);
    check_same(&history, &golden);
    let report = golden.verify().expect("verify");
    assert_eq!(report.records, golden.records().expect("records").len() as u64);
    // Every record the file holds (including those the collection removed from memory
    // later), with blame and diff, against the history loaded from it.
    let loaded = golden.to_history().expect("load");
    check_same(&loaded, &golden);
    for r in loaded.records() {
        assert_eq!(golden.record(r.id()).expect("record").state_hash, r.state_hash());
    }

    // What the file covers.
    let info = golden.info().expect("info");
    assert!(info.commits >= 30, "commits: {}", info.commits);
    let objects = golden.objects().expect("objects");
    for kind in [ObjectKind::Raw, ObjectKind::Lz4, ObjectKind::Delta] {
        assert!(objects.iter().any(|o| o.kind == kind), "no {kind:?} object");
    }
    let records = golden.records().expect("records");
    assert!(
        records.len() > history.len(),
        "no record was collected from memory only"
    );
    assert!(
        !golden.abandoned().expect("abandoned").is_empty(),
        "no abandoned branch"
    );
    let details: Vec<_> = records
        .iter()
        .map(|r| golden.record_detail(r.id).expect("detail"))
        .collect();
    assert!(
        details.iter().skip(1).any(|d| d.checkpoint),
        "no checkpoint after the first record"
    );
    let lens: std::collections::BTreeSet<u64> = records.iter().map(|r| r.memory_len).collect();
    assert_eq!(
        lens.into_iter().collect::<Vec<_>>(),
        [16 * PAGE as u64, 24 * PAGE as u64]
    );
    assert!(records.iter().all(|r| r.input.is_some()));
    assert_eq!(
        golden.globals(records[0].id).expect("globals"),
        globals_of(kind, 0)
    );
    // Version 2 stores most records' globals as changes, the checkpoints' whole.
    let changed = details.iter().filter(|d| d.globals_changed.is_some()).count();
    match kind {
        Globals::V1 => assert_eq!(changed, 0, "global changes in a version 1 file"),
        Globals::V2 => {
            assert!(
                changed * 2 > details.len(),
                "{changed} of {} records",
                details.len()
            );
            assert!(details
                .iter()
                .any(|d| d.checkpoint && d.globals_changed.is_none()));
        }
    }
    assert!(details
        .iter()
        .all(|d| d.globals as usize == globals_of(kind, 0).len()));
    // The pinned record (iteration 3) outlived the collection's window.
    assert!(history.record(golden.at(3).expect("pinned").id).is_some());
}

#[test]
fn golden_file_is_reproduced_byte_for_byte() {
    let dir = tmpdir();
    let fresh = dir.path().join("fresh.rwd");
    write_golden(&fresh, Globals::V2);
    let want = std::fs::read(golden_path()).expect("read the golden file");
    let got = std::fs::read(&fresh).expect("read");
    assert_eq!(got.len(), want.len(), "file length");
    if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("the writer's bytes differ from the golden file's from offset {at}");
    }
}

/// Regenerate the golden file (a deliberate format change only; see the module docs).
#[test]
#[ignore = "rewrites the checked-in golden file"]
fn regenerate() {
    let path = golden_path();
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    let dir = tmpdir();
    let fresh = dir.path().join("golden.rwd");
    write_golden(&fresh, Globals::V2);
    std::fs::copy(&fresh, &path).expect("copy");
}

/// A writer appending to a version 1 file keeps writing version 1 records (whole
/// globals, even where changes would be smaller), so the file stays readable by a
/// version 1 reader and never mixes the two.
#[test]
fn appending_to_a_version_1_file_keeps_it_version_1() {
    let dir = tmpdir();
    let path = dir.path().join("v1.rwd");
    std::fs::copy(data_dir().join("golden-v1.rwd"), &path).expect("copy");
    let before = Archive::open(&path)
        .expect("open")
        .records()
        .expect("records")
        .len();
    let mut history = Archive::open(&path).expect("open").to_history().expect("load");
    let mut writer = ArchiveWriter::open(&path, Durability::Manual).expect("writer");
    let head = history.head().expect("a head");
    let (mut mem, mut iteration) = (memory_of(&history, head.id()), head.iteration() + 1);
    for frame in 0..6usize {
        mem[frame * PAGE + 3] ^= 0x5a;
        // The same globals every frame: as changes, an empty list.
        history
            .capture(iteration, &mem, &globals(7), None, None)
            .expect("capture");
        writer.append(&history).expect("append");
        iteration += 1;
    }
    writer.sync().expect("sync");
    drop(writer);
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(Header::decode(&bytes).expect("header").version, 1);
    let a = Archive::open(&path).expect("reopen");
    let records = a.records().expect("records");
    assert_eq!(records.len(), before + 6);
    check_same(&history, &a);
    a.verify().expect("verify");
    for r in &records {
        assert_eq!(a.record_detail(r.id).expect("detail").globals_changed, None);
    }
    drop(a);
    // `compact` writes a new file: version 2, the same history, the constant globals
    // of the appended records stored as (empty) changes.
    rewind_archive::compact(&path, &rewind_gc::Policy::default()).expect("compact");
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(Header::decode(&bytes).expect("header").version, 2);
    let a = Archive::open(&path).expect("reopen");
    a.verify().expect("verify");
    check_same(&history, &a);
    let last = a.record(history.head().expect("head").id()).expect("head record");
    assert_eq!(a.record_detail(last.id).expect("detail").globals_changed, Some(0));
}
