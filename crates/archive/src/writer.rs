//! Appending a history to an archive.
#![deny(clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rewind_history::{History, Record};
use rewind_snapshot::{GlobalValue, Snapshot};
use rewind_store::codec::{self, Encoding, Scratch};
use rewind_store::{InputHash, ObjectRef, PageHash};
use rkyv::rancor;

use crate::format::*;
use crate::index::{self, IndexEntry, MemRun, Tables};
use crate::lock::ArchiveLock;
use crate::reader::Archive;
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
    /// Blobs written (inputs and host states).
    pub inputs: u64,
    /// Host states set by this commit (new records', or a record's changed one).
    pub host_states: u64,
    /// Of the records, those written with a full page vector (checkpoints).
    pub checkpoints: u64,
    /// Bytes appended to the file.
    pub bytes: u64,
    /// True when this commit was synced to stable storage.
    pub synced: bool,
    /// False when there was nothing to write (no commit was made).
    pub committed: bool,
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
    written: Written,
    scratch: Scratch,
    /// Global names to write with the next commit (they differ from the file's).
    names: Option<Vec<Option<String>>>,
    /// The writer lock; `None` only for the private temporary file of a compaction.
    lock: Option<ArchiveLock>,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("path", &self.path)
            .field("end", &self.end)
            .field("seq", &self.seq)
            .field("records", &self.written.records.len())
            .field("objects", &self.written.objects.len())
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
        let mut w = replace_through_temp(&target, "replace", |file, _| {
            Self::start(file, path, history, durability)
        })?;
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
            version: VERSION,
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
            written: Written::empty(),
            scratch: Scratch::new(),
            names: None,
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
        let written = Written::load(&archive)?;
        let (seq, last_trailer) = match archive.last_trailer() {
            Some((off, t)) => (t.seq + 1, off),
            None => (0, NONE),
        };
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
            written,
            scratch: Scratch::new(),
            names: None,
            lock: Some(lock),
        })
    }

    /// The file's length after the last commit.
    pub fn len(&self) -> u64 {
        self.end
    }

    /// True when the archive holds no record.
    pub fn is_empty(&self) -> bool {
        self.written.records.is_empty()
    }

    /// Records in the file.
    pub fn records(&self) -> usize {
        self.written.records.len()
    }

    /// Name the recorded globals, by position (`None` for one without a name): the
    /// inspector prints them instead of `global N`. Written with the next commit when
    /// they differ from the names the file holds (an [`ArchiveWriter::append`] then
    /// commits even with no new record); a reader sees the newest names
    /// ([`Archive::global_names`]).
    pub fn set_global_names(&mut self, names: Vec<Option<String>>) {
        let mut names = names;
        while names.last().is_some_and(Option::is_none) {
            names.pop();
        }
        self.names = (names != self.written.names).then_some(names);
    }

    /// The global names the file holds (or the writer will write with the next commit).
    pub fn global_names(&self) -> &[Option<String>] {
        self.names.as_deref().unwrap_or(&self.written.names)
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

    /// One commit, in steps: check the history's configuration, select the records the
    /// file lacks, encode them (objects, records, inputs), index them (new runs, the
    /// timeline, merges), serialize the segments and the trailer, and commit (write,
    /// sync, remember). `force` commits even when nothing changed (the first commit).
    fn append_inner(&mut self, history: &History, force: bool) -> Result<AppendReport, ArchiveError> {
        self.check(history)?;
        let head = history.head().map_or(NONE, |r| r.id().0);
        let fresh = self.written.select(history);
        // The head's host state may have been set (or changed) after it was written.
        let head_host = history.head().and_then(|r| {
            let now = r.host_state_hash().map(|h| h.0);
            (self.written.records.contains_key(&r.id().0) && now != self.written.host.get(&r.id().0).copied())
                .then_some((r, now))
        });
        if fresh.is_empty()
            && head == self.written.head
            && head_host.is_none()
            && self.names.is_none()
            && !force
        {
            return Ok(AppendReport::default());
        }
        let mut encoder = Encoder::new(history, &self.header, &self.written, &mut self.scratch, self.end);
        for r in fresh {
            encoder.record(r)?;
        }
        if let Some((r, now)) = head_host {
            encoder.host_state(r, now)?;
        }
        let mut staged = encoder.staged;
        if let Some(names) = &self.names {
            staged.extra.names_set = 1;
            for (i, n) in names.iter().enumerate() {
                if let Some(n) = n {
                    staged.extra.names.push(NameRef {
                        index: i as u32,
                        start: staged.extra.name_bytes.len() as u64,
                        len: n.len() as u32,
                    });
                    staged.extra.name_bytes.extend_from_slice(n.as_bytes());
                }
            }
        }
        let mut rep = AppendReport {
            records: staged.rec_entries.len() as u64,
            objects: staged.obj_entries.len() as u64,
            inputs: staged.input_entries.len() as u64,
            host_states: staged.extra.host.len() as u64,
            checkpoints: staged.checkpoints,
            ..AppendReport::default()
        };
        let fanout = self.header.merge_fanout as usize;
        let mut tables = self.written.index(&mut staged, head, fanout)?;
        let root = RootSeg {
            seq: self.seq,
            head,
            next_record_id: history.next_record_id().0,
            record_count: (self.written.records.len() + staged.records.len()) as u64,
            object_count: (self.written.objects.len() + staged.objects.len()) as u64,
            ..RootSeg::default()
        };
        let commit = self.serialize(&staged.data, &staged.extra, &mut tables, root)?;
        rep.bytes = commit.trailer_off + TRAILER_LEN as u64 - self.end;
        rep.synced = self.commit(commit)?;
        rep.committed = true;
        self.written.remember(staged, tables, head);
        if let Some(names) = self.names.take() {
            self.written.names = names;
        }
        Ok(rep)
    }

    /// The check step: `history` has the file's page size, seed and chain bound.
    fn check(&self, history: &History) -> Result<(), ArchiveError> {
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
        Ok(())
    }

    /// The serialize step: the commit's segments from the end of the file (the data
    /// segment, one runs segment per table holding the pending runs, the root naming
    /// every run) and its trailer. `root` comes with its counts; its runs are filled in.
    fn serialize(
        &self,
        data: &DataSeg,
        extra: &ExtraSeg,
        tables: &mut Tables,
        mut root: RootSeg,
    ) -> Result<Serialized, ArchiveError> {
        let seed = self.header.seed;
        let data_off = self.end;
        let mut buf: Vec<u8> = Vec::new();
        if !data.records.is_empty() || !data.objects.is_empty() || !data.inputs.is_empty() {
            let payload = ser(data)?;
            push_seg(&mut buf, data_off, SegKind::Data, &payload, seed);
        }
        // Host states and names, only when this commit sets any: a file without them
        // is byte for byte what a writer without extra segments wrote.
        let extra_off = if extra.host.is_empty() && extra.names_set == 0 {
            0
        } else {
            let payload = ser(extra)?;
            push_seg(&mut buf, data_off, SegKind::Extra, &payload, seed)
        };
        // One runs segment per table, so a query touching the (small) timeline or record
        // runs never checksums a large merged object run.
        let mut runs = RunsSeg::default();
        index::place(tables.object_runs_mut(), &mut runs.objects);
        let objects_off = write_runs(&mut buf, data_off, &mut runs, seed)?;
        index::place(&mut tables.records, &mut runs.records);
        let records_off = write_runs(&mut buf, data_off, &mut runs, seed)?;
        index::place(&mut tables.inputs, &mut runs.inputs);
        let inputs_off = write_runs(&mut buf, data_off, &mut runs, seed)?;
        index::place(&mut tables.timeline, &mut runs.timeline);
        let timeline_off = write_runs(&mut buf, data_off, &mut runs, seed)?;
        let runs_off = data_off + buf.len() as u64; // every run is placed by now
        index::set_seg(tables.object_runs_mut(), objects_off);
        index::set_seg(&mut tables.records, records_off);
        index::set_seg(&mut tables.inputs, inputs_off);
        index::set_seg(&mut tables.timeline, timeline_off);
        root.objects = index::refs_of(tables.object_runs(), runs_off);
        root.records = index::refs_of(&tables.records, runs_off);
        root.inputs = index::refs_of(&tables.inputs, runs_off);
        root.timeline = index::refs_of(&tables.timeline, runs_off);
        let payload = ser(&root)?;
        let root_off = push_seg(&mut buf, data_off, SegKind::Root, &payload, seed);
        let trailer_off = data_off + buf.len() as u64;
        let trailer = Trailer {
            seq: self.seq,
            root: root_off,
            head: root.head,
            prev: self.last_trailer,
            start: data_off,
            extra: extra_off,
        }
        .encode(seed);
        Ok(Serialized {
            buf,
            trailer,
            trailer_off,
        })
    }

    /// The commit step: write the commit (synced when the durability policy says so;
    /// true then) and move the file's end past it. On an error the file is cut back to
    /// where it was.
    fn commit(&mut self, commit: Serialized) -> Result<bool, ArchiveError> {
        let sync_now = match self.durability {
            Durability::EveryAppend => true,
            Durability::EveryN(n) => self.unsynced + 1 >= n.max(1),
            Durability::Manual => false,
        };
        let trailer_off = commit.trailer_off;
        if let Err(e) = self.write_commit(commit, sync_now) {
            // Leave the file as it was: the torn bytes would be ignored anyway.
            let _ = self.file.set_len(self.end);
            return Err(e);
        }
        if sync_now {
            self.unsynced = 0;
        } else {
            self.unsynced += 1;
        }
        self.seq += 1;
        self.last_trailer = trailer_off;
        self.end = trailer_off + TRAILER_LEN as u64;
        Ok(sync_now)
    }

    /// Write a commit's segments (from the end of the file) and its trailer: with a sync
    /// between them when `sync_now`, else in one write (the trailer appended to them).
    fn write_commit(&mut self, commit: Serialized, sync_now: bool) -> Result<(), ArchiveError> {
        let Serialized {
            mut buf,
            trailer,
            trailer_off,
        } = commit;
        let data_off = self.end;
        let io = |op| ArchiveError::io(op, &self.path);
        if sync_now {
            self.file.write_all_at(&buf, data_off).map_err(io("write"))?;
            self.file
                .sync_data()
                .map_err(ArchiveError::io("sync", &self.path))?;
            self.file
                .write_all_at(&trailer, trailer_off)
                .map_err(ArchiveError::io("write", &self.path))?;
            self.file
                .sync_data()
                .map_err(ArchiveError::io("sync", &self.path))?;
        } else {
            buf.extend_from_slice(&trailer);
            self.file.write_all_at(&buf, data_off).map_err(io("write"))?;
        }
        Ok(())
    }
}

/// A commit's bytes: its segments, and its trailer and where it goes.
struct Serialized {
    buf: Vec<u8>,
    trailer: [u8; TRAILER_LEN],
    trailer_off: u64,
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

fn push_seg(buf: &mut Vec<u8>, base: u64, kind: SegKind, payload: &[u8], seed: u64) -> u64 {
    let off = base + buf.len() as u64;
    buf.extend_from_slice(&SegHeader::encode(kind, payload, seed));
    buf.extend_from_slice(payload);
    while !(buf.len() as u64).is_multiple_of(ALIGN) {
        buf.push(0);
    }
    off
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

/// Build a file under a temporary name beside `target` (given `target`'s permission
/// bits when it exists), hand it and its path to `build`, then rename it over
/// `target`. On any error the temporary file is removed and `target` is untouched. The
/// caller syncs the directory and holds the writer lock.
pub(crate) fn replace_through_temp<T>(
    target: &Path,
    label: &str,
    build: impl FnOnce(File, &Path) -> Result<T, ArchiveError>,
) -> Result<T, ArchiveError> {
    let perms = existing_permissions(target)?;
    let (tmp, file) = temp_beside(target, label)?;
    let result = (|| {
        if let Some(p) = perms {
            file.set_permissions(p).map_err(ArchiveError::io("chmod", &tmp))?;
        }
        let out = build(file, &tmp)?;
        std::fs::rename(&tmp, target).map_err(ArchiveError::io("rename", target))?;
        Ok(out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
type ObjectIndex = griddle::HashMap<PageHash, Known, std::collections::hash_map::RandomState>;

/// What the writer knows of a written object: its chain depth in the file, and an
/// estimate of the bytes the page takes as a full object (lz4 or raw), which predicts
/// what the next version of the same page would take without compressing it.
#[derive(Clone, Copy, Debug)]
struct Known {
    depth: u8,
    /// Estimated full-object bytes, saturated to `u16`; 0 when unknown (objects of a
    /// reopened file, whose sizes the writer did not see encoded).
    full: u16,
}

impl Known {
    fn new(depth: u8, full: usize) -> Self {
        Known {
            depth,
            full: u16::try_from(full).unwrap_or(u16::MAX),
        }
    }

    /// The estimate, if there is one.
    fn full(self) -> Option<usize> {
        (self.full != 0).then_some(self.full as usize)
    }
}

/// What the writer keeps of a written record: enough to place its children.
#[derive(Clone, Copy, Debug)]
struct RecState {
    iteration: u64,
    parent: u64,
    hops: u32,
    since: u64,
}

impl From<&RecEntry> for RecState {
    fn from(e: &RecEntry) -> Self {
        RecState {
            iteration: e.iteration,
            parent: e.parent,
            hops: e.hops,
            since: e.since,
        }
    }
}

/// What the file holds, as the writer remembers it between commits: objects, records
/// and inputs by key, the index tables of the last root, and its head.
struct Written {
    objects: ObjectIndex,
    records: HashMap<u64, RecState>,
    inputs: HashSet<InputHash>,
    /// The host state of every written record that has one, by record number.
    host: HashMap<u64, [u8; 16]>,
    /// The global names the file holds.
    names: Vec<Option<String>>,
    /// Records numbered below this are written (or were gone from the history).
    next_unwritten: u64,
    tables: Tables,
    head: u64,
}

impl Written {
    /// A file with nothing in it.
    fn empty() -> Self {
        Written {
            objects: ObjectIndex::default(),
            records: HashMap::new(),
            inputs: HashSet::new(),
            host: HashMap::new(),
            names: Vec::new(),
            next_unwritten: 0,
            tables: Tables::default(),
            head: NONE,
        }
    }

    /// What the last commit of `archive` holds, from its index.
    fn load(archive: &Archive) -> Result<Self, ArchiveError> {
        let [objs, recs, inputs, tl] = archive.run_refs()?;
        let mut w = Written::empty();
        w.tables.objects = load_runs::<ArchivedObjEntry, _>(archive, &objs)?;
        w.tables.records = load_runs::<ArchivedRecEntry, _>(archive, &recs)?;
        w.tables.inputs = load_runs::<ArchivedInputEntry, _>(archive, &inputs)?;
        w.tables.timeline = load_runs::<ArchivedTlEntry, _>(archive, &tl)?;
        for e in w.tables.objects.iter().flat_map(|r| r.used()) {
            w.objects.insert(PageHash(e.hash), Known::new(e.depth, 0));
        }
        for e in w.tables.records.iter().flat_map(|r| r.used()) {
            w.records.insert(e.id, RecState::from(e));
        }
        for e in w.tables.inputs.iter().flat_map(|r| r.used()) {
            w.inputs.insert(InputHash(e.hash));
        }
        w.host = archive
            .host_states()?
            .into_iter()
            .map(|(r, h)| (r, h.0))
            .collect();
        w.names = archive.global_names()?;
        w.head = archive.last_trailer().map_or(NONE, |(_, t)| t.head);
        w.next_unwritten = archive
            .next_record_id()?
            .max(w.records.keys().max().map_or(0, |m| m + 1));
        Ok(w)
    }

    /// The select step: the records of `history` numbered from the first one not
    /// written, oldest first.
    fn select<'h>(&self, history: &'h History) -> Vec<&'h Record> {
        let mut fresh: Vec<&Record> = history
            .records()
            .rev()
            .take_while(|r| r.id().0 >= self.next_unwritten)
            .collect();
        fresh.reverse();
        fresh
    }

    /// The index step: the tables of the next root. The staged entries become level-0
    /// runs, the timeline follows the new `head` (cut where the head's chain of parents
    /// meets it, the rest of the chain appended as a run), and full tiers are merged.
    fn index(&self, staged: &mut Staged, head: u64, fanout: usize) -> Result<Tables, ArchiveError> {
        let mut tables = self.tables.clone();
        let mut objects = std::mem::take(&mut staged.obj_entries);
        let new_objects = objects.len();
        if !objects.is_empty() {
            objects.sort_unstable_by_key(|e| e.hash);
            tables.objects.push(MemRun::pending(objects, 0));
        }
        let records = std::mem::take(&mut staged.rec_entries);
        if !records.is_empty() {
            tables.records.push(MemRun::pending(records, 0));
        }
        let mut inputs = std::mem::take(&mut staged.input_entries);
        if !inputs.is_empty() {
            inputs.sort_unstable_by_key(|e| e.hash);
            tables.inputs.push(MemRun::pending(inputs, 0));
        }
        if head != self.head {
            let (cut, path) = self.path_to(&tables, staged, head)?;
            tables.cut_timeline(cut);
            if !path.is_empty() {
                tables.timeline.push(MemRun::pending(path, 0));
            }
        }
        tables.merge(fanout, new_objects);
        Ok(tables)
    }

    /// The chain of parents of `head` back to where it meets the timeline of `tables`
    /// (that iteration; `None` when it reaches a root first), oldest first.
    fn path_to(
        &self,
        tables: &Tables,
        staged: &Staged,
        head: u64,
    ) -> Result<(Option<u64>, Vec<TlEntry>), ArchiveError> {
        let mut path: Vec<TlEntry> = Vec::new();
        let mut cur = head;
        let cut = loop {
            if cur == NONE {
                break None;
            }
            let st = self.state(staged, cur).ok_or(ArchiveError::NotAppendable {
                reason: "the head is not a written record",
            })?;
            if tables.timeline_id(st.iteration) == Some(cur) {
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
        path.reverse();
        Ok((cut, path))
    }

    /// A record in the file or staged for the next commit.
    fn state(&self, staged: &Staged, id: u64) -> Option<RecState> {
        self.records.get(&id).or_else(|| staged.records.get(&id)).copied()
    }

    /// After a commit: it holds what was staged, under the new tables and head.
    fn remember(&mut self, staged: Staged, tables: Tables, head: u64) {
        self.objects.extend(staged.objects);
        if let Some(max) = staged.records.keys().max() {
            self.next_unwritten = self.next_unwritten.max(max + 1);
        }
        self.records.extend(staged.records);
        self.inputs.extend(staged.inputs);
        for h in &staged.extra.host {
            match h.has {
                0 => self.host.remove(&h.record),
                _ => self.host.insert(h.record, h.hash),
            };
        }
        self.tables = tables;
        self.head = head;
    }
}

/// The runs `refs` of table `A`, read from `archive` into memory.
fn load_runs<A, N>(archive: &Archive, refs: &[RunRef]) -> Result<Vec<MemRun<N>>, ArchiveError>
where
    A: IndexEntry,
    N: for<'a> From<&'a A>,
{
    refs.iter()
        .map(|r| {
            Ok(MemRun::loaded(
                r,
                archive.run::<A>(r)?.iter().map(N::from).collect(),
            ))
        })
        .collect()
}

/// What one commit adds, built record by record by the encode step: the data segment,
/// the new objects, records and inputs by key, and their index entries.
struct Staged {
    data: DataSeg,
    objects: HashMap<PageHash, Known>,
    obj_entries: Vec<ObjEntry>,
    records: HashMap<u64, RecState>,
    rec_entries: Vec<RecEntry>,
    inputs: HashSet<InputHash>,
    input_entries: Vec<InputEntry>,
    checkpoints: u64,
    /// Host states and names this commit sets.
    extra: ExtraSeg,
}

/// The encode step: stages the records of one commit, and the objects and inputs they
/// need that the file does not hold, into a data segment at `data_off`.
struct Encoder<'w> {
    history: &'w History,
    header: &'w Header,
    written: &'w Written,
    scratch: &'w mut Scratch,
    data_off: u64,
    /// A page rebuilt from the store, its base, and a delta between them.
    page: Vec<u8>,
    base: Vec<u8>,
    delta: Vec<u8>,
    staged: Staged,
}

/// A record's parent as the file holds it: its number, what the writer knows of it,
/// and its snapshot in the history.
type ParentOf<'w> = Option<(u64, RecState, &'w Snapshot)>;

/// The encoding chosen for one object of the file.
struct Chosen<'b> {
    kind: ObjectKind,
    depth: u8,
    parent: PageHash,
    bytes: &'b [u8],
}

impl<'w> Encoder<'w> {
    fn new(
        history: &'w History,
        header: &'w Header,
        written: &'w Written,
        scratch: &'w mut Scratch,
        data_off: u64,
    ) -> Self {
        let ps = header.page_size as usize;
        Encoder {
            history,
            header,
            written,
            scratch,
            data_off,
            page: vec![0u8; ps],
            base: vec![0u8; ps],
            delta: Vec::with_capacity(ps),
            staged: Staged {
                data: DataSeg::default(),
                objects: HashMap::new(),
                obj_entries: Vec::new(),
                records: HashMap::new(),
                rec_entries: Vec::new(),
                inputs: HashSet::new(),
                input_entries: Vec::new(),
                checkpoints: 0,
                extra: ExtraSeg::default(),
            },
        }
    }

    /// Stage one record: its new pages (bases before deltas), then the record as a
    /// change list against its parent or as a checkpoint, its globals and its input.
    fn record(&mut self, r: &'w Record) -> Result<(), ArchiveError> {
        let snap = r.snapshot();
        let parent = self.parent_of(r)?;
        let changed: Option<Vec<u32>> = parent.map(|(_, _, ps)| rewind_snapshot::diff(ps, snap));
        match (&changed, &parent) {
            (Some(c), Some((_, _, psnap))) => {
                for &i in c {
                    self.ensure(snap.page(i as usize), psnap.page(i as usize))?;
                }
            }
            _ => {
                for h in snap.pages().iter() {
                    self.ensure(*h, PageHash::ZERO)?;
                }
            }
        }
        let n = snap.pages().len();
        let (checkpoint, hops, since) = match (&parent, &changed) {
            (Some((_, st, _)), Some(c))
                if st.hops < self.header.checkpoint_hops
                    && st.since + c.len() as u64 <= (n as u64).max(64) =>
            {
                (false, st.hops + 1, st.since + c.len() as u64)
            }
            _ => (true, 0, 0),
        };
        if snap.globals().len() >= GLOBALS_DELTA as usize {
            return Err(ArchiveError::NotAppendable {
                reason: "2^31 globals or more (the format's limit)",
            });
        }
        let global_changes = match &parent {
            Some((_, _, psnap)) if !checkpoint => self.global_changes(psnap.globals(), snap.globals()),
            _ => None,
        };
        let data = &mut self.staged.data;
        let gs = snap.globals();
        let (globals_start, globals_len) = match global_changes {
            Some(c) => {
                let s = data.changes.len() as u64;
                data.changes.extend(c.iter().filter_map(|&i| {
                    gs.get(i as usize).map(|g| ChangeRec {
                        index: i,
                        hash: g.to_bits().to_le_bytes(),
                    })
                }));
                (s, c.len() as u32 | GLOBALS_DELTA)
            }
            None => {
                let s = data.globals.len() as u64;
                data.globals.extend(gs.iter().map(GlobalRec::from));
                (s, gs.len() as u32)
            }
        };
        let (list_start, list_len) = if checkpoint {
            self.staged.checkpoints += 1;
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
        if let Some(h) = r.input_hash() {
            self.input(r, h)?;
        }
        if let Some(h) = r.host_state_hash() {
            self.host_state(r, Some(h.0))?;
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
        let input = r.input_hash();
        let meta = RecMeta {
            id: r.id().0,
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
            globals_len,
            list_start,
            list_len: list_len as u32,
        };
        self.push_record(meta, since)
    }

    /// The positions of the globals that differ between a record's parent's globals and
    /// its own, when the file's version stores globals as changes and the changes take
    /// fewer bytes than the whole list (a change entry is a few bytes larger than a
    /// whole global); `None` stores the whole list. Changes need the parent's count and
    /// types (the type of a change is its parent's), which capture guarantees.
    fn global_changes(&self, parent: &[GlobalValue], globals: &[GlobalValue]) -> Option<Vec<u32>> {
        if self.header.version < 2
            || parent.len() != globals.len()
            || globals.len() >= GLOBALS_DELTA as usize
            || parent.iter().zip(globals).any(|(a, b)| a.ty() != b.ty())
        {
            return None;
        }
        let changed: Vec<u32> = parent
            .iter()
            .zip(globals)
            .enumerate()
            .filter(|(_, (a, b))| a.to_bits() != b.to_bits())
            .map(|(i, _)| i as u32)
            .collect();
        let change_bytes = changed.len() * std::mem::size_of::<ArchivedChangeRec>();
        let whole_bytes = globals.len() * std::mem::size_of::<ArchivedGlobalRec>();
        (change_bytes < whole_bytes).then_some(changed)
    }

    /// The parent of `r`, which the file must hold or this commit must be staging.
    fn parent_of(&self, r: &Record) -> Result<ParentOf<'w>, ArchiveError> {
        let Some(p) = r.parent() else { return Ok(None) };
        let st = self
            .written
            .state(&self.staged, p.0)
            .ok_or(ArchiveError::NotAppendable {
                reason: "a record's parent is neither in the file nor in the history",
            })?;
        let psnap = self.history.record(p).ok_or(ArchiveError::NotAppendable {
            reason: "a record's parent is not in the history",
        })?;
        Ok(Some((p.0, st, psnap.snapshot())))
    }

    /// Stage the input blob `h` of `r` unless the file or this commit has it.
    fn input(&mut self, r: &Record, h: InputHash) -> Result<(), ArchiveError> {
        let bytes = self.history.input(r.id()).ok_or(ArchiveError::NotAppendable {
            reason: "a record names an input blob the history does not hold",
        })?;
        self.blob(h, bytes);
        Ok(())
    }

    /// Stage `r`'s host state (`hash`, `None` for none): its blob, in the input blob
    /// table, unless the file or this commit has it, and the record → blob entry.
    fn host_state(&mut self, r: &Record, hash: Option<[u8; 16]>) -> Result<(), ArchiveError> {
        if let Some(h) = hash {
            let bytes = self
                .history
                .host_state(r.id())
                .ok_or(ArchiveError::NotAppendable {
                    reason: "a record names a host state the history does not hold",
                })?;
            self.blob(InputHash(h), bytes);
        }
        self.staged.extra.host.push(HostRef {
            record: r.id().0,
            hash: hash.unwrap_or([0; 16]),
            has: hash.is_some() as u8,
        });
        Ok(())
    }

    /// Stage blob `h` (`bytes`) unless the file or this commit has it.
    fn blob(&mut self, h: InputHash, bytes: &[u8]) {
        let staged = &mut self.staged;
        if self.written.inputs.contains(&h) || staged.inputs.contains(&h) {
            return;
        }
        let start = staged.data.input_bytes.len() as u64;
        staged.data.input_bytes.extend_from_slice(bytes);
        staged.input_entries.push(InputEntry {
            hash: h.0,
            seg: self.data_off,
            pos: staged.data.inputs.len() as u32,
        });
        staged.data.inputs.push(InputMeta {
            hash: h.0,
            start,
            len: bytes.len() as u64,
        });
        staged.inputs.insert(h);
    }

    /// Stage a record's meta and its index entry (`since`: change-list entries since
    /// its checkpoint).
    fn push_record(&mut self, meta: RecMeta, since: u64) -> Result<(), ArchiveError> {
        if meta.memory_len > MAX_MEMORY {
            return Err(ArchiveError::NotAppendable {
                reason: "memory over 4 GiB (the format's limit)",
            });
        }
        let staged = &mut self.staged;
        let entry = RecEntry {
            id: meta.id,
            iteration: meta.iteration,
            parent: meta.parent,
            memory_len: meta.memory_len,
            seg: self.data_off,
            state_hash: meta.state_hash,
            input: meta.input,
            has_input: meta.has_input,
            pos: staged.data.records.len() as u32,
            hops: meta.hops,
            since,
        };
        staged.rec_entries.push(entry);
        staged.data.records.push(meta);
        staged.records.insert(meta.id, RecState::from(&entry));
        Ok(())
    }

    fn known(&self, h: PageHash) -> Option<Known> {
        self.written
            .objects
            .get(&h)
            .or_else(|| self.staged.objects.get(&h))
            .copied()
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
    ///
    /// Compressing a page costs more than the rest of its encoding, so it is skipped
    /// when its outcome is predictable: a page takes about as many bytes as a full
    /// object as the version of it in its slot's parent did (`Known::full`), so a delta
    /// well under that estimate is written without compressing the page to compare, and
    /// no delta is built past the estimate (the full page would win); a page whose
    /// parent was stored raw, with no delta and few zero words, is stored raw without
    /// trying lz4 (it may then take up to 1/8 more than lz4 would have). The compressed
    /// bytes are taken from the encoder's scratch buffer, not copied into an allocation.
    fn ensure(&mut self, hash: PageHash, base: PageHash) -> Result<(), ArchiveError> {
        if hash.is_zero() || self.known(hash).is_some() {
            return Ok(());
        }
        let base_known = if base.is_zero() { None } else { self.known(base) };
        let base_depth = base_known.map(|k| k.depth).filter(|d| *d < self.header.max_chain);
        let estimate = base_known.and_then(Known::full);
        let Encoder {
            history,
            scratch,
            page: buf,
            base: base_buf,
            delta: delta_buf,
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
        // A delta over the estimate would lose to the full page.
        let limit = estimate.map_or(ps / 2, |e| e.min(ps / 2));
        let mut chosen: Option<Chosen<'_>> = None;
        if let Some(bd) = base_depth {
            let found = match store.get(base) {
                Some(ObjectRef::Delta { parent, runs }) if parent == hash => {
                    forward_runs(runs, page, limit, delta_buf)
                }
                _ if store.read(base, base_buf).is_ok() => {
                    match codec::encode_delta(base_buf, page, limit, scratch) {
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
                    kind: ObjectKind::Delta,
                    depth: bd + 1,
                    parent: base,
                    bytes: delta_buf,
                });
            }
        }
        let small = chosen.as_ref().is_some_and(|c| {
            c.bytes.len() <= ps / 16 || estimate.is_some_and(|e| c.bytes.len() * 4 <= e * 3)
        });
        let mut full_estimate = estimate.unwrap_or(0);
        if !small {
            // The page's previous version did not compress, no delta is at hand, and
            // the page has few zero words (where lz4 finds most of its matches): it
            // is written raw without trying.
            let predicted_raw = chosen.is_none() && estimate == Some(ps) && !zero_rich(page);
            let compressed = if predicted_raw {
                None
            } else {
                codec::compress(page, scratch)
            };
            let (enc, full) = match compressed {
                Some(block) => (Encoding::Lz4, block),
                None => (Encoding::Raw, page),
            };
            full_estimate = full.len();
            if chosen.as_ref().is_none_or(|c| full.len() < c.bytes.len()) {
                chosen = Some(Chosen {
                    kind: ObjectKind::from(enc),
                    depth: 0,
                    parent: PageHash::ZERO,
                    bytes: full,
                });
            }
        }
        let Some(c) = chosen else {
            return Err(ArchiveError::MissingObject { hash });
        };
        let staged = &mut self.staged;
        let start = staged.data.object_bytes.len() as u64;
        staged.data.object_bytes.extend_from_slice(c.bytes);
        staged.obj_entries.push(ObjEntry {
            hash: hash.0,
            seg: self.data_off,
            pos: staged.data.objects.len() as u32,
            depth: c.depth,
            kind: c.kind.tag(),
        });
        staged.data.objects.push(ObjMeta {
            hash: hash.0,
            parent: c.parent.0,
            start,
            len: c.bytes.len() as u32,
            kind: c.kind.tag(),
            depth: c.depth,
        });
        staged.objects.insert(hash, Known::new(c.depth, full_estimate));
        Ok(())
    }
}

/// Whether at least 1/32 of `page`'s aligned words are zero: lz4 may then pay even
/// where the page's previous version did not compress.
fn zero_rich(page: &[u8]) -> bool {
    let (words, _) = page.as_chunks::<8>();
    let zeros = words.iter().filter(|w| u64::from_ne_bytes(**w) == 0).count();
    zeros * 32 >= words.len()
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
    fn zero_rich_counts_zero_words() {
        let page = |zero_words: usize| {
            let mut p = vec![0u8; zero_words * 8];
            p.resize(4096, 0xA5);
            p
        };
        assert!(!zero_rich(&page(0)));
        // 15 of 512 words zero: under 1/32.
        assert!(!zero_rich(&page(15)));
        assert!(zero_rich(&page(16)));
        // Zero bytes that do not fill an aligned word do not count.
        let mut scattered = vec![0xA5u8; 4096];
        scattered.iter_mut().step_by(2).for_each(|b| *b = 0);
        assert!(!zero_rich(&scattered));
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
