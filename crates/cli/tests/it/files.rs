//! How commands treat their files: bad input, outputs that are inputs, links, devices, the umask.

use std::path::Path;

use crate::common::*;

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
