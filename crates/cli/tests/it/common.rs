//! What the CLI tests share: the `rewind` binary, a fixture archive imported from
//! known frames, and the readers of its output (plain text, JSON Lines, one-line
//! errors).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::SplitMix64;

pub(crate) const PAGE: usize = 1024;
pub(crate) const MEM: usize = 16 * PAGE;
pub(crate) const FRAMES: usize = 40;

pub(crate) fn rewind() -> Command {
    Command::cargo_bin("rewind").expect("the rewind binary is built for tests")
}

/// Deterministic frames with known writes: a few small writes per frame at scattered
/// addresses, some pages reverting to earlier contents, one page that never changes.
pub(crate) fn frames() -> Vec<Vec<u8>> {
    let mut rng = SplitMix64::seed_from_u64(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next_u64();
    let mut mem = vec![0u8; MEM];
    let mut out = Vec::new();
    for f in 0..FRAMES {
        for _ in 0..(1 + f % 4) {
            let addr = (next() as usize) % (MEM - 8 - PAGE) + PAGE; // page 0 stays zero
            let len = 1 + (next() as usize) % 8;
            for b in &mut mem[addr..addr + len] {
                *b = next() as u8;
            }
        }
        if f % 10 == 7 {
            // write a value and then restore it: the bytes change and change back
            mem[5 * PAGE + 3] ^= 0xff;
        }
        // a counter at a fixed address, changing every 3rd frame
        if f % 3 == 0 {
            mem[2 * PAGE + 100..2 * PAGE + 104].copy_from_slice(&(f as u32).to_le_bytes());
        }
        out.push(mem.clone());
    }
    out
}

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) frames: Vec<Vec<u8>>,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) archive: PathBuf,
}

pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let frames = frames();
    let mut files = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let p = dir.path().join(format!("frame{i:03}.bin"));
        std::fs::write(&p, f).expect("write frame");
        files.push(p);
    }
    let archive = dir.path().join("h.rwd");
    import_into(&archive, &files).stdout(predicate::str::contains(format!("imported {FRAMES} frames")));
    Fixture {
        dir,
        frames,
        files,
        archive,
    }
}

/// Import `files` into a new archive at `path` with the fixture's page size and seed.
pub(crate) fn import_into(path: &Path, files: &[PathBuf]) -> assert_cmd::assert::Assert {
    rewind()
        .args(["import", "--page-size", "1024", "--seed", "7", "-o"])
        .arg(path)
        .args(files)
        .assert()
        .success()
}

pub(crate) fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run rewind");
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The JSON Lines a command prints: one object per line, each naming its `kind`.
pub(crate) fn lines(cmd: &mut Command) -> Vec<serde_json::Value> {
    stdout(cmd)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is valid JSON");
            assert!(v["kind"].is_string(), "a line without a kind: {l}");
            v
        })
        .collect()
}

/// The lines of kind `kind`.
pub(crate) fn of_kind(lines: &[serde_json::Value], kind: &str) -> Vec<serde_json::Value> {
    lines.iter().filter(|l| l["kind"] == kind).cloned().collect()
}

/// The one JSON object a report command prints.
pub(crate) fn json(cmd: &mut Command) -> serde_json::Value {
    let mut l = lines(cmd);
    assert_eq!(l.len(), 1, "expected one line: {l:?}");
    l.remove(0)
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A command on bad input: non-zero exit, one line on stderr naming `what`, no panic.
pub(crate) fn fails(cmd: &mut Command, what: &str) {
    let out = cmd.output().expect("run rewind");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success: {err}");
    assert_ne!(out.status.code(), Some(101), "panicked: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains("warning:")).collect();
    assert_eq!(lines.len(), 1, "not one line: {err:?}");
    assert!(lines[0].starts_with("rewind: "), "{err}");
    assert!(err.contains(what), "error {err:?} does not name {what:?}");
}

pub(crate) fn digest(p: &Path) -> Vec<u8> {
    std::fs::read(p).expect("read file")
}

/// `rewind verify FILE` succeeds.
pub(crate) fn sound(archive: &Path) {
    rewind().arg("verify").arg(archive).assert().success();
}

/// Re-seal every segment of an archive after its payloads were edited: the checksums
/// then match, so only checks of the fields themselves can catch the edit.
pub(crate) fn reseal(bytes: &mut [u8]) {
    use rewind_archive::format::{align_up, Header, SegHeader, Trailer, SEG_HEADER_LEN, TRAILER_LEN};
    let seed = Header::decode(bytes).expect("a header").seed;
    let mut off = rewind_archive::format::HEADER_LEN;
    while off < bytes.len() {
        if Trailer::has_magic(bytes, off) {
            off += TRAILER_LEN;
            continue;
        }
        // Decoding checks only the segment header's own checksum, not the payload's.
        let h = SegHeader::decode(bytes, off as u64, bytes.len() as u64, seed).expect("a segment");
        let start = off + SEG_HEADER_LEN;
        let end = start + usize::try_from(h.len).expect("segment length");
        let sealed = SegHeader::encode(h.kind, &bytes[start..end], seed);
        bytes[off..start].copy_from_slice(&sealed);
        off = usize::try_from(align_up(end as u64).expect("aligned")).expect("offset");
    }
}

/// An archive with a rollback: frames 0..=9, back to 5, then 6 and 7 again. Records
/// r6..=r9 are an abandoned branch; r5 is a branch point.
pub(crate) fn branched(dir: &Path) -> PathBuf {
    use rewind_archive::{ArchiveWriter, Durability};
    use rewind_history::{History, HistoryConfig};
    let path = dir.join("branched.rwd");
    let mut h = History::new(HistoryConfig::new(1024).expect("page size").seed(3)).expect("history");
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual).expect("create");
    let mut mem = vec![0u8; 4096];
    for i in 0..10u64 {
        mem[i as usize * 7] = 1 + i as u8;
        h.capture(i, &mem, &[], None, None).expect("capture");
    }
    h.set_head(5).expect("rollback");
    for i in 6..8u64 {
        mem[i as usize * 11] = 100 + i as u8;
        h.capture(i, &mem, &[], None, None).expect("capture");
    }
    w.append(&h).expect("append");
    w.sync().expect("sync");
    path
}

/// An archive whose writer named two of its three globals (as a wasm session does:
/// an export name, a `$name` from the name section, and an unnamed one).
pub(crate) fn named_globals(dir: &Path) -> PathBuf {
    use rewind_archive::{ArchiveWriter, Durability};
    use rewind_history::{History, HistoryConfig};
    use rewind_snapshot::GlobalValue;
    let path = dir.join("named.rwd");
    let mut h = History::new(HistoryConfig::new(1024).expect("page size").seed(3)).expect("history");
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual).expect("create");
    w.set_global_names(vec![Some("score".into()), None, Some("$drift".into())]);
    let mem = vec![0u8; 4096];
    for i in 0..4u64 {
        let globals = [
            GlobalValue::I32(i as i32),
            GlobalValue::I64(7),
            GlobalValue::I32(100 + i as i32),
        ];
        h.capture(i, &mem, &globals, None, None).expect("capture");
        w.append(&h).expect("append");
    }
    w.sync().expect("sync");
    path
}
