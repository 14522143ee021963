//! Lazily read archives: bytes fetched on first touch from a `RangeSource` into a
//! sparse cache file, checked against the same archive opened from its file.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rewind_archive::format::Trailer;
use rewind_archive::{
    sidecar_path, Archive, ArchiveError, ArchiveWriter, Durability, LazyOptions, RangeSource, SourceError,
    LAZY_BLOCK,
};
use rewind_history::{History, HistoryConfig};
use rewind_snapshot::GlobalValue;

use crate::common::*;

/// An archive in memory that counts what is fetched from it, and can be told to
/// fail or to flip a byte.
struct Source {
    bytes: Vec<u8>,
    len: u64,
    fetches: Arc<AtomicU64>,
    fetched: Arc<AtomicU64>,
    fail: bool,
    /// Fail every fetch after this many.
    fail_after: Option<u64>,
    short: bool,
    flip: Option<u64>,
}

impl Source {
    fn new(bytes: &[u8], len: u64) -> Source {
        Source {
            bytes: bytes.to_vec(),
            len,
            fetches: Arc::default(),
            fetched: Arc::default(),
            fail: false,
            fail_after: None,
            short: false,
            flip: None,
        }
    }
}

impl RangeSource for Source {
    fn len(&self) -> u64 {
        self.len
    }

    fn fetch(&self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>, SourceError> {
        let n = self.fetches.fetch_add(1, Ordering::Relaxed);
        if self.fail || self.fail_after.is_some_and(|k| n >= k) {
            return Err("the network is down".into());
        }
        let mut out = Vec::new();
        for r in ranges {
            assert!(
                r.start < r.end && r.end <= self.len,
                "range {r:?} of {}",
                self.len
            );
            let mut b = self.bytes[r.start as usize..r.end as usize].to_vec();
            if let Some(f) = self.flip.filter(|f| r.contains(f)) {
                b[(f - r.start) as usize] ^= 0x40;
            }
            if self.short {
                b.pop();
            }
            self.fetched.fetch_add(b.len() as u64, Ordering::Relaxed);
            out.push(b);
        }
        Ok(out)
    }
}

/// An archive of `n` commits over 256 KiB of memory with a few incompressible pages
/// changed per frame, a host state and named globals: its bytes, the end of each
/// commit, and its history.
fn big(n: u64) -> (Vec<u8>, Vec<u64>, History) {
    let dir = tmpdir();
    let path = dir.path().join("big.rwd");
    let mut h = History::new(HistoryConfig::new(1024).expect("cfg").seed(5)).expect("history");
    let mut w = ArchiveWriter::create(&path, &h, Durability::Manual).expect("create");
    let mut mem = vec![0u8; 256 * 1024];
    let mut x = 1u64;
    let mut ends = Vec::new();
    for i in 0..n {
        for _ in 0..4 {
            x = splitmix(x);
            let page = (x % 256) as usize * 1024;
            for k in 0..128 {
                x = splitmix(x);
                mem[page + k * 8..page + k * 8 + 8].copy_from_slice(&x.to_le_bytes());
            }
        }
        h.capture(
            i,
            &mem,
            &[GlobalValue::I64(i as i64)],
            None,
            Some(&i.to_le_bytes()),
        )
        .expect("capture");
        let id = h.head().expect("head").id();
        h.set_host_state(id, &i.to_be_bytes()).expect("host state");
        w.append(&h).expect("append");
        ends.push(std::fs::metadata(&path).expect("meta").len());
    }
    (std::fs::read(&path).expect("read"), ends, h)
}

fn opts(generation: &str) -> LazyOptions {
    LazyOptions {
        generation: generation.into(),
        ..LazyOptions::default()
    }
}

#[test]
fn a_lazy_open_is_one_fetch_and_reads_what_the_file_holds() {
    let (bytes, _, h) = big(300);
    assert!(bytes.len() as u64 > 20 * LAZY_BLOCK, "{} bytes", bytes.len());
    let dir = tmpdir();
    let cache = dir.path().join("c");
    let src = Source::new(&bytes, bytes.len() as u64);
    let (fetches, fetched) = (src.fetches.clone(), src.fetched.clone());
    let a = Archive::open_lazy(&cache, Box::new(src), &opts("g1")).expect("open lazy");
    assert_eq!(fetches.load(Ordering::Relaxed), 1);
    let open_bytes = fetched.load(Ordering::Relaxed);
    assert!(
        open_bytes <= LAZY_BLOCK + (256 << 10) + LAZY_BLOCK,
        "{open_bytes}"
    );
    // An old frame: its state hash, memory and page vector, as the file says.
    let file = Archive::from_bytes(&bytes).expect("file");
    assert_eq!(a.state_hash(7).expect("hash"), file.state_hash(7).expect("hash"));
    let id = a.at(7).expect("at").id;
    let mut m1 = vec![0u8; 256 * 1024];
    let mut m2 = m1.clone();
    a.read_record(id, 0, &mut m1).expect("read");
    file.read_record(id, 0, &mut m2).expect("read");
    assert_eq!(m1, m2);
    assert_eq!(m1, memory_of(&h, id));
    let st = a.lazy_stats().expect("lazy");
    // The frame's pages were written all over the file; still, most blocks stay away.
    assert!(
        st.bytes_fetched < bytes.len() as u64 / 2,
        "{st:?} of {}",
        bytes.len()
    );
    // Everything else agrees too; verify reads it all.
    check_same(&h, &a);
    assert_eq!(a.verify().expect("verify"), file.verify().expect("verify"));
    assert_eq!(a.committed_bytes(), &bytes[..]);
}

#[test]
fn the_commit_chain_walk_reads_ahead() {
    let (bytes, _, h) = big(400);
    let dir = tmpdir();
    let src = Source::new(&bytes, bytes.len() as u64);
    let fetches = src.fetches.clone();
    let a = Archive::open_lazy(&dir.path().join("c"), Box::new(src), &opts("g")).expect("open");
    let id = h.records().next().expect("a record").id();
    // The first host state lookup walks every commit's trailer, newest first.
    assert_eq!(a.host_state(id).expect("host"), Some(&0u64.to_be_bytes()[..]));
    let n = fetches.load(Ordering::Relaxed);
    let blocks = (bytes.len() as u64).div_ceil(LAZY_BLOCK);
    assert!(n <= 12, "{n} fetches for a walk over {blocks} blocks");
}

#[test]
fn a_second_reader_reuses_the_cache_and_refetches_a_damaged_block() {
    let (bytes, _, _) = big(200);
    let dir = tmpdir();
    let cache = dir.path().join("c");
    let hash = {
        let a = Archive::open_lazy(
            &cache,
            Box::new(Source::new(&bytes, bytes.len() as u64)),
            &opts("g"),
        )
        .expect("open");
        a.state_hash(3).expect("hash")
    };
    let src = Source::new(&bytes, bytes.len() as u64);
    let fetches = src.fetches.clone();
    let a = Archive::open_lazy(&cache, Box::new(src), &opts("g")).expect("reopen");
    assert_eq!(a.state_hash(3).expect("hash"), hash);
    assert_eq!(fetches.load(Ordering::Relaxed), 0, "{:?}", a.lazy_stats());
    assert!(a.lazy_stats().expect("lazy").blocks_reused > 0);
    drop(a);
    // Damage the cache file's first block: it is fetched again, not reported.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&cache)
        .expect("cache");
    std::os::unix::fs::FileExt::write_all_at(&f, b"garbage!", 8).expect("damage");
    let src = Source::new(&bytes, bytes.len() as u64);
    let fetches = src.fetches.clone();
    let a = Archive::open_lazy(&cache, Box::new(src), &opts("g")).expect("reopen damaged");
    assert_eq!(a.state_hash(3).expect("hash"), hash);
    assert_eq!(fetches.load(Ordering::Relaxed), 1);
    assert_eq!(a.lazy_stats().expect("lazy").blocks_refetched, 1);
    // A torn sidecar entry costs a refetch too.
    drop(a);
    let side = std::fs::OpenOptions::new()
        .write(true)
        .open(sidecar_path(&cache))
        .expect("sidecar");
    std::os::unix::fs::FileExt::write_all_at(&side, &[0xff; 16], 64).expect("tear");
    let a = Archive::open_lazy(
        &cache,
        Box::new(Source::new(&bytes, bytes.len() as u64)),
        &opts("g"),
    )
    .expect("reopen torn");
    assert_eq!(a.state_hash(3).expect("hash"), hash);
}

#[test]
fn an_appended_archive_keeps_the_old_blocks_and_a_new_generation_drops_them() {
    let (bytes, ends, h) = big(300);
    let dir = tmpdir();
    let cache = dir.path().join("c");
    let old = ends[199];
    {
        let a = Archive::open_lazy(&cache, Box::new(Source::new(&bytes, old)), &opts("g")).expect("old");
        assert_eq!(a.head().map(|r| r.0), Some(199));
        a.verify().expect("verify reads everything");
    }
    let src = Source::new(&bytes, bytes.len() as u64);
    let fetched = src.fetched.clone();
    let a = Archive::open_lazy(&cache, Box::new(src), &opts("g")).expect("grown");
    check_same(&h, &a);
    let reused = a.lazy_stats().expect("lazy").blocks_reused;
    assert_eq!(reused, old / LAZY_BLOCK, "every whole block of the old length");
    assert!(fetched.load(Ordering::Relaxed) <= bytes.len() as u64 - (old / LAZY_BLOCK) * LAZY_BLOCK);
    drop(a);
    // Another generation: nothing is reused.
    let a = Archive::open_lazy(
        &cache,
        Box::new(Source::new(&bytes, bytes.len() as u64)),
        &opts("other"),
    )
    .expect("other generation");
    a.state_hash(0).expect("hash");
    assert_eq!(a.lazy_stats().expect("lazy").blocks_reused, 0);
}

#[test]
fn a_failing_or_lying_source_is_a_clear_error() {
    let (bytes, _, _) = big(100);
    let dir = tmpdir();
    let mut src = Source::new(&bytes, bytes.len() as u64);
    src.fail = true;
    let e = Archive::open_lazy(&dir.path().join("a"), Box::new(src), &opts("g")).expect_err("no network");
    assert!(matches!(e, ArchiveError::Fetch { .. }), "{e}");
    assert!(e.to_string().contains("network is down"), "{e}");
    // A flipped byte in an old segment: the query that touches it fails its checksum.
    let mut src = Source::new(&bytes, bytes.len() as u64);
    src.flip = Some(200);
    let a = Archive::open_lazy(&dir.path().join("b"), Box::new(src), &opts("g")).expect("open");
    assert!(a.verify().is_err());
    // A source that returns fewer bytes than asked for.
    let mut src = Source::new(&bytes, bytes.len() as u64);
    src.short = true;
    let e = Archive::open_lazy(&dir.path().join("c"), Box::new(src), &opts("g")).expect_err("short");
    assert!(matches!(e, ArchiveError::Fetch { .. }), "{e}");
    // A source longer than the archive's last commit (a length that is no commit
    // boundary): open finds the damage rather than reading past it.
    let src = Source::new(&bytes[..bytes.len() - 10], bytes.len() as u64 - 10);
    let e = Archive::open_lazy(&dir.path().join("d"), Box::new(src), &opts("g"));
    assert!(matches!(&e, Ok(a) if a.torn_tail().is_some()), "{e:?}");
}

#[test]
fn two_live_readers_of_one_cache_do_not_share_it() {
    let (bytes, _, h) = big(50);
    let dir = tmpdir();
    let cache = dir.path().join("c");
    let a = Archive::open_lazy(
        &cache,
        Box::new(Source::new(&bytes, bytes.len() as u64)),
        &opts("g"),
    )
    .expect("a");
    let b = Archive::open_lazy(
        &cache,
        Box::new(Source::new(&bytes, bytes.len() as u64)),
        &opts("g"),
    )
    .expect("b");
    check_same(&h, &a);
    check_same(&h, &b);
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    assert_eq!(left.len(), 2, "the cache file and its sidecar only");
}

#[test]
fn a_source_failing_during_open_is_a_fetch_error_never_a_damaged_tail() {
    let (bytes, ends, _) = big(100);
    // A commit whose root segment starts in an earlier block than its trailer, so
    // that checking the commit needs a fetch of its own.
    let end = ends
        .iter()
        .copied()
        .find(|&e| {
            let t = Trailer::decode(&bytes, e - 64, 5).expect("trailer");
            t.root / LAZY_BLOCK < (e - 64) / LAZY_BLOCK
        })
        .expect("a root segment across a block boundary");
    let dir = tmpdir();
    // No tail at open: the header, then the trailer's block, then the root's.
    let tiny = LazyOptions {
        generation: "g".into(),
        tail: 0,
        ..LazyOptions::default()
    };
    for k in 1..5 {
        let mut src = Source::new(&bytes, end);
        src.fail_after = Some(k);
        match Archive::open_lazy(&dir.path().join(format!("c{k}")), Box::new(src), &tiny) {
            Ok(a) => assert_eq!(a.committed_end(), end),
            Err(e) => assert!(matches!(e, ArchiveError::Fetch { .. }), "after {k} fetches: {e}"),
        }
    }
}
