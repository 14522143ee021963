//! One writer, many readers: the writer lock, files replaced by rename, refused
//! non-regular inputs. The process tests re-execute this test binary in a child role
//! (selected by an environment variable) driven line by line over stdin/stdout, so they
//! wait on each other's messages, never on time.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use rewind_archive::{
    compact, lock_path, repair, Archive, ArchiveError, ArchiveLock, ArchiveWriter, Durability,
};
use rewind_gc::Policy;
use rewind_history::{History, HistoryConfig};
use rewind_snapshot::GlobalValue;

use crate::common::*;

const ROLE: &str = "REWIND_ARCHIVE_LOCK_ROLE";
const PATH: &str = "REWIND_ARCHIVE_LOCK_PATH";
const MEM: usize = 16 * 1024;
const PAGE: u64 = 1024;
const SEED: u64 = 4242;

/// The memory of iteration `i` is `model(i)`: each iteration overwrites a few runs.
fn step(mem: &mut [u8], i: u64) {
    for k in 0..3 {
        let r = splitmix(i * 3 + k);
        let start = (r as usize) % (MEM - 100);
        let len = 1 + (r >> 32) as usize % 96;
        mem[start..start + len].fill((r >> 24) as u8 | 1);
    }
}

/// Memories of iterations `0..n`.
fn models(n: u64) -> Vec<Vec<u8>> {
    let mut mem = vec![0u8; MEM];
    (0..n)
        .map(|i| {
            step(&mut mem, i);
            mem.clone()
        })
        .collect()
}

/// A history of iterations `0..n`.
fn history(n: u64) -> History {
    let mut h = History::new(HistoryConfig::new(PAGE).expect("cfg").seed(SEED)).expect("history");
    let mut mem = vec![0u8; MEM];
    for i in 0..n {
        step(&mut mem, i);
        h.capture(i, &mem, &[GlobalValue::I64(i as i64)], None, None)
            .expect("capture");
    }
    h
}

/// Every record on the timeline of `a` holds its model memory; returns how many.
fn check_against_model(a: &Archive, model: &mut Vec<Vec<u8>>) -> Result<usize, String> {
    let tl = a.timeline().map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MEM];
    for r in &tl {
        while model.len() as u64 <= r.iteration {
            let mut m = model.last().cloned().unwrap_or_else(|| vec![0u8; MEM]);
            step(&mut m, model.len() as u64);
            model.push(m);
        }
        a.read_record(r.id, 0, &mut buf).map_err(|e| e.to_string())?;
        if buf != model[r.iteration as usize] {
            return Err(format!("iteration {} differs", r.iteration));
        }
    }
    Ok(tl.len())
}

// ---- in-process ------------------------------------------------------------------

#[test]
fn create_refuses_an_existing_path_and_replace_keeps_mapped_readers_intact() {
    let dir = tmpdir();
    let path = dir.path().join("a.rwd");
    let h = history(12);
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual).expect("create");
    w.append(&h).expect("append");
    drop(w);
    let r = ArchiveWriter::create(&path, &h, Durability::Manual);
    assert!(matches!(r, Err(ArchiveError::Exists { .. })), "{r:?}");
    // Nothing else was left behind: no temporary file, no lock file.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("a.rwd")]);
    // A reader maps the file; replacing it with a shorter archive must not touch the
    // mapped bytes (a truncate in place would make the reader's reads fault).
    let old = Archive::open(&path).expect("open");
    let mut model = models(12);
    let short = history(3);
    let mut w = ArchiveWriter::replace(&path, &short, Durability::Manual).expect("replace");
    w.append(&short).expect("append");
    drop(w);
    assert_eq!(check_against_model(&old, &mut model), Ok(12));
    old.verify().expect("the old mapping still verifies");
    let new = Archive::open(&path).expect("open new");
    assert_eq!(check_against_model(&new, &mut model), Ok(3));
}

#[test]
fn replace_follows_a_symlink_and_keeps_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmpdir();
    let target = dir.path().join("t.rwd");
    let link = dir.path().join("l.rwd");
    let h = history(4);
    let mut w = ArchiveWriter::create(&target, &h, Durability::Manual).expect("create");
    w.append(&h).expect("append");
    drop(w);
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let h2 = history(6);
    let mut w = ArchiveWriter::replace(&link, &h2, Durability::Manual).expect("replace");
    // The link and its target share one lock.
    assert!(matches!(
        ArchiveLock::acquire(&target),
        Err(ArchiveError::Locked { .. })
    ));
    w.append(&h2).expect("append");
    drop(w);
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    let mode = std::fs::metadata(&target).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert_eq!(
        Archive::open(&target)
            .expect("open")
            .records()
            .expect("records")
            .len(),
        6
    );
    // Compaction also writes through the link and keeps the mode.
    compact(&link, &Policy::default().keep_last(2)).expect("compact");
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    let mode = std::fs::metadata(&target).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // Replace refuses what is not a regular file.
    let r = ArchiveWriter::replace(dir.path(), &h2, Durability::Manual);
    assert!(matches!(r, Err(ArchiveError::NotAFile { .. })), "{r:?}");
}

#[test]
fn a_second_writer_repair_and_compact_are_refused_naming_the_pid() {
    let dir = tmpdir();
    let path = dir.path().join("a.rwd");
    let h = history(5);
    let mut w = ArchiveWriter::create(&path, &h, Durability::EveryAppend).expect("create");
    w.append(&h).expect("append");
    let me = Some(std::process::id());
    let locked = |r: Result<(), ArchiveError>| match r {
        Err(ArchiveError::Locked { pid, path: p }) => {
            assert_eq!(pid, me);
            assert_eq!(p, path);
            let msg = ArchiveError::Locked { pid, path: p }.to_string();
            assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        }
        other => panic!("expected Locked, got {other:?}"),
    };
    locked(ArchiveWriter::open(&path, Durability::Manual).map(drop));
    locked(ArchiveWriter::replace(&path, &h, Durability::Manual).map(drop));
    locked(repair(&path).map(drop));
    locked(compact(&path, &Policy::default()).map(drop));
    locked(ArchiveLock::acquire(&path).map(drop));
    assert!(lock_path(&path).exists());
    // Readers need no lock.
    Archive::open(&path).expect("open").verify().expect("verify");
    drop(w);
    assert!(!lock_path(&path).exists(), "the lock file goes with the lock");
    let w = ArchiveWriter::open(&path, Durability::Manual).expect("open after release");
    drop(w);
    assert_eq!(repair(&path).expect("repair"), None);
    compact(&path, &Policy::default()).expect("compact");
}

#[test]
fn non_regular_inputs_are_refused_without_reading_them() {
    let dir = tmpdir();
    let is = |r: Result<Archive, ArchiveError>, want: &str| match r {
        Err(ArchiveError::NotAFile { what, .. }) => assert_eq!(what, want),
        other => panic!("expected NotAFile({want}), got {other:?}"),
    };
    is(Archive::open(dir.path()), "a directory");
    is(Archive::open("/dev/zero"), "a character device");
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    // An ordinary open of a FIFO blocks until a writer appears: this returns at once.
    is(Archive::open(&fifo), "a FIFO");
    let r = repair(dir.path());
    assert!(
        matches!(
            r,
            Err(ArchiveError::NotAFile { .. }) | Err(ArchiveError::Io { .. })
        ),
        "{r:?}"
    );
}

// ---- child processes -------------------------------------------------------------

/// A child role, driven over stdin: `writer` appends one iteration per `append` line
/// and answers `synced <i>`; it answers `locked <pid>` and exits when the lock is taken.
/// `reader` opens, verifies and reads every record against the model until stdin
/// closes, then answers `rounds <n>`.
#[test]
#[ignore = "a child process of the locking tests"]
fn lock_child() {
    let (Ok(role), Ok(path)) = (std::env::var(ROLE), std::env::var(PATH)) else {
        return;
    };
    let path = Path::new(&path);
    let out = std::io::stdout();
    let say = |s: String| {
        let mut o = out.lock();
        writeln!(o, "{s}").expect("stdout");
        o.flush().expect("flush");
    };
    match role.as_str() {
        "writer" => {
            let opened = if path.exists() {
                ArchiveWriter::open(path, Durability::EveryAppend).and_then(|w| {
                    let h = Archive::open(path)?.to_history()?;
                    Ok((w, h))
                })
            } else {
                let h = History::new(HistoryConfig::new(PAGE).expect("cfg").seed(SEED)).expect("history");
                ArchiveWriter::create(path, &h, Durability::EveryAppend).map(|w| (w, h))
            };
            let (mut w, mut h) = match opened {
                Ok(x) => x,
                Err(ArchiveError::Locked { pid, .. }) => {
                    say(format!("locked {}", pid.map_or(-1, i64::from)));
                    return;
                }
                Err(ArchiveError::Exists { .. }) => {
                    say("exists".into());
                    return;
                }
                Err(e) => panic!("writer: {e}"),
            };
            say("ready".into());
            let mut mem = vec![0u8; MEM];
            let mut i = 0u64;
            if let Some(head) = h.head() {
                rewind_snapshot::read(h.store(), head.snapshot(), 0, &mut mem).expect("read");
                i = head.iteration() + 1;
            }
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if line != "append" {
                    break;
                }
                step(&mut mem, i);
                h.capture(i, &mem, &[GlobalValue::I64(i as i64)], None, None)
                    .expect("capture");
                w.append(&h).expect("append");
                say(format!("synced {i}"));
                i += 1;
            }
        }
        "reader" => {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s = stop.clone();
            std::thread::spawn(move || {
                for _ in std::io::stdin().lock().lines().map_while(Result::ok) {}
                s.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            let mut model = Vec::new();
            let mut rounds = 0u64;
            say("ready".into());
            loop {
                let a = Archive::open(path).expect("every open sees a whole archive");
                a.verify().expect("every open archive verifies");
                check_against_model(&a, &mut model).expect("every record reads byte-exact");
                rounds += 1;
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
            say(format!("rounds {rounds}"));
        }
        other => panic!("unknown role {other}"),
    }
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Proc {
    fn spawn(role: &str, path: &Path) -> Proc {
        let exe = std::env::current_exe().expect("exe");
        let mut child = Command::new(exe)
            .args([
                "locking::lock_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(PATH, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Proc { child, stdin, lines }
    }

    /// The next line the role said (the test harness's own lines skipped).
    fn next(&mut self) -> String {
        for line in self.lines.by_ref().map_while(Result::ok) {
            // The first line shares its line with the harness's "test name ... ".
            let line = match line.split_once(" ... ") {
                Some((_, said)) => said.to_string(),
                None => line,
            };
            let known = ["ready", "synced ", "locked ", "exists", "rounds "];
            if known.iter().any(|k| line.starts_with(k)) {
                return line;
            }
        }
        String::from("<eof>")
    }

    fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().expect("stdin open");
        writeln!(s, "{line}").expect("send");
        s.flush().expect("flush");
    }

    /// Append one iteration; its number.
    fn append(&mut self) -> u64 {
        self.send("append");
        let l = self.next();
        l.strip_prefix("synced ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("writer said {l:?}"))
    }

    /// Close stdin and wait for a clean exit.
    fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let rest: Vec<String> = std::iter::from_fn(|| Some(self.next()))
            .take_while(|l| l != "<eof>")
            .collect();
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "child ended with {status}");
        rest
    }
}

/// Every iteration in `synced` reads byte-exact from the archive at `path`.
fn all_durable(path: &Path, synced: &[u64]) {
    let a = Archive::open(path).expect("open");
    a.verify().expect("verify");
    let model = models(synced.iter().max().map_or(0, |m| m + 1));
    let mut buf = vec![0u8; MEM];
    for &i in synced {
        let r = a.at(i).expect("a durable iteration is in the file");
        a.read_record(r.id, 0, &mut buf).expect("read");
        assert!(buf == model[i as usize], "iteration {i} differs");
    }
}

#[test]
fn two_writer_processes_race_and_the_second_is_refused() {
    let dir = tmpdir();
    let path = dir.path().join("race.rwd");
    // Both start on a path that does not exist: one creates, the other is refused.
    let mut a = Proc::spawn("writer", &path);
    let mut b = Proc::spawn("writer", &path);
    let (sa, sb) = (a.next(), b.next());
    let (mut winner, loser, said) = match (sa.as_str(), sb.as_str()) {
        ("ready", _) => (a, b, sb),
        (_, "ready") => (b, a, sa),
        _ => panic!("neither writer started: {sa:?} {sb:?}"),
    };
    assert!(
        said.starts_with("locked ") || said == "exists" || said == "ready",
        "the second writer said {said:?}"
    );
    if said == "ready" {
        panic!("two writers hold the same archive");
    }
    loser.finish();
    let mut synced: Vec<u64> = (0..5).map(|_| winner.append()).collect();
    // A third writer starting mid-run is refused with the holder's pid.
    let third = Proc::spawn("writer", &path);
    let pid = winner.child.id();
    let mut third = third;
    assert_eq!(third.next(), format!("locked {pid}"));
    third.finish();
    synced.extend((0..5).map(|_| winner.append()));
    winner.finish();
    assert_eq!(synced, (0..10).collect::<Vec<_>>());
    all_durable(&path, &synced);
}

#[test]
fn repair_and_compact_are_refused_while_a_writer_process_appends() {
    let dir = tmpdir();
    let path = dir.path().join("busy.rwd");
    let mut w = Proc::spawn("writer", &path);
    assert_eq!(w.next(), "ready");
    let pid = Some(w.child.id());
    let mut synced = Vec::new();
    for round in 0..6 {
        synced.push(w.append());
        let r = repair(&path);
        assert!(
            matches!(r, Err(ArchiveError::Locked { pid: p, .. }) if p == pid),
            "round {round}: {r:?}"
        );
        let r = compact(&path, &Policy::default().keep_last(2));
        assert!(
            matches!(r, Err(ArchiveError::Locked { pid: p, .. }) if p == pid),
            "round {round}: {r:?}"
        );
        // The writer goes on after each refusal, on the same file.
        synced.push(w.append());
    }
    w.finish();
    all_durable(&path, &synced);
    // Once the writer is gone, both run.
    assert_eq!(repair(&path).expect("repair"), None);
    compact(&path, &Policy::default()).expect("compact");
    all_durable(&path, &synced);
}

#[test]
fn a_reader_process_never_faults_while_the_archive_is_replaced_compacted_and_appended() {
    let dir = tmpdir();
    let path = dir.path().join("live.rwd");
    let mut w = ArchiveWriter::create(&path, &history(0), Durability::Manual).expect("create");
    let h = history(40);
    w.append(&h).expect("append");
    drop(w);
    let mut reader = Proc::spawn("reader", &path);
    assert_eq!(reader.next(), "ready");
    for round in 0..24u64 {
        match round % 3 {
            0 => {
                // Re-create with a different length (shorter or longer than before).
                let n = 5 + (round * 7) % 50;
                let h = history(n);
                let mut w = ArchiveWriter::replace(&path, &h, Durability::Manual).expect("replace");
                w.append(&h).expect("append");
            }
            1 => {
                // Append more iterations to the current file.
                let a = Archive::open(&path).expect("open");
                let mut h = a.to_history().expect("load");
                drop(a);
                let mut w = ArchiveWriter::open(&path, Durability::Manual).expect("open writer");
                let mut mem = vec![0u8; MEM];
                let next = match h.head() {
                    Some(head) => {
                        rewind_snapshot::read(h.store(), head.snapshot(), 0, &mut mem).expect("read");
                        head.iteration() + 1
                    }
                    None => 0,
                };
                for i in next..next + 10 {
                    step(&mut mem, i);
                    h.capture(i, &mem, &[GlobalValue::I64(i as i64)], None, None)
                        .expect("capture");
                    w.append(&h).expect("append");
                }
            }
            _ => {
                compact(&path, &Policy::default().keep_last(8)).expect("compact");
            }
        }
    }
    let rest = reader.finish();
    let rounds: u64 = rest
        .iter()
        .find_map(|l| l.strip_prefix("rounds ").and_then(|n| n.parse().ok()))
        .expect("the reader reports its rounds");
    assert!(rounds >= 1);
}
