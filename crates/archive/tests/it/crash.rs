//! A crash test that really kills: this test binary re-executes itself as a writer
//! (selected by an environment variable), which appends iterations with a sync per
//! iteration and prints each synced iteration; the parent SIGKILLs it at random moments
//! and checks the file after every kill.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_history::{History, HistoryConfig};
use rewind_snapshot::GlobalValue;

use crate::common::splitmix;

const ENV: &str = "REWIND_ARCHIVE_CRASH_CHILD";
const MEM: usize = 16 * 1024;

/// The deterministic step of iteration `i`: overwrite three runs.
fn mutate(mem: &mut [u8], i: u64) {
    for k in 0..3 {
        let r = splitmix(i * 3 + k);
        let start = (r as usize) % (MEM - 100);
        let len = 1 + (r >> 32) as usize % 96;
        mem[start..start + len].fill((r >> 24) as u8 | 1);
    }
}

fn input(i: u64) -> Vec<u8> {
    i.to_le_bytes().repeat(1 + (i % 3) as usize)
}

/// The child: append until killed.
fn writer(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let (mut history, mut writer) = if path.exists() {
        rewind_archive::repair(path)?;
        let a = Archive::open(path)?;
        let h = a.to_history()?;
        drop(a);
        (h, ArchiveWriter::open(path, Durability::EveryAppend)?)
    } else {
        let h = History::new(HistoryConfig::new(1024)?.seed(99))?;
        let w = ArchiveWriter::create(path, &h, Durability::EveryAppend)?;
        (h, w)
    };
    let (mut mem, mut i) = match history.head() {
        Some(head) => {
            let mut m = vec![0u8; MEM];
            rewind_snapshot::read(history.store(), head.snapshot(), 0, &mut m)?;
            (m, head.iteration() + 1)
        }
        None => (vec![0u8; MEM], 0),
    };
    let out = std::io::stdout();
    loop {
        mutate(&mut mem, i);
        history.capture(i, &mem, &[GlobalValue::I64(i as i64)], None, Some(&input(i)))?;
        writer.append(&history)?;
        let mut o = out.lock();
        writeln!(o, "synced {i}")?;
        o.flush()?;
        i += 1;
    }
}

#[test]
#[ignore = "the crash test's child process; run by crash_kill_loop"]
fn crash_child() {
    if let Ok(p) = std::env::var(ENV) {
        if let Err(e) = writer(Path::new(&p)) {
            eprintln!("child error: {e}");
            std::process::exit(3);
        }
    }
}

fn kill_loop(kills: usize, seed: u64) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("crash.rwd");
    let exe = std::env::current_exe().expect("exe");
    // Expected memories, by iteration.
    let mut expected: Vec<Vec<u8>> = Vec::new();
    let mut model = vec![0u8; MEM];
    let mut rng = seed;
    let mut max_synced: Option<u64> = None;
    let started = Instant::now();
    for kill in 0..kills {
        rng = splitmix(rng);
        let delay = Duration::from_micros(2_000 + rng % 40_000);
        let mut child = Command::new(&exe)
            .args([
                "crash::crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut synced = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("synced ") {
                    synced.push(n.parse::<u64>().expect("number"));
                }
            }
            synced
        });
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
        let status = child.wait().expect("wait");
        assert!(
            status.code() != Some(3),
            "the writer failed by itself (kill {kill})"
        );
        let synced = reader.join().expect("reader");
        if let Some(&m) = synced.iter().max() {
            max_synced = Some(max_synced.map_or(m, |x: u64| x.max(m)));
        }
        if !path.exists() {
            continue;
        }
        // After every kill: the file opens, everything reported synced is there.
        let a = match Archive::open(&path) {
            Ok(a) => a,
            Err(rewind_archive::ArchiveError::Truncated { .. }) if max_synced.is_none() => continue, // killed inside create
            Err(e) => panic!("reopen failed after kill {kill}: {e}"),
        };
        let tl = a.timeline().expect("timeline");
        for (k, r) in tl.iter().enumerate() {
            assert_eq!(r.iteration, k as u64, "the timeline has no gaps");
        }
        let last = tl.last().map(|r| r.iteration);
        if let Some(m) = max_synced {
            assert!(
                last.is_some_and(|l| l >= m),
                "iteration {m} was synced but the file ends at {last:?}"
            );
        }
        let Some(last) = last else { continue };
        while expected.len() as u64 <= last {
            mutate(&mut model, expected.len() as u64);
            expected.push(model.clone());
        }
        // Check the iterations this run reported, the head, and a sample of older ones.
        let mut check: Vec<u64> = synced.clone();
        check.push(last);
        for _ in 0..8 {
            rng = splitmix(rng);
            check.push(rng % (last + 1));
        }
        let mut buf = vec![0u8; MEM];
        for i in check {
            let r = a.at(i).expect("a synced iteration is present");
            a.read_record(r.id, 0, &mut buf).expect("read");
            assert!(
                buf == expected[i as usize],
                "iteration {i} differs after kill {kill}"
            );
            assert_eq!(
                a.globals(r.id).expect("globals"),
                vec![GlobalValue::I64(i as i64)]
            );
            assert_eq!(a.input(r.id).expect("input"), Some(&input(i)[..]));
        }
    }
    let a = Archive::open(&path).expect("final open");
    let n = a.timeline().expect("timeline").len();
    eprintln!(
        "crash test: {kills} kills, {n} iterations in the file, {} bytes, {:?}",
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        started.elapsed()
    );
    rewind_archive::repair(&path).expect("repair");
    Archive::open(&path)
        .expect("open")
        .verify()
        .expect("the file verifies at the end");
    assert!(n > kills / 4, "the file grows across kills");
}

#[test]
fn crash_kill_loop() {
    kill_loop(220, 0xc0ffee);
}

#[test]
#[ignore = "long: 3,000 kills"]
fn crash_kill_loop_long() {
    kill_loop(3000, 0xdecaf);
}
