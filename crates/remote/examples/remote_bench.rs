//! Measures push and pull against a local one-node Garage server: requests and bytes
//! to pull (and so open) a 1,000-frame archive, push of that history and then of 100
//! new frames (bytes sent against the bytes the new commits added), and upload
//! throughput against the local append. Needs the garage binary
//! (`scripts/install-garage.sh`); with `--memory`, runs against object_store's
//! in-memory store instead (the same requests and bytes, no network).
//!
//! `cargo run --release -p rewind-remote --example remote_bench [-- --memory]`

use std::time::Instant;

use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_history::{History, HistoryConfig};
use rewind_remote::garage::Garage;
use rewind_remote::object_store::memory::InMemory;
use rewind_remote::{PullOptions, PushOptions, Remote, TransferReport};
use std::sync::Arc;

const PAGE: usize = 4096;
const MEM: usize = 4 << 20;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The recorded guest: 4 MiB of memory, ~16 pages written per frame, each frame
/// captured and appended.
struct Recording {
    history: History,
    writer: ArchiveWriter,
    memory: Vec<u8>,
    x: u64,
    frame: u64,
}

impl Recording {
    fn create(path: &std::path::Path) -> Result<Recording> {
        let history = History::new(HistoryConfig::new(PAGE as u64)?.seed(1))?;
        let writer = ArchiveWriter::create(path, &history, Durability::Manual)?;
        Ok(Recording {
            history,
            writer,
            memory: vec![0u8; MEM],
            x: 0x9e37_79b9_7f4a_7c15,
            frame: 0,
        })
    }

    /// Record and append `n` frames, sync, and return the seconds taken.
    fn record(&mut self, n: u64) -> Result<f64> {
        let t = Instant::now();
        for _ in 0..n {
            // ~16 pages written per frame: a few bytes each at scattered addresses.
            for _ in 0..16 {
                self.x ^= self.x << 13;
                self.x ^= self.x >> 7;
                self.x ^= self.x << 17;
                let at = (self.x as usize) % MEM;
                self.memory[at] = self.x as u8;
            }
            self.history.capture(self.frame, &self.memory, &[], None, None)?;
            self.writer.append(&self.history)?;
            self.frame += 1;
        }
        self.writer.sync()?;
        Ok(t.elapsed().as_secs_f64())
    }
}

/// A transfer's report and the seconds it took.
struct Timed(TransferReport, f64);

fn timed(
    f: impl FnOnce() -> std::result::Result<TransferReport, rewind_remote::RemoteError>,
) -> Result<Timed> {
    let t = Instant::now();
    let r = f()?;
    Ok(Timed(r, t.elapsed().as_secs_f64()))
}

/// Everything measured, in the order the report prints it.
struct Figures {
    append_1000: f64,
    append_100: f64,
    len_1000: u64,
    len_1100: u64,
    open_s: f64,
    push_1000: Timed,
    pull_1000: Timed,
    push_100: Timed,
    pull_100: Timed,
    noop: Timed,
}

fn main() -> Result<()> {
    let memory_store = std::env::args().any(|a| a == "--memory");
    let g = if memory_store {
        None
    } else {
        Some(Garage::start()?)
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.rwd");
    let mut rec = Recording::create(&path)?;
    let append_1000 = rec.record(1000)?;
    let len_1000 = std::fs::metadata(&path)?.len();
    let remote = match &g {
        Some(g) => g.remote("bench/bench.rwd")?,
        None => Remote::with_store(Arc::new(InMemory::new()), "s3://bench/bench.rwd")?,
    };
    println!(
        "store: {}",
        if g.is_some() {
            "Garage 2.5.0, one node on 127.0.0.1"
        } else {
            "object_store InMemory"
        }
    );

    let push_1000 = timed(|| remote.push(&path, PushOptions::default()))?;
    let copy = dir.path().join("copy.rwd");
    let pull_1000 = timed(|| remote.pull(&copy, PullOptions::default()))?;
    let t = Instant::now();
    let a = Archive::open(&copy)?;
    let open_s = t.elapsed().as_secs_f64();
    assert_eq!(a.records()?.len(), 1000);
    drop(a);

    let append_100 = rec.record(100)?;
    let len_1100 = std::fs::metadata(&path)?.len();
    let push_100 = timed(|| remote.push(&path, PushOptions::default()))?;
    let pull_100 = timed(|| remote.pull(&copy, PullOptions::default()))?;
    let noop = timed(|| remote.pull(&copy, PullOptions::default()))?;
    assert_eq!(std::fs::read(&copy)?, std::fs::read(&path)?);
    let concurrency = concurrency_figures(&g, &path, dir.path())?;
    print_figures(&Figures {
        append_1000,
        append_100,
        len_1000,
        len_1100,
        open_s,
        push_1000,
        pull_1000,
        push_100,
        pull_100,
        noop,
    });
    println!();
    println!(
        "parts of 256 KiB, the 1,100-frame archive to a new key each time; median of 3 alternating runs:"
    );
    println!();
    println!("| concurrency | push | pull |");
    println!("| --- | --- | --- |");
    for (n, push, pull) in concurrency {
        println!(
            "| {n} | {:.0} ms ({:.0} MiB/s) | {:.0} ms ({:.0} MiB/s) |",
            push * 1e3,
            mib(len_1100) / push,
            pull * 1e3,
            mib(len_1100) / pull
        );
    }
    Ok(())
}

/// Push and pull `path` in parts of 256 KiB with 1 and with 4 parts in flight,
/// alternating, three times each: `(concurrency, median push s, median pull s)`.
fn concurrency_figures(
    g: &Option<Garage>,
    path: &std::path::Path,
    dir: &std::path::Path,
) -> Result<Vec<(usize, f64, f64)>> {
    let memory = Arc::new(InMemory::new());
    let mut runs: Vec<(usize, Vec<f64>, Vec<f64>)> = vec![(1, vec![], vec![]), (4, vec![], vec![])];
    for round in 0..3 {
        for (n, pushes, pulls) in runs.iter_mut() {
            let key = format!("bench/c{n}-{round}.rwd");
            let remote = match g {
                Some(g) => g.remote(&key)?,
                None => Remote::with_store(memory.clone(), &format!("s3://bench/{key}"))?,
            }
            .part_size(256 << 10)
            .concurrency(*n);
            pushes.push(timed(|| remote.push(path, PushOptions::default()))?.1);
            let copy = dir.join(format!("c{n}-{round}.rwd"));
            pulls.push(timed(|| remote.pull(&copy, PullOptions::default()))?.1);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Ok(runs
        .into_iter()
        .map(|(n, mut a, mut b)| (n, median(&mut a), median(&mut b)))
        .collect())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn row(what: &str, Timed(r, s): &Timed, data: u64) {
    println!(
        "| {what} | {} | {} | {:.2} MiB | {:.0} ms | {:.0} MiB/s |",
        r.requests,
        r.parts_sent + r.parts_fetched,
        mib(data),
        s * 1e3,
        mib(data) / s.max(1e-9)
    );
}

fn print_figures(f: &Figures) {
    println!(
        "archive: 1,000 frames of 4 MiB memory (~16 pages written per frame), {:.2} MiB; +100 frames: +{:.2} MiB",
        mib(f.len_1000),
        mib(f.len_1100 - f.len_1000)
    );
    println!(
        "local append: 1,000 frames {:.0} ms ({:.0} MiB/s of file), 100 frames {:.0} ms",
        f.append_1000 * 1e3,
        mib(f.len_1000) / f.append_1000,
        f.append_100 * 1e3
    );
    println!("open of the pulled file: {:.3} ms", f.open_s * 1e3);
    println!();
    println!("| transfer | requests | parts | archive bytes moved | time | throughput |");
    println!("| --- | --- | --- | --- | --- | --- |");
    row(
        "push 1,000 frames (new remote)",
        &f.push_1000,
        f.push_1000.0.data_bytes_sent,
    );
    row(
        "pull 1,000 frames (new file)",
        &f.pull_1000,
        f.pull_1000.0.data_bytes_fetched,
    );
    row("push +100 frames", &f.push_100, f.push_100.0.data_bytes_sent);
    row("pull +100 frames", &f.pull_100, f.pull_100.0.data_bytes_fetched);
    row("pull, nothing new", &f.noop, f.noop.0.data_bytes_fetched);
    println!();
    let (push, pull) = (&f.push_100.0, &f.pull_100.0);
    println!(
        "+100 frames: new bytes {} , sent {} archive bytes + {} head bytes; fetched {} archive bytes + {} head bytes",
        f.len_1100 - f.len_1000,
        push.data_bytes_sent,
        push.bytes_sent - push.data_bytes_sent,
        pull.data_bytes_fetched,
        pull.bytes_fetched - pull.data_bytes_fetched
    );
}
