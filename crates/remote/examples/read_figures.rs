//! Measures reading a remote archive in place: requests and bytes fetched to open a
//! 1,000-frame archive, read an old frame, list it as `rewind log` does and blame a
//! range as `rewind blame` does, each from a cold cache and again from the warm
//! cache a previous reader left, against the size of the file. Runs against
//! object_store's in-memory store (requests and bytes are what a server would see),
//! or against a one-node Garage server with `--garage` (needs the garage binary,
//! `scripts/install-garage.sh`).
//!
//! `cargo run --release -p rewind-remote --example read_figures [-- --garage]`

use std::sync::Arc;

use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_history::{History, HistoryConfig};
use rewind_remote::garage::Garage;
use rewind_remote::object_store::memory::InMemory;
use rewind_remote::{PushOptions, Remote, TransferReport};

const PAGE: usize = 4096;
const MEM: usize = 4 << 20;
const FRAMES: u64 = 1000;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// 1,000 frames of 4 MiB memory, ~16 pages written per frame, a commit each (the
/// recording of `remote_bench`).
fn record(path: &std::path::Path) -> Result<()> {
    let mut history = History::new(HistoryConfig::new(PAGE as u64)?.seed(1))?;
    let mut writer = ArchiveWriter::create(path, &history, Durability::Manual)?;
    let mut memory = vec![0u8; MEM];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for frame in 0..FRAMES {
        for _ in 0..16 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            memory[(x as usize) % MEM] = x as u8;
        }
        history.capture(frame, &memory, &[], None, Some(&frame.to_le_bytes()))?;
        writer.append(&history)?;
    }
    writer.sync()?;
    Ok(())
}

/// What `rewind log` reads: the timeline, then each record's detail and input.
fn log(a: &Archive) -> Result<usize> {
    let tl = a.timeline()?;
    for r in &tl {
        a.record_detail(r.id)?;
        a.input(r.id)?;
    }
    Ok(tl.len())
}

/// What `rewind blame` reads: the value, the chain of changes, each one's bytes.
fn blame(a: &Archive, iteration: u64, addr: u64) -> Result<usize> {
    let r = a.at(iteration)?;
    let mut buf = [0u8; 8];
    a.read_record(r.id, addr, &mut buf)?;
    let chain = a.blame_chain(r.id, addr, 8, 100)?;
    for b in &chain {
        a.read_record(b.record, addr, &mut buf)?;
        if let Some(p) = a.record(b.record)?.parent {
            a.read_record(p, addr, &mut buf)?;
        }
    }
    Ok(chain.len())
}

struct Row {
    what: &'static str,
    cold: TransferReport,
    warm: TransferReport,
}

fn main() -> Result<()> {
    let garage = std::env::args().any(|a| a == "--garage");
    let g = if garage { Some(Garage::start()?) } else { None };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("read.rwd");
    record(&path)?;
    let file_len = std::fs::metadata(&path)?.len();
    let memory = Arc::new(InMemory::new());
    let new_remote = || -> Result<Arc<Remote>> {
        Ok(Arc::new(match &g {
            Some(g) => g.remote("figures/read.rwd")?,
            None => Remote::with_store(memory.clone(), "s3://figures/read.rwd")?,
        }))
    };
    let pushed = new_remote()?.push(&path, PushOptions::default())?;
    let local = Archive::open(&path)?;

    // Each row is one command: a fresh remote (its counters at zero) opens the archive
    // and does the step; `cold` with an empty cache, `warm` with the cache the cold
    // run left.
    type Step = fn(&Archive, &Archive) -> Result<()>;
    let steps: [(&'static str, Step); 7] = [
        ("open (head, header, tail)", |_, _| Ok(())),
        ("state hash of frame 100", |a, local| {
            assert_eq!(a.state_hash(100)?, local.state_hash(100)?);
            Ok(())
        }),
        ("cat 64 bytes at frame 100", |a, local| {
            let (mut m, mut l) = ([0u8; 64], [0u8; 64]);
            a.read(100, 0x1234, &mut m)?;
            local.read(100, 0x1234, &mut l)?;
            assert_eq!(m, l);
            Ok(())
        }),
        ("read frame 100 (state hash, all 4 MiB)", |a, local| {
            assert_eq!(a.state_hash(100)?, local.state_hash(100)?);
            let mut m = vec![0u8; MEM];
            a.read(100, 0, &mut m)?;
            let mut l = vec![0u8; MEM];
            local.read(100, 0, &mut l)?;
            assert!(m == l);
            Ok(())
        }),
        (
            "global names, as `show` reads them (every commit's trailer)",
            |a, local| {
                assert_eq!(a.global_names()?, local.global_names()?);
                Ok(())
            },
        ),
        ("log (1,000 records)", |a, _| {
            assert_eq!(log(a)?, FRAMES as usize);
            Ok(())
        }),
        ("blame 8 bytes at frame 999", |a, local| {
            assert_eq!(blame(a, 999, 0x1234)?, blame(local, 999, 0x1234)?);
            Ok(())
        }),
    ];
    let mut rows = Vec::new();
    for (i, (what, step)) in steps.iter().enumerate() {
        let cache = dir.path().join(format!("cache-{i}"));
        let run = || -> Result<TransferReport> {
            let remote = new_remote()?;
            let a = remote.open_archive(&cache)?;
            step(&a, &local)?;
            Ok(remote.report())
        };
        let cold = run()?;
        let warm = run()?;
        rows.push(Row { what, cold, warm });
    }
    println!(
        "store: {}",
        if g.is_some() {
            "Garage 2.5.0, one node on 127.0.0.1"
        } else {
            "object_store InMemory"
        }
    );
    println!(
        "archive: {FRAMES} frames of 4 MiB memory (~16 pages written per frame), {} bytes in {} parts (pushed with {} requests)",
        file_len,
        new_remote()?.head()?.map_or(0, |h| h.parts.len()),
        pushed.requests
    );
    println!();
    println!("Each row is one command (open included), on an empty cache, then again on the cache it left.");
    println!();
    println!("| read | requests (cold) | bytes fetched (cold) | of the file | requests (warm cache) | bytes fetched (warm) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} % | {} | {} |",
            r.what,
            r.cold.requests,
            r.cold.bytes_fetched,
            r.cold.bytes_fetched as f64 * 100.0 / file_len as f64,
            r.warm.requests,
            r.warm.bytes_fetched
        );
    }
    Ok(())
}
