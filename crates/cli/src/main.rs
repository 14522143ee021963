//! `rewind`: look inside a recorded history (a `.rwd` archive) the way `git log`,
//! `git show`, `git diff` and `git blame` look inside a repository.
//!
//! This binary parses arguments, draws progress bars and prints; the work is in the
//! `rewind_cli` library and the archive crate.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rewind_archive::Archive;
use rewind_cli::import::{self, Frames, ImportOptions};
use rewind_cli::inspect::{self, Target};
use rewind_cli::{gc, heatmap, hexdump};

/// Inspect rewind histories: the timeline, one iteration, diffs, reads, blame, export,
/// import, heatmaps, verification, garbage collection and statistics of a `.rwd` archive.
///
/// Archives are read in place (memory-mapped); nothing is restored or loaded in full
/// except by `gc`. Commands that write (`export`, `import`, `heatmap`, `gc -o`) never
/// write over an input and refuse to replace an existing file without `--force`.
///
/// ITER is an iteration on the archive's timeline (`994`), or a record number prefixed
/// with `r` (`r1012`), which also reaches abandoned branches listed by `log --all`.
/// Numbers accept `0x` hex, `_` separators and the suffixes k/KiB, M/MiB, G/GiB.
///
/// Exit codes: 0 success, 1 error (or an unsound archive for `verify`), 2 bad usage.
#[derive(Parser, Debug)]
#[command(name = "rewind", version, about, long_about, max_term_width = 100)]
struct Cli {
    /// Never draw progress bars (they are drawn only when stderr is a terminal anyway).
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The timeline: iteration, record, state hash, pages changed, bytes stored, branch
    /// points.
    ///
    /// One line per record of the current timeline, oldest first. With `--all`, every
    /// record in the file by record number, abandoned branches (records a rollback cut
    /// off) included and marked.
    Log {
        /// The archive.
        file: PathBuf,
        /// Show every record, abandoned branches included.
        #[arg(long)]
        all: bool,
        /// Print JSON (an array of records) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One iteration: memory size, globals with types and values, changed pages, input
    /// blob size, state hash.
    Show {
        /// The archive.
        file: PathBuf,
        /// Iteration (or rN for a record number).
        iter: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pages and byte ranges that differ between two iterations, with a hexdump of each
    /// changed range (`-` the first, `+` the second, `*` marks differing bytes).
    ///
    /// Memory past the end of the smaller iteration counts as zeros. `FILE A B` compares
    /// two iterations of one archive; `A.rwd:N B.rwd:N` compares an iteration of each
    /// of two archives (two peers' archives at the frame a desync was reported for).
    Diff {
        /// `FILE A B` (iterations or rN of one archive) or `FILE:A FILE:B` (two archives).
        #[arg(num_args = 2..=3, required = true, value_name = "FILE A B | FILE:A FILE:B")]
        sides: Vec<String>,
        /// Counts only: pages, ranges and bytes that differ.
        #[arg(long)]
        stat: bool,
        /// Stop the hexdump after this many changed bytes (the summary still counts all).
        #[arg(long, default_value = "4096", value_parser = num)]
        max_bytes: u64,
        /// Print JSON (pages and ranges, no hexdump).
        #[arg(long)]
        json: bool,
    },
    /// The bytes at an address at any iteration, read from the archive in place.
    Cat {
        /// The archive.
        file: PathBuf,
        /// Iteration (or rN).
        iter: Target,
        #[command(flatten)]
        range: RangeArgs,
        /// Write the raw bytes to stdout instead of a hexdump.
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        /// Print JSON (`{"addr", "len", "hex"}`).
        #[arg(long)]
        json: bool,
    },
    /// The reverse watchpoint: the latest iteration ≤ ITER at which any of the bytes
    /// changed, with their value before and after.
    ///
    /// Walks back from ITER through parent records, reading bytes only at records whose
    /// change list touches the range's pages. "at or before" means the change is at the
    /// oldest record the archive holds: it may have happened earlier.
    Blame {
        /// The archive.
        file: PathBuf,
        /// Iteration (or rN).
        iter: Target,
        #[command(flatten)]
        range: RangeArgs,
        /// Also list the earlier changes, newest first (see --max-changes).
        #[arg(long)]
        history: bool,
        /// With --history, stop after this many changes.
        #[arg(long, default_value = "100", value_parser = num)]
        max_changes: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the full memory image of an iteration to a file, and its globals as JSON
    /// next to it (`OUT` with the extension `.globals.json`) or to `--globals`.
    ///
    /// Every page's hash and the state hash are recomputed from what is written, so an
    /// export that succeeds is exactly the recorded state.
    Export {
        /// The archive.
        file: PathBuf,
        /// Iteration (or rN).
        iter: Target,
        /// The memory image to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Where to write the globals (default: next to OUTPUT, extension .globals.json).
        #[arg(long)]
        globals: Option<PathBuf>,
        #[command(flatten)]
        force: Force,
    },
    /// Build an archive from raw memory images: one file per iteration, or one file of
    /// equal-size frames with --frame-size.
    ///
    /// Frames are compared page by page with the previous one; only the differing pages
    /// are hashed and stored. All frames must have the same size, a whole number of
    /// pages. The archive is written to a temporary file and moved into place when
    /// complete.
    Import {
        /// Page size in bytes: a power of two from 1024 to 65536.
        #[arg(long, value_parser = num)]
        page_size: u64,
        /// Frame files, in iteration order (one file with --frame-size).
        #[arg(required = true)]
        frames: Vec<PathBuf>,
        /// Treat the single input file as back-to-back frames of this many bytes.
        #[arg(long, value_parser = num)]
        frame_size: Option<u64>,
        /// The archive to create.
        #[arg(short, long)]
        output: PathBuf,
        /// Hash seed (default: random).
        #[arg(long, value_parser = num)]
        seed: Option<u64>,
        /// Iteration number of the first frame.
        #[arg(long, default_value = "0", value_parser = num)]
        first_iteration: u64,
        #[command(flatten)]
        force: Force,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Render page churn as a PNG: iterations left to right, pages top to bottom, colour
    /// by bytes changed (log scale; dark = unchanged).
    ///
    /// Histories larger than --width × --height are binned: each pixel column sums
    /// several iterations and each row several pages.
    Heatmap {
        /// The archive.
        file: PathBuf,
        /// The PNG to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Most iteration bins (columns).
        #[arg(long, default_value = "1000", value_parser = num)]
        width: u64,
        /// Most page bins (rows).
        #[arg(long, default_value = "512", value_parser = num)]
        height: u64,
        /// First iteration to draw (earlier ones are read, not drawn).
        #[arg(long, default_value = "0", value_parser = num)]
        from: u64,
        /// Last iteration to draw.
        #[arg(long, value_parser = num)]
        to: Option<u64>,
        #[command(flatten)]
        force: Force,
    },
    /// Check every segment, checksum, trailer, object and state hash; report problems
    /// with their file offsets. Exit code 0 when the archive is sound, 1 when not.
    Verify {
        /// The archive.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite the archive under a retention policy, reporting what it freed.
    ///
    /// Rules compose as a union (a record is kept when any rule keeps it); the head is
    /// always kept, and so are pinned iterations. With only --pin, just the pinned
    /// iterations and the head are kept. The new file replaces the old one atomically
    /// (or is written to -o, leaving the input untouched).
    Gc {
        /// The archive.
        file: PathBuf,
        /// Keep the newest N records of the timeline.
        #[arg(long, value_parser = num)]
        keep_last: Option<u64>,
        /// Keep timeline records of iteration ≥ K.
        #[arg(long, value_parser = num)]
        keep_from: Option<u64>,
        /// Thin old history until the loaded history fits this many bytes.
        #[arg(long, value_parser = num)]
        budget: Option<u64>,
        /// Drop abandoned branches captured more than this many captures ago (0: all).
        /// Without it, an abandoned branch is dropped with the window: once --keep-last or
        /// --keep-from no longer keeps timeline records of its iterations.
        #[arg(long, value_parser = num)]
        abandoned_max_age: Option<u64>,
        /// Never collect these iterations (or rN records).
        #[arg(long, num_args = 1..)]
        pin: Vec<Target>,
        /// Write the collected archive here instead of replacing FILE.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Report what would be freed without writing anything.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        force: Force,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Objects, full vs delta pages, dedup hits, compression ratio, bytes per iteration.
    Stats {
        /// The archive.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cut a torn tail (the bytes of a commit a crash interrupted) so the archive can be
    /// appended to again. Changes FILE in place under the archive's writer lock (refused
    /// while a writer appends); a clean file is left untouched. A damaged tail (bytes a
    /// torn write cannot explain, such as a complete commit whose trailer was damaged)
    /// is refused unless --force.
    Repair {
        /// The archive.
        file: PathBuf,
        /// Also cut a damaged tail: everything after the last complete commit.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
struct RangeArgs {
    /// Start address (decimal or 0x hex).
    #[arg(long, value_parser = num)]
    addr: u64,
    /// Number of bytes.
    #[arg(long, default_value = "16", value_parser = num)]
    len: u64,
}

#[derive(Args, Debug)]
struct Force {
    /// Replace an existing output file (an input is never replaced).
    #[arg(long)]
    force: bool,
}

fn num(s: &str) -> Result<u64, String> {
    inspect::parse_u64(s)
}

// ---- main ----------------------------------------------------------------------------

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("rewind: internal error: {msg}{at} (please report this)");
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let progress = !cli.no_progress && std::io::stderr().is_terminal();
    match run(cli.command, progress) {
        Ok(code) => code,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("rewind: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error chain on one line, each cause once (some errors print their source
/// themselves and also return it from `source()`).
fn one_line(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for c in e.chain() {
        let t = c.to_string();
        if t.is_empty() || s.ends_with(&t) || s.contains(&format!("{t}: ")) {
            continue;
        }
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&t);
    }
    s.replace('\n', " ")
}

fn open(path: &Path) -> Result<Archive> {
    std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let a = Archive::open(path).with_context(|| format!("cannot open {}", path.display()))?;
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

fn bar(enabled: bool, what: &str, bytes: bool) -> ProgressBar {
    if !enabled {
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

fn spinner(enabled: bool, what: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_message(what.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// The sides of `diff`: `FILE A B` gives one open archive and two targets;
/// `FILE:A FILE:B` gives the first archive, both targets and the second archive's path.
#[allow(clippy::type_complexity)]
fn diff_sides(sides: &[String]) -> Result<(Archive, (Target, Target), Option<PathBuf>)> {
    let target = |s: &str| s.parse::<Target>().map_err(|e| anyhow::anyhow!(e));
    match sides {
        [file, a, b] => Ok((open(Path::new(file))?, (target(a)?, target(b)?), None)),
        [a, b] => {
            let split = |s: &str| -> Result<(PathBuf, Target)> {
                let (file, it) = s.rsplit_once(':').with_context(|| {
                    format!("{s:?}: expected FILE:ITERATION (or FILE A B for one archive)")
                })?;
                Ok((PathBuf::from(file), target(it)?))
            };
            let ((fa, ta), (fb, tb)) = (split(a)?, split(b)?);
            Ok((open(&fa)?, (ta, tb), Some(fb)))
        }
        _ => bail!("diff takes FILE A B or FILE:A FILE:B"),
    }
}

/// Refuse an output that is an input, or that exists without `--force`.
fn check_output(out: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    import::check_output(out, inputs)?;
    if out.exists() && !force {
        bail!("{} already exists (use --force to replace it)", out.display());
    }
    Ok(())
}

/// Write a file through [`rewind_cli::output::Output`]: a temporary file beside it moved
/// into place when complete, or straight into a device or FIFO.
fn write_atomic(out: &Path, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    rewind_cli::output::Output::new(out)?.write(f)
}

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn spaced_hex(h: &str) -> String {
    h.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap_or("??"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(cmd: Command, progress: bool) -> Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let code = run_to(cmd, progress, &mut out)?;
    out.flush().context("cannot write to stdout")?;
    Ok(code)
}

fn json(out: &mut dyn Write, v: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, v).context("cannot write JSON")?;
    writeln!(out)?;
    Ok(())
}

fn run_to(cmd: Command, progress: bool, out: &mut dyn Write) -> Result<ExitCode> {
    match cmd {
        Command::Log { file, all, json: j } => {
            let a = open(&file)?;
            let log = inspect::log(&a, all)?;
            if j {
                json(out, &log)?;
            } else {
                writeln!(
                    out,
                    "{:>10} {:>8}  {:<16}  {:>6} {:>10}  notes",
                    "iteration", "record", "state hash", "pages", "stored"
                )?;
                for e in &log {
                    let mut notes = Vec::new();
                    if !e.on_timeline {
                        notes.push("abandoned".to_string());
                    }
                    if e.branch_point {
                        notes.push(format!("branch point ({} children)", e.children));
                    }
                    if e.checkpoint {
                        notes.push("checkpoint".to_string());
                    }
                    if e.parent.is_none() {
                        notes.push("root".to_string());
                    }
                    writeln!(
                        out,
                        "{:>10} {:>8}  {:<16}  {:>6} {:>10}  {}",
                        e.iteration,
                        e.record,
                        e.state_hash.get(..16).unwrap_or(&e.state_hash),
                        e.pages_changed,
                        human(e.bytes_stored),
                        notes.join(", ")
                    )?;
                }
            }
        }
        Command::Show { file, iter, json: j } => {
            let a = open(&file)?;
            let s = inspect::show(&a, iter)?;
            if j {
                json(out, &s)?;
            } else {
                let parent = s
                    .parent
                    .map_or("none (root)".to_string(), |p| format!("record {p}"));
                writeln!(
                    out,
                    "iteration {} (record {}, parent {parent}){}",
                    s.iteration,
                    s.record,
                    if s.on_timeline { "" } else { " [abandoned branch]" }
                )?;
                writeln!(out, "state hash     {}", s.state_hash)?;
                writeln!(
                    out,
                    "memory         {} bytes ({}, {} pages of {} bytes)",
                    s.memory_len,
                    human(s.memory_len),
                    s.pages,
                    s.page_size
                )?;
                if s.globals.is_empty() {
                    writeln!(out, "globals        none")?;
                }
                for g in &s.globals {
                    writeln!(out, "global {:<7} {} = {} ({})", g.index, g.ty, g.value, g.bits)?;
                }
                let shown: Vec<String> = s.changed_pages.iter().take(64).map(|p| p.to_string()).collect();
                let more = s.changed_pages.len().saturating_sub(64);
                writeln!(
                    out,
                    "changed pages  {}{}{}",
                    s.changed_pages.len(),
                    if shown.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", shown.join(" "))
                    },
                    if more > 0 {
                        format!(" … and {more} more")
                    } else {
                        String::new()
                    }
                )?;
                match (s.input_len, &s.input_hash) {
                    (Some(n), Some(h)) => {
                        writeln!(out, "input          {n} bytes (hash {})", &h[..16.min(h.len())])?
                    }
                    _ => writeln!(out, "input          none")?,
                }
                writeln!(
                    out,
                    "stored         {} ({})",
                    human(s.bytes_stored),
                    if s.checkpoint {
                        "checkpoint: full page vector"
                    } else {
                        "change list against the parent"
                    }
                )?;
            }
        }
        Command::Diff {
            sides,
            stat,
            max_bytes,
            json: j,
        } => {
            let (xa, a, other) = diff_sides(&sides)?;
            let xb = match &other {
                Some(file) => Some(open(file)?),
                None => None,
            };
            let (ar, br) = (&xa, xb.as_ref().unwrap_or(&xa));
            let d = inspect::diff_between(ar, a.0, br, a.1, stat)?;
            if j {
                json(out, &d)?;
                return Ok(ExitCode::SUCCESS);
            }
            writeln!(
                out,
                "diff iteration {} (record {}) → iteration {} (record {})",
                d.a.iteration, d.a.record, d.b.iteration, d.b.record
            )?;
            if d.a.memory_len != d.b.memory_len {
                writeln!(out, "memory: {} → {} bytes", d.a.memory_len, d.b.memory_len)?;
            }
            writeln!(
                out,
                "{} pages differ, {} byte ranges, {} bytes",
                d.pages_differing, d.ranges, d.bytes_differing
            )?;
            for (i, ga, gb) in &d.globals_differing {
                writeln!(out, "global {i}: {ga} → {gb}")?;
            }
            if stat {
                return Ok(ExitCode::SUCCESS);
            }
            let (ra, rb) = (inspect::resolve(ar, a.0)?, inspect::resolve(br, a.1)?);
            let mut shown = 0u64;
            'pages: for p in &d.pages {
                let n: u64 = p.ranges.iter().map(|r| r.len).sum();
                writeln!(
                    out,
                    "page {} ({:#x}): {} ranges, {} bytes",
                    p.page,
                    p.page as u64 * ar.page_size().bytes() as u64,
                    p.ranges.len(),
                    n
                )?;
                let list: Vec<String> = p
                    .ranges
                    .iter()
                    .map(|r| format!("{:#x}+{}", r.addr, r.len))
                    .collect();
                writeln!(out, "  ranges: {}", list.join(" "))?;
                if shown >= max_bytes {
                    writeln!(out, "… hexdump stopped after {shown} changed bytes (--max-bytes)")?;
                    break 'pages;
                }
                shown += n;
                // Every 16-byte row holding a changed byte, once, both sides, marked.
                let mut row_addrs: Vec<u64> = p
                    .ranges
                    .iter()
                    .flat_map(|r| (r.addr / hexdump::WIDTH)..=((r.addr + r.len - 1) / hexdump::WIDTH))
                    .collect();
                row_addrs.dedup();
                for row in row_addrs {
                    let start = row * hexdump::WIDTH;
                    let (mut x, mut y) = ([0u8; hexdump::WIDTH as usize], [0u8; hexdump::WIDTH as usize]);
                    inspect::read_padded(ar, ra.id, ra.memory_len, start, &mut x)?;
                    inspect::read_padded(br, rb.id, rb.memory_len, start, &mut y)?;
                    let mark: Vec<bool> = x.iter().zip(&y).map(|(p, q)| p != q).collect();
                    writeln!(out, "   -{}", hexdump::line(start, 0, &x, Some(&mark)))?;
                    writeln!(out, "   +{}", hexdump::line(start, 0, &y, Some(&mark)))?;
                }
            }
        }
        Command::Cat {
            file,
            iter,
            range,
            raw,
            json: j,
        } => {
            let a = open(&file)?;
            let (_, bytes) = inspect::cat(&a, iter, range.addr, range.len)?;
            if raw {
                out.write_all(&bytes).context("cannot write to stdout")?;
            } else if j {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                json(
                    out,
                    &serde_json::json!({"addr": range.addr, "len": range.len, "hex": hex}),
                )?;
            } else {
                for l in hexdump::dump(range.addr, &bytes) {
                    writeln!(out, "{l}")?;
                }
            }
        }
        Command::Blame {
            file,
            iter,
            range,
            history,
            max_changes,
            json: j,
        } => {
            let a = open(&file)?;
            let limit = if history {
                usize::try_from(max_changes).unwrap_or(usize::MAX).max(1)
            } else {
                1
            };
            let r = inspect::blame(&a, iter, range.addr, range.len, limit)?;
            if j {
                json(out, &r)?;
                return Ok(ExitCode::SUCCESS);
            }
            writeln!(
                out,
                "{:#x}+{} at iteration {} (record {}) = {}",
                r.addr,
                r.len,
                r.iteration,
                r.record,
                spaced_hex(&r.value)
            )?;
            if r.changes.is_empty() {
                writeln!(
                    out,
                    "never changed: zero in every record the archive holds up to here"
                )?;
            }
            for c in &r.changes {
                if c.at_oldest {
                    writeln!(
                        out,
                        "set at or before iteration {} (record {}, the oldest record): {}",
                        c.iteration,
                        c.record,
                        spaced_hex(&c.after)
                    )?;
                } else {
                    writeln!(
                        out,
                        "changed at iteration {} (record {}): {} → {}",
                        c.iteration,
                        c.record,
                        spaced_hex(&c.before),
                        spaced_hex(&c.after)
                    )?;
                }
            }
        }
        Command::Export {
            file,
            iter,
            output,
            globals,
            force,
        } => {
            let gpath = globals.unwrap_or_else(|| output.with_extension("globals.json"));
            if rewind_cli::output::same_destination(&gpath, &output) {
                bail!(
                    "refusing to write {}: the memory image (-o) and the globals (--globals) would be the same file",
                    gpath.display()
                );
            }
            check_output(&output, &[&file], force.force)?;
            check_output(&gpath, &[&file, &output], force.force)?;
            let a = open(&file)?;
            let pb = bar(progress, "export", false);
            let mut report = None;
            write_atomic(&output, |w| {
                report = Some(inspect::export(&a, iter, w, &mut |d, t| {
                    pb.set_length(t);
                    pb.set_position(d);
                })?);
                Ok(())
            })?;
            pb.finish_and_clear();
            let report = report.context("export produced no report")?;
            write_atomic(&gpath, |w| {
                serde_json::to_writer_pretty(&mut *w, &report.globals).context("cannot write JSON")?;
                writeln!(w)?;
                Ok(())
            })?;
            writeln!(
                out,
                "wrote {} bytes of iteration {} (state hash {}) to {}, globals to {}",
                report.memory_len,
                report.iteration,
                report.state_hash,
                output.display(),
                gpath.display()
            )?;
        }
        Command::Import {
            page_size,
            frames,
            frame_size,
            output,
            seed,
            first_iteration,
            force,
            json: j,
        } => {
            let frames = match frame_size {
                Some(fs) => {
                    let [one] = <[PathBuf; 1]>::try_from(frames).map_err(|v| {
                        anyhow::anyhow!("--frame-size takes exactly one input file, got {}", v.len())
                    })?;
                    Frames::Packed {
                        path: one,
                        frame_size: fs,
                    }
                }
                None => Frames::Files(frames),
            };
            import::plan(&frames, page_size)?;
            check_output(&output, &frames.paths(), force.force)?;
            let opts = ImportOptions {
                page_size,
                seed,
                first_iteration,
            };
            let pb = bar(progress, "import", true);
            let t0 = std::time::Instant::now();
            let rep = import::import(&frames, &output, &opts, &mut |d, t| {
                pb.set_length(t);
                pb.set_position(d);
            })?;
            pb.finish_and_clear();
            let secs = t0.elapsed().as_secs_f64();
            if j {
                json(out, &rep)?;
            } else {
                writeln!(
                    out,
                    "imported {} frames of {} bytes ({}) into {}: {} ({:.1}x smaller), {} pages changed, {} objects, {:.0} MiB/s",
                    rep.frames,
                    rep.frame_size,
                    human(rep.bytes_in),
                    output.display(),
                    human(rep.archive_bytes),
                    rep.bytes_in as f64 / rep.archive_bytes.max(1) as f64,
                    rep.pages_changed,
                    rep.objects,
                    rep.bytes_in as f64 / 1048576.0 / secs.max(1e-9)
                )?;
            }
        }
        Command::Heatmap {
            file,
            output,
            width,
            height,
            from,
            to,
            force,
        } => {
            check_output(&output, &[&file], force.force)?;
            let a = open(&file)?;
            let pb = bar(progress, "heatmap", false);
            let g = heatmap::compute(
                &a,
                from..=to.unwrap_or(u64::MAX),
                usize::try_from(width).unwrap_or(usize::MAX).min(4096),
                usize::try_from(height).unwrap_or(usize::MAX).min(4096),
                &mut |d, t| {
                    pb.set_length(t);
                    pb.set_position(d);
                },
            )
            .with_context(|| format!("cannot draw the heatmap of {}", file.display()))?;
            pb.finish_and_clear();
            let mut dims = (0, 0);
            write_atomic(&output, |w| {
                dims = heatmap::render(&g, w)?;
                Ok(())
            })?;
            writeln!(
                out,
                "wrote {} ({}x{} px): iterations {}..={} in {} columns ({:.1} per column), {} pages in {} rows ({:.1} per row), {} bytes changed",
                output.display(),
                dims.0,
                dims.1,
                g.iterations.0,
                g.iterations.1,
                g.cols,
                g.records_per_col,
                g.pages,
                g.rows,
                g.pages_per_row,
                g.total
            )?;
        }
        Command::Verify { file, json: j } => {
            let a = open(&file)?;
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let sp = spinner(progress, "verifying");
            let res = a.verify();
            sp.finish_and_clear();
            let torn = a.torn_tail();
            let (sound, msg) = match (&res, torn) {
                (Ok(_), None) => (true, None),
                (Ok(_), Some(t)) => (
                    false,
                    Some(format!(
                        "torn tail: {} bytes at offset {} after the last complete commit (an interrupted write; `rewind repair` cuts it)",
                        t.len, t.offset
                    )),
                ),
                (Err(e), _) => (false, Some(one_line(&clone_err(e)))),
            };
            if j {
                let r = res.as_ref().ok();
                json(
                    out,
                    &serde_json::json!({
                        "sound": sound,
                        "problem": msg,
                        "bytes": len,
                        "segments": r.map(|r| r.segments),
                        "commits": r.map(|r| r.commits),
                        "records": r.map(|r| r.records),
                        "objects": r.map(|r| r.objects),
                    }),
                )?;
            } else if let Ok(r) = &res {
                writeln!(
                    out,
                    "{}: {} commits, {} segments, {} records, {} objects checked ({})",
                    file.display(),
                    r.commits,
                    r.segments,
                    r.records,
                    r.objects,
                    human(len)
                )?;
            }
            if let Some(m) = &msg {
                if !j {
                    out.flush()?;
                    eprintln!("rewind: {} is not sound: {m}", file.display());
                }
                return Ok(ExitCode::FAILURE);
            }
            if !j {
                writeln!(out, "sound")?;
            }
        }
        Command::Gc {
            file,
            keep_last,
            keep_from,
            budget,
            abandoned_max_age,
            pin,
            output,
            dry_run,
            force,
            json: j,
        } => {
            let a = open(&file)?;
            let mut policy = rewind_gc::Policy::default();
            let rules =
                keep_last.is_some() || keep_from.is_some() || budget.is_some() || abandoned_max_age.is_some();
            if !rules && pin.is_empty() {
                bail!("gc needs a retention rule: --keep-last, --keep-from, --budget, --abandoned-max-age or --pin");
            }
            if let Some(n) = keep_last {
                policy = policy.keep_last(usize::try_from(n).unwrap_or(usize::MAX));
            } else if !rules {
                // Only pins: keep the pinned iterations and the head.
                policy = policy.keep_last(0);
            }
            if let Some(k) = keep_from {
                policy = policy.keep_from(k);
            }
            if let Some(b) = budget {
                policy = policy.budget(b);
            }
            if let Some(age) = abandoned_max_age {
                policy = policy.abandoned_max_age(age);
            }
            for p in &pin {
                policy.pins.insert(inspect::resolve(&a, *p)?.id);
            }
            if let Some(o) = &output {
                check_output(o, &[&file], force.force)?;
            }
            drop(a);
            let dest = match (&output, dry_run) {
                (_, true) => gc::Destination::DryRun,
                (None, false) => gc::Destination::InPlace,
                (Some(o), false) => gc::Destination::To(o.clone()),
            };
            let sp = spinner(progress, "collecting");
            let rep = gc::collect(&file, &policy, &dest)
                .with_context(|| format!("cannot collect {}", file.display()))?;
            sp.finish_and_clear();
            let (b, a) = (&rep.before, &rep.after);
            if j {
                json(
                    out,
                    &serde_json::json!({
                        "dry_run": rep.dry_run,
                        "output": rep.output,
                        "records_before": b.records,
                        "records_after": a.records,
                        "records_removed": rep.records_removed,
                        "objects_before": b.objects,
                        "objects_after": a.objects,
                        "objects_freed": rep.objects_freed,
                        "inputs_freed": rep.inputs_freed,
                        "checkpoints_before": b.checkpoints,
                        "checkpoints_after": a.checkpoints,
                        "bytes_before": b.bytes,
                        "bytes_after": a.bytes,
                        "bytes_freed": i64::try_from(rep.bytes_freed()).unwrap_or(i64::MAX),
                        "grew": rep.grew,
                        "before": b,
                        "after": a,
                    }),
                )?;
            } else {
                let what = match &rep.output {
                    Some(o) => format!("{}:", o.display()),
                    None => "dry run (nothing written):".to_string(),
                };
                writeln!(
                    out,
                    "{what} {} → {} records ({} removed), {} → {} objects ({} freed), {} → {} checkpoints, {} → {} ({})",
                    b.records,
                    a.records,
                    rep.records_removed,
                    b.objects,
                    a.objects,
                    rep.objects_freed,
                    b.checkpoints,
                    a.checkpoints,
                    human(b.bytes),
                    human(a.bytes),
                    match rep.bytes_freed() {
                        n if n >= 0 => format!("freed {}", human(n.unsigned_abs() as u64)),
                        n => format!("grew by {}", human(n.unsigned_abs() as u64)),
                    }
                )?;
                if let Some(why) = &rep.grew {
                    writeln!(out, "note: the collected archive is larger than the input: {why}")?;
                }
            }
        }
        Command::Stats { file, json: j } => {
            let a = open(&file)?;
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let pb = bar(progress, "stats", false);
            let s = inspect::stats(&a, len, &mut |d, t| {
                pb.set_length(t);
                pb.set_position(d);
            })?;
            pb.finish_and_clear();
            if j {
                json(out, &s)?;
            } else {
                let pct = |n: u64| {
                    if s.objects > 0 {
                        100.0 * n as f64 / s.objects as f64
                    } else {
                        0.0
                    }
                };
                writeln!(
                    out,
                    "file             {} ({} bytes), {} commits, {}-byte pages",
                    human(s.file_bytes),
                    s.file_bytes,
                    s.commits,
                    s.page_size
                )?;
                writeln!(
                    out,
                    "records          {} ({} on the timeline{}, {} abandoned), {} checkpoints",
                    s.records,
                    s.timeline,
                    s.iterations
                        .map_or(String::new(), |(a, b)| format!(", iterations {a}..={b}")),
                    s.abandoned,
                    s.checkpoints
                )?;
                writeln!(out, "objects          {}", s.objects)?;
                writeln!(
                    out,
                    "  full, raw      {:>8} ({:.1}%) {}",
                    s.raw_pages,
                    pct(s.raw_pages),
                    human(s.raw_bytes)
                )?;
                writeln!(
                    out,
                    "  full, lz4      {:>8} ({:.1}%) {}",
                    s.lz4_pages,
                    pct(s.lz4_pages),
                    human(s.lz4_bytes)
                )?;
                writeln!(
                    out,
                    "  delta          {:>8} ({:.1}%) {}",
                    s.delta_pages,
                    pct(s.delta_pages),
                    human(s.delta_bytes)
                )?;
                writeln!(
                    out,
                    "page references  {} changed pages, {} dedup hits (already stored), {} zero pages",
                    s.page_refs, s.dedup_hits, s.zero_pages
                )?;
                writeln!(
                    out,
                    "compression      {:.2}x (page bytes / stored object bytes)",
                    s.compression_ratio
                )?;
                writeln!(
                    out,
                    "per iteration    {} of file, {} of objects, {:.1} pages changed",
                    human(s.bytes_per_iteration as u64),
                    human(s.object_bytes_per_iteration as u64),
                    s.pages_changed_per_iteration
                )?;
                writeln!(
                    out,
                    "history          {:.1}x smaller than full copies of every record",
                    s.history_ratio
                )?;
            }
        }
        Command::Repair { file, force } => {
            if !force {
                // A damaged or unreadable file fails here, before anything is cut.
                open(&file)?;
            }
            let options = rewind_archive::RepairOptions { force };
            match rewind_archive::repair_with(&file, options)
                .with_context(|| format!("cannot repair {}", file.display()))?
            {
                Some(t) => writeln!(
                    out,
                    "{}: cut a torn tail of {} bytes at offset {}",
                    file.display(),
                    t.len,
                    t.offset
                )?,
                None => writeln!(out, "{}: clean, nothing to repair", file.display())?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ArchiveError` is not `Clone`; keep its message (and the message of its source) for
/// the verify report.
fn clone_err(e: &rewind_archive::ArchiveError) -> anyhow::Error {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    anyhow::anyhow!(s)
}
