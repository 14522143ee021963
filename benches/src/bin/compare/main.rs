//! The comparison harness: rewind against the systems users would pick instead, every
//! peer fed exactly the same sequence of frames, every ratio taken from the same run.
//!
//! ```sh
//! cargo run --release -p rewind-bench --bin compare            # full run, updates docs/benchmarks.md
//! cargo run --release -p rewind-bench --bin compare -- --quick # ~1 minute smoke run (no docs update)
//! cargo run --release -p rewind-bench --bin compare -- --help  # the options
//! ```
//!
//! Phases per workload: reference passes (one memcpy and one xxh3-128 of the whole
//! memory), then each peer on a freshly built source: full-copy ring, ring + xxh3-128,
//! lz4 of the whole memory, rewind in memory with and without the dirty hint, the
//! capture pipeline, rewind's archive, git (`fast-import` + `gc --aggressive`), and the
//! postcard-vs-rkyv open.
//!
//! Modules: [`args`] (the command line), [`workload`] (what the peers are fed, and one
//! workload's run), [`peers`] (one module per system compared), [`goals`] (the goals
//! table) and [`report`] (the Markdown written to `docs/benchmarks.md`).

mod args;
#[cfg(test)]
mod fixture;
mod goals;
mod peers;
mod report;
mod workload;

use std::time::{Duration, Instant};

use clap::Parser;

/// Page size of the synthetic workloads.
const PAGE: usize = 4096;
const MIB: usize = 1 << 20;
/// Frames of a rollback (the restore figure).
const ROLLBACK: u64 = 7;
/// The window the memory figures are quoted for.
const WINDOW_600: usize = 600;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A duration in milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Res<()> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = args::Args::parse();
    let cfg = args.config();
    let specs = workload::select(&args, &cfg)?;
    if args.list {
        for s in &specs {
            println!(
                "{} ({} frames, git {} frames)",
                s.name,
                s.frames,
                s.git_frames.min(s.frames)
            );
        }
        return Ok(());
    }
    if specs.is_empty() {
        return Err("no workload matches --workloads".into());
    }
    let command = {
        let mut c = "cargo run --release -p rewind-bench --bin compare".to_string();
        if !raw.is_empty() {
            c.push_str(" -- ");
            c.push_str(&raw.join(" "));
        }
        c
    };
    let start = Instant::now();
    let mut results = Vec::new();
    for spec in &specs {
        results.push(workload::run(spec, &cfg)?);
    }
    let body = report::report(&results, &cfg, &command, start.elapsed());
    println!("{body}");
    if cfg.write {
        let section = args.section.as_deref().unwrap_or_default();
        report::update_doc(&cfg.doc, section, &body)?;
        eprintln!("updated {}", cfg.doc.display());
    }
    Ok(())
}
