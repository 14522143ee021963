//! `rewind prune`: delete what no head of a remote archive names any more.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use rewind_remote::PruneOptions;

use super::Ctx;
use crate::render::{human, json_line};

/// Arguments of `rewind prune`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The remote archive, `s3://BUCKET/KEY`.
    pub remote: String,
    /// Delete only objects last modified at least this long ago ("90s", "30m", "1h",
    /// "2days"): readers of an earlier head and pushes in progress keep theirs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub older_than: Duration,
    /// Also delete the parts an interrupted push uploaded and never published (a
    /// later push would otherwise reuse them).
    #[arg(long)]
    pub leftovers: bool,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Prune and report.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let remote = super::push::open_remote(&args.remote)?;
    let opts = PruneOptions {
        grace: args.older_than,
        leftovers: args.leftovers,
        dry_run: args.dry_run,
    };
    let r = remote
        .prune(opts)
        .with_context(|| format!("cannot prune {}", args.remote))?;
    if args.json {
        json_line(
            ctx.out,
            &serde_json::json!({
                "requests": r.requests,
                "live": r.live,
                "deleted": r.deleted,
                "deleted_bytes": r.deleted_bytes,
                "kept_recent": r.kept_recent,
                "kept_leftovers": r.kept_leftovers,
                "foreign": r.foreign,
                "dry_run": args.dry_run,
            }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if args.dry_run { "would delete" } else { "deleted" };
    writeln!(
        ctx.out,
        "{verb} {} object(s), {}; kept {} live, {} younger than {}, {} unpublished, {} foreign; {} request(s)",
        r.deleted,
        human(r.deleted_bytes),
        r.live,
        r.kept_recent,
        humantime::format_duration(args.older_than),
        r.kept_leftovers,
        r.foreign,
        r.requests
    )?;
    Ok(ExitCode::SUCCESS)
}
