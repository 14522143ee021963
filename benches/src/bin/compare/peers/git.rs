//! git as a content-addressed store of the frames: `fast-import` of one commit per
//! frame, `gc --aggressive`, then one old frame read back.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Peer, PeerRun};
use crate::args::Config;
use crate::workload::Spec;
use crate::{ms, Res};

/// git and the archive over the same first frames.
#[derive(Default)]
pub struct GitRun {
    pub frames: usize,
    pub ingest_s: f64,
    pub gc_s: f64,
    pub pack_bytes: u64,
    pub idx_bytes: u64,
    pub read: Vec<f64>,
    // The archive over the same frames.
    pub archive_ingest_s: f64,
    pub archive_bytes: u64,
    pub archive_read: Vec<f64>,
    pub read_frame: u64,
}

impl GitRun {
    /// git's row in the workload's table.
    pub fn peer_run(&self) -> PeerRun {
        PeerRun {
            disk_per_frame: Some(self.pack_bytes as f64 / self.frames as f64),
            open_read: self.read.clone(),
            ingest_s: Some(self.ingest_s + self.gc_s),
            ..PeerRun::new(Peer::Git)
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> Res<std::process::Output> {
    let out = Command::new("git")
        .args(args)
        .env("GIT_DIR", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()?;
    if !out.status.success() {
        return Err(format!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(out)
}

fn page_path(p: usize) -> String {
    format!("{:03x}/{:02x}", p >> 7, p & 127)
}

const COMMIT_MARK: u64 = 1 << 40;

/// git as a content-addressed store: `fast-import` of one commit per frame with one blob
/// per 4 KiB page (every page in the first frame, the written pages after), pages in a
/// two-level tree (`xxx/yy`, 128 pages per directory); then `git gc --aggressive`; then
/// read frame [`Spec::old_frame`] back (`ls-tree` + `cat-file --batch` of its blobs).
/// Runs over the first [`Spec::git_window`] frames.
pub fn run(spec: &Spec, cfg: &Config, dir: &Path, run: &mut GitRun) -> Res<()> {
    let old = spec.old_frame();
    let repo = dir.join("repo.git");
    Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&repo)
        .env("HOME", dir)
        .status()?;
    let marks = dir.join("marks");
    let (ingest, frames) = import(spec, dir, &repo, &marks)?;
    run.ingest_s = ingest.as_secs_f64();
    run.frames = frames;
    let t = Instant::now();
    if cfg.quick {
        git(&repo, &["gc", "--prune=now", "-q"])?;
    } else {
        git(&repo, &["gc", "--aggressive", "--prune=now", "-q"])?;
    }
    run.gc_s = t.elapsed().as_secs_f64();
    for e in std::fs::read_dir(repo.join("objects/pack"))? {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".pack") {
            run.pack_bytes += e.metadata()?.len();
        } else if n.ends_with(".idx") {
            run.idx_bytes += e.metadata()?.len();
        }
    }
    // Read frame `old` back.
    let marks_text = std::fs::read_to_string(&marks)?;
    let want = format!(":{} ", COMMIT_MARK + old);
    let commit = marks_text
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .ok_or("commit mark missing")?
        .to_string();
    let mut check = spec.source()?;
    let page = check.page_size();
    let mut buf = vec![1u8; check.memory().len()];
    for _ in 0..cfg.reps {
        let t = Instant::now();
        read_frame(&repo, &commit, &mut buf, page)?;
        run.read.push(ms(t.elapsed()));
    }
    run.read_frame = old;
    // Check the read against the archive-independent truth: replay the source.
    let mut d = Vec::new();
    for _ in 0..old {
        check.next_frame(&mut d);
    }
    if check.memory() != &buf[..] {
        return Err("git read-back differs from the frame".into());
    }
    Ok(())
}

/// `git fast-import` of the first [`Spec::git_window`] frames into `repo`, marks to
/// `marks`. Returns the time it took (less the time the source took to make the
/// frames) and the frames imported.
fn import(spec: &Spec, dir: &Path, repo: &Path, marks: &Path) -> Res<(Duration, usize)> {
    let mut src = spec.source()?;
    let page = src.page_size();
    let pages = src.memory().len() / page;
    let start = Instant::now();
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet", "--done"])
        .arg(format!("--export-marks={}", marks.display()))
        .env("GIT_DIR", repo)
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut stdin = BufWriter::with_capacity(1 << 20, child.stdin.take().ok_or("stdin")?);
    let mut stepping = Duration::ZERO;
    let mut dirty: Vec<u32> = Vec::new();
    let mut mark = 1u64;
    let mut written: Vec<(usize, u64)> = Vec::new();
    let mut done = 0;
    for f in 0..spec.git_window() {
        if f > 0 {
            let t = Instant::now();
            let more = src.next_frame(&mut dirty);
            stepping += t.elapsed();
            if !more {
                break;
            }
        }
        written.clear();
        let mem = src.memory();
        let list: Box<dyn Iterator<Item = usize>> = if f == 0 {
            Box::new(0..pages)
        } else {
            Box::new(dirty.iter().map(|&p| p as usize))
        };
        for p in list {
            write!(stdin, "blob\nmark :{mark}\ndata {page}\n")?;
            stdin.write_all(&mem[p * page..(p + 1) * page])?;
            stdin.write_all(b"\n")?;
            written.push((p, mark));
            mark += 1;
        }
        write!(
            stdin,
            "commit refs/heads/main\nmark :{}\ncommitter r <r@example.invalid> {} +0000\ndata 0\n",
            COMMIT_MARK + f as u64,
            1_700_000_000 + f
        )?;
        if f > 0 {
            writeln!(stdin, "from :{}", COMMIT_MARK + f as u64 - 1)?;
        }
        for &(p, m) in &written {
            writeln!(stdin, "M 100644 :{m} {}", page_path(p))?;
        }
        stdin.write_all(b"\n")?;
        done = f + 1;
    }
    stdin.write_all(b"done\n")?;
    drop(stdin.into_inner().map_err(|e| e.to_string())?);
    let status = child.wait()?;
    if !status.success() {
        return Err("git fast-import failed".into());
    }
    Ok((start.elapsed() - stepping, done))
}

fn read_frame(repo: &Path, commit: &str, buf: &mut [u8], page: usize) -> Res<()> {
    let tree = git(repo, &["ls-tree", "-r", commit])?;
    let mut order = Vec::new();
    let mut req = String::new();
    for line in String::from_utf8(tree.stdout)?.lines() {
        let (meta, path) = line.split_once('\t').ok_or("ls-tree line")?;
        let sha = meta.split_whitespace().nth(2).ok_or("ls-tree sha")?;
        let (d, f) = path.split_once('/').ok_or("path")?;
        let p = (usize::from_str_radix(d, 16)? << 7) | usize::from_str_radix(f, 16)?;
        order.push(p);
        req.push_str(sha);
        req.push('\n');
    }
    let mut child = Command::new("git")
        .args(["cat-file", "--batch"])
        .env("GIT_DIR", repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(req.as_bytes()));
    let mut out = BufReader::with_capacity(1 << 20, child.stdout.take().ok_or("stdout")?);
    let mut header = String::new();
    for &p in &order {
        header.clear();
        out.read_line(&mut header)?;
        let size: usize = header
            .split_whitespace()
            .nth(2)
            .ok_or("cat-file header")?
            .parse()?;
        if size != page {
            return Err("blob size".into());
        }
        out.read_exact(&mut buf[p * page..(p + 1) * page])?;
        let mut nl = [0u8; 1];
        out.read_exact(&mut nl)?;
    }
    writer.join().map_err(|_| "writer thread")??;
    child.wait()?;
    Ok(())
}
