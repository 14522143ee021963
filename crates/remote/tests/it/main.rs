//! Integration tests of push, pull and the remote layout: against an in-memory store
//! (with wrappers that fail or race requests) and against a real Garage server
//! (`garage.rs`).

mod faults;
mod garage;
mod lazy;
mod proxy;
mod prune;
mod stores;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_history::{History, HistoryConfig};
use rewind_remote::{PullOptions, PushOptions, Remote, RemoteError};
use rewind_snapshot::GlobalValue;

pub(crate) const URL: &str = "s3://bucket/games/match.rwd";
const PAGE: usize = 1024;
const MEM: usize = 64 * PAGE;

/// A history being recorded into a local archive, frame by frame.
pub(crate) struct Recording {
    pub(crate) path: PathBuf,
    history: History,
    writer: ArchiveWriter,
    memory: Vec<u8>,
    frame: u64,
    salt: u8,
}

impl Recording {
    pub(crate) fn new(path: &Path, seed: u64) -> Recording {
        let history =
            History::new(HistoryConfig::new(PAGE as u64).expect("page size").seed(seed)).expect("history");
        let writer = ArchiveWriter::create(path, &history, Durability::Manual).expect("create archive");
        Recording {
            path: path.to_path_buf(),
            history,
            writer,
            memory: vec![0u8; MEM],
            frame: 0,
            salt: 0,
        }
    }

    /// Go on recording into an existing archive, writing other values (`salt`).
    pub(crate) fn open(path: &Path, salt: u8) -> Recording {
        let archive = Archive::open(path).expect("open");
        let history = archive.to_history().expect("load");
        let head = archive.head().expect("a head record");
        let info = archive.record(head).expect("head record");
        let mut memory = vec![0u8; info.memory_len as usize];
        archive.read_record(head, 0, &mut memory).expect("read memory");
        drop(archive);
        let writer = ArchiveWriter::open(path, Durability::Manual).expect("open writer");
        Recording {
            path: path.to_path_buf(),
            history,
            writer,
            memory,
            frame: info.iteration + 1,
            salt,
        }
    }

    /// Capture and append `n` frames, each writing a few bytes.
    pub(crate) fn frames(&mut self, n: u64) {
        for _ in 0..n {
            let f = self.frame;
            for k in 0..3u64 {
                let at = ((f * 7919 + k * 104_729) as usize) % MEM;
                self.memory[at] = (f as u8).wrapping_add(k as u8 + 1) ^ self.salt;
            }
            self.history
                .capture(f, &self.memory, &[GlobalValue::I64(f as i64)], None, None)
                .expect("capture");
            self.writer.append(&self.history).expect("append");
            self.frame += 1;
        }
        self.writer.sync().expect("sync");
    }

    pub(crate) fn len(&self) -> u64 {
        std::fs::metadata(&self.path).expect("stat").len()
    }
}

/// The two files are byte-identical archives with the same records and state hashes.
pub(crate) fn assert_same_archive(a: &Path, b: &Path) {
    let (ba, bb) = (
        std::fs::read(a).expect("read a"),
        std::fs::read(b).expect("read b"),
    );
    assert!(
        ba == bb,
        "{} and {} differ ({} vs {} bytes)",
        a.display(),
        b.display(),
        ba.len(),
        bb.len()
    );
    let (aa, ab) = (
        Archive::open(a).expect("open a"),
        Archive::open(b).expect("open b"),
    );
    let (ra, rb) = (aa.records().expect("records a"), ab.records().expect("records b"));
    assert!(!ra.is_empty());
    assert_eq!(ra, rb);
    for r in &ra {
        assert_eq!(aa.record(r.id).expect("a").state_hash, r.state_hash);
        assert_eq!(ab.record(r.id).expect("b").state_hash, r.state_hash);
    }
    ab.verify().expect("the pulled archive verifies");
}

pub(crate) fn memory_remote(store: Arc<dyn ObjectStore>) -> Remote {
    Remote::with_store(store, URL).expect("remote").part_size(4096)
}

fn parts_of(bytes: u64, part: u64) -> u64 {
    bytes.div_ceil(part)
}

#[test]
fn push_then_pull_round_trips_byte_identical() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 11);
    rec.frames(50);
    let store = Arc::new(InMemory::new());
    let remote = memory_remote(store);
    let pushed = remote.push(&rec.path, PushOptions::default()).expect("push");
    assert!(pushed.new_generation);
    assert_eq!(pushed.data_bytes_sent, rec.len());
    assert_eq!(pushed.parts_sent, parts_of(rec.len(), 4096));
    // head GET (missing), LIST, one PUT per part, HEAD check, head PUT
    assert_eq!(pushed.requests, 1 + 1 + pushed.parts_sent + 1 + 1);
    let copy = dir.path().join("b.rwd");
    let pulled = remote.pull(&copy, PullOptions::default()).expect("pull");
    assert_eq!(pulled.data_bytes_fetched, rec.len());
    assert_eq!(pulled.requests, 1 + pulled.parts_fetched);
    assert_same_archive(&rec.path, &copy);
    // Both sides up to date: one request each, nothing moved.
    let again = remote
        .push(&rec.path, PushOptions::default())
        .expect("push again");
    assert!(again.up_to_date);
    assert_eq!((again.requests, again.bytes_sent), (1, 0));
    let again = remote.pull(&copy, PullOptions::default()).expect("pull again");
    assert!(again.up_to_date);
    assert_eq!((again.requests, again.data_bytes_fetched), (1, 0));
}

#[test]
fn push_after_100_more_frames_sends_only_the_new_bytes() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 12);
    rec.frames(200);
    let remote = memory_remote(Arc::new(InMemory::new()));
    remote
        .push(&rec.path, PushOptions::default())
        .expect("first push");
    let before = rec.len();
    rec.frames(100);
    let grown = rec.len() - before;
    let r = remote
        .push(&rec.path, PushOptions::default())
        .expect("second push");
    assert!(!r.new_generation && !r.up_to_date);
    assert_eq!(r.data_bytes_sent, grown, "only the appended commits are uploaded");
    assert_eq!(r.parts_sent, parts_of(grown, 4096));
    let head = remote.head().expect("head").expect("a head");
    assert_eq!(
        r.bytes_sent - r.data_bytes_sent,
        serde_json::to_vec_pretty(&head).expect("json").len() as u64
    );
    assert_eq!(head.len, rec.len());
    let copy = dir.path().join("b.rwd");
    remote.pull(&copy, PullOptions::default()).expect("pull");
    assert_same_archive(&rec.path, &copy);
}

#[test]
fn pull_after_the_remote_grew_fetches_only_the_suffix() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 13);
    rec.frames(100);
    let remote = memory_remote(Arc::new(InMemory::new()));
    remote.push(&rec.path, PushOptions::default()).expect("push");
    let copy = dir.path().join("b.rwd");
    remote.pull(&copy, PullOptions::default()).expect("first pull");
    let before = rec.len();
    rec.frames(100);
    let pushed = remote.push(&rec.path, PushOptions::default()).expect("push more");
    let r = remote.pull(&copy, PullOptions::default()).expect("second pull");
    assert_eq!(r.data_bytes_fetched, rec.len() - before);
    assert_eq!(r.parts_fetched, pushed.parts_sent);
    assert_eq!(
        r.requests,
        1 + r.parts_fetched,
        "the head, then one GET per missing part"
    );
    assert_same_archive(&rec.path, &copy);
}

#[test]
fn a_second_writer_that_lacks_the_remote_head_is_refused_and_the_remote_stays_readable() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Recording::new(&dir.path().join("a.rwd"), 14);
    a.frames(20);
    let remote = memory_remote(Arc::new(InMemory::new()));
    remote.push(&a.path, PushOptions::default()).expect("a pushes");
    // b is another history recorded elsewhere (another seed).
    let mut b = Recording::new(&dir.path().join("b.rwd"), 99);
    b.frames(30);
    let err = remote
        .push(&b.path, PushOptions::default())
        .expect_err("b is refused");
    assert!(matches!(err, RemoteError::Diverged { .. }), "{err}");
    assert!(err.to_string().contains("different histories"), "{err}");
    // A copy of a's archive that fell behind (a pushed more since) is refused too.
    let behind = dir.path().join("behind.rwd");
    remote.pull(&behind, PullOptions::default()).expect("pull");
    a.frames(5);
    remote
        .push(&a.path, PushOptions::default())
        .expect("a pushes more");
    std::fs::copy(&behind, dir.path().join("c.rwd")).expect("copy");
    let err = remote
        .push(&dir.path().join("c.rwd"), PushOptions::default())
        .expect_err("a stale copy is refused");
    assert!(matches!(err, RemoteError::Diverged { .. }), "{err}");
    let check = dir.path().join("check.rwd");
    remote
        .pull(&check, PullOptions::default())
        .expect("the remote is readable");
    assert_same_archive(&a.path, &check);
    // force replaces the remote with b.
    let r = remote.push(&b.path, PushOptions { force: true }).expect("forced");
    assert!(r.new_generation);
    let check_b = dir.path().join("check-b.rwd");
    remote.pull(&check_b, PullOptions::default()).expect("pull b");
    assert_same_archive(&b.path, &check_b);
}

#[test]
fn a_writer_whose_head_went_stale_during_its_push_gets_a_conflict() {
    for race in [stores::Race::BeforeCheck, stores::Race::BeforePut] {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = Recording::new(&dir.path().join("a.rwd"), 15);
        a.frames(20);
        let inner = Arc::new(InMemory::new());
        memory_remote(inner.clone())
            .push(&a.path, PushOptions::default())
            .expect("first push");
        // Two copies of the history append different frames: both extend the remote.
        let b_path = dir.path().join("b.rwd");
        std::fs::copy(&a.path, &b_path).expect("copy");
        a.frames(10);
        let mut b = Recording::open(&b_path, 0x55);
        b.frames(10);
        drop(b);
        // b's push is raced by a's, which lands after b read the head.
        let a_path = a.path.clone();
        let racer_store = inner.clone();
        let racer = Box::new(move || {
            memory_remote(racer_store)
                .push(&a_path, PushOptions::default())
                .expect("a's push lands");
        });
        let b_store = Arc::new(stores::Racing::new(inner.clone(), race, racer));
        let err = memory_remote(b_store)
            .push(&b_path, PushOptions::default())
            .expect_err("b's head is stale");
        assert!(matches!(err, RemoteError::Conflict { .. }), "{race:?}: {err}");
        assert!(err.to_string().contains("another writer"), "{err}");
        let check = dir.path().join("check.rwd");
        memory_remote(inner.clone())
            .pull(&check, PullOptions::default())
            .expect("the remote is readable");
        assert_same_archive(&a.path, &check);
        // b now sees a's head, which it lacks: refused, not merged.
        let err = memory_remote(inner)
            .push(&b_path, PushOptions::default())
            .expect_err("b diverged");
        assert!(matches!(err, RemoteError::Diverged { .. }), "{err}");
    }
}

#[test]
fn a_push_killed_after_some_parts_resumes_and_uploads_only_the_rest() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 16);
    rec.frames(150);
    let inner = Arc::new(InMemory::new());
    let total = parts_of(rec.len(), 4096);
    assert!(total > 4, "the test needs several parts, has {total}");
    let failing = Arc::new(stores::FailAfter::new(inner.clone(), 3));
    let err = memory_remote(failing)
        .push(&rec.path, PushOptions::default())
        .expect_err("the store fails");
    assert!(matches!(err, RemoteError::Store { op: "put", .. }), "{err}");
    let remote = memory_remote(inner);
    assert_eq!(remote.head().expect("head"), None, "nothing was published");
    let r = remote
        .push(&rec.path, PushOptions::default())
        .expect("resumed push");
    assert_eq!(r.parts_resumed, 3);
    assert_eq!(r.parts_sent, total - 3);
    assert_eq!(r.data_bytes_sent, rec.len() - 3 * 4096);
    let copy = dir.path().join("b.rwd");
    remote.pull(&copy, PullOptions::default()).expect("pull");
    assert_same_archive(&rec.path, &copy);
}

#[test]
fn a_pull_killed_after_some_parts_leaves_the_target_untouched_and_resumes() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 17);
    rec.frames(150);
    let inner = Arc::new(InMemory::new());
    memory_remote(inner.clone())
        .push(&rec.path, PushOptions::default())
        .expect("push");
    let copy = dir.path().join("b.rwd");
    let failing = Arc::new(stores::FailAfter::new(inner.clone(), 3));
    let err = memory_remote(failing)
        .pull(&copy, PullOptions::default())
        .expect_err("the store fails");
    assert!(matches!(err, RemoteError::Store { op: "get", .. }), "{err}");
    assert!(!copy.exists(), "the target appears only when complete");
    let r = memory_remote(inner)
        .pull(&copy, PullOptions::default())
        .expect("resumed pull");
    assert_eq!(r.parts_resumed, 3);
    assert_eq!(r.parts_fetched, parts_of(rec.len(), 4096) - 3);
    assert_same_archive(&rec.path, &copy);
}

#[test]
fn a_truncated_part_fails_the_pull_and_leaves_the_local_file_untouched() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 18);
    rec.frames(60);
    let store = Arc::new(InMemory::new());
    let remote = memory_remote(store.clone());
    remote.push(&rec.path, PushOptions::default()).expect("push");
    let copy = dir.path().join("b.rwd");
    remote.pull(&copy, PullOptions::default()).expect("pull");
    let held = std::fs::read(&copy).expect("read copy");
    rec.frames(60);
    remote.push(&rec.path, PushOptions::default()).expect("push more");
    let head = remote.head().expect("head").expect("a head");
    let last = head.parts.last().expect("parts");
    let key = remote.part_key(&head.generation, last);
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    rt.block_on(async {
        let bytes = store.get(&key).await?.bytes().await?;
        store
            .put(&key, PutPayload::from(bytes.slice(..bytes.len() / 2)))
            .await
    })
    .expect("truncate the part");
    let err = remote.pull(&copy, PullOptions::default()).expect_err("damaged");
    assert!(matches!(err, RemoteError::DamagedPart { .. }), "{err}");
    assert!(err.to_string().contains("bytes, the head says"), "{err}");
    assert_eq!(
        std::fs::read(&copy).expect("read"),
        held,
        "the local file is untouched"
    );
    Archive::open(&copy).expect("and still opens");
}

#[test]
fn a_garbage_collected_file_is_pushed_as_a_new_generation() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 19);
    rec.frames(80);
    let remote = memory_remote(Arc::new(InMemory::new()));
    let first = remote.push(&rec.path, PushOptions::default()).expect("push");
    let gen0 = remote.head().expect("head").expect("head").generation;
    let path = rec.path.clone();
    drop(rec);
    rewind_archive::compact(&path, &rewind_gc::Policy::default().keep_last(10)).expect("gc");
    let r = remote.push(&path, PushOptions::default()).expect("push after gc");
    assert!(r.new_generation);
    assert!(
        r.data_bytes_sent < first.data_bytes_sent,
        "the collected file is smaller"
    );
    let head = remote.head().expect("head").expect("head");
    assert_ne!(head.generation, gen0);
    // A pull into the old copy replaces only with `replace`.
    let copy = dir.path().join("b.rwd");
    remote.pull(&copy, PullOptions::default()).expect("fresh pull");
    assert_same_archive(&path, &copy);
}

#[test]
fn pull_refuses_a_local_file_it_cannot_extend_unless_told_to_replace_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 20);
    rec.frames(30);
    let remote = memory_remote(Arc::new(InMemory::new()));
    remote.push(&rec.path, PushOptions::default()).expect("push");
    rec.frames(5);
    // While its writer appends, the file is locked: a pull into it is refused.
    let err = remote
        .pull(&rec.path, PullOptions::default())
        .expect_err("locked");
    assert!(
        matches!(
            err,
            RemoteError::Archive {
                source: rewind_archive::ArchiveError::Locked { .. },
                ..
            }
        ),
        "{err}"
    );
    let ahead = rec.path.clone();
    drop(rec);
    // The local file has commits the remote lacks.
    let err = remote.pull(&ahead, PullOptions::default()).expect_err("ahead");
    assert!(matches!(err, RemoteError::LocalAhead { .. }), "{err}");
    // Another history.
    let mut other = Recording::new(&dir.path().join("o.rwd"), 21);
    other.frames(3);
    let path = other.path.clone();
    drop(other);
    let held = std::fs::read(&path).expect("read");
    let err = remote.pull(&path, PullOptions::default()).expect_err("diverged");
    assert!(matches!(err, RemoteError::Diverged { .. }), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), held);
    // Not an archive at all.
    let junk = dir.path().join("junk.rwd");
    std::fs::write(&junk, b"not an archive").expect("write");
    let err = remote.pull(&junk, PullOptions::default()).expect_err("junk");
    assert!(matches!(err, RemoteError::Archive { .. }), "{err}");
    // replace: all three become the remote archive.
    for p in [&ahead, &path, &junk] {
        remote.pull(p, PullOptions { replace: true }).expect("replace");
        Archive::open(p).expect("opens");
    }
}

#[test]
fn missing_and_bad_heads_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(InMemory::new());
    let remote = memory_remote(store.clone());
    let err = remote
        .pull(&dir.path().join("x.rwd"), PullOptions::default())
        .expect_err("none");
    assert!(matches!(err, RemoteError::NoArchive { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("no archive at s3://bucket/games/match.rwd"),
        "{err}"
    );
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    rt.block_on(store.put(&remote.head_key(), PutPayload::from_static(b"{\"format\": 7}")))
        .expect("put");
    let err = remote
        .pull(&dir.path().join("x.rwd"), PullOptions::default())
        .expect_err("bad");
    assert!(matches!(err, RemoteError::BadHead { .. }), "{err}");
    assert!(!dir.path().join("x.rwd").exists());
}

#[test]
fn remote_bytes_that_are_not_an_archive_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(InMemory::new());
    let remote = memory_remote(store.clone());
    let bytes = vec![7u8; 4096];
    let part = rewind_remote::Part {
        start: 0,
        len: 4096,
        checksum: rewind_remote::checksum(&bytes),
    };
    let head = rewind_remote::Head {
        format: rewind_remote::HEAD_FORMAT,
        generation: "00000000000000aa".into(),
        len: 4096,
        seed: 0,
        page_size: 1024,
        header_checksum: rewind_remote::checksum(&bytes[..64]),
        trailer_checksum: rewind_remote::checksum(&bytes[4032..]),
        head_record: None,
        head_state_hash: None,
        parts: vec![part.clone()],
    };
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    rt.block_on(async {
        store
            .put(
                &remote.part_key(&head.generation, &part),
                PutPayload::from(bytes.clone()),
            )
            .await?;
        store
            .put(
                &remote.head_key(),
                PutPayload::from(serde_json::to_vec(&head).expect("json")),
            )
            .await
    })
    .expect("put");
    let target = dir.path().join("x.rwd");
    let err = remote.pull(&target, PullOptions::default()).expect_err("junk");
    assert!(matches!(err, RemoteError::NotAnArchive { .. }), "{err}");
    assert!(!target.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("rewind-pull"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn pull_of_a_copy_ending_inside_a_part_fetches_only_the_rest_with_a_ranged_get() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 22);
    rec.frames(40);
    let copy = dir.path().join("b.rwd");
    std::fs::copy(&rec.path, &copy).expect("copy");
    let held = rec.len();
    rec.frames(100);
    let remote = memory_remote(Arc::new(InMemory::new()));
    remote.push(&rec.path, PushOptions::default()).expect("push");
    let head = remote.head().expect("head").expect("a head");
    assert!(
        head.parts.iter().all(|p| p.end() != held),
        "the copy must end inside a part"
    );
    let r = remote.pull(&copy, PullOptions::default()).expect("pull");
    assert_eq!(r.data_bytes_fetched, rec.len() - held);
    assert_eq!(r.requests, 1 + r.parts_fetched);
    assert_same_archive(&rec.path, &copy);
    // A copy whose held bytes differ from the remote's is refused, not patched.
    let bad = dir.path().join("bad.rwd");
    std::fs::write(
        &bad,
        &std::fs::read(dir.path().join("b.rwd")).expect("read")[..held as usize],
    )
    .expect("write");
    let mut damaged = std::fs::read(&bad).expect("read");
    damaged[(held / 2) as usize] ^= 0xff;
    std::fs::write(&bad, &damaged).expect("write");
    match remote.pull(&bad, PullOptions::default()) {
        Err(RemoteError::DamagedPart { .. } | RemoteError::Archive { .. } | RemoteError::Diverged { .. }) => {
        }
        other => panic!("a copy with other bytes must be refused: {other:?}"),
    }
    assert_eq!(std::fs::read(&bad).expect("read"), damaged, "and left untouched");
}

#[test]
fn push_and_pull_keep_up_to_concurrency_parts_in_flight_and_the_result_is_the_same() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recording::new(&dir.path().join("a.rwd"), 20);
    rec.frames(150);
    let parts = parts_of(rec.len(), 4096);
    assert!(parts > 8, "the test needs many parts, has {parts}");
    for n in [1u64, 3] {
        let watch = Arc::new(stores::InFlight::new(Arc::new(InMemory::new())));
        let remote = memory_remote(watch.clone()).concurrency(n as usize);
        let pushed = remote.push(&rec.path, PushOptions::default()).expect("push");
        assert_eq!(pushed.parts_sent, parts);
        assert_eq!(
            pushed.requests,
            parts + 4,
            "GET head, LIST, the parts, HEAD, PUT head"
        );
        assert_eq!(watch.most(), n, "PUTs in flight at once");
        let watch_pull = Arc::new(stores::InFlight::new(watch.clone()));
        let copy = dir.path().join(format!("copy-{n}.rwd"));
        let pulled = memory_remote(watch_pull.clone())
            .concurrency(n as usize)
            .pull(&copy, PullOptions::default())
            .expect("pull");
        assert_eq!((pulled.parts_fetched, pulled.requests), (parts, parts + 1));
        assert_eq!(watch_pull.most(), n, "GETs in flight at once");
        assert_same_archive(&rec.path, &copy);
    }
}
