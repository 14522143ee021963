//! Appending a history to an archive.
#![deny(clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rewind_history::History;
use rewind_snapshot::GlobalValue;
use rewind_store::codec::{self, Encoding, Scratch};
use rewind_store::{InputHash, ObjectRef, PageHash};
use rkyv::rancor;

use crate::format::*;
use crate::lock::ArchiveLock;
use crate::reader::{own_input, own_obj, own_rec, own_tl, Archive};
use crate::ArchiveError;

/// A record's page vector is written in full (a checkpoint) when its change list would
/// be the 257th since the last checkpoint on its chain of parents.
pub const CHECKPOINT_HOPS: u32 = 256;
/// Index runs of one level are merged into one run of the next level when this many
/// have accumulated (a tiered LSM: every entry is rewritten once per level).
pub const MERGE_FANOUT: u32 = 8;

/// When appended commits are forced to stable storage.
///
/// Whatever the policy, every append that returned `Ok` has handed its bytes to the
/// operating system: if only the *process* dies (a panic, `kill -9`), every such commit
/// is in the file and reopens intact. The policies differ after an operating-system
/// crash or power loss:
///
/// - [`Durability::EveryAppend`]: `append` returns only after its commit is on stable
///   storage (the data, root and trailer are written, `fdatasync`ed, then the trailer
///   written and `fdatasync`ed again, so a trailer never reaches the disk before the
///   segments it covers). Every commit whose `append` returned survives; at most the
///   commit in progress is lost, and it shows up as a torn tail.
/// - [`Durability::EveryN`]`(n)`: the same two-phase sync on every `n`-th append (and on
///   [`ArchiveWriter::sync`]). Commits up to the last synced one survive; up to `n - 1`
///   later commits may be lost. Because their writes were not ordered by a sync, the OS
///   may have kept a later trailer but not the segments before it. When the lost bytes
///   include that commit's root, opening reports [`ArchiveError::DamagedTail`] (a valid
///   trailer naming a commit that does not check) and [`crate::repair_with`] with
///   `force` cuts back to the last complete commit; otherwise the file opens at that
///   commit and a read of a lost segment (or [`Archive::verify`]) reports a
///   [`ArchiveError::ChecksumMismatch`] naming its offset. Nothing is silently misread.
/// - [`Durability::Manual`]: only [`ArchiveWriter::sync`] syncs; as `EveryN` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Sync every commit before `append` returns.
    EveryAppend,
    /// Sync every `n`-th commit.
    EveryN(u32),
    /// Sync only on [`ArchiveWriter::sync`].
    Manual,
}

/// What one [`ArchiveWriter::append`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Records written.
    pub records: u64,
    /// Page objects written.
    pub objects: u64,
    /// Input blobs written.
    pub inputs: u64,
    /// Of the records, those written with a full page vector (checkpoints).
    pub checkpoints: u64,
    /// Bytes appended to the file.
    pub bytes: u64,
    /// True when this commit was synced to stable storage.
    pub synced: bool,
    /// False when there was nothing to write (no commit was made).
    pub committed: bool,
}

const PENDING: u64 = u64::MAX;

#[derive(Clone, Debug)]
struct MemRun<E> {
    seg: u64,
    start: u64,
    level: u8,
    entries: Arc<[E]>,
    len: usize,
}

impl<E> MemRun<E> {
    fn used(&self) -> &[E] {
        self.entries.get(..self.len).unwrap_or(&[])
    }
    fn pending(entries: Vec<E>, level: u8) -> Self {
        let len = entries.len();
        MemRun {
            seg: PENDING,
            start: 0,
            level,
            entries: entries.into(),
            len,
        }
    }
}

trait Keyed {
    fn key(&self) -> u64;
}
impl Keyed for ObjEntry {
    fn key(&self) -> u64 {
        hash_key(&self.hash)
    }
}
impl Keyed for RecEntry {
    fn key(&self) -> u64 {
        self.id
    }
}
impl Keyed for InputEntry {
    fn key(&self) -> u64 {
        hash_key(&self.hash)
    }
}
impl Keyed for TlEntry {
    fn key(&self) -> u64 {
        self.iteration
    }
}

#[derive(Clone, Debug, Default)]
struct Tables {
    objects: Vec<MemRun<ObjEntry>>,
    records: Vec<MemRun<RecEntry>>,
    inputs: Vec<MemRun<InputEntry>>,
    timeline: Vec<MemRun<TlEntry>>,
}

#[derive(Clone, Copy, Debug)]
struct RecState {
    iteration: u64,
    parent: u64,
    hops: u32,
    since: u64,
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

fn refs_of<E: Keyed>(runs: &[MemRun<E>], runs_off: u64) -> Vec<RunRef> {
    runs.iter()
        .map(|r| RunRef {
            seg: if r.seg == PENDING { runs_off } else { r.seg },
            start: r.start,
            len: r.len as u64,
            first: r.used().first().map_or(0, |e| e.key()),
            last: r.used().last().map_or(0, |e| e.key()),
            level: r.level,
        })
        .collect()
}

fn place<E: Clone>(runs: &mut [MemRun<E>], out: &mut Vec<E>) {
    for r in runs.iter_mut().filter(|r| r.seg == PENDING) {
        r.start = out.len() as u64;
        out.extend_from_slice(r.used());
    }
}

fn tl_lookup(tl: &[MemRun<TlEntry>], iteration: u64) -> Option<u64> {
    for r in tl.iter().rev() {
        let u = r.used();
        match (u.first(), u.last()) {
            (Some(f), Some(l)) if f.iteration <= iteration && iteration <= l.iteration => {
                let i = u.binary_search_by_key(&iteration, |e| e.iteration).ok()?;
                return u.get(i).map(|e| e.id);
            }
            _ => {}
        }
    }
    None
}

fn push_seg(buf: &mut Vec<u8>, base: u64, kind: SegKind, payload: &[u8], seed: u64) -> u64 {
    let off = base + buf.len() as u64;
    buf.extend_from_slice(&SegHeader::encode(kind, payload, seed));
    buf.extend_from_slice(payload);
    while !(buf.len() as u64).is_multiple_of(ALIGN) {
        buf.push(0);
    }
    off
}

fn global_rec(g: &GlobalValue) -> GlobalRec {
    GlobalRec {
        ty: g.ty() as u8,
        bits: g.to_bits().to_le_bytes(),
    }
}

fn ser<T>(v: &T) -> Result<rkyv::util::AlignedVec, ArchiveError>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rancor::Error>(v).map_err(|e| ArchiveError::Validation {
        offset: 0,
        message: format!("serializing: {e}"),
    })
}

/// Appends a [`History`] to an archive file, commit by commit.
///
/// The writer remembers what the file holds (records by number, objects and inputs by
/// hash), so each [`ArchiveWriter::append`] writes only what is new: its cost is
/// proportional to the new records' changed pages, not to memory or to the file.
pub struct ArchiveWriter {
    file: File,
    path: PathBuf,
    header: Header,
    end: u64,
    durability: Durability,
    unsynced: u32,
    seq: u64,
    last_trailer: u64,
    objects: ObjectIndex,
    records: HashMap<u64, RecState>,
    inputs: HashSet<InputHash>,
    next_unwritten: u64,
    tables: Tables,
    head: u64,
    scratch: Scratch,
    /// The writer lock; `None` only for the private temporary file of a compaction.
    lock: Option<ArchiveLock>,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("path", &self.path)
            .field("end", &self.end)
            .field("seq", &self.seq)
            .field("records", &self.records.len())
            .field("objects", &self.objects.len())
            .finish()
    }
}

impl ArchiveWriter {
    /// Create a new archive at `path` for `history`'s configuration (page size, seed,
    /// delta chain bound), with an empty first commit, and take its writer lock.
    ///
    /// Refuses with [`ArchiveError::Exists`] when anything exists at `path` (use
    /// [`ArchiveWriter::replace`] to replace an archive), and with
    /// [`ArchiveError::Locked`] when another writer holds the lock. The file is built
    /// under a temporary name in the same directory, synced, and only then linked in
    /// under `path` (and the directory synced), so `path` never names a half-written
    /// file and nothing that exists is ever truncated.
    pub fn create(
        path: impl AsRef<Path>,
        history: &History,
        durability: Durability,
    ) -> Result<Self, ArchiveError> {
        let path = path.as_ref();
        let lock = ArchiveLock::acquire(path)?;
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(ArchiveError::Exists {
                path: path.to_path_buf(),
            });
        }
        let (tmp, file) = temp_beside(path, "create")?;
        let mut w = match Self::start(file, path, history, durability) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // A hard link puts the finished file under `path` only if nothing is there:
        // the no-clobber rename.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ArchiveError::Exists {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(ArchiveError::io("link", path)(e)),
        }
        sync_dir(path)?;
        w.lock = Some(lock);
        Ok(w)
    }

    /// Create an archive at `path` as [`ArchiveWriter::create`] does, replacing any
    /// archive already there (and taking its writer lock, so never under a writer).
    ///
    /// The new file is built under a temporary name and renamed over the old one: a
    /// reader that has the old file mapped keeps reading it intact (its inode lives on
    /// until unmapped). A symbolic link at `path` is followed (its target is replaced,
    /// the link stays) and the old file's permission bits are kept. Anything at the
    /// target but a regular file is refused with [`ArchiveError::NotAFile`].
    pub fn replace(
        path: impl AsRef<Path>,
        history: &History,
        durability: Durability,
    ) -> Result<Self, ArchiveError> {
        let path = path.as_ref();
        let lock = ArchiveLock::acquire(path)?;
        let target = crate::lock::resolve(path);
        let perms = existing_permissions(&target)?;
        let (tmp, file) = temp_beside(&target, "replace")?;
        let result = (|| {
            if let Some(p) = perms {
                file.set_permissions(p).map_err(ArchiveError::io("chmod", &tmp))?;
            }
            let w = Self::start(file, path, history, durability)?;
            std::fs::rename(&tmp, &target).map_err(ArchiveError::io("rename", &target))?;
            Ok(w)
        })();
        let mut w = match result {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        sync_dir(&target)?;
        w.lock = Some(lock);
        Ok(w)
    }

    /// Write the header and an empty first commit to a new, empty `file` and sync it.
    /// The caller places the file under its name and holds the lock.
    pub(crate) fn start(
        file: File,
        path: &Path,
        history: &History,
        durability: Durability,
    ) -> Result<Self, ArchiveError> {
        let created_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = Header {
            page_size: history.page_size().bytes() as u32,
            max_chain: history.store().max_chain(),
            seed: history.store().hasher().seed(),
            checkpoint_hops: CHECKPOINT_HOPS,
            merge_fanout: MERGE_FANOUT,
            created_unix,
        };
        file.write_all_at(&header.encode(), 0)
            .map_err(ArchiveError::io("write", path))?;
        let mut w = ArchiveWriter {
            file,
            path: path.to_path_buf(),
            header,
            end: HEADER_LEN as u64,
            durability,
            unsynced: 0,
            seq: 0,
            last_trailer: NONE,
            objects: ObjectIndex::default(),
            records: HashMap::new(),
            inputs: HashSet::new(),
            next_unwritten: 0,
            tables: Tables::default(),
            head: NONE,
            scratch: Scratch::new(),
            lock: None,
        };
        w.append_inner(history, true)?;
        w.sync()?;
        Ok(w)
    }

    /// Open an existing archive to append to it. A file with a torn tail is refused
    /// ([`ArchiveError::TornTail`]): call [`crate::repair`] first.
    ///
    /// Takes the archive's writer lock ([`ArchiveError::Locked`] when another writer,
    /// `repair` or `compact` holds it) and keeps it until the writer is dropped.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, ArchiveError> {
        let path = path.as_ref();
        let lock = ArchiveLock::acquire(path)?;
        let archive = Archive::open(path)?;
        if let Some(t) = archive.torn_tail() {
            return Err(ArchiveError::TornTail {
                offset: t.offset,
                len: t.len,
            });
        }
        let header = *archive.header();
        let [objs, recs, inputs, tl] = archive.run_refs()?;
        let mut tables = Tables::default();
        let mut objects = ObjectIndex::default();
        let mut records = HashMap::new();
        let mut input_set = HashSet::new();
        for r in &objs {
            let v: Vec<ObjEntry> = archive.run(r)?.iter().map(own_obj).collect();
            for e in &v {
                objects.insert(PageHash(e.hash), e.depth);
            }
            tables.objects.push(loaded_run(r, v));
        }
        for r in &recs {
            let v: Vec<RecEntry> = archive.run(r)?.iter().map(own_rec).collect();
            for e in &v {
                records.insert(
                    e.id,
                    RecState {
                        iteration: e.iteration,
                        parent: e.parent,
                        hops: e.hops,
                        since: e.since,
                    },
                );
            }
            tables.records.push(loaded_run(r, v));
        }
        for r in &inputs {
            let v: Vec<InputEntry> = archive.run(r)?.iter().map(own_input).collect();
            for e in &v {
                input_set.insert(InputHash(e.hash));
            }
            tables.inputs.push(loaded_run(r, v));
        }
        for r in &tl {
            let v: Vec<TlEntry> = archive.run(r)?.iter().map(own_tl).collect();
            tables.timeline.push(loaded_run(r, v));
        }
        let (seq, last_trailer, head) = match archive.last_trailer() {
            Some((off, t)) => (t.seq + 1, off, t.head),
            None => (0, NONE, NONE),
        };
        let next_unwritten = archive
            .next_record_id()?
            .max(records.keys().max().map_or(0, |m| m + 1));
        let end = archive.committed_end();
        drop(archive);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(ArchiveError::io("open", path))?;
        Ok(ArchiveWriter {
            file,
            path: path.to_path_buf(),
            header,
            end,
            durability,
            unsynced: 0,
            seq,
            last_trailer,
            objects,
            records,
            inputs: input_set,
            next_unwritten,
            tables,
            head,
            scratch: Scratch::new(),
            lock: Some(lock),
        })
    }

    /// The file's length after the last commit.
    pub fn len(&self) -> u64 {
        self.end
    }

    /// True when the archive holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records in the file.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// Hands written bytes to the OS. Appends write straight to the file, so this only
    /// exists for symmetry with [`ArchiveWriter::sync`]; after it (as after every append)
    /// a process crash loses nothing.
    pub fn flush(&mut self) -> Result<(), ArchiveError> {
        use std::io::Write;
        self.file.flush().map_err(ArchiveError::io("flush", &self.path))
    }

    /// Force every commit so far to stable storage (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), ArchiveError> {
        self.file
            .sync_data()
            .map_err(ArchiveError::io("sync", &self.path))?;
        self.unsynced = 0;
        Ok(())
    }

    /// Write every record, page object and input of `history` the file does not hold
    /// yet, and the new head, as one commit. Nothing is written when nothing changed.
    ///
    /// `history` must be the history this archive was created for (same page size, seed
    /// and chain bound), or one loaded from it with [`Archive::to_history`].
    pub fn append(&mut self, history: &History) -> Result<AppendReport, ArchiveError> {
        self.append_inner(history, false)
    }

    fn append_inner(&mut self, history: &History, force: bool) -> Result<AppendReport, ArchiveError> {
        let store = history.store();
        if store.page_size().bytes() as u32 != self.header.page_size {
            return Err(ArchiveError::ConfigMismatch { what: "page size" });
        }
        if store.hasher().seed() != self.header.seed {
            return Err(ArchiveError::ConfigMismatch { what: "hash seed" });
        }
        if store.max_chain() != self.header.max_chain {
            return Err(ArchiveError::ConfigMismatch {
                what: "delta chain bound",
            });
        }
        let head = history.head().map_or(NONE, |r| r.id().0);
        let mut fresh: Vec<&rewind_history::Record> = history
            .records()
            .rev()
            .take_while(|r| r.id().0 >= self.next_unwritten)
            .collect();
        fresh.reverse();
        if fresh.is_empty() && head == self.head && !force {
            return Ok(AppendReport::default());
        }
        let seed = self.header.seed;
        let data_off = self.end;
        let mut data = DataSeg::default();
        let mut rep = AppendReport::default();
        let mut new_objs: HashMap<PageHash, u8> = HashMap::new();
        let mut obj_entries: Vec<ObjEntry> = Vec::new();
        let mut new_recs: HashMap<u64, RecState> = HashMap::new();
        let mut rec_entries: Vec<RecEntry> = Vec::new();
        let mut new_inputs: HashSet<InputHash> = HashSet::new();
        let mut input_entries: Vec<InputEntry> = Vec::new();
        let ps = self.header.page_size as usize;
        let mut page_buf = vec![0u8; ps];
        let mut base_buf = vec![0u8; ps];
        let mut delta_buf: Vec<u8> = Vec::with_capacity(ps);

        for r in &fresh {
            let id = r.id().0;
            let snap = r.snapshot();
            let parent = match r.parent() {
                Some(p) => {
                    let st = self
                        .records
                        .get(&p.0)
                        .or_else(|| new_recs.get(&p.0))
                        .copied()
                        .ok_or(ArchiveError::NotAppendable {
                            reason: "a record's parent is neither in the file nor in the history",
                        })?;
                    let psnap = history.record(p).ok_or(ArchiveError::NotAppendable {
                        reason: "a record's parent is not in the history",
                    })?;
                    Some((p.0, st, psnap.snapshot()))
                }
                None => None,
            };
            let n = snap.pages().len();
            let changed: Option<Vec<u32>> = parent.map(|(_, _, ps)| rewind_snapshot::diff(ps, snap));
            // Objects first: every new page of this record, bases before deltas.
            {
                let mut ctx = ObjCtx {
                    history,
                    written: &self.objects,
                    new: &mut new_objs,
                    data: &mut data,
                    entries: &mut obj_entries,
                    data_off,
                    max_chain: self.header.max_chain,
                    scratch: &mut self.scratch,
                    buf: &mut page_buf,
                    base_buf: &mut base_buf,
                    delta_buf: &mut delta_buf,
                };
                match (&changed, &parent) {
                    (Some(c), Some((_, _, psnap))) => {
                        for &i in c {
                            ctx.ensure(snap.page(i as usize), psnap.page(i as usize))?;
                        }
                    }
                    _ => {
                        for h in snap.pages().iter() {
                            ctx.ensure(*h, PageHash::ZERO)?;
                        }
                    }
                }
            }
            let (checkpoint, hops, since) = match (&parent, &changed) {
                (Some((_, st, _)), Some(c))
                    if st.hops < self.header.checkpoint_hops
                        && st.since + c.len() as u64 <= (n as u64).max(64) =>
                {
                    (false, st.hops + 1, st.since + c.len() as u64)
                }
                _ => (true, 0, 0),
            };
            let globals_start = data.globals.len() as u64;
            data.globals.extend(snap.globals().iter().map(global_rec));
            let (list_start, list_len) = if checkpoint {
                rep.checkpoints += 1;
                let s = data.pages.len() as u64;
                data.pages.extend(snap.pages().iter().map(|h| h.0));
                (s, n)
            } else {
                let s = data.changes.len() as u64;
                let c = changed.as_deref().unwrap_or(&[]);
                data.changes.extend(c.iter().map(|&i| ChangeRec {
                    index: i,
                    hash: snap.page(i as usize).0,
                }));
                (s, c.len())
            };
            let input = r.input_hash();
            if let Some(h) = input {
                if !self.inputs.contains(&h) && !new_inputs.contains(&h) {
                    let bytes = history.input(r.id()).ok_or(ArchiveError::NotAppendable {
                        reason: "a record names an input blob the history does not hold",
                    })?;
                    let start = data.input_bytes.len() as u64;
                    data.input_bytes.extend_from_slice(bytes);
                    input_entries.push(InputEntry {
                        hash: h.0,
                        seg: data_off,
                        pos: data.inputs.len() as u32,
                    });
                    data.inputs.push(InputMeta {
                        hash: h.0,
                        start,
                        len: bytes.len() as u64,
                    });
                    new_inputs.insert(h);
                }
            }
            let parent_id = parent.map_or(NONE, |p| p.0);
            // Counts against the parent as this file holds it: after a collection that
            // parent may be further back than the one the record was captured against,
            // so the capture's count is replaced by the length of the difference, and
            // the bytes stored at capture are bounded by a page per changed page.
            let pages_changed = changed.as_ref().map_or(r.pages_changed(), |c| c.len() as u32);
            let bytes_stored = match &changed {
                Some(_) => r
                    .bytes_stored()
                    .min(u64::from(pages_changed) * self.header.page_size as u64),
                None => r.bytes_stored(),
            };
            let meta = RecMeta {
                id,
                iteration: r.iteration(),
                parent: parent_id,
                memory_len: snap.memory_len(),
                bytes_stored,
                state_hash: r.state_hash().0,
                input: input.map_or([0; 16], |h| h.0),
                has_input: input.is_some() as u8,
                checkpoint: checkpoint as u8,
                pages_changed,
                hops,
                globals_start,
                globals_len: snap.globals().len() as u32,
                list_start,
                list_len: list_len as u32,
            };
            if snap.memory_len() > MAX_MEMORY {
                return Err(ArchiveError::NotAppendable {
                    reason: "memory over 4 GiB (the format's limit)",
                });
            }
            rec_entries.push(RecEntry {
                id,
                iteration: meta.iteration,
                parent: parent_id,
                memory_len: meta.memory_len,
                seg: data_off,
                state_hash: meta.state_hash,
                input: meta.input,
                has_input: meta.has_input,
                pos: data.records.len() as u32,
                hops,
                since,
            });
            data.records.push(meta);
            new_recs.insert(
                id,
                RecState {
                    iteration: r.iteration(),
                    parent: parent_id,
                    hops,
                    since,
                },
            );
        }
        rep.records = rec_entries.len() as u64;
        rep.objects = obj_entries.len() as u64;
        rep.inputs = input_entries.len() as u64;

        // The index: new level-0 runs, the new timeline, tiered merges.
        let mut tables = self.tables.clone();
        let fanout = self.header.merge_fanout as usize;
        if !obj_entries.is_empty() {
            obj_entries.sort_unstable_by_key(|e| e.hash);
            tables.objects.push(MemRun::pending(obj_entries, 0));
        }
        if !rec_entries.is_empty() {
            tables.records.push(MemRun::pending(rec_entries, 0));
        }
        if !input_entries.is_empty() {
            input_entries.sort_unstable_by_key(|e| e.hash);
            tables.inputs.push(MemRun::pending(input_entries, 0));
        }
        if head != self.head {
            let state = |id: u64| self.records.get(&id).or_else(|| new_recs.get(&id)).copied();
            let mut path: Vec<TlEntry> = Vec::new();
            let mut cur = head;
            let cut = loop {
                if cur == NONE {
                    break None;
                }
                let st = state(cur).ok_or(ArchiveError::NotAppendable {
                    reason: "the head is not a written record",
                })?;
                if tl_lookup(&tables.timeline, st.iteration) == Some(cur) {
                    break Some(st.iteration);
                }
                path.push(TlEntry {
                    iteration: st.iteration,
                    id: cur,
                });
                if st.parent != NONE && st.parent >= cur {
                    return Err(ArchiveError::NotAppendable {
                        reason: "a parent record number is not smaller than its child's",
                    });
                }
                cur = st.parent;
            };
            match cut {
                None => tables.timeline.clear(),
                Some(c) => {
                    tables
                        .timeline
                        .retain(|r| r.used().first().is_some_and(|e| e.iteration <= c));
                    if let Some(last) = tables.timeline.last_mut() {
                        last.len = last.used().partition_point(|e| e.iteration <= c);
                    }
                }
            }
            path.reverse();
            if !path.is_empty() {
                tables.timeline.push(MemRun::pending(path, 0));
            }
        }
        // Merged runs are concatenations of sorted runs: the standard library's
        // stable sort finds and merges such runs, and a `u128` key (big-endian, so
        // the same order as the bytes the reader binary-searches) compares in one
        // instruction. The append that merges 512 appends' object runs (84,000
        // entries) took 8.5 ms instead of 10.2 ms with an unstable sort on `[u8; 16]`
        // (`COMPARE_TRACE=1 cargo run --release -p rewind-bench --bin compare --
        // --workloads 64MiB-1%-clustered --peers archive --frames 520 --no-git`).
        let by_hash = |v: &mut Vec<ObjEntry>| v.sort_by_key(|e| u128::from_be_bytes(e.hash));
        merge_tiers(&mut tables.objects, fanout, by_hash);
        merge_tiers(&mut tables.records, fanout, |_| {});
        merge_tiers(&mut tables.inputs, fanout, |v| {
            v.sort_by_key(|e| u128::from_be_bytes(e.hash))
        });
        merge_tiers(&mut tables.timeline, fanout, |_| {});
        // One runs segment per table, so a query touching the (small) timeline or record
        // runs never checksums a large merged object run.
        let mut buf: Vec<u8> = Vec::new();
        let has_data = !data.records.is_empty() || !data.objects.is_empty() || !data.inputs.is_empty();
        if has_data {
            let payload = ser(&data)?;
            push_seg(&mut buf, data_off, SegKind::Data, &payload, seed);
        }
        let mut runs = RunsSeg::default();
        place(&mut tables.objects, &mut runs.objects);
        let objects_off = write_runs(&mut buf, data_off, &mut runs, seed)?;
        place(&mut tables.records, &mut runs.records);
        let records_off = write_runs(&mut buf, data_off, &mut runs, seed)?;
        place(&mut tables.inputs, &mut runs.inputs);
        let inputs_off = write_runs(&mut buf, data_off, &mut runs, seed)?;
        place(&mut tables.timeline, &mut runs.timeline);
        let timeline_off = write_runs(&mut buf, data_off, &mut runs, seed)?;
        let runs_off = data_off + buf.len() as u64; // every run is placed by now
        set_seg(&mut tables.objects, objects_off);
        set_seg(&mut tables.records, records_off);
        set_seg(&mut tables.inputs, inputs_off);
        set_seg(&mut tables.timeline, timeline_off);
        let record_count = (self.records.len() + new_recs.len()) as u64;
        let object_count = (self.objects.len() + new_objs.len()) as u64;
        let root = RootSeg {
            seq: self.seq,
            head,
            next_record_id: history.next_record_id().0,
            record_count,
            object_count,
            objects: refs_of(&tables.objects, runs_off),
            records: refs_of(&tables.records, runs_off),
            inputs: refs_of(&tables.inputs, runs_off),
            timeline: refs_of(&tables.timeline, runs_off),
        };
        let payload = ser(&root)?;
        let root_off = push_seg(&mut buf, data_off, SegKind::Root, &payload, seed);
        let trailer_off = data_off + buf.len() as u64;
        let trailer = Trailer {
            seq: self.seq,
            root: root_off,
            head,
            prev: self.last_trailer,
            start: data_off,
        }
        .encode(seed);
        let sync_now = match self.durability {
            Durability::EveryAppend => true,
            Durability::EveryN(n) => self.unsynced + 1 >= n.max(1),
            Durability::Manual => false,
        };
        let written = self.write_commit(buf, &trailer, data_off, trailer_off, sync_now);
        if let Err(e) = written {
            // Leave the file as it was: the torn bytes would be ignored anyway.
            let _ = self.file.set_len(self.end);
            return Err(e);
        }
        rep.synced = sync_now;
        rep.committed = true;
        rep.bytes = trailer_off + TRAILER_LEN as u64 - data_off;
        if sync_now {
            self.unsynced = 0;
        } else {
            self.unsynced += 1;
        }
        self.objects.extend(new_objs);
        if let Some(max) = new_recs.keys().max() {
            self.next_unwritten = self.next_unwritten.max(max + 1);
        }
        self.records.extend(new_recs);
        self.inputs.extend(new_inputs);
        self.tables = tables;
        self.head = head;
        self.seq += 1;
        self.last_trailer = trailer_off;
        self.end = trailer_off + TRAILER_LEN as u64;
        Ok(rep)
    }

    /// Write a commit's segments (`buf`, from `data_off`) and its trailer: with a sync
    /// between them when `sync_now`, else in one write (the trailer appended to `buf`).
    fn write_commit(
        &mut self,
        mut buf: Vec<u8>,
        trailer: &[u8],
        data_off: u64,
        trailer_off: u64,
        sync_now: bool,
    ) -> Result<(), ArchiveError> {
        let io = |op| ArchiveError::io(op, &self.path);
        if sync_now {
            self.file.write_all_at(&buf, data_off).map_err(io("write"))?;
            self.file
                .sync_data()
                .map_err(ArchiveError::io("sync", &self.path))?;
            self.file
                .write_all_at(trailer, trailer_off)
                .map_err(ArchiveError::io("write", &self.path))?;
            self.file
                .sync_data()
                .map_err(ArchiveError::io("sync", &self.path))?;
        } else {
            buf.extend_from_slice(trailer);
            self.file.write_all_at(&buf, data_off).map_err(io("write"))?;
        }
        Ok(())
    }
}

/// Write `runs` as a segment when it holds anything (and empty it); its offset.
fn write_runs(buf: &mut Vec<u8>, base: u64, runs: &mut RunsSeg, seed: u64) -> Result<u64, ArchiveError> {
    let off = base + buf.len() as u64;
    if runs.objects.is_empty()
        && runs.records.is_empty()
        && runs.inputs.is_empty()
        && runs.timeline.is_empty()
    {
        return Ok(off);
    }
    let payload = ser(&*runs)?;
    push_seg(buf, base, SegKind::Runs, &payload, seed);
    *runs = RunsSeg::default();
    Ok(off)
}

fn set_seg<E>(runs: &mut [MemRun<E>], off: u64) {
    for r in runs.iter_mut().filter(|r| r.seg == PENDING) {
        r.seg = off;
    }
}

fn loaded_run<E>(r: &RunRef, v: Vec<E>) -> MemRun<E> {
    let len = v.len();
    MemRun {
        seg: r.seg,
        start: r.start,
        level: r.level,
        entries: v.into(),
        len,
    }
}

/// Create a new, empty file under a temporary name in the directory of `target`
/// (`.<name>.<what>-<pid>-<n>.tmp`), for a file that is renamed or linked into place.
pub(crate) fn temp_beside(target: &Path, what: &str) -> Result<(PathBuf, File), ArchiveError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = target.with_file_name(format!(".{name}.{what}-{}-{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ArchiveError::io("create", &tmp)(e)),
        }
    }
}

/// The permissions of the regular file at `target`, `None` when nothing is there; an
/// error for anything that is not a regular file.
pub(crate) fn existing_permissions(target: &Path) -> Result<Option<std::fs::Permissions>, ArchiveError> {
    match std::fs::metadata(target) {
        Ok(m) => match crate::lock::not_regular(m.file_type()) {
            Some(what) => Err(ArchiveError::NotAFile {
                path: target.to_path_buf(),
                what,
            }),
            None => Ok(Some(m.permissions())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ArchiveError::io("stat", target)(e)),
    }
}

pub(crate) fn sync_dir(path: &Path) -> Result<(), ArchiveError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ArchiveError::io("sync directory", dir))
}

/// Every object written, with its chain depth. It grows with the archive (hundreds of
/// thousands of entries); `griddle`'s map spreads each doubling over later inserts,
/// so no append stalls on moving the whole table (see `rewind-store`'s object table).
type ObjectIndex = griddle::HashMap<PageHash, u8, std::collections::hash_map::RandomState>;

struct ObjCtx<'a> {
    history: &'a History,
    written: &'a ObjectIndex,
    new: &'a mut HashMap<PageHash, u8>,
    data: &'a mut DataSeg,
    entries: &'a mut Vec<ObjEntry>,
    data_off: u64,
    max_chain: u8,
    scratch: &'a mut Scratch,
    buf: &'a mut Vec<u8>,
    base_buf: &'a mut Vec<u8>,
    delta_buf: &'a mut Vec<u8>,
}

/// The encoding chosen for one object of the file.
struct Chosen<'b> {
    kind: u8,
    depth: u8,
    parent: PageHash,
    bytes: &'b [u8],
}

impl ObjCtx<'_> {
    fn depth(&self, h: PageHash) -> Option<u8> {
        self.written.get(&h).or_else(|| self.new.get(&h)).copied()
    }

    /// Write page `hash` unless the file has it. `base` is the page its slot held in
    /// the parent record (already in the file): the page is written as a forward delta
    /// against it when that is small and the chain *as stored in the file* stays within
    /// the bound, else as a full page (lz4, or raw when lz4 does not pay). The file keeps
    /// the first encoding it wrote for a hash.
    ///
    /// The file's encoding is its own (forward deltas, where the store keeps reverse
    /// ones), but the work the store already did is reused rather than redone: a page
    /// the store holds raw (every freshly captured page) is read in place, not copied,
    /// and when the store has just re-encoded `base` as a reverse delta against this
    /// page, the forward delta has exactly the same runs, so it is built from those runs
    /// and this page's bytes without rebuilding `base` or comparing the pages again.
    fn ensure(&mut self, hash: PageHash, base: PageHash) -> Result<(), ArchiveError> {
        if hash.is_zero() || self.depth(hash).is_some() {
            return Ok(());
        }
        let base_depth = self
            .depth(base)
            .filter(|d| !base.is_zero() && *d < self.max_chain);
        let ObjCtx {
            history,
            data,
            entries,
            new,
            data_off,
            scratch,
            buf,
            base_buf,
            delta_buf,
            ..
        } = self;
        let store = history.store();
        let ps = buf.len();
        let page: &[u8] = match store.get(hash) {
            Some(ObjectRef::Full {
                encoding: Encoding::Raw,
                bytes,
            }) if bytes.len() == ps => bytes,
            _ => {
                store.read(hash, buf)?;
                buf.as_slice()
            }
        };
        let mut chosen: Option<Chosen<'_>> = None;
        if let Some(bd) = base_depth {
            let found = match store.get(base) {
                Some(ObjectRef::Delta { parent, runs }) if parent == hash => {
                    forward_runs(runs, page, ps / 2, delta_buf)
                }
                _ if store.read(base, base_buf).is_ok() => {
                    match codec::encode_delta(base_buf, page, ps / 2, scratch) {
                        Some(d) => {
                            delta_buf.clear();
                            delta_buf.extend_from_slice(d);
                            true
                        }
                        None => false,
                    }
                }
                _ => false,
            };
            if found {
                chosen = Some(Chosen {
                    kind: KIND_DELTA,
                    depth: bd + 1,
                    parent: base,
                    bytes: delta_buf,
                });
            }
        }
        let small = chosen.as_ref().is_some_and(|c| c.bytes.len() <= ps / 16);
        let full;
        if !small {
            let (enc, bytes) = codec::encode_full(page, scratch);
            full = bytes;
            if chosen.as_ref().is_none_or(|c| full.len() < c.bytes.len()) {
                let kind = if enc == Encoding::Raw { KIND_RAW } else { KIND_LZ4 };
                chosen = Some(Chosen {
                    kind,
                    depth: 0,
                    parent: PageHash::ZERO,
                    bytes: &full,
                });
            }
        }
        let Some(c) = chosen else {
            return Err(ArchiveError::MissingObject { hash });
        };
        let start = data.object_bytes.len() as u64;
        data.object_bytes.extend_from_slice(c.bytes);
        entries.push(ObjEntry {
            hash: hash.0,
            seg: *data_off,
            pos: data.objects.len() as u32,
            depth: c.depth,
            kind: c.kind,
        });
        data.objects.push(ObjMeta {
            hash: hash.0,
            parent: c.parent.0,
            start,
            len: c.bytes.len() as u32,
            kind: c.kind,
            depth: c.depth,
        });
        new.insert(hash, c.depth);
        Ok(())
    }
}

/// Build into `out` the forward delta (`page` over its base) from `reverse`, a delta of
/// the base over `page`: a delta's runs cover every byte where the two pages differ, so
/// the same runs filled with `page`'s bytes turn the base into `page`. For a reverse
/// delta made by [`codec::encode_delta`], the result is byte for byte what
/// `encode_delta(base, page, limit)` returns, since the runs depend only on where the
/// pages differ. False (and `out` is to be ignored) when the result would be over
/// `limit` bytes, or `reverse` is empty or not a well-formed, ordered run list.
fn forward_runs(reverse: &[u8], page: &[u8], limit: usize, out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut min = 0usize;
    for run in codec::delta_runs(reverse, page.len()) {
        let Ok((offset, len)) = run else {
            return false;
        };
        let (Ok(off16), Ok(len16), Some(bytes)) = (
            u16::try_from(offset),
            u16::try_from(len - 1),
            page.get(offset..offset + len),
        ) else {
            return false;
        };
        if offset < min {
            return false;
        }
        min = offset + len;
        out.extend_from_slice(&off16.to_le_bytes());
        out.extend_from_slice(&len16.to_le_bytes());
        out.extend_from_slice(bytes);
        if out.len() > limit {
            return false;
        }
    }
    !out.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The forward delta built from the store's reverse delta is byte for byte the
        /// delta `encode_delta` computes from the two pages, at any limit.
        #[test]
        fn forward_runs_equal_a_fresh_forward_delta(
            base in proptest::collection::vec(any::<u8>(), 1024),
            edits in proptest::collection::vec((0usize..1024, 1usize..48, any::<u8>()), 1..24),
            limit in 8usize..1024,
        ) {
            let mut page = base.clone();
            for (at, len, v) in edits {
                for b in page.iter_mut().skip(at).take(len) {
                    *b = b.wrapping_add(v | 1);
                }
            }
            let mut scratch = Scratch::new();
            let reverse = codec::encode_delta(&page, &base, 1024, &mut scratch).map(<[u8]>::to_vec);
            let fresh = codec::encode_delta(&base, &page, limit, &mut scratch).map(<[u8]>::to_vec);
            let mut out = Vec::new();
            let built = reverse.as_deref().is_some_and(|r| forward_runs(r, &page, limit, &mut out));
            prop_assert_eq!(built.then_some(out), fresh);
        }
    }

    #[test]
    fn forward_runs_refuse_malformed_reverse_deltas() {
        let page = [7u8; 64];
        let mut out = Vec::new();
        // empty, truncated, past the page, out of order
        assert!(!forward_runs(&[], &page, 64, &mut out));
        assert!(!forward_runs(&[0, 0, 3, 0, 1], &page, 64, &mut out));
        assert!(!forward_runs(
            &[60, 0, 7, 0, 1, 1, 1, 1, 1, 1, 1, 1],
            &page,
            64,
            &mut out
        ));
        assert!(!forward_runs(
            &[8, 0, 0, 0, 1, 2, 0, 0, 0, 1],
            &page,
            64,
            &mut out
        ));
        assert!(forward_runs(
            &[2, 0, 0, 0, 1, 8, 0, 1, 0, 1, 1],
            &page,
            64,
            &mut out
        ));
        assert_eq!(out, [2, 0, 0, 0, 7, 8, 0, 1, 0, 7, 7]);
    }
}
