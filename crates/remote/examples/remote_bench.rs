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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let memory_store = std::env::args().any(|a| a == "--memory");
    let g = if memory_store {
        None
    } else {
        Some(Garage::start()?)
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.rwd");
    let mut history = History::new(HistoryConfig::new(PAGE as u64)?.seed(1))?;
    let mut writer = ArchiveWriter::create(&path, &history, Durability::Manual)?;
    let mut memory = vec![0u8; MEM];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut frame = 0u64;
    let mut record = |n: u64,
                      history: &mut History,
                      writer: &mut ArchiveWriter|
     -> Result<f64, Box<dyn std::error::Error>> {
        let t = Instant::now();
        for _ in 0..n {
            // ~16 pages written per frame: a few bytes each at scattered addresses.
            for _ in 0..16 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % MEM;
                memory[at] = x as u8;
            }
            history.capture(frame, &memory, &[], None, None)?;
            writer.append(history)?;
            frame += 1;
        }
        writer.sync()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let append_1000 = record(1000, &mut history, &mut writer)?;
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

    let t = Instant::now();
    let push_1000 = remote.push(&path, PushOptions::default())?;
    let push_1000_s = t.elapsed().as_secs_f64();

    let copy = dir.path().join("copy.rwd");
    let t = Instant::now();
    let pull_1000 = remote.pull(&copy, PullOptions::default())?;
    let pull_1000_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let a = Archive::open(&copy)?;
    let open_s = t.elapsed().as_secs_f64();
    assert_eq!(a.records()?.len(), 1000);
    drop(a);

    let append_100 = record(100, &mut history, &mut writer)?;
    let len_1100 = std::fs::metadata(&path)?.len();
    let t = Instant::now();
    let push_100 = remote.push(&path, PushOptions::default())?;
    let push_100_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let pull_100 = remote.pull(&copy, PullOptions::default())?;
    let pull_100_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let noop = remote.pull(&copy, PullOptions::default())?;
    let noop_s = t.elapsed().as_secs_f64();
    assert_eq!(std::fs::read(&copy)?, std::fs::read(&path)?);

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let row = |what: &str, r: &TransferReport, s: f64, data: u64| {
        println!(
            "| {what} | {} | {} | {:.2} MiB | {:.0} ms | {:.0} MiB/s |",
            r.requests,
            r.parts_sent + r.parts_fetched,
            mib(data),
            s * 1e3,
            mib(data) / s.max(1e-9)
        );
    };
    println!("archive: 1,000 frames of 4 MiB memory (~16 pages written per frame), {:.2} MiB; +100 frames: +{:.2} MiB", mib(len_1000), mib(len_1100 - len_1000));
    println!(
        "local append: 1,000 frames {:.0} ms ({:.0} MiB/s of file), 100 frames {:.0} ms",
        append_1000 * 1e3,
        mib(len_1000) / append_1000,
        append_100 * 1e3
    );
    println!("open of the pulled file: {:.3} ms", open_s * 1e3);
    println!();
    println!("| transfer | requests | parts | archive bytes moved | time | throughput |");
    println!("| --- | --- | --- | --- | --- | --- |");
    row(
        "push 1,000 frames (new remote)",
        &push_1000,
        push_1000_s,
        push_1000.data_bytes_sent,
    );
    row(
        "pull 1,000 frames (new file)",
        &pull_1000,
        pull_1000_s,
        pull_1000.data_bytes_fetched,
    );
    row(
        "push +100 frames",
        &push_100,
        push_100_s,
        push_100.data_bytes_sent,
    );
    row(
        "pull +100 frames",
        &pull_100,
        pull_100_s,
        pull_100.data_bytes_fetched,
    );
    row("pull, nothing new", &noop, noop_s, noop.data_bytes_fetched);
    println!();
    println!(
        "+100 frames: new bytes {} , sent {} archive bytes + {} head bytes; fetched {} archive bytes + {} head bytes",
        len_1100 - len_1000,
        push_100.data_bytes_sent,
        push_100.bytes_sent - push_100.data_bytes_sent,
        pull_100.data_bytes_fetched,
        pull_100.bytes_fetched - pull_100.data_bytes_fetched
    );
    Ok(())
}
