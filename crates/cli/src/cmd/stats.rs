//! `rewind stats`: what the archive holds and how well it is compressed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;
use crate::inspect::{self, Stats};
use crate::render::{human, json_line};

/// Arguments of `rewind stats`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The archive.
    pub file: PathBuf,
    /// Print a JSON Lines report (one object).
    #[arg(long)]
    pub json: bool,
}

/// Count and print.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let a = super::open(&args.file)?;
    let pb = super::bar(ctx, "stats", false);
    let s = inspect::stats(&a, super::file_len(&args.file), &mut super::tick(&pb))?;
    pb.finish_and_clear();
    if args.json {
        json_line(ctx.out, &s)?;
    } else {
        text(ctx.out, &s)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The statistics as text.
fn text(out: &mut dyn Write, s: &Stats) -> Result<()> {
    let pct = |n: u64| {
        if s.objects > 0 {
            100.0 * n as f64 / s.objects as f64
        } else {
            0.0
        }
    };
    let iterations = s
        .iterations
        .map_or(String::new(), |(a, b)| format!(", iterations {a}..={b}"));
    writeln!(
        out,
        "file             {} ({} bytes), {} commits, {}-byte pages",
        human(s.file_bytes),
        s.file_bytes,
        s.commits,
        s.page_size
    )?;
    writeln!(
        out,
        "records          {} ({} on the timeline{iterations}, {} abandoned), {} checkpoints",
        s.records, s.timeline, s.abandoned, s.checkpoints
    )?;
    writeln!(out, "objects          {}", s.objects)?;
    for (what, n, bytes) in [
        ("full, raw", s.raw_pages, s.raw_bytes),
        ("full, lz4", s.lz4_pages, s.lz4_bytes),
        ("delta    ", s.delta_pages, s.delta_bytes),
    ] {
        writeln!(out, "  {what}      {n:>8} ({:.1}%) {}", pct(n), human(bytes))?;
    }
    writeln!(
        out,
        "page references  {} changed pages, {} dedup hits (already stored), {} zero pages",
        s.page_refs, s.dedup_hits, s.zero_pages
    )?;
    writeln!(
        out,
        "compression      {:.2}x (page bytes / stored object bytes)",
        s.compression_ratio
    )?;
    writeln!(
        out,
        "per iteration    {} of file, {} of objects, {:.1} pages changed",
        human(s.bytes_per_iteration as u64),
        human(s.object_bytes_per_iteration as u64),
        s.pages_changed_per_iteration
    )?;
    writeln!(
        out,
        "history          {:.1}x smaller than full copies of every record",
        s.history_ratio
    )?;
    Ok(())
}
