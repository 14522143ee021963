//! `rewind export`: the memory image and globals of an iteration.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{At, Ctx, Force};
use crate::inspect;
use crate::output;

/// Arguments of `rewind export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    at: At,
    /// The memory image to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Where to write the globals (default: next to OUTPUT, extension .globals.json).
    #[arg(long)]
    pub globals: Option<PathBuf>,
    #[command(flatten)]
    force: Force,
}

/// Write the memory image and the globals.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let gpath = args
        .globals
        .clone()
        .unwrap_or_else(|| args.output.with_extension("globals.json"));
    if output::same_destination(&gpath, &args.output) {
        bail!(
            "refusing to write {}: the memory image (-o) and the globals (--globals) would be the same file",
            gpath.display()
        );
    }
    output::check(&args.output, &[&args.at.file], args.force.force)?;
    output::check(&gpath, &[&args.at.file, &args.output], args.force.force)?;
    let a = super::open(&args.at.file)?;
    let pb = super::bar(ctx, "export", false);
    let mut report = None;
    output::write_path(&args.output, |w| {
        report = Some(inspect::export(&a, args.at.iter, w, &mut super::tick(&pb))?);
        Ok(())
    })?;
    pb.finish_and_clear();
    let report = report.context("export produced no report")?;
    // A JSON document (an array of global objects), not JSON Lines: a file to load.
    output::write_path(&gpath, |w| {
        serde_json::to_writer_pretty(&mut *w, &report.globals).context("cannot write JSON")?;
        writeln!(w)?;
        Ok(())
    })?;
    writeln!(
        ctx.out,
        "wrote {} bytes of iteration {} (state hash {}) to {}, globals to {}",
        report.memory_len,
        report.iteration,
        report.state_hash,
        args.output.display(),
        gpath.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
