//! The one error type of the crate.

use std::path::PathBuf;

use rewind_archive::ArchiveError;

/// What went wrong in a push, a pull or a remote read. Every variant names the URL or
/// the local path it is about; nothing on either side is changed by a failed pull, and
/// a failed push leaves the remote head (what readers see) as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The URL is not `s3://BUCKET/KEY`.
    #[error("bad remote URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The object store client could not be configured (a bad `AWS_*` setting).
    #[error("cannot configure the object store for {url}")]
    Config {
        /// The remote URL.
        url: String,
        /// The client's error.
        #[source]
        source: object_store::Error,
    },
    /// The async runtime that drives the object store client could not start.
    #[error("cannot start the I/O runtime")]
    Runtime(#[source] std::io::Error),
    /// The local archive could not be opened or locked.
    #[error("local archive {}", path.display())]
    Archive {
        /// The local file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ArchiveError,
    },
    /// A local file operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// The operation (`read`, `write`, `rename`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// There is no archive at the URL (no head object).
    #[error("no archive at {url} (no head object {head})")]
    NoArchive {
        /// The remote URL.
        url: String,
        /// The head object's key.
        head: String,
    },
    /// The bucket does not exist.
    #[error("no bucket {bucket:?} at the object store (for {url})")]
    NoSuchBucket {
        /// The bucket named by the URL.
        bucket: String,
        /// The remote URL.
        url: String,
    },
    /// The store refused the credentials (wrong key or secret, or no permission on the
    /// bucket). Credentials come from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[error("access denied to {url} (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the key's permissions on the bucket)")]
    AccessDenied {
        /// The remote URL.
        url: String,
        /// The store's answer.
        #[source]
        source: object_store::Error,
    },
    /// A request to the store failed (network, server error, ...).
    #[error("{op} {location} failed")]
    Store {
        /// The operation (`get`, `put`, `list`, `head`).
        op: &'static str,
        /// The object's key.
        location: String,
        /// The client's error.
        #[source]
        source: object_store::Error,
    },
    /// The head object is not a head this version understands.
    #[error("bad head object at {url}: {reason}")]
    BadHead {
        /// The remote URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A part object does not hold the bytes the head says (truncated, replaced or
    /// damaged). A pull that meets one changes nothing locally.
    #[error("part {part} of {url} is damaged: {reason}")]
    DamagedPart {
        /// The remote URL.
        url: String,
        /// The part object's key.
        part: String,
        /// What does not match.
        reason: String,
    },
    /// A remote archive read in place failed: its bytes could not be fetched (the
    /// source error names the part) or do not read as an archive.
    #[error("cannot read {url}")]
    Read {
        /// The remote URL.
        url: String,
        /// What the reader found.
        #[source]
        source: ArchiveError,
    },
    /// The archive a head names does not end where the head says, or its head record
    /// or state hash differ from the head's.
    #[error("the head of {url} does not describe its bytes: {reason}")]
    HeadMismatch {
        /// The remote URL.
        url: String,
        /// What differs.
        reason: String,
    },
    /// A setting from the environment is not valid.
    #[error("{name}={value:?}: {reason}")]
    BadSetting {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is expected.
        reason: &'static str,
    },
    /// The remote bytes, though they match their checksums, are not an archive.
    #[error("the bytes of {url} are not a readable archive")]
    NotAnArchive {
        /// The remote URL.
        url: String,
        /// Why the reader refused them.
        #[source]
        source: ArchiveError,
    },
    /// Another writer moved the remote head during this push. Nothing this push
    /// uploaded is visible to readers; pull, then push again.
    #[error("another writer updated {url} during this push (its head changed since it was read); nothing was published: pull, then push again")]
    Conflict {
        /// The remote URL.
        url: String,
    },
    /// The local archive and the remote one are different histories (or the local one
    /// lacks the remote's head record), so neither can extend the other. Nothing is
    /// changed; `force` replaces the other side.
    #[error("{} and {url} have diverged: {reason}", path.display())]
    Diverged {
        /// The local file.
        path: PathBuf,
        /// The remote URL.
        url: String,
        /// How.
        reason: String,
    },
    /// The local file holds commits the remote lacks: a pull would drop them.
    #[error("{} has {} bytes of commits that {url} lacks (push them, or pull into another file)", path.display(), local_len - remote_len)]
    LocalAhead {
        /// The local file.
        path: PathBuf,
        /// The remote URL.
        url: String,
        /// Committed bytes of the local file.
        local_len: u64,
        /// Bytes of the remote archive.
        remote_len: u64,
    },
    /// Recording into the local copy of a [`crate::RemoteRecorder`] failed.
    #[error("recording into {} failed", path.display())]
    Record {
        /// The local copy.
        path: PathBuf,
        /// What the recorder said.
        #[source]
        source: Box<rewind::Error>,
    },
}

impl RemoteError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> RemoteError {
        let path = path.into();
        move |source| RemoteError::Io { op, path, source }
    }

    pub(crate) fn archive(path: impl Into<PathBuf>) -> impl FnOnce(ArchiveError) -> RemoteError {
        let path = path.into();
        move |source| RemoteError::Archive { path, source }
    }
}
