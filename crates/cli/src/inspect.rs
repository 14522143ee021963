//! Queries over an archive read in place: the timeline, one record, diffs, reads,
//! blame, export and statistics. Every function returns plain data, built from the
//! [`crate::schema`] types that `--json` prints; printing is the commands' job.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{bail, Context, Result};
use rewind_archive::{Archive, ArchiveError, ObjectKind, RecordInfo};
use rewind_history::RecordId;
use rewind_snapshot::{GlobalValue, PageVec, Snapshot};
use rewind_store::{Hasher, PageHash};
use serde::Serialize;

use crate::render::hex;
use crate::schema::{ByteRange, Bytes, Change, DiffEntry, Global, GlobalChange, Page, Record};

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

/// A range of iterations, as `rewind log` takes it: `A..B` (B excluded), `A..=B`, `A..`,
/// `..B`, `..=B`, or one iteration `N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IterRange {
    /// First iteration in the range.
    pub first: u64,
    /// Last iteration in the range (inclusive).
    pub last: u64,
}

impl IterRange {
    /// Every iteration.
    pub const ALL: IterRange = IterRange {
        first: 0,
        last: u64::MAX,
    };

    /// True when `iteration` is in the range.
    pub fn contains(&self, iteration: u64) -> bool {
        (self.first..=self.last).contains(&iteration)
    }
}

impl std::str::FromStr for IterRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bound = |t: &str, what: &str| -> Result<u64, String> {
            parse_u64(t).map_err(|e| format!("bad {what} iteration {t:?} in {s:?}: {e}"))
        };
        let Some((a, b)) = s.trim().split_once("..") else {
            let n = bound(s, "the")?;
            return Ok(IterRange { first: n, last: n });
        };
        let first = if a.is_empty() { 0 } else { bound(a, "first")? };
        let last = match b.strip_prefix('=') {
            Some(b) => bound(b, "last")?,
            None if b.is_empty() => u64::MAX,
            None => bound(b, "end")?
                .checked_sub(1)
                .ok_or_else(|| format!("the range {s:?} is empty (A..B leaves B out; A..=B keeps it)"))?,
        };
        if last < first {
            return Err(format!("the range {s:?} is empty"));
        }
        Ok(IterRange { first, last })
    }
}

/// The record a target names, with a message that says why when it is not there: never
/// recorded (beyond the last record, or in no record the archive ever held), collected
/// (a `gc` removed it), or only on an abandoned branch.
pub fn resolve(archive: &Archive, target: Target) -> Result<RecordInfo> {
    let found = match target {
        Target::Record(r) => archive.record(RecordId(r)),
        Target::Iteration(i) => archive.at(i),
    };
    match found {
        Ok(r) => Ok(r),
        Err(ArchiveError::NoSuchRecord(_) | ArchiveError::NotOnTimeline { .. }) => {
            Err(anyhow::anyhow!(missing(archive, target)?))
        }
        Err(e) => Err(e).with_context(|| format!("cannot look up {target}")),
    }
}

/// Why `target` is not in the archive.
fn missing(archive: &Archive, target: Target) -> Result<String> {
    let records = archive.records().context("cannot read the record index")?;
    let next = archive.next_record_id()?;
    // Record numbers are never reused: those below `next` not in the file were removed.
    let collected = next.saturating_sub(records.len() as u64);
    let tl: Vec<&RecordInfo> = records.iter().filter(|r| r.on_timeline).collect();
    let holds = match (tl.first(), tl.last()) {
        (Some(a), Some(b)) => format!(
            "the timeline holds iterations {}..={} in {} records",
            a.iteration,
            b.iteration,
            tl.len()
        ),
        _ => "the archive holds no records".to_string(),
    };
    let gone = match collected {
        0 => "none was collected".to_string(),
        1 => "1 record was collected".to_string(),
        n => format!("{n} records were collected"),
    };
    Ok(match target {
        Target::Record(r) if r >= next => match next.checked_sub(1) {
            Some(last) => format!("record {r} was never recorded: the last record is r{last}"),
            None => format!("record {r} was never recorded: the archive holds no records"),
        },
        Target::Record(r) => format!("record {r} is not retained: a collection removed it ({holds}; {gone})"),
        Target::Iteration(i) => {
            let branches: Vec<String> = records
                .iter()
                .filter(|r| r.iteration == i && !r.on_timeline)
                .map(|r| format!("r{}", r.id.0))
                .collect();
            // The timeline records either side of `i`: when record numbers between them
            // are missing from the file, a collection removed the records there.
            let below = tl.iter().rev().find(|r| r.iteration < i).map(|r| r.id.0);
            let above = tl.iter().find(|r| r.iteration > i).map(|r| r.id.0);
            let removed_between = |lo: Option<u64>, hi: u64| {
                let from = lo.map_or(0, |l| l + 1);
                let present = records.iter().filter(|r| (from..hi).contains(&r.id.0)).count() as u64;
                hi.saturating_sub(from) > present
            };
            if !branches.is_empty() {
                format!(
                    "iteration {i} is not on the timeline, only on an abandoned branch: {} (name a record as rN)",
                    branches.join(", ")
                )
            } else if let Some(hi) = above.filter(|&hi| removed_between(below, hi)) {
                format!(
                    "iteration {i} is not retained: a collection removed the records before r{hi} ({holds}; {gone})"
                )
            } else if above.is_none() {
                format!("iteration {i} was never recorded: it is past the last iteration ({holds})")
            } else {
                format!("iteration {i} was never recorded ({holds})")
            }
        }
    })
}

/// Lower-case hex of a hash, most significant byte first: all 32 digits.
pub fn hex_hash(h: PageHash) -> String {
    h.to_hex()
}

/// How many records branch from each record, found without a scan of the whole index
/// when the file holds no abandoned record (then every timeline record but the head
/// has exactly one child).
pub struct Children {
    /// Children per record, when the file holds abandoned records.
    counts: Option<HashMap<u64, u32>>,
    /// The timeline's head: the one timeline record without a child.
    head: Option<RecordId>,
}

impl Children {
    /// The branching of `archive`, whose timeline holds `timeline` records.
    pub fn new(archive: &Archive, timeline: usize) -> Result<Children> {
        let head = archive.head();
        if archive.info()?.records == timeline as u64 {
            return Ok(Children { counts: None, head });
        }
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for r in archive.records().context("cannot read the record index")? {
            if let Some(p) = r.parent {
                *counts.entry(p.0).or_default() += 1;
            }
        }
        Ok(Children {
            counts: Some(counts),
            head,
        })
    }

    /// Records whose parent is `r`.
    pub fn of(&self, r: &RecordInfo) -> u32 {
        match &self.counts {
            Some(c) => c.get(&r.id.0).copied().unwrap_or(0),
            None => u32::from(r.on_timeline && Some(r.id) != self.head),
        }
    }
}

/// The record `r` as a [`Record`], its children counted in one pass of the index.
pub fn record(archive: &Archive, r: &RecordInfo) -> Result<Record> {
    let tl = archive.timeline().context("cannot read the timeline")?;
    Record::of(archive, r, Children::new(archive, tl.len())?.of(r))
}

// ---- log ---------------------------------------------------------------------------

/// Which records `rewind log` lists, and in which order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSelection {
    /// Every record by number, abandoned branches included (else the timeline).
    pub all: bool,
    /// Only records of these iterations.
    pub range: IterRange,
    /// Newest first.
    pub reverse: bool,
    /// At most this many records.
    pub limit: Option<u64>,
}

impl Default for LogSelection {
    fn default() -> Self {
        LogSelection {
            all: false,
            range: IterRange::ALL,
            reverse: false,
            limit: None,
        }
    }
}

/// The records `sel` names, oldest first (or newest first with `reverse`), handed to
/// `each` one at a time as they are read: nothing is collected, so a consumer that
/// stops early (an error from `each`, such as a closed pipe) stops the walk.
pub fn log(archive: &Archive, sel: &LogSelection, each: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
    let tl = archive.timeline().context("cannot read the timeline")?;
    let children = Children::new(archive, tl.len())?;
    let list = if sel.all {
        archive.records().context("cannot read the record index")?
    } else {
        tl
    };
    // The timeline is sorted by iteration: the range is a slice of it.
    let slice = if sel.all {
        &list[..]
    } else {
        let from = list.partition_point(|r| r.iteration < sel.range.first);
        let to = list.partition_point(|r| r.iteration <= sel.range.last);
        list.get(from..to).unwrap_or(&[])
    };
    let picked = slice.iter().filter(|r| sel.range.contains(r.iteration));
    let limit = sel
        .limit
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let ordered: Box<dyn Iterator<Item = &RecordInfo>> = if sel.reverse {
        Box::new(picked.rev().take(limit))
    } else {
        Box::new(picked.take(limit))
    };
    for r in ordered {
        each(Record::of(archive, r, children.of(r))?)?;
    }
    Ok(())
}

// ---- show --------------------------------------------------------------------------

/// What `rewind show` prints: the record, its globals and the pages it changed.
#[derive(Clone, Debug)]
pub struct ShowReport {
    /// The record.
    pub record: Record,
    /// Page size of the archive.
    pub page_size: u32,
    /// Its globals.
    pub globals: Vec<Global>,
    /// The pages it changed against its parent, with their new hashes.
    pub changed: Vec<Page>,
}

/// One record in detail.
pub fn show(archive: &Archive, target: Target) -> Result<ShowReport> {
    let r = resolve(archive, target)?;
    let ps = archive.page_size().bytes();
    let changed = archive
        .changes(r.id)?
        .into_iter()
        .map(|(i, h)| Page::of(r.id, i, h, ps))
        .collect();
    Ok(ShowReport {
        record: record(archive, &r)?,
        page_size: ps as u32,
        globals: Global::all(r.id, &archive.globals(r.id)?, &archive.global_names()?),
        changed,
    })
}

// ---- diff --------------------------------------------------------------------------

/// The summary line of `rewind diff` (`kind: "diff"`): the two records and what differs.
#[derive(Clone, Debug, Serialize)]
pub struct DiffSummary {
    /// Always `"diff"`.
    pub kind: &'static str,
    /// The first record.
    pub a: Record,
    /// The second record.
    pub b: Record,
    /// Pages that differ.
    pub pages_differing: usize,
    /// Ranges of differing bytes.
    pub ranges: usize,
    /// Bytes that differ.
    pub bytes_differing: u64,
    /// Globals that differ.
    pub globals_differing: usize,
}

/// What `rewind diff` finds.
#[derive(Clone, Debug)]
pub struct DiffReport {
    /// The records and the counts.
    pub summary: DiffSummary,
    /// The globals that differ.
    pub globals: Vec<GlobalChange>,
    /// The pages that differ, with their byte ranges (empty with `stat`).
    pub pages: Vec<DiffEntry>,
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
        archive.read_record(id, addr, o)?;
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
        return Ok(xa.diff_records(ra.id, rb.id)?);
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

/// The globals that differ between two records.
fn global_changes(
    (a, ga, na): (&RecordInfo, &[GlobalValue], &[Option<String>]),
    (b, gb, nb): (&RecordInfo, &[GlobalValue], &[Option<String>]),
) -> Vec<GlobalChange> {
    (0..ga.len().max(gb.len()))
        .filter(|&i| ga.get(i) != gb.get(i))
        .map(|i| {
            let a = ga.get(i).map(|g| Global::of(a.id, i, *g).named(na));
            let b = gb.get(i).map(|g| Global::of(b.id, i, *g).named(nb));
            GlobalChange {
                kind: "global_change",
                index: i,
                name: a.as_ref().or(b.as_ref()).and_then(|g| g.name.clone()),
                a,
                b,
            }
        })
        .collect()
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
        let addr = u64::from(p) * ps as u64;
        read_padded(xa, ra.id, ra.memory_len, addr, &mut pa)?;
        read_padded(xb, rb.id, rb.memory_len, addr, &mut pb)?;
        let ranges: Vec<ByteRange> = rewind_store::codec::ChangedRuns::new(&pa, &pb)
            .map(|(s, e)| ByteRange {
                addr: addr + s as u64,
                len: (e - s) as u64,
            })
            .collect();
        let bytes = ranges.iter().map(|r| r.len).sum::<u64>();
        nranges += ranges.len();
        nbytes += bytes;
        if !stat {
            out.push(DiffEntry {
                kind: "diff_entry",
                page: p,
                addr,
                bytes,
                ranges,
            });
        }
    }
    let (na, nb) = (xa.global_names()?, xb.global_names()?);
    let globals = global_changes((&ra, &xa.globals(ra.id)?, &na), (&rb, &xb.globals(rb.id)?, &nb));
    Ok(DiffReport {
        summary: DiffSummary {
            kind: "diff",
            a: record(xa, &ra)?,
            b: record(xb, &rb)?,
            pages_differing: pages.len(),
            ranges: nranges,
            bytes_differing: nbytes,
            globals_differing: globals.len(),
        },
        globals,
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
    archive.read_record(r.id, addr, &mut out)?;
    Ok((r, out))
}

/// What `rewind blame` finds.
#[derive(Clone, Debug)]
pub struct BlameReport {
    /// The bytes at the asked iteration.
    pub value: Bytes,
    /// Latest change first. Empty when the bytes were zero and never changed.
    pub changes: Vec<Change>,
}

/// The latest `limit` changes of `[addr, addr + len)` at or before a record.
pub fn blame(archive: &Archive, target: Target, addr: u64, len: u64, limit: usize) -> Result<BlameReport> {
    let (r, value) = cat(archive, target, addr, len)?;
    let chain = archive.blame_chain(r.id, addr, len, limit)?;
    let mut buf = vec![0u8; value.len()];
    let mut changes = Vec::with_capacity(chain.len());
    for b in chain {
        archive.read_record(b.record, addr, &mut buf)?;
        let after = hex(&buf);
        let before = match archive.record(b.record)?.parent {
            Some(p) if !b.at_oldest => {
                let pm = archive.memory_len(p)?;
                read_padded(archive, p, pm, addr, &mut buf)?;
                Some(hex(&buf))
            }
            _ => None,
        };
        changes.push(Change {
            kind: "change",
            record: b.record.0,
            iteration: b.iteration,
            at_oldest: b.at_oldest,
            addr,
            len,
            before,
            after,
        });
    }
    Ok(BlameReport {
        value: bytes(&r, addr, &value),
        changes,
    })
}

/// Bytes of record `r` at `addr` as a [`Bytes`].
pub fn bytes(r: &RecordInfo, addr: u64, b: &[u8]) -> Bytes {
    Bytes {
        kind: "bytes",
        record: r.id.0,
        iteration: r.iteration,
        addr,
        len: b.len() as u64,
        hex: hex(b),
    }
}

// ---- export ------------------------------------------------------------------------

/// What `rewind export` wrote.
#[derive(Clone, Debug)]
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
    pub globals: Vec<Global>,
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
        globals: Global::all(r.id, &globals, &archive.global_names()?),
    })
}

// ---- stats -------------------------------------------------------------------------

/// What `rewind stats` prints.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Always `"stats"`.
    pub kind: &'static str,
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
        kind: "stats",
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
    fn iteration_ranges_parse_like_rust_ranges() {
        let r = |s: &str| s.parse::<IterRange>().map(|r| (r.first, r.last));
        assert_eq!(r("10..13"), Ok((10, 12)));
        assert_eq!(r("10..=13"), Ok((10, 13)));
        assert_eq!(r("0x10.."), Ok((16, u64::MAX)));
        assert_eq!(r("..3"), Ok((0, 2)));
        assert_eq!(r("..=3"), Ok((0, 3)));
        assert_eq!(r(".."), Ok((0, u64::MAX)));
        assert_eq!(r("7"), Ok((7, 7)));
        for bad in ["3..3", "..0", "9..=3", "a..4", "4..b", "1...3"] {
            assert!(r(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn targets_parse() {
        assert_eq!("12".parse::<Target>(), Ok(Target::Iteration(12)));
        assert_eq!("r7".parse::<Target>(), Ok(Target::Record(7)));
        assert!("x".parse::<Target>().is_err());
    }
}
