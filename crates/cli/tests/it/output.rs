//! What the binary prints: help, progress bars, full hashes, one JSON schema per concept.

use predicates::prelude::*;

use crate::common::*;

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
