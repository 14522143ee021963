//! rewind keeps the history of a WebAssembly guest's state — linear memory pages, the
//! memory length and every global — one snapshot per iteration, the way git keeps the
//! history of a tree: content-addressed (xxh3-128), deduplicated, delta-compressed,
//! garbage-collected.
//!
//! [`Recorder`] is the API most users need: record every frame, roll back when a late
//! input arrives, compare state hashes with peers, read any retained iteration's bytes
//! without restoring it, and ask when bytes last changed. With
//! [`Options::archive`] it also persists every recorded iteration to a `.rwd` archive
//! (appended before each GC step, so the policy never drops a record the file has not
//! seen), and [`Recorder::open`] + [`Recorder::resume_at`] continue a stored history from
//! any retained iteration.
//!
//! ```
//! use rewind::{GlobalValue, LiveMemory, Policy, Recorder, Options};
//!
//! # fn main() -> Result<(), rewind::Error> {
//! let mut rec = Recorder::new(Options::new(4096)?.seed(7).policy(Policy::default().keep_last(600)))?;
//! let mut memory = vec![0u8; 64 * 1024];
//! for frame in 0..100u64 {
//!     memory[(frame * 8) as usize] = 1; // the guest runs one frame
//!     rec.record(frame, &memory, &[GlobalValue::I32(frame as i32)], None, None)?;
//! }
//! let hash_90 = rec.history().at(90)?.state_hash();
//! let back = rec.rollback(90, &mut memory, LiveMemory::AtHead)?;
//! assert_eq!(back.state_hash, hash_90);
//! assert_eq!(rec.blame(90, 90 * 8, 1)?.map(|b| b.iteration), Some(90));
//! assert_eq!(rec.blame(90, 10 * 8, 1)?.map(|b| b.iteration), Some(10));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub use rewind_archive::{AppendReport, Archive, ArchiveError, ArchiveWriter, Durability};
pub use rewind_gc::{Abandoned, Collector, GcError, GcReport, Policy};
pub use rewind_history::{
    Blame, CaptureReport, History, HistoryConfig, HistoryError, Inconsistency, LiveMemory, Record, RecordId,
    Removed, Rollback,
};
pub use rewind_snapshot::{ByteRange, GlobalType, GlobalValue, Restored, Snapshot, SnapshotError, StateHash};
pub use rewind_store::{
    Hasher, InputHash, PageHash, PageSize, ParseHashError, StoreConfig, StoreError, StoreStats,
};

/// Re-exports of the layers, for users who need more than the facade.
pub mod layers {
    pub use rewind_archive as archive;
    pub use rewind_gc as gc;
    pub use rewind_history as history;
    pub use rewind_snapshot as snapshot;
    pub use rewind_store as store;
}

/// Errors of the facade.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the history (capture, rollback, reads).
    #[error(transparent)]
    History(#[from] HistoryError),
    /// From garbage collection.
    #[error(transparent)]
    Gc(#[from] GcError),
    /// From the page store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From the archive (create, append, open, load).
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// Where and how a [`Recorder`] persists its history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// The archive's path.
    pub path: PathBuf,
    /// When appends reach the disk.
    pub durability: Durability,
    /// Replace an archive already at `path` (by rename: a reader of the old file keeps
    /// it intact). Without it an existing file is refused ([`ArchiveError::Exists`]).
    pub replace: bool,
}

/// How a [`Recorder`] is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// History configuration (page size, seed, delta chain bound).
    pub history: HistoryConfig,
    /// Retention policy applied after every recorded iteration.
    pub policy: Policy,
    /// Persist every recorded iteration to an archive.
    pub archive: Option<ArchiveOptions>,
}

impl Options {
    /// Options for a page size (a power of two from 1 KiB to 64 KiB); keeps everything.
    pub fn new(page_size: u64) -> Result<Self, Error> {
        Ok(Options {
            history: HistoryConfig::new(page_size)?,
            policy: Policy::default(),
            archive: None,
        })
    }
    /// Use this hash seed (peers that compare state hashes must share it).
    pub fn seed(mut self, seed: u64) -> Self {
        self.history = self.history.seed(seed);
        self
    }
    /// The retention policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }
    /// Bound delta chains.
    pub fn max_chain(mut self, depth: u8) -> Self {
        self.history = self.history.max_chain(depth);
        self
    }
    /// Persist to a new archive at `path`: every [`Recorder::record`] appends what is
    /// new before the GC step runs. [`Recorder::new`] refuses a path that exists
    /// ([`ArchiveError::Exists`]); see [`Options::replace_archive`].
    pub fn archive(mut self, path: impl Into<PathBuf>, durability: Durability) -> Self {
        self.archive = Some(ArchiveOptions {
            path: path.into(),
            durability,
            replace: false,
        });
        self
    }
    /// As [`Options::archive`], replacing an archive already at `path`.
    pub fn replace_archive(mut self, path: impl Into<PathBuf>, durability: Durability) -> Self {
        self.archive = Some(ArchiveOptions {
            path: path.into(),
            durability,
            replace: true,
        });
        self
    }
}

/// The whole state of one iteration, for a guest started fresh from it
/// ([`Recorder::resume_at`]).
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The iteration.
    pub iteration: u64,
    /// Its record.
    pub record: RecordId,
    /// Linear memory (its full length).
    pub memory: Vec<u8>,
    /// Every global, in the order they were recorded.
    pub globals: Vec<GlobalValue>,
    /// Its state hash.
    pub state_hash: StateHash,
}

/// A history with its garbage collector: the everyday API.
pub struct Recorder {
    history: History,
    gc: Collector,
    last_gc: GcReport,
    archive: Option<ArchiveWriter>,
}

impl Recorder {
    /// An empty recorder; with [`Options::archive`], a new archive too (refused if the
    /// path exists, unless [`Options::replace_archive`]).
    pub fn new(options: Options) -> Result<Self, Error> {
        let history = History::new(options.history)?;
        let archive = match &options.archive {
            None => None,
            Some(a) if a.replace => Some(ArchiveWriter::replace(&a.path, &history, a.durability)?),
            Some(a) => Some(ArchiveWriter::create(&a.path, &history, a.durability)?),
        };
        Ok(Recorder {
            history,
            gc: Collector::new(options.policy),
            last_gc: GcReport::default(),
            archive,
        })
    }

    /// Open the archive at `path` to continue it: its retained history (every record
    /// of its last complete commit) is loaded, `policy` is applied, and further records
    /// are appended to the same file. The head is the archive's; call
    /// [`Recorder::resume_at`] to continue from another iteration. Takes the archive's
    /// writer lock ([`ArchiveError::Locked`] while another writer holds it); a torn
    /// tail is refused ([`ArchiveError::TornTail`]: repair it first).
    ///
    /// ```
    /// use rewind::{Durability, GlobalValue, Options, Policy, Recorder};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("game.rwd");
    /// let mut memory = vec![0u8; 8 * 4096];
    /// {
    ///     let options = Options::new(4096)?.seed(9).archive(&path, Durability::EveryAppend);
    ///     let mut rec = Recorder::new(options)?;
    ///     for frame in 0..30u64 {
    ///         memory[(frame as usize * 1000) % (8 * 4096)] = frame as u8;
    ///         rec.record(frame, &memory, &[GlobalValue::I64(frame as i64)], None, None)?;
    ///     }
    /// } // the process could end here: every record is in the file
    /// let mut rec = Recorder::open(&path, Durability::EveryAppend, Policy::default().keep_last(600))?;
    /// let state = rec.resume_at(25)?; // a fresh guest starts from frame 25
    /// assert_eq!(state.globals, vec![GlobalValue::I64(25)]);
    /// let mut memory = state.memory;
    /// memory[0] = 0xff; // frame 26 goes differently this time
    /// rec.record(26, &memory, &[GlobalValue::I64(26)], None, None)?;
    /// assert_eq!(rec.history().head().map(|h| h.iteration()), Some(26));
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(path: impl AsRef<Path>, durability: Durability, policy: Policy) -> Result<Self, Error> {
        let path = path.as_ref();
        // The writer first: it takes the lock, so the history loaded below is the one
        // it continues.
        let writer = ArchiveWriter::open(path, durability)?;
        let history = Archive::open(path)?.to_history()?;
        let mut rec = Recorder {
            history,
            gc: Collector::new(policy),
            last_gc: GcReport::default(),
            archive: Some(writer),
        };
        rec.last_gc = rec.gc.collect(&mut rec.history)?;
        Ok(rec)
    }

    /// Move the head to `iteration` of the current timeline and return its whole state
    /// (memory, globals) for a guest started fresh from it: resuming a crashed game, a
    /// debugger continuing from a stored frame, a late joiner. The next
    /// [`Recorder::record`] is `iteration + 1`; records after `iteration` become an
    /// abandoned branch. Nothing changes on error ([`HistoryError::NotRetained`] for an
    /// iteration that is not retained).
    pub fn resume_at(&mut self, iteration: u64) -> Result<State, Error> {
        let record = self.history.at(iteration)?;
        let mut memory = vec![0u8; record.snapshot().memory_len() as usize];
        rewind_snapshot::read(self.history.store(), record.snapshot(), 0, &mut memory)
            .map_err(HistoryError::from)?;
        let state = State {
            iteration,
            record: record.id(),
            memory,
            globals: record.snapshot().globals().to_vec(),
            state_hash: record.state_hash(),
        };
        self.history.rollback(iteration)?;
        Ok(state)
    }

    /// The archive writer, when the recorder persists.
    pub fn archive(&self) -> Option<&ArchiveWriter> {
        self.archive.as_ref()
    }

    /// Append what the archive does not hold yet (records, and the head after a
    /// rollback) and sync it to disk. A no-op without an archive.
    pub fn sync(&mut self) -> Result<(), Error> {
        if let Some(w) = &mut self.archive {
            w.append(&self.history)?;
            w.sync()?;
        }
        Ok(())
    }

    /// The history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The history, mutably (for rollbacks without restore, checkouts, removals).
    pub fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    /// The collector (policy, pins).
    pub fn collector(&self) -> &Collector {
        &self.gc
    }

    /// What the last GC step freed.
    pub fn last_gc(&self) -> GcReport {
        self.last_gc
    }

    /// Record the guest state of `iteration`, append it to the archive (with
    /// [`Options::archive`]), then run one incremental GC step.
    ///
    /// `hint`: pages that may have changed since the last record or rollback (`None`
    /// hashes all of memory). `input`: the input of this iteration, kept for replay.
    pub fn record(
        &mut self,
        iteration: u64,
        memory: &[u8],
        globals: &[GlobalValue],
        hint: Option<&[u32]>,
        input: Option<&[u8]>,
    ) -> Result<CaptureReport, Error> {
        let report = self.history.capture(iteration, memory, globals, hint, input)?;
        if let Some(w) = &mut self.archive {
            // Before the GC step, so the policy never drops a record the file lacks.
            w.append(&self.history)?;
        }
        self.last_gc = self.gc.step(&mut self.history)?;
        Ok(report)
    }

    /// Roll back to `iteration`, writing its pages into `memory` (which must already be
    /// its length) and returning the globals to set. Nothing changes on error.
    pub fn rollback(
        &mut self,
        iteration: u64,
        memory: &mut [u8],
        live: LiveMemory<'_>,
    ) -> Result<Rollback, Error> {
        Ok(self.history.rollback_and_restore(iteration, memory, live)?)
    }

    /// The state hash of `iteration` on the current timeline.
    pub fn state_hash(&self, iteration: u64) -> Result<StateHash, Error> {
        Ok(self.history.at(iteration)?.state_hash())
    }

    /// Read bytes of any retained iteration without restoring.
    pub fn read(&self, iteration: u64, addr: u64, out: &mut [u8]) -> Result<(), Error> {
        Ok(self.history.read(iteration, addr, out)?)
    }

    /// The latest iteration ≤ `iteration` at which bytes `[addr, addr+len)` changed.
    pub fn blame(&self, iteration: u64, addr: u64, len: u64) -> Result<Option<Blame>, Error> {
        Ok(self.history.blame(iteration, addr, len)?)
    }

    /// Pages that differ between two iterations of the timeline.
    pub fn diff(&self, a: u64, b: u64) -> Result<Vec<u32>, Error> {
        Ok(rewind_snapshot::diff(
            self.history.at(a)?.snapshot(),
            self.history.at(b)?.snapshot(),
        ))
    }

    /// Byte ranges that differ between two iterations of the timeline.
    pub fn diff_bytes(&self, a: u64, b: u64) -> Result<Vec<ByteRange>, Error> {
        Ok(rewind_snapshot::diff_bytes(
            self.history.store(),
            self.history.at(a)?.snapshot(),
            self.history.at(b)?.snapshot(),
        )
        .map_err(HistoryError::from)?)
    }

    /// Pin an iteration so GC keeps it.
    pub fn pin(&mut self, iteration: u64) -> Result<RecordId, Error> {
        Ok(self.gc.pin(&self.history, iteration)?)
    }

    /// Unpin a record.
    pub fn unpin(&mut self, id: RecordId) -> bool {
        self.gc.unpin(id)
    }

    /// Change the retention policy (pins are kept).
    pub fn set_policy(&mut self, policy: Policy) {
        self.gc.set_policy(policy);
    }

    /// A full collection, budget included.
    pub fn collect(&mut self) -> Result<GcReport, Error> {
        self.last_gc = self.gc.collect(&mut self.history)?;
        Ok(self.last_gc)
    }
}
