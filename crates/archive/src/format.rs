//! The byte layout of an archive: header, segment framing, commit trailer, and the
//! rkyv-archived payload types. `docs/format.md` describes the same thing in prose.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use rewind_snapshot::{GlobalType, GlobalValue};
use rewind_store::Encoding;
use rkyv::{Archive, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::ArchiveError;

/// The file magic: PNG-style, so text-mode transfers and truncated headers are caught.
pub const MAGIC: [u8; 8] = *b"\x89RWD\r\n\x1a\n";
/// The format version this crate writes (and the newest it reads).
///
/// Version 2 stores a record's globals as the changes against its parent's when that
/// is smaller than the whole list ([`GLOBALS_DELTA`]); version 1 stores every record's
/// globals whole. Both read; a writer appending to a version 1 file keeps writing
/// version 1 records, so a file never mixes the two.
pub const VERSION: u32 = 2;
/// The oldest format version this crate reads.
pub const MIN_VERSION: u32 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: usize = 64;
/// Bytes of a segment header.
pub const SEG_HEADER_LEN: usize = 32;
/// Bytes of a commit trailer.
pub const TRAILER_LEN: usize = 64;
/// Everything (segments, trailers, payloads) starts at a multiple of this.
pub const ALIGN: u64 = 16;
/// The segment magic.
pub const SEG_MAGIC: [u8; 4] = *b"RSEG";
/// The trailer magic.
pub const TRAILER_MAGIC: [u8; 8] = *b"RWDCOMIT";
/// A record number or offset field meaning "none".
pub const NONE: u64 = u64::MAX;
/// The largest memory length a record may declare (the wasm32 limit, 4 GiB): bounds
/// the page vectors a reader allocates for a file whose zero pages cost no bytes.
pub const MAX_MEMORY: u64 = 1 << 32;

/// The kinds of segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SegKind {
    /// New objects, records and input blobs of one commit ([`DataSeg`]).
    Data = 1,
    /// Index runs written by one commit ([`RunsSeg`]).
    Runs = 2,
    /// The index root of one commit ([`RootSeg`]).
    Root = 3,
    /// Host states and global names set by one commit ([`ExtraSeg`]), named by the
    /// commit's trailer. Written only by commits that have either.
    Extra = 4,
}

impl SegKind {
    /// The kind from its tag.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(SegKind::Data),
            2 => Some(SegKind::Runs),
            3 => Some(SegKind::Root),
            4 => Some(SegKind::Extra),
            _ => None,
        }
    }
}

/// Round up to [`ALIGN`].
pub fn align_up(x: u64) -> Option<u64> {
    x.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

/// The checksum of every segment payload, segment header and trailer: xxh3-64 seeded
/// with the history's hash seed (so bytes a guest chose cannot be a predictable forgery).
pub fn checksum(bytes: &[u8], seed: u64) -> u64 {
    CHECKSUMMED.with(|c| c.set(c.get().wrapping_add(bytes.len() as u64)));
    xxh3_64_with_seed(bytes, seed)
}

thread_local! {
    static CHECKSUMMED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Bytes [`checksum`] has hashed on the calling thread so far: a work counter, so tests
/// can bound what an operation (such as finding the last commit of a hostile file)
/// costs without timing it.
pub fn checksummed_bytes() -> u64 {
    CHECKSUMMED.with(|c| c.get())
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

/// The little-endian `u32` at `at` (zero where `b` is too short: callers check lengths).
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// The little-endian `u64` at `at` (zero where `b` is too short: callers check lengths).
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// The fixed file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The format version ([`MIN_VERSION`]`..=`[`VERSION`]).
    pub version: u32,
    /// Page size in bytes.
    pub page_size: u32,
    /// The longest delta chain an object may sit on.
    pub max_chain: u8,
    /// The hash seed.
    pub seed: u64,
    /// A record's page vector is at most this many change lists away from a checkpoint.
    pub checkpoint_hops: u32,
    /// Index runs of one level are merged when this many accumulate.
    pub merge_fanout: u32,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
}

impl Header {
    /// Encode the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        put(&mut b, 0, &MAGIC);
        put(&mut b, 8, &self.version.to_le_bytes());
        put(&mut b, 12, &(HEADER_LEN as u32).to_le_bytes());
        put(&mut b, 16, &self.page_size.to_le_bytes());
        put(&mut b, 20, &[self.max_chain]);
        put(&mut b, 24, &self.seed.to_le_bytes());
        put(&mut b, 32, &self.checkpoint_hops.to_le_bytes());
        put(&mut b, 36, &self.merge_fanout.to_le_bytes());
        put(&mut b, 40, &self.created_unix.to_le_bytes());
        let sum = checksum(b.get(..56).unwrap_or(&[]), 0);
        put(&mut b, 56, &sum.to_le_bytes());
        b
    }

    /// Decode and check a header from the start of a file.
    pub fn decode(file: &[u8]) -> Result<Header, ArchiveError> {
        let Some(b) = file.get(..HEADER_LEN) else {
            // Too short even for the magic: say which it is.
            if file.len() < 8 || file.get(..8) != Some(&MAGIC[..]) {
                let mut found = [0u8; 8];
                for (d, s) in found.iter_mut().zip(file) {
                    *d = *s;
                }
                if file.len() >= 8 {
                    return Err(ArchiveError::BadMagic { found });
                }
            }
            return Err(ArchiveError::Truncated {
                offset: 0,
                needed: HEADER_LEN as u64,
                file_len: file.len() as u64,
            });
        };
        let mut magic = [0u8; 8];
        magic.copy_from_slice(b.get(..8).unwrap_or(&[0; 8]));
        if magic != MAGIC {
            return Err(ArchiveError::BadMagic { found: magic });
        }
        let version = le_u32(b, 8);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(ArchiveError::UnsupportedVersion { found: version });
        }
        let expected = le_u64(b, 56);
        let found = checksum(b.get(..56).unwrap_or(&[]), 0);
        if expected != found {
            return Err(ArchiveError::ChecksumMismatch {
                offset: 0,
                expected,
                found,
            });
        }
        if le_u32(b, 12) as usize != HEADER_LEN {
            return Err(ArchiveError::BadHeader {
                reason: "header length field is not 64",
            });
        }
        let h = Header {
            version,
            page_size: le_u32(b, 16),
            max_chain: b.get(20).copied().unwrap_or(0),
            seed: le_u64(b, 24),
            checkpoint_hops: le_u32(b, 32),
            merge_fanout: le_u32(b, 36),
            created_unix: le_u64(b, 40),
        };
        if rewind_store::PageSize::new(h.page_size as u64).is_err() {
            return Err(ArchiveError::BadHeader {
                reason: "page size is not a power of two from 1 KiB to 64 KiB",
            });
        }
        if h.checkpoint_hops == 0 || h.checkpoint_hops > 65536 {
            return Err(ArchiveError::BadHeader {
                reason: "checkpoint interval out of range 1..=65536",
            });
        }
        if h.merge_fanout < 2 || h.merge_fanout > 1024 {
            return Err(ArchiveError::BadHeader {
                reason: "merge fan-out out of range 2..=1024",
            });
        }
        Ok(h)
    }
}

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegHeader {
    /// The kind.
    pub kind: SegKind,
    /// Payload bytes (without padding).
    pub len: u64,
    /// The payload's checksum.
    pub sum: u64,
}

impl SegHeader {
    /// Encode a segment header.
    pub fn encode(kind: SegKind, payload: &[u8], seed: u64) -> [u8; SEG_HEADER_LEN] {
        let mut b = [0u8; SEG_HEADER_LEN];
        put(&mut b, 0, &SEG_MAGIC);
        put(&mut b, 4, &[kind as u8]);
        put(&mut b, 8, &(payload.len() as u64).to_le_bytes());
        put(&mut b, 16, &checksum(payload, seed).to_le_bytes());
        let sum = checksum(b.get(..24).unwrap_or(&[]), seed);
        if let Some(d) = b.get_mut(24..32) {
            d.copy_from_slice(&sum.to_le_bytes());
        }
        b
    }

    /// Decode the segment header at `offset` of `file`, checking its own checksum and
    /// that the payload lies within `file[..end]`.
    pub fn decode(file: &[u8], offset: u64, end: u64, seed: u64) -> Result<SegHeader, ArchiveError> {
        let start = usize::try_from(offset).map_err(|_| ArchiveError::BadSegment {
            offset,
            reason: "offset out of range",
        })?;
        let hdr_end = offset.saturating_add(SEG_HEADER_LEN as u64);
        if !offset.is_multiple_of(ALIGN) {
            return Err(ArchiveError::BadSegment {
                offset,
                reason: "segment offset is not 16-aligned",
            });
        }
        if hdr_end > end {
            return Err(ArchiveError::Truncated {
                offset,
                needed: SEG_HEADER_LEN as u64,
                file_len: end,
            });
        }
        let b = file
            .get(start..start + SEG_HEADER_LEN)
            .ok_or(ArchiveError::Truncated {
                offset,
                needed: SEG_HEADER_LEN as u64,
                file_len: file.len() as u64,
            })?;
        Self::decode_at(b, offset, end, seed)
    }

    /// [`SegHeader::decode`] of the segment header `b` (its 32 bytes) read from
    /// `offset`: the same checks, for a reader that holds only some of the file.
    pub fn decode_at(b: &[u8], offset: u64, end: u64, seed: u64) -> Result<SegHeader, ArchiveError> {
        let hdr_end = offset.saturating_add(SEG_HEADER_LEN as u64);
        if !offset.is_multiple_of(ALIGN) {
            return Err(ArchiveError::BadSegment {
                offset,
                reason: "segment offset is not 16-aligned",
            });
        }
        if hdr_end > end || b.len() < SEG_HEADER_LEN {
            return Err(ArchiveError::Truncated {
                offset,
                needed: SEG_HEADER_LEN as u64,
                file_len: end,
            });
        }
        if b.get(..4) != Some(&SEG_MAGIC[..]) {
            return Err(ArchiveError::BadSegment {
                offset,
                reason: "no segment magic",
            });
        }
        let expected = le_u64(b, 24);
        let found = checksum(b.get(..24).unwrap_or(&[]), seed);
        if expected != found {
            return Err(ArchiveError::ChecksumMismatch {
                offset,
                expected,
                found,
            });
        }
        let kind = SegKind::from_tag(b.get(4).copied().unwrap_or(0)).ok_or(ArchiveError::BadSegment {
            offset,
            reason: "unknown segment kind",
        })?;
        let len = le_u64(b, 8);
        let avail = end - hdr_end;
        if len > avail {
            return Err(ArchiveError::Truncated {
                offset,
                needed: len.saturating_add(SEG_HEADER_LEN as u64),
                file_len: end,
            });
        }
        Ok(SegHeader {
            kind,
            len,
            sum: le_u64(b, 16),
        })
    }
}

/// A decoded commit trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Commit sequence number, from 0.
    pub seq: u64,
    /// Offset of the commit's root segment.
    pub root: u64,
    /// The head record number, or [`NONE`].
    pub head: u64,
    /// Offset of the previous commit's trailer, or [`NONE`].
    pub prev: u64,
    /// Offset of the first segment of this commit.
    pub start: u64,
    /// Offset of this commit's extra segment ([`SegKind::Extra`]), or 0 for none (every
    /// file written before the segment existed holds 0 here).
    pub extra: u64,
}

impl Trailer {
    /// Encode a trailer.
    pub fn encode(&self, seed: u64) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        put(&mut b, 0, &TRAILER_MAGIC);
        put(&mut b, 8, &self.seq.to_le_bytes());
        put(&mut b, 16, &self.root.to_le_bytes());
        put(&mut b, 24, &self.head.to_le_bytes());
        put(&mut b, 32, &self.prev.to_le_bytes());
        put(&mut b, 40, &self.start.to_le_bytes());
        put(&mut b, 48, &self.extra.to_le_bytes());
        let sum = checksum(b.get(..56).unwrap_or(&[]), seed);
        put(&mut b, 56, &sum.to_le_bytes());
        b
    }

    /// True when the 8 bytes at `at` are the trailer magic.
    pub fn has_magic(file: &[u8], at: usize) -> bool {
        file.get(at..at + 8) == Some(&TRAILER_MAGIC[..])
    }

    /// Decode a trailer at `offset`, checking magic and checksum.
    pub fn decode(file: &[u8], offset: u64, seed: u64) -> Result<Trailer, ArchiveError> {
        let at = usize::try_from(offset).map_err(|_| ArchiveError::BadSegment {
            offset,
            reason: "offset out of range",
        })?;
        let b = file
            .get(at..at.saturating_add(TRAILER_LEN))
            .ok_or(ArchiveError::Truncated {
                offset,
                needed: TRAILER_LEN as u64,
                file_len: file.len() as u64,
            })?;
        Self::decode_at(b, offset, seed)
    }

    /// [`Trailer::decode`] of the trailer `b` (its 64 bytes) read from `offset`.
    pub fn decode_at(b: &[u8], offset: u64, seed: u64) -> Result<Trailer, ArchiveError> {
        if b.len() < TRAILER_LEN {
            return Err(ArchiveError::Truncated {
                offset,
                needed: TRAILER_LEN as u64,
                file_len: offset.saturating_add(b.len() as u64),
            });
        }
        if b.get(..8) != Some(&TRAILER_MAGIC[..]) {
            return Err(ArchiveError::BadSegment {
                offset,
                reason: "no trailer magic",
            });
        }
        let expected = le_u64(b, 56);
        let found = checksum(b.get(..56).unwrap_or(&[]), seed);
        if expected != found {
            return Err(ArchiveError::ChecksumMismatch {
                offset,
                expected,
                found,
            });
        }
        Ok(Trailer {
            seq: le_u64(b, 8),
            root: le_u64(b, 16),
            head: le_u64(b, 24),
            prev: le_u64(b, 32),
            start: le_u64(b, 40),
            extra: le_u64(b, 48),
        })
    }
}

// ---- rkyv payloads -------------------------------------------------------------------
//
// Every payload is a struct of plain vectors of plain structs (no nested vectors, no
// enums, no bools): validation of such a payload is a constant number of bounds checks,
// so validated access costs the same as unchecked access and can run on every read.

/// One object's metadata in a [`DataSeg`]; its bytes are `object_bytes[start..start+len]`.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjMeta {
    /// The page hash.
    pub hash: [u8; 16],
    /// The delta parent (zeros for a full page).
    pub parent: [u8; 16],
    /// Start of the bytes in `object_bytes`.
    pub start: u64,
    /// Length of the bytes.
    pub len: u32,
    /// 0 raw page, 1 lz4 page, 2 delta.
    pub kind: u8,
    /// Deltas from this object down to a full page, as stored in this file.
    pub depth: u8,
}

/// Object kinds: a full page's tag is its [`Encoding`]'s.
pub const KIND_RAW: u8 = Encoding::Raw as u8;
/// An lz4 full page.
pub const KIND_LZ4: u8 = Encoding::Lz4 as u8;
/// A delta.
pub const KIND_DELTA: u8 = 2;

/// How a page object is stored (the `kind` of its [`ObjMeta`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// The raw page.
    Raw,
    /// An lz4 block.
    Lz4,
    /// A delta against a parent page.
    Delta,
}

impl ObjectKind {
    /// The kind of an object's `kind` tag; `None` for a tag the format does not define.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            KIND_DELTA => Some(ObjectKind::Delta),
            t => Encoding::from_tag(t).map(ObjectKind::from),
        }
    }

    /// The tag stored in the file.
    pub fn tag(self) -> u8 {
        match self {
            ObjectKind::Raw => KIND_RAW,
            ObjectKind::Lz4 => KIND_LZ4,
            ObjectKind::Delta => KIND_DELTA,
        }
    }

    /// The encoding of a full page; `None` for a delta.
    pub fn encoding(self) -> Option<Encoding> {
        match self {
            ObjectKind::Raw => Some(Encoding::Raw),
            ObjectKind::Lz4 => Some(Encoding::Lz4),
            ObjectKind::Delta => None,
        }
    }
}

impl From<Encoding> for ObjectKind {
    fn from(e: Encoding) -> Self {
        match e {
            Encoding::Raw => ObjectKind::Raw,
            Encoding::Lz4 => ObjectKind::Lz4,
        }
    }
}

/// One record in a [`DataSeg`].
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecMeta {
    /// Record number.
    pub id: u64,
    /// Iteration.
    pub iteration: u64,
    /// Parent record number or [`NONE`].
    pub parent: u64,
    /// Memory length in bytes.
    pub memory_len: u64,
    /// New bytes the store took at capture.
    pub bytes_stored: u64,
    /// State hash.
    pub state_hash: [u8; 16],
    /// Input hash (valid when `has_input` is 1).
    pub input: [u8; 16],
    /// 1 when the record has an input.
    pub has_input: u8,
    /// 1 when `pages` holds the full page vector, 0 when `changes` holds a change list.
    pub checkpoint: u8,
    /// Pages changed at capture.
    pub pages_changed: u32,
    /// Change lists between this record and its nearest checkpoint (0 for a checkpoint).
    pub hops: u32,
    /// Start of the globals: in `globals` for a whole list, in `changes` for the
    /// changes against the parent's globals (see `globals_len`).
    pub globals_start: u64,
    /// Number of entries, with [`GLOBALS_DELTA`] set (version 2) when they are the
    /// changes against the parent's globals (`ChangeRec`s in `changes`: the global's
    /// position and its new bits; the type is the parent's) rather than the whole list
    /// (`GlobalRec`s in `globals`).
    pub globals_len: u32,
    /// Start in `changes` (change list) or `pages` (checkpoint).
    pub list_start: u64,
    /// Length of that list.
    pub list_len: u32,
}

/// The bit of [`RecMeta::globals_len`] saying a record's globals are stored as changes
/// against its parent's (format version 2). A wasm module has at most 1,000,000
/// globals, so the bit is never part of a count. A checkpoint record always stores its
/// globals whole, so a record's globals are at most `checkpoint_hops` change lists away
/// from a whole list.
pub const GLOBALS_DELTA: u32 = 1 << 31;

/// One global value.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalRec {
    /// Type tag (0 i32, 1 i64, 2 f32, 3 f64, 4 v128).
    pub ty: u8,
    /// The bits, little-endian, zero-extended.
    pub bits: [u8; 16],
}

impl From<&GlobalValue> for GlobalRec {
    fn from(g: &GlobalValue) -> Self {
        GlobalRec {
            ty: g.ty() as u8,
            bits: g.to_bits().to_le_bytes(),
        }
    }
}

impl ArchivedGlobalRec {
    /// The value; `None` for a type tag the format does not define. Bits beyond the
    /// type's width are ignored (`verify` rejects them).
    pub fn value(&self) -> Option<GlobalValue> {
        let ty = GlobalType::from_tag(self.ty)?;
        Some(GlobalValue::from_bits(ty, u128::from_le_bytes(self.bits)))
    }
}

/// One changed page slot.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeRec {
    /// Page index.
    pub index: u32,
    /// New page hash (zeros: zero page or slot dropped).
    pub hash: [u8; 16],
}

/// One input blob in a [`DataSeg`].
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputMeta {
    /// Hash of the blob (seeded xxh3-128).
    pub hash: [u8; 16],
    /// Start in `input_bytes`.
    pub start: u64,
    /// Length.
    pub len: u64,
}

/// The payload of a data segment: what one commit added.
#[derive(Archive, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DataSeg {
    /// Objects.
    pub objects: Vec<ObjMeta>,
    /// Their bytes, concatenated.
    pub object_bytes: Vec<u8>,
    /// Records, by increasing id.
    pub records: Vec<RecMeta>,
    /// Globals of all records.
    pub globals: Vec<GlobalRec>,
    /// Change lists of all records.
    pub changes: Vec<ChangeRec>,
    /// Page vectors of checkpoint records.
    pub pages: Vec<[u8; 16]>,
    /// Input blobs.
    pub inputs: Vec<InputMeta>,
    /// Their bytes.
    pub input_bytes: Vec<u8>,
}

/// One host state set by an [`ExtraSeg`]: the blob `hash` (in the input blob table)
/// is the host state of record `record`; `has` 0 clears it.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostRef {
    /// Record number.
    pub record: u64,
    /// Blob hash (zeros when `has` is 0).
    pub hash: [u8; 16],
    /// 1: the record has this host state; 0: it has none.
    pub has: u8,
}

/// One global's name in an [`ExtraSeg`]: `name_bytes[start..start+len]` (UTF-8) names
/// the recorded global at position `index`.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameRef {
    /// Position among the recorded globals.
    pub index: u32,
    /// Start in `name_bytes`.
    pub start: u64,
    /// Length.
    pub len: u32,
}

/// The payload of an extra segment: what one commit set besides records and objects.
/// A later commit's entries win over an earlier one's.
#[derive(Archive, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtraSeg {
    /// Host states set by this commit (new records', or a record's changed one).
    pub host: Vec<HostRef>,
    /// 1 when this commit sets the global names (the whole list: `names`).
    pub names_set: u8,
    /// Named globals (globals without a name are left out), by increasing index.
    pub names: Vec<NameRef>,
    /// Their bytes.
    pub name_bytes: Vec<u8>,
}

/// Object index entry: where an object lives.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjEntry {
    /// Page hash (the sort key).
    pub hash: [u8; 16],
    /// Offset of the data segment.
    pub seg: u64,
    /// Position in its `objects`.
    pub pos: u32,
    /// Depth as stored.
    pub depth: u8,
    /// Kind.
    pub kind: u8,
}

/// Record index entry: the summary of a record (sort key: id).
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecEntry {
    /// Record number.
    pub id: u64,
    /// Iteration.
    pub iteration: u64,
    /// Parent or [`NONE`].
    pub parent: u64,
    /// Memory length.
    pub memory_len: u64,
    /// Offset of the data segment holding the record.
    pub seg: u64,
    /// State hash.
    pub state_hash: [u8; 16],
    /// Input hash.
    pub input: [u8; 16],
    /// 1 when there is an input.
    pub has_input: u8,
    /// Position in the segment's `records`.
    pub pos: u32,
    /// Change lists to the nearest checkpoint.
    pub hops: u32,
    /// Change-list entries written since the nearest checkpoint, this record's included.
    pub since: u64,
}

/// Input index entry (sort key: hash).
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputEntry {
    /// Blob hash.
    pub hash: [u8; 16],
    /// Data segment offset.
    pub seg: u64,
    /// Position in its `inputs`.
    pub pos: u32,
}

/// Timeline entry (sort key: iteration).
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlEntry {
    /// Iteration.
    pub iteration: u64,
    /// Record number.
    pub id: u64,
}

/// The payload of a runs segment: index runs written by one commit, each table's runs
/// concatenated (a [`RunRef`] names a slice).
#[derive(Archive, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct RunsSeg {
    /// Object entries.
    pub objects: Vec<ObjEntry>,
    /// Record entries.
    pub records: Vec<RecEntry>,
    /// Input entries.
    pub inputs: Vec<InputEntry>,
    /// Timeline entries.
    pub timeline: Vec<TlEntry>,
}

/// A reference to one sorted run of index entries.
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRef {
    /// Offset of the runs segment.
    pub seg: u64,
    /// First entry in the table's vector.
    pub start: u64,
    /// Entries in the run.
    pub len: u64,
    /// The smallest key (records: id; timeline: iteration; objects and inputs: the
    /// first 8 hash bytes as a big-endian number).
    pub first: u64,
    /// The largest key.
    pub last: u64,
    /// Merge level (0: written by one commit).
    pub level: u8,
}

/// The payload of a root segment: the whole index of one commit.
#[derive(Archive, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct RootSeg {
    /// Commit sequence number.
    pub seq: u64,
    /// Head record or [`NONE`].
    pub head: u64,
    /// Next record number of the history at this commit.
    pub next_record_id: u64,
    /// Records in the file.
    pub record_count: u64,
    /// Objects in the file.
    pub object_count: u64,
    /// Object runs, oldest first.
    pub objects: Vec<RunRef>,
    /// Record runs, by increasing id.
    pub records: Vec<RunRef>,
    /// Input runs.
    pub inputs: Vec<RunRef>,
    /// Timeline runs, by increasing iteration.
    pub timeline: Vec<RunRef>,
}

// ---- archived → native ---------------------------------------------------------------
//
// The index entries and run references a reader finds in the file, as the plain values
// the writer keeps in memory (a writer reopening a file loads its index through these).

impl From<&ArchivedObjEntry> for ObjEntry {
    fn from(e: &ArchivedObjEntry) -> Self {
        ObjEntry {
            hash: e.hash,
            seg: e.seg.to_native(),
            pos: e.pos.to_native(),
            depth: e.depth,
            kind: e.kind,
        }
    }
}

impl From<&ArchivedRecEntry> for RecEntry {
    fn from(e: &ArchivedRecEntry) -> Self {
        RecEntry {
            id: e.id.to_native(),
            iteration: e.iteration.to_native(),
            parent: e.parent.to_native(),
            memory_len: e.memory_len.to_native(),
            seg: e.seg.to_native(),
            state_hash: e.state_hash,
            input: e.input,
            has_input: e.has_input,
            pos: e.pos.to_native(),
            hops: e.hops.to_native(),
            since: e.since.to_native(),
        }
    }
}

impl From<&ArchivedInputEntry> for InputEntry {
    fn from(e: &ArchivedInputEntry) -> Self {
        InputEntry {
            hash: e.hash,
            seg: e.seg.to_native(),
            pos: e.pos.to_native(),
        }
    }
}

impl From<&ArchivedTlEntry> for TlEntry {
    fn from(e: &ArchivedTlEntry) -> Self {
        TlEntry {
            iteration: e.iteration.to_native(),
            id: e.id.to_native(),
        }
    }
}

impl From<&ArchivedRunRef> for RunRef {
    fn from(r: &ArchivedRunRef) -> Self {
        RunRef {
            seg: r.seg.to_native(),
            start: r.start.to_native(),
            len: r.len.to_native(),
            first: r.first.to_native(),
            last: r.last.to_native(),
            level: r.level,
        }
    }
}

/// The sort key prefix of a hash.
pub fn hash_key(h: &[u8; 16]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(h.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(a)
}
