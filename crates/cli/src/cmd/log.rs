//! `rewind log`: the timeline, streamed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;
use crate::inspect::{self, IterRange, LogSelection};
use crate::render::{human, json_line};
use crate::schema::Record;

/// Arguments of `rewind log`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The archive.
    pub file: PathBuf,
    /// Only these iterations: `A..B` (B left out), `A..=B`, `A..`, `..B`, `..=B` or `N`.
    #[arg(value_name = "ITER..ITER")]
    pub range: Option<IterRange>,
    /// Show every record, abandoned branches included.
    #[arg(long)]
    pub all: bool,
    /// Stop after N records.
    #[arg(short = 'n', long = "max-count", value_name = "N", value_parser = super::num)]
    pub max_count: Option<u64>,
    /// Newest first.
    #[arg(long)]
    pub reverse: bool,
    /// Print JSON Lines: one record object per line.
    #[arg(long)]
    pub json: bool,
}

/// Print the records `args` selects as they are read.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let a = super::open(&args.file)?;
    let sel = LogSelection {
        all: args.all,
        range: args.range.unwrap_or(IterRange::ALL),
        reverse: args.reverse,
        limit: args.max_count,
    };
    let out = &mut *ctx.out;
    if !args.json {
        writeln!(
            out,
            "{:>10} {:>8}  {:<32}  {:>6} {:>10}  notes",
            "iteration", "record", "state hash", "pages", "stored"
        )?;
    }
    inspect::log(&a, &sel, &mut |r| {
        if args.json {
            json_line(out, &r)
        } else {
            line(out, &r)
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One line of the table.
fn line(out: &mut dyn Write, r: &Record) -> Result<()> {
    let mut notes = Vec::new();
    if !r.on_timeline {
        notes.push("abandoned".to_string());
    }
    if r.branch_point() {
        notes.push(format!("branch point ({} children)", r.children));
    }
    if r.checkpoint {
        notes.push("checkpoint".to_string());
    }
    if r.parent.is_none() {
        notes.push("root".to_string());
    }
    writeln!(
        out,
        "{:>10} {:>8}  {:<32}  {:>6} {:>10}  {}",
        r.iteration,
        r.record,
        r.state_hash,
        r.pages_changed,
        human(r.bytes_stored),
        notes.join(", ")
    )?;
    Ok(())
}
