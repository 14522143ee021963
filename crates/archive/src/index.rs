//! The index of an archive, for both sides of the file: four tables (objects, records,
//! inputs, timeline), each a list of sorted runs that a commit's root names oldest
//! first (`docs/format.md`, "The index scheme and its costs").
//!
//! The reader looks keys up in the archived runs in place; the writer keeps the same
//! runs in memory ([`MemRun`]), adds a level-0 run per commit, merges tiers and names
//! them in the next root. Both sort and probe runs by the same keys ([`Keyed`]) with
//! the same [`lookup`].
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;

use crate::format::*;

/// The key an index lookup is by, ordered as entries are within a run, and the `u64`
/// that a run's `first..=last` range is of.
pub(crate) trait RunKey: Ord {
    /// The value a run's key range is compared with.
    fn range_key(&self) -> u64;
}

impl RunKey for u64 {
    fn range_key(&self) -> u64 {
        *self
    }
}

impl RunKey for [u8; 16] {
    fn range_key(&self) -> u64 {
        hash_key(self)
    }
}

/// An entry of one of the four tables, archived or in memory: what runs are sorted by.
pub(crate) trait Keyed {
    /// What the table is sorted and looked up by.
    type Key: RunKey;
    /// This entry's key.
    fn key(&self) -> Self::Key;
}

/// An archived entry of one of the four tables: where a table's runs and entries are
/// in a commit's root and in runs segments, so one lookup serves all four.
pub(crate) trait IndexEntry: Keyed + Sized {
    /// The table's runs in a root.
    fn runs(root: &ArchivedRootSeg) -> &[ArchivedRunRef];
    /// The table's entries in a runs segment.
    fn entries(seg: &ArchivedRunsSeg) -> &[Self];
}

/// [`Keyed`] for a table's in-memory and archived entry types, and [`IndexEntry`] for the
/// archived one (its table is named the same in the root and in runs segments), with
/// the expression of each's key.
macro_rules! index_table {
    ($native:ty, $archived:ty, $table:ident, $key:ty, |$e:ident| $native_key:expr, $archived_key:expr) => {
        impl Keyed for $native {
            type Key = $key;
            fn key(&self) -> $key {
                let $e = self;
                $native_key
            }
        }
        impl Keyed for $archived {
            type Key = $key;
            fn key(&self) -> $key {
                let $e = self;
                $archived_key
            }
        }
        impl IndexEntry for $archived {
            fn runs(root: &ArchivedRootSeg) -> &[ArchivedRunRef] {
                &root.$table
            }
            fn entries(seg: &ArchivedRunsSeg) -> &[Self] {
                &seg.$table
            }
        }
    };
}

index_table!(ObjEntry, ArchivedObjEntry, objects, [u8; 16], |e| e.hash, e.hash);
index_table!(
    RecEntry,
    ArchivedRecEntry,
    records,
    u64,
    |e| e.id,
    e.id.to_native()
);
index_table!(
    InputEntry,
    ArchivedInputEntry,
    inputs,
    [u8; 16],
    |e| e.hash,
    e.hash
);
index_table!(
    TlEntry,
    ArchivedTlEntry,
    timeline,
    u64,
    |e| e.iteration,
    e.iteration.to_native()
);

/// The entry of `key` in a table whose runs are `runs` (oldest first). The runs are
/// probed newest first, skipping those whose key range (`range`, `None` for an empty
/// run) cannot hold it, with a binary search in each (`entries` fetches a run); the
/// first entry found is the answer.
pub(crate) fn lookup<'a, R, E, X>(
    runs: impl DoubleEndedIterator<Item = R>,
    range: impl Fn(&R) -> Option<(u64, u64)>,
    mut entries: impl FnMut(&R) -> Result<&'a [E], X>,
    key: &E::Key,
) -> Result<Option<&'a E>, X>
where
    E: Keyed + 'a,
{
    let k = key.range_key();
    for r in runs.rev() {
        if range(&r).is_some_and(|(first, last)| first <= k && k <= last) {
            let run = entries(&r)?;
            if let Ok(i) = run.binary_search_by(|e| e.key().cmp(key)) {
                return Ok(run.get(i));
            }
        }
    }
    Ok(None)
}

// ---- the writer's runs in memory -----------------------------------------------------

/// The segment offset of a run not written yet.
pub(crate) const PENDING: u64 = u64::MAX;

/// One run of a table as the writer holds it: its entries (shared between the tables of
/// consecutive commits) and where it is, or will be, in the file.
#[derive(Clone, Debug)]
pub(crate) struct MemRun<E> {
    /// The runs segment holding it, or [`PENDING`].
    pub(crate) seg: u64,
    /// Its first entry in the segment's table.
    pub(crate) start: u64,
    /// Its merge level.
    pub(crate) level: u8,
    entries: Arc<[E]>,
    /// Entries in use: a rollback truncates the last timeline run.
    pub(crate) len: usize,
}

impl<E> MemRun<E> {
    /// The entries in use.
    pub(crate) fn used(&self) -> &[E] {
        self.entries.get(..self.len).unwrap_or(&[])
    }

    /// A new run, to be written by the next commit.
    pub(crate) fn pending(entries: Vec<E>, level: u8) -> Self {
        let len = entries.len();
        MemRun {
            seg: PENDING,
            start: 0,
            level,
            entries: entries.into(),
            len,
        }
    }

    /// A run read from the file.
    pub(crate) fn loaded(r: &RunRef, entries: Vec<E>) -> Self {
        let len = entries.len();
        MemRun {
            seg: r.seg,
            start: r.start,
            level: r.level,
            entries: entries.into(),
            len,
        }
    }
}

impl<E: Keyed> MemRun<E> {
    /// The range keys of the first and last entries in use.
    pub(crate) fn range(&self) -> Option<(u64, u64)> {
        let u = self.used();
        Some((u.first()?.key().range_key(), u.last()?.key().range_key()))
    }
}

/// The four tables of the index, as the writer holds them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tables {
    pub(crate) objects: Vec<MemRun<ObjEntry>>,
    pub(crate) records: Vec<MemRun<RecEntry>>,
    pub(crate) inputs: Vec<MemRun<InputEntry>>,
    pub(crate) timeline: Vec<MemRun<TlEntry>>,
}

impl Tables {
    /// The record number of `iteration` on the timeline.
    pub(crate) fn timeline_id(&self, iteration: u64) -> Option<u64> {
        fn entries<'a>(r: &&'a MemRun<TlEntry>) -> Result<&'a [TlEntry], std::convert::Infallible> {
            Ok(r.used())
        }
        lookup(self.timeline.iter(), |r| r.range(), entries, &iteration)
            .ok()
            .flatten()
            .map(|e| e.id)
    }

    /// Cut the timeline after iteration `last` (a rollback), or clear it (`None`).
    pub(crate) fn cut_timeline(&mut self, last: Option<u64>) {
        let Some(c) = last else {
            self.timeline.clear();
            return;
        };
        self.timeline
            .retain(|r| r.used().first().is_some_and(|e| e.iteration <= c));
        if let Some(run) = self.timeline.last_mut() {
            run.len = run.used().partition_point(|e| e.iteration <= c);
        }
    }

    /// Merge each table's trailing runs of one level while `fanout` have accumulated.
    ///
    /// Merged runs are concatenations of sorted runs: the standard library's stable
    /// sort finds and merges such runs, and a `u128` key (big-endian, so the same order
    /// as the bytes the reader binary-searches) compares in one instruction. The append
    /// that merges 512 appends' object runs (84,000 entries) took 8.5 ms instead of
    /// 10.2 ms with an unstable sort on `[u8; 16]` (`COMPARE_TRACE=1 cargo run --release
    /// -p rewind-bench --bin compare -- --workloads 64MiB-1%-clustered --peers archive
    /// --frames 520 --no-git`).
    pub(crate) fn merge(&mut self, fanout: usize) {
        merge_tiers(&mut self.objects, fanout, |v| {
            v.sort_by_key(|e| u128::from_be_bytes(e.hash))
        });
        merge_tiers(&mut self.records, fanout, |_| {});
        merge_tiers(&mut self.inputs, fanout, |v| {
            v.sort_by_key(|e| u128::from_be_bytes(e.hash))
        });
        merge_tiers(&mut self.timeline, fanout, |_| {});
    }
}

/// Merge trailing runs of one level while `fanout` of them have accumulated.
fn merge_tiers<E: Clone>(runs: &mut Vec<MemRun<E>>, fanout: usize, sort: impl Fn(&mut Vec<E>)) {
    loop {
        let Some(lvl) = runs.last().map(|r| r.level) else {
            return;
        };
        let count = runs.iter().rev().take_while(|r| r.level == lvl).count();
        if count < fanout {
            return;
        }
        let tail = runs.split_off(runs.len() - count);
        let mut merged: Vec<E> = Vec::with_capacity(tail.iter().map(|r| r.len).sum());
        for r in &tail {
            merged.extend_from_slice(r.used());
        }
        sort(&mut merged);
        runs.push(MemRun::pending(merged, lvl.saturating_add(1)));
    }
}

/// The root's references to `runs`; a pending run is named in the segment at `pending`.
pub(crate) fn refs_of<E: Keyed>(runs: &[MemRun<E>], pending: u64) -> Vec<RunRef> {
    runs.iter()
        .map(|r| {
            let (first, last) = r.range().unwrap_or((0, 0));
            RunRef {
                seg: if r.seg == PENDING { pending } else { r.seg },
                start: r.start,
                len: r.len as u64,
                first,
                last,
                level: r.level,
            }
        })
        .collect()
}

/// Append the entries of `runs` not written yet to `out` (a runs segment's table),
/// recording where each starts.
pub(crate) fn place<E: Clone>(runs: &mut [MemRun<E>], out: &mut Vec<E>) {
    for r in runs.iter_mut().filter(|r| r.seg == PENDING) {
        r.start = out.len() as u64;
        out.extend_from_slice(r.used());
    }
}

/// Name the runs segment at `off` as the home of every pending run of `runs`.
pub(crate) fn set_seg<E>(runs: &mut [MemRun<E>], off: u64) {
    for r in runs.iter_mut().filter(|r| r.seg == PENDING) {
        r.seg = off;
    }
}
