//! `rewind repair`: cut a torn tail.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::Ctx;

/// Arguments of `rewind repair`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The archive.
    pub file: PathBuf,
    /// Also cut a damaged tail: everything after the last complete commit.
    #[arg(long)]
    pub force: bool,
}

/// Repair and say what was cut.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    super::local_only(&args.file)?;
    if !args.force {
        // A damaged or unreadable file fails here, before anything is cut.
        super::open(&args.file)?;
    }
    let options = rewind_archive::RepairOptions { force: args.force };
    let cut = rewind_archive::repair_with(&args.file, options)
        .with_context(|| format!("cannot repair {}", args.file.display()))?;
    match cut {
        Some(t) => writeln!(
            ctx.out,
            "{}: cut a torn tail of {} bytes at offset {}",
            args.file.display(),
            t.len,
            t.offset
        )?,
        None => writeln!(ctx.out, "{}: clean, nothing to repair", args.file.display())?,
    }
    Ok(ExitCode::SUCCESS)
}
