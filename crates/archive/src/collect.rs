//! Garbage collection of an archive file into a new file: load it, collect under a
//! retention policy, write the result as a new archive, and count what both files hold.
//!
//! [`collect_file`] writes the collected archive to a path that must not exist yet
//! (a temporary name the caller then renames into place, or a scratch file for a dry
//! run), so the caller decides where the result goes and how it replaces the input;
//! [`crate::compact`] is the one-call form that replaces the input in place. Counts are
//! taken from the two files, so a report says what is on disk, not what was in memory.
//!
//! ```
//! use rewind_archive::{collect_file, Archive, ArchiveWriter, Durability};
//! use rewind_gc::Policy;
//! use rewind_history::{History, HistoryConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("rewind-collect-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let (input, output) = (dir.join("in.rwd"), dir.join("out.rwd"));
//! let mut history = History::new(HistoryConfig::new(1024)?.seed(1))?;
//! let mut writer = ArchiveWriter::create(&input, &history, Durability::Manual)?;
//! let mut memory = vec![0u8; 4096];
//! for frame in 0..10u64 {
//!     memory[frame as usize * 100] = 1 + frame as u8;
//!     history.capture(frame, &memory, &[], None, None)?;
//!     writer.append(&history)?;
//! }
//! drop(writer);
//! let report = collect_file(&input, &Policy::default().keep_last(3), &output)?;
//! assert_eq!((report.before.records, report.after.records), (10, 3));
//! assert_eq!(Archive::open(&output)?.timeline()?.len(), 3);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::path::Path;

use rewind_gc::{Collector, Policy};
use rewind_history::{History, RemoveReport};

use crate::{Archive, ArchiveError, ArchiveWriter, Durability};

/// What one archive file holds, counted from the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    pub fn of(archive: &Archive, bytes: u64) -> Result<FileCounts, ArchiveError> {
        let info = archive.info()?;
        let page_size = u64::from(info.page_size.max(1));
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
                c.checkpoint_bytes += archive.memory_len(r.id)? / page_size * 16;
            }
        }
        Ok(c)
    }
}

/// What [`collect_file`] did, counted on the input file and on the file written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectReport {
    /// The input file.
    pub before: FileCounts,
    /// The collected file.
    pub after: FileCounts,
    /// What the collection removed from the loaded history.
    pub removed: RemoveReport,
}

impl CollectReport {
    /// Bytes of file freed (negative when the file grew).
    pub fn bytes_freed(&self) -> i128 {
        i128::from(self.before.bytes) - i128::from(self.after.bytes)
    }

    /// Page objects of the input file that the output does not hold.
    pub fn objects_freed(&self) -> u64 {
        self.before.objects.saturating_sub(self.after.objects)
    }

    /// Why the output is larger than the input, when it is ([`growth_reason`]).
    pub fn grew(&self) -> Option<String> {
        (self.after.bytes > self.before.bytes).then(|| growth_reason(&self.before, &self.after))
    }
}

/// Load the archive at `input`, collect it under `policy` and write the result as a new
/// archive at `output`, which must not exist ([`ArchiveError::Exists`] otherwise).
///
/// The output is synced before this returns. Nothing here takes the input's writer lock
/// or replaces it: a caller that renames the output over the input holds
/// [`crate::ArchiveLock`] of the input from before this call until the rename, so no
/// writer appends to a file about to be replaced.
pub fn collect_file(input: &Path, policy: &Policy, output: &Path) -> Result<CollectReport, ArchiveError> {
    let archive = Archive::open(input)?;
    let len = std::fs::metadata(input)
        .map_err(ArchiveError::io("stat", input))?
        .len();
    let before = FileCounts::of(&archive, len)?;
    let collected = Collected::load(archive, policy)?;
    let bytes = collected.write(ArchiveWriter::create(
        output,
        &collected.history,
        Durability::Manual,
    )?)?;
    let after = FileCounts::of(&Archive::open(output)?, bytes)?;
    Ok(CollectReport {
        before,
        after,
        removed: collected.removed,
    })
}

/// An archive loaded into a [`History`] and collected: the work [`collect_file`] and
/// [`crate::compact`] share, before each writes the result where it belongs.
pub(crate) struct Collected {
    /// The collected history.
    pub(crate) history: History,
    /// The input's global names, carried to the output.
    names: Vec<Option<String>>,
    /// What the collection removed.
    pub(crate) removed: RemoveReport,
}

impl Collected {
    /// Load `archive` (its last complete commit) and collect it under `policy`. The
    /// archive is dropped before the collection, so its mapping is gone before any
    /// output replaces its file.
    pub(crate) fn load(archive: Archive, policy: &Policy) -> Result<Collected, ArchiveError> {
        let mut history = archive.to_history()?;
        let names = archive.global_names()?;
        drop(archive);
        let removed = Collector::new(policy.clone()).collect(&mut history)?.removed;
        Ok(Collected {
            history,
            names,
            removed,
        })
    }

    /// Write the collected history through a writer just created for the output, sync
    /// it, and return the output's length in bytes.
    pub(crate) fn write(&self, mut writer: ArchiveWriter) -> Result<u64, ArchiveError> {
        writer.set_global_names(self.names.clone());
        writer.append(&self.history)?;
        writer.sync()?;
        Ok(writer.len())
    }
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
    use rewind_history::{History, HistoryConfig};

    /// An archive of `frames` frames, one commit each, with a byte changing per frame.
    fn archive(path: &Path, frames: u64) -> History {
        let mut history =
            History::new(HistoryConfig::new(1024).expect("page size").seed(9)).expect("history");
        let mut writer = ArchiveWriter::create(path, &history, Durability::Manual).expect("create");
        let mut memory = vec![0u8; 8 * 1024];
        for f in 0..frames {
            let at = (f as usize * 577) % memory.len();
            memory[at] = memory[at].wrapping_add(1 + f as u8);
            history.capture(f, &memory, &[], None, None).expect("capture");
            writer.append(&history).expect("append");
        }
        history
    }

    #[test]
    fn collect_file_keeps_the_window_and_counts_both_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (input, output) = (dir.path().join("in.rwd"), dir.path().join("out.rwd"));
        let history = archive(&input, 30);
        let before_bytes = std::fs::metadata(&input).expect("stat").len();
        let r = collect_file(&input, &Policy::default().keep_last(5), &output).expect("collect");
        assert_eq!(r.before.records, 30);
        assert_eq!(
            r.before.commits, 31,
            "one empty commit from create, one per frame"
        );
        assert_eq!(r.before.bytes, before_bytes);
        assert_eq!(r.after.records, 5);
        assert_eq!(r.removed.records, 25);
        assert_eq!(r.after.bytes, std::fs::metadata(&output).expect("stat").len());
        assert!(r.bytes_freed() > 0 && r.grew().is_none(), "{r:?}");
        // The kept iterations read back with the state hashes they were recorded with.
        let written = Archive::open(&output).expect("open");
        let tl: Vec<u64> = written
            .timeline()
            .expect("timeline")
            .iter()
            .map(|r| r.iteration)
            .collect();
        assert_eq!(tl, vec![25, 26, 27, 28, 29]);
        for i in 25..30 {
            assert_eq!(
                written.state_hash(i).expect("state hash"),
                history.at(i).expect("record").state_hash()
            );
        }
        // The input is untouched.
        assert_eq!(std::fs::metadata(&input).expect("stat").len(), before_bytes);
    }

    #[test]
    fn collect_file_refuses_an_existing_output() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (input, output) = (dir.path().join("in.rwd"), dir.path().join("out.rwd"));
        archive(&input, 3);
        std::fs::write(&output, b"keep me").expect("write");
        let e = collect_file(&input, &Policy::default().keep_last(1), &output).expect_err("refused");
        assert!(matches!(e, ArchiveError::Exists { .. }), "{e}");
        assert_eq!(std::fs::read(&output).expect("read"), b"keep me");
    }

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
        let same = FileCounts {
            bytes: 4_800_000,
            ..before
        };
        assert!(!growth_reason(&before, &same).is_empty());
    }
}
