//! Host states and global names: stored in extra segments named by the commit
//! trailers, read back, kept by a collection, checked by `verify`; a damaged extra
//! segment is a clear error of the calls that need it, and everything else reads.

use rewind_archive::format::{self, SegHeader, SegKind, Trailer, TRAILER_LEN};
use rewind_archive::{collect_file, Archive, ArchiveError, ArchiveWriter, Durability};
use rewind_gc::Policy;
use rewind_history::{History, HistoryConfig, RecordId};
use rewind_snapshot::GlobalValue;

use crate::common::*;

const SEED: u64 = 41;

fn names() -> Vec<Option<String>> {
    vec![Some("score".into()), None, Some("$drift".into())]
}

/// A host clock that ticks every third frame: consecutive equal states.
fn clock(frame: u64) -> Vec<u8> {
    format!("clock={}", frame / 3).into_bytes()
}

/// 12 frames with host states, names set before the first record, one commit a frame,
/// a rollback to 8 and two more frames.
fn write(path: &std::path::Path) -> History {
    let mut h = History::new(HistoryConfig::new(1024).expect("cfg").seed(SEED)).expect("history");
    let mut w = ArchiveWriter::create(path, &h, Durability::Manual).expect("create");
    w.set_global_names(names());
    let mut mem = vec![0u8; 4096];
    let globals = |i: u64| {
        [
            GlobalValue::I32(i as i32),
            GlobalValue::I64(0),
            GlobalValue::F32(0),
        ]
    };
    for i in 0..12u64 {
        mem[(i as usize * 97) % 4096] = i as u8 + 1;
        let r = h
            .capture(i, &mem, &globals(i), None, Some(&[i as u8]))
            .expect("capture");
        h.set_host_state(r.record, &clock(i)).expect("record");
        w.append(&h).expect("append");
    }
    h.rollback_to(8, &mut mem, rewind_history::LiveMemory::Unknown)
        .expect("rollback");
    for i in 9..11u64 {
        mem[7] = 200 + i as u8;
        let r = h.capture(i, &mem, &globals(i), None, None).expect("capture");
        h.set_host_state(r.record, b"branch").expect("record");
        w.append(&h).expect("append");
    }
    w.sync().expect("sync");
    h
}

#[test]
fn host_states_and_global_names_read_back_as_written() {
    let dir = tmpdir();
    let path = dir.path().join("x.rwd");
    let h = write(&path);
    let a = Archive::open(&path).expect("open");
    check_same(&h, &a);
    for r in h.records() {
        assert_eq!(
            a.host_state(r.id()).expect("host state"),
            h.host_state(r.id()),
            "{}",
            r.id()
        );
        assert_eq!(a.host_state_hash(r.id()).expect("hash"), r.host_state_hash());
    }
    assert_eq!(a.global_names().expect("names"), names());
    let loaded = a.to_history().expect("load");
    for r in h.records() {
        assert_eq!(loaded.host_state(r.id()), h.host_state(r.id()));
    }
    loaded.check().expect("the loaded blobs are counted");
    a.verify().expect("verify");
    // Equal states share one blob: 4 clock values + "branch", besides 12 inputs.
    let info_inputs: usize = (0..h.next_record_id().0)
        .filter_map(|i| a.host_state_hash(RecordId(i)).ok().flatten())
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(info_inputs, 5);
}

#[test]
fn a_host_state_set_on_the_written_head_reaches_the_file() {
    let dir = tmpdir();
    let path = dir.path().join("x.rwd");
    let mut h = write(&path);
    let head = h.head().expect("head").id();
    let mut w = ArchiveWriter::open(&path, Durability::Manual).expect("reopen");
    assert_eq!(
        w.global_names(),
        names().as_slice(),
        "the writer knows the file's names"
    );
    assert!(!w.append(&h).expect("append").committed, "nothing new");
    h.set_host_state(head, b"set late").expect("head");
    let rep = w.append(&h).expect("append");
    assert!(rep.committed);
    assert_eq!((rep.records, rep.host_states, rep.inputs), (0, 1, 1));
    // Same names again: nothing to write.
    w.set_global_names(names());
    assert!(!w.append(&h).expect("append").committed);
    w.set_global_names(vec![Some("score".into())]);
    assert!(w.append(&h).expect("append").committed);
    drop(w);
    let a = Archive::open(&path).expect("open");
    assert_eq!(a.host_state(head).expect("host"), Some(&b"set late"[..]));
    assert_eq!(a.global_names().expect("names"), vec![Some("score".to_string())]);
    a.verify().expect("verify");
}

#[test]
fn a_collection_keeps_host_states_and_names() {
    let dir = tmpdir();
    let (input, output) = (dir.path().join("in.rwd"), dir.path().join("out.rwd"));
    let h = write(&input);
    let report = collect_file(&input, &Policy::default().keep_last(4), &output).expect("collect");
    assert!(report.after.records < report.before.records);
    let a = Archive::open(&output).expect("open");
    assert_eq!(a.global_names().expect("names"), names());
    let kept = a.records().expect("records");
    assert!(!kept.is_empty());
    for r in kept {
        assert_eq!(a.host_state(r.id).expect("host"), h.host_state(r.id), "{}", r.id);
    }
    a.verify().expect("verify");
    rewind_archive::compact(&input, &Policy::default().keep_last(4)).expect("compact");
    let c = Archive::open(&input).expect("open");
    assert_eq!(c.global_names().expect("names"), names());
    let head = c.head().expect("head");
    assert_eq!(c.host_state(head).expect("host"), Some(&b"branch"[..]));
}

/// The offset of the extra segment of the last commit.
fn last_extra(bytes: &[u8]) -> u64 {
    let t_off = bytes.len() - TRAILER_LEN;
    let t = Trailer::decode(bytes, t_off as u64, SEED).expect("trailer");
    assert_ne!(t.extra, 0, "the last commit sets a host state");
    let h = SegHeader::decode(bytes, t.extra, bytes.len() as u64, SEED).expect("segment");
    assert_eq!(h.kind, SegKind::Extra);
    t.extra
}

/// What still reads when the host states do not.
fn rest_reads(a: &Archive, h: &History) {
    for r in h.timeline() {
        assert_eq!(a.state_hash(r.iteration()).expect("state hash"), r.state_hash());
        assert_eq!(a.globals(r.id()).expect("globals"), r.snapshot().globals());
        let mut got = vec![0u8; r.snapshot().memory_len() as usize];
        a.read_record(r.id(), 0, &mut got).expect("read");
        assert_eq!(got, memory_of(h, r.id()));
    }
}

#[test]
fn a_damaged_extra_segment_is_a_clear_error_and_the_rest_stays_readable() {
    let dir = tmpdir();
    let path = dir.path().join("x.rwd");
    let h = write(&path);
    let good = std::fs::read(&path).expect("read");
    let extra = last_extra(&good);
    let head = h.head().expect("head").id();

    // A flipped byte in its payload: a checksum mismatch at the segment.
    let mut b = good.clone();
    b[extra as usize + format::SEG_HEADER_LEN + 3] ^= 0x40;
    let a = Archive::from_bytes(&b).expect("the last commit still opens");
    let err = a.host_state(head).expect_err("damaged");
    assert!(
        matches!(err, ArchiveError::ChecksumMismatch { offset, .. } if offset == extra),
        "{err}"
    );
    assert!(matches!(
        a.global_names(),
        Err(ArchiveError::ChecksumMismatch { .. })
    ));
    rest_reads(&a, &h);
    assert!(a.verify().is_err());
    assert!(matches!(
        a.to_history(),
        Err(ArchiveError::ChecksumMismatch { .. })
    ));

    // A re-sealed trailer naming an extra segment past its commit's root: refused by
    // the bounds check before any byte there is read.
    let mut b = good.clone();
    let t_off = (b.len() - TRAILER_LEN) as u64;
    let mut t = Trailer::decode(&b, t_off, SEED).expect("trailer");
    t.extra = t.root + 16;
    b[t_off as usize..].copy_from_slice(&t.encode(SEED));
    let a = Archive::from_bytes(&b).expect("opens");
    let err = a.host_state(head).expect_err("out of the commit");
    assert!(matches!(err, ArchiveError::BadSegment { .. }), "{err}");
    rest_reads(&a, &h);
    assert!(a.verify().is_err());

    // A re-sealed trailer naming its data segment instead: the wrong kind.
    let mut b = good.clone();
    t.extra = t.start;
    b[t_off as usize..].copy_from_slice(&t.encode(SEED));
    let a = Archive::from_bytes(&b).expect("opens");
    let err = a.host_state(head).expect_err("not an extra segment");
    assert!(
        matches!(err, ArchiveError::BadSegment { reason, .. } if reason.contains("unexpected kind")),
        "{err}"
    );
    rest_reads(&a, &h);

    // An extra segment cut short: a length field past the commit is truncation.
    let mut b = good.clone();
    let len_at = extra as usize + 8;
    b[len_at..len_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let sum = format::checksum(&b[extra as usize..extra as usize + 24], SEED);
    b[extra as usize + 24..extra as usize + 32].copy_from_slice(&sum.to_le_bytes());
    let a = Archive::from_bytes(&b).expect("opens");
    let err = a.host_state(head).expect_err("truncated");
    assert!(matches!(err, ArchiveError::Truncated { .. }), "{err}");
    rest_reads(&a, &h);
}

#[test]
fn files_without_host_states_or_names_have_no_extra_segment() {
    let (bytes, _, _) = crate::corrupt::sample(6);
    let mut off = bytes.len() as u64 - TRAILER_LEN as u64;
    loop {
        let t = Trailer::decode(&bytes, off, crate::corrupt::SEED).expect("trailer");
        assert_eq!(t.extra, 0);
        assert_eq!(&bytes[off as usize + 48..off as usize + 56], &[0u8; 8]);
        if t.prev == format::NONE {
            break;
        }
        off = t.prev;
    }
    for (o, _, trailer) in crate::corrupt::layout(&bytes) {
        if !trailer {
            let h = SegHeader::decode(&bytes, o, bytes.len() as u64, crate::corrupt::SEED).expect("seg");
            assert_ne!(h.kind, SegKind::Extra);
        }
    }
    let a = Archive::from_bytes(&bytes).expect("open");
    assert_eq!(a.global_names().expect("names"), Vec::<Option<String>>::new());
    assert_eq!(a.host_state(RecordId(3)).expect("none"), None);
}

/// Re-seal the segment at `off` after its payload was edited.
fn reseal(b: &mut [u8], off: usize) {
    let len = u64::from_le_bytes(b[off + 8..off + 16].try_into().expect("8 bytes")) as usize;
    let start = off + format::SEG_HEADER_LEN;
    let sum = format::checksum(&b[start..start + len], SEED);
    b[off + 16..off + 24].copy_from_slice(&sum.to_le_bytes());
    let sum = format::checksum(&b[off..off + 24], SEED);
    b[off + 24..off + 32].copy_from_slice(&sum.to_le_bytes());
}

/// The offset of `needle` inside the payload of the segment at `off`.
fn find_in(b: &[u8], off: usize, needle: &[u8]) -> usize {
    let len = u64::from_le_bytes(b[off + 8..off + 16].try_into().expect("8 bytes")) as usize;
    let start = off + format::SEG_HEADER_LEN;
    start
        + b[start..start + len]
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the bytes are in the payload")
}

#[test]
fn re_sealed_edits_of_extra_segments_fail_verify() {
    let dir = tmpdir();
    let path = dir.path().join("x.rwd");
    let h = write(&path);
    let good = std::fs::read(&path).expect("read");
    let head = h.head().expect("head");
    let hash = head.host_state_hash().expect("the head has a host state");

    // The head's host state names a blob the file does not hold.
    let mut b = good.clone();
    let extra = last_extra(&b) as usize;
    let at = find_in(&b, extra, hash.as_bytes());
    b[at] ^= 1;
    reseal(&mut b, extra);
    let a = Archive::from_bytes(&b).expect("opens");
    let err = a.verify().expect_err("a missing blob");
    assert!(matches!(err, ArchiveError::Inconsistent { .. }), "{err}");
    assert!(a.host_state(head.id()).is_err());
    rest_reads(&a, &h);

    // The names (set by the first record's commit) are not UTF-8.
    let mut b = good.clone();
    let mut off = (b.len() - TRAILER_LEN) as u64;
    let first_named = loop {
        let t = Trailer::decode(&b, off, SEED).expect("trailer");
        if t.prev == format::NONE {
            panic!("no commit set names");
        }
        let prev = Trailer::decode(&b, t.prev, SEED).expect("trailer");
        if prev.extra == 0 {
            break t.extra as usize;
        }
        off = t.prev;
    };
    let at = find_in(&b, first_named, b"drift");
    b[at] = 0xff;
    reseal(&mut b, first_named);
    let a = Archive::from_bytes(&b).expect("opens");
    let err = a.global_names().expect_err("not UTF-8");
    assert!(
        matches!(err, ArchiveError::Inconsistent { reason, .. } if reason.contains("UTF-8")),
        "{err}"
    );
    assert!(a.verify().is_err());
    rest_reads(&a, &h);
}
