//! `rewind gc`: rewrite an archive under a retention policy.
//!
//! The collection itself is [`rewind_archive::collect_file`]; this command builds the
//! policy from its flags, decides where the result goes (in place, `-o`, or a scratch
//! file for `--dry-run`), holds the writer locks of the files it replaces, and reports.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use rewind_archive::{Archive, CollectReport, FileCounts};
use rewind_gc::Policy;
use serde::Serialize;

use super::{Ctx, Force};
use crate::inspect::{self, Target};
use crate::output::{self, Output};
use crate::render::{human, json_line};

/// Arguments of `rewind gc`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The archive.
    pub file: PathBuf,
    /// Keep the newest N records of the timeline.
    #[arg(long, value_parser = super::num)]
    pub keep_last: Option<u64>,
    /// Keep timeline records of iteration ≥ K.
    #[arg(long, value_parser = super::num)]
    pub keep_from: Option<u64>,
    /// Thin old history until the loaded history fits this many bytes.
    #[arg(long, value_parser = super::num)]
    pub budget: Option<u64>,
    /// Drop abandoned branches captured more than this many captures ago (0: all).
    /// Without it, an abandoned branch is dropped with the window: once --keep-last or
    /// --keep-from no longer keeps timeline records of its iterations.
    #[arg(long, value_parser = super::num)]
    pub abandoned_max_age: Option<u64>,
    /// Never collect this iteration (or rN record). Repeat the flag or separate with
    /// commas: `--pin 900 --pin 910` or `--pin 900,910`.
    #[arg(long, value_name = "ITER", value_delimiter = ',')]
    pub pin: Vec<Target>,
    /// Write the collected archive here instead of replacing FILE.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Report what would be freed without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    force: Force,
    /// Print a JSON Lines report (one object).
    #[arg(long)]
    pub json: bool,
}

/// The retention policy the flags describe, pins resolved against `archive`.
fn policy(args: &Args, archive: &Archive) -> Result<Policy> {
    let mut policy = Policy::default();
    let rules = args.keep_last.is_some()
        || args.keep_from.is_some()
        || args.budget.is_some()
        || args.abandoned_max_age.is_some();
    if !rules && args.pin.is_empty() {
        bail!("gc needs a retention rule: --keep-last, --keep-from, --budget, --abandoned-max-age or --pin");
    }
    if let Some(n) = args.keep_last {
        policy = policy.keep_last(usize::try_from(n).unwrap_or(usize::MAX));
    } else if !rules {
        // Only pins: keep the pinned iterations and the head.
        policy = policy.keep_last(0);
    }
    if let Some(k) = args.keep_from {
        policy = policy.keep_from(k);
    }
    if let Some(b) = args.budget {
        policy = policy.budget(b);
    }
    if let Some(age) = args.abandoned_max_age {
        policy = policy.abandoned_max_age(age);
    }
    for p in &args.pin {
        policy.pins.insert(inspect::resolve(archive, *p)?.id);
    }
    Ok(policy)
}

/// Collect `file` into `dest` (`None`: a scratch file, deleted), holding the writer lock
/// of every file replaced from the load to the rename. Returns the report and the file
/// written.
fn collect(file: &Path, policy: &Policy, dest: Option<&Path>) -> Result<(CollectReport, Option<PathBuf>)> {
    let collect = |tmp: &Path| rewind_archive::collect_file(file, policy, tmp).context("cannot collect");
    let Some(dest) = dest else {
        let scratch = tempfile::Builder::new()
            .prefix(".rewind-gc-dry-run.")
            .tempdir()
            .context("cannot create a temporary directory for the dry run")?;
        return Ok((collect(&scratch.path().join("collected.rwd"))?, None));
    };
    // The writer lock of the file replaced (in place: the input), held from the load to
    // the rename: a writer appending meanwhile would lose what it appends.
    let out = Output::new(dest)?;
    let _lock = out.lock()?;
    Ok((out.write_file(collect)?, Some(dest.to_path_buf())))
}

/// Collect and report.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    super::local_only(&args.file)?;
    let a = super::open(&args.file)?;
    let policy = policy(&args, &a)?;
    if let Some(o) = &args.output {
        output::check(o, &[&args.file], args.force.force)?;
    }
    drop(a);
    let dest = match (&args.output, args.dry_run) {
        (_, true) => None,
        (None, false) => Some(args.file.as_path()),
        (Some(o), false) => Some(o.as_path()),
    };
    let sp = super::spinner(ctx, "collecting");
    let (rep, written) = collect(&args.file, &policy, dest)
        .with_context(|| format!("cannot collect {}", args.file.display()))?;
    sp.finish_and_clear();
    if args.json {
        json_line(ctx.out, &Report::new(&rep, written))?;
    } else {
        text(ctx.out, &rep, written.as_deref())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The report as text.
fn text(out: &mut dyn Write, rep: &CollectReport, written: Option<&Path>) -> Result<()> {
    let (b, a) = (&rep.before, &rep.after);
    let what = match written {
        Some(o) => format!("{}:", o.display()),
        None => "dry run (nothing written):".to_string(),
    };
    let freed = match rep.bytes_freed() {
        n if n >= 0 => format!("freed {}", human(n.unsigned_abs() as u64)),
        n => format!("grew by {}", human(n.unsigned_abs() as u64)),
    };
    writeln!(
        out,
        "{what} {} → {} records ({} removed), {} → {} objects ({} freed), {} → {} checkpoints, {} → {} ({freed})",
        b.records,
        a.records,
        rep.removed.records,
        b.objects,
        a.objects,
        rep.objects_freed(),
        b.checkpoints,
        a.checkpoints,
        human(b.bytes),
        human(a.bytes),
    )?;
    if let Some(why) = rep.grew() {
        writeln!(out, "note: the collected archive is larger than the input: {why}")?;
    }
    Ok(())
}

/// What one file holds, as JSON.
#[derive(Serialize)]
struct Counts {
    bytes: u64,
    commits: u64,
    records: u64,
    abandoned: u64,
    objects: u64,
    object_bytes: u64,
    checkpoints: u64,
    checkpoint_bytes: u64,
}

impl From<&FileCounts> for Counts {
    fn from(c: &FileCounts) -> Counts {
        Counts {
            bytes: c.bytes,
            commits: c.commits,
            records: c.records,
            abandoned: c.abandoned,
            objects: c.objects,
            object_bytes: c.object_bytes,
            checkpoints: c.checkpoints,
            checkpoint_bytes: c.checkpoint_bytes,
        }
    }
}

/// The JSON report (`kind: "gc"`).
#[derive(Serialize)]
struct Report {
    kind: &'static str,
    dry_run: bool,
    output: Option<PathBuf>,
    records_before: u64,
    records_after: u64,
    records_removed: u64,
    objects_before: u64,
    objects_after: u64,
    objects_freed: u64,
    inputs_freed: u64,
    checkpoints_before: u64,
    checkpoints_after: u64,
    bytes_before: u64,
    bytes_after: u64,
    bytes_freed: i64,
    grew: Option<String>,
    before: Counts,
    after: Counts,
}

impl Report {
    fn new(rep: &CollectReport, output: Option<PathBuf>) -> Report {
        let (b, a) = (&rep.before, &rep.after);
        Report {
            kind: "gc",
            dry_run: output.is_none(),
            output,
            records_before: b.records,
            records_after: a.records,
            records_removed: rep.removed.records,
            objects_before: b.objects,
            objects_after: a.objects,
            objects_freed: rep.objects_freed(),
            inputs_freed: rep.removed.inputs,
            checkpoints_before: b.checkpoints,
            checkpoints_after: a.checkpoints,
            bytes_before: b.bytes,
            bytes_after: a.bytes,
            bytes_freed: i64::try_from(rep.bytes_freed()).unwrap_or(i64::MAX),
            grew: rep.grew(),
            before: b.into(),
            after: a.into(),
        }
    }
}
