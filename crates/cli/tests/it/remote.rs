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

/// `N requests, B bytes fetched` from the stderr line `REWIND_REMOTE_STATS=1` prints.
fn fetch_stats(stderr: &[u8]) -> (u64, u64) {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find(|l| l.contains(" requests, "))
        .unwrap_or_else(|| panic!("no stats line in {text:?}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let n = nums.len();
    assert!(n >= 2, "{line}");
    (nums[n - 2], nums[n - 1])
}

#[test]
fn reads_of_an_s3_archive_fetch_only_what_they_touch_and_reuse_the_cache() {
    let g = Garage::start().unwrap_or_else(|e| panic!("cannot start a Garage server for the S3 tests: {e}"));
    let dir = tempfile::tempdir().expect("tmp");
    // 400 frames of 32 KiB, two incompressible pages rewritten per frame, a commit each.
    let (frame, n) = (32 * 1024usize, 400usize);
    let mut mem = vec![0u8; frame];
    let mut all = Vec::with_capacity(frame * n);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..n {
        for _ in 0..2 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let page = (x % 32) as usize * 1024;
            for k in 0..128 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                mem[page + k * 8..page + k * 8 + 8].copy_from_slice(&x.to_le_bytes());
            }
        }
        all.extend_from_slice(&mem);
    }
    let frames = dir.path().join("frames.bin");
    std::fs::write(&frames, &all).expect("write frames");
    let archive = dir.path().join("big.rwd");
    rewind()
        .args([
            "import",
            "--page-size",
            "1024",
            "--frame-size",
            "32768",
            "--batch",
            "1",
        ])
        .arg(&frames)
        .arg("-o")
        .arg(&archive)
        .assert()
        .success();
    let file_len = std::fs::metadata(&archive).expect("stat").len();
    assert!(file_len > 1 << 20, "{file_len}");
    let cache = dir.path().join("cache");
    let url = format!("s3://{}/lazy/big.rwd", g.bucket);
    remote_rewind(&g, &cache)
        .arg("push")
        .arg(&archive)
        .arg(&url)
        .assert()
        .success();
    let run = |args: &[&str]| {
        let out = remote_rewind(&g, &cache)
            .env("REWIND_REMOTE_STATS", "1")
            .arg(args[0])
            .arg(&url)
            .args(&args[1..])
            .output()
            .expect("run rewind");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let local = stdout(rewind().arg(args[0]).arg(&archive).args(&args[1..]));
        assert_eq!(String::from_utf8_lossy(&out.stdout), local, "rewind {args:?}");
        fetch_stats(&out.stderr)
    };
    // An old frame: a few requests and a small part of the file.
    let (req, bytes) = run(&["cat", "5", "--addr", "0x1000", "--len", "64"]);
    assert!(req <= 8, "{req} requests");
    assert!(bytes < file_len / 2, "{bytes} of {file_len}");
    // Again: the cache holds it, only the head is read.
    let (req, bytes) = run(&["cat", "5", "--addr", "0x1000", "--len", "64"]);
    assert_eq!(req, 1);
    assert!(bytes < 16 * 1024, "{bytes}");
    // The log walks every record; the reads ahead keep the requests few.
    let (req, _) = run(&["log"]);
    assert!(req <= 16, "{req} requests for log");
    let (req, _) = run(&["blame", "300", "--addr", "0x800", "--len", "8"]);
    assert!(req <= 16, "{req} requests for blame");
    // The cache stays within its budget across commands.
    let (cache_blocks, limit) = {
        let out = remote_rewind(&g, &cache)
            .env("REWIND_CACHE_BYTES", "256k")
            .arg("cat")
            .arg(format!("s3://{}/lazy/other.rwd", g.bucket))
            .args(["7", "--addr", "0", "--len", "8"])
            .output()
            .expect("run");
        assert!(!out.status.success(), "no archive there");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no archive at"), "{err}");
        use std::os::unix::fs::MetadataExt;
        let held: u64 = std::fs::read_dir(&cache)
            .expect("cache dir")
            .flatten()
            .map(|e| e.metadata().map(|m| m.blocks() * 512).unwrap_or(0))
            .sum();
        (held, 256 * 1024)
    };
    assert!(cache_blocks <= limit, "{cache_blocks} bytes cached");
    // A bad budget is a clear error; the whole-copy mode still reads.
    remote_rewind(&g, &cache)
        .env("REWIND_CACHE_BYTES", "lots")
        .arg("log")
        .arg(&url)
        .assert()
        .failure()
        .stderr(predicate::str::contains("REWIND_CACHE_BYTES"));
    let copy = stdout(
        remote_rewind(&g, &cache)
            .env("REWIND_REMOTE_READ", "copy")
            .arg("show")
            .arg(&url)
            .arg("17"),
    );
    assert_eq!(copy, stdout(rewind().arg("show").arg(&archive).arg("17")));
}
