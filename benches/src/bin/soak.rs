//! The rollback soak (`rewind_bench::soak`): prints records, abandoned records, the
//! history's resident bytes and the process's resident memory every `--every` frames.
//!
//! ```sh
//! cargo run --release -p rewind-bench --bin soak -- --frames 1000000
//! cargo run --release -p rewind-bench --bin soak -- --frames 1000000 --rollback-every 0
//! ```

use clap::Parser;
use rewind_bench::soak::{self, SoakConfig};

/// Run the rollback soak under the README's policy.
#[derive(Parser)]
struct Args {
    /// Frames to run.
    #[arg(long, default_value_t = 1_000_000)]
    frames: u64,
    /// A late input every this many frames (0: no rollbacks).
    #[arg(long, default_value_t = 4)]
    rollback_every: u64,
    /// Frames a late input reaches back.
    #[arg(long, default_value_t = 3)]
    rollback_depth: u64,
    /// Print a line every this many frames.
    #[arg(long, default_value_t = 100_000)]
    every: u64,
}

/// Resident and peak resident memory of this process in bytes, from /proc.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() -> Result<(), rewind::Error> {
    let args = Args::parse();
    let config = SoakConfig {
        frames: args.frames,
        rollback_every: args.rollback_every,
        rollback_depth: args.rollback_depth,
        ..SoakConfig::default()
    };
    println!(
        "soak: {} frames, 1 MiB, {} pages written per frame, keep_last({}), rollback of {} every {} frames",
        config.frames, config.written, config.window, config.rollback_depth, config.rollback_every
    );
    println!(
        "{:>9} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9}",
        "frame", "records", "abandoned", "rollbacks", "history", "rss", "peak rss"
    );
    soak::run(&config, args.every, |s| {
        let (rss, peak) = rss();
        println!(
            "{:>9} {:>8} {:>9} {:>10} {:>7.1}MB {:>7.1}MB {:>7.1}MB",
            s.frame,
            s.records,
            s.abandoned,
            s.rollbacks,
            s.resident_bytes as f64 / 1e6,
            rss as f64 / 1e6,
            peak as f64 / 1e6
        );
    })?;
    Ok(())
}
