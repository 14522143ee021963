//! The bytes after the last complete commit: torn writes are dropped, damage is an
//! error, and finding the last commit costs O(file) checksummed bytes on any file.

use rewind_archive::format::{
    self, SegHeader, SegKind, Trailer, ALIGN, HEADER_LEN, SEG_HEADER_LEN, TRAILER_LEN,
};
use rewind_archive::{repair, repair_with, Archive, ArchiveError, RepairOptions};

use crate::common::*;
use crate::corrupt::{sample, SEED};

/// `bytes` as a file in a fresh directory.
fn file_of(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tmpdir();
    let path = dir.path().join("t.rwd");
    std::fs::write(&path, bytes).expect("write");
    (dir, path)
}

/// A one-commit archive (what `compact` writes), its bytes.
fn one_commit() -> Vec<u8> {
    let (bytes, _, h) = sample(6);
    let dir = tmpdir();
    let path = dir.path().join("c.rwd");
    std::fs::write(&path, &bytes).expect("write");
    let policy = rewind_gc::Policy::default().keep_last(100);
    rewind_archive::compact(&path, &policy).expect("compact");
    let out = std::fs::read(&path).expect("read");
    let a = Archive::from_bytes(&out).expect("open");
    assert_eq!(a.info().expect("info").commits, 1);
    assert_eq!(a.records().expect("records").len(), h.len());
    out
}

#[test]
fn every_bit_flip_in_the_last_trailer_is_damage_and_repair_keeps_the_file() {
    for bytes in [one_commit(), sample(5).0] {
        let t = bytes.len() - TRAILER_LEN;
        for bit in 0..TRAILER_LEN * 8 {
            let mut b = bytes.clone();
            b[t + bit / 8] ^= 1 << (bit % 8);
            let r = Archive::from_bytes(&b);
            assert!(
                matches!(r, Err(ArchiveError::DamagedTail { offset, .. }) if offset == t as u64),
                "bit {bit}: {r:?}"
            );
        }
        // repair refuses without force and leaves every byte; with force it cuts.
        let mut b = bytes.clone();
        b[t + 20] ^= 4;
        let (_d, path) = file_of(&b);
        assert!(matches!(repair(&path), Err(ArchiveError::DamagedTail { .. })));
        assert_eq!(std::fs::read(&path).expect("read"), b);
        let cut = repair_with(&path, RepairOptions { force: true })
            .expect("forced repair")
            .expect("something cut");
        assert!(cut.offset < t as u64);
        let a = Archive::open(&path).expect("open after forced repair");
        assert!(a.torn_tail().is_none());
        a.verify().expect("the rest verifies");
    }
}

#[test]
fn a_flip_in_the_last_root_is_damage_too() {
    let bytes = one_commit();
    let t = bytes.len() - TRAILER_LEN;
    let root = u64::from_le_bytes(bytes[t + 16..t + 24].try_into().expect("8")) as usize;
    for at in [
        root + 3,
        root + 20,
        root + SEG_HEADER_LEN + 5,
        root + SEG_HEADER_LEN + 40,
    ] {
        let mut b = bytes.clone();
        b[at] ^= 0x20;
        assert!(
            matches!(Archive::from_bytes(&b), Err(ArchiveError::DamagedTail { .. })),
            "flip at {at}"
        );
    }
}

#[test]
fn torn_trailers_are_torn_tails_that_repair_cuts() {
    let (bytes, _, _) = sample(5);
    let t = bytes.len() - TRAILER_LEN;
    let prev_end = {
        let a = Archive::from_bytes(&bytes[..t]).expect("open without the last trailer");
        a.torn_tail().expect("torn").offset
    };
    let mut shapes: Vec<Vec<u8>> = Vec::new();
    // Cut anywhere inside the trailer, or before it.
    for cut in [0, 1, 8, 16, 17, 40, 63] {
        shapes.push(bytes[..t + cut].to_vec());
    }
    // Written blocks then zeros, or zeros then written blocks (a split sector write),
    // and zeros after an all-zero trailer (an extended file whose data never landed).
    for k in [0, 16, 32, 48] {
        let mut b = bytes.clone();
        b[t + k..].fill(0);
        shapes.push(b.clone());
        let mut b = bytes.clone();
        b[t..t + k].fill(0);
        if k > 0 {
            shapes.push(b);
        }
    }
    let mut b = bytes[..t].to_vec();
    b.extend_from_slice(&[0u8; 4096]);
    shapes.push(b);
    for (i, b) in shapes.iter().enumerate() {
        let a = Archive::from_bytes(b).unwrap_or_else(|e| panic!("shape {i}: {e}"));
        assert_eq!(a.torn_tail().map(|t| t.offset), Some(prev_end), "shape {i}");
        let (_d, path) = file_of(b);
        assert!(repair(&path).expect("repair").is_some(), "shape {i}");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), prev_end);
    }
    // Garbage after a whole, zeroed trailer is not a torn write.
    let mut b = bytes.clone();
    b[t..].fill(0);
    b.extend_from_slice(&[0u8, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        Archive::from_bytes(&b),
        Err(ArchiveError::DamagedTail { .. })
    ));
}

/// A trailer at `p` with a valid checksum naming a root at `root`.
fn forged_trailer(b: &mut [u8], p: usize, root: u64, seq: u64) {
    let t = Trailer {
        seq,
        root,
        head: 0,
        prev: format::NONE,
        start: HEADER_LEN as u64,
        extra: 0,
    };
    b[p..p + TRAILER_LEN].copy_from_slice(&t.encode(SEED));
}

/// A root segment header at `at` (valid header checksum) whose payload runs to `end`;
/// the payload checksum is wrong, so only checksumming it finds out.
fn forged_root(b: &mut [u8], at: usize, end: usize) {
    let len = (end - at - SEG_HEADER_LEN) as u64;
    let mut h = SegHeader::encode(SegKind::Root, &[], SEED);
    h[8..16].copy_from_slice(&len.to_le_bytes());
    h[16..24].copy_from_slice(&0x5eedu64.to_le_bytes());
    let sum = format::checksum(&h[..24], SEED);
    h[24..32].copy_from_slice(&sum.to_le_bytes());
    b[at..at + SEG_HEADER_LEN].copy_from_slice(&h);
}

/// A valid archive followed by `mib` MiB of forged commits: `forged` trailers with valid
/// checksums, each naming its own root segment that starts near the tail's start and
/// runs up to the trailer (so each claims MiBs), plus the trailer magic at every other
/// 16-aligned offset of a region.
fn crafted(mib: usize, forged: usize) -> (Vec<u8>, usize) {
    let (mut b, _, _) = sample(4);
    let valid = b.len();
    b.resize(valid + (mib << 20), 0);
    let len = b.len();
    // Root headers at the tail's start, trailers at its end, newest (largest) last.
    for i in 0..forged {
        let root = valid + i * SEG_HEADER_LEN;
        let p = len - (forged - i) * TRAILER_LEN;
        forged_root(&mut b, root, p);
        forged_trailer(&mut b, p, root as u64, 0);
    }
    // Magic without a valid checksum all over the middle.
    let mid = valid + (mib << 19);
    for p in (mid..mid + (1 << 18)).step_by(ALIGN as usize * 2) {
        b[p..p + 8].copy_from_slice(&format::TRAILER_MAGIC);
    }
    (b, valid)
}

#[test]
fn finding_the_last_commit_of_a_crafted_file_checksums_o_file_bytes() {
    let (b, valid) = crafted(6, 48);
    let len = b.len() as u64;
    // Strict open: the newest forged trailer is checked, its root fails: damage.
    let before = format::checksummed_bytes();
    let r = Archive::from_bytes(&b);
    let cost = format::checksummed_bytes() - before;
    assert!(matches!(r, Err(ArchiveError::DamagedTail { .. })), "{r:?}");
    assert!(
        cost <= 2 * len,
        "strict open checksummed {cost} bytes of a {len}-byte file"
    );
    // A forced repair scans on past forged commits, within its budget.
    let (_d, path) = file_of(&b);
    let before = format::checksummed_bytes();
    let r = repair_with(&path, RepairOptions { force: true });
    let cost = format::checksummed_bytes() - before;
    assert!(
        cost <= 4 * len + (2 << 20),
        "forced repair checksummed {cost} bytes of a {len}-byte file ({r:?})"
    );
    match r {
        Ok(Some(t)) => assert_eq!(t.offset, valid as u64),
        Err(ArchiveError::ScanLimit { .. }) => {}
        other => panic!("{other:?}"),
    }
    // A few forged commits fit the budget: the forced repair finds the real one.
    let (b, valid) = crafted(2, 2);
    let (_d, path) = file_of(&b);
    let t = repair_with(&path, RepairOptions { force: true })
        .expect("forced repair")
        .expect("cut");
    assert_eq!(t.offset, valid as u64);
    Archive::open(&path).expect("open").verify().expect("verify");
}

#[test]
fn a_torn_tail_of_many_megabytes_opens_in_o_tail_checksummed_bytes() {
    // Magic at every 16-aligned offset of a 4 MiB tail, none with a valid checksum.
    let (mut b, _, _) = sample(4);
    let valid = b.len();
    b.resize(valid + (4 << 20), 0);
    for p in (valid..b.len() - TRAILER_LEN).step_by(ALIGN as usize) {
        b[p..p + 8].copy_from_slice(&format::TRAILER_MAGIC);
    }
    let len = b.len() as u64;
    let before = format::checksummed_bytes();
    let a = Archive::from_bytes(&b).expect("a torn tail opens");
    let cost = format::checksummed_bytes() - before;
    assert_eq!(a.torn_tail().map(|t| t.offset), Some(valid as u64));
    assert!(cost <= 4 * len, "checksummed {cost} bytes of a {len}-byte file");
}
