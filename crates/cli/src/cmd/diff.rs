//! `rewind diff`: what differs between two iterations, of one archive or two.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use rewind_archive::{Archive, RecordInfo};

use super::Ctx;
use crate::inspect::{self, DiffReport, Target};
use crate::render::{hexdump, json_line};

/// Arguments of `rewind diff`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// `FILE A B` (iterations or rN of one archive) or `FILE:A FILE:B` (two archives).
    #[arg(num_args = 2..=3, required = true, value_name = "FILE A B | FILE:A FILE:B")]
    pub sides: Vec<String>,
    /// Counts only: pages, ranges and bytes that differ.
    #[arg(long)]
    pub stat: bool,
    /// Stop the hexdump after this many changed bytes (the summary still counts all).
    #[arg(long, default_value = "4096", value_parser = super::num)]
    pub max_bytes: u64,
    /// Print JSON Lines: a summary with both records, then one line per differing
    /// global and per differing page (no hexdump).
    #[arg(long)]
    pub json: bool,
}

/// The archives and iterations compared.
struct Sides {
    a: Archive,
    /// The second archive, when it is another file.
    b: Option<Archive>,
    ta: Target,
    tb: Target,
}

impl Sides {
    /// `FILE A B` or `FILE:A FILE:B`.
    fn parse(sides: &[String]) -> Result<Sides> {
        let target = |s: &str| s.parse::<Target>().map_err(|e| anyhow::anyhow!(e));
        match sides {
            [file, a, b] => Ok(Sides {
                a: super::open(Path::new(file))?,
                b: None,
                ta: target(a)?,
                tb: target(b)?,
            }),
            [a, b] => {
                let split = |s: &str| -> Result<(PathBuf, Target)> {
                    let (file, it) = s.rsplit_once(':').with_context(|| {
                        format!("{s:?}: expected FILE:ITERATION (or FILE A B for one archive)")
                    })?;
                    Ok((PathBuf::from(file), target(it)?))
                };
                let ((fa, ta), (fb, tb)) = (split(a)?, split(b)?);
                Ok(Sides {
                    a: super::open(&fa)?,
                    b: Some(super::open(&fb)?),
                    ta,
                    tb,
                })
            }
            _ => bail!("diff takes FILE A B or FILE:A FILE:B"),
        }
    }

    /// The second archive.
    fn b(&self) -> &Archive {
        self.b.as_ref().unwrap_or(&self.a)
    }
}

/// Compare the two sides and print what differs.
pub fn run(args: Args, ctx: &mut Ctx<'_>) -> Result<ExitCode> {
    let sides = Sides::parse(&args.sides)?;
    let d = inspect::diff_between(&sides.a, sides.ta, sides.b(), sides.tb, args.stat)?;
    let out = &mut *ctx.out;
    if args.json {
        json_line(out, &d.summary)?;
        for g in &d.globals {
            json_line(out, g)?;
        }
        for p in &d.pages {
            json_line(out, p)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    summary(out, &d)?;
    if !args.stat {
        let ra = inspect::resolve(&sides.a, sides.ta)?;
        let rb = inspect::resolve(sides.b(), sides.tb)?;
        hexdumps(out, &d, (&sides.a, &ra), (sides.b(), &rb), args.max_bytes)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The header lines: records, counts, globals.
fn summary(out: &mut dyn Write, d: &DiffReport) -> Result<()> {
    let s = &d.summary;
    writeln!(
        out,
        "diff iteration {} (record {}) → iteration {} (record {})",
        s.a.iteration, s.a.record, s.b.iteration, s.b.record
    )?;
    if s.a.memory_len != s.b.memory_len {
        writeln!(out, "memory: {} → {} bytes", s.a.memory_len, s.b.memory_len)?;
    }
    writeln!(
        out,
        "{} pages differ, {} byte ranges, {} bytes",
        s.pages_differing, s.ranges, s.bytes_differing
    )?;
    for g in &d.globals {
        let side = |v: &Option<crate::schema::Global>| {
            v.as_ref()
                .map_or("-".to_string(), |g| format!("{} {}", g.ty, g.value))
        };
        let label = crate::schema::label(g.index, g.name.as_deref());
        writeln!(out, "{label}: {} → {}", side(&g.a), side(&g.b))?;
    }
    Ok(())
}

/// Per page: its ranges, and a two-line hexdump of every 16-byte row holding a changed
/// byte, until `max_bytes` changed bytes were shown.
fn hexdumps(
    out: &mut dyn Write,
    d: &DiffReport,
    (xa, ra): (&Archive, &RecordInfo),
    (xb, rb): (&Archive, &RecordInfo),
    max_bytes: u64,
) -> Result<()> {
    let mut shown = 0u64;
    for p in &d.pages {
        writeln!(
            out,
            "page {} ({:#x}): {} ranges, {} bytes",
            p.page,
            p.addr,
            p.ranges.len(),
            p.bytes
        )?;
        let list: Vec<String> = p
            .ranges
            .iter()
            .map(|r| format!("{:#x}+{}", r.addr, r.len))
            .collect();
        writeln!(out, "  ranges: {}", list.join(" "))?;
        if shown >= max_bytes {
            writeln!(out, "… hexdump stopped after {shown} changed bytes (--max-bytes)")?;
            break;
        }
        shown += p.bytes;
        let mut rows: Vec<u64> = p
            .ranges
            .iter()
            .flat_map(|r| (r.addr / hexdump::WIDTH)..=((r.addr + r.len - 1) / hexdump::WIDTH))
            .collect();
        rows.dedup();
        for row in rows {
            let start = row * hexdump::WIDTH;
            let (mut x, mut y) = ([0u8; hexdump::WIDTH as usize], [0u8; hexdump::WIDTH as usize]);
            inspect::read_padded(xa, ra.id, ra.memory_len, start, &mut x)?;
            inspect::read_padded(xb, rb.id, rb.memory_len, start, &mut y)?;
            let mark: Vec<bool> = x.iter().zip(&y).map(|(p, q)| p != q).collect();
            writeln!(out, "   -{}", hexdump::line(start, 0, &x, Some(&mark)))?;
            writeln!(out, "   +{}", hexdump::line(start, 0, &y, Some(&mark)))?;
        }
    }
    Ok(())
}
