//! Late-joiner bundles: `rewind export --bundle`, `rewind verify --bundle` and
//! `rewind import --bundle` against a receiver holding earlier frames.

use crate::common::*;

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
    import_into(&have, &fx.files[..30]);
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
