//! The append-only history of a guest: one record per captured iteration.
//!
//! Records are numbered by a monotonic [`RecordId`] that is never reused; each names its
//! iteration, its parent record and its snapshot. [`History::set_head`] moves the head
//! back along the current timeline; the next capture starts a new branch from there and
//! the superseded records stay readable (as abandoned branches) until they are removed.
//!
//! ```
//! use rewind_history::{History, HistoryConfig, LiveMemory};
//! use rewind_snapshot::GlobalValue;
//!
//! # fn main() -> Result<(), rewind_history::HistoryError> {
//! let mut history = History::new(HistoryConfig::new(1024)?.seed(5))?;
//! let mut memory = vec![0u8; 4096];
//! for frame in 0..10u64 {
//!     memory[100] = frame as u8;
//!     history.capture(frame, &memory, &[GlobalValue::I64(frame as i64)], None, None)?;
//! }
//! // A late input: go back to frame 6 and re-simulate from there.
//! let back = history.rollback_to(6, &mut memory, LiveMemory::AtHead)?;
//! assert_eq!(memory[100], 6);
//! assert_eq!(back.globals, vec![GlobalValue::I64(6)]);
//! memory[100] = 99;
//! history.capture(7, &memory, &[GlobalValue::I64(7)], None, None)?;
//! assert_eq!(history.abandoned().count(), 3); // frames 7, 8, 9 of the old branch
//! assert_eq!(history.blame(7, 100, 1)?.map(|b| b.iteration), Some(7));
//! assert_eq!(history.blame(6, 100, 1)?.map(|b| b.iteration), Some(6));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod lineage;
mod parts;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rewind_snapshot::{
    capture, capture_staged, Captured, GlobalValue, Live, RestoreReport, Snapshot, SnapshotError,
    StagedPages, StateHash,
};
use rewind_store::{InputHash, PageHash, PageSize, PageStore, StoreConfig, StoreError, StoreStats};

pub use lineage::Lineage;

/// The number of a record: monotonic, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(pub u64);

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// Errors of the history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// From snapshots (bad memory length, hint, globals, reads out of bounds).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// From the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An iteration that the current timeline does not hold (never captured, rolled
    /// back over, or collected).
    #[error("iteration {iteration} is not retained on the current timeline{}", range_note(*.oldest, *.newest))]
    NotRetained {
        /// The iteration asked for.
        iteration: u64,
        /// The oldest retained iteration on the timeline.
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
}

/// A broken invariant found by [`History::check`]: a bug in rewind or memory
/// corruption, never a user error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Inconsistency {
    /// A stored object's reference count differs from what the records own.
    #[error("page {hash}: {found} references, records own {owned}")]
    RefCount {
        /// The object.
        hash: PageHash,
        /// Its reference count in the store.
        found: u32,
        /// References the records own.
        owned: u32,
    },
    /// The store holds objects no record references, or misses some.
    #[error("store holds {stored} objects, records reference {referenced}")]
    ObjectCount {
        /// Objects in the store.
        stored: usize,
        /// Distinct objects the records reference.
        referenced: usize,
    },
    /// An object that does not rebuild to its hash.
    #[error("object {0} does not rebuild to its hash")]
    Corrupt(PageHash),
    /// The running byte counters differ from a recount.
    #[error("running counters drifted: metadata {meta} vs {meta_recounted}, inputs {inputs} vs {inputs_recounted}")]
    Counters {
        /// Metadata bytes counted as the history changed.
        meta: u64,
        /// Recounted.
        meta_recounted: u64,
        /// Input bytes counted as the history changed.
        inputs: u64,
        /// Recounted.
        inputs_recounted: u64,
    },
    /// The index of abandoned records does not match the timeline.
    #[error("the abandoned set does not match the timeline")]
    Abandoned,
    /// A blob (input or host state) whose reference count differs from the records
    /// naming it, or that a record names but the history does not hold (`found` 0).
    #[error("blob {hash}: {found} references, records name it {owned} times")]
    BlobRefs {
        /// The blob.
        hash: InputHash,
        /// Its reference count (0 when it is missing).
        found: u32,
        /// Records naming it, as input or host state.
        owned: u32,
    },
}

fn range_note(oldest: Option<u64>, newest: Option<u64>) -> String {
    match (oldest, newest) {
        (Some(a), Some(b)) => format!(" (it holds {a}..={b})"),
        _ => " (it is empty)".to_string(),
    }
}

/// How a history is set up.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    /// The page store's configuration (page size, seed, delta chain bound, compression).
    pub store: StoreConfig,
}

impl HistoryConfig {
    /// A configuration for a page size (checked: a power of two from 1 KiB to 64 KiB).
    pub fn new(page_size: u64) -> Result<Self, HistoryError> {
        Ok(HistoryConfig {
            store: StoreConfig::new(PageSize::new(page_size)?),
        })
    }

    /// Use this hash seed (peers comparing state hashes must share it).
    pub fn seed(mut self, seed: u64) -> Self {
        self.store.seed = Some(seed);
        self
    }

    /// Bound delta chains to this depth.
    pub fn max_chain(mut self, depth: u8) -> Self {
        self.store.max_chain = depth;
        self
    }

    /// Frames a replaced page stays whole before it becomes a delta
    /// ([`StoreConfig::delta_after`]).
    pub fn delta_after(mut self, frames: u64) -> Self {
        self.store.delta_after = frames;
        self
    }

    /// Frames of progress a replaced page is held whole and raw, so that a rollback
    /// of up to this many frames writes back copies ([`StoreConfig::rollback_window`],
    /// default 10, at most `delta_after`).
    pub fn rollback_window(mut self, frames: u64) -> Self {
        self.store.rollback_window = frames;
        self
    }

    /// Frames a raw page waits before it is compressed, and the most pages one GC step
    /// compresses ([`StoreConfig::compress_after`], [`StoreConfig::compress_budget`]).
    pub fn compression(mut self, after_frames: u64, budget: usize) -> Self {
        self.store.compress_after = after_frames;
        self.store.compress_budget = budget;
        self
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            store: StoreConfig::new(PageSize::DEFAULT),
        }
    }
}

/// One captured iteration.
#[derive(Clone, Debug)]
pub struct Record {
    id: RecordId,
    iteration: u64,
    parent: Option<RecordId>,
    children: Vec<RecordId>,
    snapshot: Snapshot,
    /// Pages this record set relative to its parent, by index. Together with the
    /// snapshots of root records these are the store references the history owns.
    changes: Vec<(u32, PageHash)>,
    input: Option<InputHash>,
    /// The host state recorded with this iteration (a blob in the same table as inputs).
    host: Option<InputHash>,
    pages_changed: u32,
    bytes_stored: u64,
}

impl Record {
    /// The record number.
    pub fn id(&self) -> RecordId {
        self.id
    }
    /// The guest's iteration (frame, tick, step).
    pub fn iteration(&self) -> u64 {
        self.iteration
    }
    /// The record this one was captured after (`None` for a root: the first record, or
    /// one whose parent was removed).
    pub fn parent(&self) -> Option<RecordId> {
        self.parent
    }
    /// Records captured after this one (more than one at a branch point).
    pub fn children(&self) -> &[RecordId] {
        &self.children
    }
    /// The guest state.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
    /// The state hash.
    pub fn state_hash(&self) -> StateHash {
        self.snapshot.state_hash()
    }
    /// The hash of the input recorded with this iteration.
    pub fn input_hash(&self) -> Option<InputHash> {
        self.input
    }
    /// The hash of the host state recorded with this iteration
    /// ([`History::set_host_state`]).
    pub fn host_state_hash(&self) -> Option<InputHash> {
        self.host
    }
    /// Pages that changed at capture.
    pub fn pages_changed(&self) -> u32 {
        self.pages_changed
    }
    /// New bytes the store took at capture.
    pub fn bytes_stored(&self) -> u64 {
        self.bytes_stored
    }
    /// The pages set relative to the parent record, by index (after removals of
    /// records in between, the union of their changes).
    pub fn changes(&self) -> &[(u32, PageHash)] {
        &self.changes
    }
}

/// What [`History::capture`] did.
#[derive(Clone, Copy, Debug)]
pub struct CaptureReport {
    /// The new record.
    pub record: RecordId,
    /// Its state hash.
    pub state_hash: StateHash,
    /// Pages hashed.
    pub pages_hashed: usize,
    /// Pages that changed.
    pub pages_changed: usize,
    /// Of those, pages already stored (dedup).
    pub dedup: usize,
    /// New bytes stored.
    pub bytes_stored: u64,
}

/// What is known about live memory when restoring.
#[derive(Clone, Copy, Debug)]
pub enum LiveMemory<'a> {
    /// Memory holds exactly the head record's state (nothing ran since the last capture
    /// or restore).
    AtHead,
    /// Memory holds the head's state except these pages, which may have been written
    /// (e.g. the kernel's dirty list since the last capture).
    WrittenSinceHead(&'a [u32]),
    /// Unknown: every page is hashed and compared.
    Unknown,
}

/// What a rollback restored.
#[derive(Clone, Debug)]
pub struct RollbackReport {
    /// The record now at the head.
    pub record: RecordId,
    /// Its iteration.
    pub iteration: u64,
    /// Its state hash.
    pub state_hash: StateHash,
    /// The globals to set in the guest.
    pub globals: Vec<GlobalValue>,
    /// What was written to memory.
    pub restored: RestoreReport,
}

/// Where a byte range last changed, from [`History::blame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blame {
    /// The record at which the bytes took the value they have at the asked iteration.
    pub record: RecordId,
    /// Its iteration.
    pub iteration: u64,
    /// True when this is the oldest retained record: the bytes may have changed earlier.
    pub at_oldest: bool,
}

/// What removing records freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoveReport {
    /// Records removed.
    pub records: u64,
    /// Store objects freed.
    pub objects: u64,
    /// Store bytes freed (net of compaction).
    pub bytes: u64,
    /// Deltas compacted because their parent was freed.
    pub compacted: u64,
    /// Blobs freed: inputs and host states (they share one content-addressed table).
    pub inputs: u64,
}

impl std::ops::AddAssign for RemoveReport {
    fn add_assign(&mut self, o: RemoveReport) {
        self.records += o.records;
        self.objects += o.objects;
        self.bytes += o.bytes;
        self.compacted += o.compacted;
        self.inputs += o.inputs;
    }
}

struct Blob {
    bytes: Box<[u8]>,
    refs: u32,
}

/// The history of one guest.
pub struct History {
    store: PageStore,
    records: BTreeMap<RecordId, Record>,
    /// The current timeline: iteration → record, from the oldest retained to the head.
    timeline: BTreeMap<u64, RecordId>,
    head: Option<RecordId>,
    next_id: u64,
    inputs: HashMap<InputHash, Blob>,
    /// Records off the current timeline, by number (oldest first for GC).
    abandoned: BTreeSet<RecordId>,
    /// The same records by (iteration, number), for dropping branches behind a window.
    abandoned_by_iteration: BTreeSet<(u64, RecordId)>,
    /// Running estimate of record metadata bytes (see [`History::resident_bytes`]).
    meta_bytes: u64,
    /// Bytes of input blobs held.
    input_bytes: u64,
    /// The furthest iteration ever captured: only a capture past it counts a frame of
    /// the page store ([`PageStore::advance_frame`]).
    furthest: Option<u64>,
}

fn meta_bytes(changes: usize, globals: usize) -> u64 {
    128 + 20 * changes as u64 + 16 * globals as u64
}

impl History {
    /// An empty history.
    pub fn new(config: HistoryConfig) -> Result<Self, HistoryError> {
        let mut store = PageStore::new(config.store);
        // Pages dropped with an abandoned branch wait for the next frame of progress:
        // the re-simulated captures that follow a rollback mostly write them again.
        store.set_deferred_frees(true);
        Ok(History {
            store,
            records: BTreeMap::new(),
            timeline: BTreeMap::new(),
            head: None,
            next_id: 0,
            inputs: HashMap::new(),
            abandoned: BTreeSet::new(),
            abandoned_by_iteration: BTreeSet::new(),
            meta_bytes: 0,
            input_bytes: 0,
            furthest: None,
        })
    }

    /// Recompute the running counters and the abandoned set from scratch.
    fn recount(&mut self) {
        self.meta_bytes = self
            .records
            .values()
            .map(|r| meta_bytes(r.changes.len(), r.snapshot.globals().len()))
            .sum();
        self.input_bytes = self.inputs.values().map(|b| b.bytes.len() as u64).sum();
        self.abandoned_by_iteration = self
            .records
            .values()
            .filter(|r| self.timeline.get(&r.iteration) != Some(&r.id))
            .map(|r| (r.iteration, r.id))
            .collect();
        self.abandoned = self.abandoned_by_iteration.iter().map(|e| e.1).collect();
    }

    /// The page store.
    pub fn store(&self) -> &PageStore {
        &self.store
    }

    /// The page size.
    pub fn page_size(&self) -> PageSize {
        self.store.page_size()
    }

    /// Store counters.
    pub fn store_stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// The record number the next capture will get.
    pub fn next_record_id(&self) -> RecordId {
        RecordId(self.next_id)
    }

    /// The head record: the state the live guest was last captured or restored at.
    pub fn head(&self) -> Option<&Record> {
        self.head.and_then(|id| self.records.get(&id))
    }

    /// A record by number.
    pub fn record(&self, id: RecordId) -> Option<&Record> {
        self.records.get(&id)
    }

    /// Every retained record, by record number.
    pub fn records(&self) -> impl DoubleEndedIterator<Item = &Record> + '_ {
        self.records.values()
    }

    /// Number of retained records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record is retained.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The current timeline from its oldest retained record to the head.
    pub fn timeline(&self) -> impl DoubleEndedIterator<Item = &Record> + '_ {
        self.timeline.values().filter_map(|id| self.records.get(id))
    }

    /// Number of records on the current timeline.
    pub fn timeline_len(&self) -> usize {
        self.timeline.len()
    }

    /// Records not on the current timeline (superseded by a rollback), oldest first.
    pub fn abandoned(&self) -> impl Iterator<Item = &Record> + '_ {
        self.abandoned.iter().filter_map(|id| self.records.get(id))
    }

    /// Abandoned records of an iteration below `iteration`, by increasing iteration:
    /// what a retention window that starts at `iteration` leaves behind. Costs
    /// O(log n + what it yields).
    pub fn abandoned_before(&self, iteration: u64) -> impl Iterator<Item = &Record> + '_ {
        self.abandoned_by_iteration
            .range(..(iteration, RecordId(0)))
            .filter_map(|e| self.records.get(&e.1))
    }

    /// True when the record is on the current timeline.
    pub fn on_timeline(&self, id: RecordId) -> bool {
        self.records
            .get(&id)
            .is_some_and(|r| self.timeline.get(&r.iteration) == Some(&id))
    }

    fn not_retained(&self, iteration: u64) -> HistoryError {
        HistoryError::NotRetained {
            iteration,
            oldest: self.timeline.keys().next().copied(),
            newest: self.timeline.keys().next_back().copied(),
        }
    }

    /// The record of `iteration` on the current timeline.
    pub fn at(&self, iteration: u64) -> Result<&Record, HistoryError> {
        self.timeline
            .get(&iteration)
            .and_then(|id| self.records.get(id))
            .ok_or_else(|| self.not_retained(iteration))
    }

    /// The input blob recorded with a record.
    pub fn input(&self, id: RecordId) -> Option<&[u8]> {
        let h = self.records.get(&id)?.input?;
        self.inputs.get(&h).map(|b| &*b.bytes)
    }

    /// The host state recorded with a record ([`History::set_host_state`]).
    pub fn host_state(&self, id: RecordId) -> Option<&[u8]> {
        let h = self.records.get(&id)?.host?;
        self.inputs.get(&h).map(|b| &*b.bytes)
    }

    /// Record `bytes` as the host state of record `id` (a guest's host-side state: a
    /// clock, a random generator, file positions), right after its capture. Stored
    /// content-addressed in the table of input blobs, so equal states (consecutive
    /// iterations that did not change it) share one copy; freed with the last record
    /// naming it. Replaces a host state the record had.
    pub fn set_host_state(&mut self, id: RecordId, bytes: &[u8]) -> Result<InputHash, HistoryError> {
        if !self.records.contains_key(&id) {
            return Err(HistoryError::NoSuchRecord(id));
        }
        let h = self.retain_blob(bytes);
        let old = self.records.get_mut(&id).and_then(|r| r.host.replace(h));
        if let Some(old) = old {
            self.release_blob(old);
        }
        Ok(h)
    }

    /// Take a reference to the blob of `bytes`, storing it if new; its hash.
    fn retain_blob(&mut self, bytes: &[u8]) -> InputHash {
        let h = self.store.hasher().input(bytes);
        let input_bytes = &mut self.input_bytes;
        self.inputs
            .entry(h)
            .or_insert_with(|| {
                *input_bytes += bytes.len() as u64;
                Blob {
                    bytes: bytes.into(),
                    refs: 0,
                }
            })
            .refs += 1;
        h
    }

    /// Drop a reference to a blob; true when that freed it.
    fn release_blob(&mut self, h: InputHash) -> bool {
        let Some(b) = self.inputs.get_mut(&h) else {
            return false;
        };
        b.refs = b.refs.saturating_sub(1);
        if b.refs > 0 {
            return false;
        }
        self.input_bytes -= b.bytes.len() as u64;
        self.inputs.remove(&h);
        true
    }

    /// Capture the guest state of `iteration` after the head.
    ///
    /// `hint` names pages that may have changed since the head was captured or restored
    /// (`None`: hash all). `input` is stored content-addressed with the record. On
    /// error the history is unchanged.
    pub fn capture(
        &mut self,
        iteration: u64,
        memory: &[u8],
        globals: &[GlobalValue],
        hint: Option<&[u32]>,
        input: Option<&[u8]>,
    ) -> Result<CaptureReport, HistoryError> {
        self.capture_with(iteration, input, |store, prev| {
            capture(store, prev, memory, globals, hint)
        })
    }

    /// [`History::capture`] from pages copied out of live memory earlier (see
    /// [`rewind_snapshot::capture_staged`]): the same record, snapshot and store contents
    /// as `capture` of the memory they were copied from, with the same hint.
    pub fn capture_staged(
        &mut self,
        iteration: u64,
        staged: StagedPages<'_>,
        globals: &[GlobalValue],
        input: Option<&[u8]>,
    ) -> Result<CaptureReport, HistoryError> {
        self.capture_with(iteration, input, |store, prev| {
            capture_staged(store, prev, staged, globals)
        })
    }

    fn capture_with(
        &mut self,
        iteration: u64,
        input: Option<&[u8]>,
        capture: impl FnOnce(&mut PageStore, Option<&Snapshot>) -> Result<Captured, SnapshotError>,
    ) -> Result<CaptureReport, HistoryError> {
        if let Some(head) = self.head() {
            if iteration <= head.iteration {
                return Err(HistoryError::IterationNotAfterHead {
                    iteration,
                    head: head.iteration,
                });
            }
        }
        let before = self.store.stats();
        let prev = self.head().map(|r| r.snapshot.clone());
        let captured = capture(&mut self.store, prev.as_ref())?;
        // Counted before the frame advances: the deltas it makes of older pages are
        // not this capture's bytes.
        let after = self.store.stats();
        // Pages age by frames of progress: a re-simulated capture after a rollback does
        // not age them, so the pages of a rollback window stay whole and raw however
        // often it is re-simulated (restoring them is a copy), and the abandoned
        // branches a rollback game drops every frame cost no delta or compression.
        if self.furthest.is_none_or(|f| iteration > f) {
            self.store.advance_frame();
            self.furthest = Some(iteration);
        }
        let id = RecordId(self.next_id);
        self.next_id += 1;
        let changes: Vec<(u32, PageHash)> = {
            let mut c: Vec<(u32, PageHash)> = captured.changes.iter().map(|c| (c.index, c.new)).collect();
            c.sort_unstable_by_key(|e| e.0);
            c
        };
        let input = input.map(|bytes| self.retain_blob(bytes));
        let report = CaptureReport {
            record: id,
            state_hash: captured.snapshot.state_hash(),
            pages_hashed: captured.pages_hashed,
            pages_changed: captured.changes.len(),
            dedup: (after.dedup_hits - before.dedup_hits) as usize,
            bytes_stored: after.stored_bytes.saturating_sub(before.stored_bytes),
        };
        let record = Record {
            id,
            iteration,
            parent: self.head,
            children: Vec::new(),
            snapshot: captured.snapshot,
            changes,
            input,
            host: None,
            pages_changed: captured.changes.len() as u32,
            bytes_stored: report.bytes_stored,
        };
        if let Some(p) = self.head.and_then(|h| self.records.get_mut(&h)) {
            p.children.push(id);
        }
        self.meta_bytes += meta_bytes(record.changes.len(), record.snapshot.globals().len());
        self.records.insert(id, record);
        self.timeline.insert(iteration, id);
        self.head = Some(id);
        Ok(report)
    }

    /// Move the head back to `iteration` on the current timeline. Later records leave the
    /// timeline (they stay readable as an abandoned branch); the next capture branches
    /// from here. Live memory is not touched: see [`History::rollback_to`].
    pub fn set_head(&mut self, iteration: u64) -> Result<&Record, HistoryError> {
        let id = self.at(iteration)?.id;
        let cut = self.timeline.split_off(&(iteration + 1));
        self.abandoned.extend(cut.values().copied());
        self.abandoned_by_iteration.extend(cut);
        self.head = Some(id);
        self.at(iteration)
    }

    /// Make any retained record the head, switching to its branch: the timeline becomes
    /// the chain of its retained ancestors.
    pub fn checkout(&mut self, id: RecordId) -> Result<&Record, HistoryError> {
        if !self.records.contains_key(&id) {
            return Err(HistoryError::NoSuchRecord(id));
        }
        let mut timeline = BTreeMap::new();
        let mut cur = Some(id);
        while let Some(c) = cur {
            let Some(r) = self.records.get(&c) else { break };
            timeline.insert(r.iteration, c);
            cur = r.parent;
        }
        self.timeline = timeline;
        self.head = Some(id);
        self.recount();
        self.records.get(&id).ok_or(HistoryError::NoSuchRecord(id))
    }

    /// Roll back to `iteration` and write its state into `memory` (only the pages that
    /// differ). `memory` must be the target's length already. On any error the head does
    /// not move; `memory` is untouched unless a stored object fails to decode part way
    /// (see [`rewind_snapshot::restore`]).
    pub fn rollback_to(
        &mut self,
        iteration: u64,
        memory: &mut [u8],
        live: LiveMemory<'_>,
    ) -> Result<RollbackReport, HistoryError> {
        let target = self.at(iteration)?.id;
        let restored = self.restore(target, memory, live)?;
        let r = self.set_head(iteration)?;
        Ok(RollbackReport {
            record: r.id,
            iteration: r.iteration,
            state_hash: r.state_hash(),
            globals: r.snapshot.globals().to_vec(),
            restored,
        })
    }

    /// Write record `id`'s pages into `memory`, given what is known of it. The head does
    /// not move.
    pub fn restore(
        &self,
        id: RecordId,
        memory: &mut [u8],
        live: LiveMemory<'_>,
    ) -> Result<RestoreReport, HistoryError> {
        let target = &self
            .records
            .get(&id)
            .ok_or(HistoryError::NoSuchRecord(id))?
            .snapshot;
        let live = match (live, self.head()) {
            (LiveMemory::AtHead, Some(h)) => Live::Exact(&h.snapshot),
            (LiveMemory::WrittenSinceHead(d), Some(h)) => Live::Dirty(&h.snapshot, d),
            _ => Live::Unknown,
        };
        Ok(rewind_snapshot::restore(&self.store, memory, live, target)?)
    }

    /// Read bytes at `addr` of `iteration` on the current timeline, without restoring.
    pub fn read(&self, iteration: u64, addr: u64, out: &mut [u8]) -> Result<(), HistoryError> {
        let r = self.at(iteration)?;
        Ok(rewind_snapshot::read(&self.store, &r.snapshot, addr, out)?)
    }

    /// The latest iteration ≤ `iteration` on the current timeline at which any byte of
    /// `[addr, addr + len)` changed (a reverse watchpoint). `None` when the bytes are
    /// the same in every retained record up to `iteration` and are all zero.
    ///
    /// Walks back record by record, but compares bytes only at records whose change
    /// list touches the range's pages.
    pub fn blame(&self, iteration: u64, addr: u64, len: u64) -> Result<Option<Blame>, HistoryError> {
        lineage::blame(self, self.at(iteration)?, addr, len)
    }

    /// Remove a record, keeping every other record readable: its children are re-parented
    /// onto its parent (inheriting its page changes), or become roots. Pages and inputs
    /// that only it referenced are freed. The head cannot be removed.
    pub fn remove(&mut self, id: RecordId) -> Result<RemoveReport, HistoryError> {
        if self.head == Some(id) {
            return Err(HistoryError::HeadNotRemovable(id));
        }
        let Some(rec) = self.records.remove(&id) else {
            return Err(HistoryError::NoSuchRecord(id));
        };
        let mut removed = RemoveReport {
            records: 1,
            ..RemoveReport::default()
        };
        let store_before = self.store.stats();
        if self.timeline.get(&rec.iteration) == Some(&id) {
            self.timeline.remove(&rec.iteration);
        }
        self.abandoned.remove(&id);
        self.abandoned_by_iteration.remove(&(rec.iteration, id));
        self.meta_bytes -= meta_bytes(rec.changes.len(), rec.snapshot.globals().len());
        match rec.parent {
            None => {
                // A root owns every page of its snapshot. Its children become roots. Take
                // the extra references for further children before the first child's
                // releases, so no shared page drops to zero in between.
                for &c in rec.children.iter().skip(1) {
                    let Some(child) = self.records.get_mut(&c) else {
                        continue;
                    };
                    child.parent = None;
                    let changed: Vec<u32> = child.changes.iter().map(|c| c.0).collect();
                    let pages: Vec<PageHash> = child.snapshot.pages().iter().copied().collect();
                    for (i, h) in pages.into_iter().enumerate() {
                        if changed.binary_search(&(i as u32)).is_err() {
                            self.store.retain(h)?;
                        }
                    }
                }
                if let Some(child) = rec.children.first().and_then(|c| self.records.get_mut(c)) {
                    child.parent = None;
                    // This child takes over the root's pages: release the ones it replaced.
                    let replaced: Vec<u32> = child.changes.iter().map(|c| c.0).collect();
                    for i in replaced {
                        self.store.release(rec.snapshot.page(i as usize))?;
                    }
                } else {
                    for h in rec.snapshot.pages().iter() {
                        self.store.release(*h)?;
                    }
                }
            }
            Some(p) => {
                // Children inherit this record's changes (theirs win) and move to the parent.
                for &c in &rec.children {
                    let Some(child) = self.records.get_mut(&c) else {
                        continue;
                    };
                    child.parent = Some(p);
                    let merged = merge_changes(&rec.changes, &child.changes);
                    self.meta_bytes += 20 * (merged.len() - child.changes.len()) as u64;
                    for &(i, h) in &rec.changes {
                        if child.changes.binary_search_by_key(&i, |e| e.0).is_err() {
                            self.store.retain(h)?;
                        }
                    }
                    child.changes = merged;
                }
                for &(_, h) in &rec.changes {
                    self.store.release(h)?;
                }
                if let Some(parent) = self.records.get_mut(&p) {
                    parent.children.retain(|c| *c != id);
                    parent.children.extend(rec.children.iter().copied());
                }
            }
        }
        for h in rec.input.into_iter().chain(rec.host) {
            if self.release_blob(h) {
                removed.inputs += 1;
            }
        }
        let after = self.store.stats();
        removed.objects = after.freed_objects - store_before.freed_objects;
        removed.bytes = store_before.stored_bytes.saturating_sub(after.stored_bytes);
        removed.compacted = (after.compacted_full + after.compacted_rebased)
            - (store_before.compacted_full + store_before.compacted_rebased);
        Ok(removed)
    }

    /// Store upkeep, once per iteration: compress a bounded number of raw pages that
    /// aged without being replaced (see `StoreConfig::compress_budget`). Returns the
    /// pages examined.
    pub fn maintain(&mut self) -> usize {
        self.store.compress_aged()
    }

    /// Let the store's compression budget follow the rate pages are stored at
    /// (`PageStore::set_compress_follows_rate`).
    pub fn set_compress_follows_rate(&mut self, on: bool) {
        self.store.set_compress_follows_rate(on);
    }

    /// Free the pages released since the last frame of progress and compress every
    /// raw page that has aged, with no per-call limit.
    pub fn maintain_all(&mut self) -> usize {
        self.store.free_retired();
        self.store.compress_all_aged()
    }

    /// Bytes held by the history: stored page objects, input blobs, and an estimate of
    /// record and snapshot metadata.
    ///
    /// O(1): kept as running counters. Not counted: the `imbl` vector and Merkle nodes
    /// the snapshots share and path-copy, and allocator overhead. Where the comparison
    /// harness could measure it from a fresh heap (the first workload of a run), the
    /// process RSS grew 10–21 % more than this figure (`docs/benchmarks.md`).
    pub fn resident_bytes(&self) -> u64 {
        let store = self.store.stats();
        store.stored_bytes + store.objects as u64 * 48 + self.input_bytes + self.meta_bytes
    }

    /// Check the history's invariants: every stored object's hash and reference count
    /// agrees with what the records own, every object rebuilds to its hash, the
    /// running counters and the abandoned index agree with a recount. Returns the
    /// first problem found.
    pub fn check(&self) -> Result<(), Inconsistency> {
        let mut expected: HashMap<PageHash, u32> = HashMap::new();
        for r in self.records.values() {
            if r.parent.is_none() {
                for h in r.snapshot.pages().iter().filter(|h| !h.is_zero()) {
                    *expected.entry(*h).or_default() += 1;
                }
            } else {
                for (_, h) in r.changes.iter().filter(|c| !c.1.is_zero()) {
                    *expected.entry(*h).or_default() += 1;
                }
            }
        }
        for (h, n) in &expected {
            if self.store.refs(*h) != *n {
                return Err(Inconsistency::RefCount {
                    hash: *h,
                    found: self.store.refs(*h),
                    owned: *n,
                });
            }
        }
        let stored = self.store.iter().count();
        if stored != expected.len() {
            return Err(Inconsistency::ObjectCount {
                stored,
                referenced: expected.len(),
            });
        }
        if let Some(h) = self.store.verify().first() {
            return Err(Inconsistency::Corrupt(*h));
        }
        let meta: u64 = self
            .records
            .values()
            .map(|r| meta_bytes(r.changes.len(), r.snapshot.globals().len()))
            .sum();
        let inputs: u64 = self.inputs.values().map(|b| b.bytes.len() as u64).sum();
        if meta != self.meta_bytes || inputs != self.input_bytes {
            return Err(Inconsistency::Counters {
                meta: self.meta_bytes,
                meta_recounted: meta,
                inputs: self.input_bytes,
                inputs_recounted: inputs,
            });
        }
        let mut named: HashMap<InputHash, u32> = HashMap::new();
        for r in self.records.values() {
            for h in r.input.into_iter().chain(r.host) {
                *named.entry(h).or_default() += 1;
            }
        }
        for (h, b) in &self.inputs {
            let owned = named.get(h).copied().unwrap_or(0);
            if b.refs != owned {
                return Err(Inconsistency::BlobRefs {
                    hash: *h,
                    found: b.refs,
                    owned,
                });
            }
        }
        if let Some((h, n)) = named.iter().find(|(h, _)| !self.inputs.contains_key(h)) {
            return Err(Inconsistency::BlobRefs {
                hash: *h,
                found: 0,
                owned: *n,
            });
        }
        let abandoned: BTreeSet<RecordId> = self
            .records
            .values()
            .filter(|r| self.timeline.get(&r.iteration) != Some(&r.id))
            .map(|r| r.id)
            .collect();
        if abandoned != self.abandoned
            || abandoned.len() != self.abandoned_by_iteration.len()
            || self
                .abandoned_by_iteration
                .iter()
                .any(|&(it, id)| self.records.get(&id).map(|r| r.iteration) != Some(it))
        {
            return Err(Inconsistency::Abandoned);
        }
        Ok(())
    }
}

fn merge_changes(older: &[(u32, PageHash)], newer: &[(u32, PageHash)]) -> Vec<(u32, PageHash)> {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut i, mut j) = (0, 0);
    while i < older.len() || j < newer.len() {
        match (older.get(i), newer.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                out.push(*b);
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                out.push(*a);
                i += 1;
            }
            (Some(_), Some(b)) => {
                out.push(*b);
                j += 1;
            }
            (Some(a), None) => {
                out.push(*a);
                i += 1;
            }
            (None, Some(b)) => {
                out.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Blame walks the records in memory: change lists are the records' own, bytes are read
/// from the store, and a parent that was removed ends the walk.
impl Lineage for History {
    type Record<'a> = &'a Record;
    type Error = HistoryError;

    fn page_size(&self) -> u64 {
        History::page_size(self).bytes() as u64
    }
    fn id(&self, record: &&Record) -> RecordId {
        record.id
    }
    fn iteration(&self, record: &&Record) -> u64 {
        record.iteration
    }
    fn memory_len(&self, record: &&Record) -> u64 {
        record.snapshot.memory_len()
    }
    fn parent<'a>(&'a self, record: &&'a Record) -> Result<Option<&'a Record>, HistoryError> {
        Ok(record.parent.and_then(|p| self.records.get(&p)))
    }
    fn changes_touch(
        &self,
        record: &&Record,
        pages: std::ops::RangeInclusive<u32>,
    ) -> Result<bool, HistoryError> {
        let i = record.changes.partition_point(|c| c.0 < *pages.start());
        Ok(record.changes.get(i).is_some_and(|c| c.0 <= *pages.end()))
    }
    fn read(&self, record: &&Record, addr: u64, out: &mut [u8]) -> Result<(), HistoryError> {
        Ok(rewind_snapshot::read(&self.store, &record.snapshot, addr, out)?)
    }
    fn out_of_bounds(&self, addr: u64, len: u64, memory_len: u64) -> HistoryError {
        SnapshotError::OutOfBounds {
            addr,
            len,
            memory_len,
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_store::{Encoding, ObjectRef};

    fn history(frames: u64) -> History {
        let config = HistoryConfig::new(1024).expect("page size").seed(5);
        let mut h = History::new(config).expect("history");
        let mut memory = vec![0u8; 4096];
        for frame in 0..frames {
            memory[(frame as usize * 700) % 4096] = frame as u8 + 1;
            h.capture(frame, &memory, &[], None, Some(&[frame as u8]))
                .expect("capture");
        }
        h
    }

    /// A page of a repeating pattern (lz4 compresses it), distinct per `tag`.
    fn compressible(tag: u64) -> Vec<u8> {
        let pattern = tag.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
        (0..1024).map(|i| pattern[(i / 16) % 8]).collect()
    }

    #[test]
    fn re_simulated_captures_do_not_age_pages() {
        // Pages are compressed 3 frames after they are stored, deltas are never made.
        let config = HistoryConfig::new(1024)
            .expect("page size")
            .seed(5)
            .delta_after(u64::MAX)
            .rollback_window(0)
            .compression(3, 1_000);
        let mut h = History::new(config).expect("history");
        let mut memory = vec![0u8; 4096];
        let mut tag = 0;
        let mut frame = |h: &mut History, memory: &mut Vec<u8>, iteration: u64| {
            tag += 1;
            let page = (iteration as usize % 3 + 1) * 1024;
            memory[page..page + 1024].copy_from_slice(&compressible(tag));
            h.capture(iteration, memory, &[], None, None).expect("capture");
            h.maintain();
        };
        for it in 0..=4 {
            frame(&mut h, &mut memory, it);
        }
        // Five frames counted; the pages of iterations 0, 1 and 2 are 3 behind.
        assert_eq!(h.store().stats().compressed, 3);
        // Forty rollbacks of two iterations, each re-simulated: the head never moves
        // past iteration 4, so no page ages, however many captures are made.
        for _ in 0..40 {
            h.rollback_to(2, &mut memory, LiveMemory::AtHead)
                .expect("rollback");
            frame(&mut h, &mut memory, 3);
            frame(&mut h, &mut memory, 4);
            let abandoned: Vec<RecordId> = h.abandoned().map(|r| r.id()).collect();
            for id in abandoned.into_iter().rev() {
                h.remove(id).expect("drop the abandoned branch");
            }
        }
        assert_eq!(h.store().stats().compressed, 3);
        assert_eq!(h.check(), Ok(()));
        // Three captures past iteration 4 are frames of progress: the last re-simulated
        // pages (of iterations 3 and 4) and iteration 5's are now 3 frames behind.
        for it in 5..=7 {
            frame(&mut h, &mut memory, it);
        }
        assert_eq!(h.store().stats().compressed, 6);
    }

    /// Frames 0..=20 leave pages 1..8 alone (compressed 2 frames after frame 0), then
    /// frames 21..=27 write one of them each; returns memory as of frame 20.
    fn idle_then_written(h: &mut History, memory: &mut [u8]) -> Vec<u8> {
        for (i, p) in memory.chunks_mut(1024).enumerate() {
            p.copy_from_slice(&compressible(i as u64 + 1));
        }
        let mut at_20 = Vec::new();
        for it in 0..=27u64 {
            if it > 20 {
                let page = (it - 20) as usize * 1024;
                memory[page + 5] ^= 0x5a;
            } else {
                memory[3] = it as u8;
            }
            h.capture(it, memory, &[], None, None).expect("capture");
            h.maintain();
            if it == 20 {
                at_20 = memory.to_vec();
            }
        }
        at_20
    }

    #[test]
    fn a_rollback_inside_the_window_writes_back_raw_pages() {
        let config = HistoryConfig::new(1024)
            .expect("page size")
            .seed(5)
            .compression(2, 1_000)
            .rollback_window(8);
        let mut h = History::new(config).expect("history");
        let mut memory = vec![0u8; 8 * 1024];
        let at_20 = idle_then_written(&mut h, &mut memory);
        // The pages a rollback to 20 writes back were compressed long before 20, and
        // made raw again when frames 21..=27 replaced them.
        let target = h.at(20).expect("retained").snapshot().clone();
        for i in 1..8 {
            let object = h.store().get(target.page(i));
            assert!(
                matches!(
                    object,
                    Some(ObjectRef::Full {
                        encoding: Encoding::Raw,
                        ..
                    })
                ),
                "page {i}: {object:?}"
            );
        }
        assert!(h.store().stats().inflated >= 7);
        let back = h
            .rollback_to(20, &mut memory, LiveMemory::AtHead)
            .expect("rollback");
        assert_eq!(back.restored.pages_written, 7);
        assert_eq!(memory, at_20);
        assert_eq!(h.check(), Ok(()));
    }

    #[test]
    fn without_a_window_the_same_rollback_decodes_compressed_pages() {
        let config = HistoryConfig::new(1024)
            .expect("page size")
            .seed(5)
            .compression(2, 1_000)
            .rollback_window(0);
        let mut h = History::new(config).expect("history");
        let mut memory = vec![0u8; 8 * 1024];
        let at_20 = idle_then_written(&mut h, &mut memory);
        let target = h.at(20).expect("retained").snapshot().clone();
        let lz4 = (1..8)
            .filter(|&i| {
                matches!(
                    h.store().get(target.page(i)),
                    Some(ObjectRef::Full {
                        encoding: Encoding::Lz4,
                        ..
                    })
                )
            })
            .count();
        assert_eq!(lz4, 7);
        h.rollback_to(20, &mut memory, LiveMemory::AtHead)
            .expect("rollback");
        assert_eq!(memory, at_20);
        assert_eq!(h.check(), Ok(()));
    }

    #[test]
    fn check_passes_on_a_history_with_branches() {
        let mut h = history(8);
        let mut memory = vec![0u8; 4096];
        h.rollback_to(4, &mut memory, LiveMemory::Unknown)
            .expect("rollback");
        memory[5] = 9;
        h.capture(5, &memory, &[], None, None).expect("capture");
        assert_eq!(h.abandoned().count(), 3);
        assert_eq!(h.check(), Ok(()));
    }

    #[test]
    fn check_names_drifted_counters() {
        let mut h = history(4);
        h.input_bytes += 3;
        assert_eq!(
            h.check(),
            Err(Inconsistency::Counters {
                meta: h.meta_bytes,
                meta_recounted: h.meta_bytes,
                inputs: 7,
                inputs_recounted: 4,
            })
        );
    }

    #[test]
    fn host_states_are_shared_blobs_freed_with_their_records() {
        let mut h = history(6);
        let ids: Vec<RecordId> = h.timeline().map(|r| r.id()).collect();
        // Frames 0..3 keep the same host state, 4 and 5 another; input blobs are one
        // byte each, so the table holds 6 inputs + 2 host states.
        for (i, id) in ids.iter().enumerate() {
            let state: &[u8] = if i < 4 { b"clock=1" } else { b"clock=2" };
            h.set_host_state(*id, state).expect("record exists");
        }
        assert_eq!(h.host_state(ids[2]), Some(&b"clock=1"[..]));
        assert_eq!(
            h.record(ids[1]).and_then(Record::host_state_hash),
            h.record(ids[3]).and_then(Record::host_state_hash)
        );
        assert_eq!(h.inputs.len(), 8);
        assert_eq!(h.check(), Ok(()));
        // Replacing one frees nothing still named elsewhere; removing the last record
        // naming a state frees it.
        h.set_host_state(ids[4], b"clock=1").expect("record exists");
        assert_eq!(h.inputs.len(), 8);
        let removed = h.remove(ids[4]).expect("not the head");
        assert_eq!(removed.inputs, 1, "its input blob; clock=1 is still named");
        assert_eq!(h.check(), Ok(()));
        let before = h.inputs.len();
        h.remove(ids[0]).expect("not the head");
        h.remove(ids[1]).expect("not the head");
        h.remove(ids[2]).expect("not the head");
        let removed = h.remove(ids[3]).expect("not the head");
        assert_eq!(removed.inputs, 2, "frame 3's input and the last clock=1");
        assert_eq!(h.inputs.len(), before - 5);
        assert_eq!(h.host_state(ids[5]), Some(&b"clock=2"[..]));
        assert_eq!(h.check(), Ok(()));
        assert!(matches!(
            h.set_host_state(ids[0], b"x"),
            Err(HistoryError::NoSuchRecord(_))
        ));
    }

    #[test]
    fn check_names_a_host_state_blob_with_a_wrong_count() {
        let mut h = history(3);
        let head = h.head().map(Record::id).expect("head");
        let hash = h.set_host_state(head, b"rng").expect("head exists");
        h.inputs.get_mut(&hash).expect("stored").refs += 1;
        assert_eq!(
            h.check(),
            Err(Inconsistency::BlobRefs {
                hash,
                found: 2,
                owned: 1
            })
        );
    }

    #[test]
    fn check_names_a_broken_abandoned_index() {
        let mut h = history(4);
        h.abandoned.insert(RecordId(1));
        assert_eq!(h.check(), Err(Inconsistency::Abandoned));
    }
}
