//! The command line: the options, their defaults, and the run configuration they make.

use std::path::PathBuf;

use clap::Parser;

use crate::peers::Peer;
use crate::WINDOW_600;

/// The doc the report goes to by default.
const DEFAULT_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/benchmarks.md");

/// rewind against the systems users would pick instead (full-copy ring, lz4, git, …),
/// every peer fed the same frames, every ratio from the same run. Prints a Markdown
/// report and, unless `--quick`, rewrites its generated section of docs/benchmarks.md.
#[derive(Parser, Debug)]
#[command(name = "compare")]
pub struct Args {
    /// A ~1 minute smoke run: one workload of 50 frames, a 60-frame window, 3
    /// repetitions, git without `--aggressive`; the doc is left alone unless `--write`.
    #[arg(long)]
    pub quick: bool,
    /// Workloads to run, by name or substring (`--list` shows them).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub workloads: Option<Vec<String>>,
    /// Frames of every selected workload, instead of each workload's own count.
    #[arg(long, value_name = "N")]
    pub frames: Option<usize>,
    /// Frames git and the archive beside it run over; forces git on every selected
    /// workload.
    #[arg(long, value_name = "N")]
    pub git_frames: Option<usize>,
    /// Frames the rewind peers keep [default: 600, 60 with --quick].
    #[arg(long, value_name = "W")]
    pub window: Option<usize>,
    /// Repetitions of each restore and read [default: 5, 3 with --quick].
    #[arg(long, value_name = "R")]
    pub reps: Option<usize>,
    /// Run no git peer.
    #[arg(long)]
    pub no_git: bool,
    /// Peers to run [default: all]; `pipe` is the capture pipeline and the GGRS pattern.
    #[arg(long, value_name = "P,Q", value_delimiter = ',')]
    pub peers: Option<Vec<Peer>>,
    /// Add a workload replayed from a recorded-frames file (`rewind_bench::RecordedFrames`);
    /// may be given more than once.
    #[arg(long, value_name = "PATH")]
    pub recorded: Vec<PathBuf>,
    /// Update the doc (the default without --quick).
    #[arg(long, overrides_with = "no_write")]
    pub write: bool,
    /// Only print the report.
    #[arg(long, overrides_with = "write")]
    pub no_write: bool,
    /// The doc whose generated section is rewritten.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DOC)]
    pub doc: PathBuf,
    /// Write the generated section NAME of the doc (e.g. `guests` for the real-guest
    /// recordings) instead of the main one.
    #[arg(long, value_name = "NAME", value_parser = section_name)]
    pub section: Option<String>,
    /// List the selected workloads (name, frames, git frames) and exit.
    #[arg(long)]
    pub list: bool,
}

/// A section name: letters, digits and '-' (it goes into an HTML comment marker).
fn section_name(s: &str) -> Result<String, String> {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(s.to_string())
    } else {
        Err("--section takes letters, digits and '-'".into())
    }
}

/// What a run does, from the arguments.
pub struct Config {
    pub quick: bool,
    /// Frames the rewind peers keep.
    pub window: usize,
    /// Repetitions of each restore and read.
    pub reps: usize,
    pub git: bool,
    /// Update the doc.
    pub write: bool,
    pub doc: PathBuf,
    /// Slots of the full-copy and lz4 rings.
    pub ring_slots: usize,
    /// Peers to run; `None`: all.
    pub peers: Option<Vec<Peer>>,
}

impl Config {
    /// Whether `peer` is selected.
    pub fn runs(&self, peer: Peer) -> bool {
        self.peers.as_ref().is_none_or(|p| p.contains(&peer))
    }
}

impl Args {
    /// The run configuration: `--quick` changes the defaults, explicit options win.
    pub fn config(&self) -> Config {
        let (window, reps) = if self.quick { (60, 3) } else { (WINDOW_600, 5) };
        Config {
            quick: self.quick,
            window: self.window.unwrap_or(window),
            reps: self.reps.unwrap_or(reps),
            git: !self.no_git,
            write: match (self.write, self.no_write) {
                (true, _) => true,
                (_, true) => false,
                _ => !self.quick,
            },
            doc: self.doc.clone(),
            ring_slots: 8,
            peers: self.peers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("compare").chain(args.iter().copied()))
    }

    /// The arguments of every `compare` command line quoted in `text`: the words after
    /// `compare -- ` up to the closing backtick (lines joined, `\` continuations too),
    /// or none for a bare `` …compare` ``.
    fn quoted_command_lines(text: &str) -> Vec<Vec<String>> {
        let joined = text.replace("\\\n", " ").replace('\n', " ");
        let mut out = Vec::new();
        for (at, _) in joined.match_indices("compare") {
            let rest = &joined[at + "compare".len()..];
            if rest.starts_with('`') {
                out.push(Vec::new());
            } else if let Some(args) = rest.strip_prefix(" -- ") {
                let end = args.find('`').unwrap_or(args.len());
                out.push(args[..end].split_whitespace().map(str::to_string).collect());
            }
        }
        out
    }

    #[test]
    fn every_command_line_quoted_in_the_docs_parses() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut lines = Vec::new();
        for doc in [
            "docs/benchmarks.md",
            "docs/format.md",
            "docs/architecture.md",
            "README.md",
        ] {
            let text = std::fs::read_to_string(format!("{root}/{doc}")).expect("the doc exists");
            lines.extend(quoted_command_lines(&text).into_iter().map(|l| (doc, l)));
        }
        // The table of commands, the recorded guests, the pipeline section, the
        // generated sections' own command lines, format.md and architecture.md.
        assert!(lines.len() >= 10, "{lines:?}");
        assert!(
            lines.iter().any(|(_, l)| l.contains(&"guests".to_string())),
            "{lines:?}"
        );
        for (doc, line) in &lines {
            let args = parse(&line.iter().map(String::as_str).collect::<Vec<_>>())
                .unwrap_or_else(|e| panic!("{doc}: `compare -- {}`: {e}", line.join(" ")));
            args.config();
        }
    }

    #[test]
    fn the_quoted_lines_are_found_across_line_breaks() {
        let text = "run `cargo run --release -p rewind-bench --bin compare -- --workloads\n\
                    64MiB-1%-clustered --no-git` and\n```sh\ncargo run -p rewind-bench --bin compare -- \\\n    --recorded a.frames\n```\nand `compare`.";
        assert_eq!(
            quoted_command_lines(text),
            vec![
                vec!["--workloads", "64MiB-1%-clustered", "--no-git"],
                vec!["--recorded", "a.frames"],
                vec![],
            ]
        );
    }

    #[test]
    fn defaults_and_quick() {
        let full = parse(&[]).expect("no options").config();
        assert_eq!(
            (full.window, full.reps, full.git, full.write, full.quick),
            (600, 5, true, true, false)
        );
        assert!(full.runs(Peer::Git) && full.runs(Peer::Pipe));
        let quick = parse(&["--quick"]).expect("quick").config();
        assert_eq!((quick.window, quick.reps, quick.write), (60, 3, false));
        let over = parse(&["--quick", "--window", "600", "--reps", "4", "--write"]).expect("overrides");
        let over = over.config();
        assert_eq!((over.window, over.reps, over.write), (600, 4, true));
    }

    #[test]
    fn the_last_of_write_and_no_write_wins() {
        assert!(!parse(&["--write", "--no-write"]).expect("both").config().write);
        assert!(parse(&["--no-write", "--write"]).expect("both").config().write);
        assert!(!parse(&["--no-write"]).expect("no-write").config().write);
    }

    #[test]
    fn lists_split_on_commas_and_peers_are_checked() {
        let a = parse(&[
            "--workloads",
            "64MiB-1%-clustered,170MB",
            "--peers",
            "ring,hint,scan,pipe",
        ])
        .expect("lists");
        assert_eq!(
            a.workloads.as_deref(),
            Some(&["64MiB-1%-clustered".to_string(), "170MB".to_string()][..])
        );
        let cfg = a.config();
        assert!(cfg.runs(Peer::Ring) && cfg.runs(Peer::Pipe) && !cfg.runs(Peer::Git));
        let err = parse(&["--peers", "ring,rsync"]).expect_err("unknown peer");
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn a_section_name_is_letters_digits_and_dashes() {
        let a = parse(&["--section", "real-guests2"]).expect("good name");
        assert_eq!(a.section.as_deref(), Some("real-guests2"));
        let err = parse(&["--section", "a -->"]).expect_err("bad name");
        assert!(err.to_string().contains("letters, digits and '-'"), "{err}");
    }

    #[test]
    fn recorded_repeats_and_numbers_are_checked() {
        let a = parse(&[
            "--recorded",
            "a.frames",
            "--recorded",
            "b.frames",
            "--frames",
            "9",
        ])
        .expect("recorded");
        assert_eq!(a.recorded, [PathBuf::from("a.frames"), PathBuf::from("b.frames")]);
        assert_eq!(a.frames, Some(9));
        assert!(parse(&["--frames", "many"]).is_err());
        assert!(parse(&["--frames"]).is_err());
        assert!(parse(&["--fast"]).is_err());
    }
}
