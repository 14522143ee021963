//! The CLI on a remote archive: `push`, `pull` and every read command on
//! `s3://BUCKET/KEY`, against a one-node Garage server started by the test
//! (`rewind_remote::garage`; install the binary with `scripts/install-garage.sh`).

use assert_cmd::Command;
use predicates::prelude::*;
use rewind_remote::garage::Garage;

use crate::common::{digest, fixture, import_into, rewind, stdout};

/// `rewind` with the server's `AWS_*` settings and a private read cache.
fn remote_rewind(g: &Garage, cache: &std::path::Path) -> Command {
    let mut c = rewind();
    for (k, v) in g.env() {
        c.env(k, v);
    }
    c.env("REWIND_CACHE", cache);
    c
}

#[test]
fn read_commands_work_on_an_s3_archive_in_garage() {
    let g = Garage::start().unwrap_or_else(|e| panic!("cannot start a Garage server for the S3 tests: {e}"));
    let fx = fixture();
    let cache = fx.dir.path().join("cache");
    let url = format!("s3://{}/cli/h.rwd", g.bucket);
    remote_rewind(&g, &cache)
        .arg("push")
        .arg(&fx.archive)
        .arg(&url)
        .assert()
        .success()
        .stdout(predicate::str::contains("sent"));
    // Every read command prints on the URL what it prints on the local file.
    let same = |args: &[&str]| {
        let local = stdout(rewind().arg(args[0]).arg(&fx.archive).args(&args[1..]));
        let remote = stdout(remote_rewind(&g, &cache).arg(args[0]).arg(&url).args(&args[1..]));
        assert_eq!(local, remote, "rewind {args:?}");
    };
    same(&["log"]);
    same(&["log", "--all", "--json"]);
    same(&["show", "17"]);
    same(&["cat", "20", "--addr", "0x800", "--len", "64"]);
    same(&["blame", "30", "--addr", "2148", "--len", "4"]);
    same(&["diff", "3", "9"]);
    remote_rewind(&g, &cache)
        .arg("verify")
        .arg(&url)
        .assert()
        .success();
    let out = fx.dir.path().join("remote-export.bin");
    remote_rewind(&g, &cache)
        .arg("export")
        .arg(&url)
        .arg("12")
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    assert!(digest(&out) == fx.frames[12]);
    // A late-joiner bundle from the URL, for a receiver that imported frames 0..30:
    // the same bytes as from the local file, and it verifies with the receiver's pages.
    let have = fx.dir.path().join("have.rwd");
    import_into(&have, &fx.files[..30]);
    let bundle = |from: &dyn AsRef<std::ffi::OsStr>, name: &str| {
        let out = fx.dir.path().join(name);
        remote_rewind(&g, &cache)
            .arg("export")
            .arg(from)
            .args(["39", "--bundle", "-o"])
            .arg(&out)
            .arg("--have")
            .arg(&have)
            .assert()
            .success();
        out
    };
    let remote_bundle = bundle(&url, "remote.bundle");
    assert!(digest(&remote_bundle) == digest(&bundle(&fx.archive, "local.bundle")));
    remote_rewind(&g, &cache)
        .args(["verify", "--bundle"])
        .arg(&remote_bundle)
        .arg("--have")
        .arg(&have)
        .assert()
        .success()
        .stdout(predicate::str::contains("verified"));
    // A command that writes its input refuses a remote archive.
    remote_rewind(&g, &cache)
        .arg("gc")
        .arg(&url)
        .args(["--keep-last", "3"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("rewind pull"));
    // pull gives back the same bytes; a second pull fetches nothing.
    let copy = fx.dir.path().join("copy.rwd");
    remote_rewind(&g, &cache)
        .arg("pull")
        .arg(&url)
        .arg(&copy)
        .assert()
        .success()
        .stdout(predicate::str::contains("fetched"));
    assert!(digest(&copy) == digest(&fx.archive));
    let j: serde_json::Value = serde_json::from_str(
        stdout(
            remote_rewind(&g, &cache)
                .arg("pull")
                .arg(&url)
                .arg(&copy)
                .arg("--json"),
        )
        .trim(),
    )
    .expect("json");
    assert_eq!(j["up_to_date"], true);
    assert_eq!(j["requests"], 1);
}

#[test]
fn remote_errors_are_one_clear_line() {
    let g = Garage::start().unwrap_or_else(|e| panic!("cannot start a Garage server for the S3 tests: {e}"));
    let fx = fixture();
    let cache = fx.dir.path().join("cache");
    remote_rewind(&g, &cache)
        .arg("log")
        .arg(format!("s3://{}/nothing-here.rwd", g.bucket))
        .assert()
        .failure()
        .stderr(predicate::str::contains("no archive at s3://"));
    remote_rewind(&g, &cache)
        .env("AWS_SECRET_ACCESS_KEY", "0".repeat(64))
        .arg("push")
        .arg(&fx.archive)
        .arg(format!("s3://{}/x.rwd", g.bucket))
        .assert()
        .failure()
        .stderr(predicate::str::contains("access denied"));
    remote_rewind(&g, &cache)
        .arg("push")
        .arg(&fx.archive)
        .arg("s3://bucket-only")
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad remote URL"));
}

#[test]
fn prune_deletes_the_generation_a_pushed_collection_left_and_reads_still_work() {
    let g = Garage::start().unwrap_or_else(|e| panic!("cannot start a Garage server for the S3 tests: {e}"));
    let fx = fixture();
    let cache = fx.dir.path().join("cache");
    let url = format!("s3://{}/cli/p.rwd", g.bucket);
    let local = fx.dir.path().join("p.rwd");
    std::fs::copy(&fx.archive, &local).expect("copy");
    let json = |args: &[&str]| -> serde_json::Value {
        let out = stdout(remote_rewind(&g, &cache).args(args).arg("--json"));
        serde_json::from_str(out.trim()).expect("json")
    };
    let first = json(&["push", local.to_str().expect("utf-8"), &url]);
    rewind()
        .arg("gc")
        .arg(&local)
        .args(["--keep-last", "3"])
        .assert()
        .success();
    let second = json(&["push", local.to_str().expect("utf-8"), &url]);
    assert_eq!(second["new_generation"], true);
    // Within the default hour nothing goes; a dry run counts what would.
    let kept = json(&["prune", &url]);
    assert_eq!(kept["deleted"], 0);
    assert_eq!(kept["kept_recent"], first["parts_sent"]);
    let dry = json(&["prune", &url, "--older-than", "0s", "--dry-run"]);
    assert_eq!(dry["deleted"], first["parts_sent"]);
    assert_eq!(dry["deleted_bytes"], first["data_bytes_sent"]);
    let done = json(&["prune", &url, "--older-than", "0s"]);
    assert_eq!(done["deleted"], first["parts_sent"]);
    assert_eq!(
        done["live"].as_u64(),
        second["parts_sent"].as_u64().map(|n| n + 1)
    );
    assert_eq!(json(&["prune", &url, "--older-than", "0s"])["deleted"], 0);
    // The remote still reads as the collected file.
    let fresh = fx.dir.path().join("fresh-cache");
    let remote_log = stdout(remote_rewind(&g, &fresh).arg("log").arg(&url));
    assert_eq!(remote_log, stdout(rewind().arg("log").arg(&local)));
    remote_rewind(&g, &fresh)
        .arg("verify")
        .arg(&url)
        .assert()
        .success();
    remote_rewind(&g, &cache)
        .args(["prune", &url, "--older-than", "soon"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("older-than"));
}
