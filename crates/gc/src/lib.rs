//! Garbage collection of a rewind [`History`]: which records a [`Policy`] keeps, and
//! removing the rest.
//!
//! Removing a record frees the pages only it referenced; a delta whose parent page is
//! freed is compacted first (into a full page, or re-based onto a live ancestor), so no
//! retained iteration is ever rebuilt from freed bytes (see `rewind-store`).
//!
//! [`Collector::collect_some`] is the per-iteration call: it removes what the window rules
//! (keep-last, keep-from, abandoned branches) drop, at a cost proportional to what it
//! frees. By default an abandoned branch (records a rollback superseded) is dropped as
//! soon as the window no longer keeps timeline records of its iterations
//! ([`Abandoned::WithWindow`]), so a rollback game's history stays as large as its
//! window however often it rolls back.
//! [`Collector::collect`] examines every record and also applies the memory budget.
//!
//! ```
//! use rewind_gc::{Collector, Policy};
//! use rewind_history::{History, HistoryConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut history = History::new(HistoryConfig::new(1024)?.seed(1))?;
//! let mut gc = Collector::new(Policy::default().keep_last(8));
//! let mut memory = vec![0u8; 16 * 1024];
//! for frame in 0..100u64 {
//!     let at = (frame as usize * 97) % memory.len();
//!     memory[at] = frame as u8;
//!     history.capture(frame, &memory, &[], None, None)?;
//!     gc.collect_some(&mut history)?;
//! }
//! assert_eq!(history.len(), 8);
//! assert!(history.at(91).is_err()); // collected: a typed error, never stale data
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

use std::collections::BTreeSet;

use rewind_history::{History, HistoryError, RecordId, RemoveReport};

/// Errors of garbage collection.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// From the history (e.g. pinning an iteration that is not retained).
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// What happens to abandoned records: the records a rollback superseded (they are off
/// the current timeline but stay readable until collected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Abandoned {
    /// Drop an abandoned record once its iteration is older than the oldest timeline
    /// record the window rules ([`Policy::keep_last`], [`Policy::keep_from`]) keep: a
    /// branch lives as long as the frames it competed with. With no window rule set,
    /// abandoned records are kept. The default.
    #[default]
    WithWindow,
    /// Drop abandoned records captured more than this many captures ago (0: drop them
    /// at the next step).
    MaxAge(u64),
    /// Keep every abandoned record (a debugger that wants every branch). Only pins, the
    /// budget or [`rewind_history::History::remove`] bound them.
    Keep,
}

/// Which records to keep. The head is always kept, and so are pinned records. Rules
/// compose as a union: a record is kept when any rule keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the newest N records of the current timeline.
    pub keep_last: Option<usize>,
    /// Keep timeline records of iteration ≥ K (e.g. the oldest frame a peer has not
    /// confirmed).
    pub keep_from: Option<u64>,
    /// How long abandoned branches live (default: as long as the window keeps their
    /// iterations).
    pub abandoned: Abandoned,
    /// Thin old timeline records not kept by another rule until the history's resident
    /// bytes fit: denser near the head, sparser in the past.
    pub budget: Option<u64>,
    /// Records that are never collected.
    pub pins: BTreeSet<RecordId>,
}

impl Policy {
    /// Keep the last `n` records of the timeline.
    pub fn keep_last(mut self, n: usize) -> Self {
        self.keep_last = Some(n);
        self
    }
    /// Keep timeline records from iteration `k` on.
    pub fn keep_from(mut self, k: u64) -> Self {
        self.keep_from = Some(k);
        self
    }
    /// Drop abandoned records older than `age` captures ([`Abandoned::MaxAge`]).
    pub fn abandoned_max_age(mut self, age: u64) -> Self {
        self.abandoned = Abandoned::MaxAge(age);
        self
    }
    /// Set how long abandoned branches live.
    pub fn abandoned(mut self, rule: Abandoned) -> Self {
        self.abandoned = rule;
        self
    }
    /// Thin history to fit `bytes`.
    pub fn budget(mut self, bytes: u64) -> Self {
        self.budget = Some(bytes);
        self
    }

    fn timeline_limited(&self) -> bool {
        self.keep_last.is_some() || self.keep_from.is_some()
    }
}

/// What a collection did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// What was removed and freed.
    pub removed: RemoveReport,
    /// Records examined.
    pub examined: u64,
    /// Resident bytes of the history afterwards.
    pub resident_bytes: u64,
    /// True when a budget is set and could not be met (everything left is protected).
    pub over_budget: bool,
}

/// Applies a [`Policy`] to a history.
#[derive(Clone, Debug, Default)]
pub struct Collector {
    policy: Policy,
}

impl Collector {
    /// A collector for a policy.
    pub fn new(policy: Policy) -> Self {
        Collector { policy }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Change the policy (takes effect at the next step or collect).
    pub fn set_policy(&mut self, policy: Policy) {
        let pins = std::mem::take(&mut self.policy.pins);
        self.policy = policy;
        self.policy.pins.extend(pins);
    }

    /// Pin the record of `iteration` on the current timeline. Fails with
    /// [`HistoryError::NotRetained`] when it was collected or never captured.
    pub fn pin(&mut self, history: &History, iteration: u64) -> Result<RecordId, GcError> {
        let id = history.at(iteration)?.id();
        self.policy.pins.insert(id);
        Ok(id)
    }

    /// Unpin a record; true when it was pinned.
    pub fn unpin(&mut self, id: RecordId) -> bool {
        self.policy.pins.remove(&id)
    }

    fn protected(&self, history: &History, id: RecordId) -> bool {
        self.policy.pins.contains(&id) || history.head().map(|h| h.id()) == Some(id)
    }

    /// The per-iteration step: drop what the window rules drop, looking only at the
    /// oldest timeline records and the abandoned records the [`Abandoned`] rule drops,
    /// then compress pages
    /// that aged raw ([`History::maintain`]). Does not apply the budget (see
    /// [`Collector::collect`]).
    pub fn collect_some(&mut self, history: &mut History) -> Result<GcReport, GcError> {
        let mut report = GcReport::default();
        // The oldest timeline iteration a window rule keeps, once the loop has dropped
        // what the rules do not keep.
        let mut window_start = None;
        if self.policy.timeline_limited() {
            let keep_last = self.policy.keep_last.unwrap_or(0);
            let mut skipped = 0usize;
            loop {
                let total = history.timeline_len();
                let candidate = history.timeline().nth(skipped).map(|r| (r.id(), r.iteration()));
                let Some((id, iteration)) = candidate else {
                    // Everything left is protected: the window keeps no timeline record.
                    let past_head = history.head().map(|h| h.iteration().saturating_add(1));
                    window_start = self.policy.keep_from.or(past_head);
                    break;
                };
                report.examined += 1;
                let in_window = total.saturating_sub(skipped) <= keep_last;
                let from_k = self.policy.keep_from.is_some_and(|k| iteration >= k);
                if in_window || from_k {
                    window_start = Some(self.policy.keep_from.map_or(iteration, |k| k.min(iteration)));
                    break;
                }
                if self.protected(history, id) {
                    skipped += 1;
                    continue;
                }
                report.removed += history.remove(id)?;
            }
        }
        // Only the abandoned records the rule drops are visited (oldest first by number
        // for an age, by iteration behind the window). Pinned ones are skipped and
        // looked at again next step: pins are few.
        let old: Vec<RecordId> = match self.policy.abandoned {
            Abandoned::Keep => Vec::new(),
            Abandoned::MaxAge(age) => {
                let cutoff = history.next_record_id().0.saturating_sub(age);
                history
                    .abandoned()
                    .map(|r| r.id())
                    .take_while(|id| id.0 < cutoff)
                    .collect()
            }
            Abandoned::WithWindow => match window_start {
                Some(start) => history.abandoned_before(start).map(|r| r.id()).collect(),
                None => Vec::new(),
            },
        };
        // Newest first: a record's children are newer than it, so a dropped branch
        // goes leaf by leaf, each releasing only its own change list. Oldest first, each
        // removal handed its changes down to the next record of the branch (a merge and
        // a reference per page), which cost O(branch length × changes) per branch.
        let mut old = old;
        old.sort_unstable_by(|a, b| b.cmp(a));
        for id in old {
            report.examined += 1;
            if !self.protected(history, id) {
                report.removed += history.remove(id)?;
            }
        }
        history.maintain();
        report.resident_bytes = history.resident_bytes();
        Ok(report)
    }

    /// A full collection: every rule, including the budget.
    pub fn collect(&mut self, history: &mut History) -> Result<GcReport, GcError> {
        let mut report = self.collect_some(history)?;
        history.maintain_all();
        if let Some(budget) = self.policy.budget {
            report.over_budget = !self.thin(history, budget, &mut report)?;
        }
        report.resident_bytes = history.resident_bytes();
        Ok(report)
    }

    /// Timeline records the window rules do not keep and that are not protected, as
    /// (id, iteration), oldest first.
    fn thinnable(&self, history: &History) -> Vec<(RecordId, u64)> {
        let timeline: Vec<(RecordId, u64)> = history.timeline().map(|r| (r.id(), r.iteration())).collect();
        let n = timeline.len();
        let keep_last = self.policy.keep_last.unwrap_or(0);
        timeline
            .into_iter()
            .enumerate()
            .filter(|(i, (id, it))| {
                n - i > keep_last
                    && self.policy.keep_from.is_none_or(|k| *it < k)
                    && !self.protected(history, *id)
            })
            .map(|(_, e)| e)
            .collect()
    }

    /// Exponential thinning: repeatedly remove the records that sit densest relative to
    /// their age (gap to the next kept record divided by distance from the head), until
    /// the history fits `budget`. True when it fits.
    fn thin(&self, history: &mut History, budget: u64, report: &mut GcReport) -> Result<bool, GcError> {
        // Abandoned records count against the budget first: drop unprotected ones.
        if history.resident_bytes() > budget {
            let abandoned: Vec<RecordId> = history.abandoned().map(|r| r.id()).collect();
            for id in abandoned {
                if history.resident_bytes() <= budget {
                    break;
                }
                if !self.protected(history, id) {
                    report.removed += history.remove(id)?;
                }
            }
        }
        while history.resident_bytes() > budget {
            let candidates = self.thinnable(history);
            if candidates.is_empty() {
                return Ok(false);
            }
            let head = history.head().map_or(0, |h| h.iteration());
            let all: Vec<u64> = history.timeline().map(|r| r.iteration()).collect();
            let mut scored: Vec<(f64, RecordId)> = candidates
                .iter()
                .map(|&(id, it)| {
                    let next = all.partition_point(|x| *x <= it);
                    let gap = all.get(next).map_or(1, |n| n - it) as f64;
                    let age = (head - it).max(1) as f64;
                    (gap / age, id)
                })
                .collect();
            scored.sort_by(|a, b| a.0.total_cmp(&b.0));
            let batch = (scored.len() / 8).max(1);
            for (_, id) in scored.into_iter().take(batch) {
                report.examined += 1;
                report.removed += history.remove(id)?;
                if history.resident_bytes() <= budget {
                    break;
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
