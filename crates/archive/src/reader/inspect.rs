//! Inspection: how records and objects are stored, change lists, blame, diff.

use rewind_history::{lineage, Blame, Lineage, RecordId};
use rewind_store::PageHash;

use super::*;

impl Archive {
    /// How a record is stored: the summary plus its checkpoint flag and counters.
    pub fn record_detail(&self, id: RecordId) -> Result<RecordDetail, ArchiveError> {
        let e = self.rec_entry(id.0)?;
        let (_, m) = self.rec_meta(&e)?;
        let mut info = info_of(&e);
        info.on_timeline = self.tl_lookup(e.iteration)? == Some(e.id);
        let stored = m.globals_len.to_native();
        let (globals, globals_changed) = if stored & GLOBALS_DELTA == 0 {
            (stored, None)
        } else {
            (self.globals_count(id)?, Some(stored & !GLOBALS_DELTA))
        };
        Ok(RecordDetail {
            info,
            checkpoint: m.checkpoint != 0,
            hops: m.hops.to_native(),
            pages_changed: m.pages_changed.to_native(),
            bytes_stored: m.bytes_stored.to_native(),
            globals,
            globals_changed,
        })
    }

    /// How many globals a record has: the length of the nearest whole list, found by
    /// walking parents (changes never change the count), without decoding any value.
    fn globals_count(&self, id: RecordId) -> Result<u32, ArchiveError> {
        let (mut count, mut last_seg) = (None, 0);
        self.walk(id.0, |e, data, m| {
            last_seg = e.seg;
            match globals_of(data, m, e.seg, self.header.version)? {
                StoredGlobals::Whole(gs) => {
                    count = Some(u32::try_from(gs.len()).unwrap_or(u32::MAX));
                    Ok(true)
                }
                StoredGlobals::Changes(_) => Ok(false),
            }
        })?;
        count.ok_or(ArchiveError::Inconsistent {
            offset: last_seg,
            reason: "global changes past their checkpoint",
        })
    }

    /// The stored change list of a record (`None` for a checkpoint, which stores its full
    /// page vector instead), restricted to the slots `pages` and to the record's memory.
    /// A binary search in the list: O(log changes + slots in range).
    pub(super) fn stored_changes(
        &self,
        e: &RecEntry,
        pages: std::ops::RangeInclusive<u32>,
    ) -> Result<Option<Vec<(u32, PageHash)>>, ArchiveError> {
        let (data, m) = self.rec_meta(e)?;
        if m.checkpoint != 0 {
            return Ok(None);
        }
        let n = self.pages_count(m.memory_len.to_native(), e.seg)?;
        let (start, len) = (m.list_start.to_native(), m.list_len.to_native() as u64);
        let ch = slice_of(&data.changes, start, len, e.seg, "change list out of its segment")?;
        let from = ch.partition_point(|c| c.index.to_native() < *pages.start());
        let out = ch
            .get(from..)
            .unwrap_or(&[])
            .iter()
            .map(|c| (c.index.to_native(), PageHash(c.hash)))
            .take_while(|(i, _)| i <= pages.end())
            .filter(|(i, _)| (*i as usize) < n)
            .collect();
        Ok(Some(out))
    }

    /// The pages a record changed against its parent, by slot, with their new hashes.
    ///
    /// For a record stored as a change list this is the list (slots past the record's
    /// memory left out); for a checkpoint it is computed by comparing its page vector
    /// with its parent's (slots past the parent's memory count as zero pages); for a root
    /// it is every non-zero page.
    pub fn changes(&self, id: RecordId) -> Result<Vec<(u32, PageHash)>, ArchiveError> {
        let e = self.rec_entry(id.0)?;
        if let Some(c) = self.stored_changes(&e, 0..=u32::MAX)? {
            return Ok(c);
        }
        let pages = self.pages(id)?;
        let parent = match e.parent {
            NONE => Vec::new(),
            p => self.pages(RecordId(p))?,
        };
        Ok(pages
            .iter()
            .enumerate()
            .filter(|(i, h)| parent.get(*i).copied().unwrap_or(PageHash::ZERO) != **h)
            .map(|(i, h)| (i as u32, *h))
            .collect())
    }

    pub(super) fn changes_in_entry(
        &self,
        e: &RecEntry,
        pages: std::ops::RangeInclusive<u32>,
    ) -> Result<Vec<(u32, PageHash)>, ArchiveError> {
        if let Some(c) = self.stored_changes(e, pages.clone())? {
            return Ok(c);
        }
        let n = self.pages_count(e.memory_len, e.seg)?;
        let mut out = Vec::new();
        let last = (*pages.end()).min(u32::try_from(n).unwrap_or(u32::MAX).saturating_sub(1));
        if n == 0 || *pages.start() > last {
            return Ok(out);
        }
        for i in *pages.start()..=last {
            let now = self.page_at(RecordId(e.id), i)?;
            let before = match e.parent {
                NONE => PageHash::ZERO,
                p => self.page_at(RecordId(p), i)?,
            };
            if now != before {
                out.push((i, now));
            }
        }
        Ok(out)
    }

    /// The latest record at or before `id` (following parents) at which any byte of
    /// `[addr, addr + len)` changed: a reverse watchpoint, with the semantics of
    /// [`History::blame`](rewind_history::History::blame). `None` when the bytes are the same in every record back to the
    /// oldest and are all zero.
    ///
    /// Walks back record by record, but touches only each record's index entry and a
    /// binary search in its change list; bytes are read only at records whose change list
    /// touches the range's pages.
    pub fn blame_record(&self, id: RecordId, addr: u64, len: u64) -> Result<Option<Blame>, ArchiveError> {
        Ok(self.blame_chain(id, addr, len, 1)?.into_iter().next())
    }

    /// [`Archive::blame_record`] of the record at `iteration` on the timeline, as
    /// [`History::blame`](rewind_history::History::blame) does.
    pub fn blame(&self, iteration: u64, addr: u64, len: u64) -> Result<Option<Blame>, ArchiveError> {
        let id = self.at(iteration)?.id;
        self.blame_record(id, addr, len)
    }

    /// Up to `limit` successive changes of `[addr, addr + len)` walking back from `id`:
    /// the first is [`Archive::blame_record`]; each next one is the blame of the bytes as they
    /// were just before the previous change. The last may have `at_oldest` set.
    pub fn blame_chain(
        &self,
        id: RecordId,
        addr: u64,
        len: u64,
        limit: usize,
    ) -> Result<Vec<Blame>, ArchiveError> {
        lineage::blame_chain(self, self.rec_entry(id.0)?, addr, len, limit)
    }

    /// Pages that differ between two iterations of the timeline, as
    /// `rewind::Recorder::diff` does.
    pub fn diff(&self, a: u64, b: u64) -> Result<Vec<u32>, ArchiveError> {
        let (a, b) = (self.at(a)?.id, self.at(b)?.id);
        self.diff_records(a, b)
    }

    /// Pages that differ between two records (slots past the shorter memory count as
    /// zero pages), in increasing order.
    pub fn diff_records(&self, a: RecordId, b: RecordId) -> Result<Vec<u32>, ArchiveError> {
        let (pa, pb) = (self.pages(a)?, self.pages(b)?);
        let n = pa.len().max(pb.len());
        Ok((0..n)
            .filter(|i| {
                pa.get(*i).copied().unwrap_or(PageHash::ZERO) != pb.get(*i).copied().unwrap_or(PageHash::ZERO)
            })
            .map(|i| i as u32)
            .collect())
    }

    /// Every page object in the file: how it is stored, without decoding it.
    pub fn objects(&self) -> Result<Vec<ObjectInfo>, ArchiveError> {
        let [objs, _, _, _] = self.run_refs()?;
        let mut out = Vec::new();
        for r in &objs {
            for e in self.run(r)? {
                let e = ObjEntry::from(e);
                let (_, m) = self.data_entry(
                    e.seg,
                    e.pos,
                    |d| &d.objects,
                    |m| m.hash == e.hash && m.kind == e.kind,
                    OBJECT_REASONS,
                )?;
                let kind = ObjectKind::from_tag(m.kind).ok_or(ArchiveError::Inconsistent {
                    offset: e.seg,
                    reason: "unknown object kind",
                })?;
                out.push(ObjectInfo {
                    hash: PageHash(e.hash),
                    kind,
                    parent: (kind == ObjectKind::Delta).then_some(PageHash(m.parent)),
                    depth: e.depth,
                    stored_len: m.len.to_native(),
                });
            }
        }
        Ok(out)
    }
}

/// Blame walks the index: a record's entry gives its parent and memory length, a binary
/// search in its change list tells whether it touched the range, and bytes are read only
/// there. A parent that is not an earlier record is an inconsistency, so the walk ends.
impl Lineage for Archive {
    type Record<'a> = RecEntry;
    type Error = ArchiveError;

    fn page_size(&self) -> u64 {
        self.header.page_size as u64
    }
    fn id(&self, record: &RecEntry) -> RecordId {
        RecordId(record.id)
    }
    fn iteration(&self, record: &RecEntry) -> u64 {
        record.iteration
    }
    fn memory_len(&self, record: &RecEntry) -> u64 {
        record.memory_len
    }
    fn parent(&self, record: &RecEntry) -> Result<Option<RecEntry>, ArchiveError> {
        match record.parent {
            NONE => Ok(None),
            p if p >= record.id => Err(ArchiveError::Inconsistent {
                offset: record.seg,
                reason: "record's parent is not an earlier record",
            }),
            p => self.rec_entry(p).map(Some),
        }
    }
    fn changes_touch(
        &self,
        record: &RecEntry,
        pages: std::ops::RangeInclusive<u32>,
    ) -> Result<bool, ArchiveError> {
        Ok(!self.changes_in_entry(record, pages)?.is_empty())
    }
    fn read(&self, record: &RecEntry, addr: u64, out: &mut [u8]) -> Result<(), ArchiveError> {
        self.read_record(RecordId(record.id), addr, out)
    }
    fn out_of_bounds(&self, addr: u64, len: u64, memory_len: u64) -> ArchiveError {
        ArchiveError::OutOfBounds {
            addr,
            len,
            memory_len,
        }
    }
}
