//! `rewind pull`: fetch what a local archive lacks of a remote one.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use rewind_remote::PullOptions;

use super::Ctx;

/// Arguments of `rewind pull`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The remote archive, `s3://BUCKET/KEY`.
    pub remote: String,
    /// The local archive (created, or extended when it is a prefix of the remote).
    pub local: PathBuf,
    /// Replace a local file that is not a prefix of the remote archive (another
    /// history, or commits the remote lacks, which are lost).
    #[arg(long)]
    pub force: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Pull and report requests and bytes.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let remote = super::push::open_remote(&args.remote)?;
    let sp = super::spinner(ctx, "pull");
    let report = remote
        .pull(&args.local, PullOptions { replace: args.force })
        .with_context(|| format!("cannot pull {} into {}", args.remote, args.local.display()))?;
    sp.finish_and_clear();
    super::push::print(ctx, &report, args.json, "fetched", report.data_bytes_fetched)?;
    Ok(ExitCode::SUCCESS)
}
