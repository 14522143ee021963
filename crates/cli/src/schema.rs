//! The JSON Lines schemas: one type per concept, the same in every command.
//!
//! `--json` prints one JSON object per line, each with a `kind` naming its concept. A
//! record is a [`Record`] whether `log`, `show` or `diff` prints it; a global is a
//! [`Global`] in `show`, `diff` (inside a [`GlobalChange`]) and the globals file of
//! `export`; and so on. Hashes are always the full 128 bits, as 32 lower-case hex
//! digits; bytes are lower-case hex.

use rewind_archive::{Archive, RecordInfo};
use rewind_history::RecordId;
use rewind_snapshot::GlobalValue;
use rewind_store::PageHash;
use serde::Serialize;

use anyhow::Result;

/// A record: one iteration as captured (`kind: "record"`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Record {
    /// Always `"record"`.
    pub kind: &'static str,
    /// Record number (`rN`).
    pub record: u64,
    /// Iteration.
    pub iteration: u64,
    /// Parent record (`null` for a root).
    pub parent: Option<u64>,
    /// On the current timeline (false: an abandoned branch).
    pub on_timeline: bool,
    /// State hash, 32 hex digits.
    pub state_hash: String,
    /// Memory length in bytes.
    pub memory_len: u64,
    /// Stored with its full page vector (a checkpoint) rather than a change list.
    pub checkpoint: bool,
    /// Pages that differ from the parent.
    pub pages_changed: u32,
    /// Bytes the capture stored.
    pub bytes_stored: u64,
    /// Records in the file whose parent this is; more than one makes a branch point.
    pub children: u32,
    /// Bytes of the recorded input blob (`null`: none).
    pub input_len: Option<u64>,
    /// Hash of the input blob, 32 hex digits (`null`: none).
    pub input_hash: Option<String>,
}

impl Record {
    /// The record `r` of `archive`, with `children` records branching from it.
    pub fn of(archive: &Archive, r: &RecordInfo, children: u32) -> Result<Record> {
        let d = archive.record_detail(r.id)?;
        let input_len = match r.input {
            Some(_) => archive.input(r.id)?.map(|i| i.len() as u64),
            None => None,
        };
        Ok(Record {
            kind: "record",
            record: r.id.0,
            iteration: r.iteration,
            parent: r.parent.map(|p| p.0),
            on_timeline: r.on_timeline,
            state_hash: r.state_hash.to_hex(),
            memory_len: r.memory_len,
            checkpoint: d.checkpoint,
            pages_changed: d.pages_changed,
            bytes_stored: d.bytes_stored,
            children,
            input_len,
            input_hash: r.input.map(|h| h.to_hex()),
        })
    }

    /// True when more than one record branches from here.
    pub fn branch_point(&self) -> bool {
        self.children > 1
    }
}

/// A global of a record (`kind: "global"`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Global {
    /// Always `"global"`.
    pub kind: &'static str,
    /// The record it belongs to.
    pub record: u64,
    /// Index of the global.
    pub index: usize,
    /// `i32`, `i64`, `f32`, `f64` or `v128`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// The value as text (`1.5`, `-3`, `0x…` for v128).
    pub value: String,
    /// The raw bits in hex (`0x…`).
    pub bits: String,
    /// Its name, when the archive stores one (the guest's export name, or `$name` from
    /// the module's name section); left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Global {
    /// The globals of record `record`, named by `names` (by index).
    pub fn all(record: RecordId, globals: &[GlobalValue], names: &[Option<String>]) -> Vec<Global> {
        globals
            .iter()
            .enumerate()
            .map(|(index, g)| Global::of(record, index, *g).named(names))
            .collect()
    }

    /// This global with its name from `names` (by index), if there is one.
    pub fn named(mut self, names: &[Option<String>]) -> Global {
        self.name = names.get(self.index).cloned().flatten();
        self
    }

    /// How text output calls it: its name, else `global N`.
    pub fn label(&self) -> String {
        label(self.index, self.name.as_deref())
    }

    /// Global `index` of `record`, of value `g`.
    pub fn of(record: RecordId, index: usize, g: GlobalValue) -> Global {
        let (value, bits) = match g {
            GlobalValue::I32(v) => (v.to_string(), format!("{:#010x}", v as u32)),
            GlobalValue::I64(v) => (v.to_string(), format!("{:#018x}", v as u64)),
            GlobalValue::F32(b) => (format!("{:?}", f32::from_bits(b)), format!("{b:#010x}")),
            GlobalValue::F64(b) => (format!("{:?}", f64::from_bits(b)), format!("{b:#018x}")),
            GlobalValue::V128(v) => (format!("{v:#034x}"), format!("{v:#034x}")),
        };
        Global {
            kind: "global",
            record: record.0,
            index,
            ty: g.ty().name(),
            value,
            bits,
            name: None,
        }
    }
}

/// A page of a record (`kind: "page"`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Page {
    /// Always `"page"`.
    pub kind: &'static str,
    /// The record.
    pub record: u64,
    /// Page index.
    pub page: u32,
    /// Its first address.
    pub addr: u64,
    /// Its hash, 32 hex digits (all zeros: the zero page).
    pub hash: String,
}

impl Page {
    /// Page `page` of `record`, of hash `hash`, in pages of `page_size` bytes.
    pub fn of(record: RecordId, page: u32, hash: PageHash, page_size: usize) -> Page {
        Page {
            kind: "page",
            record: record.0,
            page,
            addr: u64::from(page) * page_size as u64,
            hash: hash.to_hex(),
        }
    }
}

/// A byte range: `len` bytes from `addr`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct ByteRange {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// A diff entry: one page that differs between two records and the exact ranges of
/// bytes that differ in it (`kind: "diff_entry"`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DiffEntry {
    /// Always `"diff_entry"`.
    pub kind: &'static str,
    /// Page index.
    pub page: u32,
    /// The page's first address.
    pub addr: u64,
    /// Bytes that differ in the page.
    pub bytes: u64,
    /// Ranges of differing bytes (every byte inside differs), ascending.
    pub ranges: Vec<ByteRange>,
}

/// A global that differs between two records (`kind: "global_change"`): its value on
/// each side, `null` where the record has no such global.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GlobalChange {
    /// Always `"global_change"`.
    pub kind: &'static str,
    /// Index of the global.
    pub index: usize,
    /// Its name, when the archive stores one; left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// In the first record.
    pub a: Option<Global>,
    /// In the second record.
    pub b: Option<Global>,
}

/// Bytes of a record at an address (`kind: "bytes"`): what `cat` reads and the value
/// `blame` starts from.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Bytes {
    /// Always `"bytes"`.
    pub kind: &'static str,
    /// The record.
    pub record: u64,
    /// Its iteration.
    pub iteration: u64,
    /// First address.
    pub addr: u64,
    /// Length.
    pub len: u64,
    /// The bytes, hex.
    pub hex: String,
}

/// A change of bytes found by `blame` (`kind: "change"`): at `record` the bytes
/// `[addr, addr + len)` took the value `after`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    /// Always `"change"`.
    pub kind: &'static str,
    /// The record at which the bytes took the value `after`.
    pub record: u64,
    /// Its iteration.
    pub iteration: u64,
    /// True when this is the oldest record in the archive: the bytes may have changed
    /// earlier than the archive reaches.
    pub at_oldest: bool,
    /// First address.
    pub addr: u64,
    /// Length.
    pub len: u64,
    /// The bytes in the parent record, hex (`null` at the oldest record).
    pub before: Option<String>,
    /// The bytes at this record, hex.
    pub after: String,
}

/// How text output calls global `index`: its name (`$drift`, or an export name), else
/// `global N`.
pub fn label(index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => n.to_owned(),
        None => format!("global {index}"),
    }
}
