//! The on-disk archive of a rewind history: an append-only file of checksummed,
//! rkyv-archived segments, opened with memmap2 and read in place.
//!
//! An [`ArchiveWriter`] appends a [`History`](rewind_history::History) commit by commit, writing only what the file
//! does not hold yet (new records as change lists against their parent, new page objects
//! as forward deltas against the page they replace or as whole pages, new input blobs),
//! so an append costs O(changed pages). An [`Archive`] maps the file, finds the last complete commit from the end of
//! the file and answers queries from a small index without deserializing anything: the
//! state hash of an iteration, its globals, any page or byte range, the timeline and the
//! abandoned branches. A crash that tears the tail loses only the commit in progress;
//! [`repair`] truncates it, while a damaged last commit is an error
//! ([`ArchiveError::DamagedTail`]), never silently dropped. [`compact`] rewrites the
//! file under a retention policy.
//!
//! Concurrency: one writer, any number of readers. [`ArchiveWriter`], [`repair`] and
//! [`compact`] hold the archive's [`ArchiveLock`] (a second one gets
//! [`ArchiveError::Locked`] naming the holder's pid); readers take no lock, and no file
//! is ever truncated or rewritten in place under them: new archives
//! ([`ArchiveWriter::create`], [`ArchiveWriter::replace`], [`compact`]) arrive by
//! rename. [`Archive::verify`] checks every field that can be derived from the rest.
//! The byte layout, and what is guaranteed, are in `docs/format.md`.
//!
//! ```
//! use rewind_archive::{Archive, ArchiveWriter, Durability};
//! use rewind_history::{History, HistoryConfig};
//! use rewind_snapshot::GlobalValue;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("rewind-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("guest.rwd");
//! let mut history = History::new(HistoryConfig::new(1024)?.seed(3))?;
//! let mut writer = ArchiveWriter::create(&path, &history, Durability::EveryAppend)?;
//! let mut memory = vec![0u8; 8 * 1024];
//! for frame in 0..20u64 {
//!     memory[(frame as usize * 331) % 8192] = frame as u8;
//!     history.capture(frame, &memory, &[GlobalValue::I64(frame as i64)], None, None)?;
//!     writer.append(&history)?;
//! }
//! let archive = Archive::open(&path)?;
//! assert_eq!(archive.state_hash(7)?, history.at(7)?.state_hash());
//! let mut byte = [0u8; 1];
//! archive.read(19, (19 * 331) % 8192, &mut byte)?;
//! assert_eq!(byte, [19]);
//! assert_eq!(archive.globals(archive.at(5)?.id)?, vec![GlobalValue::I64(5)]);
//! let loaded = archive.to_history()?;
//! assert_eq!(loaded.len(), 20);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod bundle;
mod collect;
mod error;
pub mod format;
mod index;
mod lock;
mod reader;
mod writer;

use std::path::Path;

pub use bundle::{Bundle, BundleError, BundleState, Manifest};
pub use collect::{collect_file, growth_reason, CollectReport, FileCounts};
pub use error::ArchiveError;
pub use format::ObjectKind;
pub use lock::{lock_path, ArchiveLock};
pub use reader::{
    sidecar_path, Archive, ArchiveInfo, LazyOptions, LazyStats, ObjectInfo, RangeSource, RecordDetail,
    RecordInfo, SourceError, TornTail, VerifyReport, LAZY_BLOCK,
};
pub use rewind_history::Blame;
pub use writer::{AppendReport, ArchiveWriter, Durability, CHECKPOINT_HOPS, MERGE_FANOUT};

use rewind_gc::Policy;
use rewind_history::RemoveReport;

/// How [`repair_with`] treats bytes after the last complete commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairOptions {
    /// Also cut a damaged tail ([`ArchiveError::DamagedTail`]): bytes a torn write
    /// cannot explain, such as a complete commit whose trailer was damaged. Without it
    /// such a file is refused, so a repair never cuts durable-looking data unasked.
    pub force: bool,
}

/// Truncate a torn tail (bytes after the last complete commit) and sync the file.
/// Returns what was cut, or `None` when the file was clean. The same as
/// [`repair_with`] without `force`: a damaged tail is an error, never cut.
pub fn repair(path: impl AsRef<Path>) -> Result<Option<TornTail>, ArchiveError> {
    repair_with(path, RepairOptions::default())
}

/// Truncate the bytes after the last complete commit and sync the file.
///
/// Takes the archive's writer lock for its whole run, so it never cuts a commit a
/// writer is still appending ([`ArchiveError::Locked`] while one holds it). A tail a
/// torn write explains is cut; a damaged tail ([`ArchiveError::DamagedTail`]) only with
/// `options.force`, and then everything after the last complete commit found by a
/// bounded scan is cut.
pub fn repair_with(path: impl AsRef<Path>, options: RepairOptions) -> Result<Option<TornTail>, ArchiveError> {
    let path = path.as_ref();
    let _lock = ArchiveLock::acquire(path)?;
    let archive = if options.force {
        Archive::open_salvage(path)?
    } else {
        Archive::open(path)?
    };
    let Some(torn) = archive.torn_tail() else {
        return Ok(None);
    };
    drop(archive);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(ArchiveError::io("open", path))?;
    file.set_len(torn.offset)
        .map_err(ArchiveError::io("truncate", path))?;
    file.sync_all().map_err(ArchiveError::io("sync", path))?;
    Ok(Some(torn))
}

/// What [`compact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Records in the old file.
    pub records_before: u64,
    /// Records in the new file.
    pub records_after: u64,
    /// Page objects in the old file.
    pub objects_before: u64,
    /// Page objects in the new file.
    pub objects_after: u64,
    /// Bytes of the old file.
    pub bytes_before: u64,
    /// Bytes of the new file.
    pub bytes_after: u64,
    /// What the collection removed from the loaded history.
    pub removed: RemoveReport,
}

/// Rewrite an archive keeping only what `policy` retains.
///
/// Takes the archive's writer lock for its whole run ([`ArchiveError::Locked`] while a
/// writer holds it), so it never renames over a file a writer is still appending to.
/// A symbolic link at `path` is followed (its target is replaced) and the file's
/// permission bits are kept. Loads the file (its last complete commit; a torn tail is dropped) into a [`History`](rewind_history::History),
/// runs [`Collector::collect`](rewind_gc::Collector::collect), writes the result to a temporary file in the same
/// directory, syncs it, renames it over `path` and syncs the directory. A crash at any
/// point leaves either the old file or the new one at `path`, never a mix.
pub fn compact(path: impl AsRef<Path>, policy: &Policy) -> Result<CompactReport, ArchiveError> {
    let path = path.as_ref();
    let _lock = ArchiveLock::acquire(path)?;
    let target = lock::resolve(path);
    let archive = Archive::open(&target)?;
    let before = archive.info()?;
    let bytes_before = std::fs::metadata(&target)
        .map_err(ArchiveError::io("stat", &target))?
        .len();
    let collected = collect::Collected::load(archive, policy)?;
    let bytes_after = writer::replace_through_temp(&target, "compact", |file, tmp| {
        collected.write(ArchiveWriter::start(
            file,
            tmp,
            &collected.history,
            Durability::Manual,
        )?)
    })?;
    writer::sync_dir(&target)?;
    Ok(CompactReport {
        records_before: before.records,
        records_after: collected.history.len() as u64,
        objects_before: before.objects,
        objects_after: collected.history.store_stats().objects as u64,
        bytes_before,
        bytes_after,
        removed: collected.removed,
    })
}
