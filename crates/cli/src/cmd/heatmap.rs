//! `rewind heatmap`: page churn as a PNG.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{Ctx, Force};
use crate::{heatmap, output};

/// Arguments of `rewind heatmap`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The archive.
    pub file: PathBuf,
    /// The PNG to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Most iteration bins (columns).
    #[arg(long, default_value = "1000", value_parser = super::num)]
    pub width: u64,
    /// Most page bins (rows).
    #[arg(long, default_value = "512", value_parser = super::num)]
    pub height: u64,
    /// First iteration to draw (earlier ones are read, not drawn).
    #[arg(long, default_value = "0", value_parser = super::num)]
    pub from: u64,
    /// Last iteration to draw.
    #[arg(long, value_parser = super::num)]
    pub to: Option<u64>,
    #[command(flatten)]
    force: Force,
}

/// Bins per axis at most.
const MAX_BINS: usize = 4096;

/// Count the churn and draw it.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    output::check(&args.output, &[&args.file], args.force.force)?;
    let a = super::open(&args.file)?;
    let pb = super::bar(ctx, "heatmap", false);
    let bins = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).min(MAX_BINS);
    let g = heatmap::compute(
        &a,
        args.from..=args.to.unwrap_or(u64::MAX),
        bins(args.width),
        bins(args.height),
        &mut super::tick(&pb),
    )
    .with_context(|| format!("cannot draw the heatmap of {}", args.file.display()))?;
    pb.finish_and_clear();
    let mut dims = (0, 0);
    output::write_path(&args.output, |w| {
        dims = heatmap::render(&g, w)?;
        Ok(())
    })?;
    writeln!(
        ctx.out,
        "wrote {} ({}x{} px): iterations {}..={} in {} columns ({:.1} per column), {} pages in {} rows ({:.1} per row), {} bytes changed",
        args.output.display(),
        dims.0,
        dims.1,
        g.iterations.0,
        g.iterations.1,
        g.cols,
        g.records_per_col,
        g.pages,
        g.rows,
        g.pages_per_row,
        g.total
    )?;
    Ok(ExitCode::SUCCESS)
}
