use proptest::prelude::*;
use rewind_archive::format::{self, SegHeader, Trailer, HEADER_LEN, SEG_HEADER_LEN, TRAILER_LEN};
use rewind_archive::{Archive, ArchiveError, ArchiveWriter, Durability};
use rewind_history::{History, HistoryConfig};
use rewind_snapshot::GlobalValue;

use crate::common::*;

pub const SEED: u64 = 77;

/// An archive of `n` per-iteration commits, its bytes, and the state hash of every
/// iteration.
pub fn sample(n: u64) -> (Vec<u8>, Vec<rewind_snapshot::StateHash>, History) {
    let dir = tmpdir();
    let path = dir.path().join("s.rwd");
    let mut h = History::new(HistoryConfig::new(1024).expect("cfg").seed(SEED)).expect("history");
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual).expect("create");
    let mut mem = vec![0u8; 8 * 1024];
    let mut hashes = Vec::new();
    for i in 0..n {
        let at = (i as usize * 1237) % (mem.len() - 64);
        mem[at..at + 40].fill(i as u8 ^ 0x5a);
        h.capture(
            i,
            &mem,
            &[GlobalValue::I64(i as i64)],
            None,
            Some(&i.to_le_bytes()),
        )
        .expect("capture");
        hashes.push(h.head().expect("head").state_hash());
        w.append(&h).expect("append");
    }
    (std::fs::read(&path).expect("read"), hashes, h)
}

/// (offset, end, is_trailer) of every segment and trailer.
pub fn layout(bytes: &[u8]) -> Vec<(u64, u64, bool)> {
    layout_with(bytes, SEED)
}

/// [`layout`] of an archive with another seed.
pub fn layout_with(bytes: &[u8], seed: u64) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::new();
    let mut off = HEADER_LEN as u64;
    while (off as usize) < bytes.len() {
        if Trailer::has_magic(bytes, off as usize) {
            out.push((off, off + TRAILER_LEN as u64, true));
            off += TRAILER_LEN as u64;
        } else {
            let h = SegHeader::decode(bytes, off, bytes.len() as u64, seed).expect("segment");
            let end = format::align_up(off + SEG_HEADER_LEN as u64 + h.len).expect("aligned");
            out.push((off, end, false));
            off = end;
        }
    }
    out
}

/// The archive must show exactly the commits that end at or before `cut`.
fn check_prefix(bytes: &[u8], cut: usize, hashes: &[rewind_snapshot::StateHash], commit_ends: &[u64]) {
    let r = Archive::from_bytes(&bytes[..cut]);
    if cut < HEADER_LEN {
        assert!(
            matches!(
                r,
                Err(ArchiveError::Truncated { .. }) | Err(ArchiveError::BadMagic { .. })
            ),
            "{r:?}"
        );
        return;
    }
    let a = r.expect("a truncated archive opens at its last complete commit");
    let complete = commit_ends.iter().filter(|e| **e <= cut as u64).count() as u64;
    assert_eq!(a.info().expect("info").commits, complete);
    let last_end = commit_ends
        .iter()
        .copied()
        .filter(|e| *e <= cut as u64)
        .max()
        .unwrap_or(HEADER_LEN as u64);
    assert_eq!(a.committed_end(), last_end);
    assert_eq!(a.committed_bytes(), &bytes[..last_end as usize]);
    match a.torn_tail() {
        None => assert_eq!(last_end, cut as u64),
        Some(t) => assert_eq!((t.offset, t.offset + t.len), (last_end, cut as u64)),
    }
    // Commit 0 is the empty one written by create; commit k holds iterations < k.
    let iterations = complete.saturating_sub(1);
    for i in 0..iterations {
        assert_eq!(a.state_hash(i).expect("committed iteration"), hashes[i as usize]);
    }
    assert!(matches!(
        a.state_hash(iterations),
        Err(ArchiveError::NotOnTimeline { .. })
    ));
    a.verify().expect("the committed part verifies");
}

#[test]
fn truncation_at_every_segment_boundary_and_random_offsets() {
    let (bytes, hashes, _) = sample(40);
    let lay = layout(&bytes);
    let commit_ends: Vec<u64> = lay.iter().filter(|l| l.2).map(|l| l.1).collect();
    assert_eq!(commit_ends.len(), 41);
    for (start, end, _) in &lay {
        check_prefix(&bytes, *start as usize, &hashes, &commit_ends);
        check_prefix(&bytes, *end as usize, &hashes, &commit_ends);
        check_prefix(&bytes, *start as usize + 7, &hashes, &commit_ends);
    }
    let mut rng = 0x1234_5678u64;
    for _ in 0..200 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let cut = (rng >> 33) as usize % (bytes.len() + 1);
        check_prefix(&bytes, cut, &hashes, &commit_ends);
    }
}

#[test]
fn repair_truncates_the_torn_tail_and_appending_continues() {
    let (bytes, hashes, mut h) = sample(10);
    let dir = tmpdir();
    let path = dir.path().join("t.rwd");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).expect("write");
    assert!(matches!(
        ArchiveWriter::open(&path, Durability::EveryAppend),
        Err(ArchiveError::TornTail { .. })
    ));
    let torn = rewind_archive::repair(&path)
        .expect("repair")
        .expect("a torn tail");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), torn.offset);
    assert_eq!(rewind_archive::repair(&path).expect("repair"), None);
    let a = Archive::open(&path).expect("open");
    assert_eq!(a.state_hash(8).expect("8"), hashes[8]);
    let mut h2 = a.to_history().expect("load");
    drop(a);
    // The lost iteration 9 is captured again on the loaded history.
    let head = h2.head().expect("head").id();
    let mut mem = memory_of(&h2, head);
    let want9 = memory_of(&h, h.at(9).expect("9").id());
    mem.copy_from_slice(&want9);
    h2.capture(9, &mem, &[GlobalValue::I64(9)], None, Some(&9u64.to_le_bytes()))
        .expect("capture");
    let mut w = ArchiveWriter::open(&path, Durability::EveryAppend).expect("open writer");
    w.append(&h2).expect("append");
    let a = Archive::open(&path).expect("open");
    assert_eq!(a.state_hash(9).expect("9"), hashes[9]);
    a.verify().expect("verify");
    h.capture(10, &mem, &[GlobalValue::I64(10)], None, None)
        .expect("capture");
}

#[test]
fn wrong_magic_version_and_header_checksum() {
    let (bytes, _, _) = sample(3);
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(matches!(
        Archive::from_bytes(&b),
        Err(ArchiveError::BadMagic { .. })
    ));
    for v in [0u32, 3] {
        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&v.to_le_bytes());
        assert!(matches!(
            Archive::from_bytes(&b),
            Err(ArchiveError::UnsupportedVersion { found }) if found == v
        ));
    }
    let mut b = bytes.clone();
    b[24] ^= 1; // the seed
    assert!(matches!(
        Archive::from_bytes(&b),
        Err(ArchiveError::ChecksumMismatch { offset: 0, .. })
    ));
    assert!(matches!(
        Archive::from_bytes(&[]),
        Err(ArchiveError::Truncated { .. })
    ));
    assert!(matches!(
        Archive::from_bytes(b"not an archive at all"),
        Err(ArchiveError::BadMagic { .. })
    ));
}

#[test]
fn hostile_length_field_is_a_typed_error() {
    let (bytes, _, _) = sample(5);
    let lay = layout(&bytes);
    // The first data segment: give it a length of u64::MAX and a valid header checksum.
    let (off, _, _) = lay
        .iter()
        .copied()
        .find(|l| !l.2 && bytes[l.0 as usize + 4] == 1)
        .expect("data segment");
    let o = off as usize;
    let mut b = bytes.clone();
    b[o + 8..o + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    let sum = format::checksum(&b[o..o + 24], SEED);
    b[o + 24..o + 32].copy_from_slice(&sum.to_le_bytes());
    let a = Archive::from_bytes(&b).expect("open is lazy");
    let r = a.globals(a.at(0).expect("at 0").id);
    assert!(
        matches!(r, Err(ArchiveError::Truncated { offset, .. }) if offset == off),
        "{r:?}"
    );
    assert!(matches!(a.verify(), Err(ArchiveError::Truncated { .. })));
}

#[test]
fn corruption_in_the_middle_names_the_offset_and_earlier_data_stays_readable() {
    let (bytes, hashes, h) = sample(20);
    let lay = layout(&bytes);
    let datas: Vec<u64> = lay
        .iter()
        .filter(|l| !l.2 && bytes[l.0 as usize + 4] == 1)
        .map(|l| l.0)
        .collect();
    // The data segment of iteration 12 (commit 13).
    let off = datas[12];
    let mut b = bytes.clone();
    b[off as usize + SEG_HEADER_LEN + 3] ^= 0x10;
    let a = Archive::from_bytes(&b).expect("open");
    assert!(a.torn_tail().is_none());
    for i in 0..12u64 {
        let id = a.at(i).expect("at").id;
        assert_eq!(a.state_hash(i).expect("hash"), hashes[i as usize]);
        let mut got = vec![0u8; 8 * 1024];
        a.read_record(id, 0, &mut got).expect("earlier iterations read");
        assert_eq!(got, memory_of(&h, id));
    }
    let id12 = a.at(12).expect("index entry is intact").id;
    let r = a.globals(id12);
    assert!(
        matches!(r, Err(ArchiveError::ChecksumMismatch { offset, .. }) if offset == off),
        "{r:?}"
    );
    assert!(matches!(a.verify(), Err(ArchiveError::ChecksumMismatch { offset, .. }) if offset == off));
}

/// Run every reader query; errors are fine, panics are not.
pub fn exercise(a: &Archive) {
    let _ = a.info();
    let _ = a.torn_tail();
    if let Ok(recs) = a.records() {
        for r in recs.iter().take(64) {
            let _ = a.globals(r.id);
            let _ = a.input(r.id);
            if let Ok(pages) = a.pages(r.id) {
                let mut buf = vec![0u8; a.page_size().bytes()];
                for p in pages.iter().take(16) {
                    let _ = a.read_page(*p, &mut buf);
                }
            }
            let _ = a.page_at(r.id, 3);
            let mut out = vec![0u8; 3000.min(r.memory_len as usize)];
            let _ = a.read_record(r.id, 0, &mut out);
        }
    }
    let _ = a.timeline();
    let _ = a.abandoned();
    let _ = a.state_hash(1);
    let _ = a.verify();
    let _ = a.to_history().map(|h| h.check());
}

#[test]
fn random_bit_flips_give_errors_or_recovery_never_panics() {
    let (bytes, _, _) = sample(12);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..300 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let pos = (rng % bytes.len() as u64) as usize;
        let mut b = bytes.clone();
        b[pos] ^= 1 << (rng >> 60 & 7);
        match Archive::from_bytes(&b) {
            Err(e) => assert!(
                pos < HEADER_LEN || matches!(e, ArchiveError::DamagedTail { .. }),
                "only a header flip, or one in the last commit's trailer or root, fails open (flip at {pos}: {e})"
            ),
            Ok(a) => {
                // A flip anywhere else in the committed part is found by verify; none
                // reads as a torn tail (the file was complete).
                assert!(a.torn_tail().is_none(), "flip at {pos} read as a torn tail");
                assert!(a.verify().is_err(), "flip at {pos} went unnoticed");
                exercise(&a);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn mutated_archives_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let (bytes, _, _) = sample(6);
        let mut b = bytes.clone();
        for (i, x) in flips {
            let p = i.index(b.len());
            b[p] = x;
        }
        b.truncate(HEADER_LEN.max(cut.index(b.len() + 1)));
        if let Ok(a) = Archive::from_bytes(&b) {
            exercise(&a);
        }
    }
}
