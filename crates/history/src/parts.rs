//! Building a [`History`] from parts read elsewhere (an archive).
//!
//! The archive crate loads records, objects and input blobs from a file and assembles
//! them here; the history's invariants (reference counts, timeline, children) are the
//! caller's to get right and are checked by [`History::check`].

use std::collections::BTreeMap;

use rewind_snapshot::Snapshot;
use rewind_store::{InputHash, PageHash, PageStore};

use crate::{Blob, History, HistoryError, Record, RecordId};

impl History {
    /// An empty history over an already filled page store, for loading from an archive.
    ///
    /// Add records with [`History::push_loaded_record`] (parents before children),
    /// input blobs with [`History::push_loaded_input`], then call
    /// [`History::finish_loading`]. The store's reference counts must match what the
    /// records own: every page of a root record's snapshot, every non-zero page in a
    /// non-root record's change list.
    pub fn from_loaded_store(store: PageStore) -> Self {
        History {
            store,
            records: BTreeMap::new(),
            timeline: BTreeMap::new(),
            head: None,
            next_id: 0,
            inputs: Default::default(),
            abandoned: Default::default(),
            abandoned_by_iteration: Default::default(),
            meta_bytes: 0,
            input_bytes: 0,
            furthest: None,
        }
    }

    /// Add a record read from an archive. `changes` are the pages set relative to the
    /// parent, by increasing index. The parent, when given, must already be loaded.
    #[allow(clippy::too_many_arguments)]
    pub fn push_loaded_record(
        &mut self,
        id: RecordId,
        iteration: u64,
        parent: Option<RecordId>,
        snapshot: Snapshot,
        changes: Vec<(u32, PageHash)>,
        input: Option<InputHash>,
        pages_changed: u32,
        bytes_stored: u64,
    ) -> Result<(), HistoryError> {
        if self.records.contains_key(&id) {
            return Err(HistoryError::NoSuchRecord(id));
        }
        if let Some(p) = parent {
            let parent_rec = self.records.get_mut(&p).ok_or(HistoryError::NoSuchRecord(p))?;
            parent_rec.children.push(id);
        }
        if let Some(h) = input {
            if let Some(b) = self.inputs.get_mut(&h) {
                b.refs += 1;
            }
        }
        self.records.insert(
            id,
            Record {
                id,
                iteration,
                parent,
                children: Vec::new(),
                snapshot,
                changes,
                input,
                host: None,
                pages_changed,
                bytes_stored,
            },
        );
        self.next_id = self.next_id.max(id.0 + 1);
        Ok(())
    }

    /// Name `hash` (a blob added with [`History::push_loaded_input`]) as the host state
    /// of the loaded record `id`.
    pub fn push_loaded_host_state(&mut self, id: RecordId, hash: InputHash) -> Result<(), HistoryError> {
        let rec = self.records.get_mut(&id).ok_or(HistoryError::NoSuchRecord(id))?;
        if let Some(old) = rec.host.replace(hash) {
            if let Some(b) = self.inputs.get_mut(&old) {
                b.refs = b.refs.saturating_sub(1);
            }
        }
        if let Some(b) = self.inputs.get_mut(&hash) {
            b.refs += 1;
        }
        Ok(())
    }

    /// Add a blob read from an archive, an input or a host state (before the records
    /// that name it).
    pub fn push_loaded_input(&mut self, hash: InputHash, bytes: Box<[u8]>) {
        self.inputs.entry(hash).or_insert(Blob { bytes, refs: 0 });
    }

    /// Finish loading: set the head (the timeline becomes its chain of ancestors) and
    /// the next record number (at least one past the largest loaded record). Input
    /// blobs no record names are dropped.
    pub fn finish_loading(&mut self, head: Option<RecordId>, next_id: u64) -> Result<(), HistoryError> {
        self.inputs.retain(|_, b| b.refs > 0);
        self.next_id = self.next_id.max(next_id);
        match head {
            Some(h) => {
                self.checkout(h)?;
            }
            None => {
                self.head = None;
                self.timeline.clear();
            }
        }
        self.recount();
        self.furthest = self.records.values().map(|r| r.iteration).max();
        Ok(())
    }
}
