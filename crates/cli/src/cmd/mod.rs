//! The commands of the `rewind` binary, one module each: its arguments (a clap
//! [`clap::Args`] struct) and `run(args, ctx)`, which calls the library and prints
//! through [`crate::render`]. This module holds what they share: the command list, the
//! context they print to, opening an archive, progress bars and common arguments.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use rewind_archive::Archive;

pub mod blame;
pub mod cat;
pub mod diff;
pub mod export;
pub mod gc;
pub mod heatmap;
pub mod import;
pub mod log;
pub mod prune;
pub mod pull;
pub mod push;
pub mod repair;
pub mod show;
pub mod stats;
pub mod verify;

/// Where a command prints, and whether it may draw progress bars.
pub struct Ctx<'a> {
    /// Standard output (buffered).
    pub out: &'a mut dyn Write,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The timeline: iteration, record, state hash, pages changed, bytes stored, branch
    /// points.
    ///
    /// One line per record of the current timeline, oldest first, printed as it is read
    /// (`rewind log FILE | head` stops early). With `--all`, every record in the file by
    /// record number, abandoned branches (records a rollback cut off) included and
    /// marked. A range (`100..200`, `100..=199`, `500..`, `..=20`) keeps the records of
    /// those iterations; `-n N` stops after N records; `--reverse` lists newest first.
    Log(log::Args),
    /// One iteration: memory size, globals with types and values, changed pages, input
    /// blob size, state hash.
    Show(show::Args),
    /// Pages and byte ranges that differ between two iterations, with a hexdump of each
    /// changed range (`-` the first, `+` the second, `*` marks differing bytes).
    ///
    /// Memory past the end of the smaller iteration counts as zeros. `FILE A B` compares
    /// two iterations of one archive; `A.rwd:N B.rwd:N` compares an iteration of each
    /// of two archives (two peers' archives at the frame a desync was reported for).
    Diff(diff::Args),
    /// The bytes at an address at any iteration, read from the archive in place.
    Cat(cat::Args),
    /// The reverse watchpoint: the latest iteration ≤ ITER at which any of the bytes
    /// changed, with their value before and after.
    ///
    /// Walks back from ITER through parent records, reading bytes only at records whose
    /// change list touches the range's pages. "at or before" means the change is at the
    /// oldest record the archive holds: it may have happened earlier.
    Blame(blame::Args),
    /// Write the full memory image of an iteration to a file, and its globals as JSON
    /// next to it (`OUT` with the extension `.globals.json`) or to `--globals`.
    ///
    /// Every page's hash and the state hash are recomputed from what is written, so an
    /// export that succeeds is exactly the recorded state.
    ///
    /// With --bundle, write a late-joiner bundle instead: the iteration's page hashes,
    /// globals, host state and state hash, and only the pages the receiver's archive
    /// (--have) lacks, for another process to assemble and verify (`verify --bundle`).
    Export(export::Args),
    /// Build an archive from raw memory images: one file per iteration, or one file of
    /// equal-size frames with --frame-size.
    ///
    /// Frames are compared page by page with the previous one; only the differing pages
    /// are hashed and stored. All frames must have the same size, a whole number of
    /// pages. Frames are committed in batches (--batch); the archive is written to a
    /// temporary file and moved into place when complete.
    ///
    /// With --bundle, the archive holds the one state a late-joiner bundle hands over
    /// (`export --bundle`), assembled with the pages of --have and verified first.
    Import(import::Args),
    /// Render page churn as a PNG: iterations left to right, pages top to bottom, colour
    /// by bytes changed (log scale; dark = unchanged).
    ///
    /// Histories larger than --width × --height are binned: each pixel column sums
    /// several iterations and each row several pages.
    Heatmap(heatmap::Args),
    /// Check every segment, checksum, trailer, object and state hash; report problems
    /// with their file offsets. Exit code 0 when the archive is sound, 1 when not.
    ///
    /// With --bundle, FILE is a bundle from `export --bundle`: it is assembled with the
    /// pages of the receiver's archive (--have), every page checked against its hash and
    /// the whole state against the state hash.
    Verify(verify::Args),
    /// Rewrite the archive under a retention policy, reporting what it freed.
    ///
    /// Rules compose as a union (a record is kept when any rule keeps it); the head is
    /// always kept, and so are pinned iterations. With only --pin, just the pinned
    /// iterations and the head are kept. The new file replaces the old one atomically
    /// (or is written to -o, leaving the input untouched).
    Gc(gc::Args),
    /// Objects, full vs delta pages, dedup hits, compression ratio, bytes per iteration.
    Stats(stats::Args),
    /// Cut a torn tail (the bytes of a commit a crash interrupted) so the archive can be
    /// appended to again. Changes FILE in place under the archive's writer lock (refused
    /// while a writer appends); a clean file is left untouched. A damaged tail (bytes a
    /// torn write cannot explain, such as a complete commit whose trailer was damaged)
    /// is refused unless --force.
    Repair(repair::Args),
    /// Upload what a remote archive (`s3://BUCKET/KEY`) lacks of a local one: only the
    /// commits appended since the last push. Configured by the `AWS_*` variables
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ALLOW_HTTP`); see docs/remote.md.
    Push(push::Args),
    /// Fetch what a local archive lacks of a remote one (`s3://BUCKET/KEY`): only the
    /// missing suffix when the local file is a prefix of the remote. The result is
    /// written beside the local file and renamed into place.
    Pull(pull::Args),
    /// Delete the objects of a remote archive (`s3://BUCKET/KEY`) that its head no
    /// longer names and that are older than --older-than: the generations a pushed
    /// garbage collection left behind, and with --leftovers the parts an interrupted
    /// push never published. The head, its parts and objects outside the layout stay.
    Prune(prune::Args),
}

impl Command {
    /// Run the command; its exit code (1 for an unsound archive from `verify`).
    pub fn run(self, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
        match self {
            Command::Log(a) => log::run(a, ctx),
            Command::Show(a) => show::run(a, ctx),
            Command::Diff(a) => diff::run(a, ctx),
            Command::Cat(a) => cat::run(a, ctx),
            Command::Blame(a) => blame::run(a, ctx),
            Command::Export(a) => export::run(a, ctx),
            Command::Import(a) => import::run(a, ctx),
            Command::Heatmap(a) => heatmap::run(a, ctx),
            Command::Verify(a) => verify::run(a, ctx),
            Command::Gc(a) => gc::run(a, ctx),
            Command::Stats(a) => stats::run(a, ctx),
            Command::Repair(a) => repair::run(a, ctx),
            Command::Push(a) => push::run(a, ctx),
            Command::Pull(a) => pull::run(a, ctx),
            Command::Prune(a) => prune::run(a, ctx),
        }
    }
}

/// An iteration of an archive: `FILE ITER`.
#[derive(clap::Args, Debug)]
pub struct At {
    /// The archive.
    pub file: std::path::PathBuf,
    /// Iteration (or rN for a record number).
    pub iter: crate::inspect::Target,
}

/// A byte range of guest memory: `--addr X [--len N]`.
#[derive(clap::Args, Debug)]
pub struct RangeArgs {
    /// Start address (decimal or 0x hex).
    #[arg(long, value_parser = num)]
    pub addr: u64,
    /// Number of bytes.
    #[arg(long, default_value = "16", value_parser = num)]
    pub len: u64,
}

/// `--force` of the commands that write a file.
#[derive(clap::Args, Debug)]
pub struct Force {
    /// Replace an existing output file (an input is never replaced).
    #[arg(long)]
    pub force: bool,
}

/// A number argument: decimal, `0x` hex, `_` separators, size suffixes.
pub fn num(s: &str) -> Result<u64, String> {
    crate::inspect::parse_u64(s)
}

/// How the CLI reads an `s3://` archive: in place (fetching only the blocks a command
/// touches, the default) or, with `REWIND_REMOTE_READ=copy`, from a whole local copy
/// kept up to date by incremental pulls.
fn remote_copy_mode() -> bool {
    std::env::var("REWIND_REMOTE_READ").is_ok_and(|v| v == "copy")
}

/// The remotes this process read in place, for the figures printed at exit with
/// `REWIND_REMOTE_STATS=1` ([`remote_stats`]).
static REMOTES: std::sync::Mutex<Vec<(String, std::sync::Arc<rewind_remote::Remote>)>> =
    std::sync::Mutex::new(Vec::new());

/// Requests and bytes each remote archive read in place by this process has cost so
/// far: `(url, report)`.
pub fn remote_stats() -> Vec<(String, rewind_remote::TransferReport)> {
    REMOTES
        .lock()
        .map(|r| r.iter().map(|(u, r)| (u.clone(), r.report())).collect())
        .unwrap_or_default()
}

/// The local file of an archive argument: the path itself, or for a remote archive
/// (`s3://BUCKET/KEY`) its whole-copy cache file, first brought up to date by an
/// incremental pull (only the missing suffix is fetched). Read commands use [`open`],
/// which reads a remote archive in place instead.
pub fn local_file(path: &Path) -> Result<std::path::PathBuf> {
    match path.to_str() {
        Some(url) if rewind_remote::is_remote(url) => {
            let (file, _) = rewind_remote::sync_cache(url).with_context(|| format!("cannot fetch {url}"))?;
            Ok(file)
        }
        _ => Ok(path.to_path_buf()),
    }
}

/// Refuse a remote archive for a command that writes its input.
pub fn local_only(path: &Path) -> Result<()> {
    if path.to_str().is_some_and(rewind_remote::is_remote) {
        anyhow::bail!(
            "{} is a remote archive: this command changes its input, so `rewind pull` it to a local file first",
            path.display()
        );
    }
    Ok(())
}

/// Open an archive for reading, warning on stderr about a torn tail. A remote archive
/// (`s3://BUCKET/KEY`) is read in place through its read cache
/// ([`rewind_remote::open_archive`]), or from a whole local copy ([`local_file`]) with
/// `REWIND_REMOTE_READ=copy`.
pub fn open(path: &Path) -> Result<Archive> {
    let a = match path.to_str() {
        Some(url) if rewind_remote::is_remote(url) && !remote_copy_mode() => {
            let (a, remote) =
                rewind_remote::open_archive(url).with_context(|| format!("cannot open {url}"))?;
            if let Ok(mut r) = REMOTES.lock() {
                r.push((url.to_string(), remote));
            }
            a
        }
        _ => {
            let file = local_file(path)?;
            std::fs::File::open(&file).with_context(|| format!("cannot open {}", path.display()))?;
            Archive::open(&file).with_context(|| format!("cannot open {}", path.display()))?
        }
    };
    if let Some(t) = a.torn_tail() {
        eprintln!(
            "rewind: warning: {} has a torn tail of {} bytes at offset {} (an interrupted commit, ignored; `rewind repair` cuts it)",
            path.display(),
            t.len,
            t.offset
        );
    }
    Ok(a)
}

/// The size of a file, 0 when it cannot be read (for reports only).
/// For a remote archive, the size of its read cache file (a sparse file of the
/// archive's length when read in place).
pub fn file_len(path: &Path) -> u64 {
    let file = match path.to_str() {
        Some(url) if rewind_remote::is_remote(url) && remote_copy_mode() => {
            rewind_remote::cache_file(url).unwrap_or_default()
        }
        Some(url) if rewind_remote::is_remote(url) => rewind_remote::lazy_cache_file(url).unwrap_or_default(),
        _ => path.to_path_buf(),
    };
    std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
}

/// A progress bar on stderr (hidden unless `ctx.progress`), counting bytes or items.
pub fn bar(ctx: &Ctx<'_>, what: &str, bytes: bool) -> ProgressBar {
    if !ctx.progress {
        return ProgressBar::hidden();
    }
    let template = if bytes {
        "{msg:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg:>9} [{bar:40}] {pos}/{len} eta {eta}"
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let pb = ProgressBar::new(0).with_style(style);
    pb.set_message(what.to_string());
    pb
}

/// A spinner on stderr (hidden unless `ctx.progress`) for work without a count.
pub fn spinner(ctx: &Ctx<'_>, what: &str) -> ProgressBar {
    if !ctx.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_message(what.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// A progress callback that moves `pb`.
pub fn tick(pb: &ProgressBar) -> impl FnMut(u64, u64) + '_ {
    move |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    }
}
