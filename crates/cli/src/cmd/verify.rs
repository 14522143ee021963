//! `rewind verify`: is the archive sound? With `--bundle`: does a late-joiner bundle
//! assemble into the state it describes?

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use rewind_archive::bundle::{Bundle, Nothing};
use serde::Serialize;

use super::Ctx;
use crate::render::{human, json_line, one_line};

/// Arguments of `rewind verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The archive (with --bundle: the bundle).
    pub file: PathBuf,
    /// FILE is a bundle (`rewind export --bundle`): assemble it with the pages of
    /// --have, check every page against its hash and the whole against the state hash.
    #[arg(long)]
    pub bundle: bool,
    /// With --bundle: the receiver's archive (a file or s3:// URL) holding the pages the
    /// bundle left out.
    #[arg(long, requires = "bundle", value_name = "LOCAL.rwd")]
    pub have: Option<PathBuf>,
    /// Print a JSON Lines report (one object).
    #[arg(long)]
    pub json: bool,
}

/// The JSON report of `verify --bundle` (`kind: "verify_bundle"`).
#[derive(Serialize)]
struct BundleReport {
    kind: &'static str,
    sound: bool,
    /// What is wrong, when it is not sound.
    problem: Option<String>,
    bytes: u64,
    iteration: Option<u64>,
    state_hash: Option<String>,
    memory_len: Option<u64>,
    pages_from_bundle: Option<u64>,
    pages_from_local: Option<u64>,
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
    if args.bundle {
        return bundle(args, ctx);
    }
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

/// Assemble a bundle with the pages of `--have` and report; exit 1 when it does not
/// verify.
fn bundle(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let local = args.have.as_deref().map(super::open).transpose()?;
    let res = Bundle::from_bytes(&bytes).and_then(|b| match &local {
        Some(a) => b.assemble(a),
        None => b.assemble(&Nothing),
    });
    let problem = res.as_ref().err().map(|e| one_line(e));
    let st = res.as_ref().ok();
    if args.json {
        json_line(
            ctx.out,
            &BundleReport {
                kind: "verify_bundle",
                sound: st.is_some(),
                problem: problem.clone(),
                bytes: bytes.len() as u64,
                iteration: st.map(|s| s.iteration()),
                state_hash: st.map(|s| s.state_hash().to_hex()),
                memory_len: st.map(|s| s.memory().len() as u64),
                pages_from_bundle: st.map(|s| s.pages_from_bundle() as u64),
                pages_from_local: st.map(|s| s.pages_from_local() as u64),
            },
        )?;
    } else if let Some(s) = st {
        writeln!(
            ctx.out,
            "{}: iteration {}, {} of memory, {} pages from the bundle, {} from {} ({})",
            args.file.display(),
            s.iteration(),
            human(s.memory().len() as u64),
            s.pages_from_bundle(),
            s.pages_from_local(),
            args.have
                .as_deref()
                .map_or("nowhere".into(), |h| h.display().to_string()),
            human(bytes.len() as u64)
        )?;
        writeln!(ctx.out, "state hash {} verified", s.state_hash())?;
    }
    match problem {
        Some(m) => {
            if !args.json {
                ctx.out.flush()?;
                eprintln!("rewind: {} does not verify: {m}", args.file.display());
            }
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
