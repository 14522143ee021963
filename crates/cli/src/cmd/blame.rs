//! `rewind blame`: the reverse watchpoint.

use std::process::ExitCode;

use anyhow::Result;

use super::{At, Ctx, RangeArgs};
use crate::inspect;
use crate::render::{json_line, spaced_hex};

/// Arguments of `rewind blame`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    at: At,
    #[command(flatten)]
    range: RangeArgs,
    /// Also list the earlier changes, newest first (see --max-changes).
    #[arg(long)]
    pub history: bool,
    /// With --history, stop after this many changes.
    #[arg(long, default_value = "100", value_parser = super::num)]
    pub max_changes: u64,
    /// Print JSON Lines: the bytes at ITER, then one line per change, newest first.
    #[arg(long)]
    pub json: bool,
}

/// Find and print the changes.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let a = super::open(&args.at.file)?;
    let limit = if args.history {
        usize::try_from(args.max_changes).unwrap_or(usize::MAX).max(1)
    } else {
        1
    };
    let r = inspect::blame(&a, args.at.iter, args.range.addr, args.range.len, limit)?;
    let out = &mut *ctx.out;
    if args.json {
        json_line(out, &r.value)?;
        for c in &r.changes {
            json_line(out, c)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let v = &r.value;
    writeln!(
        out,
        "{:#x}+{} at iteration {} (record {}) = {}",
        v.addr,
        v.len,
        v.iteration,
        v.record,
        spaced_hex(&v.hex)
    )?;
    if r.changes.is_empty() {
        writeln!(
            out,
            "never changed: zero in every record the archive holds up to here"
        )?;
    }
    for c in &r.changes {
        match &c.before {
            Some(before) if !c.at_oldest => writeln!(
                out,
                "changed at iteration {} (record {}): {} → {}",
                c.iteration,
                c.record,
                spaced_hex(before),
                spaced_hex(&c.after)
            )?,
            _ => writeln!(
                out,
                "set at or before iteration {} (record {}, the oldest record): {}",
                c.iteration,
                c.record,
                spaced_hex(&c.after)
            )?,
        }
    }
    Ok(ExitCode::SUCCESS)
}
