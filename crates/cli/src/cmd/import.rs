//! `rewind import`: build an archive from raw memory images.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{Ctx, Force};
use crate::import::{self, Frames, ImportOptions, DEFAULT_BATCH};
use crate::render::{human, json_line};

/// Arguments of `rewind import`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Page size in bytes: a power of two from 1024 to 65536.
    #[arg(long, value_parser = super::num)]
    pub page_size: u64,
    /// Frame files, in iteration order (one file with --frame-size).
    #[arg(required = true)]
    pub frames: Vec<PathBuf>,
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
    let frames = match args.frame_size {
        Some(frame_size) => {
            let [path] = <[PathBuf; 1]>::try_from(args.frames)
                .map_err(|v| anyhow::anyhow!("--frame-size takes exactly one input file, got {}", v.len()))?;
            Frames::Packed { path, frame_size }
        }
        None => Frames::Files(args.frames),
    };
    import::plan(&frames, args.page_size)?;
    crate::output::check(&args.output, &frames.paths(), args.force.force)?;
    let opts = ImportOptions {
        page_size: args.page_size,
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
