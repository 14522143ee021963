//! Integration tests of the `rewind` binary: every command on a real archive, round
//! trips against the imported frames, and bad input.

mod remote;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::SplitMix64;

const PAGE: usize = 1024;
const MEM: usize = 16 * PAGE;
const FRAMES: usize = 40;

fn rewind() -> Command {
    Command::cargo_bin("rewind").expect("the rewind binary is built for tests")
}

/// Deterministic frames with known writes: a few small writes per frame at scattered
/// addresses, some pages reverting to earlier contents, one page that never changes.
fn frames() -> Vec<Vec<u8>> {
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

struct Fixture {
    dir: tempfile::TempDir,
    frames: Vec<Vec<u8>>,
    files: Vec<PathBuf>,
    archive: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let frames = frames();
    let mut files = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let p = dir.path().join(format!("frame{i:03}.bin"));
        std::fs::write(&p, f).expect("write frame");
        files.push(p);
    }
    let archive = dir.path().join("h.rwd");
    rewind()
        .args(["import", "--page-size", "1024", "--seed", "7", "-o"])
        .arg(&archive)
        .args(&files)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("imported {FRAMES} frames")));
    Fixture {
        dir,
        frames,
        files,
        archive,
    }
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run rewind");
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The JSON Lines a command prints: one object per line, each naming its `kind`.
fn lines(cmd: &mut Command) -> Vec<serde_json::Value> {
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
fn of_kind(lines: &[serde_json::Value], kind: &str) -> Vec<serde_json::Value> {
    lines.iter().filter(|l| l["kind"] == kind).cloned().collect()
}

/// The one JSON object a report command prints.
fn json(cmd: &mut Command) -> serde_json::Value {
    let mut l = lines(cmd);
    assert_eq!(l.len(), 1, "expected one line: {l:?}");
    l.remove(0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A command on bad input: non-zero exit, one line on stderr naming `what`, no panic.
fn fails(cmd: &mut Command, what: &str) {
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

fn digest(p: &Path) -> Vec<u8> {
    std::fs::read(p).expect("read file")
}

#[test]
fn import_then_export_every_iteration_gives_back_the_frames() {
    let fx = fixture();
    for (i, f) in fx.frames.iter().enumerate() {
        let out = fx.dir.path().join(format!("out{i}.bin"));
        rewind()
            .args(["export"])
            .arg(&fx.archive)
            .arg(i.to_string())
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        assert!(digest(&out) == *f, "iteration {i} differs from its frame");
        let g: serde_json::Value =
            serde_json::from_slice(&digest(&out.with_extension("globals.json"))).expect("globals JSON");
        assert_eq!(g, serde_json::json!([]));
    }
}

#[test]
fn import_of_one_packed_file_equals_import_of_many() {
    let fx = fixture();
    let packed = fx.dir.path().join("all.bin");
    std::fs::write(&packed, fx.frames.concat()).expect("write");
    let a2 = fx.dir.path().join("packed.rwd");
    rewind()
        .args(["import", "--page-size", "1k", "--seed", "7", "--frame-size"])
        .arg(MEM.to_string())
        .arg(&packed)
        .arg("-o")
        .arg(&a2)
        .assert()
        .success();
    let l1 = lines(rewind().arg("log").arg(&fx.archive).arg("--json"));
    let l2 = lines(rewind().arg("log").arg(&a2).arg("--json"));
    let hashes = |v: &Vec<serde_json::Value>| -> Vec<String> {
        v.iter()
            .map(|e| e["state_hash"].as_str().expect("hash").to_string())
            .collect()
    };
    assert_eq!(hashes(&l1), hashes(&l2));
    assert_eq!(hashes(&l1).len(), FRAMES);
}

#[test]
fn cat_agrees_with_the_frames() {
    let fx = fixture();
    for (i, addr, len) in [
        (0usize, 1024u64, 64u64),
        (13, 2 * 1024 + 100, 4),
        (39, 1000, 100),
        (25, 0, 16),
    ] {
        let raw = rewind()
            .args(["cat", "--raw", "--addr"])
            .arg(format!("{addr:#x}"))
            .arg("--len")
            .arg(len.to_string())
            .arg(&fx.archive)
            .arg(i.to_string())
            .output()
            .expect("run");
        assert!(raw.status.success());
        let want = &fx.frames[i][addr as usize..(addr + len) as usize];
        assert_eq!(raw.stdout, want, "cat {i} {addr:#x}+{len}");
        let j = json(rewind().arg("cat").arg(&fx.archive).arg(i.to_string()).args([
            "--json",
            "--addr",
            &addr.to_string(),
            "--len",
            &len.to_string(),
        ]));
        assert_eq!(j["hex"], hex(want));
    }
    let text = stdout(
        rewind()
            .arg("cat")
            .arg(&fx.archive)
            .args(["3", "--addr", "0x800", "--len", "20"]),
    );
    assert!(text.starts_with("00000800 "), "{text}");
    assert_eq!(text.lines().count(), 2);
}

/// Brute force: the latest j ≤ i where the range differs from frame j-1.
fn brute_blame(frames: &[Vec<u8>], i: usize, addr: usize, len: usize) -> Vec<(usize, bool)> {
    let r = addr..addr + len;
    let mut out = Vec::new();
    let mut j = i;
    loop {
        if j == 0 {
            if frames[0][r.clone()].iter().any(|b| *b != 0) {
                out.push((0, true));
            }
            return out;
        }
        if frames[j][r.clone()] != frames[j - 1][r.clone()] {
            out.push((j, false));
        }
        j -= 1;
    }
}

#[test]
fn blame_agrees_with_a_brute_force_scan() {
    let fx = fixture();
    let cases = [
        (39usize, 2 * 1024 + 100, 4usize),
        (20, 2 * 1024 + 101, 1),
        (39, 5 * 1024 + 3, 1),
        (30, 0, 8),
        (39, 1024, 2048),
        (10, 4000, 200),
    ];
    for (i, addr, len) in cases {
        let want = brute_blame(&fx.frames, i, addr, len);
        let j = lines(rewind().arg("blame").arg(&fx.archive).arg(i.to_string()).args([
            "--history",
            "--json",
            "--addr",
            &addr.to_string(),
            "--len",
            &len.to_string(),
        ]));
        // The value at ITER first, in the schema `cat` prints.
        assert_eq!(j[0]["kind"], "bytes");
        assert_eq!(j[0]["hex"], hex(&fx.frames[i][addr..addr + len]));
        let changes = of_kind(&j, "change");
        assert_eq!(changes.len(), j.len() - 1);
        let got: Vec<(usize, bool)> = changes
            .iter()
            .map(|c| {
                (
                    c["iteration"].as_u64().expect("iteration") as usize,
                    c["at_oldest"].as_bool().expect("bool"),
                )
            })
            .collect();
        assert_eq!(got, want, "blame {i} {addr}+{len}");
        for c in &changes {
            let it = c["iteration"].as_u64().expect("it") as usize;
            assert_eq!(c["after"], hex(&fx.frames[it][addr..addr + len]));
            if it > 0 {
                assert_eq!(c["before"], hex(&fx.frames[it - 1][addr..addr + len]));
            } else {
                assert!(c["before"].is_null(), "{c}");
            }
        }
        // Without --history: only the latest.
        let j1 = lines(rewind().arg("blame").arg(&fx.archive).arg(i.to_string()).args([
            "--json",
            "--addr",
            &addr.to_string(),
            "--len",
            &len.to_string(),
        ]));
        assert_eq!(of_kind(&j1, "change").len(), want.len().min(1));
    }
    let text = stdout(
        rewind()
            .arg("blame")
            .arg(&fx.archive)
            .args(["39", "--addr", "0x864", "--len", "4"]),
    );
    assert!(text.contains("changed at iteration 39"), "{text}");
}

#[test]
fn log_show_diff_stats_verify_heatmap_work_and_json_parses() {
    let fx = fixture();
    let log = lines(rewind().arg("log").arg(&fx.archive).arg("--json"));
    assert_eq!(log.len(), FRAMES);
    assert_eq!(log[0]["iteration"], 0);
    assert!(stdout(rewind().arg("log").arg(&fx.archive).arg("--all")).contains("state hash"));

    let show = lines(rewind().arg("show").arg(&fx.archive).args(["12", "--json"]));
    // The record line is the record `log` prints, field for field.
    assert_eq!(show[0], log[12]);
    assert_eq!(show[0]["memory_len"], MEM as u64);
    let changed: Vec<u64> = of_kind(&show, "page")
        .iter()
        .map(|v| v["page"].as_u64().expect("u64"))
        .collect();
    let want: Vec<u64> = (0..MEM / PAGE)
        .filter(|p| fx.frames[12][p * PAGE..(p + 1) * PAGE] != fx.frames[11][p * PAGE..(p + 1) * PAGE])
        .map(|p| p as u64)
        .collect();
    assert_eq!(changed, want);
    assert!(stdout(rewind().arg("show").arg(&fx.archive).arg("12")).contains("globals        none"));

    let d = lines(rewind().arg("diff").arg(&fx.archive).args(["3", "30", "--json"]));
    // Both sides are records as `log` prints them.
    assert_eq!((&d[0]["a"], &d[0]["b"]), (&log[3], &log[30]));
    let entries = of_kind(&d, "diff_entry");
    assert_eq!(
        entries.len() as u64,
        d[0]["pages_differing"].as_u64().expect("count")
    );
    let d = &d[0];
    let differing = fx.frames[3]
        .iter()
        .zip(&fx.frames[30])
        .filter(|(a, b)| a != b)
        .count() as u64;
    assert_eq!(d["bytes_differing"], differing);
    let text = stdout(rewind().arg("diff").arg(&fx.archive).args(["3", "30"]));
    assert!(text.contains("   -0000") && text.contains("   +0000"), "{text}");
    let stat = stdout(rewind().arg("diff").arg(&fx.archive).args(["3", "30", "--stat"]));
    assert!(stat.contains(&format!("{differing} bytes")), "{stat}");
    assert!(!stat.contains("   -0000"));

    let s = json(rewind().arg("stats").arg(&fx.archive).arg("--json"));
    assert_eq!(s["records"], FRAMES as u64);
    assert!(s["objects"].as_u64().expect("objects") > 0);
    assert!(stdout(rewind().arg("stats").arg(&fx.archive)).contains("compression"));

    rewind()
        .arg("verify")
        .arg(&fx.archive)
        .assert()
        .success()
        .stdout(predicate::str::contains("sound"));
    let v = json(rewind().arg("verify").arg(&fx.archive).arg("--json"));
    assert_eq!(v["sound"], true);

    let png = fx.dir.path().join("heat.png");
    rewind()
        .arg("heatmap")
        .arg(&fx.archive)
        .arg("-o")
        .arg(&png)
        .assert()
        .success();
    let bytes = digest(&png);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().expect("a PNG that decodes");
    assert!(reader.info().width >= 600 && reader.info().height >= 400);
}

#[test]
fn gc_rewrites_under_a_policy_and_reports() {
    let fx = fixture();
    let before = digest(&fx.archive);
    let out = fx.dir.path().join("small.rwd");
    let j = json(
        rewind()
            .arg("gc")
            .arg(&fx.archive)
            .args(["--keep-last", "10", "--pin", "5", "--json", "-o"])
            .arg(&out),
    );
    assert_eq!(j["records_before"], FRAMES as u64);
    assert_eq!(j["records_after"], 11);
    assert_eq!(
        digest(&fx.archive),
        before,
        "gc -o must leave the input untouched"
    );
    let log = lines(rewind().arg("log").arg(&out).arg("--json"));
    let its: Vec<u64> = log.iter().map(|e| e["iteration"].as_u64().expect("it")).collect();
    assert_eq!(its.first(), Some(&5));
    assert_eq!(its.len(), 11);
    // Pinned iteration 5 still exports to its frame; so does the head.
    for (i, f) in [(5usize, &fx.frames[5]), (39, &fx.frames[39])] {
        let m = fx.dir.path().join(format!("gc{i}.bin"));
        rewind()
            .arg("export")
            .arg(&out)
            .arg(i.to_string())
            .arg("-o")
            .arg(&m)
            .assert()
            .success();
        assert!(digest(&m) == *f);
    }
    // Dry run writes nothing; in place rewrites.
    rewind()
        .arg("gc")
        .arg(&fx.archive)
        .args(["--keep-last", "3", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "dry run (nothing written): 40 → 3 records",
        ));
    assert_eq!(digest(&fx.archive), before);
    rewind()
        .arg("gc")
        .arg(&fx.archive)
        .args(["--keep-last", "3"])
        .assert()
        .success();
    rewind().arg("verify").arg(&fx.archive).assert().success();
    fails(rewind().arg("gc").arg(&fx.archive), "retention rule");
}

#[test]
fn progress_bars_are_absent_when_piped() {
    let fx = fixture();
    let png = fx.dir.path().join("h.png");
    for args in [
        vec!["verify".to_string()],
        vec!["stats".to_string()],
        vec!["heatmap".to_string(), "-o".to_string(), png.display().to_string()],
    ] {
        let out = rewind()
            .arg(args[0].clone())
            .arg(&fx.archive)
            .args(&args[1..])
            .output()
            .expect("run");
        assert!(out.status.success());
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = rewind()
        .args(["import", "--page-size", "1024", "-o"])
        .arg(fx.dir.path().join("again.rwd"))
        .args(&fx.files[..5])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(out.stderr.is_empty());
}

#[test]
fn bad_input_gives_one_line_errors_and_leaves_inputs_alone() {
    let fx = fixture();
    let d = fx.dir.path();
    let archive_bytes = digest(&fx.archive);
    // A missing file.
    fails(rewind().arg("log").arg(d.join("missing.rwd")), "No such file");
    // A non-archive.
    fails(
        rewind().arg("show").arg(&fx.files[0]).arg("0"),
        "not a rewind archive",
    );
    // An iteration past the last one was never recorded: it is not "not retained".
    fails(
        rewind().arg("show").arg(&fx.archive).arg("400"),
        "iteration 400 was never recorded: it is past the last iteration",
    );
    fails(
        rewind().arg("cat").arg(&fx.archive).args(["400", "--addr", "0"]),
        "never recorded",
    );
    fails(
        rewind().arg("diff").arg(&fx.archive).args(["1", "400"]),
        "never recorded",
    );
    // An address past the memory size.
    fails(
        rewind()
            .arg("cat")
            .arg(&fx.archive)
            .args(["3", "--addr", "0x4000", "--len", "1"]),
        "past the end of memory",
    );
    fails(
        rewind()
            .arg("blame")
            .arg(&fx.archive)
            .args(["3", "--addr", "0x3fff", "--len", "2"]),
        "past the end of memory",
    );
    // A bad number: usage error, exit 2.
    rewind()
        .arg("cat")
        .arg(&fx.archive)
        .args(["3", "--addr", "zz"])
        .assert()
        .code(2);
    // Frames of unequal size.
    let short = d.join("short.bin");
    std::fs::write(&short, vec![1u8; PAGE]).expect("write");
    let out = d.join("bad.rwd");
    fails(
        rewind()
            .args(["import", "--page-size", "1024", "-o"])
            .arg(&out)
            .arg(&fx.files[0])
            .arg(&short),
        "frames of unequal size",
    );
    fails(
        rewind()
            .args(["import", "--page-size", "1024", "--frame-size", "3000", "-o"])
            .arg(&out)
            .arg(&short),
        "unequal size",
    );
    assert!(!out.exists(), "a failed import leaves no output");
    // A page size that is not a power of two.
    fails(
        rewind()
            .args(["import", "--page-size", "3000", "-o"])
            .arg(&out)
            .arg(&fx.files[0]),
        "page size 3000 is not a power of two",
    );
    // -o never overwrites an input, even with --force.
    let frame0 = digest(&fx.files[0]);
    fails(
        rewind()
            .args(["import", "--force", "--page-size", "1024", "-o"])
            .arg(&fx.files[0])
            .arg(&fx.files[0]),
        "it is an input",
    );
    assert_eq!(digest(&fx.files[0]), frame0);
    fails(
        rewind()
            .arg("export")
            .arg(&fx.archive)
            .args(["3", "--force", "-o"])
            .arg(&fx.archive),
        "it is an input",
    );
    fails(
        rewind()
            .arg("heatmap")
            .arg(&fx.archive)
            .args(["--force", "-o"])
            .arg(&fx.archive),
        "it is an input",
    );
    fails(
        rewind()
            .arg("gc")
            .arg(&fx.archive)
            .args(["--keep-last", "2", "--force", "-o"])
            .arg(&fx.archive),
        "it is an input",
    );
    // An existing output is not replaced without --force.
    fails(
        rewind()
            .arg("export")
            .arg(&fx.archive)
            .arg("3")
            .arg("-o")
            .arg(&fx.files[1]),
        "already exists",
    );
    assert_eq!(digest(&fx.archive), archive_bytes);

    // A corrupt archive: flip a byte in the middle (a data segment).
    let bad = d.join("corrupt.rwd");
    let mut bytes = archive_bytes.clone();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x55;
    std::fs::write(&bad, &bytes).expect("write");
    fails(rewind().arg("verify").arg(&bad), "not sound");
    let v = rewind()
        .arg("verify")
        .arg(&bad)
        .arg("--json")
        .output()
        .expect("run");
    assert_eq!(v.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).expect("JSON");
    assert_eq!(v["kind"], "verify");
    assert_eq!(v["sound"], false);
    assert!(v["problem"].as_str().expect("problem").contains("offset"), "{v}");
    // Exporting every iteration: those that touch the damage fail with one line.
    let mut failed = 0;
    for i in 0..FRAMES {
        let o = d.join(format!("c{i}.bin"));
        let r = rewind()
            .arg("export")
            .arg(&bad)
            .arg(i.to_string())
            .arg("-o")
            .arg(&o)
            .output()
            .expect("run");
        if !r.status.success() {
            failed += 1;
            let e = String::from_utf8_lossy(&r.stderr);
            assert_eq!(e.lines().count(), 1, "{e}");
            assert_ne!(r.status.code(), Some(101));
        } else {
            assert!(
                digest(&o) == fx.frames[i],
                "a damaged archive exported wrong bytes for {i}"
            );
        }
    }
    assert!(failed > 0, "the damage went unnoticed");
    assert_eq!(digest(&bad), bytes, "nothing writes over the input");

    // A torn tail: a truncated archive still opens (warning) and verify says so.
    let torn = d.join("torn.rwd");
    std::fs::write(&torn, &archive_bytes[..archive_bytes.len() - 10]).expect("write");
    let r = rewind().arg("log").arg(&torn).output().expect("run");
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("torn tail"));
    fails(rewind().arg("verify").arg(&torn), "torn tail");
    // An empty file and a short garbage file.
    let empty = d.join("empty.rwd");
    std::fs::write(&empty, b"").expect("write");
    fails(rewind().arg("stats").arg(&empty), "cannot open");
}

#[test]
fn help_is_complete() {
    for cmd in [
        "log", "show", "diff", "cat", "blame", "export", "import", "heatmap", "verify", "gc", "stats",
    ] {
        rewind()
            .args([cmd, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage: rewind"));
    }
    rewind().assert().code(2);
}

// ---- outputs: never over an input, through links, into devices ------------------------

/// `rewind verify FILE` succeeds.
fn sound(archive: &Path) {
    rewind().arg("verify").arg(archive).assert().success();
}

#[test]
fn export_refuses_globals_and_memory_in_the_same_file() {
    let fx = fixture();
    let d = fx.dir.path();
    let x = d.join("x.bin");
    // A new file named twice, also through a path that differs in spelling.
    let spelled = d.join(".").join("x.bin");
    for g in [&x, &spelled] {
        fails(
            rewind()
                .arg("export")
                .arg(&fx.archive)
                .args(["3", "--globals"])
                .arg(g)
                .arg("-o")
                .arg(&x),
            "would be the same file",
        );
        assert!(!x.exists(), "a refused export wrote {}", x.display());
    }
    // An existing file, replaced with --force, named through a symbolic and a hard link.
    std::fs::write(&x, b"keep me").expect("write");
    let soft = d.join("soft.bin");
    std::os::unix::fs::symlink(&x, &soft).expect("symlink");
    let hard = d.join("hard.bin");
    std::fs::hard_link(&x, &hard).expect("hard link");
    for g in [&x, &soft, &hard] {
        fails(
            rewind()
                .arg("export")
                .arg(&fx.archive)
                .args(["3", "--force", "--globals"])
                .arg(g)
                .arg("-o")
                .arg(&x),
            "would be the same file",
        );
        assert_eq!(digest(&x), b"keep me");
    }
    sound(&fx.archive);
}

#[test]
fn outputs_that_are_inputs_through_links_are_refused() {
    let fx = fixture();
    let d = fx.dir.path();
    let before = digest(&fx.archive);
    let soft = d.join("soft.rwd");
    std::os::unix::fs::symlink(&fx.archive, &soft).expect("symlink");
    let hard = d.join("hard.rwd");
    std::fs::hard_link(&fx.archive, &hard).expect("hard link");
    for o in [&soft, &hard] {
        fails(
            rewind()
                .arg("export")
                .arg(&fx.archive)
                .args(["3", "--force", "-o"])
                .arg(o),
            "it is an input",
        );
        fails(
            rewind()
                .arg("export")
                .arg(&fx.archive)
                .args(["3", "--force", "-o"])
                .arg(d.join("m.bin"))
                .arg("--globals")
                .arg(o),
            "it is an input",
        );
        fails(
            rewind()
                .arg("heatmap")
                .arg(&fx.archive)
                .args(["--force", "-o"])
                .arg(o),
            "it is an input",
        );
        fails(
            rewind()
                .arg("gc")
                .arg(&fx.archive)
                .args(["--keep-last", "2", "--force", "-o"])
                .arg(o),
            "it is an input",
        );
    }
    let frame_link = d.join("frame-link.bin");
    std::os::unix::fs::symlink(&fx.files[0], &frame_link).expect("symlink");
    fails(
        rewind()
            .args(["import", "--force", "--page-size", "1024", "-o"])
            .arg(&frame_link)
            .arg(&fx.files[0]),
        "it is an input",
    );
    assert_eq!(digest(&fx.archive), before);
    sound(&fx.archive);
}

#[test]
fn writing_through_a_symlink_keeps_the_link_the_mode_and_replaces_the_target() {
    use std::os::unix::fs::PermissionsExt;
    let fx = fixture();
    let d = fx.dir.path();
    // export -o LINK --force
    let real = d.join("real.bin");
    std::fs::write(&real, b"old").expect("write");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let link = d.join("link.bin");
    std::os::unix::fs::symlink("real.bin", &link).expect("symlink");
    rewind()
        .arg("export")
        .arg(&fx.archive)
        .args(["7", "--force", "-o"])
        .arg(&link)
        .arg("--globals")
        .arg(d.join("g.json"))
        .assert()
        .success();
    assert!(std::fs::symlink_metadata(&link)
        .expect("stat")
        .file_type()
        .is_symlink());
    assert!(digest(&real) == fx.frames[7]);
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode(&real), 0o640);

    // gc in place on an archive reached through a symlink, with its own mode.
    let copy = d.join("copy.rwd");
    std::fs::copy(&fx.archive, &copy).expect("copy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o604)).expect("chmod");
    let alink = d.join("alink.rwd");
    std::os::unix::fs::symlink("copy.rwd", &alink).expect("symlink");
    rewind()
        .arg("gc")
        .arg(&alink)
        .args(["--keep-last", "5"])
        .assert()
        .success();
    assert!(std::fs::symlink_metadata(&alink)
        .expect("stat")
        .file_type()
        .is_symlink());
    assert_eq!(mode(&copy), 0o604);
    assert_eq!(lines(rewind().arg("log").arg(&copy).arg("--json")).len(), 5);
    sound(&copy);
    sound(&fx.archive);
}

#[test]
fn dev_full_is_an_error_and_stays_a_device_dev_null_is_written_through() {
    use std::os::unix::fs::FileTypeExt;
    let fx = fixture();
    let d = fx.dir.path();
    let full = Path::new("/dev/full");
    if full.exists() {
        for cmd in [
            vec!["export".to_string(), "3".to_string()],
            vec!["heatmap".to_string()],
            vec!["gc".to_string(), "--keep-last".to_string(), "3".to_string()],
        ] {
            fails(
                rewind()
                    .arg(&cmd[0])
                    .arg(&fx.archive)
                    .args(&cmd[1..])
                    .args(["--force", "-o", "/dev/full", "--no-progress"])
                    .args(if cmd[0] == "export" {
                        vec!["--globals".to_string(), d.join("g.json").display().to_string()]
                    } else {
                        vec![]
                    }),
                "No space left on device",
            );
            assert!(std::fs::metadata(full)
                .expect("stat")
                .file_type()
                .is_char_device());
        }
        fails(
            rewind()
                .args(["import", "--force", "--page-size", "1024", "-o", "/dev/full"])
                .args(&fx.files[..3]),
            "No space left on device",
        );
        assert!(std::fs::metadata(full)
            .expect("stat")
            .file_type()
            .is_char_device());
    }
    let null = Path::new("/dev/null");
    rewind()
        .arg("export")
        .arg(&fx.archive)
        .args(["3", "--force", "-o", "/dev/null", "--globals"])
        .arg(d.join("g.json"))
        .assert()
        .success();
    rewind()
        .args(["import", "--force", "--page-size", "1024", "-o", "/dev/null"])
        .args(&fx.files[..3])
        .assert()
        .success();
    assert!(std::fs::metadata(null)
        .expect("stat")
        .file_type()
        .is_char_device());
    sound(&fx.archive);
}

#[test]
fn import_refuses_iterations_past_u64_max() {
    let fx = fixture();
    let out = fx.dir.path().join("wrap.rwd");
    fails(
        rewind()
            .args([
                "import",
                "--page-size",
                "1024",
                "--first-iteration",
                "18446744073709551615",
                "-o",
            ])
            .arg(&out)
            .args(&fx.files[..2]),
        "runs past the largest iteration number",
    );
    assert!(!out.exists());
    // One frame at the largest iteration fits.
    rewind()
        .args([
            "import",
            "--page-size",
            "1024",
            "--first-iteration",
            "18446744073709551615",
            "-o",
        ])
        .arg(&out)
        .arg(&fx.files[0])
        .assert()
        .success();
    let log = lines(rewind().arg("log").arg(&out).arg("--json"));
    assert_eq!(log[0]["iteration"], u64::MAX);
    sound(&out);
}

#[test]
fn temporary_files_of_a_killed_import_are_removed_by_the_next_one() {
    let fx = fixture();
    let d = fx.dir.path();
    // A pid that no longer runs: a child that has exited and been waited for.
    let mut child = std::process::Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    let stale = d.join(format!(".out.rwd.rewind-tmp.{dead}.k1ll3d"));
    std::fs::write(&stale, vec![0u8; 4096]).expect("write");
    let unrelated = d.join(format!(".other.rwd.rewind-tmp.{dead}.k1ll3d"));
    std::fs::write(&unrelated, b"x").expect("write");
    rewind()
        .args(["import", "--page-size", "1024", "-o"])
        .arg(d.join("out.rwd"))
        .args(&fx.files[..3])
        .assert()
        .success();
    if Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{dead}")).exists() {
        assert!(!stale.exists(), "the stale temporary file stayed");
    }
    assert!(unrelated.exists(), "another output's temporary file was removed");
    let left: Vec<String> = std::fs::read_dir(d)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".out.rwd."))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

// ---- gc reports -----------------------------------------------------------------------

/// A gc report without what differs by design between a dry run and a real run (what
/// was written, and whether it was a dry run).
fn gc_numbers(j: &serde_json::Value) -> serde_json::Value {
    let mut j = j.clone();
    let m = j.as_object_mut().expect("a JSON object");
    m.remove("output");
    m.remove("dry_run");
    j
}

#[test]
fn gc_dry_run_reports_exactly_what_the_real_run_does() {
    let fx = fixture();
    let d = fx.dir.path();
    for args in [
        vec!["--keep-last", "5"],
        vec!["--keep-last", "40"],
        vec!["--pin", "3,17"],
        vec!["--budget", "20000"],
    ] {
        let dry = json(
            rewind()
                .arg("gc")
                .arg(&fx.archive)
                .args(&args)
                .args(["--dry-run", "--json"]),
        );
        assert_eq!(dry["dry_run"], true);
        let out = d.join("gc-out.rwd");
        let real = json(
            rewind()
                .arg("gc")
                .arg(&fx.archive)
                .args(&args)
                .args(["--force", "--json", "-o"])
                .arg(&out),
        );
        assert_eq!(gc_numbers(&dry), gc_numbers(&real), "{args:?}");
        assert_eq!(
            real["after"]["bytes"],
            std::fs::metadata(&out).expect("stat").len()
        );
        assert_eq!(
            real["before"]["bytes"],
            std::fs::metadata(&fx.archive).expect("stat").len()
        );
        let text = stdout(rewind().arg("gc").arg(&fx.archive).args(&args).arg("--dry-run"));
        let text_real = stdout(
            rewind()
                .arg("gc")
                .arg(&fx.archive)
                .args(&args)
                .args(["--force", "-o"])
                .arg(&out),
        );
        // The same sentence after the name of what was written.
        let tail = |s: &str| s.split_once(": ").map(|(_, t)| t.to_string()).expect("a report");
        assert_eq!(tail(&text), tail(&text_real), "{args:?}");
        // What a collection writes verifies: a kept record's counts are against its
        // parent in the new file, not the one it was captured against.
        sound(&out);
    }
    sound(&fx.archive);
}

#[test]
fn gc_never_grows_a_file_without_saying_why() {
    let fx = fixture();
    let d = fx.dir.path();
    // Keeping every record of an archive written one commit per frame.
    let one_per_frame = d.join("one-per-frame.rwd");
    rewind()
        .args([
            "import",
            "--page-size",
            "1024",
            "--seed",
            "7",
            "--batch",
            "1",
            "-o",
        ])
        .arg(&one_per_frame)
        .args(&fx.files)
        .assert()
        .success();
    let mut grew = 0;
    for args in [
        vec!["--keep-last", "40"],
        vec!["--pin", "0", "--pin", "9,19", "--pin", "29"],
        vec!["--keep-last", "1"],
    ] {
        let out = d.join("g.rwd");
        let j = json(
            rewind()
                .arg("gc")
                .arg(&one_per_frame)
                .args(&args)
                .args(["--force", "--json", "-o"])
                .arg(&out),
        );
        let (b, a) = (
            j["before"]["bytes"].as_u64().expect("bytes"),
            j["after"]["bytes"].as_u64().expect("bytes"),
        );
        let text = stdout(
            rewind()
                .arg("gc")
                .arg(&one_per_frame)
                .args(&args)
                .args(["--force", "-o"])
                .arg(&out),
        );
        if a > b {
            grew += 1;
            assert!(j["grew"].as_str().is_some_and(|s| !s.is_empty()), "{j}");
            assert!(text.contains("grew by") && text.contains("note: "), "{text}");
        } else {
            assert!(j["grew"].is_null(), "{j}");
            assert!(text.contains("freed") && !text.contains("note: "), "{text}");
        }
    }
    let _ = grew;
}

// ---- hostile archives -------------------------------------------------------------------

/// Re-seal every segment of an archive after its payloads were edited: the checksums
/// then match, so only checks of the fields themselves can catch the edit.
fn reseal(bytes: &mut [u8]) {
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

#[test]
fn heatmap_refuses_a_hostile_memory_length_instead_of_aborting() {
    let fx = fixture();
    let d = fx.dir.path();
    let one = d.join("one.rwd");
    rewind()
        .args(["import", "--page-size", "1024", "--seed", "7", "-o"])
        .arg(&one)
        .arg(&fx.files[0])
        .assert()
        .success();
    let mut bytes = digest(&one);
    // Record 0 (iteration 0, no parent) as stored in the data segment and in the index:
    // id, iteration, parent, memory_len.
    let mut pattern = vec![0u8; 16];
    pattern.extend_from_slice(&u64::MAX.to_le_bytes());
    pattern.extend_from_slice(&(MEM as u64).to_le_bytes());
    let hostile: u64 = 1 << 53;
    let mut edited = 0;
    let mut at = 0;
    while let Some(k) = bytes[at..].windows(pattern.len()).position(|w| w == pattern) {
        let len_at = at + k + 24;
        bytes[len_at..len_at + 8].copy_from_slice(&hostile.to_le_bytes());
        edited += 1;
        at = len_at + 8;
    }
    assert!(edited > 0, "record 0 not found in the file");
    reseal(&mut bytes);
    let bad = d.join("hostile.rwd");
    std::fs::write(&bad, &bytes).expect("write");
    let png = d.join("hostile.png");
    let out = rewind()
        .arg("heatmap")
        .arg(&bad)
        .arg("-o")
        .arg(&png)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "not a clean error exit: {err}");
    assert!(
        err.starts_with("rewind: ") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    assert!(err.contains("memory length 9007199254740992"), "{err}");
    assert!(!png.exists(), "a failed heatmap left an image");
}

/// One flipped bit in the last trailer is damage, not a torn write: reads fail, `repair`
/// refuses and leaves every byte, and only `repair --force` cuts back to the commit
/// before.
#[test]
fn a_damaged_last_trailer_is_refused_and_only_a_forced_repair_cuts_it() {
    let fx = fixture();
    let mut bytes = std::fs::read(&fx.archive).expect("read");
    let n = bytes.len();
    bytes[n - 64 + 20] ^= 0x04; // the root offset of the last trailer
    std::fs::write(&fx.archive, &bytes).expect("write");
    rewind().arg("log").arg(&fx.archive).assert().failure();
    rewind()
        .arg("repair")
        .arg(&fx.archive)
        .assert()
        .failure()
        .stderr(predicates::str::contains("damaged"));
    assert_eq!(
        std::fs::read(&fx.archive).expect("read"),
        bytes,
        "a refused repair changes nothing"
    );
    rewind()
        .arg("repair")
        .arg("--force")
        .arg(&fx.archive)
        .assert()
        .success();
    assert!(std::fs::metadata(&fx.archive).expect("stat").len() < n as u64);
    rewind().arg("verify").arg(&fx.archive).assert().success();
}

/// Two peers' archives after a desync: `diff A.rwd:N B.rwd:N` names the differing page
/// and byte range, by page hash when the seeds agree and by bytes when they do not, and
/// equal frames report nothing.
#[test]
fn diff_across_two_archives_names_the_pages_and_bytes_that_differ() {
    let fx = fixture();
    // Peer B's frames diverge at frame 9: one byte at 0x1234 differs from then on.
    let dir = fx.dir.path();
    let mut files_b = Vec::new();
    for (i, f) in fx.frames.iter().enumerate() {
        let mut f = f.clone();
        if i >= 9 {
            f[0x1234] ^= 0x5a;
        }
        let p = dir.join(format!("peer{i:03}.bin"));
        std::fs::write(&p, &f).expect("write frame");
        files_b.push(p);
    }
    for (name, seed) in [("same-seed.rwd", "7"), ("other-seed.rwd", "8")] {
        let b = dir.join(name);
        rewind()
            .args(["import", "--page-size", "1024", "--seed", seed, "-o"])
            .arg(&b)
            .args(&files_b)
            .assert()
            .success();
        let side = |p: &std::path::Path, n: u32| format!("{}:{n}", p.display());
        let d = lines(rewind().args(["diff", "--json", &side(&fx.archive, 9), &side(&b, 9)]));
        assert_eq!(d[0]["pages_differing"], 1, "{name}: {d:?}");
        assert_eq!(d[1]["kind"], "diff_entry", "{name}");
        assert_eq!(d[1]["page"], 0x1234 / 1024, "{name}");
        assert_eq!(d[1]["ranges"][0]["addr"], 0x1234, "{name}");
        assert_eq!(d[1]["ranges"][0]["len"], 1, "{name}");
        let same = lines(rewind().args(["diff", "--json", &side(&fx.archive, 8), &side(&b, 8)]));
        assert_eq!(same.len(), 1, "{name}: {same:?}");
        assert_eq!(same[0]["pages_differing"], 0, "{name}: {same:?}");
        // The text form names the page and the range too.
        let text = stdout(rewind().args(["diff", &side(&fx.archive, 9), &side(&b, 9)]));
        assert!(text.contains("1 pages differ"), "{text}");
        assert!(text.contains("0x1234+1"), "{text}");
    }
    // A side without an iteration is a clear error.
    rewind()
        .args(["diff"])
        .arg(&fx.archive)
        .arg(dir.join("same-seed.rwd"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("FILE:ITERATION"));
}

// ---- the CLI as a scripting tool ---------------------------------------------------------

/// `show f.rwd r5` on a missing record said "record 5 is not in the archive" twice; the
/// message is said once, and tells a record never recorded from one a collection removed,
/// and an iteration past the end from one collected.
#[test]
fn missing_records_and_iterations_say_why_once() {
    let fx = fixture();
    let out = rewind()
        .arg("show")
        .arg(&fx.archive)
        .arg("r500")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("record 500").count(), 1, "{err}");
    assert!(err.contains("never recorded") && err.contains("r39"), "{err}");
    // After a collection that keeps iterations 0 and 35..=39.
    let gcd = fx.dir.path().join("gcd.rwd");
    rewind()
        .arg("gc")
        .arg(&fx.archive)
        .args(["--keep-last", "5", "--pin", "0", "-o"])
        .arg(&gcd)
        .assert()
        .success();
    fails(
        rewind().arg("show").arg(&gcd).arg("r7"),
        "record 7 is not retained: a collection removed it",
    );
    fails(
        rewind().arg("show").arg(&gcd).arg("20"),
        "iteration 20 is not retained: a collection removed",
    );
    fails(
        rewind().arg("show").arg(&gcd).arg("40"),
        "iteration 40 was never recorded",
    );
    // Iterations below the first of an import that starts at 100 were never recorded.
    let late = fx.dir.path().join("late.rwd");
    rewind()
        .args(["import", "--page-size", "1024", "--first-iteration", "100", "-o"])
        .arg(&late)
        .args(&fx.files[..3])
        .assert()
        .success();
    fails(
        rewind().arg("show").arg(&late).arg("5"),
        "iteration 5 was never recorded",
    );
}

/// `gc --pin 900 910 FILE` took FILE as a pin: `--pin` takes one value per flag (or a
/// comma-separated list), so a second bare value is a usage error, not a pin.
#[test]
fn gc_pin_takes_one_value_per_flag_and_never_swallows_the_file() {
    let fx = fixture();
    let before = digest(&fx.archive);
    let out = rewind()
        .arg("gc")
        .args(["--pin", "3", "17"])
        .arg(&fx.archive)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(digest(&fx.archive), before);
    // The file after the flag, as the issue wrote it, is the file.
    let o = fx.dir.path().join("pinned.rwd");
    let j = json(
        rewind()
            .arg("gc")
            .args(["--pin", "3", "--pin", "17,20", "--json", "-o"])
            .arg(&o)
            .arg(&fx.archive),
    );
    assert_eq!(j["records_after"], 4, "three pins and the head: {j}");
    let its: Vec<u64> = lines(rewind().arg("log").arg(&o).arg("--json"))
        .iter()
        .map(|r| r["iteration"].as_u64().expect("iteration"))
        .collect();
    assert_eq!(its, vec![3, 17, 20, 39]);
}

#[test]
fn log_takes_a_range_a_count_and_reverse() {
    let fx = fixture();
    let its = |args: &[&str]| -> Vec<u64> {
        lines(rewind().arg("log").arg(&fx.archive).args(args).arg("--json"))
            .iter()
            .map(|r| r["iteration"].as_u64().expect("iteration"))
            .collect()
    };
    assert_eq!(its(&["10..13"]), vec![10, 11, 12]);
    assert_eq!(its(&["10..=13"]), vec![10, 11, 12, 13]);
    assert_eq!(its(&["37.."]), vec![37, 38, 39]);
    assert_eq!(its(&["..=1"]), vec![0, 1]);
    assert_eq!(its(&["7"]), vec![7]);
    assert_eq!(its(&["-n", "2"]), vec![0, 1]);
    assert_eq!(its(&["--reverse", "-n", "3"]), vec![39, 38, 37]);
    assert_eq!(its(&["5..9", "--reverse"]), vec![8, 7, 6, 5]);
    assert_eq!(its(&["--all", "30..", "-n", "1"]), vec![30]);
    assert!(its(&["100.."]).is_empty());
    // The text form: a header and one line per record.
    let text = stdout(rewind().arg("log").arg(&fx.archive).args(["-n", "3"]));
    assert_eq!(text.lines().count(), 4, "{text}");
    // A backwards or empty range is a usage error.
    for bad in ["9..3", "3..3", "x..4"] {
        rewind().arg("log").arg(&fx.archive).arg(bad).assert().code(2);
    }
}

/// Every hash the CLI prints is the full 128 bits: `log`'s table, `show`, `export`.
#[test]
fn hashes_are_printed_in_full_everywhere() {
    let fx = fixture();
    let full = lines(rewind().arg("log").arg(&fx.archive).arg("--json"))[5]["state_hash"]
        .as_str()
        .expect("hash")
        .to_string();
    assert_eq!(full.len(), 32);
    assert!(full.chars().all(|c| c.is_ascii_hexdigit()));
    let table = stdout(rewind().arg("log").arg(&fx.archive));
    let row = table.lines().nth(6).expect("the row of iteration 5");
    assert!(row.split_whitespace().any(|w| w == full), "{row}");
    let show = stdout(rewind().arg("show").arg(&fx.archive).arg("5"));
    assert!(show.contains(&format!("state hash     {full}")), "{show}");
    let m = fx.dir.path().join("m5.bin");
    let e = stdout(rewind().arg("export").arg(&fx.archive).arg("5").arg("-o").arg(&m));
    assert!(e.contains(&full), "{e}");
}

/// A global, a page, a record look the same wherever they appear.
#[test]
fn json_lines_have_one_schema_per_concept() {
    let fx = fixture();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    let log = lines(rewind().arg("log").arg(&fx.archive).args(["--all", "--json"]));
    let show = lines(rewind().arg("show").arg(&fx.archive).args(["r4", "--json"]));
    let diff = lines(rewind().arg("diff").arg(&fx.archive).args(["2", "r4", "--json"]));
    let record = keys(&log[0]);
    assert_eq!(keys(&show[0]), record);
    assert_eq!(keys(&diff[0]["a"]), record);
    assert_eq!(keys(&diff[0]["b"]), record);
    assert_eq!(diff[0]["b"], show[0]);
    for p in of_kind(&show, "page") {
        assert_eq!(keys(&p), ["addr", "hash", "kind", "page", "record"]);
        assert_eq!(p["hash"].as_str().expect("hash").len(), 32);
    }
    let cat = json(
        rewind()
            .arg("cat")
            .arg(&fx.archive)
            .args(["4", "--addr", "100", "--json"]),
    );
    let blame = lines(
        rewind()
            .arg("blame")
            .arg(&fx.archive)
            .args(["4", "--addr", "100", "--json"]),
    );
    assert_eq!(blame[0], cat);
    // The globals file of export holds global objects (none here: the frames have none).
    let m = fx.dir.path().join("m.bin");
    rewind()
        .arg("export")
        .arg(&fx.archive)
        .arg("4")
        .arg("-o")
        .arg(&m)
        .assert()
        .success();
    let g: serde_json::Value =
        serde_json::from_slice(&digest(&m.with_extension("globals.json"))).expect("globals JSON");
    assert_eq!(g, serde_json::json!([]));
    // Report commands print one object naming its kind.
    for (cmd, kind) in [("stats", "stats"), ("verify", "verify")] {
        assert_eq!(
            json(rewind().arg(cmd).arg(&fx.archive).arg("--json"))["kind"],
            kind
        );
    }
}

/// Every file the CLI writes gets 0o666 less the umask, whichever command writes it.
#[test]
fn written_files_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let fx = fixture();
    let d = fx.dir.path();
    let bin = assert_cmd::cargo::cargo_bin("rewind");
    let run = |umask: &str, args: &[&std::ffi::OsStr]| {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(&bin)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run sh");
        assert!(st.success(), "{args:?}");
    };
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    for (umask, want) in [("027", 0o640), ("002", 0o664), ("077", 0o600)] {
        let (imp, gc, png, mem) = (
            d.join(format!("u{umask}.rwd")),
            d.join(format!("u{umask}-gc.rwd")),
            d.join(format!("u{umask}.png")),
            d.join(format!("u{umask}.bin")),
        );
        let mut args = vec![
            "import".as_ref(),
            "--page-size".as_ref(),
            "1024".as_ref(),
            "-o".as_ref(),
            imp.as_os_str(),
        ];
        args.extend(fx.files[..4].iter().map(|f| f.as_os_str()));
        run(umask, &args);
        run(
            umask,
            &[
                "gc".as_ref(),
                imp.as_os_str(),
                "--keep-last".as_ref(),
                "2".as_ref(),
                "-o".as_ref(),
                gc.as_os_str(),
            ],
        );
        run(
            umask,
            &[
                "heatmap".as_ref(),
                imp.as_os_str(),
                "-o".as_ref(),
                png.as_os_str(),
            ],
        );
        run(
            umask,
            &[
                "export".as_ref(),
                imp.as_os_str(),
                "1".as_ref(),
                "-o".as_ref(),
                mem.as_os_str(),
            ],
        );
        for p in [&imp, &gc, &png, &mem, &mem.with_extension("globals.json")] {
            assert_eq!(mode(p), want, "{} under umask {umask}", p.display());
        }
    }
}

/// `import` commits in batches: one commit per `--batch` frames, not one per frame, and
/// the archive of many small frames is no longer larger than its input.
#[test]
fn import_commits_in_batches() {
    let fx = fixture();
    let packed = fx.dir.path().join("all.bin");
    std::fs::write(&packed, fx.frames.concat()).expect("write");
    let import = |batch: &str, out: &Path| -> serde_json::Value {
        json(
            rewind()
                .args([
                    "import",
                    "--page-size",
                    "1024",
                    "--seed",
                    "7",
                    "--json",
                    "--batch",
                    batch,
                    "--frame-size",
                ])
                .arg(MEM.to_string())
                .arg(&packed)
                .arg("-o")
                .arg(out),
        )
    };
    let (one, seven, all) = (
        fx.dir.path().join("b1.rwd"),
        fx.dir.path().join("b7.rwd"),
        fx.dir.path().join("b1000.rwd"),
    );
    let r1 = import("1", &one);
    let r7 = import("7", &seven);
    let r1000 = import("1000", &all);
    assert_eq!(r1["commits"], FRAMES as u64);
    assert_eq!(r7["commits"], FRAMES.div_ceil(7) as u64);
    assert_eq!(r1000["commits"], 1);
    assert_eq!(
        json(rewind().arg("stats").arg(&all).arg("--json"))["commits"],
        2,
        "the empty first commit and one batch"
    );
    // The same history whatever the batching: every state hash agrees.
    let hashes = |p: &Path| -> Vec<serde_json::Value> {
        lines(rewind().arg("log").arg(p).arg("--json"))
            .iter()
            .map(|r| r["state_hash"].clone())
            .collect()
    };
    assert_eq!(hashes(&one), hashes(&all));
    assert_eq!(hashes(&seven), hashes(&all));
    let size = |p: &Path| std::fs::metadata(p).expect("stat").len();
    assert!(
        size(&all) < size(&seven) && size(&seven) < size(&one),
        "{} {} {}",
        size(&all),
        size(&seven),
        size(&one)
    );
    sound(&one);
    sound(&seven);
    sound(&all);
    rewind()
        .args(["import", "--page-size", "1024", "--batch", "0", "-o"])
        .arg(fx.dir.path().join("b0.rwd"))
        .arg(&fx.files[0])
        .assert()
        .code(2);
}

/// `log | head -1` stops reading: the output is streamed and a closed pipe ends the
/// command quietly with success (the log of 20,000 records is far larger than a pipe's
/// buffer, so the write after `head` exits fails).
#[test]
fn log_into_a_closed_pipe_stops_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let frames: Vec<u8> = (0..20_000u32)
        .flat_map(|i| {
            let mut f = vec![0u8; 1024];
            f[..4].copy_from_slice(&i.to_le_bytes());
            f
        })
        .collect();
    let packed = dir.path().join("frames.bin");
    std::fs::write(&packed, frames).expect("write");
    let archive = dir.path().join("many.rwd");
    rewind()
        .args(["import", "--page-size", "1024", "--frame-size", "1024", "-o"])
        .arg(&archive)
        .arg(&packed)
        .assert()
        .success();
    let bin = assert_cmd::cargo::cargo_bin("rewind");
    for json in ["", "--json"] {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg("set -o pipefail; \"$0\" log \"$1\" $2 | head -n 1")
            .arg(&bin)
            .arg(&archive)
            .arg(json)
            .output()
            .expect("run bash");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    }
}

/// An archive with a rollback: frames 0..=9, back to 5, then 6 and 7 again. Records
/// r6..=r9 are an abandoned branch; r5 is a branch point.
fn branched(dir: &Path) -> PathBuf {
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

#[test]
fn log_marks_branches_and_a_branch_only_iteration_names_its_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = branched(dir.path());
    let all = lines(rewind().arg("log").arg(&a).args(["--all", "--json"]));
    assert_eq!(all.len(), 12);
    let children: Vec<u64> = all
        .iter()
        .map(|r| r["children"].as_u64().expect("children"))
        .collect();
    assert_eq!(children, vec![1, 1, 1, 1, 1, 2, 1, 1, 1, 0, 1, 0]);
    let off: Vec<u64> = all
        .iter()
        .filter(|r| r["on_timeline"] == false)
        .map(|r| r["record"].as_u64().expect("record"))
        .collect();
    assert_eq!(off, vec![6, 7, 8, 9]);
    // The timeline alone counts the abandoned children too.
    let tl = lines(rewind().arg("log").arg(&a).arg("--json"));
    assert_eq!(tl.len(), 8);
    assert_eq!(tl[5]["children"], 2);
    assert_eq!(tl[5], all[5]);
    let text = stdout(rewind().arg("log").arg(&a));
    assert!(text.contains("branch point (2 children)"), "{text}");
    let text = stdout(rewind().arg("log").arg(&a).arg("--all"));
    assert_eq!(text.matches("abandoned").count(), 4, "{text}");
    // Iteration 8 exists only on the abandoned branch: the error says where.
    fails(
        rewind().arg("show").arg(&a).arg("8"),
        "iteration 8 is not on the timeline, only on an abandoned branch: r8",
    );
    assert!(stdout(rewind().arg("show").arg(&a).arg("r8")).contains("[abandoned branch]"));
    fails(
        rewind().arg("show").arg(&a).arg("10"),
        "iteration 10 was never recorded",
    );
}

/// An archive whose writer named two of its three globals (as a wasm session does:
/// an export name, a `$name` from the name section, and an unnamed one).
fn named_globals(dir: &Path) -> PathBuf {
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

#[test]
fn show_and_diff_print_the_names_of_globals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = named_globals(dir.path());
    let text = stdout(rewind().arg("show").arg(&a).arg("2"));
    assert!(text.contains("$drift         i32 = 102"), "{text}");
    assert!(text.contains("score          i32 = 2"), "{text}");
    assert!(text.contains("global 1       i64 = 7"), "{text}");
    assert!(!text.contains("global 2 "), "{text}");
    let json = lines(rewind().arg("show").arg(&a).args(["2", "--json"]));
    let globals = of_kind(&json, "global");
    assert_eq!(globals[2]["name"], "$drift");
    assert!(
        globals[1].get("name").is_none(),
        "an unnamed global has no name field"
    );
    let text = stdout(rewind().arg("diff").arg(&a).args(["1", "3"]));
    assert!(text.contains("$drift: i32 101 → i32 103"), "{text}");
    assert!(text.contains("score: i32 1 → i32 3"), "{text}");
    let json = lines(rewind().arg("diff").arg(&a).args(["1", "3", "--json"]));
    let changes = of_kind(&json, "global_change");
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1]["name"], "$drift");
    assert_eq!(changes[1]["b"]["name"], "$drift");
    sound(&a);
}

/// The distinct non-zero pages of `frame` whose bytes no page of `held` has: what a
/// bundle for a receiver holding `held` must carry, found by comparing contents.
fn missing_pages(frame: &[u8], held: &[Vec<u8>]) -> usize {
    let have: std::collections::HashSet<&[u8]> = held.iter().flat_map(|f| f.chunks_exact(PAGE)).collect();
    let want: std::collections::HashSet<&[u8]> = frame
        .chunks_exact(PAGE)
        .filter(|p| p.iter().any(|b| *b != 0) && !have.contains(p))
        .collect();
    want.len()
}

#[test]
fn export_bundle_moves_only_the_missing_pages_and_verify_bundle_checks_them() {
    let fx = fixture();
    // The receiver imported the first 30 frames with the same seed and page size.
    let have = fx.dir.path().join("have.rwd");
    rewind()
        .args(["import", "--page-size", "1024", "--seed", "7", "-o"])
        .arg(&have)
        .args(&fx.files[..30])
        .assert()
        .success();
    let out = fx.dir.path().join("39.bundle");
    let printed = stdout(
        rewind()
            .arg("export")
            .arg(&fx.archive)
            .args(["39", "--bundle", "-o"])
            .arg(&out)
            .arg("--have")
            .arg(&have),
    );
    let missing = missing_pages(&fx.frames[39], &fx.frames[..30]);
    assert!(missing > 0, "frames 30..39 wrote pages");
    assert!(printed.contains(&format!(" {missing} of ")), "{printed}");
    let j = json(
        rewind()
            .args(["verify", "--bundle", "--json"])
            .arg(&out)
            .arg("--have")
            .arg(&have),
    );
    assert_eq!(j["kind"], "verify_bundle");
    assert_eq!(j["sound"], true);
    assert_eq!(j["iteration"], 39);
    assert_eq!(j["pages_from_bundle"], missing as u64);
    assert_eq!(j["memory_len"], MEM as u64);
    let show = of_kind(
        &lines(rewind().arg("show").arg(&fx.archive).args(["39", "--json"])),
        "record",
    );
    assert_eq!(j["state_hash"], show[0]["state_hash"]);
    // Raw pages of 1 KiB at most, plus the manifest: bounded by what is missing.
    let bytes = std::fs::metadata(&out).expect("bundle").len();
    assert!(
        bytes < (missing * (PAGE + 64) + (MEM / PAGE) * 16 + 1024) as u64,
        "{bytes} bytes"
    );

    // Applied: an archive of the one state, which exports exactly frame 39.
    let joined = fx.dir.path().join("joined.rwd");
    let j = json(
        rewind()
            .args(["import", "--json", "--bundle"])
            .arg(&out)
            .arg("--have")
            .arg(&have)
            .arg("-o")
            .arg(&joined),
    );
    assert_eq!(j["kind"], "import_bundle");
    assert_eq!(j["pages_from_bundle"], missing as u64);
    sound(&joined);
    let again = of_kind(
        &lines(rewind().arg("show").arg(&joined).args(["39", "--json"])),
        "record",
    );
    assert_eq!(again[0]["state_hash"], show[0]["state_hash"]);
    let image = fx.dir.path().join("joined-39.bin");
    rewind()
        .arg("export")
        .arg(&joined)
        .args(["39", "-o"])
        .arg(&image)
        .assert()
        .success();
    assert!(digest(&image) == fx.frames[39]);
    fails(
        rewind()
            .args(["import", "--bundle"])
            .arg(&out)
            .arg("-o")
            .arg(fx.dir.path().join("no.rwd")),
        "does not verify",
    );

    // Without the receiver's archive the pages it holds are missing.
    fails(
        rewind().args(["verify", "--bundle"]).arg(&out),
        "neither in the bundle nor held locally",
    );
    // A bundle for a receiver with nothing: every distinct page, and it verifies alone.
    let full = fx.dir.path().join("39-full.bundle");
    rewind()
        .arg("export")
        .arg(&fx.archive)
        .args(["39", "--bundle", "-o"])
        .arg(&full)
        .assert()
        .success();
    let j = json(rewind().args(["verify", "--bundle", "--json"]).arg(&full));
    assert_eq!(j["pages_from_bundle"], missing_pages(&fx.frames[39], &[]) as u64);
    assert!(std::fs::metadata(&full).expect("bundle").len() > bytes);

    // Damaged bundles: a flipped byte, a truncated file, an archive given as a bundle.
    let mut b = digest(&out);
    let last = b.len() - 1;
    b[last] ^= 1;
    let bad = fx.dir.path().join("bad.bundle");
    std::fs::write(&bad, &b).expect("write");
    fails(rewind().args(["verify", "--bundle"]).arg(&bad), "checksum");
    std::fs::write(&bad, &digest(&out)[..100]).expect("write");
    fails(rewind().args(["verify", "--bundle"]).arg(&bad), "truncated");
    fails(
        rewind().args(["verify", "--bundle"]).arg(&fx.archive),
        "not a rewind bundle",
    );
    // --have needs --bundle; a bundle is never written over an input.
    let out2 = fx.dir.path().join("x.bin");
    rewind()
        .arg("export")
        .arg(&fx.archive)
        .args(["39", "-o"])
        .arg(&out2)
        .arg("--have")
        .arg(&have)
        .assert()
        .code(2);
    fails(
        rewind()
            .arg("export")
            .arg(&fx.archive)
            .args(["39", "--bundle", "--force", "-o"])
            .arg(&have)
            .arg("--have")
            .arg(&have),
        "it is an input",
    );
}
