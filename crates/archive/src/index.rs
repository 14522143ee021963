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

/// A merged run of more entries than this is written a chunk per commit (see
/// [`Merging`]) instead of all in the commit that fills its tier.
pub(crate) const SPREAD_ABOVE: usize = 4096;

/// The fewest merged entries a commit writes while a spread merge is in progress.
pub(crate) const MIN_CHUNK: usize = 1024;

/// One run of a table as the writer holds it: its entries (shared between the tables of
/// consecutive commits) and where it is, or will be, in the file.
#[derive(Clone, Debug)]
pub(crate) struct MemRun<E> {
    /// The runs segment holding it, or [`PENDING`].
    pub(crate) seg: u64,
    /// Where its first entry in use is in the segment's table.
    pub(crate) start: u64,
    /// Its merge level.
    pub(crate) level: u8,
    entries: Arc<[E]>,
    /// Entries before this one are no longer in the run (a spread merge took them).
    from: usize,
    /// Entries in use end here: a rollback truncates the last timeline run.
    pub(crate) len: usize,
    /// False for the second and later chunks of a spread merge's output: a tier counts
    /// one merged run once, however many chunks it was written in.
    tier_start: bool,
}

impl<E> MemRun<E> {
    /// The entries in use.
    pub(crate) fn used(&self) -> &[E] {
        self.entries.get(self.from..self.len).unwrap_or(&[])
    }

    /// A new run, to be written by the next commit.
    pub(crate) fn pending(entries: Vec<E>, level: u8) -> Self {
        let len = entries.len();
        MemRun {
            seg: PENDING,
            start: 0,
            level,
            entries: entries.into(),
            from: 0,
            len,
            tier_start: true,
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
            from: 0,
            len,
            tier_start: true,
        }
    }

    /// Drop the first `k` entries in use (a written run then names a later slice of its
    /// segment; a pending one writes only the rest).
    fn advance(&mut self, k: usize) {
        let k = k.min(self.len.saturating_sub(self.from));
        self.from += k;
        if self.seg != PENDING {
            self.start += k as u64;
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

/// A merge of one full tier of object runs spread over several commits, so no commit
/// stalls on rewriting a large part of the index at once.
///
/// Each commit takes the next chunk of the merge (the smallest keys left in the source
/// runs: at least [`MIN_CHUNK`], `fanout` times the commit's new objects, and
/// `1 / fanout` of the merge) and writes it as a run of the output level; the source
/// runs are named from the first entry not yet taken. Every entry stays in exactly one
/// run named by each root, so a reader (which needs no change: a run reference may name
/// any slice of its segment) sees a valid index at every commit. The chunks have
/// disjoint key ranges, so a lookup probes at most one of them.
#[derive(Clone, Debug)]
pub(crate) struct Merging<E> {
    /// The output level.
    level: u8,
    /// Where the output goes in the table's runs (where its sources were).
    at: usize,
    /// The output written so far, in key order.
    done: Vec<MemRun<E>>,
    /// What is left of each source run.
    rest: Vec<MemRun<E>>,
    /// The fewest entries a commit takes: an eighth (`1 / fanout`) of the merge, so
    /// it ends within `fanout` commits and its output is at most `fanout` chunks.
    chunk: usize,
}

impl<E: Keyed + Clone> Merging<E> {
    /// Take the next `budget` entries (in key order) of the sources as a chunk; how
    /// many it took.
    fn advance(&mut self, budget: usize) -> usize {
        use std::cmp::Reverse;
        let mut heads = std::collections::BinaryHeap::new();
        for (i, r) in self.rest.iter().enumerate() {
            if let Some(e) = r.used().first() {
                heads.push(Reverse((e.key(), i)));
            }
        }
        let mut taken = vec![0usize; self.rest.len()];
        let mut chunk = Vec::with_capacity(budget);
        while chunk.len() < budget {
            let Some(Reverse((_, i))) = heads.pop() else { break };
            let (Some(r), Some(t)) = (self.rest.get(i), taken.get_mut(i)) else {
                break;
            };
            if let Some(e) = r.used().get(*t) {
                chunk.push(e.clone());
                *t += 1;
            }
            if let Some(next) = r.used().get(*t) {
                heads.push(Reverse((next.key(), i)));
            }
        }
        for (r, t) in self.rest.iter_mut().zip(taken) {
            r.advance(t);
        }
        self.rest.retain(|r| !r.used().is_empty());
        let n = chunk.len();
        if n > 0 {
            let mut run = MemRun::pending(chunk, self.level);
            run.tier_start = self.done.is_empty();
            self.done.push(run);
        }
        n
    }
}

/// The four tables of the index, as the writer holds them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tables {
    pub(crate) objects: Vec<MemRun<ObjEntry>>,
    pub(crate) records: Vec<MemRun<RecEntry>>,
    pub(crate) inputs: Vec<MemRun<InputEntry>>,
    pub(crate) timeline: Vec<MemRun<TlEntry>>,
    /// A spread merge of object runs in progress.
    merging: Option<Merging<ObjEntry>>,
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
            run.len = run.from + run.used().partition_point(|e| e.iteration <= c);
        }
    }

    /// Every object run the next root names: the tiers, then a spread merge's output
    /// so far and what is left of its sources.
    pub(crate) fn object_runs(&self) -> impl Iterator<Item = &MemRun<ObjEntry>> {
        let (done, rest) = match &self.merging {
            Some(m) => (m.done.as_slice(), m.rest.as_slice()),
            None => (&[][..], &[][..]),
        };
        self.objects.iter().chain(done).chain(rest)
    }

    /// [`Tables::object_runs`], to place and name them.
    pub(crate) fn object_runs_mut(&mut self) -> impl Iterator<Item = &mut MemRun<ObjEntry>> {
        let (done, rest) = match &mut self.merging {
            Some(m) => (m.done.as_mut_slice(), m.rest.as_mut_slice()),
            None => (&mut [][..], &mut [][..]),
        };
        self.objects.iter_mut().chain(done).chain(rest)
    }

    /// Merge each table's runs of one level once `fanout` have accumulated. A merge of
    /// object runs over [`SPREAD_ABOVE`] entries is spread over the next commits, one
    /// merge at a time and one chunk per commit (see [`Merging`]): a chunk is at least
    /// `fanout` times the commit's `new_objects`, more than the index's write
    /// amplification (one rewrite per level), so merges keep up with appends.
    ///
    /// Merged runs are concatenations of sorted runs: the standard library's stable
    /// sort finds and merges such runs, and a `u128` key (big-endian, so the same order
    /// as the bytes the reader binary-searches) compares in one instruction. The append
    /// that merges 512 appends' object runs (84,000 entries) took 8.5 ms instead of
    /// 10.2 ms with an unstable sort on `[u8; 16]` (`COMPARE_TRACE=1 cargo run --release
    /// -p rewind-bench --bin compare -- --workloads 64MiB-1%-clustered --peers archive
    /// --frames 520 --no-git`).
    pub(crate) fn merge(&mut self, fanout: usize, new_objects: usize) {
        let budget = new_objects.saturating_mul(fanout).max(MIN_CHUNK);
        let mut advanced = false;
        loop {
            let spread = if self.merging.is_none() {
                Spread::Start
            } else {
                Spread::Wait
            };
            let started = merge_tiers(&mut self.objects, fanout, spread, |v| {
                v.sort_by_key(|e| u128::from_be_bytes(e.hash))
            });
            if let Some(mut m) = started {
                m.chunk = m
                    .rest
                    .iter()
                    .map(|r| r.used().len())
                    .sum::<usize>()
                    .div_ceil(fanout);
                self.merging = Some(m);
            }
            let Some(m) = &mut self.merging else { break };
            if advanced {
                break;
            }
            m.advance(budget.max(m.chunk));
            advanced = true;
            if !m.rest.is_empty() {
                break;
            }
            // Done: the output takes its sources' place, and its level's block may
            // now be full.
            let at = m.at.min(self.objects.len());
            let done = std::mem::take(&mut m.done);
            self.objects.splice(at..at, done);
            self.merging = None;
        }
        merge_tiers(&mut self.records, fanout, Spread::Never, |_| {});
        merge_tiers(&mut self.inputs, fanout, Spread::Never, |v| {
            v.sort_by_key(|e| u128::from_be_bytes(e.hash))
        });
        merge_tiers(&mut self.timeline, fanout, Spread::Never, |_| {});
    }
}

/// What [`merge_tiers`] does with a merge of over [`SPREAD_ABOVE`] entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spread {
    /// Merge it at once (small tables: records, inputs, the timeline).
    Never,
    /// Return its sources as a [`Merging`] to spread over commits.
    Start,
    /// Leave it: a spread merge is in progress, and this tier waits for it.
    Wait,
}

/// Merge a block of runs of one level (adjacent in `runs`) once it holds `fanout` runs
/// (counting a spread merge's chunks as one), newest block first, until none does; a
/// large merge is handled as `spread` says. With only immediate merges the full block
/// is always the trailing one, and its output takes its place at the end (a base-8
/// counter); a spread merge's output lands where its sources were, so its level's block
/// may be anywhere.
fn merge_tiers<E: Clone>(
    runs: &mut Vec<MemRun<E>>,
    fanout: usize,
    spread: Spread,
    sort: impl Fn(&mut Vec<E>),
) -> Option<Merging<E>> {
    'scan: loop {
        let mut end = runs.len();
        while let Some(lvl) = end.checked_sub(1).and_then(|i| runs.get(i)).map(|r| r.level) {
            let before = runs.get(..end).unwrap_or(&[]);
            let start = end - before.iter().rev().take_while(|r| r.level == lvl).count();
            let block = runs.get(start..end).unwrap_or(&[]);
            let tiers = block.iter().filter(|r| r.tier_start).count();
            let total: usize = block.iter().map(|r| r.used().len()).sum();
            let level = lvl.saturating_add(1);
            if tiers >= fanout {
                match spread {
                    _ if total <= SPREAD_ABOVE => {}
                    Spread::Never => {}
                    Spread::Start => {
                        let rest: Vec<MemRun<E>> = runs.drain(start..end).collect();
                        return Some(Merging {
                            level,
                            at: start,
                            done: Vec::new(),
                            rest,
                            chunk: 0,
                        });
                    }
                    // A spread merge is in progress: this block waits for it.
                    Spread::Wait => {
                        end = start;
                        continue;
                    }
                }
                let mut merged: Vec<E> = Vec::with_capacity(total);
                for r in runs.drain(start..end) {
                    merged.extend_from_slice(r.used());
                }
                sort(&mut merged);
                runs.insert(start, MemRun::pending(merged, level));
                continue 'scan;
            }
            end = start;
        }
        return None;
    }
}

/// The root's references to `runs`; a pending run is named in the segment at `pending`.
pub(crate) fn refs_of<'a, E: Keyed + 'a>(
    runs: impl IntoIterator<Item = &'a MemRun<E>>,
    pending: u64,
) -> Vec<RunRef> {
    runs.into_iter()
        .map(|r| {
            let (first, last) = r.range().unwrap_or((0, 0));
            RunRef {
                seg: if r.seg == PENDING { pending } else { r.seg },
                start: r.start,
                len: r.used().len() as u64,
                first,
                last,
                level: r.level,
            }
        })
        .collect()
}

/// Append the entries of `runs` not written yet to `out` (a runs segment's table),
/// recording where each starts.
pub(crate) fn place<'a, E: Clone + 'a>(runs: impl IntoIterator<Item = &'a mut MemRun<E>>, out: &mut Vec<E>) {
    for r in runs.into_iter().filter(|r| r.seg == PENDING) {
        r.start = out.len() as u64;
        out.extend_from_slice(r.used());
    }
}

/// Name the runs segment at `off` as the home of every pending run of `runs`.
pub(crate) fn set_seg<'a, E: 'a>(runs: impl IntoIterator<Item = &'a mut MemRun<E>>, off: u64) {
    for r in runs.into_iter().filter(|r| r.seg == PENDING) {
        r.seg = off;
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(x: u64) -> ObjEntry {
        let mut hash = [0u8; 16];
        hash[..8].copy_from_slice(&x.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        hash[8..].copy_from_slice(&x.to_le_bytes());
        ObjEntry {
            hash,
            seg: 0,
            pos: 0,
            depth: 0,
            kind: 0,
        }
    }

    /// A large tier merge is spread over commits: every commit's runs hold every entry
    /// exactly once, each run sorted, the chunks taking at least the budget each, and
    /// the merge ends with its output where its sources were.
    #[test]
    fn spread_merges_keep_every_entry_once_at_every_commit() {
        let mut tables = Tables::default();
        let per_commit = 700u64;
        let mut all: Vec<[u8; 16]> = Vec::new();
        let mut spread_commits = 0;
        for commit in 0..200u64 {
            let mut new: Vec<ObjEntry> = (0..per_commit).map(|i| entry(commit * per_commit + i)).collect();
            new.sort_unstable_by_key(|e| e.hash);
            all.extend(new.iter().map(|e| e.hash));
            tables.objects.push(MemRun::pending(new, 0));
            tables.merge(8, per_commit as usize);
            if tables.merging.is_some() {
                spread_commits += 1;
            }
            // What the commit writes: pending runs get a segment (later advances move
            // their start).
            let mut out = Vec::new();
            place(tables.object_runs_mut(), &mut out);
            set_seg(tables.object_runs_mut(), commit);
            assert!(tables.object_runs().count() < 100, "runs at commit {commit}");
            assert!(out.len() <= 8 * 700 + 8 * 8 * 700, "written at commit {commit}");
            let mut seen: Vec<[u8; 16]> = Vec::new();
            for r in tables.object_runs() {
                assert!(!r.used().is_empty(), "an empty run at commit {commit}");
                assert!(r.used().windows(2).all(|w| w[0].hash < w[1].hash));
                seen.extend(r.used().iter().map(|e| e.hash));
            }
            seen.sort_unstable();
            let mut want = all.clone();
            want.sort_unstable();
            assert_eq!(seen, want, "entries at commit {commit}");
        }
        assert!(spread_commits > 0, "no merge was spread");
        assert!(tables.objects.len() < 40, "{} runs", tables.objects.len());
    }
}
