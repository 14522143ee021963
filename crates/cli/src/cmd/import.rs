//! `rewind import`: build an archive from raw memory images, or (`--bundle`) from a
//! late-joiner bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use rewind_archive::bundle::{Bundle, Nothing};
use rewind_archive::{ArchiveWriter, Durability};

use super::{Ctx, Force};
use crate::import::{self, Frames, ImportOptions, DEFAULT_BATCH};
use crate::render::{human, json_line};

/// Arguments of `rewind import`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Page size in bytes: a power of two from 1024 to 65536.
    #[arg(long, value_parser = super::num, required_unless_present = "bundle")]
    pub page_size: Option<u64>,
    /// Frame files, in iteration order (one file with --frame-size).
    #[arg(required_unless_present = "bundle")]
    pub frames: Vec<PathBuf>,
    /// Build the archive from a late-joiner bundle (`rewind export --bundle`) instead
    /// of frames: its state, assembled with the pages of --have and verified against
    /// its state hash, becomes the archive's one record, with the sender's page size,
    /// seed, globals, global names and host state.
    #[arg(long, value_name = "BUNDLE", conflicts_with_all = ["frames", "page_size", "frame_size", "seed", "first_iteration"])]
    pub bundle: Option<PathBuf>,
    /// With --bundle: the receiver's archive holding the pages the bundle left out.
    #[arg(long, requires = "bundle", value_name = "LOCAL.rwd")]
    pub have: Option<PathBuf>,
    /// Treat the single input file as back-to-back frames of this many bytes.
    #[arg(long, value_parser = super::num)]
    pub frame_size: Option<u64>,
    /// The archive to create.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Hash seed (default: random).
    #[arg(long, value_parser = super::num)]
    pub seed: Option<u64>,
    /// Iteration number of the first frame.
    #[arg(long, default_value = "0", value_parser = super::num)]
    pub first_iteration: u64,
    /// Frames per commit (fewer when a batch's changed pages pass 64 MiB).
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = positive)]
    pub batch: u64,
    #[command(flatten)]
    force: Force,
    /// Print a JSON Lines report (one object).
    #[arg(long)]
    pub json: bool,
}

/// A count of at least 1.
fn positive(s: &str) -> Result<u64, String> {
    match super::num(s)? {
        0 => Err("must be at least 1".to_string()),
        n => Ok(n),
    }
}

/// Import the frames.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    if let Some(bundle) = &args.bundle {
        return from_bundle(bundle, &args, ctx);
    }
    let page_size = args.page_size.context("--page-size is required")?;
    let frames = match args.frame_size {
        Some(frame_size) => {
            let [path] = <[PathBuf; 1]>::try_from(args.frames)
                .map_err(|v| anyhow::anyhow!("--frame-size takes exactly one input file, got {}", v.len()))?;
            Frames::Packed { path, frame_size }
        }
        None => Frames::Files(args.frames),
    };
    import::plan(&frames, page_size)?;
    crate::output::check(&args.output, &frames.paths(), args.force.force)?;
    let opts = ImportOptions {
        page_size,
        seed: args.seed,
        first_iteration: args.first_iteration,
        batch: args.batch,
    };
    let pb = super::bar(ctx, "import", true);
    let t0 = std::time::Instant::now();
    let rep = import::import(&frames, &args.output, &opts, &mut super::tick(&pb))?;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    if args.json {
        json_line(ctx.out, &rep)?;
    } else {
        writeln!(
            ctx.out,
            "imported {} frames of {} bytes ({}) into {}: {} ({:.1}x smaller), {} commits, {} pages changed, {} objects, {:.0} MiB/s",
            rep.frames,
            rep.frame_size,
            human(rep.bytes_in),
            args.output.display(),
            human(rep.archive_bytes),
            rep.bytes_in as f64 / rep.archive_bytes.max(1) as f64,
            rep.commits,
            rep.pages_changed,
            rep.objects,
            rep.bytes_in as f64 / 1048576.0 / secs.max(1e-9)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The archive of one record: the state a bundle hands over.
fn from_bundle(path: &std::path::Path, args: &Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let mut inputs = vec![path];
    inputs.extend(args.have.as_deref());
    crate::output::check(&args.output, &inputs, args.force.force)?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let b =
        Bundle::from_bytes(&bytes).with_context(|| format!("cannot read the bundle {}", path.display()))?;
    let state = match &args.have {
        Some(have) => b.assemble(&super::open(have)?),
        None => b.assemble(&Nothing),
    }
    .with_context(|| format!("the bundle {} does not verify", path.display()))?;
    let history = state.to_history()?;
    let names = state.manifest().global_names().to_vec();
    let len = crate::output::Output::new(&args.output)?.write_file(|tmp| {
        let mut w = ArchiveWriter::create(tmp, &history, Durability::Manual)?;
        w.set_global_names(names);
        w.append(&history)?;
        w.sync()?;
        Ok(w.len())
    })?;
    if args.json {
        json_line(
            ctx.out,
            &serde_json::json!({
                "kind": "import_bundle",
                "iteration": state.iteration(),
                "state_hash": state.state_hash().to_hex(),
                "memory_len": state.memory().len(),
                "pages_from_bundle": state.pages_from_bundle(),
                "pages_from_local": state.pages_from_local(),
                "archive_bytes": len,
            }),
        )?;
    } else {
        writeln!(
            ctx.out,
            "imported iteration {} (state hash {} verified; {} pages from the bundle, {} from {}) into {}: {}",
            state.iteration(),
            state.state_hash(),
            state.pages_from_bundle(),
            state.pages_from_local(),
            args.have.as_deref().map_or("nowhere".into(), |h| h.display().to_string()),
            args.output.display(),
            human(len)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
