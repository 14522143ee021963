//! `rewind push`: upload what a remote archive lacks of a local one.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use rewind_remote::{PushOptions, Remote, TransferReport};

use super::Ctx;
use crate::render::{human, json_line};

/// Arguments of `rewind push`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The local archive.
    pub local: PathBuf,
    /// The remote archive, `s3://BUCKET/KEY`.
    pub remote: String,
    /// Replace the remote archive even when the local file does not hold its head
    /// record (another history, or a copy that fell behind).
    #[arg(long)]
    pub force: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Push and report requests and bytes.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let remote = open_remote(&args.remote)?;
    let sp = super::spinner(ctx, "push");
    let report = remote
        .push(&args.local, PushOptions { force: args.force })
        .with_context(|| format!("cannot push {} to {}", args.local.display(), args.remote))?;
    sp.finish_and_clear();
    print(ctx, &report, args.json, "sent", report.data_bytes_sent)?;
    Ok(ExitCode::SUCCESS)
}

/// The remote archive at `url`, or why `url` is not one.
pub fn open_remote(url: &str) -> Result<Remote> {
    if !rewind_remote::is_remote(url) {
        bail!("{url:?} is not a remote archive (expected s3://BUCKET/KEY)");
    }
    Ok(Remote::open(url)?)
}

/// One line (or a JSON object) for a transfer.
pub fn print(ctx: &mut Ctx<'_>, r: &TransferReport, json: bool, verb: &str, data: u64) -> Result<()> {
    if json {
        json_line(
            ctx.out,
            &serde_json::json!({
                "requests": r.requests,
                "bytes_sent": r.bytes_sent,
                "bytes_fetched": r.bytes_fetched,
                "data_bytes_sent": r.data_bytes_sent,
                "data_bytes_fetched": r.data_bytes_fetched,
                "parts_sent": r.parts_sent,
                "parts_fetched": r.parts_fetched,
                "parts_resumed": r.parts_resumed,
                "len": r.len,
                "new_generation": r.new_generation,
                "up_to_date": r.up_to_date,
            }),
        )?;
        return Ok(());
    }
    if r.up_to_date {
        writeln!(
            ctx.out,
            "up to date ({}, {} request(s))",
            human(r.len),
            r.requests
        )?;
        return Ok(());
    }
    let parts = r.parts_sent + r.parts_fetched;
    let resumed = if r.parts_resumed > 0 {
        format!(", {} part(s) already there", r.parts_resumed)
    } else {
        String::new()
    };
    let generation = if r.new_generation { ", new generation" } else { "" };
    writeln!(
        ctx.out,
        "{verb} {} in {parts} part(s){resumed}{generation}; archive {}; {} request(s)",
        human(data),
        human(r.len),
        r.requests
    )?;
    Ok(())
}
