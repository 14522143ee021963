//! The read commands (`cat`, `blame`, `log`, `show`, `diff`, `stats`, `verify`, `heatmap`) against the imported frames and a brute-force model.

use predicates::prelude::*;

use crate::common::*;

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
fn heatmap_refuses_a_hostile_memory_length_instead_of_aborting() {
    let fx = fixture();
    let d = fx.dir.path();
    let one = d.join("one.rwd");
    import_into(&one, &fx.files[..1]);
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
