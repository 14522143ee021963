//! `prune`: delete the part objects no head names any more: the generations a
//! rewrite (a garbage collection pushed) left behind, and parts that a later split
//! replaced. Only objects older than a grace period go, so a reader still on an
//! earlier head, or a push still uploading, keeps what it reads or writes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;

use crate::head::Head;
use crate::{Remote, RemoteError};

/// The default grace period of [`Remote::prune`]: an hour.
pub const DEFAULT_PRUNE_GRACE: Duration = Duration::from_secs(3600);

/// What [`Remote::prune`] deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PruneOptions {
    /// Only objects last modified at least this long ago are deleted
    /// ([`DEFAULT_PRUNE_GRACE`]). A reader that opened an earlier head keeps reading
    /// its parts for this long, and a push keeps the parts it is uploading; it must
    /// exceed the longest push and the longest read of an old head.
    pub grace: Duration,
    /// Also delete the current generation's parts past the head's end: what an
    /// interrupted push uploaded and never published. A later push would resume from
    /// them (upload nothing twice), so they are kept unless this is set.
    pub leftovers: bool,
    /// Count what would be deleted and delete nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: DEFAULT_PRUNE_GRACE,
            leftovers: false,
            dry_run: false,
        }
    }
}

/// What [`Remote::prune`] found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Requests made to the store.
    pub requests: u64,
    /// Objects the head names (its parts and the head itself): kept.
    pub live: u64,
    /// Objects deleted (or, on a dry run, that would be).
    pub deleted: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Unnamed objects kept because they are younger than the grace period.
    pub kept_recent: u64,
    /// Unnamed parts of the current generation past the head's end kept because
    /// [`PruneOptions::leftovers`] is not set.
    pub kept_leftovers: u64,
    /// Objects under the archive's key that are not part of its layout (not
    /// `head.json`, not `g-GENERATION/PART`): never deleted.
    pub foreign: u64,
}

/// What one listed object is to a prune.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Live,
    Garbage,
    Leftover,
    Foreign,
}

/// Classify the object `rel` (its key relative to the archive's prefix) against the
/// head.
fn verdict(rel: &[&str], head: &Head, named: &std::collections::HashSet<String>) -> Verdict {
    match rel {
        ["head.json"] => Verdict::Live,
        [generation, part] => {
            let Some(g) = generation.strip_prefix("g-") else {
                return Verdict::Foreign;
            };
            let Some(start) = part_start(part) else {
                return Verdict::Foreign;
            };
            if g != head.generation {
                Verdict::Garbage
            } else if named.contains(*part) {
                Verdict::Live
            } else if start >= head.len {
                Verdict::Leftover
            } else {
                Verdict::Garbage
            }
        }
        _ => Verdict::Foreign,
    }
}

/// The start offset of a part object name (`START-LEN-CHECKSUM`, 16 hex digits each).
fn part_start(name: &str) -> Option<u64> {
    let mut fields = name.split('-');
    let (start, len, sum) = (fields.next()?, fields.next()?, fields.next()?);
    let hex16 = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if fields.next().is_some() || !hex16(start) || !hex16(len) || !hex16(sum) {
        return None;
    }
    u64::from_str_radix(start, 16).ok()
}

impl Remote {
    /// Delete the objects of this archive that its head does not name and that are
    /// older than [`PruneOptions::grace`]: the parts of earlier generations (left by a
    /// push of a rewritten file) and, with [`PruneOptions::leftovers`], the parts an
    /// interrupted push never published. The head and every part it names are never
    /// touched, nor is anything under the key that is not part of the layout.
    ///
    /// One GET of the head, one LIST of the key's objects, then bulk deletes (S3
    /// deletes up to 1,000 objects a request). There is no archive without a head:
    /// [`RemoteError::NoArchive`], and nothing is deleted.
    pub fn prune(&self, opts: PruneOptions) -> Result<PruneReport, RemoteError> {
        let before = self.count();
        let head = self.head()?.ok_or_else(|| RemoteError::NoArchive {
            url: self.url.clone(),
            head: self.head_key().to_string(),
        })?;
        let named: std::collections::HashSet<String> = head.parts.iter().map(|p| p.name()).collect();
        let listed = self.block(self.store.list(Some(&self.root)).try_collect::<Vec<_>>());
        let metas = listed.map_err(|e| self.fail(Self::failure("list", &self.root)(e)))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let cutoff = now.saturating_sub(opts.grace.as_secs().min(i64::MAX as u64) as i64);
        let mut report = PruneReport::default();
        let mut doomed: Vec<StorePath> = Vec::new();
        for m in metas {
            let Some(rel) = m.location.prefix_match(&self.root) else {
                report.foreign += 1;
                continue;
            };
            let rel: Vec<String> = rel.map(|p| p.as_ref().to_string()).collect();
            let rel: Vec<&str> = rel.iter().map(String::as_str).collect();
            let v = verdict(&rel, &head, &named);
            let old = m.last_modified.timestamp() <= cutoff;
            match v {
                Verdict::Live => report.live += 1,
                Verdict::Foreign => report.foreign += 1,
                Verdict::Leftover if !opts.leftovers => report.kept_leftovers += 1,
                Verdict::Garbage | Verdict::Leftover if !old => report.kept_recent += 1,
                Verdict::Garbage | Verdict::Leftover => {
                    report.deleted += 1;
                    report.deleted_bytes += m.size;
                    doomed.push(m.location);
                }
            }
        }
        if !opts.dry_run && !doomed.is_empty() {
            // One request per 1,000 keys, as S3's bulk delete takes them.
            self.counters.requests.fetch_add(
                doomed.len().div_ceil(1000) as u64 - 1,
                std::sync::atomic::Ordering::Relaxed,
            );
            let first = doomed.first().cloned().unwrap_or_else(|| self.root.clone());
            let stream = futures_util::stream::iter(doomed.into_iter().map(Ok)).boxed();
            let done = self.block(self.store.delete_stream(stream).try_collect::<Vec<_>>());
            done.map_err(|e| self.fail(Self::failure("delete", &first)(e)))?;
        }
        report.requests = self.count().requests - before.requests;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::Part;

    #[test]
    fn objects_are_classified_against_the_head() {
        let part = |start, len| Part {
            start,
            len,
            checksum: "00000000000000aa".into(),
        };
        let head = Head {
            format: crate::HEAD_FORMAT,
            generation: "0123456789abcdef".into(),
            len: 200,
            seed: 0,
            page_size: 4096,
            header_checksum: "0000000000000000".into(),
            trailer_checksum: "0000000000000000".into(),
            head_record: None,
            head_state_hash: None,
            parts: vec![part(0, 100), part(100, 100)],
        };
        let named = head.parts.iter().map(|p| p.name()).collect();
        let g = "g-0123456789abcdef";
        let (p0, split, past) = (part(0, 100).name(), part(0, 150).name(), part(200, 10).name());
        assert_eq!(verdict(&["head.json"], &head, &named), Verdict::Live);
        assert_eq!(verdict(&[g, &p0], &head, &named), Verdict::Live);
        assert_eq!(verdict(&[g, &split], &head, &named), Verdict::Garbage);
        assert_eq!(verdict(&[g, &past], &head, &named), Verdict::Leftover);
        assert_eq!(
            verdict(&["g-00000000000000ff", &p0], &head, &named),
            Verdict::Garbage
        );
        for foreign in [
            &["notes.txt"][..],
            &[g, "readme"],
            &["x-0123456789abcdef", &p0],
            &[g, &p0, "deeper"],
            &[g, "0000000000000000-0000000000000064-00000000000000zz"],
        ] {
            assert_eq!(verdict(foreign, &head, &named), Verdict::Foreign, "{foreign:?}");
        }
    }
}
