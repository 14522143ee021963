//! rewind keeps the history of a WebAssembly guest's state — linear memory pages, the
//! memory length and every global — one snapshot per iteration, the way git keeps the
//! history of a tree: content-addressed (xxh3-128), deduplicated, delta-compressed,
//! garbage-collected.
//!
//! [`Recorder`] is the API most users need: record every frame, roll back when a late
//! input arrives, compare state hashes with peers, read any retained iteration's bytes
//! without restoring it, and ask when bytes last changed.
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

pub use rewind_gc::{Abandoned, Collector, GcError, GcReport, Policy};
pub use rewind_history::{
    Blame, CaptureReport, History, HistoryConfig, HistoryError, LiveMemory, Record, RecordId, Removed,
    Rollback,
};
pub use rewind_snapshot::{ByteRange, GlobalType, GlobalValue, Restored, Snapshot, SnapshotError, StateHash};
pub use rewind_store::{PageHash, PageSize, StoreConfig, StoreError, StoreStats};

/// Re-exports of the layers, for users who need more than the facade.
pub mod layers {
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
}

/// How a [`Recorder`] is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// History configuration (page size, seed, delta chain bound).
    pub history: HistoryConfig,
    /// Retention policy applied after every recorded iteration.
    pub policy: Policy,
}

impl Options {
    /// Options for a page size (a power of two from 1 KiB to 64 KiB); keeps everything.
    pub fn new(page_size: u64) -> Result<Self, Error> {
        Ok(Options {
            history: HistoryConfig::new(page_size)?,
            policy: Policy::default(),
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
}

/// A history with its garbage collector: the everyday API.
pub struct Recorder {
    history: History,
    gc: Collector,
    last_gc: GcReport,
}

impl Recorder {
    /// An empty recorder.
    pub fn new(options: Options) -> Result<Self, Error> {
        Ok(Recorder {
            history: History::new(options.history)?,
            gc: Collector::new(options.policy),
            last_gc: GcReport::default(),
        })
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

    /// Record the guest state of `iteration`, then run one incremental GC step.
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
