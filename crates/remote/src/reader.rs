//! Reading a remote archive in place: the head (one GET), then only the byte ranges
//! a query touches, as ranged GETs of the part objects, into a bounded local cache
//! that the next reader of the same archive reuses.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange};
use rewind_archive::{sidecar_path, Archive, LazyOptions, RangeSource, SourceError};

use crate::head::Head;
use crate::{cache_dir, cache_file, Remote, RemoteError, TransferReport};

/// The default byte budget of the read cache: 1 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

/// The byte budget of the read cache: `$REWIND_CACHE_BYTES` (a number of bytes, with an
/// optional `k`, `M` or `G` suffix in powers of 1024) when set, else
/// [`DEFAULT_CACHE_BYTES`].
pub fn cache_budget() -> Result<u64, RemoteError> {
    match std::env::var("REWIND_CACHE_BYTES") {
        Ok(v) if !v.trim().is_empty() => parse_bytes(v.trim()).ok_or(RemoteError::BadSetting {
            name: "REWIND_CACHE_BYTES",
            value: v,
            reason: "not a number of bytes (such as 500000000, 512M or 2G)",
        }),
        _ => Ok(DEFAULT_CACHE_BYTES),
    }
}

fn parse_bytes(s: &str) -> Option<u64> {
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        _ => (s, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The lazy cache file of a remote archive: [`cache_file`] with `.lazy` appended (its
/// sidecar is `.lazy.blocks`).
pub fn lazy_cache_file(url: &str) -> Result<PathBuf, RemoteError> {
    let mut s = cache_file(url)?.into_os_string();
    s.push(".lazy");
    Ok(PathBuf::from(s))
}

/// The bytes of one remote archive, fetched from its part objects.
struct PartSource {
    remote: Arc<Remote>,
    head: Head,
}

impl PartSource {
    /// `(part index, range inside the part, range's index)` for every piece of
    /// `ranges`: a range that crosses parts is split at their boundaries.
    fn pieces(&self, ranges: &[Range<u64>]) -> Vec<(usize, Range<u64>, usize)> {
        let mut out = Vec::new();
        for (k, r) in ranges.iter().enumerate() {
            let first = self.head.parts.partition_point(|p| p.end() <= r.start);
            for (i, p) in self.head.parts.iter().enumerate().skip(first) {
                if p.start >= r.end {
                    break;
                }
                let (s, e) = (r.start.max(p.start), r.end.min(p.end()));
                out.push((i, s - p.start..e - p.start, k));
            }
        }
        out
    }
}

impl RangeSource for PartSource {
    fn len(&self) -> u64 {
        self.head.len
    }

    fn fetch(&self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>, SourceError> {
        let pieces = self.pieces(ranges);
        let gen = &self.head.generation;
        let keys: Vec<(StorePath, Range<u64>)> = pieces
            .iter()
            .filter_map(|(i, r, _)| {
                self.head
                    .parts
                    .get(*i)
                    .map(|p| (self.remote.part_key(gen, p), r.clone()))
            })
            .collect();
        let got = self.remote.get_ranges(&keys)?;
        let mut out: Vec<Vec<u8>> = ranges
            .iter()
            .map(|r| Vec::with_capacity((r.end - r.start) as usize))
            .collect();
        for ((_, _, k), bytes) in pieces.iter().zip(got) {
            if let Some(o) = out.get_mut(*k) {
                o.extend_from_slice(&bytes);
            }
        }
        Ok(out)
    }
}

/// The tail to fetch at open: at most `most` bytes, from the first cache block that
/// starts inside the last part, so that it is one GET of one object (the last part
/// holds the last commit's root segment and trailer whenever the push that wrote it
/// fitted in one part), unless no block starts there: then `most` bytes, across parts.
fn open_tail(head: &Head, most: u64) -> u64 {
    let block = rewind_archive::LAZY_BLOCK;
    let start = head.parts.last().map_or(0, |p| p.start).div_ceil(block) * block;
    match head.len.checked_sub(start) {
        Some(t) if t > 0 => t.min(most),
        _ => most,
    }
}

impl Remote {
    /// Several ranged GETs of part objects, issued together: one request each. A part
    /// that is missing or shorter than the range is [`RemoteError::DamagedPart`].
    pub(crate) fn get_ranges(&self, keys: &[(StorePath, Range<u64>)]) -> Result<Vec<Vec<u8>>, RemoteError> {
        use futures_util::future::join_all;
        self.counters
            .requests
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let results = self.rt.block_on(join_all(keys.iter().map(|(key, r)| async move {
            let opts = GetOptions::new().with_range(Some(GetRange::Bounded(r.clone())));
            self.store.get_opts(key, opts).await?.bytes().await
        })));
        let mut out = Vec::with_capacity(keys.len());
        for ((key, r), got) in keys.iter().zip(results) {
            let damaged = |reason: String| RemoteError::DamagedPart {
                url: self.url.clone(),
                part: key.to_string(),
                reason,
            };
            let bytes = match got {
                Ok(b) => b,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(damaged("the object is missing".into()))
                }
                Err(e) if ["416", "Range"].iter().any(|t| format!("{e:?}").contains(t)) => {
                    return Err(damaged(format!("it does not hold bytes {}..{}", r.start, r.end)))
                }
                Err(e) => return Err(self.fail(Self::failure("get", key)(e))),
            };
            self.counters
                .fetched
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if bytes.len() as u64 != r.end - r.start {
                return Err(damaged(format!(
                    "{} bytes for its range {}..{}: the part is shorter than the head says",
                    bytes.len(),
                    r.start,
                    r.end
                )));
            }
            out.push(bytes.to_vec());
        }
        Ok(out)
    }

    /// What this remote has moved since it was opened: requests, and bytes fetched
    /// and sent (heads included).
    pub fn report(&self) -> TransferReport {
        let c = self.count();
        TransferReport {
            requests: c.requests,
            bytes_sent: c.sent,
            bytes_fetched: c.fetched,
            ..TransferReport::default()
        }
    }

    /// Open the remote archive for reading in place, through the cache file `cache`
    /// (created when missing, in a directory that must exist).
    ///
    /// Costs three requests when the archive's root fits in the tail fetched at open
    /// (up to 256 KiB, within the last part when it holds a whole cache block): the
    /// head, then, together, one ranged GET of the first 64 KiB (the header) and one of
    /// the tail (one of each part it spans; a small archive is one GET in all). Every
    /// later query fetches only the 64 KiB blocks it touches that the cache lacks. The
    /// cache file is reused by the next reader while the head's generation is the same
    /// and its length has only grown (appended commits); a new generation starts it
    /// afresh. See [`Archive::open_lazy`].
    ///
    /// The archive must end exactly where the head says, with the head's record and
    /// state hash, or the remote is [`RemoteError::HeadMismatch`]; bytes that do not
    /// read as an archive are [`RemoteError::Read`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use rewind_archive::{ArchiveWriter, Durability};
    /// use rewind_history::{History, HistoryConfig};
    /// use rewind_remote::{PushOptions, Remote};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let local = dir.path().join("a.rwd");
    /// let mut history = History::new(HistoryConfig::new(1024)?.seed(3))?;
    /// let mut writer = ArchiveWriter::create(&local, &history, Durability::Manual)?;
    /// for frame in 0..20u64 {
    ///     history.capture(frame, &vec![frame as u8; 8192], &[], None, None)?;
    ///     writer.append(&history)?;
    /// }
    /// let store = Arc::new(object_store::memory::InMemory::new());
    /// Remote::with_store(store.clone(), "s3://bucket/a.rwd")?.push(&local, PushOptions::default())?;
    ///
    /// let remote = Arc::new(Remote::with_store(store, "s3://bucket/a.rwd")?);
    /// let archive = remote.open_archive(&dir.path().join("a.cache"))?;
    /// assert_eq!(archive.state_hash(7)?, history.at(7)?.state_hash());
    /// // A small archive: the head, then one ranged GET.
    /// assert_eq!(remote.report().requests, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_archive(self: &Arc<Self>, cache: &Path) -> Result<Archive, RemoteError> {
        let (head, _) = self.get_head()?.ok_or_else(|| RemoteError::NoArchive {
            url: self.url.clone(),
            head: self.head_key().to_string(),
        })?;
        let options = LazyOptions {
            generation: head.generation.clone(),
            tail: open_tail(&head, LazyOptions::default().tail),
            ..LazyOptions::default()
        };
        let expect = (head.len, head.head_record, head.head_state_hash.clone());
        let source = PartSource {
            remote: self.clone(),
            head,
        };
        let archive =
            Archive::open_lazy(cache, Box::new(source), &options).map_err(|source| RemoteError::Read {
                url: self.url.clone(),
                source,
            })?;
        let state = archive
            .head()
            .and_then(|id| archive.record(id).ok())
            .map(|r| r.state_hash.to_hex());
        let found = (archive.committed_end(), archive.head().map(|r| r.0), state);
        if found != expect {
            return Err(RemoteError::HeadMismatch {
                url: self.url.clone(),
                reason: format!(
                    "the head says {} bytes, record {:?}, state {:?}; the archive ends at {}, record {:?}, state {:?}",
                    expect.0, expect.1, expect.2, found.0, found.1, found.2
                ),
            });
        }
        Ok(archive)
    }
}

/// Open `url` (configured from the environment) for reading in place through its
/// cache file in [`cache_dir`], first evicting least recently used cache files (never
/// one a live reader holds) so that the cache stays within [`cache_budget`]. Returns
/// the archive and the remote, whose [`Remote::report`] counts what reads fetch.
pub fn open_archive(url: &str) -> Result<(Archive, Arc<Remote>), RemoteError> {
    let cache = lazy_cache_file(url)?;
    let dir = cache_dir();
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(RemoteError::io("create", &dir))?;
    evict(&dir, &cache, cache_budget()?)?;
    let remote = Arc::new(Remote::open(url)?);
    let archive = remote.open_archive(&cache)?;
    Ok((archive, remote))
}

/// What [`evict`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Eviction {
    /// Bytes the cache held before (blocks allocated on disk).
    pub before: u64,
    /// Bytes it holds after.
    pub after: u64,
    /// Cache files removed (with their sidecars).
    pub removed: u64,
    /// Cache files over the budget kept because a live reader holds them.
    pub busy: u64,
}

/// Remove the least recently used cache files of `dir` (by modification time: a
/// reader writes its file's sidecar at open and on every fetch) until the files there
/// take at most `budget` bytes on disk, counting `keep` (the file about to be opened)
/// last: it is removed only when it alone exceeds the budget. A file a live reader
/// holds (its `flock`) is never removed. Sizes are what the files take on disk, so a
/// sparse cache file counts only its fetched blocks. A command reading more than the
/// budget still reads; the next one evicts.
pub fn evict(dir: &Path, keep: &Path, budget: u64) -> Result<Eviction, RemoteError> {
    use std::os::unix::fs::MetadataExt;
    let entries = std::fs::read_dir(dir).map_err(RemoteError::io("list", dir))?;
    // (mtime, bytes, data file) per cache file, its sidecar counted with it.
    let mut files: Vec<(i64, u64, PathBuf)> = Vec::new();
    let mut total = 0;
    for e in entries.flatten() {
        let path = e.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let bytes = meta.blocks() * 512;
        total += bytes;
        if name.ends_with(".blocks") || name.ends_with(".lock") {
            continue;
        }
        let side = std::fs::metadata(sidecar_path(&path)).ok();
        let side_bytes = side.as_ref().map_or(0, |m| m.blocks() * 512);
        let mtime = side.map_or(meta.mtime(), |m| m.mtime().max(meta.mtime()));
        let at = if path == keep { i64::MAX } else { mtime };
        files.push((at, bytes + side_bytes, path));
    }
    files.sort();
    let mut report = Eviction {
        before: total,
        ..Eviction::default()
    };
    for (_, bytes, path) in files {
        if total <= budget {
            break;
        }
        let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        if f.try_lock().is_err() {
            report.busy += 1;
            continue;
        }
        // Removed while locked: no reader can have it open meanwhile.
        std::fs::remove_file(&path).map_err(RemoteError::io("remove", &path))?;
        let _ = std::fs::remove_file(sidecar_path(&path));
        total = total.saturating_sub(bytes);
        report.removed += 1;
    }
    report.after = total;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_budgets_parse_or_are_refused() {
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("4k"), Some(4096));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("2G"), Some(2 << 30));
        for bad in ["", "M", "1.5G", "-3", "12T", "99999999999999999999G"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }
}
