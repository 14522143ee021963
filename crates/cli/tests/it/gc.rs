//! `rewind gc` and `rewind repair`: policies, dry runs, pins, growth, damaged tails.

use predicates::prelude::*;

use crate::common::*;

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
