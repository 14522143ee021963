//! Garbage collection of an archive file: load it, collect under a retention policy,
//! write the result as a new archive, and report what changed, measured on the two
//! files.
//!
//! A dry run does all of it, writing the new archive to a temporary file that is then
//! deleted, so it reports exactly what the real run would: the same records, objects,
//! checkpoints and file sizes, counted the same way.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_gc::{Collector, Policy};
use serde::Serialize;

use crate::output::Output;

/// Where the collected archive goes.
#[derive(Clone, Debug)]
pub enum Destination {
    /// Nowhere: written to a temporary file, measured and deleted.
    DryRun,
    /// Over the input (its mode, owner and symbolic links kept).
    InPlace,
    /// Another file.
    To(PathBuf),
}

/// What one archive file holds, counted from the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FileCounts {
    /// Bytes of the file.
    pub bytes: u64,
    /// Commits.
    pub commits: u64,
    /// Records (timeline and abandoned).
    pub records: u64,
    /// Records off the timeline.
    pub abandoned: u64,
    /// Page objects.
    pub objects: u64,
    /// Bytes the page objects take in the file.
    pub object_bytes: u64,
    /// Records stored with their full page vector.
    pub checkpoints: u64,
    /// Bytes of those page vectors (16 bytes a page).
    pub checkpoint_bytes: u64,
}

impl FileCounts {
    /// Count what `archive` (a file of `bytes` bytes) holds.
    pub fn of(archive: &Archive, bytes: u64) -> Result<FileCounts> {
        let info = archive.info()?;
        let ps = u64::from(info.page_size.max(1));
        let mut c = FileCounts {
            bytes,
            commits: info.commits,
            ..FileCounts::default()
        };
        for o in archive.objects()? {
            c.objects += 1;
            c.object_bytes += u64::from(o.stored_len);
        }
        for r in archive.records()? {
            c.records += 1;
            if !r.on_timeline {
                c.abandoned += 1;
            }
            if archive.record_detail(r.id)?.checkpoint {
                c.checkpoints += 1;
                c.checkpoint_bytes += archive.memory_len(r.id)? / ps * 16;
            }
        }
        Ok(c)
    }
}

/// What a collection did (or, for a dry run, would do).
#[derive(Clone, Debug, Serialize)]
pub struct GcReport {
    /// True for a dry run: nothing was written.
    pub dry_run: bool,
    /// The file written (`None` for a dry run).
    pub output: Option<PathBuf>,
    /// The input file.
    pub before: FileCounts,
    /// The collected file.
    pub after: FileCounts,
    /// Records the collection removed from the loaded history.
    pub records_removed: u64,
    /// Page objects in the input file that the output does not hold.
    pub objects_freed: u64,
    /// Input blobs the collection freed.
    pub inputs_freed: u64,
    /// Why the output is larger than the input, when it is.
    pub grew: Option<String>,
}

impl GcReport {
    /// Bytes of file freed (negative when the file grew).
    pub fn bytes_freed(&self) -> i128 {
        i128::from(self.before.bytes) - i128::from(self.after.bytes)
    }
}

/// Collect the archive at `file` under `policy` and write the result to `dest`.
///
/// The new file replaces the old one (or `-o`'s file) by rename once complete. The
/// writer lock of the replaced file ([`rewind_archive::ArchiveLock`]) is held from the
/// load to the rename, so a collection refuses to run while a writer appends.
pub fn collect(file: &Path, policy: &Policy, dest: &Destination) -> Result<GcReport> {
    // The writer lock of each file this replaces, held from the load to the rename: a
    // writer appending meanwhile would lose what it appends to the replaced file.
    let _in_lock = match dest {
        Destination::InPlace => Some(lock(file)?),
        _ => None,
    };
    let out = match dest {
        Destination::DryRun => None,
        Destination::InPlace => Some(Output::new(file)?),
        Destination::To(o) => Some(Output::new(o)?),
    };
    let _out_lock = match (dest, &out) {
        (Destination::To(_), Some(o)) if !o.is_special() => Some(lock(o.target())?),
        _ => None,
    };
    let archive = Archive::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let len = std::fs::metadata(file)
        .with_context(|| format!("cannot stat {}", file.display()))?
        .len();
    let before = FileCounts::of(&archive, len)?;
    let mut history = archive.to_history().context("cannot load the archive")?;
    drop(archive);
    let removed = Collector::new(policy.clone())
        .collect(&mut history)
        .context("cannot collect")?
        .removed;
    let write = |path: &Path| -> Result<FileCounts> {
        let mut w = ArchiveWriter::create(path, &history, Durability::Manual)
            .context("cannot create the collected archive")?;
        w.append(&history).context("cannot write the collected archive")?;
        w.sync().context("cannot sync the collected archive")?;
        let bytes = w.len();
        drop(w);
        let written = Archive::open(path).context("cannot reopen the collected archive")?;
        FileCounts::of(&written, bytes)
    };
    let (after, output) = match (dest, out) {
        (Destination::DryRun, _) | (_, None) => {
            let tmp = tempfile::Builder::new()
                .prefix(".rewind-gc-dry-run.")
                .tempdir()
                .context("cannot create a temporary directory for the dry run")?;
            (write(&tmp.path().join("collected.rwd"))?, None)
        }
        (Destination::InPlace, Some(o)) => (o.write_file(write)?, Some(file.to_path_buf())),
        (Destination::To(p), Some(o)) => (o.write_file(write)?, Some(p.clone())),
    };
    let grew = (after.bytes > before.bytes).then(|| growth_reason(&before, &after));
    Ok(GcReport {
        dry_run: matches!(dest, Destination::DryRun),
        output,
        before,
        after,
        records_removed: removed.records,
        objects_freed: before.objects.saturating_sub(after.objects),
        inputs_freed: removed.inputs,
        grew,
    })
}

/// The writer lock of the archive at `path`.
fn lock(path: &Path) -> Result<rewind_archive::ArchiveLock> {
    rewind_archive::ArchiveLock::acquire(path).with_context(|| format!("cannot lock {}", path.display()))
}

/// Why a rewritten archive is larger than the file it replaces.
///
/// A rewrite stores each kept record as a change list against its kept parent and
/// writes a full page vector (a checkpoint) whenever the change lists since the last
/// one add up to more than the memory's pages (or 256 of them follow each other). Where
/// records between two kept ones were removed, the kept record's change list covers
/// every page changed in between, so the sums reach that bound sooner and more
/// checkpoints are written; the page objects of the removed records may be few.
pub fn growth_reason(before: &FileCounts, after: &FileCounts) -> String {
    let mut parts = Vec::new();
    if after.checkpoints > before.checkpoints {
        parts.push(format!(
            "{} checkpoints (full page vectors, {} bytes) instead of {} ({} bytes): the change lists of kept records against their kept parents are longer, so the rewrite stores full page vectors more often",
            after.checkpoints, after.checkpoint_bytes, before.checkpoints, before.checkpoint_bytes
        ));
    }
    if after.object_bytes > before.object_bytes {
        parts.push(format!(
            "page objects take {} bytes instead of {} (pages whose delta base was removed are stored in full)",
            after.object_bytes, before.object_bytes
        ));
    }
    if parts.is_empty() {
        parts.push(format!(
            "the index of {} records in one commit takes more room than the {} commits it replaces",
            after.records, before.commits
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_names_the_checkpoints_and_objects_that_grew() {
        let before = FileCounts {
            bytes: 4_700_000,
            commits: 1050,
            records: 1050,
            objects: 900,
            object_bytes: 10_000,
            checkpoints: 4,
            checkpoint_bytes: 4 * 4096 * 16,
            ..FileCounts::default()
        };
        let after = FileCounts {
            bytes: 4_800_000,
            commits: 1,
            records: 1000,
            objects: 600,
            object_bytes: 12_000,
            checkpoints: 61,
            checkpoint_bytes: 61 * 4096 * 16,
            ..FileCounts::default()
        };
        let why = growth_reason(&before, &after);
        assert!(
            why.contains("61 checkpoints") && why.contains("instead of 4"),
            "{why}"
        );
        assert!(why.contains("12000 bytes instead of 10000"), "{why}");
        // Nothing of those grew: the reason still says something.
        let same = FileCounts {
            bytes: 4_800_000,
            ..before
        };
        assert!(!growth_reason(&before, &same).is_empty());
    }
}
