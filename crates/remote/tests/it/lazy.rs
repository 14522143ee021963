//! Reading a remote archive in place: requests and bytes at open and per query, the
//! cache reused across readers, damaged parts, and the cache's byte budget. Against
//! an in-memory store wrapped to count requests.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{
    GetOptions, GetResult, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, PutResult, Result,
};
use rewind_archive::{Archive, ArchiveError, ArchiveWriter, Durability};
use rewind_history::{History, HistoryConfig};
use rewind_remote::{evict, PushOptions, Remote, RemoteError};
use rewind_snapshot::GlobalValue;

use crate::URL;

/// Counts GETs (whole or ranged) and passes everything to `inner`.
#[derive(Debug)]
pub(crate) struct Counting {
    inner: Arc<dyn ObjectStore>,
    gets: AtomicU64,
}

crate::stores::wrapper_store!(Counting {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn get_opts(&self, location: &StorePath, options: GetOptions) -> Result<GetResult> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get_opts(location, options).await
    }
});

/// Record `n` frames over 1 MiB of memory, four incompressible pages rewritten per
/// frame, into `path`; returns the history.
pub(crate) fn record(path: &Path, n: u64, from: Option<History>) -> History {
    let mut h = from
        .unwrap_or_else(|| History::new(HistoryConfig::new(1024).expect("cfg").seed(21)).expect("history"));
    let mut w = if path.exists() {
        ArchiveWriter::open(path, Durability::Manual).expect("open writer")
    } else {
        ArchiveWriter::create(path, &h, Durability::Manual).expect("create")
    };
    let start = h.head().map_or(0, |r| r.iteration() + 1);
    let mut mem = vec![0u8; 1 << 20];
    if let Some(r) = h.head() {
        rewind_snapshot::read(h.store(), r.snapshot(), 0, &mut mem).expect("memory");
    }
    let mut x = start.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for f in start..start + n {
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let page = (x % 1024) as usize * 1024;
            for k in 0..128 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                mem[page + k * 8..page + k * 8 + 8].copy_from_slice(&x.to_le_bytes());
            }
        }
        h.capture(f, &mem, &[GlobalValue::I64(f as i64)], None, None)
            .expect("capture");
        w.append(&h).expect("append");
    }
    w.sync().expect("sync");
    h
}

struct Setup {
    _dir: tempfile::TempDir,
    local: std::path::PathBuf,
    cache: std::path::PathBuf,
    store: Arc<InMemory>,
    counting: Arc<Counting>,
    remote: Arc<Remote>,
    history: History,
}

fn setup(frames: u64) -> Setup {
    let dir = tempfile::tempdir().expect("tmp");
    let local = dir.path().join("a.rwd");
    let history = record(&local, frames, None);
    let store = Arc::new(InMemory::new());
    let counting = Arc::new(Counting {
        inner: store.clone(),
        gets: AtomicU64::new(0),
    });
    // Parts of 1 MiB: ranges cross part boundaries.
    let remote = Arc::new(
        Remote::with_store(counting.clone(), URL)
            .expect("remote")
            .part_size(1 << 20),
    );
    remote.push(&local, PushOptions::default()).expect("push");
    let cache = dir.path().join("cache");
    Setup {
        _dir: dir,
        local,
        cache,
        store,
        counting,
        remote,
        history,
    }
}

fn fresh(s: &Setup) -> Arc<Remote> {
    Arc::new(
        Remote::with_store(s.counting.clone(), URL)
            .expect("remote")
            .part_size(1 << 20),
    )
}

#[test]
fn opening_a_large_remote_archive_takes_three_requests_and_a_small_part_of_its_bytes() {
    let s = setup(1000);
    let file_len = std::fs::metadata(&s.local).expect("stat").len();
    assert!(file_len > 4 << 20, "{file_len}");
    let remote = fresh(&s);
    let gets = s.counting.gets.load(Ordering::Relaxed);
    let a = remote.open_archive(&s.cache).expect("open");
    let r = remote.report();
    assert!(r.requests <= 3, "{r:?}");
    assert_eq!(s.counting.gets.load(Ordering::Relaxed) - gets, r.requests);
    assert!(r.bytes_fetched < 512 << 10, "{r:?} of {file_len}");
    // An old frame reads as it does from the file.
    let file = Archive::open(&s.local).expect("file");
    assert_eq!(
        a.state_hash(10).expect("hash"),
        file.state_hash(10).expect("hash")
    );
    let (mut m1, mut m2) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    a.read(10, 0, &mut m1).expect("read");
    file.read(10, 0, &mut m2).expect("read");
    assert!(m1 == m2);
    let old = s.history.at(10).expect("frame 10");
    assert_eq!(a.state_hash(10).expect("hash"), old.state_hash());
    let r = remote.report();
    assert!(r.bytes_fetched < file_len / 2, "{r:?} of {file_len}");
    // Everything reads the same; the walk over every segment fetches it all once.
    a.verify().expect("verify");
    assert_eq!(a.committed_bytes(), &std::fs::read(&s.local).expect("read")[..]);
    let r = remote.report();
    assert!(r.bytes_fetched <= file_len + (1 << 20), "{r:?}");
    assert!(r.requests < 64, "{r:?}");
}

#[test]
fn a_second_reader_reuses_the_cache_and_appended_commits_keep_it() {
    let s = setup(300);
    let hash = {
        let a = fresh(&s).open_archive(&s.cache).expect("open");
        a.state_hash(5).expect("hash")
    };
    let remote = fresh(&s);
    let a = remote.open_archive(&s.cache).expect("reopen");
    assert_eq!(a.state_hash(5).expect("hash"), hash);
    assert_eq!(remote.report().requests, 1, "the head only: {:?}", a.lazy_stats());
    drop(a);
    // Appended commits: the old blocks stay; only new ones are fetched.
    let history = record(
        &s.local,
        100,
        Some(Archive::open(&s.local).expect("open").to_history().expect("load")),
    );
    s.remote
        .push(&s.local, PushOptions::default())
        .expect("push more");
    let remote = fresh(&s);
    let a = remote.open_archive(&s.cache).expect("open grown");
    assert_eq!(a.head().map(|r| r.0), Some(399));
    assert_eq!(a.state_hash(5).expect("hash"), hash);
    assert_eq!(
        a.state_hash(350).expect("hash"),
        history.at(350).expect("350").state_hash()
    );
    let st = a.lazy_stats().expect("lazy");
    assert!(st.blocks_reused > 0, "{st:?}");
}

#[test]
fn a_truncated_or_corrupt_part_is_a_clear_error() {
    let s = setup(300);
    let head = s.remote.head().expect("head").expect("a head");
    assert!(head.parts.len() >= 2, "{head:?}");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    let first = s.remote.part_key(&head.generation, &head.parts[0]);
    let bytes = rt
        .block_on(async { s.store.get(&first).await?.bytes().await })
        .expect("part");
    // A flipped byte in the first part: the segment it falls in fails its checksum.
    let mut flipped = bytes.to_vec();
    flipped[300] ^= 1;
    rt.block_on(s.store.put(&first, PutPayload::from(flipped)))
        .expect("put");
    let a = fresh(&s).open_archive(&s.cache).expect("the tail is intact");
    let e = a.verify().expect_err("a damaged segment");
    assert!(
        matches!(
            e,
            ArchiveError::ChecksumMismatch { .. } | ArchiveError::BadSegment { .. }
        ),
        "{e}"
    );
    drop(a);
    // Cut in half: reading past its end names the part.
    rt.block_on(
        s.store
            .put(&first, PutPayload::from(bytes.slice(..bytes.len() / 2))),
    )
    .expect("put");
    let a = fresh(&s)
        .open_archive(&s.dir_cache("short"))
        .expect("the tail is intact");
    let e = a.verify().expect_err("a short part");
    let ArchiveError::Fetch { source, .. } = &e else {
        panic!("{e}")
    };
    let inner = source.downcast_ref::<RemoteError>().expect("a remote error");
    assert!(matches!(inner, RemoteError::DamagedPart { .. }), "{inner}");
    // The last part truncated: open itself fails, clearly.
    let last = s
        .remote
        .part_key(&head.generation, head.parts.last().expect("parts"));
    rt.block_on(s.store.put(&last, PutPayload::from(vec![0u8; 10])))
        .expect("put");
    let e = fresh(&s)
        .open_archive(&s.dir_cache("other"))
        .expect_err("truncated tail");
    assert!(matches!(e, RemoteError::Read { .. }), "{e}");
    assert!(
        format!("{:?}", rewind::error_chain(&e)).contains("DamagedPart")
            || rewind::error_chain(&e).contains("damaged"),
        "{}",
        rewind::error_chain(&e)
    );
}

impl Setup {
    fn dir_cache(&self, name: &str) -> std::path::PathBuf {
        self.cache.with_file_name(name)
    }
}

#[test]
fn the_cache_stays_within_its_budget_and_keeps_live_readers() {
    let s = setup(300);
    let dir = tempfile::tempdir().expect("cache dir");
    // Three archives' caches, each read in full.
    for name in ["x", "y", "z"] {
        let a = fresh(&s).open_archive(&dir.path().join(name)).expect("open");
        a.verify().expect("read everything");
    }
    let live = fresh(&s)
        .open_archive(&dir.path().join("x"))
        .expect("a live reader");
    let one = std::fs::metadata(&s.local).expect("stat").len();
    let budget = one + one / 2;
    let ev = evict(dir.path(), &dir.path().join("new"), budget).expect("evict");
    assert!(ev.before > 2 * one, "{ev:?}");
    assert!(ev.after <= budget, "{ev:?}");
    assert_eq!(ev.removed, 2, "{ev:?}");
    assert!(dir.path().join("x").exists(), "the live reader's file stays");
    assert!(live.verify().is_ok());
    // A budget below the live file: it is kept, and said to be busy.
    let ev = evict(dir.path(), &dir.path().join("new"), 0).expect("evict");
    assert_eq!(ev.busy, 1, "{ev:?}");
    drop(live);
    let ev = evict(dir.path(), &dir.path().join("new"), 0).expect("evict");
    assert_eq!(ev.after, 0, "{ev:?}");
}

#[test]
fn a_damaged_cache_block_is_fetched_again() {
    let s = setup(200);
    let hash = fresh(&s)
        .open_archive(&s.cache)
        .expect("open")
        .state_hash(150)
        .expect("hash");
    let len = std::fs::metadata(&s.cache).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&s.cache)
        .expect("cache");
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x55; 100], len - 200).expect("damage");
    let remote = fresh(&s);
    let a = remote.open_archive(&s.cache).expect("reopen");
    assert_eq!(a.state_hash(150).expect("hash"), hash);
    assert_eq!(a.lazy_stats().expect("lazy").blocks_refetched, 1);
    assert_eq!(remote.report().requests, 2, "the head and the damaged block");
}
