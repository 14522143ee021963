//! `push` and `pull`: move only the parts the other side lacks.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use rewind_archive::{Archive, ArchiveLock};
use rewind_history::RecordId;

use crate::head::{checksum, Head, Part, HEADER_LEN, HEAD_FORMAT, TRAILER_LEN};
use crate::{Count, Remote, RemoteError};

/// What a push or a pull did: requests made and bytes moved, counted at the calls to
/// the store (a request is one call: a GET, a PUT, a HEAD or a LIST).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferReport {
    /// Requests made to the store.
    pub requests: u64,
    /// Bytes uploaded: parts and the head.
    pub bytes_sent: u64,
    /// Bytes downloaded: parts and the head.
    pub bytes_fetched: u64,
    /// Archive bytes uploaded (parts only).
    pub data_bytes_sent: u64,
    /// Archive bytes downloaded (parts only).
    pub data_bytes_fetched: u64,
    /// Parts uploaded.
    pub parts_sent: u64,
    /// Parts downloaded.
    pub parts_fetched: u64,
    /// Parts not moved because the other side already had them: uploaded by a push
    /// that was interrupted before it published the head, or held by a temporary file
    /// an interrupted pull left.
    pub parts_resumed: u64,
    /// Bytes of the archive on both sides afterwards (the end of its last commit).
    pub len: u64,
    /// The push started a new generation (the local file no longer extends the
    /// remote's bytes, as after a garbage collection).
    pub new_generation: bool,
    /// Nothing was missing: nothing was written on either side.
    pub up_to_date: bool,
}

/// How [`Remote::push`] treats a remote it cannot extend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushOptions {
    /// Replace the remote archive even when the local file does not hold the remote's
    /// head record (another history, or a file behind the remote). Without it such a
    /// push is [`RemoteError::Diverged`] and changes nothing.
    pub force: bool,
}

/// How [`Remote::pull`] treats a local file it cannot extend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullOptions {
    /// Replace a local file that is not a prefix of the remote archive (another
    /// history, commits the remote lacks, or not an archive at all). Without it such a
    /// pull is an error ([`RemoteError::Diverged`], [`RemoteError::LocalAhead`],
    /// [`RemoteError::Archive`]) and changes nothing. The read cache uses it.
    pub replace: bool,
}

impl TransferReport {
    /// Add a later transfer to this one: counts are summed, `len` and `up_to_date`
    /// are the later one's, `new_generation` is whether either started one.
    pub fn add(&mut self, later: &TransferReport) {
        self.requests += later.requests;
        self.bytes_sent += later.bytes_sent;
        self.bytes_fetched += later.bytes_fetched;
        self.data_bytes_sent += later.data_bytes_sent;
        self.data_bytes_fetched += later.data_bytes_fetched;
        self.parts_sent += later.parts_sent;
        self.parts_fetched += later.parts_fetched;
        self.parts_resumed += later.parts_resumed;
        self.len = later.len;
        self.new_generation |= later.new_generation;
        self.up_to_date = later.up_to_date;
    }

    fn finish(mut self, remote: &Remote, before: Count) -> TransferReport {
        let now = remote.count();
        self.requests = now.requests - before.requests;
        self.bytes_sent = now.sent - before.sent;
        self.bytes_fetched = now.fetched - before.fetched;
        self
    }
}

/// Whether `bytes` extend the remote archive of `head`: same header, the same last
/// part and the same last trailer.
fn extends(head: &Head, bytes: &[u8]) -> bool {
    let trailer = usize::try_from(head.len)
        .ok()
        .and_then(|end| bytes.get(end - TRAILER_LEN as usize..end));
    bytes.len() as u64 >= head.len
        && head.holds_prefix(bytes, head.parts.len())
        && trailer.is_some_and(|t| checksum(t) == head.trailer_checksum)
}

/// Whether the local archive holds the remote head's record with its state hash, in
/// the same history (seed and page size): then replacing the remote with it drops
/// no head a reader has seen, only what a garbage collection chose to drop.
fn holds_head(archive: &Archive, head: &Head) -> bool {
    let Ok(info) = archive.info() else {
        return false;
    };
    if info.seed != head.seed || info.page_size != head.page_size {
        return false;
    }
    match (head.head_record, &head.head_state_hash) {
        (None, _) => true,
        (Some(id), Some(hash)) => archive
            .record(RecordId(id))
            .is_ok_and(|r| r.state_hash.to_hex() == *hash),
        (Some(_), None) => false,
    }
}

/// Split `bytes[from..]` into parts of at most `size` bytes.
fn plan(bytes: &[u8], from: u64, size: u64) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut at = from;
    let len = bytes.len() as u64;
    while at < len {
        let end = (at + size).min(len);
        // Offsets come from the slice's own length: in range.
        let chunk = bytes.get(at as usize..end as usize).unwrap_or_default();
        parts.push(Part {
            start: at,
            len: end - at,
            checksum: checksum(chunk),
        });
        at = end;
    }
    parts
}

fn sync_dir(path: &Path) -> Result<(), RemoteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(RemoteError::io("sync", dir))
}

/// The temporary file a pull into `local` writes: hidden, beside it.
pub(crate) fn temp_path(local: &Path) -> PathBuf {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    local.with_file_name(format!(".{name}.rewind-pull"))
}

/// The first of the first `n` parts of `head` whose bytes in `bytes` do not match.
fn first_bad_part<'h>(head: &'h Head, bytes: &[u8], n: usize) -> Option<&'h Part> {
    head.parts.iter().take(n).find(|p| {
        let range = usize::try_from(p.start).ok().zip(usize::try_from(p.end()).ok());
        range
            .and_then(|(s, e)| bytes.get(s..e))
            .is_none_or(|b| checksum(b) != p.checksum)
    })
}

/// How many leading parts of `head` the file at `path` holds, each checked by its
/// checksum (0 when there is no such file).
fn verified_parts(path: &Path, head: &Head) -> Result<usize, RemoteError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(RemoteError::io("open", path)(e)),
    };
    let mut buf = Vec::new();
    for (i, p) in head.parts.iter().enumerate() {
        let Ok(n) = usize::try_from(p.len) else {
            return Ok(i);
        };
        buf.resize(n, 0);
        if file.read_exact_at(&mut buf, p.start).is_err() || checksum(&buf) != p.checksum {
            return Ok(i);
        }
    }
    Ok(head.parts.len())
}

impl Remote {
    /// Upload what the remote archive lacks of the local archive at `local`.
    ///
    /// Reads the head (one request). When the local file extends the remote bytes
    /// (same header, same last part and trailer), uploads parts covering only
    /// `[remote length, local length)`; when it does not but holds the remote head's
    /// record with the same state hash (a garbage collection rewrote it), uploads all
    /// of it as a new generation; otherwise refuses ([`RemoteError::Diverged`], unless
    /// `options.force`). Parts an interrupted push already uploaded are found with one
    /// listing and not sent again. The head is replaced last, with a conditional put
    /// against the version read at the start ([`RemoteError::Conflict`] when another
    /// writer moved it). Only complete commits are pushed: a torn tail stays local.
    pub fn push(&self, local: &Path, options: PushOptions) -> Result<TransferReport, RemoteError> {
        let before = self.count();
        let archive = Archive::open(local).map_err(RemoteError::archive(local))?;
        let bytes = archive.committed_bytes();
        let len = bytes.len() as u64;
        let info = archive.info().map_err(RemoteError::archive(local))?;
        let mut report = TransferReport {
            len,
            ..Default::default()
        };
        let current = self.get_head()?;
        let (generation, mut parts, previous) = match current {
            None => {
                report.new_generation = true;
                (new_generation(bytes, self.part_size), Vec::new(), None)
            }
            Some((head, version)) if extends(&head, bytes) => {
                if head.len == len {
                    report.up_to_date = true;
                    return Ok(report.finish(self, before));
                }
                (head.generation, head.parts, Some(version))
            }
            Some((head, version)) => {
                if !options.force && !holds_head(&archive, &head) {
                    let reason = if info.seed != head.seed {
                        "they are different histories (hash seeds differ); force replaces the remote"
                            .to_string()
                    } else {
                        format!(
                            "the local file lacks the remote head record r{} (pull first, or force to replace the remote)",
                            head.head_record.unwrap_or_default()
                        )
                    };
                    return Err(RemoteError::Diverged {
                        path: local.to_path_buf(),
                        url: self.url.clone(),
                        reason,
                    });
                }
                report.new_generation = true;
                (new_generation(bytes, self.part_size), Vec::new(), Some(version))
            }
        };
        let from = parts.last().map_or(0, Part::end);
        let new_parts = plan(bytes, from, self.part_size);
        let uploaded: HashSet<(String, u64)> = self.list_parts(&generation, from)?.into_iter().collect();
        let missing: Vec<&Part> = new_parts
            .iter()
            .filter(|p| !uploaded.contains(&(p.name(), p.len)))
            .collect();
        report.parts_resumed = (new_parts.len() - missing.len()) as u64;
        // Up to `concurrency` PUTs in flight; the first failure drops the others (a
        // later push lists what landed and resumes from it).
        let uploads = futures_util::stream::iter(missing.iter().map(|p| {
            let chunk = bytes.get(p.start as usize..p.end() as usize).unwrap_or_default();
            self.put_part(&generation, p, chunk)
        }))
        .buffer_unordered(self.concurrency)
        .try_for_each(|()| std::future::ready(Ok(())));
        self.rt.block_on(uploads)?;
        report.parts_sent = missing.len() as u64;
        report.data_bytes_sent = missing.iter().map(|p| p.len).sum();
        parts.extend(new_parts);
        let head_record = archive.head();
        let head_state_hash = match head_record {
            Some(id) => Some(
                archive
                    .record(id)
                    .map_err(RemoteError::archive(local))?
                    .state_hash
                    .to_hex(),
            ),
            None => None,
        };
        let trailer = bytes
            .get(bytes.len().saturating_sub(TRAILER_LEN as usize)..)
            .unwrap_or_default();
        let head = Head {
            format: HEAD_FORMAT,
            generation,
            len,
            seed: info.seed,
            page_size: info.page_size,
            header_checksum: checksum(bytes.get(..HEADER_LEN as usize).unwrap_or_default()),
            trailer_checksum: checksum(trailer),
            head_record: head_record.map(|r| r.0),
            head_state_hash,
            parts,
        };
        // Check, then put conditionally. The put alone is atomic on stores that honour
        // conditional writes; the check also catches a stale writer on those that do
        // not (Garage 2.5 ignores If-Match on PUT), leaving a window of one round trip.
        let now = self.head_version()?;
        let same = match (&now, &previous) {
            (None, None) => true,
            (Some(a), Some(b)) => a.e_tag == b.e_tag && a.version == b.version,
            _ => false,
        };
        if !same {
            return Err(RemoteError::Conflict {
                url: self.url.clone(),
            });
        }
        self.put_head(&head, previous)?;
        Ok(report.finish(self, before))
    }

    /// Fetch what the local archive at `local` lacks of the remote archive.
    ///
    /// Takes the local archive's writer lock for the whole pull. Reads the head (one
    /// request). When `local` already ends on a part boundary of the remote with the
    /// same bytes (checked by the header and that part's checksum), only the parts
    /// after it are fetched (one GET each); a missing `local` is fetched whole. The
    /// result is written to a temporary file beside `local` (the kept prefix copied
    /// from the local file, then the fetched parts, each checked against its
    /// checksum), synced, opened as an archive ending exactly where the head says, and
    /// renamed over `local`. A pull killed midway leaves that temporary file, and the
    /// next pull goes on from the parts it holds. On any error `local` is untouched.
    pub fn pull(&self, local: &Path, options: PullOptions) -> Result<TransferReport, RemoteError> {
        let before = self.count();
        let _lock = ArchiveLock::acquire(local).map_err(RemoteError::archive(local))?;
        let (head, _) = self.get_head()?.ok_or_else(|| RemoteError::NoArchive {
            url: self.url.clone(),
            head: self.head_key().to_string(),
        })?;
        let mut report = TransferReport {
            len: head.len,
            ..Default::default()
        };
        let existing = open_existing(local, options)?;
        let (have, partial) = match &existing {
            None => (0, 0),
            Some(a) => self.held_prefix(local, &head, a.committed_bytes(), options)?,
        };
        if have == head.parts.len() {
            report.up_to_date = true;
            return Ok(report.finish(self, before));
        }
        let (have, partial) =
            self.checked_prefix(local, &head, existing.as_ref(), (have, partial), options)?;
        let tmp = temp_path(local);
        let (mut file, from, held_part) =
            start_temp(&tmp, &head, existing.as_ref(), have, partial, &mut report)?;
        drop(existing);
        // Up to `concurrency` GETs in flight, written in order as they complete.
        let fetches =
            futures_util::stream::iter(head.parts.get(from..).unwrap_or_default().iter().enumerate().map(
                |(i, p)| {
                    let held: &[u8] = if i == 0 { &held_part } else { &[] };
                    self.get_part(&head.generation, p, held)
                },
            ))
            .buffered(self.concurrency)
            .try_for_each(|bytes| {
                let wrote = file.write_all(&bytes).map_err(RemoteError::io("write", &tmp));
                report.parts_fetched += 1;
                report.data_bytes_fetched += bytes.len() as u64;
                std::future::ready(wrote)
            });
        self.rt.block_on(fetches)?;
        file.sync_all().map_err(RemoteError::io("sync", &tmp))?;
        drop(file);
        self.install(&tmp, local, &head)?;
        Ok(report.finish(self, before))
    }

    /// How much of the remote archive the local committed bytes `b` hold: `have` whole
    /// parts plus `partial` bytes of the next one. A local file that is no prefix of
    /// the remote is [`RemoteError::LocalAhead`] or [`RemoteError::Diverged`] unless
    /// `options.replace` (then nothing is kept).
    fn held_prefix(
        &self,
        local: &Path,
        head: &Head,
        b: &[u8],
        options: PullOptions,
    ) -> Result<(usize, u64), RemoteError> {
        let l = b.len() as u64;
        let inside = head.parts.iter().position(|p| p.start < l && l < p.end());
        let same_header = b
            .get(..HEADER_LEN as usize)
            .is_some_and(|h| checksum(h) == head.header_checksum);
        Ok(match (head.parts_ending_at(l), inside) {
            (Some(n), _) if head.holds_prefix(b, n) => (n, 0),
            // Inside a part: the ranged GET of its rest checks the held bytes (with
            // `replace`, the whole part is fetched: a mismatch there would leave nothing
            // to fall back on).
            (None, Some(k)) if same_header && options.replace => (k, 0),
            (None, Some(k)) if same_header => (k, l - head.parts.get(k).map_or(l, |p| p.start)),
            _ if options.replace => (0, 0),
            _ if l > head.len && head.holds_prefix(b, head.parts.len()) => {
                return Err(RemoteError::LocalAhead {
                    path: local.to_path_buf(),
                    url: self.url.clone(),
                    local_len: l,
                    remote_len: head.len,
                })
            }
            _ => {
                return Err(RemoteError::Diverged {
                    path: local.to_path_buf(),
                    url: self.url.clone(),
                    reason: "the local file is not a prefix of the remote archive (replace it to pull)"
                        .into(),
                })
            }
        })
    }

    /// Check every part of the held prefix before building on it (hashing is far
    /// cheaper than the transfer), so the file holds only checked bytes: a bad part is
    /// [`RemoteError::Diverged`], or with `options.replace` nothing is kept.
    fn checked_prefix(
        &self,
        local: &Path,
        head: &Head,
        existing: Option<&Archive>,
        (have, partial): (usize, u64),
        options: PullOptions,
    ) -> Result<(usize, u64), RemoteError> {
        match existing.and_then(|a| first_bad_part(head, a.committed_bytes(), have)) {
            None => Ok((have, partial)),
            Some(_) if options.replace => Ok((0, 0)),
            Some(p) => Err(RemoteError::Diverged {
                path: local.to_path_buf(),
                url: self.url.clone(),
                reason: format!(
                    "the local file's bytes differ from the remote's at {}..{}",
                    p.start,
                    p.end()
                ),
            }),
        }
    }

    /// Open the pulled temporary file as an archive ending exactly where the head says
    /// and rename it over `local`; anything else removes it and is
    /// [`RemoteError::NotAnArchive`].
    fn install(&self, tmp: &Path, local: &Path, head: &Head) -> Result<(), RemoteError> {
        let checked = Archive::open(tmp).and_then(|a| {
            if a.committed_end() == head.len && a.torn_tail().is_none() {
                Ok(())
            } else {
                Err(rewind_archive::ArchiveError::Inconsistent {
                    offset: a.committed_end(),
                    reason: "the last commit does not end where the remote head says",
                })
            }
        });
        if let Err(source) = checked {
            let _ = std::fs::remove_file(tmp);
            return Err(RemoteError::NotAnArchive {
                url: self.url.clone(),
                source,
            });
        }
        std::fs::rename(tmp, local).map_err(RemoteError::io("rename", local))?;
        sync_dir(local)
    }
}

/// The local archive a pull builds on: `None` when there is no file, or when it does
/// not open and `options.replace` lets the pull fetch everything.
fn open_existing(local: &Path, options: PullOptions) -> Result<Option<Archive>, RemoteError> {
    match std::fs::symlink_metadata(local) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => match Archive::open(local) {
            Ok(a) => Ok(Some(a)),
            Err(_) if options.replace => Ok(None),
            Err(e) => Err(RemoteError::archive(local)(e)),
        },
    }
}

/// Start the pull's temporary file: go on from the parts an interrupted pull left in
/// it when they reach past the held prefix, else write the held prefix (`have` parts
/// and `partial` bytes) from the local archive. Returns the file positioned where the
/// fetch continues, the first part to fetch, and the bytes of that part already held
/// (which its ranged GET checks).
fn start_temp(
    tmp: &Path,
    head: &Head,
    existing: Option<&Archive>,
    have: usize,
    partial: u64,
    report: &mut TransferReport,
) -> Result<(File, usize, Vec<u8>), RemoteError> {
    let resumed = verified_parts(tmp, head)?;
    let (mut file, from, partial) = if resumed > have {
        let f = OpenOptions::new()
            .write(true)
            .open(tmp)
            .map_err(RemoteError::io("open", tmp))?;
        let end = head.parts.get(resumed - 1).map_or(0, Part::end);
        f.set_len(end).map_err(RemoteError::io("truncate", tmp))?;
        report.parts_resumed = (resumed - have) as u64;
        (f, resumed, 0)
    } else {
        let mut f = File::create(tmp).map_err(RemoteError::io("create", tmp))?;
        if let Some(a) = existing {
            let end = head.parts.get(have.wrapping_sub(1)).map_or(0, Part::end) + partial;
            let kept = a.committed_bytes().get(..end as usize).unwrap_or_default();
            f.write_all(kept).map_err(RemoteError::io("write", tmp))?;
        }
        (f, have, partial)
    };
    let (held_part, partial): (Vec<u8>, u64) = match (existing, head.parts.get(from)) {
        (Some(a), Some(p)) if partial > 0 => (
            a.committed_bytes()
                .get(p.start as usize..(p.start + partial) as usize)
                .unwrap_or_default()
                .to_vec(),
            partial,
        ),
        _ => (Vec::new(), 0),
    };
    let end = head.parts.get(from.wrapping_sub(1)).map_or(0, Part::end) + partial;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(end))
        .map_err(RemoteError::io("seek", tmp))?;
    Ok((file, from, held_part))
}

/// A generation name derived from the archive's first part, so a first push that was
/// interrupted resumes into the same generation.
fn new_generation(bytes: &[u8], part_size: u64) -> String {
    let n = usize::try_from(part_size).unwrap_or(usize::MAX).min(bytes.len());
    checksum(bytes.get(..n).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_the_range_in_parts_of_at_most_size() {
        let bytes: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let parts = plan(&bytes, 100, 1000);
        let spans: Vec<_> = parts.iter().map(|p| (p.start, p.len)).collect();
        assert_eq!(spans, vec![(100, 1000), (1100, 1000), (2100, 400)]);
        assert_eq!(parts[1].checksum, checksum(&bytes[1100..2100]));
        assert!(plan(&bytes, 2500, 1000).is_empty());
    }

    #[test]
    fn the_temporary_file_is_hidden_beside_the_target() {
        assert_eq!(
            temp_path(Path::new("/a/b.rwd")),
            Path::new("/a/.b.rwd.rewind-pull")
        );
    }
}
