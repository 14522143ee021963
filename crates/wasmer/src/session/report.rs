//! What [`Session`] calls did: step, rollback, re-simulation and replay reports.

// The items the docs link to.
#[cfg(doc)]
use super::*;

use std::time::Duration;

use rewind::{RecordId, Snapshot, StateHash};

/// What one [`Session::step`] recorded.
#[derive(Clone, Copy, Debug)]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
/// let r: StepReport = s.step(&[5])?;
/// assert_eq!((r.iteration, r.pages_changed), (1, 1)); // the sum's page
/// # Ok(())
/// # }
/// ```
pub struct StepReport {
    /// The iteration recorded.
    pub iteration: u64,
    /// Its record.
    pub record: RecordId,
    /// Its state hash (all zeros, `StateHash::default()`, while [`pending`](Self::pending)).
    pub state_hash: StateHash,
    /// True when the capture was handed to the pipeline's worker
    /// ([`SessionOptions::pipeline`]): `state_hash`, `pages_changed` and
    /// `bytes_stored` are not known yet (zero); [`Session::state_hash`] waits
    /// for them.
    pub pending: bool,
    /// Pages hashed (the kernel's written pages, or all pages in full-scan mode;
    /// pages copied for the worker when pipelined).
    pub pages_hashed: usize,
    /// Pages whose content changed.
    pub pages_changed: usize,
    /// New bytes stored by this capture.
    pub bytes_stored: u64,
    /// Memory length after the step.
    pub memory_len: u64,
    /// Time in the guest's step function.
    pub run_time: Duration,
    /// Time to capture (dirty scan, globals, hashing, storing, GC step).
    pub capture_time: Duration,
    /// Of which the kernel dirty-page scan (zero in full-scan mode).
    pub scan_time: Duration,
}

/// What a rollback did.
#[derive(Clone, Copy, Debug)]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
/// s.step(&[5])?;
/// let r: RollbackReport = s.rollback_to(0)?;
/// assert_eq!((r.iteration, r.pages_written, r.reinstantiated), (0, 1, false));
/// # Ok(())
/// # }
/// ```
pub struct RollbackReport {
    /// The iteration now at the head.
    pub iteration: u64,
    /// Its state hash.
    pub state_hash: StateHash,
    /// Pages written into memory.
    pub pages_written: usize,
    /// Pages hashed to find them (all of them after a re-instantiation).
    pub pages_hashed: usize,
    /// True when the memory had to shrink, so the module was instantiated
    /// afresh in a new store.
    pub reinstantiated: bool,
    /// Memory length now.
    pub memory_len: u64,
    /// Time taken.
    pub time: Duration,
}

/// Where a run's state hash first differs from the expected one.
#[derive(Clone, Debug, PartialEq, Eq)]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
/// s.step(&[1])?;
/// let other = s.state_hash(0)?;
/// let d: Divergence = s.check([(1, other)])?.expect("differs");
/// assert_eq!((d.iteration, d.expected, d.found), (1, other, s.state_hash(1)?));
/// # Ok(())
/// # }
/// ```
pub struct Divergence {
    /// The first iteration whose state hash differs.
    pub iteration: u64,
    /// The expected hash.
    pub expected: StateHash,
    /// The hash found on the timeline.
    pub found: StateHash,
    /// The differing pages, when a snapshot with the expected hash is
    /// available (a record of this history with that hash at that
    /// iteration, e.g. the superseded branch of a straight run).
    pub pages: Option<PageDivergence>,
}

/// The pages in which two snapshots differ.
#[derive(Clone, Debug, PartialEq, Eq)]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
/// s.step(&[1])?;
/// let before = s.recorder().history().at(0)?.snapshot().clone();
/// let p: PageDivergence = s.compare_snapshot(1, &before)?.expect("differs");
/// assert_eq!((p.first, p.globals_differ), (Some(1), true));
/// # Ok(())
/// # }
/// ```
pub struct PageDivergence {
    /// The first differing page (Merkle descent, O(log pages)).
    pub first: Option<u32>,
    /// Every differing page.
    pub pages: Vec<u32>,
    /// True when the memory lengths differ.
    pub memory_len_differs: bool,
    /// True when the globals differ.
    pub globals_differ: bool,
}

impl PageDivergence {
    /// Compares two snapshots (of histories with the same page size and seed).
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// s.step(&[1])?;
    /// let h = s.recorder().history();
    /// let p = PageDivergence::between(h.at(1)?.snapshot(), h.at(0)?.snapshot());
    /// assert_eq!(p.pages, vec![1]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn between(found: &Snapshot, expected: &Snapshot) -> Self {
        Self {
            first: found.first_differing_page(expected),
            pages: rewind::layers::snapshot::diff(found, expected),
            memory_len_differs: found.memory_len() != expected.memory_len(),
            globals_differ: found.globals() != expected.globals(),
        }
    }
}

/// The result of [`Session::replay`].
#[derive(Clone, Debug)]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
/// let hashes: Vec<_> = (1..=3u8).map(|i| s.step(&[i]).map(|r| r.state_hash)).collect::<Result<_, _>>()?;
/// let r: ReplayReport = s.replay(0, [[1u8], [2], [3]], &hashes)?;
/// assert!(r.divergence.is_none());
/// assert_eq!(r.resimulated.steps.len(), 3);
/// # Ok(())
/// # }
/// ```
pub struct ReplayReport {
    /// The rollback to the starting iteration, then one report per input.
    pub resimulated: ResimulateReport,
    /// The first iteration whose hash differs from the expected one.
    pub divergence: Option<Divergence>,
}

/// What a re-simulation did ([`Session::resimulate`], [`Session::resimulate_with`]).
#[derive(Clone, Debug)]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
/// s.step(&[1])?;
/// let r: ResimulateReport = s.resimulate(0, [[7u8]])?;
/// assert_eq!((r.rollback.iteration, r.steps.len()), (0, 1));
/// # Ok(())
/// # }
/// ```
pub struct ResimulateReport {
    /// The rollback to the starting iteration (it may have re-instantiated the guest).
    pub rollback: RollbackReport,
    /// One report per input, in order.
    pub steps: Vec<StepReport>,
}

/// Counters of a session.
#[derive(Clone, Copy, Debug, Default)]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
/// s.step(&[1])?;
/// s.rollback_to(0)?;
/// let st: SessionStats = s.stats();
/// assert_eq!((st.steps, st.rollbacks), (1, 1));
/// # Ok(())
/// # }
/// ```
pub struct SessionStats {
    /// Successful steps.
    pub steps: u64,
    /// Rollbacks asked for with [`Session::rollback_to`].
    pub rollbacks: u64,
    /// Rollbacks (any cause) that had to re-instantiate the module.
    pub reinstantiations: u64,
    /// Failed steps (undone).
    pub failed_steps: u64,
    /// Pages hashed by step captures.
    pub pages_hashed: u64,
    /// Pages changed, over step captures.
    pub pages_changed: u64,
    /// Total capture time of steps.
    pub capture_time: Duration,
    /// Total time of rollbacks.
    pub rollback_time: Duration,
    /// Switches between kernel dirty pages and a full scan made by
    /// [`CapturePreference::Auto`](crate::CapturePreference::Auto) as the guest's write
    /// rate changed (see [`Session::mode`](crate::Session::mode)).
    pub mode_switches: u64,
}
