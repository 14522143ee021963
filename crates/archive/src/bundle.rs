//! Handing the state at one iteration to another process as only the pages it lacks:
//! a late joiner, a spectator, a debugger on another machine.
//!
//! The exchange is git's have/want on content-addressed pages:
//!
//! 1. the sender describes the state with a [`Manifest`] (page size, seed, memory
//!    length, the ordered page hashes, the globals and their names, the host state,
//!    the state hash) — [`Manifest::from_archive`] or [`Manifest::from_history`];
//! 2. the receiver lists the pages it does not hold in any source of page objects it
//!    has ([`Manifest::wanted`] over its own [`Archive`], a
//!    [`History`]'s page store, or [`Nothing`]);
//! 3. the sender answers with a [`Bundle`] of exactly those pages, each rebuilt,
//!    checked against its hash and encoded whole (lz4 when it pays, as the store does)
//!    — [`Bundle::build`];
//! 4. the receiver assembles the full state from the bundle and its own source and
//!    checks every page's hash and then the state hash ([`Manifest::assemble`]): a
//!    [`BundleState`] exists only once it verified.
//!
//! A self-contained bundle ([`Bundle::self_contained`]) carries the manifest too, so
//! one file (`rewind export --bundle`) does the whole exchange when the sender knows
//! what the receiver holds (or assumes nothing). Every message travels in the same
//! frame: a 32-byte header (magic, version, kind, payload length, xxh3-64 checksum)
//! and an rkyv payload validated before use; the layout is in `docs/bundle.md`.
//! Hostile bytes give a [`BundleError`], never a panic.
//!
//! ```
//! use rewind_archive::bundle::{Bundle, Manifest, Nothing};
//! use rewind_history::{History, HistoryConfig};
//! use rewind_snapshot::GlobalValue;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The sender's history: 40 frames of 16 pages; the receiver saw frames 0..=30.
//! let config = || HistoryConfig::new(1024).map(|c| c.seed(5));
//! let (mut sender, mut receiver) = (History::new(config()?)?, History::new(config()?)?);
//! let mut memory = vec![0u8; 16 * 1024];
//! for frame in 0..40u64 {
//!     memory[(frame as usize * 1000) % (16 * 1024)] = frame as u8 + 1;
//!     let globals = [GlobalValue::I64(frame as i64)];
//!     sender.capture(frame, &memory, &globals, None, None)?;
//!     if frame <= 30 {
//!         receiver.capture(frame, &memory, &globals, None, None)?;
//!     }
//! }
//! // 1. the sender describes frame 39; 2. the receiver wants what it lacks;
//! let manifest = Manifest::from_bytes(&Manifest::from_history(&sender, 39)?.to_bytes()?)?;
//! let wanted = manifest.wanted(receiver.store())?;
//! assert!(wanted.len() <= 9, "only pages written after frame 30");
//! // 3. the sender bundles them; 4. the receiver assembles and verifies.
//! let bundle = Bundle::build(&manifest, &wanted, sender.store())?;
//! let state = manifest.assemble(&Bundle::from_bytes(&bundle.to_bytes()?)?, receiver.store())?;
//! assert_eq!(state.memory(), &memory[..]);
//! assert_eq!(state.state_hash(), sender.at(39)?.state_hash());
//! // A receiver with nothing needs every page.
//! let all = Bundle::self_contained(&manifest, &manifest.wanted(&Nothing)?, sender.store())?;
//! assert_eq!(all.assemble(&Nothing)?.state_hash(), state.state_hash());
//! # Ok(())
//! # }
//! ```
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};

use rewind_history::{History, HistoryConfig, HistoryError, RecordId};
use rewind_snapshot::{GlobalValue, PageVec, Snapshot, StateHash};
use rewind_store::codec::{self, Encoding, Scratch};
use rewind_store::{
    CodecError, FindObject, Hasher, InputHash, ObjectRef, PageHash, PageSize, RebuildError, StoreError,
};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive as RkyvArchive, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::format::{le_u32, le_u64, GlobalRec, MAX_MEMORY};
use crate::{Archive, ArchiveError};

/// The magic of every bundle message (PNG-style, like the archive's).
pub const MAGIC: [u8; 8] = *b"\x89RWB\r\n\x1a\n";
/// The bundle format version this crate reads and writes.
pub const VERSION: u32 = 1;
/// Bytes of a message's header.
pub const HEADER_LEN: usize = 32;
/// Delta hops followed when rebuilding a page from a local source (an archive's or a
/// store's bound is at most 255; this stops a cycle in foreign data).
const MAX_CHAIN: usize = u8::MAX as usize;

/// What a message holds (the header's `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MessageKind {
    /// A [`Manifest`] alone.
    Manifest = 1,
    /// A want list: the page hashes a receiver lacks.
    Want = 2,
    /// A [`Bundle`] of pages for a manifest the receiver already has.
    Pages = 3,
    /// A self-contained [`Bundle`]: the manifest and pages.
    SelfContained = 4,
}

impl MessageKind {
    fn from_tag(tag: u32) -> Option<Self> {
        match tag {
            1 => Some(Self::Manifest),
            2 => Some(Self::Want),
            3 => Some(Self::Pages),
            4 => Some(Self::SelfContained),
            _ => None,
        }
    }
}

/// Why a bundle could not be built, read or assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The bytes do not start with the bundle magic.
    #[error("not a rewind bundle (magic {found:02x?})")]
    BadMagic {
        /// The first bytes found (fewer than 8 when the input is shorter).
        found: Vec<u8>,
    },
    /// A format version this build does not read.
    #[error("bundle format version {found} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion {
        /// The version in the header.
        found: u32,
    },
    /// A message of another kind than the caller expects (or an unknown kind).
    #[error("expected a bundle message of kind {expected}, found kind {found}")]
    WrongKind {
        /// What was expected.
        expected: &'static str,
        /// The kind tag found.
        found: u32,
    },
    /// Fewer bytes than the header says.
    #[error("bundle truncated: {needed} bytes needed, {len} present")]
    Truncated {
        /// Bytes the header (or the header itself) needs.
        needed: u64,
        /// Bytes present.
        len: u64,
    },
    /// More bytes than the header says.
    #[error("{extra} bytes after the end of the bundle message")]
    TrailingBytes {
        /// Bytes past the message's end.
        extra: u64,
    },
    /// The payload does not match its checksum.
    #[error("bundle checksum mismatch: header says {expected:016x}, payload hashes to {found:016x}")]
    ChecksumMismatch {
        /// The header's checksum.
        expected: u64,
        /// The payload's.
        found: u64,
    },
    /// The payload fails rkyv validation.
    #[error("bundle payload is invalid: {message}")]
    Validation {
        /// What the validator found.
        message: String,
    },
    /// A manifest field out of range or inconsistent with another.
    #[error("bad manifest: {reason}")]
    BadManifest {
        /// What is wrong.
        reason: &'static str,
    },
    /// A bundle built for another page size than the manifest's.
    #[error("bundle pages are {bundle} bytes but the manifest's are {manifest}")]
    PageSizeMismatch {
        /// The manifest's page size.
        manifest: u32,
        /// The bundle's.
        bundle: u32,
    },
    /// A bundle built for another state than the manifest's.
    #[error("bundle was built for state {bundle}, the manifest describes {manifest}")]
    OtherState {
        /// The manifest's state hash.
        manifest: StateHash,
        /// The one the bundle names.
        bundle: StateHash,
    },
    /// A want list names a page that the manifest does not hold (the sender hands out
    /// only the pages of the state it described).
    #[error("page {hash} is not in the manifest")]
    NotInManifest {
        /// The page asked for.
        hash: PageHash,
    },
    /// A page in a bundle whose bytes do not decode to a page.
    #[error("page {hash} in the bundle is corrupt")]
    CorruptPage {
        /// The page.
        hash: PageHash,
        /// What is wrong with its bytes.
        #[source]
        source: CodecError,
    },
    /// A page that neither the bundle nor the receiver's source holds.
    #[error("page {hash} (slot {index}) is neither in the bundle nor held locally")]
    MissingPage {
        /// The first slot holding it.
        index: u32,
        /// The page.
        hash: PageHash,
    },
    /// A page whose bytes (from the bundle or the local source) hash to another hash.
    #[error("page {hash} rebuilds to bytes that hash to {found}")]
    PageHashMismatch {
        /// The hash the manifest names.
        hash: PageHash,
        /// The hash of the bytes.
        found: PageHash,
    },
    /// The assembled state does not hash to the manifest's state hash.
    #[error("assembled state hashes to {found}, the manifest says {expected}")]
    StateMismatch {
        /// The manifest's state hash.
        expected: StateHash,
        /// The assembled state's.
        found: StateHash,
    },
    /// The host state does not hash to the manifest's host state hash.
    #[error("host state hashes to {found}, the manifest says {expected}")]
    HostStateMismatch {
        /// The manifest's.
        expected: InputHash,
        /// The blob's.
        found: InputHash,
    },
    /// Reading the sender's or receiver's archive failed.
    #[error(transparent)]
    Archive(ArchiveError),
    /// The sender's or receiver's history refused (an iteration it does not retain).
    #[error(transparent)]
    History(HistoryError),
    /// The sender's or receiver's page store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<ArchiveError> for BundleError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::History(e) => BundleError::History(e),
            e => BundleError::Archive(e),
        }
    }
}

impl From<HistoryError> for BundleError {
    fn from(e: HistoryError) -> Self {
        match e {
            HistoryError::Store(e) => BundleError::Store(e),
            e => BundleError::History(e),
        }
    }
}

impl From<StoreError> for BundleError {
    fn from(e: StoreError) -> Self {
        BundleError::Store(e)
    }
}

impl From<RebuildError> for BundleError {
    fn from(e: RebuildError) -> Self {
        BundleError::Store(e.into())
    }
}

/// A source of page objects that holds none: a receiver that has nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Nothing;

impl FindObject for Nothing {
    type Error = RebuildError;

    fn find_object(&self, _hash: PageHash) -> Result<Option<ObjectRef<'_>>, RebuildError> {
        Ok(None)
    }
}

/// The description of one state, page hashes first: what a receiver needs to say which
/// pages it lacks and to verify what it assembles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    iteration: u64,
    page_size: PageSize,
    seed: u64,
    memory_len: u64,
    pages: Vec<PageHash>,
    globals: Vec<GlobalValue>,
    global_names: Vec<Option<String>>,
    host_state: Option<Vec<u8>>,
    state_hash: StateHash,
}

impl Manifest {
    /// The manifest of `iteration` on an archive's timeline, with its global names and
    /// host state.
    pub fn from_archive(archive: &Archive, iteration: u64) -> Result<Manifest, BundleError> {
        let id = archive.at(iteration)?.id;
        Self::from_archive_record(archive, id)
    }

    /// The manifest of a record of an archive (any branch).
    pub fn from_archive_record(archive: &Archive, id: RecordId) -> Result<Manifest, BundleError> {
        let info = archive.record(id)?;
        let m = Manifest {
            iteration: info.iteration,
            page_size: archive.page_size(),
            seed: archive.info()?.seed,
            memory_len: info.memory_len,
            pages: archive.pages(id)?,
            globals: archive.globals(id)?,
            global_names: archive.global_names()?,
            host_state: archive.host_state(id)?.map(<[u8]>::to_vec),
            state_hash: info.state_hash,
        };
        m.check()?;
        Ok(m)
    }

    /// The manifest of `iteration` on a live history's timeline (a `Recorder`'s or a
    /// session's: `recorder.history()`), with its host state; the history holds no
    /// global names ([`Manifest::with_global_names`]).
    pub fn from_history(history: &History, iteration: u64) -> Result<Manifest, BundleError> {
        let record = history.at(iteration)?;
        let s = record.snapshot();
        Ok(Manifest {
            iteration,
            page_size: history.page_size(),
            seed: history.store().hasher().seed(),
            memory_len: s.memory_len(),
            pages: s.pages().iter().copied().collect(),
            globals: s.globals().to_vec(),
            global_names: Vec::new(),
            host_state: history.host_state(record.id()).map(<[u8]>::to_vec),
            state_hash: record.state_hash(),
        })
    }

    /// Name the globals (by position; `None` for one without a name).
    pub fn with_global_names(mut self, names: Vec<Option<String>>) -> Self {
        self.global_names = names;
        self
    }

    /// The iteration.
    pub fn iteration(&self) -> u64 {
        self.iteration
    }

    /// The page size.
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// The hash seed of the sender's history (page and state hashes depend on it).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The memory length in bytes.
    pub fn memory_len(&self) -> u64 {
        self.memory_len
    }

    /// The page hashes, slot by slot ([`PageHash::ZERO`] for a zero page).
    pub fn pages(&self) -> &[PageHash] {
        &self.pages
    }

    /// The globals.
    pub fn globals(&self) -> &[GlobalValue] {
        &self.globals
    }

    /// The globals' names (empty when the sender has none).
    pub fn global_names(&self) -> &[Option<String>] {
        &self.global_names
    }

    /// The host state recorded with the state.
    pub fn host_state(&self) -> Option<&[u8]> {
        self.host_state.as_deref()
    }

    /// The state hash the assembled state must have.
    pub fn state_hash(&self) -> StateHash {
        self.state_hash
    }

    /// The hasher of the sender's history.
    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.seed, self.page_size)
    }

    /// The distinct non-zero page hashes, in the order of their first slot.
    pub fn distinct_pages(&self) -> Vec<PageHash> {
        let mut seen = HashSet::with_capacity(self.pages.len());
        self.pages
            .iter()
            .copied()
            .filter(|h| !h.is_zero() && seen.insert(*h))
            .collect()
    }

    /// The pages a receiver holding `have` lacks: the distinct non-zero pages of the
    /// state that `have` has no object for, in the order of their first slot. A source
    /// with another seed or page size holds none of them (its hashes differ).
    pub fn wanted<S>(&self, have: &S) -> Result<Vec<PageHash>, BundleError>
    where
        S: FindObject + ?Sized,
        BundleError: From<S::Error>,
    {
        let mut out = Vec::new();
        for h in self.distinct_pages() {
            if have.find_object(h)?.is_none() {
                out.push(h);
            }
        }
        Ok(out)
    }

    /// The whole state from the pages of `bundle` and those `have` holds, every page
    /// checked against its hash and the result against the state hash.
    pub fn assemble<S>(&self, bundle: &Bundle, have: &S) -> Result<BundleState, BundleError>
    where
        S: FindObject + ?Sized,
        BundleError: From<S::Error>,
    {
        let ps = self.page_size.bytes();
        if bundle.page_size != self.page_size.bytes() as u32 {
            return Err(BundleError::PageSizeMismatch {
                manifest: ps as u32,
                bundle: bundle.page_size,
            });
        }
        if bundle.state_hash != self.state_hash {
            return Err(BundleError::OtherState {
                manifest: self.state_hash,
                bundle: bundle.state_hash,
            });
        }
        self.check()?;
        let hasher = self.hasher();
        let by_hash: HashMap<PageHash, &BundlePage> = bundle.pages.iter().map(|p| (p.hash, p)).collect();
        let len = usize::try_from(self.memory_len).map_err(|_| BundleError::BadManifest {
            reason: "memory length does not fit in memory",
        })?;
        let mut memory = vec![0u8; len];
        // Where each page's bytes were first written, so a repeated page is a copy.
        let mut first: HashMap<PageHash, usize> = HashMap::new();
        let (mut from_bundle, mut from_local) = (0usize, 0usize);
        for (i, (h, slot)) in self.pages.iter().zip(memory.chunks_exact_mut(ps)).enumerate() {
            if h.is_zero() {
                continue;
            }
            if first.contains_key(h) {
                // A repeated page: copied from its first slot below.
                continue;
            }
            match by_hash.get(h) {
                Some(p) => {
                    codec::decode_full(p.encoding, &p.bytes, slot)
                        .map_err(|source| BundleError::CorruptPage { hash: *h, source })?;
                    from_bundle += 1;
                }
                None => match have.find_object(*h)? {
                    Some(_) => {
                        rewind_store::rebuild(have, *h, slot, MAX_CHAIN)?;
                        from_local += 1;
                    }
                    None => {
                        return Err(BundleError::MissingPage {
                            index: i as u32,
                            hash: *h,
                        })
                    }
                },
            }
            let found = hasher.page(slot);
            if found != *h {
                return Err(BundleError::PageHashMismatch { hash: *h, found });
            }
            first.insert(*h, i);
        }
        // Fill the repeated pages from their first slot.
        for (i, h) in self.pages.iter().enumerate() {
            let Some(&j) = first.get(h) else { continue };
            if j != i {
                memory.copy_within(j * ps..(j + 1) * ps, i * ps);
            }
        }
        let vec: PageVec = self.pages.iter().copied().collect();
        let snap = Snapshot::from_parts(&hasher, vec, self.memory_len, self.globals.clone());
        if snap.state_hash() != self.state_hash {
            return Err(BundleError::StateMismatch {
                expected: self.state_hash,
                found: snap.state_hash(),
            });
        }
        Ok(BundleState {
            manifest: self.clone(),
            memory,
            pages_from_bundle: from_bundle,
            pages_from_local: from_local,
        })
    }

    /// Check the fields against each other (page count, memory length).
    fn check(&self) -> Result<(), BundleError> {
        let ps = self.page_size.bytes() as u64;
        if self.memory_len > MAX_MEMORY || !self.memory_len.is_multiple_of(ps) {
            return Err(BundleError::BadManifest {
                reason: "memory length is over 4 GiB or not a whole number of pages",
            });
        }
        if self.pages.len() as u64 != self.memory_len / ps {
            return Err(BundleError::BadManifest {
                reason: "page count differs from the memory length",
            });
        }
        Ok(())
    }

    fn to_rec(&self) -> ManifestRec {
        let hasher = self.hasher();
        ManifestRec {
            iteration: self.iteration,
            page_size: self.page_size.bytes() as u32,
            seed: self.seed,
            memory_len: self.memory_len,
            state_hash: self.state_hash.0,
            pages: self.pages.iter().map(|h| h.0).collect(),
            globals: self.globals.iter().map(GlobalRec::from).collect(),
            global_names: self.global_names.clone(),
            host_state: self.host_state.clone(),
            host_state_hash: self.host_state.as_deref().map_or([0; 16], |b| hasher.input(b).0),
        }
    }

    fn from_rec(r: &ArchivedManifestRec) -> Result<Manifest, BundleError> {
        let bad = |reason| BundleError::BadManifest { reason };
        let page_size =
            PageSize::new(r.page_size.to_native() as u64).map_err(|_| bad("page size out of range"))?;
        let globals = r
            .globals
            .iter()
            .map(|g| g.value().ok_or(bad("unknown global type")))
            .collect::<Result<Vec<_>, _>>()?;
        let m = Manifest {
            iteration: r.iteration.to_native(),
            page_size,
            seed: r.seed.to_native(),
            memory_len: r.memory_len.to_native(),
            pages: r.pages.iter().map(|h| PageHash(*h)).collect(),
            globals,
            global_names: r
                .global_names
                .iter()
                .map(|n| n.as_ref().map(|s| s.as_str().to_owned()))
                .collect(),
            host_state: r.host_state.as_ref().map(|b| b.as_slice().to_vec()),
            state_hash: StateHash(r.state_hash),
        };
        m.check()?;
        let expected = InputHash(r.host_state_hash);
        match &m.host_state {
            Some(b) => {
                let found = m.hasher().input(b);
                if found != expected {
                    return Err(BundleError::HostStateMismatch { expected, found });
                }
            }
            None if expected.0 != [0; 16] => return Err(bad("a host state hash without a host state")),
            None => {}
        }
        Ok(m)
    }

    /// The manifest as a message ([`MessageKind::Manifest`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, BundleError> {
        encode(
            MessageKind::Manifest,
            &MessageRec {
                manifest: Some(self.to_rec()),
                ..MessageRec::default()
            },
        )
    }

    /// A manifest from its message.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let (_, payload) = decode(bytes, &[MessageKind::Manifest], "manifest")?;
        let r = access(&payload)?;
        let m = r.manifest.as_ref().ok_or(BundleError::BadManifest {
            reason: "a manifest message without a manifest",
        })?;
        Manifest::from_rec(m)
    }
}

/// A want list as a message ([`MessageKind::Want`]): what a receiver sends back.
pub fn want_to_bytes(wanted: &[PageHash]) -> Result<Vec<u8>, BundleError> {
    encode(
        MessageKind::Want,
        &MessageRec {
            want: wanted.iter().map(|h| h.0).collect(),
            ..MessageRec::default()
        },
    )
}

/// A want list from its message. The sender checks it against its manifest when it
/// builds the bundle ([`Bundle::build`]).
pub fn want_from_bytes(bytes: &[u8]) -> Result<Vec<PageHash>, BundleError> {
    let (_, payload) = decode(bytes, &[MessageKind::Want], "want")?;
    let r = access(&payload)?;
    Ok(r.want.iter().map(|h| PageHash(*h)).collect())
}

/// One page in a bundle, encoded whole.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BundlePage {
    hash: PageHash,
    encoding: Encoding,
    bytes: Vec<u8>,
}

/// The pages a receiver lacks, for one state (and, self-contained, that state's
/// manifest).
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    manifest: Option<Manifest>,
    state_hash: StateHash,
    page_size: u32,
    pages: Vec<BundlePage>,
}

impl Bundle {
    /// The pages `wanted` of the state `manifest` describes, rebuilt from `source` (the
    /// sender's archive or page store), each checked against its hash and encoded whole
    /// (lz4 when that saves an eighth of the page, raw otherwise). A wanted page that
    /// the manifest does not hold is refused ([`BundleError::NotInManifest`]); one
    /// wanted twice is sent once.
    pub fn build<S>(manifest: &Manifest, wanted: &[PageHash], source: &S) -> Result<Bundle, BundleError>
    where
        S: FindObject + ?Sized,
        BundleError: From<S::Error>,
    {
        let in_manifest: HashSet<PageHash> = manifest.pages.iter().copied().collect();
        let hasher = manifest.hasher();
        let ps = manifest.page_size.bytes();
        let mut page = vec![0u8; ps];
        let mut scratch = Scratch::new();
        let mut sent = HashSet::new();
        let mut pages = Vec::with_capacity(wanted.len());
        for &h in wanted {
            if h.is_zero() || !in_manifest.contains(&h) {
                return Err(BundleError::NotInManifest { hash: h });
            }
            if !sent.insert(h) {
                continue;
            }
            rewind_store::rebuild(source, h, &mut page, MAX_CHAIN)?;
            let found = hasher.page(&page);
            if found != h {
                return Err(BundleError::PageHashMismatch { hash: h, found });
            }
            let (encoding, bytes) = codec::encode_full(&page, &mut scratch);
            pages.push(BundlePage {
                hash: h,
                encoding,
                bytes: bytes.into_vec(),
            });
        }
        Ok(Bundle {
            manifest: None,
            state_hash: manifest.state_hash,
            page_size: ps as u32,
            pages,
        })
    }

    /// As [`Bundle::build`], carrying the manifest too: one message that a receiver
    /// assembles with [`Bundle::assemble`].
    pub fn self_contained<S>(
        manifest: &Manifest,
        wanted: &[PageHash],
        source: &S,
    ) -> Result<Bundle, BundleError>
    where
        S: FindObject + ?Sized,
        BundleError: From<S::Error>,
    {
        let mut b = Self::build(manifest, wanted, source)?;
        b.manifest = Some(manifest.clone());
        Ok(b)
    }

    /// The manifest of a self-contained bundle.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// The state hash of the state the pages belong to.
    pub fn state_hash(&self) -> StateHash {
        self.state_hash
    }

    /// The hashes of the pages it carries.
    pub fn page_hashes(&self) -> impl Iterator<Item = PageHash> + '_ {
        self.pages.iter().map(|p| p.hash)
    }

    /// The number of pages it carries.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// The encoded bytes of its pages (without framing, hashes or manifest).
    pub fn page_bytes(&self) -> u64 {
        self.pages.iter().map(|p| p.bytes.len() as u64).sum()
    }

    /// Assemble a self-contained bundle with what `have` holds
    /// ([`Manifest::assemble`]); a bundle without a manifest is
    /// [`BundleError::WrongKind`].
    pub fn assemble<S>(&self, have: &S) -> Result<BundleState, BundleError>
    where
        S: FindObject + ?Sized,
        BundleError: From<S::Error>,
    {
        let m = self.manifest.as_ref().ok_or(BundleError::WrongKind {
            expected: "self-contained bundle",
            found: MessageKind::Pages as u32,
        })?;
        m.assemble(self, have)
    }

    /// The bundle as a message ([`MessageKind::SelfContained`] with a manifest,
    /// [`MessageKind::Pages`] without).
    pub fn to_bytes(&self) -> Result<Vec<u8>, BundleError> {
        let kind = match self.manifest {
            Some(_) => MessageKind::SelfContained,
            None => MessageKind::Pages,
        };
        encode(
            kind,
            &MessageRec {
                manifest: self.manifest.as_ref().map(Manifest::to_rec),
                state_hash: self.state_hash.0,
                page_size: self.page_size,
                pages: self
                    .pages
                    .iter()
                    .map(|p| PageRec {
                        hash: p.hash.0,
                        encoding: p.encoding as u8,
                        bytes: p.bytes.clone(),
                    })
                    .collect(),
                want: Vec::new(),
            },
        )
    }

    /// A bundle (pages only, or self-contained) from its message. Checks the framing,
    /// the checksum, the payload's validity, the manifest's fields and each page's
    /// encoding tag and length; the pages' contents are checked when assembled.
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let (kind, payload) = decode(bytes, &[MessageKind::Pages, MessageKind::SelfContained], "bundle")?;
        let r = access(&payload)?;
        let manifest = match (kind, r.manifest.as_ref()) {
            (MessageKind::SelfContained, Some(m)) => Some(Manifest::from_rec(m)?),
            (MessageKind::Pages, None) => None,
            _ => {
                return Err(BundleError::BadManifest {
                    reason: "the message kind and its manifest disagree",
                })
            }
        };
        let page_size = r.page_size.to_native();
        let ps = PageSize::new(page_size as u64).map_err(|_| BundleError::BadManifest {
            reason: "bundle page size out of range",
        })?;
        let max = ps.bytes() + ps.bytes() / 255 + 16;
        let mut pages = Vec::with_capacity(r.pages.len());
        for p in r.pages.iter() {
            let hash = PageHash(p.hash);
            let corrupt = |source| BundleError::CorruptPage { hash, source };
            let encoding = Encoding::from_tag(p.encoding).ok_or(corrupt(CodecError::Lz4(format!(
                "unknown page encoding {}",
                p.encoding
            ))))?;
            let len = p.bytes.len();
            match encoding {
                Encoding::Raw if len != ps.bytes() => {
                    return Err(corrupt(CodecError::RawLength {
                        expected: ps.bytes(),
                        found: len,
                    }))
                }
                Encoding::Lz4 if len > max => {
                    return Err(corrupt(CodecError::Lz4(format!(
                        "{len} bytes of lz4 for a page of {}",
                        ps.bytes()
                    ))))
                }
                _ => {}
            }
            pages.push(BundlePage {
                hash,
                encoding,
                bytes: p.bytes.as_slice().to_vec(),
            });
        }
        Ok(Bundle {
            manifest,
            state_hash: StateHash(r.state_hash),
            page_size,
            pages,
        })
    }
}

/// A state assembled from a bundle and verified: every page against its hash, the
/// whole against the manifest's state hash. Only [`Manifest::assemble`] makes one.
#[derive(Clone, PartialEq, Eq)]
pub struct BundleState {
    manifest: Manifest,
    memory: Vec<u8>,
    pages_from_bundle: usize,
    pages_from_local: usize,
}

impl BundleState {
    /// The manifest it was assembled for (iteration, page size, seed, page hashes,
    /// globals, names, host state, state hash).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The iteration.
    pub fn iteration(&self) -> u64 {
        self.manifest.iteration
    }

    /// Linear memory, its full length.
    pub fn memory(&self) -> &[u8] {
        &self.memory
    }

    /// The globals.
    pub fn globals(&self) -> &[GlobalValue] {
        &self.manifest.globals
    }

    /// The host state recorded with the state.
    pub fn host_state(&self) -> Option<&[u8]> {
        self.manifest.host_state.as_deref()
    }

    /// The verified state hash.
    pub fn state_hash(&self) -> StateHash {
        self.manifest.state_hash
    }

    /// Distinct pages decoded from the bundle.
    pub fn pages_from_bundle(&self) -> usize {
        self.pages_from_bundle
    }

    /// Distinct pages rebuilt from the receiver's own source.
    pub fn pages_from_local(&self) -> usize {
        self.pages_from_local
    }

    /// A history holding this state as its one record (its host state too), with the
    /// sender's page size and seed, so its state hashes compare with the sender's.
    pub fn to_history(&self) -> Result<History, BundleError> {
        let m = &self.manifest;
        let mut h = History::new(HistoryConfig::new(m.page_size.bytes() as u64)?.seed(m.seed))?;
        h.capture(m.iteration, &self.memory, &m.globals, None, None)?;
        let record = h.at(m.iteration)?;
        let (id, found) = (record.id(), record.state_hash());
        if found != m.state_hash {
            return Err(BundleError::StateMismatch {
                expected: m.state_hash,
                found,
            });
        }
        if let Some(b) = &m.host_state {
            h.set_host_state(id, b)?;
        }
        Ok(h)
    }
}

/// Counts, not bytes: a bundle or state may hold many MiB.
impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("iteration", &self.manifest.as_ref().map(Manifest::iteration))
            .field("state_hash", &self.state_hash)
            .field("page_size", &self.page_size)
            .field("pages", &self.pages.len())
            .field("page_bytes", &self.page_bytes())
            .finish()
    }
}

impl std::fmt::Debug for BundleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleState")
            .field("iteration", &self.manifest.iteration)
            .field("state_hash", &self.manifest.state_hash)
            .field("memory_len", &self.memory.len())
            .field("globals", &self.manifest.globals)
            .field("pages_from_bundle", &self.pages_from_bundle)
            .field("pages_from_local", &self.pages_from_local)
            .finish_non_exhaustive()
    }
}

// ---- the byte format ---------------------------------------------------------------

/// The manifest as archived.
#[derive(RkyvArchive, Serialize, Clone, Debug, Default)]
struct ManifestRec {
    iteration: u64,
    page_size: u32,
    seed: u64,
    memory_len: u64,
    state_hash: [u8; 16],
    pages: Vec<[u8; 16]>,
    globals: Vec<GlobalRec>,
    global_names: Vec<Option<String>>,
    host_state: Option<Vec<u8>>,
    /// Seeded xxh3-128 of the host state (zeros without one).
    host_state_hash: [u8; 16],
}

/// One page as archived.
#[derive(RkyvArchive, Serialize, Clone, Debug)]
struct PageRec {
    hash: [u8; 16],
    /// [`Encoding`] tag: 0 raw, 1 lz4.
    encoding: u8,
    bytes: Vec<u8>,
}

/// The payload of every message; which parts are set follows its kind.
#[derive(RkyvArchive, Serialize, Clone, Debug, Default)]
struct MessageRec {
    manifest: Option<ManifestRec>,
    want: Vec<[u8; 16]>,
    state_hash: [u8; 16],
    page_size: u32,
    pages: Vec<PageRec>,
}

fn encode(kind: MessageKind, rec: &MessageRec) -> Result<Vec<u8>, BundleError> {
    let payload = rkyv::to_bytes::<rancor::Error>(rec).map_err(|e| BundleError::Validation {
        message: format!("serializing: {e}"),
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(kind as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Check a message's frame; its kind (one of `accept`) and its payload, copied into an
/// aligned buffer for validation.
fn decode(
    bytes: &[u8],
    accept: &[MessageKind],
    expected: &'static str,
) -> Result<(MessageKind, AlignedVec<16>), BundleError> {
    let magic = bytes.get(..MAGIC.len()).unwrap_or(bytes);
    if magic != MAGIC {
        return Err(BundleError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let total = bytes.len() as u64;
    if bytes.len() < HEADER_LEN {
        return Err(BundleError::Truncated {
            needed: HEADER_LEN as u64,
            len: total,
        });
    }
    let version = le_u32(bytes, 8);
    if version != VERSION {
        return Err(BundleError::UnsupportedVersion { found: version });
    }
    let tag = le_u32(bytes, 12);
    let kind = MessageKind::from_tag(tag)
        .filter(|k| accept.contains(k))
        .ok_or(BundleError::WrongKind { expected, found: tag })?;
    let len = le_u64(bytes, 16);
    let sum = le_u64(bytes, 24);
    let needed = len.saturating_add(HEADER_LEN as u64);
    if needed > total {
        return Err(BundleError::Truncated { needed, len: total });
    }
    if needed < total {
        return Err(BundleError::TrailingBytes {
            extra: total - needed,
        });
    }
    let payload = bytes.get(HEADER_LEN..).unwrap_or_default();
    let found = xxh3_64(payload);
    if found != sum {
        return Err(BundleError::ChecksumMismatch { expected: sum, found });
    }
    let mut v = AlignedVec::<16>::with_capacity(payload.len());
    v.extend_from_slice(payload);
    Ok((kind, v))
}

fn access(payload: &AlignedVec<16>) -> Result<&ArchivedMessageRec, BundleError> {
    rkyv::access::<ArchivedMessageRec, rancor::Error>(payload.as_slice()).map_err(|e| {
        BundleError::Validation {
            message: e.to_string(),
        }
    })
}
