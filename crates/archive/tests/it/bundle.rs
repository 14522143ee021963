//! Late-joiner bundles: only the pages a receiver lacks move (counted independently of
//! the code under test), the assembled state verifies, and hostile bytes (truncated at
//! every length, any byte flipped, edits re-sealed under the checksum) are typed errors.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rewind_archive::bundle::{self, Bundle, BundleError, Manifest, Nothing, HEADER_LEN};
use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_history::{History, HistoryConfig};
use rewind_snapshot::GlobalValue;
use rewind_store::PageHash;
use xxhash_rust::xxh3::xxh3_64;

use crate::common::*;

const PAGE: usize = 4096;
const PAGES: usize = 256;
const SEED: u64 = 77;

/// A game of `frames` frames of 1 MiB: random pages among the first 200 (the rest stay
/// zero), every fifth frame a copy of page 0 over another (a repeated page); globals and a host state every frame. The archive is copied to
/// `have.rwd` right after frame `have_at`.
struct Game {
    _dir: tempfile::TempDir,
    path: PathBuf,
    have: PathBuf,
    history: History,
    memory: Vec<u8>,
}

fn game(frames: u64, have_at: u64) -> Game {
    let dir = tmpdir();
    let path = dir.path().join("game.rwd");
    let have = dir.path().join("have.rwd");
    let mut history =
        History::new(HistoryConfig::new(PAGE as u64).expect("cfg").seed(SEED)).expect("history");
    let mut w = ArchiveWriter::create(&path, &history, Durability::Manual).expect("create");
    w.set_global_names(vec![Some("frame".into()), None]);
    let mut memory = vec![0u8; PAGE * PAGES];
    let mut x = 1u64;
    for frame in 0..frames {
        // Frame 0 fills the first 200 pages; then one page of a hot set of 40 a
        // frame, and one of the rest every tenth frame.
        let slots: Vec<usize> = match frame {
            0 => (0..200).collect(),
            f if f % 10 == 0 => vec![(splitmix(f) % 40) as usize, 40 + (splitmix(!f) % 160) as usize],
            f => vec![(splitmix(f) % 40) as usize],
        };
        for slot in slots {
            for chunk in memory[slot * PAGE..(slot + 1) * PAGE].chunks_exact_mut(8) {
                x = splitmix(x);
                chunk.copy_from_slice(&x.to_le_bytes());
            }
        }
        if frame % 5 == 0 {
            let to = 100 + (frame as usize % 100);
            memory.copy_within(0..PAGE, to * PAGE);
        }
        let globals = [GlobalValue::I64(frame as i64), GlobalValue::I32(-(frame as i32))];
        let id = history
            .capture(frame, &memory, &globals, None, None)
            .expect("capture")
            .record;
        history
            .set_host_state(id, format!("clock={frame}").as_bytes())
            .expect("host state");
        w.append(&history).expect("append");
        if frame == have_at {
            w.sync().expect("sync");
            std::fs::copy(&path, &have).expect("copy");
        }
    }
    w.sync().expect("sync");
    Game {
        _dir: dir,
        path,
        have,
        history,
        memory,
    }
}

/// Every page hash any record of an archive names: what a receiver holding it has,
/// computed from page vectors, not from the object lookups `wanted` uses.
fn held(archive: &Archive) -> HashSet<PageHash> {
    let mut out = HashSet::new();
    for r in archive.records().expect("records") {
        out.extend(archive.pages(r.id).expect("pages"));
    }
    out
}

fn distinct(pages: &[PageHash]) -> HashSet<PageHash> {
    pages.iter().copied().filter(|h| !h.is_zero()).collect()
}

/// Re-seal a message's checksum after an edit of its payload.
fn reseal(bytes: &mut [u8]) {
    let sum = xxh3_64(&bytes[HEADER_LEN..]);
    bytes[24..32].copy_from_slice(&sum.to_le_bytes());
}

fn open(path: &Path) -> Archive {
    Archive::open(path).expect("open")
}

#[test]
fn a_late_joiner_at_900_receives_exactly_the_pages_it_lacks() {
    let g = game(1001, 900);
    let sender = open(&g.path);
    let have = open(&g.have);
    assert_eq!(
        have.head().map(|h| have.record(h).expect("head").iteration),
        Some(900)
    );

    let manifest = Manifest::from_bytes(
        &Manifest::from_archive(&sender, 1000)
            .expect("manifest")
            .to_bytes()
            .expect("encode"),
    )
    .expect("decode");
    let wanted = bundle::want_from_bytes(
        &bundle::want_to_bytes(&manifest.wanted(&have).expect("wanted")).expect("encode"),
    )
    .expect("decode");

    // Counted independently: the distinct pages of 1000 no record of the copy names.
    let at_1000 = sender.pages(sender.at(1000).expect("at").id).expect("pages");
    let all = distinct(&at_1000);
    let expected: HashSet<PageHash> = all.difference(&held(&have)).copied().collect();
    assert!(
        !expected.is_empty() && expected.len() < all.len() / 2,
        "{} of {}",
        expected.len(),
        all.len()
    );
    assert_eq!(wanted.iter().copied().collect::<HashSet<_>>(), expected);
    assert_eq!(wanted.len(), expected.len(), "each wanted once");

    let b = Bundle::build(&manifest, &wanted, &sender).expect("build");
    assert_eq!(b.page_count(), expected.len());
    assert_eq!(b.page_hashes().collect::<HashSet<_>>(), expected);
    let bytes = b.to_bytes().expect("encode");
    // Random pages do not compress: each costs a page plus a small record.
    let bound = HEADER_LEN + 64 + expected.len() * (PAGE + 64);
    assert!(
        bytes.len() <= bound,
        "{} bytes for {} pages (bound {bound})",
        bytes.len(),
        expected.len()
    );
    assert!(bytes.len() >= expected.len() * PAGE);

    let state = manifest
        .assemble(&Bundle::from_bytes(&bytes).expect("decode"), &have)
        .expect("assemble");
    assert_eq!(state.memory(), &g.memory[..]);
    assert_eq!(state.state_hash(), sender.state_hash(1000).expect("hash"));
    assert_eq!(
        state.globals(),
        &[GlobalValue::I64(1000), GlobalValue::I32(-1000)]
    );
    assert_eq!(state.host_state(), Some(&b"clock=1000"[..]));
    assert_eq!(state.manifest().global_names(), &[Some("frame".to_string())]);
    assert_eq!(
        (state.pages_from_bundle(), state.pages_from_local()),
        (expected.len(), all.len() - expected.len())
    );

    // Without the pages it holds the receiver cannot assemble.
    assert!(matches!(
        manifest.assemble(&b, &Nothing),
        Err(BundleError::MissingPage { hash, .. }) if !expected.contains(&hash)
    ));
    // One page short of the want list: a missing page, named.
    let short = Bundle::build(&manifest, &wanted[1..], &sender).expect("build");
    assert!(matches!(
        manifest.assemble(&short, &have),
        Err(BundleError::MissingPage { hash, .. }) if hash == wanted[0]
    ));
}

#[test]
fn with_nothing_the_bundle_holds_every_distinct_page_once() {
    let g = game(60, 10);
    let sender = open(&g.path);
    let manifest = Manifest::from_archive(&sender, 59).expect("manifest");
    let at_59 = sender.pages(sender.at(59).expect("at").id).expect("pages");
    let all = distinct(&at_59);
    assert!(all.len() < at_59.len(), "zero and repeated pages are not sent");
    let wanted = manifest.wanted(&Nothing).expect("wanted");
    assert_eq!(wanted.iter().copied().collect::<HashSet<_>>(), all);
    let b = Bundle::self_contained(&manifest, &wanted, &sender).expect("build");
    assert_eq!(b.page_count(), all.len());
    let back = Bundle::from_bytes(&b.to_bytes().expect("encode")).expect("decode");
    assert_eq!(back, b);
    let state = back.assemble(&Nothing).expect("assemble");
    assert_eq!(state.memory(), &g.memory[..]);
    assert_eq!(state.pages_from_local(), 0);
    // The state as a one-record history hashes as the sender's.
    let h = state.to_history().expect("history");
    assert_eq!(
        h.at(59).expect("at").state_hash(),
        sender.state_hash(59).expect("hash")
    );
    assert_eq!(h.host_state(h.at(59).expect("at").id()), Some(&b"clock=59"[..]));
}

#[test]
fn a_live_history_and_its_archive_give_the_same_manifest() {
    let g = game(30, 10);
    let sender = open(&g.path);
    let from_archive = Manifest::from_archive(&sender, 29).expect("archive");
    let from_history = Manifest::from_history(&g.history, 29)
        .expect("history")
        .with_global_names(vec![Some("frame".into())]);
    assert_eq!(from_archive, from_history);
    // A receiver's live store is a source too; the sender's live store builds the bundle.
    let have = open(&g.have).to_history().expect("load");
    let wanted = from_history.wanted(have.store()).expect("wanted");
    assert_eq!(wanted, from_archive.wanted(&open(&g.have)).expect("wanted"));
    let b = Bundle::build(&from_history, &wanted, g.history.store()).expect("build");
    let state = from_archive.assemble(&b, have.store()).expect("assemble");
    assert_eq!(state.memory(), &g.memory[..]);
}

/// A small self-contained bundle and its expected state, for the hostile-bytes tests.
fn small() -> (Vec<u8>, Vec<u8>, Manifest) {
    let mut h = History::new(HistoryConfig::new(1024).expect("cfg").seed(3)).expect("history");
    let mut memory = vec![0u8; 8 * 1024];
    for (i, b) in memory.iter_mut().enumerate().take(3 * 1024) {
        *b = (splitmix(i as u64) >> 7) as u8;
    }
    memory[5 * 1024..6 * 1024].fill(9); // compresses: an lz4 page
    let id = h
        .capture(4, &memory, &[GlobalValue::I32(7)], None, None)
        .expect("capture")
        .record;
    h.set_host_state(id, b"rng=1").expect("host");
    let m = Manifest::from_history(&h, 4)
        .expect("manifest")
        .with_global_names(vec![Some("g".into())]);
    let b = Bundle::self_contained(&m, &m.wanted(&Nothing).expect("wanted"), h.store()).expect("build");
    (b.to_bytes().expect("encode"), memory, m)
}

/// A message either fails to decode or to assemble with a typed error, or assembles
/// to exactly the original state: nothing wrong is ever accepted.
fn never_wrong(bytes: &[u8], memory: &[u8], m: &Manifest) -> Option<BundleError> {
    match Bundle::from_bytes(bytes).and_then(|b| b.assemble(&Nothing)) {
        Err(e) => Some(e),
        Ok(s) => {
            assert_eq!(s.memory(), memory);
            assert_eq!(s.state_hash(), m.state_hash());
            assert_eq!(s.globals(), m.globals());
            assert_eq!(s.host_state(), m.host_state());
            None
        }
    }
}

#[test]
fn a_bundle_truncated_at_every_length_is_an_error() {
    let (bytes, memory, m) = small();
    if let Some(e) = never_wrong(&bytes, &memory, &m) {
        panic!("the intact bundle fails: {e}");
    }
    for len in 0..bytes.len() {
        let e = Bundle::from_bytes(&bytes[..len]).expect_err("a truncated bundle decodes");
        if len < 8 {
            assert!(matches!(e, BundleError::BadMagic { .. }), "{len}: {e}");
        } else {
            assert!(matches!(e, BundleError::Truncated { .. }), "{len}: {e}");
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        Bundle::from_bytes(&longer),
        Err(BundleError::TrailingBytes { extra: 1 })
    ));
}

#[test]
fn every_flipped_byte_is_caught_by_the_frame_and_resealed_edits_never_assemble_wrong() {
    let (bytes, memory, m) = small();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        let e = never_wrong(&b, &memory, &m).unwrap_or_else(|| panic!("flip at {i} accepted"));
        if i >= HEADER_LEN {
            assert!(matches!(e, BundleError::ChecksumMismatch { .. }), "{i}: {e}");
        }
        // The same flip under a valid checksum: validation, field checks, page hashes
        // or the state hash catch it, or it touched bytes that do not matter (padding,
        // a global's name) and the state is still exactly right.
        if i >= HEADER_LEN {
            reseal(&mut b);
            never_wrong(&b, &memory, &m);
        }
    }
}

#[test]
fn each_failure_has_its_own_error() {
    let (bytes, _, m) = small();
    // Kinds: a bundle is not a manifest, a manifest not a bundle.
    assert!(matches!(
        Manifest::from_bytes(&bytes),
        Err(BundleError::WrongKind { found: 4, .. })
    ));
    let mbytes = m.to_bytes().expect("encode");
    assert!(matches!(
        Bundle::from_bytes(&mbytes),
        Err(BundleError::WrongKind { found: 1, .. })
    ));
    assert!(matches!(
        bundle::want_from_bytes(&mbytes),
        Err(BundleError::WrongKind { .. })
    ));
    assert_eq!(Manifest::from_bytes(&mbytes).expect("manifest"), m);
    let mut v2 = bytes.clone();
    v2[8] = 2;
    assert!(matches!(
        Bundle::from_bytes(&v2),
        Err(BundleError::UnsupportedVersion { found: 2 })
    ));
    assert!(matches!(
        Bundle::from_bytes(b"PK\x03\x04"),
        Err(BundleError::BadMagic { .. })
    ));

    // Another state hash everywhere it appears, re-sealed: the pages verify, the state
    // does not.
    let sh = *m.state_hash().as_bytes();
    let mut other = bytes.clone();
    let mut n = 0;
    for i in 0..other.len() - 16 {
        if other[i..i + 16] == sh {
            other[i] ^= 1;
            n += 1;
        }
    }
    assert_eq!(n, 2, "the manifest's and the bundle's");
    reseal(&mut other);
    assert!(matches!(
        Bundle::from_bytes(&other).expect("decodes").assemble(&Nothing),
        Err(BundleError::StateMismatch { .. })
    ));

    // A raw page's byte edited and re-sealed: that page's hash.
    let raw = m.pages()[0];
    let mut edited = bytes.clone();
    let mut content = vec![0u8; 1024];
    for (i, c) in content.iter_mut().enumerate() {
        *c = (splitmix(i as u64) >> 7) as u8;
    }
    let pos = (0..edited.len() - 1024)
        .find(|&i| edited[i..i + 1024] == content[..])
        .expect("the raw page is in the bundle");
    edited[pos + 100] ^= 0xff;
    reseal(&mut edited);
    assert!(matches!(
        Bundle::from_bytes(&edited).expect("decodes").assemble(&Nothing),
        Err(BundleError::PageHashMismatch { hash, .. }) if hash == raw
    ));

    // A bundle for another state, and one of another page size.
    let mut h = History::new(HistoryConfig::new(2048).expect("cfg").seed(3)).expect("history");
    h.capture(4, &[1u8; 8 * 1024], &[GlobalValue::I32(7)], None, None)
        .expect("capture");
    let m2 = Manifest::from_history(&h, 4).expect("manifest");
    let b2 = Bundle::build(&m2, &m2.wanted(&Nothing).expect("wanted"), h.store()).expect("build");
    assert!(matches!(
        m.assemble(&b2, &Nothing),
        Err(BundleError::PageSizeMismatch {
            manifest: 1024,
            bundle: 2048
        })
    ));
    let mut h3 = History::new(HistoryConfig::new(1024).expect("cfg").seed(3)).expect("history");
    h3.capture(4, &[1u8; 8 * 1024], &[GlobalValue::I32(7)], None, None)
        .expect("capture");
    let m3 = Manifest::from_history(&h3, 4).expect("manifest");
    let b3 = Bundle::build(&m3, &m3.wanted(&Nothing).expect("wanted"), h3.store()).expect("build");
    assert!(matches!(
        m.assemble(&b3, &Nothing),
        Err(BundleError::OtherState { .. })
    ));
    // The sender hands out only the pages of the state it described.
    assert!(matches!(
        Bundle::build(&m, &[m3.pages()[0]], &Nothing),
        Err(BundleError::NotInManifest { .. })
    ));
    // A pages-only bundle cannot be assembled without its manifest.
    let pages_only = Bundle::from_bytes(
        &Bundle::build(&m, &[], &Nothing)
            .expect("empty")
            .to_bytes()
            .expect("encode"),
    )
    .expect("decode");
    assert_eq!(pages_only.page_count(), 0);
    assert!(matches!(
        pages_only.assemble(&Nothing),
        Err(BundleError::WrongKind { .. })
    ));
}

#[test]
fn random_resealed_mutations_of_every_message_never_panic_or_assemble_wrong() {
    let (bytes, memory, m) = small();
    let messages = [
        bytes.clone(),
        m.to_bytes().expect("manifest"),
        bundle::want_to_bytes(&m.distinct_pages()).expect("want"),
    ];
    let mut x = 0xb0d1e5u64;
    let mut next = move |n: usize| {
        x = splitmix(x);
        (x % n as u64) as usize
    };
    for exec in 0..3000 {
        let mut b = messages[exec % 3].clone();
        // 1 to 8 random bytes of the payload set to random values, sometimes the
        // payload cut short (its length fixed in the header), then re-sealed.
        for _ in 0..1 + next(8) {
            let at = HEADER_LEN + next(b.len() - HEADER_LEN);
            b[at] = next(256) as u8;
        }
        if next(4) == 0 {
            b.truncate(HEADER_LEN + next(b.len() - HEADER_LEN));
            let len = (b.len() - HEADER_LEN) as u64;
            b[16..24].copy_from_slice(&len.to_le_bytes());
        }
        reseal(&mut b);
        never_wrong(&b, &memory, &m);
        if let Ok(got) = Manifest::from_bytes(&b) {
            // A manifest that decodes describes a state that assembles only if it is
            // the original (the state hash covers pages, length and globals).
            if let Ok(s) = Bundle::from_bytes(&bytes).and_then(|full| got.assemble(&full, &Nothing)) {
                assert_eq!(s.memory(), &memory[..]);
                assert_eq!(s.globals(), m.globals());
            }
            let _ = got.wanted(&Nothing);
        }
        let _ = bundle::want_from_bytes(&b);
    }
}
