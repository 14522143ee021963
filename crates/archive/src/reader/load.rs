//! Loading the whole archive into a [`History`].

use std::collections::HashMap;

use rewind_history::{History, RecordId};
use rewind_snapshot::{PageVec, Snapshot};
use rewind_store::codec;
use rewind_store::{InputHash, Object, PageHash, PageStore, StateHash, StoreConfig};

use super::*;

/// A record rebuilt from the file, before it goes into the history.
struct Loaded {
    e: RecEntry,
    snapshot: Snapshot,
    changes: Vec<(u32, PageHash)>,
    pages_changed: u32,
    bytes_stored: u64,
}

/// The records rebuilt so far, in id order (parents come first), and how many
/// references the history will hold to each page.
#[derive(Default)]
struct Records {
    loaded: Vec<Loaded>,
    index: HashMap<u64, usize>,
    refs: HashMap<PageHash, u32>,
}

impl Records {
    fn get(&self, id: u64) -> Option<&Loaded> {
        self.index.get(&id).and_then(|i| self.loaded.get(*i))
    }

    /// Add a record. A root owns a reference to each of its pages, any other record
    /// one to each page of its change list (the history's ownership rule).
    fn push(&mut self, l: Loaded, has_parent: bool) {
        let owned: Box<dyn Iterator<Item = &PageHash>> = if has_parent {
            Box::new(l.changes.iter().map(|(_, h)| h))
        } else {
            Box::new(l.snapshot.pages().iter())
        };
        for h in owned.filter(|h| !h.is_zero()) {
            *self.refs.entry(*h).or_default() += 1;
        }
        self.index.insert(l.e.id, self.loaded.len());
        self.loaded.push(l);
    }
}

impl Archive {
    /// Load everything into a [`History`]: every record (timeline and abandoned), every
    /// object, every input and host state; the head is the last commit's. Rebuilds each record's
    /// snapshot and checks its state hash.
    pub fn to_history(&self) -> Result<History, ArchiveError> {
        self.load(false)
    }

    /// [`Archive::to_history`]; with `deep`, also check every stored record field
    /// against what it can be derived from (see [`Archive::verify`]).
    pub(super) fn load(&self, deep: bool) -> Result<History, ArchiveError> {
        let records = self.load_records(deep)?;
        let store = self.load_objects(&records.refs)?;
        let mut history = History::from_loaded_store(store);
        let [_, _, inputs, _] = self.run_refs()?;
        for r in &inputs {
            for ie in self.run(r)? {
                let ie = InputEntry::from(ie);
                let bytes = self.input_bytes(&ie)?;
                history.push_loaded_input(InputHash(ie.hash), bytes.into());
            }
        }
        for l in records.loaded {
            let input = (l.e.has_input != 0).then_some(InputHash(l.e.input));
            history.push_loaded_record(
                RecordId(l.e.id),
                l.e.iteration,
                (l.e.parent != NONE).then_some(RecordId(l.e.parent)),
                l.snapshot,
                l.changes,
                input,
                l.pages_changed,
                l.bytes_stored,
            )?;
        }
        for (id, hash) in self.host_states()? {
            if history.record(RecordId(id)).is_none() {
                return Err(ArchiveError::NoSuchRecord(RecordId(id)));
            }
            if self.input_entry(PageHash(hash.0))?.is_none() {
                return Err(ArchiveError::Inconsistent {
                    offset: self.committed_end(),
                    reason: "a host state names a blob the archive does not hold",
                });
            }
            history.push_loaded_host_state(RecordId(id), hash)?;
        }
        let head = self.head();
        if let Some(h) = head {
            if history.record(h).is_none() {
                return Err(ArchiveError::NoSuchRecord(h));
            }
        }
        history.finish_loading(head, self.next_record_id()?)?;
        Ok(history)
    }

    /// Every record with its snapshot, in id order, its state hash checked.
    fn load_records(&self, deep: bool) -> Result<Records, ArchiveError> {
        let [_, recs, _, _] = self.run_refs()?;
        let mut records = Records::default();
        let mut last_id = None;
        for r in &recs {
            for e in self.run(r)? {
                let e = RecEntry::from(e);
                if last_id.is_some_and(|l| l >= e.id) {
                    return Err(ArchiveError::Inconsistent {
                        offset: r.seg,
                        reason: "record index out of order",
                    });
                }
                last_id = Some(e.id);
                let l = self.load_record(e, &records, deep)?;
                let has_parent = l.e.parent != NONE;
                records.push(l, has_parent);
            }
        }
        Ok(records)
    }

    /// One record (whose parent `records` holds): its page vector, globals, snapshot and
    /// change list against its parent; with `deep`, its stored fields checked.
    fn load_record(&self, e: RecEntry, records: &Records, deep: bool) -> Result<Loaded, ArchiveError> {
        let (data, m) = self.rec_meta(&e)?;
        let n = self.pages_count(e.memory_len, e.seg)?;
        let parent = match e.parent {
            NONE => None,
            p => Some(records.get(p).ok_or(ArchiveError::Inconsistent {
                offset: e.seg,
                reason: "record's parent is not an earlier record",
            })?),
        };
        let pages = self.page_vector(&e, (data, m), n, parent)?;
        let gs = globals_of(data, m, e.seg, self.header.version)?;
        let globals = match &gs {
            StoredGlobals::Whole(gs) => gs
                .iter()
                .map(|g| global_of(g, e.seg))
                .collect::<Result<Vec<_>, _>>()?,
            StoredGlobals::Changes(ch) => {
                // As a read of the record would: a checkpoint stores its globals whole.
                let bad = |reason| ArchiveError::Inconsistent {
                    offset: e.seg,
                    reason,
                };
                if m.checkpoint != 0 {
                    return Err(bad("global changes past their checkpoint"));
                }
                let p = parent.ok_or(bad("global changes without a parent"))?;
                let mut globals = p.snapshot.globals().to_vec();
                apply_global_changes(&mut globals, ch, e.seg)?;
                globals
            }
        };
        let snapshot = Snapshot::from_parts(&self.hasher, pages, e.memory_len, globals);
        if snapshot.state_hash() != StateHash(e.state_hash) {
            return Err(ArchiveError::StateHashMismatch {
                record: RecordId(e.id),
                stored: StateHash(e.state_hash),
                computed: snapshot.state_hash(),
            });
        }
        let changes: Vec<(u32, PageHash)> = match parent {
            Some(p) => rewind_snapshot::diff(&p.snapshot, &snapshot)
                .into_iter()
                .map(|i| (i, snapshot.page(i as usize)))
                .collect(),
            None => snapshot
                .pages()
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.is_zero())
                .map(|(i, h)| (i as u32, *h))
                .collect(),
        };
        if deep {
            let parent_globals = parent.map(|p| p.snapshot.globals());
            self.check_record(&e, data, m, parent.map(|p| &p.e), &changes, (&gs, parent_globals))?;
        }
        Ok(Loaded {
            e,
            snapshot,
            changes,
            pages_changed: m.pages_changed.to_native(),
            bytes_stored: m.bytes_stored.to_native(),
        })
    }

    /// The page vector (`n` pages) of a record stored as `m` in `data`: its checkpoint,
    /// or `parent`'s resized to `n` with its change list applied.
    fn page_vector(
        &self,
        e: &RecEntry,
        (data, m): (&ArchivedDataSeg, &ArchivedRecMeta),
        n: usize,
        parent: Option<&Loaded>,
    ) -> Result<PageVec, ArchiveError> {
        let ch = match stored_list(e, data, m, n)? {
            StoredList::Checkpoint(v) => return Ok(v.iter().map(|p| PageHash(*p)).collect()),
            StoredList::Changes(ch) => ch,
        };
        let p = parent.ok_or(ArchiveError::Inconsistent {
            offset: e.seg,
            reason: "change list without a parent",
        })?;
        let mut v = p.snapshot.pages().clone();
        if v.len() > n {
            v.truncate(n);
        }
        while v.len() < n {
            v.push_back(PageHash::ZERO);
        }
        for c in ch {
            let i = c.index.to_native() as usize;
            if i < n {
                v.set(i, PageHash(c.hash));
            }
        }
        Ok(v)
    }

    /// A store holding every referenced page (`refs`: page → references) as a full page
    /// (lz4 or raw): the in-memory store chooses its own delta layout as the history
    /// moves on.
    fn load_objects(&self, refs: &HashMap<PageHash, u32>) -> Result<PageStore, ArchiveError> {
        let config = StoreConfig::new(self.page_size())
            .seed(self.header.seed)
            .max_chain(self.header.max_chain);
        let [objs, _, _, _] = self.run_refs()?;
        let mut entries: HashSet<PageHash> = HashSet::new();
        for r in &objs {
            for e in self.run::<ArchivedObjEntry>(r)? {
                entries.insert(PageHash(e.hash));
            }
        }
        let mut store = PageStore::new(config);
        let mut wanted: Vec<(PageHash, u32)> = refs.iter().map(|(h, n)| (*h, *n)).collect();
        wanted.sort_unstable();
        let mut page = vec![0u8; self.header.page_size as usize];
        let mut scratch = codec::Scratch::new();
        for (h, n) in wanted {
            if !entries.contains(&h) {
                return Err(ArchiveError::MissingObject { hash: h });
            }
            self.read_page(h, &mut page)?;
            let (encoding, bytes) = codec::encode_full(&page, &mut scratch);
            store.insert_object(h, Object::Full { encoding, bytes }, n)?;
        }
        Ok(store)
    }
}
