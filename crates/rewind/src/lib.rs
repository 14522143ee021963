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
//!     rec.capture(frame, &memory, &[GlobalValue::I32(frame as i32)], None, None)?;
//! }
//! let hash_90 = rec.history().at(90)?.state_hash();
//! let back = rec.rollback_to(90, &mut memory, LiveMemory::AtHead)?;
//! assert_eq!(back.state_hash, hash_90);
//! assert_eq!(rec.blame(90, 90 * 8, 1)?.map(|b| b.iteration), Some(90));
//! assert_eq!(rec.blame(90, 10 * 8, 1)?.map(|b| b.iteration), Some(10));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod pipeline;

use std::cell::{Cell, OnceCell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pipeline::{Core, Failure, Frame, Msg, Pipe, Returned};
pub use pipeline::{PipelineOptions, PipelineStats};

pub use rewind_archive::bundle::{self, Bundle, BundleError, BundleState, Manifest};
pub use rewind_archive::{AppendReport, Archive, ArchiveError, ArchiveWriter, Durability};
pub use rewind_gc::{Abandoned, Collector, GcError, GcReport, Policy};
pub use rewind_history::{
    Blame, CaptureReport, History, HistoryConfig, HistoryError, Inconsistency, LiveMemory, Record, RecordId,
    RemoveReport, RollbackReport,
};
pub use rewind_snapshot::{
    ByteRange, GlobalType, GlobalValue, RestoreReport, Snapshot, SnapshotError, StateHash,
};
pub use rewind_store::{
    Hasher, InputHash, PageHash, PageSize, ParseHashError, StoreConfig, StoreError, StoreStats,
};

/// An error and its sources on one line, joined by `": "` (for logs, reports and
/// messages sent to a peer).
///
/// ```
/// let e = rewind::Error::NotRetained { iteration: 7, oldest: None, newest: None };
/// assert!(rewind::error_chain(&e).contains("iteration 7"));
/// ```
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Re-exports of the layers, for users who need more than the facade.
pub mod layers {
    pub use rewind_archive as archive;
    pub use rewind_gc as gc;
    pub use rewind_history as history;
    pub use rewind_snapshot as snapshot;
    pub use rewind_store as store;
}

/// Errors of the facade: one flat type, so the cases a caller acts on
/// ([`NotRetained`](Error::NotRetained) above all) have one shape whichever layer
/// found them.
///
/// Each layer keeps its own error type ([`HistoryError`], [`SnapshotError`],
/// [`StoreError`], [`GcError`], [`ArchiveError`]); converting one into `Error` lifts its
/// variants to this level instead of nesting them: a history error that came from the
/// store becomes [`Error::Store`], never `History(Store(…))`.
///
/// ```
/// use rewind::{Error, HistoryError};
///
/// let e = Error::from(HistoryError::NotRetained { iteration: 7, oldest: Some(10), newest: Some(20) });
/// assert!(matches!(e, Error::NotRetained { iteration: 7, .. }));
/// assert_eq!(e.not_retained(), Some(7));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An iteration that the current timeline does not hold: never captured, rolled
    /// back over, or collected by the policy.
    #[error("iteration {iteration} is not retained on the current timeline{}", range_note(*.oldest, *.newest))]
    NotRetained {
        /// The iteration asked for.
        iteration: u64,
        /// The oldest iteration the timeline retains.
        oldest: Option<u64>,
        /// The newest.
        newest: Option<u64>,
    },
    /// A record number that is not (or no longer) in the history.
    #[error("record {0} is not in the history")]
    NoSuchRecord(RecordId),
    /// The head record cannot be removed (the live guest is at it).
    #[error("record {0} is the head and cannot be removed")]
    HeadNotRemovable(RecordId),
    /// A capture whose iteration does not come after the head's.
    #[error("iteration {iteration} does not come after the head's iteration {head}")]
    IterationNotAfterHead {
        /// The iteration given.
        iteration: u64,
        /// The head's iteration.
        head: u64,
    },
    /// Bad memory, hint or globals for a snapshot, or a read out of bounds (never
    /// [`SnapshotError::Store`]: store errors are [`Error::Store`]).
    #[error(transparent)]
    Snapshot(SnapshotError),
    /// From the page store (page size, alignment, a missing or corrupt object).
    #[error(transparent)]
    Store(StoreError),
    /// From the archive (create, append, open, load); never
    /// [`ArchiveError::History`]: history errors are lifted to this level.
    #[error(transparent)]
    Archive(ArchiveError),
    /// A capture recorded on the pipeline's worker failed. It and the captures
    /// submitted after it were discarded; the head is the last recorded iteration.
    #[error("the capture of iteration {iteration} failed on the worker")]
    Deferred {
        /// The iteration whose capture failed.
        iteration: u64,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// Recording panicked on the pipeline's worker: the history may be inconsistent,
    /// and every later call fails with this error.
    #[error("the capture worker panicked: {message}")]
    WorkerPanicked {
        /// The panic's message.
        message: String,
    },
    /// The pipeline's worker thread is gone.
    #[error("the capture worker thread is gone")]
    WorkerGone,
    /// The pipeline's worker thread could not be started.
    #[error("starting the capture worker thread")]
    WorkerSpawn(#[source] std::io::Error),
    /// A late-joiner bundle that cannot be built, read or assembled, or a state that
    /// does not verify ([`bundle`]).
    #[error(transparent)]
    Bundle(BundleError),
}

fn range_note(oldest: Option<u64>, newest: Option<u64>) -> String {
    match (oldest, newest) {
        (Some(a), Some(b)) => format!(" (it holds {a}..={b})"),
        _ => " (it is empty)".to_string(),
    }
}

impl Error {
    /// The iteration of a [`NotRetained`](Error::NotRetained) error (also when it is the
    /// cause of a [`Deferred`](Error::Deferred) one).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?)?;
    /// rec.capture(0, &[0u8; 4096], &[], None, None)?;
    /// let err = rec.state_hash(9).unwrap_err();
    /// assert_eq!(err.not_retained(), Some(9));
    /// # Ok(())
    /// # }
    /// ```
    pub fn not_retained(&self) -> Option<u64> {
        match self {
            Error::NotRetained { iteration, .. } => Some(*iteration),
            Error::Deferred { source, .. } => source.not_retained(),
            _ => None,
        }
    }
}

impl From<HistoryError> for Error {
    fn from(e: HistoryError) -> Self {
        match e {
            HistoryError::Snapshot(e) => e.into(),
            HistoryError::Store(e) => Error::Store(e),
            HistoryError::NotRetained {
                iteration,
                oldest,
                newest,
            } => Error::NotRetained {
                iteration,
                oldest,
                newest,
            },
            HistoryError::NoSuchRecord(id) => Error::NoSuchRecord(id),
            HistoryError::HeadNotRemovable(id) => Error::HeadNotRemovable(id),
            HistoryError::IterationNotAfterHead { iteration, head } => {
                Error::IterationNotAfterHead { iteration, head }
            }
        }
    }
}

impl From<SnapshotError> for Error {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Store(e) => Error::Store(e),
            e => Error::Snapshot(e),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl From<GcError> for Error {
    fn from(e: GcError) -> Self {
        match e {
            GcError::History(e) => e.into(),
        }
    }
}

impl From<BundleError> for Error {
    fn from(e: BundleError) -> Self {
        Error::Bundle(e)
    }
}

impl From<ArchiveError> for Error {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::History(e) => e.into(),
            e => Error::Archive(e),
        }
    }
}

/// Where and how a [`Recorder`] persists its history.
#[derive(Clone, Debug, PartialEq, Eq)]
///
/// ```
/// use rewind::*;
///
/// # fn main() -> Result<(), rewind::Error> {
/// let options = Options::new(4096)?.archive("game.rwd", Durability::Manual);
/// let archive = options.archive.as_ref().map(|a| (a.path.clone(), a.replace));
/// assert_eq!(archive, Some(("game.rwd".into(), false)));
/// # Ok(())
/// # }
/// ```
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
///
/// ```
/// use rewind::*;
///
/// # fn main() -> Result<(), rewind::Error> {
/// let options = Options::new(4096)?
///     .seed(0x5eed)
///     .policy(Policy::default().keep_last(600))
///     .pipeline(PipelineOptions::new());
/// let rec = Recorder::new(options)?;
/// # let _ = rec;
/// # Ok(())
/// # }
/// ```
pub struct Options {
    /// History configuration (page size, seed, delta chain bound).
    pub history: HistoryConfig,
    /// Retention policy applied after every recorded iteration.
    pub policy: Policy,
    /// Persist every recorded iteration to an archive.
    pub archive: Option<ArchiveOptions>,
    /// Record captures on a worker thread ([`Recorder::submit`]); `None` (the default)
    /// records them on the caller's thread.
    pub pipeline: Option<PipelineOptions>,
    /// Names of the recorded globals, by position, stored in the archive for the
    /// inspector ([`Options::global_names`]).
    pub global_names: Vec<Option<String>>,
}

impl Options {
    /// Options for a page size (a power of two from 1 KiB to 64 KiB); keeps everything.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let options = Options::new(4096)?;
    /// assert!(Options::new(1000).is_err(), "not a power of two");
    /// # let _ = options;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(page_size: u64) -> Result<Self, Error> {
        Ok(Options {
            history: HistoryConfig::new(page_size)?,
            policy: Policy::default(),
            archive: None,
            pipeline: None,
            global_names: Vec::new(),
        })
    }
    /// Use this hash seed (peers that compare state hashes must share it).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// // Peers that compare state hashes use the same seed.
    /// let (a, b) = (Options::new(4096)?.seed(42), Options::new(4096)?.seed(42));
    /// let (mut ra, mut rb) = (Recorder::new(a)?, Recorder::new(b)?);
    /// let mem = vec![7u8; 4096];
    /// ra.capture(0, &mem, &[], None, None)?;
    /// rb.capture(0, &mem, &[], None, None)?;
    /// assert_eq!(ra.state_hash(0)?, rb.state_hash(0)?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.history = self.history.seed(seed);
        self
    }
    /// The retention policy.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.policy(Policy::default().keep_last(3)))?;
    /// for frame in 0..10u64 {
    ///     rec.capture(frame, &[frame as u8; 4096], &[], None, None)?;
    /// }
    /// assert_eq!(rec.history().len(), 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }
    /// Bound delta chains.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// // Every page stored whole: reads never apply a delta.
    /// let options = Options::new(4096)?.max_chain(0);
    /// # let _ = options;
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_chain(mut self, depth: u8) -> Self {
        self.history = self.history.max_chain(depth);
        self
    }
    /// Frames a replaced page stays whole before it becomes a delta against its
    /// replacement (default 10; see [`StoreConfig::delta_after`]). Rollbacks up to this
    /// many frames back abandon only pages no delta depends on.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// // GGRS with a 12-frame prediction window: keep 13 frames of replaced pages whole
    /// // (and raw: see `rollback_window`).
    /// let options = Options::new(4096)?.delta_after(13).rollback_window(13);
    /// # let _ = options;
    /// # Ok(())
    /// # }
    /// ```
    pub fn delta_after(mut self, frames: u64) -> Self {
        self.history = self.history.delta_after(frames);
        self
    }
    /// Frames of progress a replaced page is held whole and raw, at most `delta_after`
    /// (default 10; see [`StoreConfig::rollback_window`]): a rollback of up to this many
    /// frames writes back copies, never decodes. A page compressed while idle is made
    /// raw again when it is replaced; leaving the window it becomes a delta or is
    /// compressed. 0 holds nothing raw.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// // GGRS with a 12-frame prediction window: rollbacks of 12 frames restore by copies.
    /// let options = Options::new(4096)?.delta_after(13).rollback_window(13);
    /// # let _ = options;
    /// # Ok(())
    /// # }
    /// ```
    pub fn rollback_window(mut self, frames: u64) -> Self {
        self.history = self.history.rollback_window(frames);
        self
    }
    /// Frames a raw page waits before a GC step compresses it, and the most pages one
    /// step compresses (defaults 16 and 16).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// // Compress pages left alone for 4 frames, at least 64 per GC step.
    /// let options = Options::new(4096)?.compression(4, 64);
    /// # let _ = options;
    /// # Ok(())
    /// # }
    /// ```
    pub fn compression(mut self, after_frames: u64, budget: usize) -> Self {
        self.history = self.history.compression(after_frames, budget);
        self
    }
    /// Persist to a new archive at `path`: every [`Recorder::capture`] appends what is
    /// new before the GC step runs. [`Recorder::new`] refuses a path that exists
    /// ([`ArchiveError::Exists`]); see [`Options::replace_archive`].
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = std::env::temp_dir().join(format!("rewind-doc-opt-archive-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("game.rwd");
    /// let mut rec = Recorder::new(Options::new(4096)?.archive(&path, Durability::EveryAppend))?;
    /// rec.capture(0, &[1u8; 4096], &[], None, None)?;
    /// assert_eq!(Archive::open(&path)?.state_hash(0)?, rec.state_hash(0)?);
    /// assert!(Recorder::new(Options::new(4096)?.archive(&path, Durability::EveryAppend)).is_err(), "exists");
    /// # drop(rec);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok(())
    /// # }
    /// ```
    pub fn archive(mut self, path: impl Into<PathBuf>, durability: Durability) -> Self {
        self.archive = Some(ArchiveOptions {
            path: path.into(),
            durability,
            replace: false,
        });
        self
    }
    /// Record captures on a worker thread: [`Recorder::submit`] copies the pages a
    /// capture examines and returns; see [`Recorder`].
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.pipeline(PipelineOptions::new()))?;
    /// assert!(rec.is_pipelined());
    /// rec.submit(0, &[3u8; 4096], &[], Some(&[0]), None)?;
    /// rec.settle()?;
    /// assert_eq!(rec.head_iteration(), Some(0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn pipeline(mut self, options: PipelineOptions) -> Self {
        self.pipeline = Some(options);
        self
    }
    /// Name the recorded globals, by position (`None` for one without a name; e.g. a
    /// wasm guest's export names or `$name` from its name section): with
    /// [`Options::archive`] the archive stores them and the inspector prints them
    /// instead of `global N`. See [`Recorder::set_global_names`].
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let options = Options::new(4096)?.global_names(vec![Some("$score".into()), None]);
    /// assert_eq!(options.global_names.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn global_names(mut self, names: Vec<Option<String>>) -> Self {
        self.global_names = names;
        self
    }
    /// As [`Options::archive`], replacing an archive already at `path`.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = std::env::temp_dir().join(format!("rewind-doc-replace-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("game.rwd");
    /// for _ in 0..2 {
    ///     let mut rec = Recorder::new(Options::new(4096)?.replace_archive(&path, Durability::Manual))?;
    ///     rec.capture(0, &[1u8; 4096], &[], None, None)?;
    ///     rec.sync()?;
    /// }
    /// assert_eq!(Archive::open(&path)?.records()?.len(), 1);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok(())
    /// # }
    /// ```
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
///
/// ```
/// use rewind::*;
///
/// # fn main() -> Result<(), rewind::Error> {
/// let mut rec = Recorder::new(Options::new(4096)?)?;
/// rec.capture(0, &[5u8; 4096], &[GlobalValue::I64(-5)], None, None)?;
/// let state: State = rec.resume_at(0)?;
/// assert_eq!((state.memory.len(), state.globals.len()), (4096, 1));
/// assert_eq!(state.state_hash, rec.state_hash(0)?);
/// # Ok(())
/// # }
/// ```
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
    /// The host state recorded with it ([`Recorder::capture_with_host_state`]), for the
    /// host to put back before the guest continues.
    pub host_state: Option<Vec<u8>>,
}

/// A history with its garbage collector: the everyday API.
///
/// With [`Options::pipeline`] a capture ([`Recorder::submit`]) only copies the pages it
/// examines into a staging buffer on the caller's thread; a worker thread records it
/// (hash, dedup, store, deltas, vector and Merkle updates, archive append, GC step).
/// Every other call waits for the captures in flight first, so it sees exactly the
/// history the synchronous recorder would have: the same records, state hashes, store
/// contents and archive bytes. A capture that fails on the worker is reported by the
/// next call ([`Error::Deferred`]); the captures submitted after it are discarded, the
/// head stays at the last recorded iteration, and the next capture hashes all of
/// memory (its hint was relative to a capture that did not happen). Dropping the
/// recorder finishes the captures in flight (they reach the archive) before it
/// returns.
///
/// ```
/// use rewind::*;
///
/// # fn main() -> Result<(), rewind::Error> {
/// let mut rec = Recorder::new(Options::new(4096)?.policy(Policy::default().keep_last(600)))?;
/// let mut mem = vec![0u8; 16 * 4096];
/// for frame in 0..30u64 {
///     mem[(frame as usize % 16) * 4096] = frame as u8; // the guest runs a frame
///     rec.capture(frame, &mem, &[], Some(&[(frame % 16) as u32]), None)?;
/// }
/// // A late input for frame 20: go back and re-simulate from there.
/// rec.rollback_to(20, &mut mem, LiveMemory::AtHead)?;
/// assert_eq!(mem[4 * 4096], 20);
/// # Ok(())
/// # }
/// ```
pub struct Recorder {
    /// The state, when it is on the caller's side (always, without a pipeline).
    home: OnceCell<Box<Core>>,
    /// The worker, with [`Options::pipeline`].
    pipe: Option<Pipe>,
    page_size: PageSize,
    /// The head as the captures in flight leave it (valid while the state is away).
    predicted: Predicted,
    /// A worker failure not yet returned to the caller.
    deferred: RefCell<Option<Error>>,
    /// The message of a panic on the worker: the history may be inconsistent, every
    /// later call fails.
    poisoned: RefCell<Option<String>>,
    /// The next capture must hash all of memory (a staged capture was discarded).
    resync: Cell<bool>,
    /// Caller-side pipeline figures.
    stats: Cell<PipelineStats>,
}

/// The shape of the head after the captures in flight: what the caller checks a
/// staged capture against, so its errors come at once as in the synchronous path.
#[derive(Default)]
struct Predicted {
    iteration: Option<u64>,
    memory_len: u64,
    pages: usize,
    globals: Vec<GlobalValue>,
    next_record: u64,
}

impl Predicted {
    fn of(history: &History) -> Predicted {
        let head = history.head();
        Predicted {
            iteration: head.map(|h| h.iteration()),
            memory_len: head.map_or(0, |h| h.snapshot().memory_len()),
            pages: head.map_or(0, |h| h.snapshot().pages().len()),
            globals: head.map_or_else(Vec::new, |h| h.snapshot().globals().to_vec()),
            next_record: history.next_record_id().0,
        }
    }
}

/// A capture handed to the worker ([`Recorder::submit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
///
/// ```
/// use rewind::*;
///
/// # fn main() -> Result<(), rewind::Error> {
/// let mut rec = Recorder::new(Options::new(4096)?.pipeline(PipelineOptions::new()))?;
/// let ticket: Ticket = rec.submit(3, &[0u8; 4096], &[], None, None)?;
/// assert_eq!(rec.history().record(ticket.record).map(|r| r.iteration()), Some(3));
/// # Ok(())
/// # }
/// ```
pub struct Ticket {
    /// The iteration.
    pub iteration: u64,
    /// The record it will be.
    pub record: RecordId,
}

impl Recorder {
    /// An empty recorder; with [`Options::archive`], a new archive too (refused if the
    /// path exists, unless [`Options::replace_archive`]); with [`Options::pipeline`], its
    /// worker thread.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.seed(3))?;
    /// rec.capture(0, &[0u8; 4096], &[], None, None)?;
    /// assert_eq!(rec.history().len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(options: Options) -> Result<Self, Error> {
        let history = History::new(options.history)?;
        let mut archive = match &options.archive {
            None => None,
            Some(a) if a.replace => Some(ArchiveWriter::replace(&a.path, &history, a.durability)?),
            Some(a) => Some(ArchiveWriter::create(&a.path, &history, a.durability)?),
        };
        if let Some(w) = &mut archive {
            w.set_global_names(options.global_names);
        }
        Self::from_core(
            Core {
                history,
                gc: Collector::new(options.policy),
                last_gc: GcReport::default(),
                archive,
                last_report: None,
                #[cfg(test)]
                fault: None,
            },
            options.pipeline,
        )
    }

    fn from_core(mut core: Core, pipeline: Option<PipelineOptions>) -> Result<Self, Error> {
        core.history
            .set_compress_follows_rate(pipeline.is_some_and(|p| p.compress_follows_rate));
        let pipe = pipeline.map(Pipe::start).transpose()?;
        Ok(Recorder {
            page_size: core.history.page_size(),
            home: OnceCell::from(Box::new(core)),
            pipe,
            predicted: Predicted::default(),
            deferred: RefCell::new(None),
            poisoned: RefCell::new(None),
            resync: Cell::new(false),
            stats: Cell::new(PipelineStats::default()),
        })
    }

    /// Start the capture pipeline on a recorder that runs without one (e.g. one from
    /// [`Recorder::open`]). A no-op when it already has one.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let rec = Recorder::new(Options::new(4096)?)?;
    /// assert!(!rec.is_pipelined());
    /// let rec = rec.with_pipeline(PipelineOptions::new().staging_budget(8 << 20))?;
    /// assert!(rec.is_pipelined());
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_pipeline(mut self, options: PipelineOptions) -> Result<Self, Error> {
        if self.pipe.is_none() {
            self.home_mut()
                .history
                .set_compress_follows_rate(options.compress_follows_rate);
            self.pipe = Some(Pipe::start(options)?);
        }
        Ok(self)
    }

    /// True when captures are recorded on a worker thread ([`Options::pipeline`]).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// assert!(!Recorder::new(Options::new(4096)?)?.is_pipelined());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_pipelined(&self) -> bool {
        self.pipe.is_some()
    }

    /// The state, brought back from the worker if it is there (waiting for the
    /// captures in flight). A worker failure is kept for [`Recorder::check`].
    fn bring_home(&self) -> &Core {
        if let Some(core) = self.home.get() {
            return core;
        }
        let t0 = Instant::now();
        let returned = self
            .pipe
            .as_ref()
            .and_then(|p| p.tx.send(Msg::Return).ok().and_then(|_| p.rx.recv().ok()));
        let mut stats = self.stats.get();
        stats.waits += 1;
        stats.wait_time += t0.elapsed();
        self.stats.set(stats);
        let (core, failure) = match returned {
            Some(Returned { core, failure }) => (core, failure),
            None => (None, Some(Failure::Panic("the capture worker ended".into()))),
        };
        match failure {
            Some(Failure::Error { iteration, error }) => {
                *self.deferred.borrow_mut() = Some(Error::Deferred {
                    iteration,
                    source: Box::new(error),
                });
                self.resync.set(true);
            }
            Some(Failure::Panic(message)) => *self.poisoned.borrow_mut() = Some(message),
            None => {}
        }
        if let Some(p) = &self.pipe {
            p.shared.failed.store(false, Ordering::Release);
        }
        let core = core.unwrap_or_else(|| {
            if self.poisoned.borrow().is_none() {
                *self.poisoned.borrow_mut() = Some("the capture worker lost the history".into());
            }
            Box::new(Core {
                history: History::new(HistoryConfig::default())
                    .expect("the default history configuration is valid"),
                gc: Collector::new(Policy::default()),
                last_gc: GcReport::default(),
                archive: None,
                last_report: None,
                #[cfg(test)]
                fault: None,
            })
        });
        let _ = self.home.set(core);
        self.home.get().expect("the state was set just above")
    }

    /// A worker failure not yet reported, or the panic that poisoned the recorder.
    fn check(&self) -> Result<(), Error> {
        if let Some(message) = self.poisoned.borrow().as_ref() {
            return Err(Error::WorkerPanicked {
                message: message.clone(),
            });
        }
        match self.deferred.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The state, after the captures in flight, or the failure they met.
    fn core(&self) -> Result<&Core, Error> {
        let core = self.bring_home();
        self.check()?;
        Ok(core)
    }

    fn core_mut(&mut self) -> Result<&mut Core, Error> {
        self.core()?;
        Ok(self.home_mut())
    }

    /// The state, mutably, brought home; a failure stays for the next checked call.
    fn home_mut(&mut self) -> &mut Core {
        self.bring_home();
        self.home.get_mut().expect("bring_home leaves the state home")
    }

    /// Wait for every capture in flight and report a failure of any of them. A no-op
    /// without a pipeline.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.pipeline(PipelineOptions::new()))?;
    /// let mut mem = vec![0u8; 4 * 4096];
    /// rec.submit(0, &mem, &[], None, None)?;
    /// for frame in 1..5u64 {
    ///     mem[4096 * (frame as usize % 4)] = frame as u8;
    ///     rec.submit(frame, &mem, &[], Some(&[(frame % 4) as u32]), None)?;
    /// }
    /// rec.settle()?; // every capture above is recorded (or its error returned)
    /// assert_eq!(rec.history().len(), 5);
    /// # Ok(())
    /// # }
    /// ```
    pub fn settle(&mut self) -> Result<(), Error> {
        self.core().map(|_| ())
    }

    /// The head's iteration, counting the captures in flight; does not wait for them.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?)?;
    /// assert_eq!(rec.head_iteration(), None);
    /// rec.capture(5, &[0u8; 4096], &[], None, None)?;
    /// assert_eq!(rec.head_iteration(), Some(5));
    /// # Ok(())
    /// # }
    /// ```
    pub fn head_iteration(&self) -> Option<u64> {
        match self.home.get() {
            Some(core) => core.history.head().map(|h| h.iteration()),
            None => self.predicted.iteration,
        }
    }

    /// Caller-thread and worker figures of the capture pipeline (zero without one).
    /// Does not wait for the worker.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.pipeline(PipelineOptions::new()))?;
    /// rec.submit(0, &[1u8; 8192], &[], Some(&[0, 1]), None)?;
    /// rec.settle()?;
    /// let stats = rec.pipeline_stats();
    /// assert_eq!((stats.staged, stats.pages_staged), (1, 2));
    /// # Ok(())
    /// # }
    /// ```
    pub fn pipeline_stats(&self) -> PipelineStats {
        let mut stats = self.stats.get();
        if let Some(p) = &self.pipe {
            stats.worker_frames = p.shared.worker_frames.load(Ordering::Relaxed);
            stats.worker_time = Duration::from_nanos(p.shared.worker_nanos.load(Ordering::Relaxed));
        }
        stats
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
    ///         let clock = (frame * 16).to_le_bytes(); // the host's own state
    ///         let globals = [GlobalValue::I64(frame as i64)];
    ///         rec.capture_with_host_state(frame, &memory, &globals, None, None, Some(&clock))?;
    ///     }
    /// } // the process could end here: every record is in the file
    /// let mut rec = Recorder::open(&path, Durability::EveryAppend, Policy::default().keep_last(600))?;
    /// let state = rec.resume_at(25)?; // a fresh guest starts from frame 25
    /// assert_eq!(state.globals, vec![GlobalValue::I64(25)]);
    /// assert_eq!(state.host_state, Some(400u64.to_le_bytes().to_vec())); // and its host too
    /// let mut memory = state.memory;
    /// memory[0] = 0xff; // frame 26 goes differently this time
    /// rec.capture(26, &memory, &[GlobalValue::I64(26)], None, None)?;
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
        let mut core = Core {
            history,
            gc: Collector::new(policy),
            last_gc: GcReport::default(),
            archive: Some(writer),
            last_report: None,
            #[cfg(test)]
            fault: None,
        };
        core.last_gc = core.gc.collect(&mut core.history)?;
        Self::from_core(core, None)
    }

    /// Move the head to `iteration` of the current timeline and return its whole state
    /// (memory, globals) for a guest started fresh from it: resuming a crashed game, a
    /// debugger continuing from a stored frame, a late joiner. The next
    /// [`Recorder::capture`] is `iteration + 1`; records after `iteration` become an
    /// abandoned branch. Nothing changes on error ([`Error::NotRetained`] for an
    /// iteration that is not retained).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = std::env::temp_dir().join(format!("rewind-doc-resume-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("game.rwd");
    /// let mut rec = Recorder::new(Options::new(4096)?.archive(&path, Durability::EveryAppend))?;
    /// for frame in 0..10u64 {
    ///     rec.capture(frame, &[frame as u8; 4096], &[GlobalValue::I64(frame as i64)], None, None)?;
    /// }
    /// drop(rec);
    /// let mut rec = Recorder::open(&path, Durability::EveryAppend, Policy::default())?;
    /// let state = rec.resume_at(6)?;
    /// assert_eq!((state.iteration, state.memory[0]), (6, 6));
    /// assert_eq!(state.globals, vec![GlobalValue::I64(6)]);
    /// rec.capture(7, &[70u8; 4096], &[GlobalValue::I64(70)], None, None)?; // a new branch from 6
    /// # drop(rec);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok(())
    /// # }
    /// ```
    pub fn resume_at(&mut self, iteration: u64) -> Result<State, Error> {
        let history = &mut self.core_mut()?.history;
        let record = history.at(iteration)?;
        let mut memory = vec![0u8; record.snapshot().memory_len() as usize];
        rewind_snapshot::read(history.store(), record.snapshot(), 0, &mut memory)
            .map_err(HistoryError::from)?;
        let state = State {
            iteration,
            record: record.id(),
            memory,
            globals: record.snapshot().globals().to_vec(),
            state_hash: record.state_hash(),
            host_state: history.host_state(record.id()).map(<[u8]>::to_vec),
        };
        history.set_head(iteration)?;
        // The caller's memory is now the returned state: hints start from it.
        self.resync.set(false);
        Ok(state)
    }

    /// A recorder whose history starts at a state handed over by a late-joiner bundle
    /// ([`bundle`]): the state is captured as its first record, with its host state,
    /// under the sender's page size and seed (they win over `options`', so state
    /// hashes compare with the sender's), and the manifest's global names are given to
    /// an archive of `options` that names none. The caller puts [`BundleState::memory`]
    /// and [`BundleState::globals`] into its guest (and the host state into its host)
    /// and captures `state.iteration() + 1` next.
    ///
    /// ```
    /// use rewind::{Bundle, GlobalValue, Manifest, Options, Recorder};
    /// use rewind::bundle::Nothing;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut host = Recorder::new(Options::new(4096)?.seed(4))?;
    /// let mut memory = vec![0u8; 8 * 4096];
    /// for frame in 0..50u64 {
    ///     memory[(frame as usize * 700) % (8 * 4096)] = frame as u8;
    ///     host.capture(frame, &memory, &[GlobalValue::I64(frame as i64)], None, None)?;
    /// }
    /// // A peer joins at frame 49 with nothing: every distinct page travels once.
    /// let manifest = Manifest::from_history(host.history(), 49)?;
    /// let bundle = Bundle::self_contained(&manifest, &manifest.wanted(&Nothing)?, host.history().store())?;
    /// let state = Bundle::from_bytes(&bundle.to_bytes()?)?.assemble(&Nothing)?;
    /// let mut peer = Recorder::from_bundle(Options::new(4096)?, &state)?;
    /// let mut peer_memory = state.memory().to_vec();
    /// // Both run frame 50 alike and agree.
    /// memory[0] = 50;
    /// peer_memory[0] = 50;
    /// let a = host.capture(50, &memory, &[GlobalValue::I64(50)], Some(&[0]), None)?;
    /// let b = peer.capture(50, &peer_memory, &[GlobalValue::I64(50)], Some(&[0]), None)?;
    /// assert_eq!(a.state_hash, b.state_hash);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_bundle(mut options: Options, state: &BundleState) -> Result<Self, Error> {
        let m = state.manifest();
        options.history.store.page_size = m.page_size();
        options.history.store.seed = Some(m.seed());
        if options.global_names.is_empty() {
            options.global_names = m.global_names().to_vec();
        }
        let mut rec = Recorder::new(options)?;
        let report = rec.capture_with_host_state(
            m.iteration(),
            state.memory(),
            state.globals(),
            None,
            None,
            state.host_state(),
        )?;
        if report.state_hash != state.state_hash() {
            return Err(BundleError::StateMismatch {
                expected: state.state_hash(),
                found: report.state_hash,
            }
            .into());
        }
        Ok(rec)
    }

    /// Record `bytes` as the host state of `iteration` on the current timeline
    /// (replacing one it had), e.g. of the head when a host starts keeping state.
    /// After the captures in flight. The archive gets it with the next append of a
    /// commit whose head is that record ([`Recorder::sync`] or the next capture).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?)?;
    /// rec.capture(0, &[0u8; 4096], &[], None, None)?;
    /// rec.set_host_state(0, b"rng=42")?; // a host that starts keeping state now
    /// assert_eq!(rec.host_state(0)?, Some(&b"rng=42"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_host_state(&mut self, iteration: u64, bytes: &[u8]) -> Result<(), Error> {
        // A worker failure stays for the next checked call.
        let history = &mut self.home_mut().history;
        let id = history.at(iteration)?.id();
        history.set_host_state(id, bytes)?;
        Ok(())
    }

    /// The host state recorded with `iteration` on the current timeline, `None` when
    /// it has none.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?)?;
    /// rec.capture_with_host_state(0, &[0u8; 4096], &[], None, None, Some(b"clock=0"))?;
    /// rec.capture(1, &[1u8; 4096], &[], None, None)?;
    /// assert_eq!(rec.host_state(0)?, Some(&b"clock=0"[..]));
    /// assert_eq!(rec.host_state(1)?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn host_state(&self, iteration: u64) -> Result<Option<&[u8]>, Error> {
        let history = &self.core()?.history;
        Ok(history.host_state(history.at(iteration)?.id()))
    }

    /// Name the recorded globals (see [`Options::global_names`]); written to the
    /// archive with the next commit when they differ from its names. A no-op without
    /// an archive.
    ///
    /// ```
    /// use rewind::{Archive, Durability, GlobalValue, Options, Recorder};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("named.rwd");
    /// let mut rec = Recorder::new(Options::new(4096)?.archive(&path, Durability::Manual))?;
    /// rec.set_global_names(vec![Some("$drift".into()), None]);
    /// rec.capture(0, &[0u8; 4096], &[GlobalValue::I32(1), GlobalValue::I32(2)], None, None)?;
    /// drop(rec);
    /// assert_eq!(Archive::open(&path)?.global_names()?, vec![Some("$drift".to_string())]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_global_names(&mut self, names: Vec<Option<String>>) {
        if let Some(w) = &mut self.home_mut().archive {
            w.set_global_names(names);
        }
    }

    /// The archive writer, when the recorder persists (after the captures in flight).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// assert!(Recorder::new(Options::new(4096)?)?.archive().is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn archive(&self) -> Option<&ArchiveWriter> {
        self.bring_home().archive.as_ref()
    }

    /// Append what the archive does not hold yet (records, and the head after a
    /// rollback) and sync it to disk, after the captures in flight. A no-op without an
    /// archive.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?)?;
    /// rec.sync()?; // without an archive: nothing to do
    /// # Ok(())
    /// # }
    /// ```
    pub fn sync(&mut self) -> Result<(), Error> {
        let core = self.core_mut()?;
        if let Some(w) = &mut core.archive {
            w.append(&core.history)?;
            w.sync()?;
        }
        Ok(())
    }

    /// The history, after the captures in flight (a worker failure among them is
    /// reported by the next call that returns a `Result`).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.seed(1))?;
    /// let mut mem = vec![0u8; 4 * 4096];
    /// rec.capture(0, &mem, &[], None, None)?;
    /// assert_eq!(rec.history().at(0)?.snapshot().memory_len(), mem.len() as u64);
    /// # Ok(())
    /// # }
    /// ```
    pub fn history(&self) -> &History {
        &self.bring_home().history
    }

    /// The history, mutably (for rollbacks without restore, checkouts, removals), after
    /// the captures in flight.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.seed(1))?;
    /// let mut mem = vec![0u8; 4 * 4096];
    /// rec.capture(0, &mem, &[], None, None)?;
    /// mem[0] = 1;
    /// rec.capture(1, &mem, &[], Some(&[0]), None)?;
    /// rec.history_mut().set_head(0)?; // the head only: memory is the caller's to restore
    /// assert_eq!(rec.head_iteration(), Some(0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn history_mut(&mut self) -> &mut History {
        &mut self.home_mut().history
    }

    /// The collector (policy, pins).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let rec = Recorder::new(Options::new(4096)?.policy(Policy::default().keep_last(60)))?;
    /// assert_eq!(rec.collector().policy().keep_last, Some(60));
    /// # Ok(())
    /// # }
    /// ```
    pub fn collector(&self) -> &Collector {
        &self.bring_home().gc
    }

    /// What the last GC step freed (after the captures in flight).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.policy(Policy::default().keep_last(1)))?;
    /// rec.capture(0, &[1u8; 4096], &[], None, None)?;
    /// rec.capture(1, &[2u8; 4096], &[], None, None)?;
    /// assert_eq!(rec.last_gc().removed.records, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn last_gc(&self) -> GcReport {
        self.bring_home().last_gc
    }

    /// Record the guest state of `iteration`, append it to the archive (with
    /// [`Options::archive`]), then run one incremental GC step.
    ///
    /// `hint`: pages that may have changed since the last record or rollback (`None`
    /// hashes all of memory). `input`: the input of this iteration, kept for replay.
    ///
    /// With a pipeline this waits for the worker to record it; [`Recorder::submit`]
    /// returns as soon as the pages are copied.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?)?;
    /// let mut mem = vec![0u8; 4 * 4096];
    /// rec.capture(0, &mem, &[GlobalValue::I32(0)], None, None)?; // no hint: every page hashed
    /// mem[2 * 4096] = 1;
    /// let input = 7u32.to_le_bytes();
    /// let report = rec.capture(1, &mem, &[GlobalValue::I32(1)], Some(&[2]), Some(&input))?;
    /// assert_eq!(report.pages_changed, 1);
    /// assert_eq!(rec.history().input(report.record), Some(&input[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn capture(
        &mut self,
        iteration: u64,
        memory: &[u8],
        globals: &[GlobalValue],
        hint: Option<&[u32]>,
        input: Option<&[u8]>,
    ) -> Result<CaptureReport, Error> {
        self.capture_with_host_state(iteration, memory, globals, hint, input, None)
    }

    /// [`Recorder::capture`], recording `host_state` with the new record: the host's
    /// own state (a clock, a random generator, file positions) as the host encodes it,
    /// stored content-addressed beside the inputs (equal consecutive states share one
    /// copy), collected with its record, persisted in the archive and returned by
    /// [`Recorder::resume_at`].
    ///
    /// ```
    /// # fn main() -> Result<(), rewind::Error> {
    /// use rewind::{Options, Recorder};
    /// let mut rec = Recorder::new(Options::new(4096)?.seed(1))?;
    /// let memory = vec![0u8; 4096];
    /// for frame in 0..4u64 {
    ///     let clock = (frame / 2).to_le_bytes(); // the host's clock ticks every 2 frames
    ///     rec.capture_with_host_state(frame, &memory, &[], None, None, Some(&clock))?;
    /// }
    /// assert_eq!(rec.host_state(3)?, Some(&1u64.to_le_bytes()[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn capture_with_host_state(
        &mut self,
        iteration: u64,
        memory: &[u8],
        globals: &[GlobalValue],
        hint: Option<&[u32]>,
        input: Option<&[u8]>,
        host_state: Option<&[u8]>,
    ) -> Result<CaptureReport, Error> {
        if self.pipe.is_some() {
            self.submit_with_host_state(iteration, memory, globals, hint, input, host_state)?;
            return self.core()?.last_report.ok_or(Error::WorkerGone);
        }
        self.capture_here(iteration, memory, globals, hint, input, host_state)
    }

    /// [`Recorder::capture`] on the caller's thread.
    fn capture_here(
        &mut self,
        iteration: u64,
        memory: &[u8],
        globals: &[GlobalValue],
        hint: Option<&[u32]>,
        input: Option<&[u8]>,
        host_state: Option<&[u8]>,
    ) -> Result<CaptureReport, Error> {
        let core = self.core_mut()?;
        let report = core.history.capture(iteration, memory, globals, hint, input)?;
        if let Some(host) = host_state {
            core.history.set_host_state(report.record, host)?;
        }
        core.after_capture(report)
    }

    /// Capture the guest state of `iteration` as [`Recorder::capture`] does, returning
    /// as soon as the pages it examines are copied: the worker records it. Errors the
    /// synchronous capture would give before storing anything (an iteration not after
    /// the head, a memory that is not whole pages, a hint past the end, globals of
    /// another shape) come at once; a failure on the worker comes from the next call.
    /// Blocks while the staging budget is full ([`PipelineStats::blocked`]).
    ///
    /// Without a hint (`None`), or without a pipeline, the capture is recorded here,
    /// after the captures in flight.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.pipeline(PipelineOptions::new()))?;
    /// let mut mem = vec![0u8; 4 * 4096];
    /// let first = rec.submit(0, &mem, &[], None, None)?; // no hint: recorded at once
    /// mem[0] = 1;
    /// let ticket = rec.submit(1, &mem, &[], Some(&[0]), None)?; // page 0 copied, the worker does the rest
    /// assert_eq!((first.iteration, ticket.iteration), (0, 1));
    /// assert_ne!(rec.state_hash(1)?, rec.state_hash(0)?); // waits for iteration 1 only
    /// # Ok(())
    /// # }
    /// ```
    pub fn submit(
        &mut self,
        iteration: u64,
        memory: &[u8],
        globals: &[GlobalValue],
        hint: Option<&[u32]>,
        input: Option<&[u8]>,
    ) -> Result<Ticket, Error> {
        self.submit_with_host_state(iteration, memory, globals, hint, input, None)
    }

    /// [`Recorder::submit`] with a host state, as [`Recorder::capture_with_host_state`]:
    /// the bytes travel to the worker with the staged pages.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.pipeline(PipelineOptions::new()))?;
    /// rec.submit(0, &[0u8; 4096], &[], None, None)?;
    /// rec.submit_with_host_state(1, &[1u8; 4096], &[], Some(&[0]), None, Some(b"clock=1"))?;
    /// assert_eq!(rec.host_state(1)?, Some(&b"clock=1"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn submit_with_host_state(
        &mut self,
        iteration: u64,
        memory: &[u8],
        globals: &[GlobalValue],
        hint: Option<&[u32]>,
        input: Option<&[u8]>,
        host_state: Option<&[u8]>,
    ) -> Result<Ticket, Error> {
        let failed = self
            .pipe
            .as_ref()
            .map(|p| p.shared.failed.load(Ordering::Acquire));
        let hint = match (failed, hint) {
            (Some(false), Some(hint)) if !self.resync.get() => hint,
            (Some(_), _) => {
                // Recorded here: the hint (if any) may be relative to a capture the
                // worker discarded.
                let hint = if self.resync.get() { None } else { hint };
                let report = self.capture_here(iteration, memory, globals, hint, input, host_state)?;
                self.resync.set(false);
                self.count(|s| s.synchronous += 1);
                return Ok(Ticket {
                    iteration,
                    record: report.record,
                });
            }
            (None, _) => {
                let report = self.capture_here(iteration, memory, globals, hint, input, host_state)?;
                return Ok(Ticket {
                    iteration,
                    record: report.record,
                });
            }
        };
        self.check()?;
        let Some(pipe) = &self.pipe else {
            return Err(Error::WorkerGone);
        };
        if let Some(core) = self.home.take() {
            self.predicted = Predicted::of(&core.history);
            if let Err(std::sync::mpsc::SendError(Msg::Core(core))) = pipe.tx.send(Msg::Core(core)) {
                let _ = self.home.set(core);
                *self.poisoned.borrow_mut() = Some("the capture worker ended".into());
                return Err(Error::WorkerGone);
            }
        }
        let p = &self.predicted;
        if let Some(head) = p.iteration.filter(|&h| iteration <= h) {
            return Err(HistoryError::IterationNotAfterHead { iteration, head }.into());
        }
        let snapshot_err = Error::from;
        let n = rewind_snapshot::page_count(self.page_size, memory.len() as u64).map_err(snapshot_err)?;
        rewind_snapshot::check_globals_after(p.memory_len, p.pages, &p.globals, globals)
            .map_err(snapshot_err)?;
        let indices = rewind_snapshot::candidate_pages(Some(hint), n, p.pages).map_err(snapshot_err)?;
        let page = self.page_size.bytes();
        let need = indices.len() * page;
        let t0 = Instant::now();
        let (in_flight, waited, alive) = pipe.shared.reserve(need, pipe.options.staging_budget);
        let blocked = t0.elapsed();
        if !alive {
            *self.poisoned.borrow_mut() = Some("the capture worker ended".into());
            return Err(Error::WorkerGone);
        }
        let t1 = Instant::now();
        let mut bytes = pipe.shared.buffer();
        bytes.reserve(need);
        // One copy per run of consecutive pages.
        let mut run = indices.iter().copied().peekable();
        while let Some(first) = run.next() {
            let mut last = first;
            while let Some(&next) = run.peek().filter(|&&n| n == last + 1) {
                last = next;
                run.next();
            }
            bytes.extend_from_slice(&memory[first as usize * page..(last as usize + 1) * page]);
        }
        let frame = Frame {
            iteration,
            memory_len: memory.len() as u64,
            indices,
            bytes,
            globals: globals.to_vec(),
            input: input.map(<[u8]>::to_vec),
            host_state: host_state.map(<[u8]>::to_vec),
            shared: pipe.shared.clone(),
        };
        let pages = frame.indices.len() as u64;
        if pipe.tx.send(Msg::Frame(frame)).is_err() {
            *self.poisoned.borrow_mut() = Some("the capture worker ended".into());
            return Err(Error::WorkerGone);
        }
        let copy = t1.elapsed();
        self.count(|s| {
            s.staged += 1;
            s.pages_staged += pages;
            s.copy_time += copy;
            s.max_staged_bytes = s.max_staged_bytes.max(in_flight as u64);
            if waited {
                s.blocked += 1;
                s.blocked_time += blocked;
            }
        });
        let p = &mut self.predicted;
        p.iteration = Some(iteration);
        p.memory_len = memory.len() as u64;
        p.pages = n;
        p.globals.clear();
        p.globals.extend_from_slice(globals);
        let record = RecordId(p.next_record);
        p.next_record += 1;
        Ok(Ticket { iteration, record })
    }

    fn count(&self, f: impl FnOnce(&mut PipelineStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    /// Roll back to `iteration`, writing its pages into `memory` (which must already be
    /// its length) and returning the globals to set. Nothing changes on error. With a
    /// pipeline, waits for the captures in flight first.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.seed(1))?;
    /// let mut mem = vec![0u8; 4 * 4096];
    /// rec.capture(0, &mem, &[], None, None)?;
    /// mem[4096] = 9;
    /// rec.capture(1, &mem, &[], Some(&[1]), None)?;
    /// let back = rec.rollback_to(0, &mut mem, LiveMemory::AtHead)?;
    /// assert_eq!(mem[4096], 0);
    /// assert_eq!(back.iteration, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn rollback_to(
        &mut self,
        iteration: u64,
        memory: &mut [u8],
        live: LiveMemory<'_>,
    ) -> Result<RollbackReport, Error> {
        // After a discarded capture the head is not what memory holds.
        let live = if self.resync.get() {
            LiveMemory::Unknown
        } else {
            live
        };
        let rollback = self.core_mut()?.history.rollback_to(iteration, memory, live)?;
        self.resync.set(false);
        Ok(rollback)
    }

    /// The state hash of `iteration` on the current timeline.
    ///
    /// ```
    /// # fn main() -> Result<(), rewind::Error> {
    /// use rewind::{GlobalValue, Options, Recorder};
    /// let mut rec = Recorder::new(Options::new(4096)?.seed(1))?;
    /// let mut memory = vec![0u8; 4 * 4096];
    /// for frame in 0..10u64 {
    ///     memory[4096 + frame as usize] = frame as u8 + 1;
    ///     rec.capture(frame, &memory, &[GlobalValue::I32(0)], None, None)?;
    /// }
    /// let hash = rec.state_hash(3)?;
    /// assert_eq!(hash.to_string().parse::<rewind::StateHash>(), Ok(hash)); // 32 hex digits
    /// assert!(rec.state_hash(10).is_err()); // never captured
    /// # Ok(())
    /// # }
    /// ```
    pub fn state_hash(&self, iteration: u64) -> Result<StateHash, Error> {
        Ok(self.core()?.history.at(iteration)?.state_hash())
    }

    /// Read bytes of any retained iteration without restoring.
    ///
    /// ```
    /// # fn main() -> Result<(), rewind::Error> {
    /// use rewind::{GlobalValue, Options, Recorder};
    /// let mut rec = Recorder::new(Options::new(4096)?.seed(1))?;
    /// let mut memory = vec![0u8; 4 * 4096];
    /// for frame in 0..10u64 {
    ///     memory[4096 + frame as usize] = frame as u8 + 1;
    ///     rec.capture(frame, &memory, &[GlobalValue::I32(0)], None, None)?;
    /// }
    /// let mut out = [0u8; 4];
    /// rec.read(2, 4096, &mut out)?;
    /// assert_eq!(out, [1, 2, 3, 0]); // iteration 2 had written 3 bytes
    /// # Ok(())
    /// # }
    /// ```
    pub fn read(&self, iteration: u64, addr: u64, out: &mut [u8]) -> Result<(), Error> {
        Ok(self.core()?.history.read(iteration, addr, out)?)
    }

    /// The latest iteration ≤ `iteration` at which bytes `[addr, addr+len)` changed.
    ///
    /// ```
    /// # fn main() -> Result<(), rewind::Error> {
    /// use rewind::{GlobalValue, Options, Recorder};
    /// let mut rec = Recorder::new(Options::new(4096)?.seed(1))?;
    /// let mut memory = vec![0u8; 4 * 4096];
    /// for frame in 0..10u64 {
    ///     memory[4096 + frame as usize] = frame as u8 + 1;
    ///     rec.capture(frame, &memory, &[GlobalValue::I32(0)], None, None)?;
    /// }
    /// let last = rec.blame(9, 4096 + 5, 1)?.map(|b| b.iteration);
    /// assert_eq!(last, Some(5)); // byte 4096+5 was written at frame 5
    /// # Ok(())
    /// # }
    /// ```
    pub fn blame(&self, iteration: u64, addr: u64, len: u64) -> Result<Option<Blame>, Error> {
        Ok(self.core()?.history.blame(iteration, addr, len)?)
    }

    /// Pages that differ between two iterations of the timeline.
    ///
    /// ```
    /// # fn main() -> Result<(), rewind::Error> {
    /// use rewind::{GlobalValue, Options, Recorder};
    /// let mut rec = Recorder::new(Options::new(4096)?.seed(1))?;
    /// let mut memory = vec![0u8; 4 * 4096];
    /// for frame in 0..10u64 {
    ///     memory[4096 + frame as usize] = frame as u8 + 1;
    ///     rec.capture(frame, &memory, &[GlobalValue::I32(0)], None, None)?;
    /// }
    /// assert_eq!(rec.diff(2, 7)?, vec![1]); // only page 1 was written
    /// assert_eq!(rec.diff_bytes(2, 7)?[0].addr, 4096 + 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn diff(&self, a: u64, b: u64) -> Result<Vec<u32>, Error> {
        let history = &self.core()?.history;
        Ok(rewind_snapshot::diff(
            history.at(a)?.snapshot(),
            history.at(b)?.snapshot(),
        ))
    }

    /// Byte ranges that differ between two iterations of the timeline.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.seed(1))?;
    /// let mut mem = vec![0u8; 4 * 4096];
    /// rec.capture(0, &mem, &[], None, None)?;
    /// mem[100..104].copy_from_slice(&[1, 2, 3, 4]);
    /// rec.capture(1, &mem, &[], Some(&[0]), None)?;
    /// let ranges = rec.diff_bytes(0, 1)?;
    /// assert_eq!((ranges[0].addr, ranges[0].len), (100, 4));
    /// # Ok(())
    /// # }
    /// ```
    pub fn diff_bytes(&self, a: u64, b: u64) -> Result<Vec<ByteRange>, Error> {
        let history = &self.core()?.history;
        Ok(rewind_snapshot::diff_bytes(
            history.store(),
            history.at(a)?.snapshot(),
            history.at(b)?.snapshot(),
        )
        .map_err(HistoryError::from)?)
    }

    /// Pin an iteration so GC keeps it.
    ///
    /// ```
    /// # fn main() -> Result<(), rewind::Error> {
    /// use rewind::{GlobalValue, Options, Policy, Recorder};
    /// let mut rec = Recorder::new(Options::new(4096)?.seed(1).policy(Policy::default().keep_last(3)))?;
    /// let memory = vec![0u8; 4096];
    /// rec.capture(0, &memory, &[], None, None)?;
    /// let pinned = rec.pin(0)?; // e.g. a frame a peer reported a desync for
    /// for frame in 1..10 {
    ///     rec.capture(frame, &memory, &[], None, None)?;
    /// }
    /// assert!(rec.state_hash(0).is_ok()); // outside the window, kept by the pin
    /// assert!(rec.state_hash(4).is_err()); // collected
    /// assert!(rec.unpin(pinned));
    /// rec.set_policy(Policy::default().keep_last(2));
    /// rec.collect()?;
    /// assert!(rec.state_hash(0).is_err());
    /// # let _ = GlobalValue::I32(0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn pin(&mut self, iteration: u64) -> Result<RecordId, Error> {
        let core = self.core_mut()?;
        Ok(core.gc.pin(&core.history, iteration)?)
    }

    /// Unpin a record.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?.policy(Policy::default().keep_last(2)))?;
    /// rec.capture(0, &[0u8; 4096], &[], None, None)?;
    /// let pinned = rec.pin(0)?;
    /// for frame in 1..5u64 {
    ///     rec.capture(frame, &[frame as u8; 4096], &[], None, None)?;
    /// }
    /// assert!(rec.state_hash(0).is_ok(), "pinned");
    /// assert!(rec.unpin(pinned));
    /// rec.collect()?;
    /// assert!(rec.state_hash(0).is_err(), "collected once unpinned");
    /// # Ok(())
    /// # }
    /// ```
    pub fn unpin(&mut self, id: RecordId) -> bool {
        self.home_mut().gc.unpin(id)
    }

    /// Change the retention policy (pins are kept).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?)?; // keeps everything
    /// for frame in 0..10u64 {
    ///     rec.capture(frame, &[frame as u8; 4096], &[], None, None)?;
    /// }
    /// // Peers confirmed frame 8: nothing older can be rolled back to.
    /// rec.set_policy(Policy::default().keep_from(8));
    /// rec.collect()?;
    /// assert_eq!(rec.history().len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_policy(&mut self, policy: Policy) {
        self.home_mut().gc.set_policy(policy);
    }

    /// A full collection, budget included.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// let mut rec = Recorder::new(Options::new(4096)?)?;
    /// for frame in 0..10u64 {
    ///     rec.capture(frame, &[frame as u8; 4096], &[], None, None)?;
    /// }
    /// rec.set_policy(Policy::default().keep_last(4));
    /// let report = rec.collect()?;
    /// assert_eq!(report.removed.records, 6);
    /// # Ok(())
    /// # }
    /// ```
    pub fn collect(&mut self) -> Result<GcReport, Error> {
        let core = self.core_mut()?;
        core.last_gc = core.gc.collect(&mut core.history)?;
        Ok(core.last_gc)
    }
}

impl Drop for Recorder {
    /// Finishes the captures in flight (they are recorded and reach the archive), then
    /// ends the worker.
    fn drop(&mut self) {
        if let Some(Pipe { tx, worker, .. }) = self.pipe.take() {
            drop(tx);
            if let Some(w) = worker {
                let _ = w.join();
            }
        }
    }
}
