//! `rewind`: look inside a recorded history (a `.rwd` archive) the way `git log`,
//! `git show`, `git diff` and `git blame` look inside a repository.
//!
//! This binary parses arguments, installs the panic hook and prints errors; each command
//! is a module of `rewind_cli::cmd`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rewind_cli::cmd::{Command, Ctx};
use rewind_cli::render;

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
/// `--json` prints JSON Lines: one object per line, with one schema per concept.
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

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = cli
        .command
        .run(&mut Ctx {
            out: &mut out,
            progress,
        })
        .and_then(|code| {
            out.flush().context("cannot write to stdout")?;
            Ok(code)
        });
    if std::env::var_os("REWIND_REMOTE_STATS").is_some_and(|v| v == "1") {
        for (url, r) in rewind_cli::cmd::remote_stats() {
            eprintln!(
                "rewind: {url}: {} requests, {} bytes fetched",
                r.requests, r.bytes_fetched
            );
        }
    }
    match result {
        Ok(code) => code,
        // The reader of stdout (`| head`) has what it wanted.
        Err(e) if render::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("rewind: {}", render::one_line(&*e));
            ExitCode::FAILURE
        }
    }
}
