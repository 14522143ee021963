//! `rewind verify`: is the archive sound?

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::Ctx;
use crate::render::{human, json_line, one_line};

/// Arguments of `rewind verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The archive.
    pub file: PathBuf,
    /// Print a JSON Lines report (one object).
    #[arg(long)]
    pub json: bool,
}

/// The JSON report (`kind: "verify"`).
#[derive(Serialize)]
struct Report {
    kind: &'static str,
    sound: bool,
    /// What is wrong, when it is not sound.
    problem: Option<String>,
    bytes: u64,
    segments: Option<u64>,
    commits: Option<u64>,
    records: Option<u64>,
    objects: Option<u64>,
}

/// Verify; exit 1 when unsound.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let a = super::open(&args.file)?;
    let len = super::file_len(&args.file);
    let sp = super::spinner(ctx, "verifying");
    let res = a.verify();
    sp.finish_and_clear();
    let problem = match (&res, a.torn_tail()) {
        (Ok(_), None) => None,
        (Ok(_), Some(t)) => Some(format!(
            "torn tail: {} bytes at offset {} after the last complete commit (an interrupted write; `rewind repair` cuts it)",
            t.len, t.offset
        )),
        (Err(e), _) => Some(one_line(e)),
    };
    let r = res.as_ref().ok();
    if args.json {
        let report = Report {
            kind: "verify",
            sound: problem.is_none(),
            problem: problem.clone(),
            bytes: len,
            segments: r.map(|r| r.segments),
            commits: r.map(|r| r.commits),
            records: r.map(|r| r.records),
            objects: r.map(|r| r.objects),
        };
        json_line(ctx.out, &report)?;
    } else if let Some(r) = r {
        writeln!(
            ctx.out,
            "{}: {} commits, {} segments, {} records, {} objects checked ({})",
            args.file.display(),
            r.commits,
            r.segments,
            r.records,
            r.objects,
            human(len)
        )?;
    }
    match problem {
        Some(m) => {
            if !args.json {
                ctx.out.flush()?;
                eprintln!("rewind: {} is not sound: {m}", args.file.display());
            }
            Ok(ExitCode::FAILURE)
        }
        None => {
            if !args.json {
                writeln!(ctx.out, "sound")?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
