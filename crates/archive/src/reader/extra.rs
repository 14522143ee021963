//! Host states and global names: what commits set in their extra segments
//! ([`SegKind::Extra`]), found by walking the commit chain back from the last trailer
//! once, on first use, and kept in memory.

use std::collections::HashMap;

use rewind_history::RecordId;
use rewind_store::InputHash;
use rkyv::rancor;

use super::*;

/// What the extra segments of every commit add up to: a later commit's entries win.
#[derive(Clone, Debug, Default)]
pub(crate) struct Extras {
    /// Record number → the hash of its host-state blob (in the input blob table).
    pub(crate) host: HashMap<u64, [u8; 16]>,
    /// The recorded globals' names by position, `None` for an unnamed one; empty when
    /// no commit set names.
    pub(crate) names: Vec<Option<String>>,
    /// Extra segments read.
    pub(crate) segments: u64,
}

impl Archive {
    /// The extra segment a trailer names (`None` for offset 0), validated: inside its
    /// commit (after its first segment, before its root), of kind
    /// [`SegKind::Extra`], checksummed and rkyv-validated.
    pub(super) fn extra_of(&self, trailer: &Trailer) -> Result<Option<&ArchivedExtraSeg>, ArchiveError> {
        let off = trailer.extra;
        if off == 0 {
            return Ok(None);
        }
        if off < trailer.start || off >= trailer.root || !off.is_multiple_of(ALIGN) {
            return Err(ArchiveError::BadSegment {
                offset: off,
                reason: "a trailer's extra segment offset lies outside its commit",
            });
        }
        let p = self.payload(off, SegKind::Extra)?;
        rkyv::access::<ArchivedExtraSeg, rancor::Error>(p)
            .map(Some)
            .map_err(vmsg(off))
    }

    /// Walk the commit chain from the last trailer back to the first, reading every
    /// extra segment: O(commits) trailer checks plus the extra segments' bytes.
    fn read_extras(&self) -> Result<Extras, ArchiveError> {
        let mut out = Extras::default();
        let mut names_seen = false;
        let mut cur = self.commit.map(|c| (c.trailer_off, c.trailer));
        while let Some((off, t)) = cur {
            if let Some(x) = self.extra_of(&t)? {
                out.segments += 1;
                let bad = |reason| ArchiveError::Inconsistent {
                    offset: t.extra,
                    reason,
                };
                for h in x.host.iter() {
                    let hash = match h.has {
                        1 => h.hash,
                        0 if h.hash == [0; 16] => [0; 16],
                        _ => return Err(bad("a host state entry with a bad flag")),
                    };
                    // Newest first: an entry already seen was set by a later commit.
                    out.host.entry(h.record.to_native()).or_insert(hash);
                }
                if x.names_set > 1 {
                    return Err(bad("a global names flag is neither 0 nor 1"));
                }
                if x.names_set == 1 && !names_seen {
                    names_seen = true;
                    let mut names: Vec<Option<String>> = Vec::new();
                    for n in x.names.iter() {
                        let i = n.index.to_native() as usize;
                        if i < names.len() || i >= MAX_NAMED_GLOBALS {
                            return Err(bad("global names out of order"));
                        }
                        let bytes = slice_of(
                            &x.name_bytes,
                            n.start.to_native(),
                            n.len.to_native() as u64,
                            t.extra,
                            "a global name out of its segment",
                        )?;
                        let name =
                            std::str::from_utf8(bytes).map_err(|_| bad("a global name is not UTF-8"))?;
                        names.resize(i, None);
                        names.push(Some(name.to_owned()));
                    }
                    out.names = names;
                }
            }
            cur = match t.prev {
                NONE => None,
                p if p < off => Some((p, self.trailer_at(p)?)),
                p => {
                    return Err(ArchiveError::BadSegment {
                        offset: p,
                        reason: "a trailer's previous trailer does not come before it",
                    })
                }
            };
        }
        out.host.retain(|_, h| *h != [0; 16]);
        Ok(out)
    }

    /// The extras, read on first use and kept (an error is not kept: the next call
    /// reads again and reports it again).
    pub(crate) fn extras(&self) -> Result<&Extras, ArchiveError> {
        if let Some(x) = self.extras.get() {
            return Ok(x);
        }
        let x = self.read_extras()?;
        Ok(self.extras.get_or_init(|| x))
    }

    /// The hash of the host state recorded with a record (see
    /// `rewind_history::History::set_host_state`), `None` when it has none.
    ///
    /// The first call of this, [`Archive::host_state`] or [`Archive::global_names`]
    /// walks the commit chain once (O(commits), see `docs/format.md`). A damaged extra
    /// segment is an error of these calls only: pages, records and globals stay
    /// readable.
    pub fn host_state_hash(&self, id: RecordId) -> Result<Option<InputHash>, ArchiveError> {
        self.rec_entry(id.0)?;
        Ok(self.extras()?.host.get(&id.0).map(|h| InputHash(*h)))
    }

    /// The host state recorded with a record, borrowed from the file.
    pub fn host_state(&self, id: RecordId) -> Result<Option<&[u8]>, ArchiveError> {
        let Some(hash) = self.host_state_hash(id)? else {
            return Ok(None);
        };
        let ie = self
            .input_entry(PageHash(hash.0))?
            .ok_or(ArchiveError::Inconsistent {
                offset: self.committed_end(),
                reason: "a host state names a blob the archive does not hold",
            })?;
        self.input_bytes(&ie).map(Some)
    }

    /// Every record with a host state and the hash of its blob, by record number.
    pub(crate) fn host_states(&self) -> Result<Vec<(u64, InputHash)>, ArchiveError> {
        let mut v: Vec<(u64, InputHash)> = self
            .extras()?
            .host
            .iter()
            .map(|(r, h)| (*r, InputHash(*h)))
            .collect();
        v.sort_unstable_by_key(|e| e.0);
        Ok(v)
    }

    /// The names of the recorded globals, by position (`None` for a global without
    /// one); empty when the archive stores none. Names come from the guest (its export
    /// names, or `$name` from the module's name section) through
    /// [`crate::ArchiveWriter::set_global_names`].
    pub fn global_names(&self) -> Result<Vec<Option<String>>, ArchiveError> {
        Ok(self.extras()?.names.clone())
    }

    /// Check the extra segments: each readable, every record it names in the archive,
    /// every blob it names in the input table. The number of extra segments.
    pub(super) fn check_extras(&self) -> Result<u64, ArchiveError> {
        let x = self.read_extras()?;
        for (&r, h) in &x.host {
            self.rec_entry(r)?;
            if self.input_entry(PageHash(*h))?.is_none() {
                return Err(ArchiveError::Inconsistent {
                    offset: self.committed_end(),
                    reason: "a host state names a blob the archive does not hold",
                });
            }
        }
        Ok(x.segments)
    }
}

/// The most globals an archive names (a wasm module may define at most 1,000,000).
pub(crate) const MAX_NAMED_GLOBALS: usize = 1_000_000;
