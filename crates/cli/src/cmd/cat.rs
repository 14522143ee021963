//! `rewind cat`: bytes at an address.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{At, Ctx, RangeArgs};
use crate::inspect;
use crate::render::{hexdump, json_line};

/// Arguments of `rewind cat`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    at: At,
    #[command(flatten)]
    range: RangeArgs,
    /// Write the raw bytes to stdout instead of a hexdump.
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,
    /// Print JSON Lines: one bytes object (`record`, `iteration`, `addr`, `len`, `hex`).
    #[arg(long)]
    pub json: bool,
}

/// Print the bytes.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let a = super::open(&args.at.file)?;
    let (r, bytes) = inspect::cat(&a, args.at.iter, args.range.addr, args.range.len)?;
    if args.raw {
        ctx.out.write_all(&bytes).context("cannot write to stdout")?;
    } else if args.json {
        json_line(ctx.out, &inspect::bytes(&r, args.range.addr, &bytes))?;
    } else {
        for l in hexdump::dump(args.range.addr, &bytes) {
            writeln!(ctx.out, "{l}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
