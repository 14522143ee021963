//! The attack suite: edit one documented field (docs/format.md) of a real archive,
//! re-seal every checksum it breaks (the seed is in the header, so anyone can), and
//! check that `verify` rejects every edit that changes what any reader query returns.
//!
//! A payload is edited by rebuilding it: the archived segment is copied into its owned
//! type, one field of one element is changed, and the owned value is serialized again
//! (rkyv's layout depends only on the shape, so the payload keeps its length and
//! place; this is asserted on the unedited payload).

use rewind_archive::format::*;
use rewind_archive::{Archive, ArchiveWriter, Durability, RecordInfo};
use rewind_history::{History, HistoryConfig};
use rewind_snapshot::GlobalValue;

use crate::common::*;

const SEED: u64 = 0xa77ac;
const PAGE: usize = 1024;

/// An archive with what every table can hold: change lists and checkpoints, deltas
/// and full pages, inputs, grown memory, a rollback (an abandoned branch), globals of
/// several types (whole lists and changes against the parent's), several commits.
fn build() -> (Vec<u8>, History) {
    let dir = tmpdir();
    let path = dir.path().join("a.rwd");
    let cfg = HistoryConfig::new(PAGE as u64)
        .expect("cfg")
        .seed(SEED)
        .max_chain(3);
    let mut h = History::new(cfg).expect("history");
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual).expect("create");
    let mut mem = vec![0u8; 6 * PAGE];
    let mut it = 0u64;
    let cap = |h: &mut History, mem: &mut Vec<u8>, it: &mut u64| {
        let i = *it;
        let at = (i as usize * 1531) % (mem.len() - 40);
        mem[at..at + 24].fill(i as u8 | 1);
        // Three globals that change every frame and six that never do: the file
        // stores the changes against the parent's globals (format version 2).
        let globals = [
            GlobalValue::I32(i as i32),
            GlobalValue::F64(i * 3),
            GlobalValue::V128(i as u128),
            GlobalValue::I64(-5),
            GlobalValue::I32(9),
            GlobalValue::F32(0x3f80_0000),
            GlobalValue::I64(77),
            GlobalValue::I32(0),
            GlobalValue::V128(3),
        ];
        let input = (!i.is_multiple_of(3)).then(|| vec![i as u8; 5 + i as usize % 7]);
        h.capture(i, mem, &globals, None, input.as_deref())
            .expect("capture");
        *it += 1;
    };
    for _ in 0..5 {
        cap(&mut h, &mut mem, &mut it);
        w.append(&h).expect("append");
    }
    mem.resize(8 * PAGE, 0);
    for _ in 0..3 {
        cap(&mut h, &mut mem, &mut it);
    }
    w.append(&h).expect("append");
    // Roll back two iterations and go another way: an abandoned branch.
    h.set_head(5).expect("rollback");
    it = 6;
    for _ in 0..4 {
        cap(&mut h, &mut mem, &mut it);
        w.append(&h).expect("append");
    }
    drop(w);
    (std::fs::read(&path).expect("read"), h)
}

/// Everything the reader's queries return, as text (errors included).
fn observe(bytes: &[u8]) -> String {
    let a = match Archive::from_bytes(bytes) {
        Ok(a) => a,
        Err(e) => return format!("open: {e:?}"),
    };
    let mut o = String::new();
    let mut put = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    put(format!("{:?} {:?} {:?}", a.info(), a.head(), a.torn_tail()));
    put(format!("{:?}", a.next_record_id()));
    put(format!("{:?}", a.timeline()));
    put(format!("{:?}", a.abandoned()));
    put(format!("{:?}", a.objects()));
    let recs: Vec<RecordInfo> = a.records().unwrap_or_default();
    put(format!("{recs:?}"));
    let mut prev = None;
    for r in &recs {
        put(format!("{:?}", a.record_detail(r.id)));
        put(format!("{:?}", a.globals(r.id)));
        put(format!("{:?}", a.input(r.id)));
        put(format!("{:?}", a.pages(r.id)));
        put(format!("{:?}", a.changes(r.id)));
        put(format!("{:?}", a.page_at(r.id, 2)));
        let mut mem = vec![0u8; r.memory_len as usize];
        put(format!(
            "{:?} {:?}",
            a.read_record(r.id, 0, &mut mem),
            xxhash_rust::xxh3::xxh3_64(&mem)
        ));
        for addr in [0u64, 1531 * 3, 5 * PAGE as u64 + 7] {
            put(format!("{:?}", a.blame_chain(r.id, addr, 8, 8)));
        }
        put(format!("{:?}", a.state_hash(r.iteration)));
        if let Some(p) = prev {
            put(format!("{:?}", a.diff_records(p, r.id)));
        }
        prev = Some(r.id);
    }
    put(format!("{:?}", a.to_history().map(|h| h.len())));
    o
}

fn verifies(bytes: &[u8]) -> bool {
    Archive::from_bytes(bytes).is_ok_and(|a| a.verify().is_ok())
}

// ---- owned copies of archived payloads ---------------------------------------------

fn data_of(a: &ArchivedDataSeg) -> DataSeg {
    DataSeg {
        objects: a
            .objects
            .iter()
            .map(|m| ObjMeta {
                hash: m.hash,
                parent: m.parent,
                start: m.start.to_native(),
                len: m.len.to_native(),
                kind: m.kind,
                depth: m.depth,
            })
            .collect(),
        object_bytes: a.object_bytes.to_vec(),
        records: a
            .records
            .iter()
            .map(|m| RecMeta {
                id: m.id.to_native(),
                iteration: m.iteration.to_native(),
                parent: m.parent.to_native(),
                memory_len: m.memory_len.to_native(),
                bytes_stored: m.bytes_stored.to_native(),
                state_hash: m.state_hash,
                input: m.input,
                has_input: m.has_input,
                checkpoint: m.checkpoint,
                pages_changed: m.pages_changed.to_native(),
                hops: m.hops.to_native(),
                globals_start: m.globals_start.to_native(),
                globals_len: m.globals_len.to_native(),
                list_start: m.list_start.to_native(),
                list_len: m.list_len.to_native(),
            })
            .collect(),
        globals: a
            .globals
            .iter()
            .map(|g| GlobalRec {
                ty: g.ty,
                bits: g.bits,
            })
            .collect(),
        changes: a
            .changes
            .iter()
            .map(|c| ChangeRec {
                index: c.index.to_native(),
                hash: c.hash,
            })
            .collect(),
        pages: a.pages.to_vec(),
        inputs: a
            .inputs
            .iter()
            .map(|m| InputMeta {
                hash: m.hash,
                start: m.start.to_native(),
                len: m.len.to_native(),
            })
            .collect(),
        input_bytes: a.input_bytes.to_vec(),
    }
}

fn runs_of(a: &ArchivedRunsSeg) -> RunsSeg {
    RunsSeg {
        objects: a.objects.iter().map(ObjEntry::from).collect(),
        records: a.records.iter().map(RecEntry::from).collect(),
        inputs: a.inputs.iter().map(InputEntry::from).collect(),
        timeline: a.timeline.iter().map(TlEntry::from).collect(),
    }
}

fn run_refs(v: &[ArchivedRunRef]) -> Vec<RunRef> {
    v.iter().map(RunRef::from).collect()
}

fn root_of(a: &ArchivedRootSeg) -> RootSeg {
    RootSeg {
        seq: a.seq.to_native(),
        head: a.head.to_native(),
        next_record_id: a.next_record_id.to_native(),
        record_count: a.record_count.to_native(),
        object_count: a.object_count.to_native(),
        objects: run_refs(&a.objects),
        records: run_refs(&a.records),
        inputs: run_refs(&a.inputs),
        timeline: run_refs(&a.timeline),
    }
}

// ---- edits -------------------------------------------------------------------------

/// Other values for a field holding `x`.
fn values(x: u64) -> Vec<u64> {
    let mut v = vec![x ^ 1, x.wrapping_add(16), 0, 0xffff_fffe, 987_654, u64::MAX];
    v.retain(|y| *y != x);
    v.dedup();
    v
}

fn values8(x: u8) -> Vec<u8> {
    let mut v = vec![x ^ 1, x.wrapping_add(1), 0, 2, 255];
    v.retain(|y| *y != x);
    v.sort_unstable();
    v.dedup();
    v
}

fn hashes(x: [u8; 16]) -> Vec<[u8; 16]> {
    let mut a = x;
    a[0] ^= 1;
    let mut b = x;
    b[15] ^= 0x80;
    let mut v = vec![a, b, [0; 16]];
    v.retain(|y| *y != x);
    v
}

/// One edit: a name (the field) and the edited file.
type Edit = (String, Vec<u8>);

/// Re-seal the segment at `off` after its payload changed in place.
fn reseal_segment(b: &mut [u8], off: usize) {
    let len = u64::from_le_bytes(b[off + 8..off + 16].try_into().expect("8")) as usize;
    let p = off + SEG_HEADER_LEN;
    let sum = checksum(&b[p..p + len], SEED);
    b[off + 16..off + 24].copy_from_slice(&sum.to_le_bytes());
    let hs = checksum(&b[off..off + 24], SEED);
    b[off + 24..off + 32].copy_from_slice(&hs.to_le_bytes());
}

fn reseal_trailer(b: &mut [u8], off: usize) {
    let sum = checksum(&b[off..off + 56], SEED);
    b[off + 56..off + 64].copy_from_slice(&sum.to_le_bytes());
}

fn reseal_header(b: &mut [u8]) {
    let sum = checksum(&b[..56], 0);
    b[56..64].copy_from_slice(&sum.to_le_bytes());
}

/// Write `payload` over the segment at `off` (same length) and re-seal it.
fn with_payload(base: &[u8], off: usize, payload: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    let p = off + SEG_HEADER_LEN;
    b[p..p + payload.len()].copy_from_slice(payload);
    reseal_segment(&mut b, off);
    b
}

fn ser<T>(v: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(v)
        .expect("serialize")
        .to_vec()
}

/// Every edit of one payload field of the segment at `off`.
fn payload_edits(bytes: &[u8], off: usize, out: &mut Vec<Edit>) {
    let len = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().expect("8")) as usize;
    let p = off + SEG_HEADER_LEN;
    let mut payload = rkyv::util::AlignedVec::<16>::new();
    payload.extend_from_slice(&bytes[p..p + len]);
    let kind = bytes[off + 4];
    let mut edits: Vec<(String, Vec<u8>)> = Vec::new();
    macro_rules! edit {
        ($owned:ident, $name:expr, $vec:ident, $i:expr, |$e:ident| $set:expr) => {{
            let mut o = $owned.clone();
            if let Some($e) = o.$vec.get_mut($i) {
                $set;
                edits.push((format!("{}[{}] of segment {off}", $name, $i), ser(&o)));
            }
        }};
    }
    macro_rules! each {
        ($owned:ident, $vec:ident, |$i:ident| $body:block) => {{
            let n = $owned.$vec.len();
            let mut picks = vec![0, n / 2, n.saturating_sub(1)];
            picks.dedup();
            for $i in picks.into_iter().filter(|i| *i < n) $body
        }};
    }
    match kind {
        1 => {
            let d = data_of(rkyv::access::<ArchivedDataSeg, rkyv::rancor::Error>(&payload).expect("data"));
            assert_eq!(
                ser(&d),
                payload.as_slice(),
                "re-serializing reproduces the payload"
            );
            each!(d, objects, |i| {
                let m = d.objects[i];
                for v in hashes(m.hash) {
                    edit!(d, "ObjMeta.hash", objects, i, |e| e.hash = v);
                }
                for v in hashes(m.parent) {
                    edit!(d, "ObjMeta.parent", objects, i, |e| e.parent = v);
                }
                for v in values(m.start) {
                    edit!(d, "ObjMeta.start", objects, i, |e| e.start = v);
                }
                for v in values(m.len as u64) {
                    edit!(d, "ObjMeta.len", objects, i, |e| e.len = v as u32);
                }
                for v in values8(m.kind) {
                    edit!(d, "ObjMeta.kind", objects, i, |e| e.kind = v);
                }
                for v in values8(m.depth) {
                    edit!(d, "ObjMeta.depth", objects, i, |e| e.depth = v);
                }
            });
            each!(d, object_bytes, |i| {
                edit!(d, "object_bytes", object_bytes, i, |e| *e ^= 0x10);
            });
            each!(d, records, |i| {
                let m = d.records[i];
                let root = if m.parent == NONE { "(no parent)" } else { "" };
                for v in values(m.id) {
                    edit!(d, "RecMeta.id", records, i, |e| e.id = v);
                }
                for v in values(m.iteration) {
                    edit!(d, "RecMeta.iteration", records, i, |e| e.iteration = v);
                }
                for v in values(m.parent) {
                    edit!(d, "RecMeta.parent", records, i, |e| e.parent = v);
                }
                for v in values(m.memory_len) {
                    edit!(d, "RecMeta.memory_len", records, i, |e| e.memory_len = v);
                }
                for v in values(m.bytes_stored) {
                    edit!(d, "RecMeta.bytes_stored", records, i, |e| e.bytes_stored = v);
                }
                for v in hashes(m.state_hash) {
                    edit!(d, "RecMeta.state_hash", records, i, |e| e.state_hash = v);
                }
                for v in hashes(m.input) {
                    edit!(d, "RecMeta.input", records, i, |e| e.input = v);
                }
                for v in values8(m.has_input) {
                    edit!(d, "RecMeta.has_input", records, i, |e| e.has_input = v);
                }
                for v in values8(m.checkpoint) {
                    edit!(d, "RecMeta.checkpoint", records, i, |e| e.checkpoint = v);
                }
                for v in values(m.pages_changed as u64) {
                    edit!(d, format!("RecMeta.pages_changed{root}"), records, i, |e| e
                        .pages_changed =
                        v as u32);
                }
                for v in values(m.hops as u64) {
                    edit!(d, "RecMeta.hops", records, i, |e| e.hops = v as u32);
                }
                for v in values(m.globals_start) {
                    edit!(d, "RecMeta.globals_start", records, i, |e| e.globals_start = v);
                }
                for v in values(m.globals_len as u64) {
                    edit!(d, "RecMeta.globals_len", records, i, |e| e.globals_len = v as u32);
                }
                for v in values(m.list_start) {
                    edit!(d, "RecMeta.list_start", records, i, |e| e.list_start = v);
                }
                for v in values(m.list_len as u64) {
                    edit!(d, "RecMeta.list_len", records, i, |e| e.list_len = v as u32);
                }
            });
            each!(d, globals, |i| {
                let g = d.globals[i];
                for v in values8(g.ty) {
                    edit!(d, "GlobalRec.ty", globals, i, |e| e.ty = v);
                }
                for v in hashes(g.bits) {
                    edit!(d, "GlobalRec.bits", globals, i, |e| e.bits = v);
                }
            });
            each!(d, changes, |i| {
                let c = d.changes[i];
                for v in values(c.index as u64) {
                    edit!(d, "ChangeRec.index", changes, i, |e| e.index = v as u32);
                }
                for v in hashes(c.hash) {
                    edit!(d, "ChangeRec.hash", changes, i, |e| e.hash = v);
                }
            });
            each!(d, pages, |i| {
                for v in hashes(d.pages[i]) {
                    edit!(d, "pages", pages, i, |e| *e = v);
                }
            });
            each!(d, inputs, |i| {
                let m = d.inputs[i];
                for v in hashes(m.hash) {
                    edit!(d, "InputMeta.hash", inputs, i, |e| e.hash = v);
                }
                for v in values(m.start) {
                    edit!(d, "InputMeta.start", inputs, i, |e| e.start = v);
                }
                for v in values(m.len) {
                    edit!(d, "InputMeta.len", inputs, i, |e| e.len = v);
                }
            });
            each!(d, input_bytes, |i| {
                edit!(d, "input_bytes", input_bytes, i, |e| *e ^= 0x10);
            });
        }
        2 => {
            let r = runs_of(rkyv::access::<ArchivedRunsSeg, rkyv::rancor::Error>(&payload).expect("runs"));
            assert_eq!(
                ser(&r),
                payload.as_slice(),
                "re-serializing reproduces the payload"
            );
            each!(r, objects, |i| {
                let e0 = r.objects[i];
                for v in hashes(e0.hash) {
                    edit!(r, "ObjEntry.hash", objects, i, |e| e.hash = v);
                }
                for v in values(e0.seg) {
                    edit!(r, "ObjEntry.seg", objects, i, |e| e.seg = v);
                }
                for v in values(e0.pos as u64) {
                    edit!(r, "ObjEntry.pos", objects, i, |e| e.pos = v as u32);
                }
                for v in values8(e0.depth) {
                    edit!(r, "ObjEntry.depth", objects, i, |e| e.depth = v);
                }
                for v in values8(e0.kind) {
                    edit!(r, "ObjEntry.kind", objects, i, |e| e.kind = v);
                }
            });
            each!(r, records, |i| {
                let e0 = r.records[i];
                for v in values(e0.id) {
                    edit!(r, "RecEntry.id", records, i, |e| e.id = v);
                }
                for v in values(e0.iteration) {
                    edit!(r, "RecEntry.iteration", records, i, |e| e.iteration = v);
                }
                for v in values(e0.parent) {
                    edit!(r, "RecEntry.parent", records, i, |e| e.parent = v);
                }
                for v in values(e0.memory_len) {
                    edit!(r, "RecEntry.memory_len", records, i, |e| e.memory_len = v);
                }
                for v in values(e0.seg) {
                    edit!(r, "RecEntry.seg", records, i, |e| e.seg = v);
                }
                for v in hashes(e0.state_hash) {
                    edit!(r, "RecEntry.state_hash", records, i, |e| e.state_hash = v);
                }
                for v in hashes(e0.input) {
                    edit!(r, "RecEntry.input", records, i, |e| e.input = v);
                }
                for v in values8(e0.has_input) {
                    edit!(r, "RecEntry.has_input", records, i, |e| e.has_input = v);
                }
                for v in values(e0.pos as u64) {
                    edit!(r, "RecEntry.pos", records, i, |e| e.pos = v as u32);
                }
                for v in values(e0.hops as u64) {
                    edit!(r, "RecEntry.hops", records, i, |e| e.hops = v as u32);
                }
                for v in values(e0.since) {
                    edit!(r, "RecEntry.since", records, i, |e| e.since = v);
                }
            });
            each!(r, inputs, |i| {
                let e0 = r.inputs[i];
                for v in hashes(e0.hash) {
                    edit!(r, "InputEntry.hash", inputs, i, |e| e.hash = v);
                }
                for v in values(e0.seg) {
                    edit!(r, "InputEntry.seg", inputs, i, |e| e.seg = v);
                }
                for v in values(e0.pos as u64) {
                    edit!(r, "InputEntry.pos", inputs, i, |e| e.pos = v as u32);
                }
            });
            each!(r, timeline, |i| {
                let e0 = r.timeline[i];
                for v in values(e0.iteration) {
                    edit!(r, "TlEntry.iteration", timeline, i, |e| e.iteration = v);
                }
                for v in values(e0.id) {
                    edit!(r, "TlEntry.id", timeline, i, |e| e.id = v);
                }
            });
        }
        3 => {
            let r = root_of(rkyv::access::<ArchivedRootSeg, rkyv::rancor::Error>(&payload).expect("root"));
            assert_eq!(
                ser(&r),
                payload.as_slice(),
                "re-serializing reproduces the payload"
            );
            let mut scalar = |name: &str, set: &dyn Fn(&mut RootSeg, u64), cur: u64| {
                for v in values(cur) {
                    let mut o = r.clone();
                    set(&mut o, v);
                    edits.push((format!("RootSeg.{name} of segment {off}"), ser(&o)));
                }
            };
            scalar("seq", &|o, v| o.seq = v, r.seq);
            scalar("head", &|o, v| o.head = v, r.head);
            scalar("next_record_id", &|o, v| o.next_record_id = v, r.next_record_id);
            scalar("record_count", &|o, v| o.record_count = v, r.record_count);
            scalar("object_count", &|o, v| o.object_count = v, r.object_count);
            for table in 0..4 {
                let name = ["objects", "records", "inputs", "timeline"][table];
                let n = table_mut(&mut r.clone(), table).len();
                for i in [0, n / 2, n.saturating_sub(1)].into_iter().filter(|i| *i < n) {
                    let cur = run_at(&mut r.clone(), table, i);
                    let fields: [(&str, u64); 6] = [
                        ("seg", cur.seg),
                        ("start", cur.start),
                        ("len", cur.len),
                        ("first", cur.first),
                        ("last", cur.last),
                        ("level", cur.level as u64),
                    ];
                    for (f, x) in fields {
                        for v in values(x) {
                            let mut o = r.clone();
                            let rr = run_mut(&mut o, table, i);
                            match f {
                                "seg" => rr.seg = v,
                                "start" => rr.start = v,
                                "len" => rr.len = v,
                                "first" => rr.first = v,
                                "last" => rr.last = v,
                                _ => rr.level = v as u8,
                            }
                            edits.push((format!("RunRef.{f} ({name}[{i}]) of segment {off}"), ser(&o)));
                        }
                    }
                }
            }
        }
        _ => unreachable!("a segment of a known kind"),
    }
    for (name, payload) in edits {
        // A payload of another length cannot be written in place: rkyv's layout only
        // depends on the shape, which no edit here changes.
        assert_eq!(payload.len(), len, "{name}");
        out.push((name, with_payload(bytes, off, &payload)));
    }
}

fn table_mut(o: &mut RootSeg, table: usize) -> &mut Vec<RunRef> {
    match table {
        0 => &mut o.objects,
        1 => &mut o.records,
        2 => &mut o.inputs,
        _ => &mut o.timeline,
    }
}

fn run_at(o: &mut RootSeg, table: usize, i: usize) -> RunRef {
    table_mut(o, table)[i]
}

fn run_mut(o: &mut RootSeg, table: usize, i: usize) -> &mut RunRef {
    &mut table_mut(o, table)[i]
}

/// Every edit of the file header, trailers and segment headers.
fn framing_edits(bytes: &[u8], out: &mut Vec<Edit>) {
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
    // Header: (name, offset, width).
    for (name, at, w) in [
        ("Header.version", 8, 4),
        ("Header.header_len", 12, 4),
        ("Header.page_size", 16, 4),
        ("Header.max_chain", 20, 1),
        ("Header.seed", 24, 8),
        ("Header.checkpoint_hops", 32, 4),
        ("Header.merge_fanout", 36, 4),
        ("Header.created_unix", 40, 8),
        ("Header.zero", 48, 8),
    ] {
        let cur = match w {
            1 => bytes[at] as u64,
            4 => u32_at(bytes, at) as u64,
            _ => u64_at(bytes, at),
        };
        for v in values(cur) {
            let mut b = bytes.to_vec();
            b[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
            reseal_header(&mut b);
            out.push((name.to_string(), b));
        }
    }
    for (off, end, trailer) in crate::corrupt::layout_with(bytes, SEED) {
        let o = off as usize;
        if trailer {
            for (name, at) in [
                ("Trailer.seq", 8),
                ("Trailer.root", 16),
                ("Trailer.head", 24),
                ("Trailer.prev", 32),
                ("Trailer.start", 40),
                ("Trailer.zero", 48),
            ] {
                for v in values(u64_at(bytes, o + at)) {
                    let mut b = bytes.to_vec();
                    b[o + at..o + at + 8].copy_from_slice(&v.to_le_bytes());
                    reseal_trailer(&mut b, o);
                    out.push((format!("{name} at {off}"), b));
                }
            }
        } else {
            for v in [1u8, 2, 3, 0, 9] {
                if v == bytes[o + 4] {
                    continue;
                }
                let mut b = bytes.to_vec();
                b[o + 4] = v;
                reseal_segment_header_only(&mut b, o);
                out.push((format!("SegHeader.kind at {off}"), b));
            }
            for v in values(u64_at(bytes, o + 8)) {
                let mut b = bytes.to_vec();
                b[o + 8..o + 16].copy_from_slice(&v.to_le_bytes());
                reseal_segment_header_only(&mut b, o);
                out.push((format!("SegHeader.len at {off}"), b));
            }
            // Padding after the payload.
            let pay_end = o + SEG_HEADER_LEN + u64_at(bytes, o + 8) as usize;
            if pay_end < end as usize {
                let mut b = bytes.to_vec();
                b[pay_end] = 1;
                out.push((format!("padding at {pay_end}"), b));
            }
            payload_edits(bytes, o, out);
        }
    }
}

fn reseal_segment_header_only(b: &mut [u8], off: usize) {
    let hs = checksum(&b[off..off + 24], SEED);
    b[off + 24..off + 32].copy_from_slice(&hs.to_le_bytes());
}

/// Fields no reader can check without a key: nothing in the file derives them, and
/// changing them breaks no rule. `docs/format.md` lists them; a keyed check (a secret
/// MAC over the commit) would catch them.
fn undetectable(name: &str) -> bool {
    [
        "Header.created_unix",
        "Header.merge_fanout",
        "Header.checkpoint_hops",
        "Header.max_chain",
        "RecMeta.bytes_stored",
        "RecMeta.pages_changed(no parent)",
        "RootSeg.next_record_id",
        "RunRef.level",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

#[test]
fn verify_rejects_every_resealed_edit_a_reader_would_show() {
    let (bytes, h) = build();
    let base = observe(&bytes);
    assert!(verifies(&bytes));
    let a = Archive::from_bytes(&bytes).expect("open");
    check_same(&h, &a);
    let mut edits = Vec::new();
    framing_edits(&bytes, &mut edits);
    assert!(edits.len() > 1000, "{} edits", edits.len());
    let mut missed = Vec::new();
    let (mut rejected, mut harmless, mut documented) = (0, 0, 0);
    for (name, b) in &edits {
        if !verifies(b) {
            rejected += 1;
            continue;
        }
        if observe(b) == base {
            harmless += 1;
        } else if undetectable(name) {
            documented += 1;
        } else {
            missed.push(name.clone());
        }
    }
    eprintln!(
        "attack suite: {} edits, {rejected} rejected by verify, {harmless} change no query, {documented} documented as undetectable",
        edits.len()
    );
    assert!(
        missed.is_empty(),
        "verify passed edits that change what readers return: {missed:#?}"
    );
    // Most of the rest are edits of index runs and roots that later commits superseded.
    assert!(
        rejected > edits.len() / 3,
        "{rejected} of {} rejected",
        edits.len()
    );
}

/// The examples of the report this suite answers: each passes re-sealing and must fail
/// `verify`, and a re-sealed page must never be returned by a read.
#[test]
fn resealed_lies_are_rejected_and_pages_are_rehashed_on_read() {
    let (bytes, _) = build();
    let base = observe(&bytes);
    let mut edits = Vec::new();
    framing_edits(&bytes, &mut edits);
    for want in [
        "RecMeta.iteration",
        "RecEntry.iteration",
        "TlEntry.iteration",
        "RunRef.first",
        "RunRef.last",
        "RecMeta.pages_changed[",
        "Header.seed",
    ] {
        // Edits in segments the last commit no longer names (superseded index runs
        // and roots) change nothing; every other one is caught.
        let named: Vec<_> = edits.iter().filter(|(n, _)| n.starts_with(want)).collect();
        assert!(
            named.iter().any(|(_, b)| !verifies(b)),
            "no edit of {want} is caught"
        );
        for (name, b) in named {
            assert!(!verifies(b) || observe(b) == base, "{name} passed verify");
        }
    }
    // A page's stored bytes edited and re-sealed: reads fail, never return them.
    for (name, b) in edits.iter().filter(|(n, _)| n.starts_with("object_bytes")) {
        let Ok(a) = Archive::from_bytes(b) else { continue };
        for r in a.records().unwrap_or_default() {
            let mut mem = vec![0u8; r.memory_len as usize];
            if a.read_record(r.id, 0, &mut mem).is_ok() {
                let orig = Archive::from_bytes(&bytes).expect("open");
                let mut want = vec![0u8; r.memory_len as usize];
                orig.read_record(r.id, 0, &mut want).expect("read");
                assert!(mem == want, "{name}: a read returned edited bytes");
            }
        }
        assert!(!verifies(b), "{name} passed verify");
    }
}

/// The data segments of `bytes`: offset and owned payload.
fn data_segments(bytes: &[u8]) -> Vec<(usize, DataSeg)> {
    let mut out = Vec::new();
    for (off, _, trailer) in crate::corrupt::layout_with(bytes, SEED) {
        let o = off as usize;
        if trailer || bytes[o + 4] != SegKind::Data as u8 {
            continue;
        }
        let len = u64::from_le_bytes(bytes[o + 8..o + 16].try_into().expect("8")) as usize;
        let mut payload = rkyv::util::AlignedVec::<16>::new();
        payload.extend_from_slice(&bytes[o + SEG_HEADER_LEN..o + SEG_HEADER_LEN + len]);
        let d = data_of(rkyv::access::<ArchivedDataSeg, rkyv::rancor::Error>(&payload).expect("data"));
        out.push((o, d));
    }
    out
}

/// The reason of the `Inconsistent` error of reading record `id`'s globals, and that
/// `verify` fails with the same one.
fn globals_error(bytes: &[u8], id: u64) -> &'static str {
    let a = Archive::from_bytes(bytes).expect("open");
    let reason = match a.globals(rewind_history::RecordId(id)) {
        Err(rewind_archive::ArchiveError::Inconsistent { reason, .. }) => reason,
        other => panic!("globals of {id}: {other:?}"),
    };
    match a.verify() {
        Err(rewind_archive::ArchiveError::Inconsistent { reason: r, .. }) => assert_eq!(r, reason),
        other => panic!("verify: {other:?}"),
    }
    reason
}

/// Damaged global changes (re-sealed, so only the reader's checks stand) are typed
/// errors of the reads that need them and of `verify`: a position past the parent's
/// globals, positions out of order, changes on a checkpoint (a chain that would run
/// past it), changes in a version 1 file.
#[test]
fn damaged_global_changes_are_typed_errors() {
    let (bytes, _) = build();
    assert!(verifies(&bytes));
    let segs = data_segments(&bytes);
    let (off, d, i) = segs
        .iter()
        .flat_map(|(off, d)| (0..d.records.len()).map(move |i| (*off, d, i)))
        .find(|(_, d, i)| {
            let g = d.records[*i].globals_len;
            g & GLOBALS_DELTA != 0 && g & !GLOBALS_DELTA >= 2
        })
        .expect("a record stored with global changes");
    let m = d.records[i];
    let k = m.globals_start as usize;
    // The first change's position past the nine globals.
    let mut o = d.clone();
    o.changes[k].index = 9;
    let b = with_payload(&bytes, off, &ser(&o));
    assert_eq!(globals_error(&b, m.id), "global change past the parent's globals");
    // Two changes swapped.
    let mut o = d.clone();
    o.changes.swap(k, k + 1);
    let b = with_payload(&bytes, off, &ser(&o));
    assert_eq!(globals_error(&b, m.id), "global changes out of order");
    // The root (a checkpoint) stored with changes: a record's chain of changes would run
    // past its checkpoint.
    let (off, d) = segs
        .iter()
        .find(|(_, d)| {
            d.records
                .first()
                .is_some_and(|r| r.checkpoint == 1 && r.parent == NONE)
        })
        .expect("the root's segment");
    let mut o = d.clone();
    o.records[0].globals_start = 0;
    o.records[0].globals_len = GLOBALS_DELTA;
    let b = with_payload(&bytes, *off, &ser(&o));
    assert_eq!(
        globals_error(&b, d.records[0].id),
        "global changes past their checkpoint"
    );
    // The same file claiming format version 1, which has no global changes.
    let mut b = bytes.clone();
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    reseal_header(&mut b);
    assert_eq!(globals_error(&b, m.id), "global changes in a version 1 file");
}
