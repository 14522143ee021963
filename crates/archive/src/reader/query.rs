//! Queries: index lookups, records and the timeline, globals and inputs, page vectors,
//! and reading pages and bytes of a record's memory.

use rewind_history::RecordId;
use rewind_snapshot::{GlobalValue, StateHash};
use rewind_store::{FindObject, PageHash};

use super::*;
use crate::index::{self, IndexEntry};

impl Archive {
    pub(crate) fn run_refs(&self) -> Result<[Vec<RunRef>; 4], ArchiveError> {
        let Some(root) = self.root()? else {
            return Ok(Default::default());
        };
        let f = |v: &rkyv::vec::ArchivedVec<ArchivedRunRef>| v.iter().map(RunRef::from).collect::<Vec<_>>();
        Ok([
            f(&root.objects),
            f(&root.records),
            f(&root.inputs),
            f(&root.timeline),
        ])
    }

    /// The entries of one run of table `E`.
    pub(crate) fn run<E: IndexEntry>(&self, r: &RunRef) -> Result<&[E], ArchiveError> {
        let seg = self.runs(r.seg)?;
        slice_of(
            E::entries(seg),
            r.start,
            r.len,
            r.seg,
            "index run out of its segment",
        )
    }

    /// The entry of `key` in table `E`. The runs are probed newest first, skipping
    /// those whose key range cannot hold it, with a binary search in each; the first
    /// entry found is the answer.
    pub(super) fn lookup<E: IndexEntry>(&self, key: &E::Key) -> Result<Option<&E>, ArchiveError> {
        let Some(root) = self.root()? else { return Ok(None) };
        let runs = E::runs(root).iter().map(RunRef::from);
        index::lookup(runs, |r| Some((r.first, r.last)), |r| self.run::<E>(r), key)
    }

    pub(super) fn rec_entry(&self, id: u64) -> Result<RecEntry, ArchiveError> {
        self.lookup::<ArchivedRecEntry>(&id)?
            .map(RecEntry::from)
            .ok_or(ArchiveError::NoSuchRecord(RecordId(id)))
    }

    pub(super) fn tl_lookup(&self, iteration: u64) -> Result<Option<u64>, ArchiveError> {
        Ok(self
            .lookup::<ArchivedTlEntry>(&iteration)?
            .map(|e| e.id.to_native()))
    }

    pub(super) fn obj_entry(&self, hash: PageHash) -> Result<Option<ObjEntry>, ArchiveError> {
        Ok(self.lookup::<ArchivedObjEntry>(&hash.0)?.map(ObjEntry::from))
    }

    pub(super) fn input_entry(&self, hash: PageHash) -> Result<Option<InputEntry>, ArchiveError> {
        Ok(self.lookup::<ArchivedInputEntry>(&hash.0)?.map(InputEntry::from))
    }

    /// Entry `pos` of one table of the data segment at `seg`, with the segment, checked
    /// against the index entry that points at it: `agrees` compares the fields both
    /// hold, and `what` gives the two error reasons (past the table, disagreeing).
    pub(super) fn data_entry<'a, M>(
        &'a self,
        seg: u64,
        pos: u32,
        table: impl FnOnce(&'a ArchivedDataSeg) -> &'a [M],
        agrees: impl FnOnce(&M) -> bool,
        what: [&'static str; 2],
    ) -> Result<(&'a ArchivedDataSeg, &'a M), ArchiveError> {
        let [past, disagree] = what;
        let bad = |reason| ArchiveError::Inconsistent { offset: seg, reason };
        let data = self.data(seg)?;
        let m = table(data).get(pos as usize).ok_or(bad(past))?;
        if !agrees(m) {
            return Err(bad(disagree));
        }
        Ok((data, m))
    }

    pub(super) fn rec_meta(
        &self,
        e: &RecEntry,
    ) -> Result<(&ArchivedDataSeg, &ArchivedRecMeta), ArchiveError> {
        self.data_entry(
            e.seg,
            e.pos,
            |d| &d.records,
            |m| m.id.to_native() == e.id && m.parent.to_native() == e.parent,
            [
                "record index points past its segment",
                "record index and record disagree",
            ],
        )
    }

    /// Every record in the file, by record number. Records on the last commit's
    /// timeline have `on_timeline` set; the others are abandoned branches (or records a
    /// collection dropped from memory before a compaction rewrote the file).
    pub fn records(&self) -> Result<Vec<RecordInfo>, ArchiveError> {
        let [_, recs, _, _] = self.run_refs()?;
        let mut out = Vec::new();
        for r in &recs {
            for e in self.run(r)? {
                let e = RecEntry::from(e);
                let mut info = info_of(&e);
                info.on_timeline = self.tl_lookup(e.iteration)? == Some(e.id);
                out.push(info);
            }
        }
        Ok(out)
    }

    /// The timeline of the last commit's head, oldest first.
    pub fn timeline(&self) -> Result<Vec<RecordInfo>, ArchiveError> {
        let [_, _, _, tl] = self.run_refs()?;
        let mut out = Vec::new();
        for r in &tl {
            for e in self.run::<ArchivedTlEntry>(r)? {
                let mut info = info_of(&self.rec_entry(e.id.to_native())?);
                info.on_timeline = true;
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Records off the timeline (abandoned branches), by record number.
    pub fn abandoned(&self) -> Result<Vec<RecordInfo>, ArchiveError> {
        Ok(self.records()?.into_iter().filter(|r| !r.on_timeline).collect())
    }

    /// A record by number.
    pub fn record(&self, id: RecordId) -> Result<RecordInfo, ArchiveError> {
        let e = self.rec_entry(id.0)?;
        let mut info = info_of(&e);
        info.on_timeline = self.tl_lookup(e.iteration)? == Some(e.id);
        Ok(info)
    }

    /// The record of `iteration` on the last commit's timeline.
    pub fn at(&self, iteration: u64) -> Result<RecordInfo, ArchiveError> {
        let id = self
            .tl_lookup(iteration)?
            .ok_or(ArchiveError::NotOnTimeline { iteration })?;
        let mut info = info_of(&self.rec_entry(id)?);
        if info.iteration != iteration {
            return Err(ArchiveError::Inconsistent {
                offset: self.committed_end(),
                reason: "timeline entry names a record of another iteration",
            });
        }
        info.on_timeline = true;
        Ok(info)
    }

    /// The state hash of `iteration` on the timeline. Touches the index only.
    pub fn state_hash(&self, iteration: u64) -> Result<StateHash, ArchiveError> {
        Ok(self.at(iteration)?.state_hash)
    }

    /// The globals of a record. A record stored with the changes against its parent's
    /// globals is rebuilt from the nearest record (at most `checkpoint_hops` back) that
    /// stores them whole.
    pub fn globals(&self, id: RecordId) -> Result<Vec<GlobalValue>, ArchiveError> {
        let mut changes: Vec<(u64, &[ArchivedChangeRec])> = Vec::new();
        let mut whole: Option<Vec<GlobalValue>> = None;
        let mut last_seg = 0;
        self.walk(id.0, |e, data, m| {
            last_seg = e.seg;
            match globals_of(data, m, e.seg, self.header.version)? {
                StoredGlobals::Whole(gs) => {
                    whole = Some(gs.iter().map(|g| global_of(g, e.seg)).collect::<Result<_, _>>()?);
                    Ok(true)
                }
                StoredGlobals::Changes(ch) => {
                    changes.push((e.seg, ch));
                    Ok(false)
                }
            }
        })?;
        // The walk stops at a checkpoint, which must store its globals whole.
        let mut globals = whole.ok_or(ArchiveError::Inconsistent {
            offset: last_seg,
            reason: "global changes past their checkpoint",
        })?;
        for (seg, ch) in changes.iter().rev() {
            apply_global_changes(&mut globals, ch, *seg)?;
        }
        Ok(globals)
    }

    /// The input blob recorded with a record, borrowed from the file.
    pub fn input(&self, id: RecordId) -> Result<Option<&[u8]>, ArchiveError> {
        let e = self.rec_entry(id.0)?;
        if e.has_input == 0 {
            return Ok(None);
        }
        let hash = PageHash(e.input);
        let ie = self.input_entry(hash)?.ok_or(ArchiveError::Inconsistent {
            offset: e.seg,
            reason: "record names an input the archive does not hold",
        })?;
        self.input_bytes(&ie).map(Some)
    }

    pub(crate) fn input_bytes(&self, ie: &InputEntry) -> Result<&[u8], ArchiveError> {
        let (data, m) = self.data_entry(
            ie.seg,
            ie.pos,
            |d| &d.inputs,
            |m| m.hash == ie.hash,
            [
                "input index points past its segment",
                "input index and input disagree",
            ],
        )?;
        slice_of(
            &data.input_bytes,
            m.start.to_native(),
            m.len.to_native(),
            ie.seg,
            "input bytes out of their segment",
        )
    }

    pub(super) fn pages_count(&self, memory_len: u64, offset: u64) -> Result<usize, ArchiveError> {
        let ps = self.header.page_size as u64;
        if memory_len > MAX_MEMORY || !memory_len.is_multiple_of(ps) {
            return Err(ArchiveError::Inconsistent {
                offset,
                reason: "memory length is over 4 GiB or not a whole number of pages",
            });
        }
        usize_of(memory_len / ps, offset)
    }

    /// Walk from a record towards its checkpoint, at most `checkpoint_hops` change lists.
    /// Calls `visit` with each record's segment, meta and list; stops when `visit` says so.
    pub(super) fn walk<'a>(
        &'a self,
        id: u64,
        mut visit: impl FnMut(&RecEntry, &'a ArchivedDataSeg, &'a ArchivedRecMeta) -> Result<bool, ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let mut cur = self.rec_entry(id)?;
        let mut hops = 0u32;
        loop {
            let (data, m) = self.rec_meta(&cur)?;
            if visit(&cur, data, m)? || m.checkpoint != 0 {
                return Ok(());
            }
            hops += 1;
            let parent = m.parent.to_native();
            if parent == NONE || parent >= cur.id || hops > self.header.checkpoint_hops {
                return Err(ArchiveError::Inconsistent {
                    offset: cur.seg,
                    reason: "change list without a reachable checkpoint",
                });
            }
            cur = self.rec_entry(parent)?;
        }
    }

    /// The page hash in slot `index` of a record (zero past its memory).
    pub fn page_at(&self, id: RecordId, index: u32) -> Result<PageHash, ArchiveError> {
        let mut found = PageHash::ZERO;
        let i = index as usize;
        self.walk(id.0, |e, data, m| {
            let n = self.pages_count(m.memory_len.to_native(), e.seg)?;
            if i >= n {
                found = PageHash::ZERO;
                return Ok(true);
            }
            let (start, len) = (m.list_start.to_native(), m.list_len.to_native() as u64);
            if m.checkpoint != 0 {
                let pages = slice_of(&data.pages, start, len, e.seg, "page vector out of its segment")?;
                found = PageHash(pages.get(i).copied().unwrap_or([0; 16]));
                return Ok(true);
            }
            let ch = slice_of(&data.changes, start, len, e.seg, "change list out of its segment")?;
            if let Ok(k) = ch.binary_search_by_key(&index, |c| c.index.to_native()) {
                found = PageHash(ch.get(k).map_or([0; 16], |c| c.hash));
                return Ok(true);
            }
            Ok(false)
        })?;
        Ok(found)
    }

    /// The full page vector of a record.
    pub fn pages(&self, id: RecordId) -> Result<Vec<PageHash>, ArchiveError> {
        let mut lists: Vec<(usize, &[ArchivedChangeRec])> = Vec::new();
        let mut base: Vec<PageHash> = Vec::new();
        self.walk(id.0, |e, data, m| {
            let n = self.pages_count(m.memory_len.to_native(), e.seg)?;
            match stored_list(e, data, m, n)? {
                StoredList::Checkpoint(pages) => {
                    base = pages.iter().map(|p| PageHash(*p)).collect();
                    return Ok(true);
                }
                StoredList::Changes(ch) => lists.push((n, ch)),
            }
            Ok(false)
        })?;
        for (n, ch) in lists.iter().rev() {
            base.resize(*n, PageHash::ZERO);
            for c in ch.iter() {
                if let Some(slot) = base.get_mut(c.index.to_native() as usize) {
                    *slot = PageHash(c.hash);
                }
            }
        }
        Ok(base)
    }

    /// The memory length of a record.
    pub fn memory_len(&self, id: RecordId) -> Result<u64, ArchiveError> {
        Ok(self.rec_entry(id.0)?.memory_len)
    }

    /// The stored object of a page, borrowed from the file (`None` when absent).
    pub fn object(&self, hash: PageHash) -> Result<Option<rewind_store::ObjectRef<'_>>, ArchiveError> {
        let Some(e) = self.obj_entry(hash)? else {
            return Ok(None);
        };
        self.object_of(&e).map(Some)
    }

    /// The Data-segment meta of an object index entry, which must agree with it on hash,
    /// kind and depth.
    pub(super) fn obj_meta(
        &self,
        e: &ObjEntry,
    ) -> Result<(&ArchivedDataSeg, &ArchivedObjMeta), ArchiveError> {
        self.data_entry(
            e.seg,
            e.pos,
            |d| &d.objects,
            |m| m.hash == e.hash && m.kind == e.kind && m.depth == e.depth,
            OBJECT_REASONS,
        )
    }

    pub(crate) fn object_of(&self, e: &ObjEntry) -> Result<rewind_store::ObjectRef<'_>, ArchiveError> {
        let (data, m) = self.obj_meta(e)?;
        let bad = |reason| ArchiveError::Inconsistent {
            offset: e.seg,
            reason,
        };
        let bytes = slice_of(
            &data.object_bytes,
            m.start.to_native(),
            m.len.to_native() as u64,
            e.seg,
            "object bytes out of their segment",
        )?;
        let kind = ObjectKind::from_tag(m.kind).ok_or(bad("unknown object kind"))?;
        Ok(match kind.encoding() {
            Some(encoding) => rewind_store::ObjectRef::Full { encoding, bytes },
            None => rewind_store::ObjectRef::Delta {
                parent: PageHash(m.parent),
                runs: bytes,
            },
        })
    }

    /// Rebuild one page into `out` (page-size bytes): decompresses only this page and the
    /// deltas under it, at most `max_chain` of them (the same rebuild as the in-memory
    /// store's, through [`FindObject`]), and checks the bytes hash to `hash`.
    pub fn read_page(&self, hash: PageHash, out: &mut [u8]) -> Result<(), ArchiveError> {
        let ps = self.header.page_size as usize;
        if out.len() != ps {
            return Err(ArchiveError::OutOfBounds {
                addr: 0,
                len: out.len() as u64,
                memory_len: ps as u64,
            });
        }
        rewind_store::rebuild(self, hash, out, self.header.max_chain as usize)?;
        // Content addressing is only as good as this check: a page whose bytes were
        // edited (and its segment checksum re-sealed) must not be returned as `hash`.
        // One xxh3-128 pass over a page costs far less than decoding it.
        let found = self.hasher.page(out);
        if found != hash {
            return Err(ArchiveError::ObjectHashMismatch { hash, found });
        }
        Ok(())
    }

    /// Read `out.len()` bytes at `addr` of a record's memory (by record: any branch;
    /// [`Archive::read`] reads by iteration on the timeline).
    pub fn read_record(&self, id: RecordId, addr: u64, out: &mut [u8]) -> Result<(), ArchiveError> {
        let e = self.rec_entry(id.0)?;
        let len = out.len() as u64;
        if addr.checked_add(len).is_none_or(|end| end > e.memory_len) {
            return Err(ArchiveError::OutOfBounds {
                addr,
                len,
                memory_len: e.memory_len,
            });
        }
        let ps = self.header.page_size as u64;
        let mut buf = vec![0u8; ps as usize];
        // Finding one page walks change lists back to a checkpoint; past a few pages it
        // is cheaper to rebuild the record's page vector once.
        let first_page = addr / ps;
        let pages_touched = if len == 0 {
            0
        } else {
            (addr + len - 1) / ps - first_page + 1
        };
        let vector = if pages_touched > 8 {
            Some(self.pages(id)?)
        } else {
            None
        };
        let mut done = 0usize;
        while (done as u64) < len {
            let a = addr + done as u64;
            let idx = u32::try_from(a / ps).map_err(|_| ArchiveError::OutOfBounds {
                addr,
                len,
                memory_len: e.memory_len,
            })?;
            let off = (a % ps) as usize;
            let take = (ps as usize - off).min(out.len() - done);
            let h = match &vector {
                Some(v) => v.get(idx as usize).copied().ok_or(ArchiveError::OutOfBounds {
                    addr,
                    len,
                    memory_len: e.memory_len,
                })?,
                None => self.page_at(id, idx)?,
            };
            self.read_page(h, &mut buf)?;
            let (Some(dst), Some(src)) = (out.get_mut(done..done + take), buf.get(off..off + take)) else {
                break;
            };
            dst.copy_from_slice(src);
            done += take;
        }
        Ok(())
    }

    /// Read `out.len()` bytes at `addr` of `iteration` on the timeline, as
    /// [`History::read`](rewind_history::History::read) does.
    pub fn read(&self, iteration: u64, addr: u64, out: &mut [u8]) -> Result<(), ArchiveError> {
        let id = self.at(iteration)?.id;
        self.read_record(id, addr, out)
    }
}

/// The archive as a source of page objects, so [`rewind_store::rebuild`] reads its pages
/// as it reads the in-memory store's.
impl FindObject for Archive {
    type Error = ArchiveError;

    fn find_object(&self, hash: PageHash) -> Result<Option<rewind_store::ObjectRef<'_>>, ArchiveError> {
        self.object(hash)
    }
}
