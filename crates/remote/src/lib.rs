//! rewind archives in S3-compatible object storage: `push` a local archive to
//! `s3://bucket/key.rwd`, `pull` it to another machine, moving only the bytes the
//! other side lacks, and read a remote archive in place ([`Remote::open_archive`]):
//! the head, then ranged GETs of only the blocks a query touches, into a bounded
//! local cache that later readers reuse.
//!
//! An archive is an append-only file whose commits end in trailers
//! (`docs/format.md`), so a remote copy is a list of immutable **part** objects,
//! each a byte range of the file, and one small **head** object ([`Head`], JSON)
//! naming them. A push uploads the parts that cover what the remote lacks, then
//! replaces the head with a conditional put, last: a reader never sees a head naming
//! a part that is not there, a crash mid-push leaves the old head, and a second writer
//! whose head is stale gets [`RemoteError::Conflict`]. A pull fetches the missing
//! parts into a temporary file beside the target, checks each part's checksum and
//! that the result opens as an archive, then renames it into place. The layout and
//! its limits are in `docs/remote.md`.
//!
//! The store is [`object_store`] (S3 and compatible servers, configured from the
//! usual `AWS_*` variables), driven by a small current-thread tokio runtime owned by
//! each [`Remote`]; any [`ObjectStore`] can be injected ([`Remote::with_store`]).
//!
//! ```
//! use std::sync::Arc;
//! use rewind_archive::{Archive, ArchiveWriter, Durability};
//! use rewind_history::{History, HistoryConfig};
//! use rewind_remote::{PullOptions, PushOptions, Remote};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (local, copy) = (dir.path().join("a.rwd"), dir.path().join("b.rwd"));
//! let mut history = History::new(HistoryConfig::new(1024)?.seed(3))?;
//! let mut writer = ArchiveWriter::create(&local, &history, Durability::Manual)?;
//! let mut memory = vec![0u8; 8 * 1024];
//! for frame in 0..10u64 {
//!     memory[(frame as usize * 331) % 8192] = frame as u8 + 1;
//!     history.capture(frame, &memory, &[], None, None)?;
//!     writer.append(&history)?;
//! }
//! // An in-memory store stands in for S3 here.
//! let store = Arc::new(object_store::memory::InMemory::new());
//! let remote = Remote::with_store(store, "s3://bucket/games/a.rwd")?;
//! let pushed = remote.push(&local, PushOptions::default())?;
//! assert_eq!(pushed.data_bytes_sent, std::fs::metadata(&local)?.len());
//! let pulled = remote.pull(&copy, PullOptions::default())?;
//! assert_eq!(pulled.data_bytes_fetched, pushed.data_bytes_sent);
//! assert_eq!(Archive::open(&copy)?.state_hash(9)?, history.at(9)?.state_hash());
//! // Nothing new: the second pull reads the head and nothing else.
//! assert_eq!(remote.pull(&copy, PullOptions::default())?.requests, 1);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

mod cache;
mod error;
pub mod garage;
mod head;
mod prune;
mod reader;
mod recorder;
mod transfer;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

pub use cache::{cache_dir, cache_file, sync_cache};
pub use error::RemoteError;
pub use head::{checksum, Head, Part, HEAD_FORMAT};
pub use object_store;
pub use prune::{PruneOptions, PruneReport, DEFAULT_PRUNE_GRACE};
pub use reader::{cache_budget, evict, lazy_cache_file, open_archive, Eviction, DEFAULT_CACHE_BYTES};
pub use recorder::RemoteRecorder;
pub use transfer::{PullOptions, PushOptions, TransferReport};

/// The default largest part a push uploads: 8 MiB.
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;

/// The default number of parts a push or a pull moves at once: 4. Several requests
/// in flight hide a link's round trip; four parts of 8 MiB keep the memory bounded.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Whether `s` names a remote archive (`s3://...`) rather than a local file.
pub fn is_remote(s: &str) -> bool {
    s.starts_with("s3://")
}

/// A parsed `s3://BUCKET/KEY` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteUrl {
    /// The bucket.
    pub bucket: String,
    /// The key of the archive inside the bucket (`games/a.rwd`); its objects live
    /// under `KEY/`.
    pub key: String,
}

impl RemoteUrl {
    /// Parse `s3://BUCKET/KEY`.
    pub fn parse(url: &str) -> Result<RemoteUrl, RemoteError> {
        let bad = |reason| RemoteError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it does not start with s3://"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| bad("no key after the bucket"))?;
        if bucket.is_empty() {
            return Err(bad("empty bucket name"));
        }
        if key.is_empty() || key.ends_with('/') {
            return Err(bad("empty key, or a key ending in /"));
        }
        StorePath::parse(key).map_err(|_| bad("the key has an empty, '.' or '..' segment"))?;
        Ok(RemoteUrl {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }
}

/// Requests and bytes one [`Remote`] has moved, as counted by its calls to the store.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    sent: AtomicU64,
    fetched: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default)]
struct Count {
    requests: u64,
    sent: u64,
    fetched: u64,
}

/// One remote archive: a store, the key of the archive in it, and the runtime that
/// drives the store's requests.
///
/// Its methods block (they must not be called from inside an async runtime).
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    url: String,
    bucket: String,
    root: StorePath,
    part_size: u64,
    concurrency: usize,
    rt: tokio::runtime::Runtime,
    counters: Counters,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.url)
            .field("store", &self.store.to_string())
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// An object store call that failed, with what it was doing.
pub(crate) struct StoreFailure {
    op: &'static str,
    location: String,
    source: object_store::Error,
}

impl Remote {
    /// Open `s3://BUCKET/KEY` with the S3 client configured from the environment:
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` (or
    /// `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL` for a server other than Amazon's and
    /// `AWS_ALLOW_HTTP=true` for one without TLS (every `AWS_*` key of
    /// [`AmazonS3ConfigKey`] is read).
    pub fn open(url: &str) -> Result<Remote, RemoteError> {
        Self::open_with(url, &[])
    }

    /// [`Remote::open`] with settings that override the environment's, as
    /// `(key, value)` pairs of [`AmazonS3ConfigKey`] (`"aws_endpoint"`,
    /// `"aws_access_key_id"`, `"aws_allow_http"`, ...).
    pub fn open_with(url: &str, settings: &[(&str, &str)]) -> Result<Remote, RemoteError> {
        let parsed = RemoteUrl::parse(url)?;
        let config = |source| RemoteError::Config {
            url: url.to_string(),
            source,
        };
        // Bounded waits: a dead endpoint fails in seconds, not after the client's
        // default three minutes of retries.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&parsed.bucket)
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(20),
                ..Default::default()
            });
        for (key, value) in [("aws_connect_timeout", "5s"), ("aws_timeout", "120s")] {
            let from_env = std::env::var_os(key.to_ascii_uppercase()).is_some();
            if let (false, Ok(k)) = (from_env, key.parse::<AmazonS3ConfigKey>()) {
                builder = builder.with_config(k, value);
            }
        }
        for (key, value) in settings {
            let k: AmazonS3ConfigKey = key.parse().map_err(config)?;
            builder = builder.with_config(k, *value);
        }
        let store = builder.build().map_err(config)?;
        Self::build(Arc::new(store), url, parsed)
    }

    /// A remote archive in any [`ObjectStore`] (an in-memory store in tests, a store
    /// wrapped to count or fail requests). Only the key of `url` is used: `store` is
    /// the bucket.
    pub fn with_store(store: Arc<dyn ObjectStore>, url: &str) -> Result<Remote, RemoteError> {
        let parsed = RemoteUrl::parse(url)?;
        Self::build(store, url, parsed)
    }

    fn build(store: Arc<dyn ObjectStore>, url: &str, parsed: RemoteUrl) -> Result<Remote, RemoteError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RemoteError::Runtime)?;
        Ok(Remote {
            store,
            url: url.to_string(),
            bucket: parsed.bucket,
            root: StorePath::from(parsed.key),
            part_size: DEFAULT_PART_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            rt,
            counters: Counters::default(),
        })
    }

    /// Upload parts of at most `bytes` (at least 1 KiB; default [`DEFAULT_PART_SIZE`]).
    pub fn part_size(mut self, bytes: u64) -> Remote {
        self.part_size = bytes.max(1024);
        self
    }

    /// Move up to `n` parts at once in a push or a pull (at least 1; default
    /// [`DEFAULT_CONCURRENCY`]). A pull still writes them in order; a push publishes
    /// the head only after every part has landed. Memory in flight is at most `n`
    /// parts.
    pub fn concurrency(mut self, n: usize) -> Remote {
        self.concurrency = n.max(1);
        self
    }

    /// The URL this remote was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key of the head object.
    pub fn head_key(&self) -> StorePath {
        self.root.clone().join("head.json")
    }

    /// The key prefix of a generation's parts.
    pub fn generation_key(&self, generation: &str) -> StorePath {
        self.root.clone().join(format!("g-{generation}"))
    }

    /// The key of one part object.
    pub fn part_key(&self, generation: &str, part: &Part) -> StorePath {
        self.generation_key(generation).join(part.name())
    }

    /// Read the head object (one request), or `None` when there is none.
    pub fn head(&self) -> Result<Option<Head>, RemoteError> {
        Ok(self.get_head()?.map(|(h, _)| h))
    }

    fn count(&self) -> Count {
        Count {
            requests: self.counters.requests.load(Ordering::Relaxed),
            sent: self.counters.sent.load(Ordering::Relaxed),
            fetched: self.counters.fetched.load(Ordering::Relaxed),
        }
    }

    fn block<T>(&self, fut: impl Future<Output = T>) -> T {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.rt.block_on(fut)
    }

    /// Turn a store failure into the error a user can act on.
    pub(crate) fn fail(&self, f: StoreFailure) -> RemoteError {
        let text = format!("{:?}", f.source);
        match f.source {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                RemoteError::AccessDenied {
                    url: self.url.clone(),
                    source: f.source,
                }
            }
            _ if text.contains("NoSuchBucket") => RemoteError::NoSuchBucket {
                bucket: self.bucket.clone(),
                url: self.url.clone(),
            },
            _ => RemoteError::Store {
                op: f.op,
                location: f.location,
                source: f.source,
            },
        }
    }

    fn failure(op: &'static str, location: &StorePath) -> impl FnOnce(object_store::Error) -> StoreFailure {
        let location = location.to_string();
        move |source| StoreFailure { op, location, source }
    }

    /// The head and its version, or `None`.
    pub(crate) fn get_head(&self) -> Result<Option<(Head, UpdateVersion)>, RemoteError> {
        let key = self.head_key();
        let got = self.block(async {
            let r = self.store.get(&key).await?;
            let meta = r.meta.clone();
            let bytes = r.bytes().await?;
            Ok::<_, object_store::Error>((meta, bytes))
        });
        let (meta, bytes) = match got {
            Ok(x) => x,
            Err(e @ object_store::Error::NotFound { .. }) => {
                // A missing bucket is an error; a missing head is "no archive yet".
                return match self.fail(Self::failure("get", &key)(e)) {
                    RemoteError::Store { .. } => Ok(None),
                    other => Err(other),
                };
            }
            Err(e) => return Err(self.fail(Self::failure("get", &key)(e))),
        };
        self.counters
            .fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let head = Head::parse(&bytes).map_err(|reason| RemoteError::BadHead {
            url: self.url.clone(),
            reason,
        })?;
        let version = UpdateVersion {
            e_tag: meta.e_tag,
            version: meta.version,
        };
        Ok(Some((head, version)))
    }

    /// The head's current version (one request), for the check before a put.
    pub(crate) fn head_version(&self) -> Result<Option<UpdateVersion>, RemoteError> {
        let key = self.head_key();
        match self.block(self.store.head(&key)) {
            Ok(meta) => Ok(Some(UpdateVersion {
                e_tag: meta.e_tag,
                version: meta.version,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(Self::failure("head", &key)(e))),
        }
    }

    /// Replace the head: create it when `previous` is `None`, else only if it is still
    /// at `previous`.
    pub(crate) fn put_head(&self, head: &Head, previous: Option<UpdateVersion>) -> Result<(), RemoteError> {
        let key = self.head_key();
        let body = serde_json::to_vec_pretty(head).map_err(|e| RemoteError::BadHead {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        let n = body.len() as u64;
        let mode = match previous {
            None => PutMode::Create,
            Some(v) => PutMode::Update(v),
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self.block(self.store.put_opts(&key, PutPayload::from(body), opts)) {
            Ok(_) => {
                self.counters.sent.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                Err(RemoteError::Conflict {
                    url: self.url.clone(),
                })
            }
            Err(e) => Err(self.fail(Self::failure("put", &key)(e))),
        }
    }

    /// Upload one part (overwriting is harmless: its name fixes its bytes). Counted
    /// when it is sent, so parts can be uploaded concurrently ([`Remote::concurrency`]).
    pub(crate) async fn put_part(
        &self,
        generation: &str,
        part: &Part,
        bytes: &[u8],
    ) -> Result<(), RemoteError> {
        let key = self.part_key(generation, part);
        let payload = PutPayload::from(bytes.to_vec());
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.store
            .put(&key, payload)
            .await
            .map_err(|e| self.fail(Self::failure("put", &key)(e)))?;
        self.counters
            .sent
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Fetch one part, or only its bytes after `held` (a ranged GET) when the local
    /// file already holds its first `held.len()` bytes, and check the whole part's
    /// length and checksum. Returns the fetched bytes.
    pub(crate) async fn get_part(
        &self,
        generation: &str,
        part: &Part,
        held: &[u8],
    ) -> Result<Vec<u8>, RemoteError> {
        let key = self.part_key(generation, part);
        let damaged = |reason: String| RemoteError::DamagedPart {
            url: self.url.clone(),
            part: key.to_string(),
            reason,
        };
        let from = held.len() as u64;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let got = async {
            if from == 0 {
                self.store.get(&key).await?.bytes().await
            } else {
                // The rest of the object, however long it is; past its end a
                // server answers 416 (the part is short).
                let opts =
                    object_store::GetOptions::new().with_range(Some(object_store::GetRange::Offset(from)));
                self.store.get_opts(&key, opts).await?.bytes().await
            }
        }
        .await;
        let bytes = match got {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Err(damaged("the object is missing".into())),
            Err(e) if from > 0 && ["416", "Range"].iter().any(|t| format!("{e:?}").contains(t)) => {
                return Err(damaged(format!(
                    "shorter than {} bytes, the head says {}",
                    from + 1,
                    part.len
                )))
            }
            Err(e) => return Err(self.fail(Self::failure("get", &key)(e))),
        };
        self.counters
            .fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let total = from + bytes.len() as u64;
        if total != part.len {
            return Err(damaged(format!("{total} bytes, the head says {}", part.len)));
        }
        let found = if from == 0 {
            checksum(&bytes)
        } else {
            let mut whole = Vec::with_capacity(total as usize);
            whole.extend_from_slice(held);
            whole.extend_from_slice(&bytes);
            checksum(&whole)
        };
        if found != part.checksum {
            let whose = if from == 0 {
                ""
            } else {
                " (with the local file's first bytes of it)"
            };
            return Err(damaged(format!(
                "checksum {found}{whose}, the head says {}",
                part.checksum
            )));
        }
        Ok(bytes.to_vec())
    }

    /// The part objects already in a generation from offset `from` on: `(name, size)`.
    pub(crate) fn list_parts(&self, generation: &str, from: u64) -> Result<Vec<(String, u64)>, RemoteError> {
        use futures_util::TryStreamExt;
        let prefix = self.generation_key(generation);
        let offset = prefix.clone().join(format!("{from:016x}"));
        let listed = self.block(async {
            self.store
                .list_with_offset(Some(&prefix), &offset)
                .try_collect::<Vec<_>>()
                .await
        });
        let metas = listed.map_err(|e| self.fail(Self::failure("list", &prefix)(e)))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| m.location.filename().map(|n| (n.to_string(), m.size)))
            .collect())
    }
}

/// Push a local archive to `url` (configured from the environment): see
/// [`Remote::push`].
pub fn push(local: impl AsRef<std::path::Path>, url: &str) -> Result<TransferReport, RemoteError> {
    Remote::open(url)?.push(local.as_ref(), PushOptions::default())
}

/// Pull `url` (configured from the environment) into a local archive: see
/// [`Remote::pull`].
pub fn pull(url: &str, local: impl AsRef<std::path::Path>) -> Result<TransferReport, RemoteError> {
    Remote::open(url)?.pull(local.as_ref(), PullOptions::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        let u = RemoteUrl::parse("s3://b/dir/a.rwd").expect("valid");
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("b", "dir/a.rwd"));
        for bad in [
            "s3:/b/a",
            "http://b/a",
            "s3://b",
            "s3:///a",
            "s3://b/",
            "s3://b/a//c",
            "s3://b/../a",
        ] {
            assert!(
                matches!(RemoteUrl::parse(bad), Err(RemoteError::BadUrl { .. })),
                "{bad}"
            );
        }
        assert!(is_remote("s3://b/a") && !is_remote("a.rwd"));
    }
}
