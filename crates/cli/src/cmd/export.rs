//! `rewind export`: the memory image and globals of an iteration, or (`--bundle`) a
//! late-joiner bundle of it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use rewind_archive::bundle::{Bundle, Manifest, Nothing};

use super::{At, Ctx, Force};
use crate::inspect;
use crate::output;

/// Arguments of `rewind export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    at: At,
    /// The memory image to write (with --bundle: the bundle).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Where to write the globals (default: next to OUTPUT, extension .globals.json).
    #[arg(long, conflicts_with = "bundle")]
    pub globals: Option<PathBuf>,
    /// Write a self-contained late-joiner bundle instead: the iteration's page hashes,
    /// globals, host state and state hash, and the pages the receiver lacks (with
    /// --have: those its archive holds no object for; without: every distinct page).
    /// `rewind verify --bundle` checks one. See docs/bundle.md.
    #[arg(long)]
    pub bundle: bool,
    /// With --bundle: the receiver's archive (a file or s3:// URL); its pages are left
    /// out of the bundle.
    #[arg(long, requires = "bundle", value_name = "LOCAL.rwd")]
    pub have: Option<PathBuf>,
    #[command(flatten)]
    force: Force,
}

/// Write the memory image and the globals, or a bundle.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    if args.bundle {
        return bundle(args, ctx);
    }
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

/// Write a self-contained bundle of the iteration for a receiver holding `--have`.
fn bundle(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let mut inputs = vec![args.at.file.as_path()];
    inputs.extend(args.have.as_deref());
    output::check(&args.output, &inputs, args.force.force)?;
    let a = super::open(&args.at.file)?;
    let r = inspect::resolve(&a, args.at.iter)?;
    let manifest = Manifest::from_archive_record(&a, r.id)
        .with_context(|| format!("cannot describe {}", args.at.iter))?;
    let wanted = match &args.have {
        Some(have) => {
            let local = super::open(have)?;
            manifest
                .wanted(&local)
                .with_context(|| format!("cannot look up pages in {}", have.display()))?
        }
        None => manifest.wanted(&Nothing)?,
    };
    let sp = super::spinner(ctx, "bundling");
    let b = Bundle::self_contained(&manifest, &wanted, &a)
        .with_context(|| format!("cannot bundle {}", args.at.iter))?;
    let bytes = b.to_bytes()?;
    sp.finish_and_clear();
    output::write_path(&args.output, |w| {
        w.write_all(&bytes)
            .with_context(|| format!("cannot write {}", args.output.display()))
    })?;
    writeln!(
        ctx.out,
        "wrote a bundle of iteration {} (state hash {}) to {}: {} bytes, {} of {} distinct pages ({} of page data){}",
        r.iteration,
        r.state_hash,
        args.output.display(),
        bytes.len(),
        b.page_count(),
        manifest.distinct_pages().len(),
        crate::render::human(b.page_bytes()),
        match &args.have {
            Some(h) => format!(", the rest held by {}", h.display()),
            None => String::new(),
        }
    )?;
    Ok(ExitCode::SUCCESS)
}
