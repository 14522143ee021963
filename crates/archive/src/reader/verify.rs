//! Verification: every segment, index field, record field, object and input checked
//! against what it derives from.

use std::collections::{HashMap, HashSet};

use rewind_store::PageHash;
use rkyv::rancor;

use super::*;
use crate::index::{IndexEntry, RunKey as _};

impl Archive {
    /// The stored fields of one record that `verify` can derive, checked against what
    /// they derive from: the index entry, the parent, the change list recomputed from
    /// the two page vectors, the counts.
    pub(super) fn check_record(
        &self,
        e: &RecEntry,
        data: &ArchivedDataSeg,
        m: &ArchivedRecMeta,
        parent: Option<&RecEntry>,
        changes: &[(u32, PageHash)],
        (globals, parent_globals): (&StoredGlobals<'_>, Option<&[GlobalValue]>),
    ) -> Result<(), ArchiveError> {
        let bad = |reason| {
            Err(ArchiveError::Inconsistent {
                offset: e.seg,
                reason,
            })
        };
        if m.iteration.to_native() != e.iteration
            || m.memory_len.to_native() != e.memory_len
            || m.state_hash != e.state_hash
            || m.input != e.input
            || m.has_input != e.has_input
            || m.hops.to_native() != e.hops
        {
            return bad("record index and record disagree");
        }
        if m.has_input > 1 || m.checkpoint > 1 {
            return bad("a flag is neither 0 nor 1");
        }
        if m.has_input == 0 && e.input != [0; 16] {
            return bad("an input hash on a record without input");
        }
        if m.has_input == 1 && self.input_entry(PageHash(e.input))?.is_none() {
            return bad("record names an input the archive does not hold");
        }
        if parent.is_some_and(|p| p.iteration >= e.iteration) {
            return bad("iteration not after its parent's");
        }
        let list_len = m.list_len.to_native() as u64;
        if m.checkpoint != 0 {
            if e.hops != 0 || e.since != 0 {
                return bad("checkpoint with change-list counters");
            }
        } else {
            let Some(p) = parent else {
                return bad("change list without a parent");
            };
            if p.hops.checked_add(1) != Some(e.hops) || p.since.checked_add(list_len) != Some(e.since) {
                return bad("hops or entries since the checkpoint do not follow the parent's");
            }
            if e.hops > self.header.checkpoint_hops {
                return bad("more change lists than the checkpoint interval");
            }
            // The stored list must be exactly the pages that differ from the parent's
            // vector: no omitted slot, no slot that did not change, sorted (reads
            // binary-search it).
            let stored = slice_of(
                &data.changes,
                m.list_start.to_native(),
                list_len,
                e.seg,
                "change list out of its segment",
            )?;
            let same = stored.len() == changes.len()
                && stored
                    .iter()
                    .zip(changes)
                    .all(|(c, (i, h))| c.index.to_native() == *i && c.hash == h.0);
            if !same {
                return bad("change list differs from the difference of the page vectors");
            }
        }
        // `pages_changed` counts the slots that differ from the parent. A record with
        // no parent in the file is either a first capture (every non-zero page) or one
        // a compaction cut from its expired parent, whose count is against a parent
        // the file no longer holds: only bounded by the slots of a 4 GiB memory.
        let ps = self.header.page_size as u64;
        let pages_changed = m.pages_changed.to_native();
        let derived_ok = match parent {
            Some(_) => pages_changed as usize == changes.len(),
            None => pages_changed as u64 <= MAX_MEMORY / ps,
        };
        if !derived_ok {
            return bad("pages_changed differs from the pages that changed");
        }
        if m.bytes_stored.to_native() > m.pages_changed.to_native() as u64 * ps {
            return bad("bytes_stored exceeds a full page per changed page");
        }
        match globals {
            StoredGlobals::Whole(gs) => {
                for g in gs.iter() {
                    let v = global_of(g, e.seg)?;
                    if v.to_bits().to_le_bytes() != g.bits {
                        return bad("global bits beyond its type's width");
                    }
                }
            }
            StoredGlobals::Changes(ch) => {
                // The load applied them (positions in range and increasing); what a
                // writer never stores is left: bits a type does not have, and changes
                // to the value the parent already holds.
                let Some(pg) = parent_globals else {
                    return bad("global changes without a parent");
                };
                for c in ch.iter() {
                    let Some(old) = pg.get(c.index.to_native() as usize) else {
                        return bad("global change past the parent's globals");
                    };
                    let v = GlobalValue::from_bits(old.ty(), u128::from_le_bytes(c.hash));
                    if v.to_bits().to_le_bytes() != c.hash {
                        return bad("global bits beyond its type's width");
                    }
                    if v.to_bits() == old.to_bits() {
                        return bad("a global change to the value the parent holds");
                    }
                }
            }
        }
        Ok(())
    }

    /// Check every index field against the entries and segments it describes: run
    /// bounds and key ranges, order within and across runs, counts, object and input
    /// entries against their metadata and bytes, the timeline against the head's chain
    /// of parents.
    pub(super) fn check_index(&self) -> Result<(), ArchiveError> {
        let Some(root) = self.root()? else { return Ok(()) };
        let root_off = self.commit.map_or(0, |c| c.trailer.root);
        let bad = |offset, reason| ArchiveError::Inconsistent { offset, reason };
        let [objs, recs, inputs, tl] = self.run_refs()?;
        runs_ok::<ArchivedObjEntry>(self, &objs)?;
        runs_ok::<ArchivedInputEntry>(self, &inputs)?;
        for (table, runs) in [
            (
                "record runs overlap or are out of order",
                runs_ok::<ArchivedRecEntry>(self, &recs)?,
            ),
            (
                "timeline runs overlap or are out of order",
                runs_ok::<ArchivedTlEntry>(self, &tl)?,
            ),
        ] {
            if runs.windows(2).any(|w| matches!(w, [a, b] if a.last >= b.first)) {
                return Err(bad(root_off, table));
            }
        }
        // Records: the count, and record numbers below the next one.
        let mut n_recs = 0u64;
        let mut max_id = None;
        for r in &recs {
            for e in self.run::<ArchivedRecEntry>(r)? {
                n_recs += 1;
                max_id = Some(e.id.to_native());
            }
        }
        if n_recs != root.record_count.to_native() {
            return Err(bad(root_off, "record count differs from the record index"));
        }
        if max_id.is_some_and(|m| m >= root.next_record_id.to_native()) {
            return Err(bad(root_off, "next record number is not after every record"));
        }
        self.check_object_index(&objs, root.object_count.to_native(), root_off)?;
        self.check_input_index(&inputs)?;
        self.check_timeline(&tl, root.head.to_native(), root_off)
    }

    /// Objects: each hash once, counted (`count`), agreeing with its metadata; a
    /// delta's depth one more than its base's, full pages at depth 0.
    fn check_object_index(&self, objs: &[RunRef], count: u64, root_off: u64) -> Result<(), ArchiveError> {
        let bad = |offset, reason| ArchiveError::Inconsistent { offset, reason };
        let mut depths: HashMap<[u8; 16], u8> = HashMap::new();
        for r in objs {
            for e in self.run::<ArchivedObjEntry>(r)? {
                if depths.insert(e.hash, e.depth).is_some() {
                    return Err(bad(r.seg, "an object is indexed twice"));
                }
            }
        }
        if depths.len() as u64 != count {
            return Err(bad(root_off, "object count differs from the object index"));
        }
        for r in objs {
            for e in self.run::<ArchivedObjEntry>(r)? {
                let e = ObjEntry::from(e);
                let (_, m) = self.obj_meta(&e)?;
                let ok = match ObjectKind::from_tag(m.kind) {
                    Some(ObjectKind::Raw | ObjectKind::Lz4) => m.depth == 0 && m.parent == [0; 16],
                    Some(ObjectKind::Delta) => {
                        m.depth <= self.header.max_chain
                            && m.parent != [0; 16]
                            && depths.get(&m.parent).and_then(|d| d.checked_add(1)) == Some(m.depth)
                    }
                    None => false,
                };
                if !ok {
                    return Err(bad(e.seg, "object kind, depth or delta base is wrong"));
                }
            }
        }
        Ok(())
    }

    /// Inputs: each once, its bytes hashing to its name.
    fn check_input_index(&self, inputs: &[RunRef]) -> Result<(), ArchiveError> {
        let bad = |offset, reason| ArchiveError::Inconsistent { offset, reason };
        let mut seen = HashSet::new();
        for r in inputs {
            for e in self.run::<ArchivedInputEntry>(r)? {
                let e = InputEntry::from(e);
                if !seen.insert(e.hash) {
                    return Err(bad(r.seg, "an input is indexed twice"));
                }
                if self.hasher.bytes(self.input_bytes(&e)?) != PageHash(e.hash) {
                    return Err(bad(e.seg, "input bytes do not hash to their name"));
                }
            }
        }
        Ok(())
    }

    /// The timeline is the chain of parents of `head`, from a root, by iteration.
    fn check_timeline(&self, tl: &[RunRef], head: u64, root_off: u64) -> Result<(), ArchiveError> {
        let bad = |offset, reason| ArchiveError::Inconsistent { offset, reason };
        let mut prev: Option<u64> = None;
        for r in tl {
            for t in self.run::<ArchivedTlEntry>(r)? {
                let rec = self.rec_entry(t.id.to_native())?;
                let expected_parent = prev.unwrap_or(NONE);
                if rec.iteration != t.iteration.to_native() || rec.parent != expected_parent {
                    return Err(bad(r.seg, "timeline is not the head's chain of parents"));
                }
                prev = Some(rec.id);
            }
        }
        if prev.unwrap_or(NONE) != head {
            return Err(bad(root_off, "timeline does not end at the head"));
        }
        Ok(())
    }

    /// Check everything: every segment and trailer of the committed part (framing,
    /// checksum, rkyv validation, each commit complete), every index field against the
    /// entries it describes, every record field against what it derives from (its index
    /// entry, its parent, the difference of the page vectors), every object and input
    /// against its hash, every record's state hash, the timeline as the head's chain of
    /// parents, and that the whole archive loads into a consistent history.
    ///
    /// The checksum seed is in the header, so an edited and re-sealed file passes the
    /// checksums; this is what catches it. The fields nothing derives (creation time,
    /// writer parameters, capture statistics within their bounds) are listed in
    /// `docs/format.md`, "What `verify` proves".
    pub fn verify(&self) -> Result<VerifyReport, ArchiveError> {
        let mut rep = VerifyReport::default();
        let end = self.committed_end();
        let mut off = HEADER_LEN as u64;
        let mut prev_trailer = NONE;
        let mut extra_seen = 0u64;
        while off < end {
            usize_of(off, off)?;
            if self.magic_at(off)? {
                let t = self.check_commit(off, &mut u64::MAX.clone())?;
                if t.seq != rep.commits {
                    return Err(ArchiveError::BadSegment {
                        offset: off,
                        reason: "commit sequence numbers do not count up from 0",
                    });
                }
                if t.prev != prev_trailer {
                    return Err(ArchiveError::BadSegment {
                        offset: off,
                        reason: "trailer does not name the previous trailer",
                    });
                }
                if t.extra != extra_seen {
                    return Err(ArchiveError::BadSegment {
                        offset: off,
                        reason: "trailer does not name its commit's extra segment",
                    });
                }
                extra_seen = 0;
                prev_trailer = off;
                rep.commits += 1;
                off += TRAILER_LEN as u64;
                continue;
            }
            let h = self.seg_header(off, end)?;
            let p = self.payload_at(off, h, end)?;
            match h.kind {
                SegKind::Data => drop(rkyv::access::<ArchivedDataSeg, rancor::Error>(p).map_err(vmsg(off))?),
                SegKind::Runs => drop(rkyv::access::<ArchivedRunsSeg, rancor::Error>(p).map_err(vmsg(off))?),
                SegKind::Root => drop(rkyv::access::<ArchivedRootSeg, rancor::Error>(p).map_err(vmsg(off))?),
                SegKind::Extra => {
                    rkyv::access::<ArchivedExtraSeg, rancor::Error>(p).map_err(vmsg(off))?;
                    if extra_seen != 0 {
                        return Err(ArchiveError::BadSegment {
                            offset: off,
                            reason: "a commit holds two extra segments",
                        });
                    }
                    extra_seen = off;
                }
            }
            rep.segments += 1;
            let payload_end = off + SEG_HEADER_LEN as u64 + h.len;
            let next = align_up(payload_end).ok_or(ArchiveError::BadSegment {
                offset: off,
                reason: "segment length overflows",
            })?;
            usize_of(next, off)?;
            let pad = self
                .range(payload_end, next.saturating_sub(payload_end))
                .map_err(|e| match e {
                    ArchiveError::Truncated { .. } => ArchiveError::Truncated {
                        offset: off,
                        needed: next - off,
                        file_len: end,
                    },
                    e => e,
                })?;
            if pad.iter().any(|b| *b != 0) {
                return Err(ArchiveError::BadSegment {
                    offset: off,
                    reason: "non-zero padding after the payload",
                });
            }
            off = next;
        }
        let [objs, _, _, _] = self.run_refs()?;
        let mut buf = vec![0u8; self.header.page_size as usize];
        for r in &objs {
            for e in self.run::<ArchivedObjEntry>(r)? {
                // `read_page` rehashes what it rebuilt (`ObjectHashMismatch`).
                self.read_page(PageHash(e.hash), &mut buf)?;
                rep.objects += 1;
            }
        }
        self.check_index()?;
        self.check_extras()?;
        let history = self.load(true)?;
        rep.records = history.len() as u64;
        if let Err(_msg) = history.check() {
            return Err(ArchiveError::Inconsistent {
                offset: end,
                reason: "the loaded history's reference counts do not add up",
            });
        }
        Ok(rep)
    }
}

/// Each run of table `E` non-empty, strictly sorted by key, `first`/`last` its end keys;
/// the runs, for the checks across them.
fn runs_ok<E: IndexEntry>(a: &Archive, runs: &[RunRef]) -> Result<Vec<RunRef>, ArchiveError> {
    for r in runs {
        let v = a.run::<E>(r)?;
        let bad = |reason| ArchiveError::Inconsistent {
            offset: r.seg,
            reason,
        };
        if v.windows(2).any(|w| matches!(w, [x, y] if x.key() >= y.key())) {
            return Err(bad("index run out of order"));
        }
        let (Some(f), Some(l)) = (v.first(), v.last()) else {
            return Err(bad("empty index run"));
        };
        if f.key().range_key() != r.first || l.key().range_key() != r.last {
            return Err(bad("index run's key range differs from its entries"));
        }
    }
    Ok(runs.to_vec())
}
