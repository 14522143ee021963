use std::path::PathBuf;

use rewind_history::{HistoryError, RecordId};
use rewind_store::{CodecError, PageHash, RebuildError, StateHash, StoreError};

/// Errors of the archive: I/O, a file that is not (or no longer) a valid archive, and
/// lookups of what the archive does not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// An I/O error.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A lazily read archive could not fetch bytes from its source (see
    /// [`Archive::open_lazy`](crate::Archive::open_lazy)).
    #[error("cannot fetch {len} bytes at offset {offset} of the archive: {source}")]
    Fetch {
        /// The first byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// What the source reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The file does not start with the archive magic.
    #[error("not a rewind archive (magic {found:02x?})")]
    BadMagic {
        /// The first 8 bytes found.
        found: [u8; 8],
    },
    /// A format version this build does not read.
    #[error(
        "archive format version {found} is not supported (this build reads versions {} to {})",
        crate::format::MIN_VERSION,
        crate::format::VERSION
    )]
    UnsupportedVersion {
        /// The version in the header.
        found: u32,
    },
    /// A header field out of range.
    #[error("bad archive header: {reason}")]
    BadHeader {
        /// What is wrong.
        reason: &'static str,
    },
    /// The file ends before a structure it must hold.
    #[error("archive truncated at offset {offset}: {needed} bytes needed, the file (or committed part) ends at {file_len}")]
    Truncated {
        /// Where the structure starts.
        offset: u64,
        /// Bytes the structure needs.
        needed: u64,
        /// Where the file (or the committed part of it) ends.
        file_len: u64,
    },
    /// Bytes that do not match their checksum.
    #[error("checksum mismatch at offset {offset}: stored {expected:#018x}, computed {found:#018x}")]
    ChecksumMismatch {
        /// Offset of the segment, header or trailer.
        offset: u64,
        /// The stored checksum.
        expected: u64,
        /// The checksum of the bytes.
        found: u64,
    },
    /// A segment whose framing is wrong.
    #[error("bad segment at offset {offset}: {reason}")]
    BadSegment {
        /// Offset of the segment.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A payload that fails rkyv validation.
    #[error("segment at offset {offset} fails validation: {message}")]
    Validation {
        /// Offset of the segment.
        offset: u64,
        /// rkyv's message.
        message: String,
    },
    /// Archived data that validates but breaks the format's rules.
    #[error("inconsistent archive data at offset {offset}: {reason}")]
    Inconsistent {
        /// Offset of the segment holding the data.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A record number the archive does not hold.
    #[error("record {0} is not in the archive")]
    NoSuchRecord(RecordId),
    /// An iteration the latest timeline does not hold.
    #[error("iteration {iteration} is not on the archive's timeline")]
    NotOnTimeline {
        /// The iteration asked for.
        iteration: u64,
    },
    /// A page hash the archive does not hold.
    #[error("page {hash} is not in the archive")]
    MissingObject {
        /// The hash.
        hash: PageHash,
    },
    /// A delta chain longer than the header allows (or a cycle in a hostile file).
    #[error("delta chain under {hash} is longer than {limit}")]
    ChainTooLong {
        /// The page read.
        hash: PageHash,
        /// The bound.
        limit: usize,
    },
    /// Stored page bytes that do not decode.
    #[error("object {hash} does not decode")]
    Codec {
        /// The object.
        hash: PageHash,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// An object that rebuilds to bytes of another hash (found by `verify`).
    #[error("object {hash} rebuilds to bytes with hash {found}")]
    ObjectHashMismatch {
        /// The stored hash.
        hash: PageHash,
        /// The hash of the rebuilt bytes.
        found: PageHash,
    },
    /// A record whose state hash does not recompute (found by `verify` and export).
    #[error("record {record}: stored state hash {stored}, recomputed {computed}")]
    StateHashMismatch {
        /// The record.
        record: RecordId,
        /// The stored hash.
        stored: StateHash,
        /// The recomputed hash.
        computed: StateHash,
    },
    /// A read outside a record's memory.
    #[error("bytes {addr}+{len} are outside the {memory_len}-byte memory")]
    OutOfBounds {
        /// Start address.
        addr: u64,
        /// Length.
        len: u64,
        /// The memory length.
        memory_len: u64,
    },
    /// A history whose configuration differs from the archive's header.
    #[error("the history's {what} differs from the archive's")]
    ConfigMismatch {
        /// Which parameter.
        what: &'static str,
    },
    /// A history that cannot be appended (e.g. a record was removed before it was
    /// written and its children were written against it).
    #[error("cannot append: {reason}")]
    NotAppendable {
        /// Why.
        reason: &'static str,
    },
    /// The writer refuses a file with a torn tail: call [`crate::repair`] first.
    #[error("archive has a torn tail of {len} bytes at offset {offset}: repair it first")]
    TornTail {
        /// Where the torn bytes start.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// Another process (or another handle in this one) holds the archive's writer
    /// lock: only one writer, `repair` or `compact` may work on an archive at a time.
    #[error("{} is locked by another writer ({})", path.display(), holder(*pid))]
    Locked {
        /// The archive.
        path: PathBuf,
        /// The process id the lock file names, when it could be read.
        pid: Option<u32>,
    },
    /// [`crate::ArchiveWriter::create`] refuses to overwrite an existing file; use
    /// [`crate::ArchiveWriter::replace`] to replace an archive.
    #[error("{} already exists (use ArchiveWriter::replace to replace it)", path.display())]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// A path that names something other than a regular file (a directory, a FIFO, a
    /// device, a socket): archives are only read from and written to regular files.
    #[error("{} is {what}, not an archive file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is ("a directory", "a FIFO", ...).
        what: &'static str,
    },
    /// Bytes after the last complete commit that a torn write cannot explain: a commit
    /// trailer with a valid checksum, or a complete commit whose trailer is damaged.
    /// Readers refuse such a file rather than silently dropping what may be durable
    /// data; [`crate::repair_with`] with `force` cuts it.
    #[error("archive damaged at offset {offset}, after its last complete commit: {reason} (a forced repair cuts everything after the last complete commit)")]
    DamagedTail {
        /// Where the bytes a torn write cannot explain are.
        offset: u64,
        /// What was found.
        reason: &'static str,
    },
    /// Finding the last complete commit of a damaged file would checksum more bytes than
    /// the scan's bound allows (a hostile file full of forged commit trailers).
    #[error("scanning for the last complete commit exceeded its bound of {limit} checksummed bytes")]
    ScanLimit {
        /// The bound.
        limit: u64,
    },
    /// From the history crate (export, compaction).
    #[error(transparent)]
    History(#[from] HistoryError),
    /// From the page store (export).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From garbage collection.
    #[error(transparent)]
    Gc(#[from] rewind_gc::GcError),
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("pid {p}"),
        None => "holder's pid unknown".to_string(),
    }
}

impl From<RebuildError> for ArchiveError {
    fn from(e: RebuildError) -> Self {
        match e {
            RebuildError::MissingObject { hash } => ArchiveError::MissingObject { hash },
            RebuildError::Corrupt { hash, source } => ArchiveError::Codec { hash, source },
            RebuildError::ChainTooLong { hash, limit } => ArchiveError::ChainTooLong { hash, limit },
            // The enum is non-exhaustive; a new reason is a store error.
            e => ArchiveError::Store(StoreError::from(e)),
        }
    }
}

impl ArchiveError {
    pub(crate) fn io<'p>(
        op: &'static str,
        path: &'p std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> ArchiveError + 'p {
        move |source| ArchiveError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
