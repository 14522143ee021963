//! Queries over an archive read in place: the timeline, one record, diffs, reads,
//! blame, export and statistics. Every function returns plain data (serializable for
//! `--json`); printing is the binary's job.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{bail, Context, Result};
use rewind_archive::{Archive, ObjectKind, RecordInfo};
use rewind_history::RecordId;
use rewind_snapshot::{GlobalValue, PageVec, Snapshot};
use rewind_store::{Hasher, PageHash};
use serde::Serialize;

/// Which record a command looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// An iteration on the archive's timeline (`123`).
    Iteration(u64),
    /// A record by number, also off the timeline (`r123`, from `rewind log --all`).
    Record(u64),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(r) = s.strip_prefix('r').or_else(|| s.strip_prefix('#')) {
            return parse_u64(r)
                .map(Target::Record)
                .map_err(|e| format!("bad record number {s:?}: {e}"));
        }
        parse_u64(s)
            .map(Target::Iteration)
            .map_err(|e| format!("bad iteration {s:?}: {e} (use N for an iteration, rN for a record)"))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Iteration(i) => write!(f, "iteration {i}"),
            Target::Record(r) => write!(f, "record {r}"),
        }
    }
}

/// Parse a number in decimal, `0x` hex, `0o` octal or `0b` binary; `_` separators and
/// the size suffixes `k`/`KiB`, `M`/`MiB`, `G`/`GiB` (powers of 1024) are accepted.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t: String = s.trim().chars().filter(|c| *c != '_').collect();
    let lower = t.to_ascii_lowercase();
    let (num, mul) = [
        ("kib", 1u64 << 10),
        ("mib", 1 << 20),
        ("gib", 1 << 30),
        ("k", 1 << 10),
        ("m", 1 << 20),
        ("g", 1 << 30),
    ]
    .iter()
    .find_map(|(suf, m)| {
        lower
            .strip_suffix(suf)
            .filter(|_| !lower.starts_with("0x"))
            .map(|n| (n.to_string(), *m))
    })
    .unwrap_or((lower.clone(), 1));
    let v = if let Some(h) = num.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else if let Some(o) = num.strip_prefix("0o") {
        u64::from_str_radix(o, 8)
    } else if let Some(b) = num.strip_prefix("0b") {
        u64::from_str_radix(b, 2)
    } else {
        num.parse::<u64>()
    }
    .map_err(|e| e.to_string())?;
    v.checked_mul(mul).ok_or_else(|| "number too large".to_string())
}

/// The record a target names, with a message that says what the archive holds when it
/// is not there.
pub fn resolve(archive: &Archive, target: Target) -> Result<RecordInfo> {
    match target {
        Target::Record(r) => archive
            .record(RecordId(r))
            .with_context(|| format!("record {r} is not in the archive")),
        Target::Iteration(i) => match archive.at(i) {
            Ok(r) => Ok(r),
            Err(rewind_archive::ArchiveError::NotOnTimeline { .. }) => {
                let tl = archive.timeline()?;
                match (tl.first(), tl.last()) {
                    (Some(a), Some(b)) => bail!(
                        "iteration {i} is not retained in the archive (its timeline holds iterations {}..={}, {} records)",
                        a.iteration,
                        b.iteration,
                        tl.len()
                    ),
                    _ => bail!("iteration {i} is not retained: the archive holds no records"),
                }
            }
            Err(e) => Err(e).with_context(|| format!("cannot look up iteration {i}")),
        },
    }
}

/// Lower-case hex of a hash, most significant byte first.
pub fn hex_hash(h: PageHash) -> String {
    h.to_hex()
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---- log ---------------------------------------------------------------------------

/// One line of `rewind log`.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    /// Iteration.
    pub iteration: u64,
    /// Record number.
    pub record: u64,
    /// Parent record.
    pub parent: Option<u64>,
    /// State hash (hex).
    pub state_hash: String,
    /// Pages the capture changed.
    pub pages_changed: u32,
    /// Bytes the capture stored.
    pub bytes_stored: u64,
    /// Memory length.
    pub memory_len: u64,
    /// Stored as a checkpoint (full page vector).
    pub checkpoint: bool,
    /// On the current timeline (false: an abandoned branch).
    pub on_timeline: bool,
    /// Records in the file whose parent this is; more than one makes a branch point.
    pub children: u32,
    /// True when more than one record branches from here.
    pub branch_point: bool,
}

/// The timeline (oldest first), or with `all` every record by number, abandoned
/// branches included.
pub fn log(archive: &Archive, all: bool) -> Result<Vec<LogEntry>> {
    let records = archive.records().context("cannot read the record index")?;
    let mut children: HashMap<u64, u32> = HashMap::new();
    for r in &records {
        if let Some(p) = r.parent {
            *children.entry(p.0).or_default() += 1;
        }
    }
    let list = if all { records } else { archive.timeline()? };
    list.iter()
        .map(|r| {
            let d = archive.record_detail(r.id)?;
            let c = children.get(&r.id.0).copied().unwrap_or(0);
            Ok(LogEntry {
                iteration: r.iteration,
                record: r.id.0,
                parent: r.parent.map(|p| p.0),
                state_hash: r.state_hash.to_hex(),
                pages_changed: d.pages_changed,
                bytes_stored: d.bytes_stored,
                memory_len: r.memory_len,
                checkpoint: d.checkpoint,
                on_timeline: d.info.on_timeline,
                children: c,
                branch_point: c > 1,
            })
        })
        .collect()
}

// ---- show --------------------------------------------------------------------------

/// A global's type and value for display and JSON.
#[derive(Clone, Debug, Serialize)]
pub struct GlobalJson {
    /// Index of the global.
    pub index: usize,
    /// `i32`, `i64`, `f32`, `f64` or `v128`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// The value as text (`1.5`, `-3`, `0x…` for v128).
    pub value: String,
    /// The raw bits in hex.
    pub bits: String,
}

/// Globals as display/JSON values.
pub fn globals_json(globals: &[GlobalValue]) -> Vec<GlobalJson> {
    globals
        .iter()
        .enumerate()
        .map(|(index, g)| {
            let value = match *g {
                GlobalValue::I32(v) => v.to_string(),
                GlobalValue::I64(v) => v.to_string(),
                GlobalValue::F32(b) => format!("{:?}", f32::from_bits(b)),
                GlobalValue::F64(b) => format!("{:?}", f64::from_bits(b)),
                GlobalValue::V128(v) => format!("{v:#034x}"),
            };
            let bits = match *g {
                GlobalValue::I32(v) => format!("{:#010x}", v as u32),
                GlobalValue::I64(v) => format!("{:#018x}", v as u64),
                GlobalValue::F32(b) => format!("{b:#010x}"),
                GlobalValue::F64(b) => format!("{b:#018x}"),
                GlobalValue::V128(v) => format!("{v:#034x}"),
            };
            GlobalJson {
                index,
                ty: g.ty().name(),
                value,
                bits,
            }
        })
        .collect()
}

/// What `rewind show` prints.
#[derive(Clone, Debug, Serialize)]
pub struct ShowReport {
    /// Iteration.
    pub iteration: u64,
    /// Record number.
    pub record: u64,
    /// Parent record.
    pub parent: Option<u64>,
    /// On the current timeline.
    pub on_timeline: bool,
    /// Memory length in bytes.
    pub memory_len: u64,
    /// Pages of memory.
    pub pages: u64,
    /// Page size.
    pub page_size: u32,
    /// State hash (hex).
    pub state_hash: String,
    /// Globals.
    pub globals: Vec<GlobalJson>,
    /// Pages changed against the parent.
    pub changed_pages: Vec<u32>,
    /// Bytes the capture stored.
    pub bytes_stored: u64,
    /// Stored as a checkpoint.
    pub checkpoint: bool,
    /// Size of the recorded input blob, if any.
    pub input_len: Option<usize>,
    /// Hash of the input blob.
    pub input_hash: Option<String>,
}

/// One record in detail.
pub fn show(archive: &Archive, target: Target) -> Result<ShowReport> {
    let r = resolve(archive, target)?;
    let d = archive.record_detail(r.id)?;
    let ps = archive.page_size().bytes() as u64;
    let globals = archive.globals(r.id)?;
    let changed = archive.changes(r.id)?.into_iter().map(|(i, _)| i).collect();
    let input = archive.input(r.id)?;
    Ok(ShowReport {
        iteration: r.iteration,
        record: r.id.0,
        parent: r.parent.map(|p| p.0),
        on_timeline: d.info.on_timeline,
        memory_len: r.memory_len,
        pages: r.memory_len / ps,
        page_size: ps as u32,
        state_hash: r.state_hash.to_hex(),
        globals: globals_json(&globals),
        changed_pages: changed,
        bytes_stored: d.bytes_stored,
        checkpoint: d.checkpoint,
        input_len: input.map(|i| i.len()),
        input_hash: r.input.map(hex_hash),
    })
}

// ---- diff --------------------------------------------------------------------------

/// A byte range that differs.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct ByteRange {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// One page that differs between two records.
#[derive(Clone, Debug, Serialize)]
pub struct PageDiff {
    /// Page index.
    pub page: u32,
    /// Exact ranges of differing bytes (every byte inside differs).
    pub ranges: Vec<ByteRange>,
}

/// What `rewind diff` finds.
#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    /// The first record.
    pub a: DiffSide,
    /// The second record.
    pub b: DiffSide,
    /// Pages whose hash differs.
    pub pages_differing: usize,
    /// Ranges of differing bytes.
    pub ranges: usize,
    /// Bytes that differ.
    pub bytes_differing: u64,
    /// Globals that differ: `(index, a, b)`.
    pub globals_differing: Vec<(usize, String, String)>,
    /// Per page (empty with `stat`).
    pub pages: Vec<PageDiff>,
}

/// One side of a diff.
#[derive(Clone, Debug, Serialize)]
pub struct DiffSide {
    /// Iteration.
    pub iteration: u64,
    /// Record.
    pub record: u64,
    /// Memory length.
    pub memory_len: u64,
    /// State hash.
    pub state_hash: String,
}

/// Read bytes of a record where bytes past its memory read as zero.
pub fn read_padded(
    archive: &Archive,
    id: RecordId,
    memory_len: u64,
    addr: u64,
    out: &mut [u8],
) -> Result<()> {
    out.fill(0);
    let present = memory_len.saturating_sub(addr).min(out.len() as u64) as usize;
    if let Some(o) = out.get_mut(..present).filter(|o| !o.is_empty()) {
        archive.read(id, addr, o)?;
    }
    Ok(())
}

/// Pages and byte ranges that differ between two records (memory past the shorter one
/// counts as zeros). With `stat`, only the counts are kept (bytes are still compared).
pub fn diff(archive: &Archive, a: Target, b: Target, stat: bool) -> Result<DiffReport> {
    diff_between(archive, a, archive, b, stat)
}

/// The pages that differ between a record of one archive and a record of another (or
/// the same). Archives with the same page size and seed (peers that compare state
/// hashes share them) are compared by page hash; otherwise every page's bytes are.
fn differing_pages(xa: &Archive, ra: &RecordInfo, xb: &Archive, rb: &RecordInfo) -> Result<Vec<u32>> {
    if std::ptr::eq(xa, xb) {
        return Ok(xa.diff(ra.id, rb.id)?);
    }
    let ps = xa.page_size().bytes();
    if ps != xb.page_size().bytes() {
        bail!(
            "the archives have different page sizes ({} and {} bytes)",
            ps,
            xb.page_size().bytes()
        );
    }
    let n = ra.memory_len.max(rb.memory_len).div_ceil(ps as u64);
    let n = u32::try_from(n).context("memory too large to compare")?;
    if xa.info()?.seed == xb.info()?.seed {
        let (pa, pb) = (xa.pages(ra.id)?, xb.pages(rb.id)?);
        let zero = PageHash::ZERO;
        return Ok((0..n)
            .filter(|&i| {
                pa.get(i as usize).copied().unwrap_or(zero) != pb.get(i as usize).copied().unwrap_or(zero)
            })
            .collect());
    }
    let (mut x, mut y) = (vec![0u8; ps], vec![0u8; ps]);
    let mut out = Vec::new();
    for i in 0..n {
        let addr = u64::from(i) * ps as u64;
        read_padded(xa, ra.id, ra.memory_len, addr, &mut x)?;
        read_padded(xb, rb.id, rb.memory_len, addr, &mut y)?;
        if x != y {
            out.push(i);
        }
    }
    Ok(out)
}

/// [`diff`] across two archives: iteration (or record) `a` of `xa` against `b` of `xb`,
/// e.g. two peers' archives at the frame a desync was reported for.
pub fn diff_between(xa: &Archive, a: Target, xb: &Archive, b: Target, stat: bool) -> Result<DiffReport> {
    let (ra, rb) = (resolve(xa, a)?, resolve(xb, b)?);
    let pages = differing_pages(xa, &ra, xb, &rb)?;
    let ps = xa.page_size().bytes();
    let (mut pa, mut pb) = (vec![0u8; ps], vec![0u8; ps]);
    let mut out = Vec::new();
    let (mut nranges, mut nbytes) = (0usize, 0u64);
    for &p in &pages {
        let addr = p as u64 * ps as u64;
        read_padded(xa, ra.id, ra.memory_len, addr, &mut pa)?;
        read_padded(xb, rb.id, rb.memory_len, addr, &mut pb)?;
        let ranges: Vec<ByteRange> = rewind_store::codec::ChangedRuns::new(&pa, &pb)
            .map(|(s, e)| ByteRange {
                addr: addr + s as u64,
                len: (e - s) as u64,
            })
            .collect();
        nranges += ranges.len();
        nbytes += ranges.iter().map(|r| r.len).sum::<u64>();
        if !stat {
            out.push(PageDiff { page: p, ranges });
        }
    }
    let (ga, gb) = (xa.globals(ra.id)?, xb.globals(rb.id)?);
    let (ja, jb) = (globals_json(&ga), globals_json(&gb));
    let mut globals_differing = Vec::new();
    for i in 0..ja.len().max(jb.len()) {
        let va = ja.get(i).map(|g| format!("{} {}", g.ty, g.value));
        let vb = jb.get(i).map(|g| format!("{} {}", g.ty, g.value));
        if ga.get(i) != gb.get(i) {
            globals_differing.push((
                i,
                va.unwrap_or_else(|| "-".into()),
                vb.unwrap_or_else(|| "-".into()),
            ));
        }
    }
    let side = |r: &RecordInfo| DiffSide {
        iteration: r.iteration,
        record: r.id.0,
        memory_len: r.memory_len,
        state_hash: r.state_hash.to_hex(),
    };
    Ok(DiffReport {
        a: side(&ra),
        b: side(&rb),
        pages_differing: pages.len(),
        ranges: nranges,
        bytes_differing: nbytes,
        globals_differing,
        pages: out,
    })
}

// ---- cat / blame -------------------------------------------------------------------

/// Check that `[addr, addr + len)` lies in a record's memory, naming the problem.
pub fn check_range(r: &RecordInfo, addr: u64, len: u64) -> Result<()> {
    if len == 0 {
        bail!("--len must be at least 1");
    }
    match addr.checked_add(len) {
        Some(end) if end <= r.memory_len => Ok(()),
        _ => bail!(
            "address {addr:#x}+{len} is past the end of memory at iteration {} ({} bytes, last address {:#x})",
            r.iteration,
            r.memory_len,
            r.memory_len.saturating_sub(1)
        ),
    }
}

/// The bytes at `addr` of a record, read in place (one page lookup and decode per page).
pub fn cat(archive: &Archive, target: Target, addr: u64, len: u64) -> Result<(RecordInfo, Vec<u8>)> {
    let r = resolve(archive, target)?;
    check_range(&r, addr, len)?;
    let mut out = vec![0u8; usize::try_from(len).context("--len does not fit in memory")?];
    archive.read(r.id, addr, &mut out)?;
    Ok((r, out))
}

/// One change found by `blame`.
#[derive(Clone, Debug, Serialize)]
pub struct BlameChange {
    /// The iteration at which the bytes took the value `after`.
    pub iteration: u64,
    /// Its record.
    pub record: u64,
    /// True when this is the oldest record in the archive: the bytes may have changed
    /// earlier than the archive reaches.
    pub at_oldest: bool,
    /// The bytes in the parent record (hex; empty at the oldest record).
    pub before: String,
    /// The bytes at this record (hex).
    pub after: String,
}

/// What `rewind blame` finds.
#[derive(Clone, Debug, Serialize)]
pub struct BlameReport {
    /// The iteration asked about.
    pub iteration: u64,
    /// Its record.
    pub record: u64,
    /// Address.
    pub addr: u64,
    /// Length.
    pub len: u64,
    /// The bytes at the asked iteration (hex).
    pub value: String,
    /// Latest change first. Empty when the bytes were zero and never changed.
    pub changes: Vec<BlameChange>,
}

/// The latest `limit` changes of `[addr, addr + len)` at or before a record.
pub fn blame(archive: &Archive, target: Target, addr: u64, len: u64, limit: usize) -> Result<BlameReport> {
    let r = resolve(archive, target)?;
    check_range(&r, addr, len)?;
    let n = usize::try_from(len).context("--len does not fit in memory")?;
    let chain = archive.blame_chain(r.id, addr, len, limit)?;
    let mut value = vec![0u8; n];
    archive.read(r.id, addr, &mut value)?;
    let mut buf = vec![0u8; n];
    let mut changes = Vec::with_capacity(chain.len());
    for b in chain {
        archive.read(b.record, addr, &mut buf)?;
        let after = hex_bytes(&buf);
        let before = match archive.record(b.record)?.parent {
            Some(p) if !b.at_oldest => {
                let pm = archive.memory_len(p)?;
                read_padded(archive, p, pm, addr, &mut buf)?;
                hex_bytes(&buf)
            }
            _ => String::new(),
        };
        changes.push(BlameChange {
            iteration: b.iteration,
            record: b.record.0,
            at_oldest: b.at_oldest,
            before,
            after,
        });
    }
    Ok(BlameReport {
        iteration: r.iteration,
        record: r.id.0,
        addr,
        len,
        value: hex_bytes(&value),
        changes,
    })
}

// ---- export ------------------------------------------------------------------------

/// What `rewind export` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportReport {
    /// Iteration.
    pub iteration: u64,
    /// Record.
    pub record: u64,
    /// Bytes written.
    pub memory_len: u64,
    /// The state hash, recomputed from the exported pages and globals (it matched).
    pub state_hash: String,
    /// The globals.
    pub globals: Vec<GlobalJson>,
}

/// Write the full memory image of a record to `out`, page by page, checking every page's
/// hash and the recomputed state hash against the archive.
pub fn export(
    archive: &Archive,
    target: Target,
    out: &mut dyn Write,
    progress: crate::Progress<'_>,
) -> Result<ExportReport> {
    let r = resolve(archive, target)?;
    let info = archive.info()?;
    let ps = archive.page_size();
    let hasher = Hasher::new(info.seed, ps);
    let pages = archive.pages(r.id)?;
    let mut buf = vec![0u8; ps.bytes()];
    let total = pages.len() as u64;
    for (i, h) in pages.iter().enumerate() {
        archive.read_page(*h, &mut buf)?;
        let found = hasher.page(&buf);
        if found != *h {
            bail!(
                "page {i} of {} rebuilds to hash {} but the archive names {}: the archive is damaged",
                Target::Iteration(r.iteration),
                found.to_hex(),
                h.to_hex()
            );
        }
        out.write_all(&buf).context("cannot write the memory image")?;
        if i % 256 == 0 {
            progress(i as u64, total);
        }
    }
    progress(total, total);
    let globals = archive.globals(r.id)?;
    let vec: PageVec = pages.into_iter().collect();
    let snap = Snapshot::from_parts(&hasher, vec, r.memory_len, globals.clone());
    if snap.state_hash() != r.state_hash {
        bail!(
            "state hash of {} recomputes to {} but the archive holds {}: the archive is damaged",
            Target::Iteration(r.iteration),
            snap.state_hash().to_hex(),
            r.state_hash.to_hex()
        );
    }
    Ok(ExportReport {
        iteration: r.iteration,
        record: r.id.0,
        memory_len: r.memory_len,
        state_hash: r.state_hash.to_hex(),
        globals: globals_json(&globals),
    })
}

// ---- stats -------------------------------------------------------------------------

/// What `rewind stats` prints.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// File size in bytes.
    pub file_bytes: u64,
    /// Page size.
    pub page_size: u32,
    /// Commits.
    pub commits: u64,
    /// Records in the file.
    pub records: u64,
    /// Records on the timeline.
    pub timeline: u64,
    /// Records on abandoned branches.
    pub abandoned: u64,
    /// Oldest and newest iteration on the timeline.
    pub iterations: Option<(u64, u64)>,
    /// Records stored with a full page vector.
    pub checkpoints: u64,
    /// Page objects.
    pub objects: u64,
    /// Full pages stored raw.
    pub raw_pages: u64,
    /// Full pages stored lz4-compressed.
    pub lz4_pages: u64,
    /// Pages stored as deltas.
    pub delta_pages: u64,
    /// Bytes of raw pages.
    pub raw_bytes: u64,
    /// Bytes of lz4 pages.
    pub lz4_bytes: u64,
    /// Bytes of deltas.
    pub delta_bytes: u64,
    /// Page references made by records (changed pages, non-zero).
    pub page_refs: u64,
    /// Of them, references to a page already stored (a zero page is never stored, so
    /// `page_refs - objects` page writes cost no object bytes).
    pub dedup_hits: u64,
    /// Changed pages that became the zero page (never stored).
    pub zero_pages: u64,
    /// Logical bytes of the stored objects (objects × page size) / their stored bytes.
    pub compression_ratio: f64,
    /// File bytes per record.
    pub bytes_per_iteration: f64,
    /// Object bytes per record.
    pub object_bytes_per_iteration: f64,
    /// Changed pages per record.
    pub pages_changed_per_iteration: f64,
    /// Logical bytes of all records' memories / file bytes.
    pub history_ratio: f64,
}

/// Counts over the whole archive: objects by kind, dedup and compression.
pub fn stats(archive: &Archive, file_bytes: u64, progress: crate::Progress<'_>) -> Result<Stats> {
    let info = archive.info()?;
    let ps = info.page_size as u64;
    let mut s = Stats {
        file_bytes,
        page_size: info.page_size,
        commits: info.commits,
        ..Stats::default()
    };
    for o in archive.objects()? {
        s.objects += 1;
        let (n, b) = match o.kind {
            ObjectKind::Raw => (&mut s.raw_pages, &mut s.raw_bytes),
            ObjectKind::Lz4 => (&mut s.lz4_pages, &mut s.lz4_bytes),
            ObjectKind::Delta => (&mut s.delta_pages, &mut s.delta_bytes),
        };
        *n += 1;
        *b += o.stored_len as u64;
    }
    let records = archive.records()?;
    let total = records.len() as u64;
    let mut logical = 0u64;
    for (k, r) in records.iter().enumerate() {
        s.records += 1;
        if r.on_timeline {
            s.timeline += 1;
        } else {
            s.abandoned += 1;
        }
        logical += r.memory_len;
        if archive.record_detail(r.id)?.checkpoint {
            s.checkpoints += 1;
        }
        for (_, h) in archive.changes(r.id)? {
            if h.is_zero() {
                s.zero_pages += 1;
            } else {
                s.page_refs += 1;
            }
        }
        if k % 64 == 0 {
            progress(k as u64, total);
        }
    }
    progress(total, total);
    let tl = archive.timeline()?;
    s.iterations = tl.first().zip(tl.last()).map(|(a, b)| (a.iteration, b.iteration));
    s.dedup_hits = s.page_refs.saturating_sub(s.objects);
    let stored = s.raw_bytes + s.lz4_bytes + s.delta_bytes;
    s.compression_ratio = if stored > 0 {
        (s.objects * ps) as f64 / stored as f64
    } else {
        0.0
    };
    if s.records > 0 {
        s.bytes_per_iteration = file_bytes as f64 / s.records as f64;
        s.object_bytes_per_iteration = stored as f64 / s.records as f64;
        s.pages_changed_per_iteration = (s.page_refs + s.zero_pages) as f64 / s.records as f64;
    }
    s.history_ratio = if file_bytes > 0 {
        logical as f64 / file_bytes as f64
    } else {
        0.0
    };
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_accept_hex_and_suffixes() {
        assert_eq!(parse_u64("0x10"), Ok(16));
        assert_eq!(parse_u64("1_000"), Ok(1000));
        assert_eq!(parse_u64("4k"), Ok(4096));
        assert_eq!(parse_u64("2MiB"), Ok(2 << 20));
        assert_eq!(parse_u64("0xff"), Ok(255));
        assert!(parse_u64("zz").is_err());
        assert!(parse_u64("99999999999G").is_err());
    }

    #[test]
    fn targets_parse() {
        assert_eq!("12".parse::<Target>(), Ok(Target::Iteration(12)));
        assert_eq!("r7".parse::<Target>(), Ok(Target::Record(7)));
        assert!("x".parse::<Target>().is_err());
    }
}
