//! `rewind show`: one iteration in detail.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use super::{At, Ctx};
use crate::inspect::{self, ShowReport};
use crate::render::{human, json_line};

/// Arguments of `rewind show`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    at: At,
    /// Print JSON Lines: the record, then one line per global and per changed page.
    #[arg(long)]
    pub json: bool,
}

/// Print one record.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let a = super::open(&args.at.file)?;
    let s = inspect::show(&a, args.at.iter)?;
    if args.json {
        json_line(ctx.out, &s.record)?;
        for g in &s.globals {
            json_line(ctx.out, g)?;
        }
        for p in &s.changed {
            json_line(ctx.out, p)?;
        }
    } else {
        text(ctx.out, &s)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Pages listed by number before "… and N more".
const PAGES_LISTED: usize = 64;

/// The record as text.
fn text(out: &mut dyn Write, s: &ShowReport) -> Result<()> {
    let r = &s.record;
    let parent = r
        .parent
        .map_or("none (root)".to_string(), |p| format!("record {p}"));
    let abandoned = if r.on_timeline { "" } else { " [abandoned branch]" };
    writeln!(
        out,
        "iteration {} (record {}, parent {parent}){abandoned}",
        r.iteration, r.record
    )?;
    writeln!(out, "state hash     {}", r.state_hash)?;
    writeln!(
        out,
        "memory         {} bytes ({}, {} pages of {} bytes)",
        r.memory_len,
        human(r.memory_len),
        r.memory_len / u64::from(s.page_size.max(1)),
        s.page_size
    )?;
    if s.globals.is_empty() {
        writeln!(out, "globals        none")?;
    }
    for g in &s.globals {
        match &g.name {
            None => writeln!(out, "global {:<7} {} = {} ({})", g.index, g.ty, g.value, g.bits)?,
            Some(name) => writeln!(out, "{:<14} {} = {} ({})", name, g.ty, g.value, g.bits)?,
        }
    }
    let shown: Vec<String> = s
        .changed
        .iter()
        .take(PAGES_LISTED)
        .map(|p| p.page.to_string())
        .collect();
    let list = if shown.is_empty() {
        String::new()
    } else {
        format!(": {}", shown.join(" "))
    };
    let more = match s.changed.len().saturating_sub(PAGES_LISTED) {
        0 => String::new(),
        n => format!(" … and {n} more"),
    };
    writeln!(out, "changed pages  {}{list}{more}", s.changed.len())?;
    match (r.input_len, &r.input_hash) {
        (Some(n), Some(h)) => writeln!(out, "input          {n} bytes (hash {h})")?,
        _ => writeln!(out, "input          none")?,
    }
    let how = if r.checkpoint {
        "checkpoint: full page vector"
    } else {
        "change list against the parent"
    };
    writeln!(out, "stored         {} ({how})", human(r.bytes_stored))?;
    Ok(())
}
