//! `rewind import` and `rewind export`: round trips against the frames, packed input, batches, and what an interrupted import leaves.

use std::path::Path;

use crate::common::*;

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
