use rewind_archive::Archive;
use rewind_history::History;

/// SplitMix64's output for state `x`: a hash of `x`, and a generator when iterated
/// (`x = splitmix(x)`); the expected memories of the crash and locking tests are
/// functions of it.
pub fn splitmix(x: u64) -> u64 {
    use rand_xoshiro::rand_core::{RngCore, SeedableRng};
    rand_xoshiro::SplitMix64::seed_from_u64(x).next_u64()
}

pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temp dir")
}

/// The whole memory of a record of `history`.
pub fn memory_of(history: &History, id: rewind_history::RecordId) -> Vec<u8> {
    let r = history.record(id).expect("record");
    let mut buf = vec![0u8; r.snapshot().memory_len() as usize];
    rewind_snapshot::read(history.store(), r.snapshot(), 0, &mut buf).expect("read");
    buf
}

/// Check every retained record of `history` against `archive`.
pub fn check_same(history: &History, archive: &Archive) {
    let listed = archive.records().expect("records");
    for r in history.records() {
        let info = archive.record(r.id()).expect("record in archive");
        assert_eq!(info.iteration, r.iteration());
        assert_eq!(info.state_hash, r.state_hash(), "state hash of {}", r.id());
        assert_eq!(info.memory_len, r.snapshot().memory_len());
        assert_eq!(
            info.on_timeline,
            history.on_timeline(r.id()),
            "timeline status of {}",
            r.id()
        );
        assert_eq!(archive.globals(r.id()).expect("globals"), r.snapshot().globals());
        assert_eq!(archive.input(r.id()).expect("input"), history.input(r.id()));
        let pages = archive.pages(r.id()).expect("pages");
        let mem: Vec<_> = r.snapshot().pages().iter().copied().collect();
        assert_eq!(pages, mem, "page vector of {}", r.id());
        let want = memory_of(history, r.id());
        let mut got = vec![0u8; want.len()];
        archive.read_record(r.id(), 0, &mut got).expect("read");
        assert!(got == want, "memory of {}", r.id());
        if history.on_timeline(r.id()) {
            assert_eq!(archive.state_hash(r.iteration()).expect("at"), r.state_hash());
        }
        assert!(listed
            .iter()
            .any(|l| l.id == r.id() && l.on_timeline == history.on_timeline(r.id())));
    }
    assert_eq!(archive.head(), history.head().map(|h| h.id()));
    check_inspection(history, archive, listed.len());
}

/// The inspection queries (change lists, blame, diff) agree with the history, when the
/// archive holds exactly the history's records (nothing collected from memory only).
fn check_inspection(history: &History, archive: &Archive, listed: usize) {
    if listed != history.len() {
        return;
    }
    let ps = history.page_size().bytes() as u64;
    let mut prev: Option<rewind_history::RecordId> = None;
    for r in history.timeline() {
        if let Some(p) = r.parent() {
            let want: Vec<_> = r
                .changes()
                .iter()
                .copied()
                .filter(|(i, _)| (*i as u64) < r.snapshot().memory_len() / ps)
                .collect();
            let got = archive.changes(r.id()).expect("changes");
            let parent_len = history.record(p).expect("parent").snapshot().memory_len() / ps;
            // Slots a grown memory adds as zero pages are not changes to the archive.
            let want: Vec<_> = want
                .into_iter()
                .filter(|(i, h)| !(h.is_zero() && *i as u64 >= parent_len))
                .collect();
            assert_eq!(got, want, "change list of {}", r.id());
        }
        let len = r.snapshot().memory_len();
        for (addr, n) in [(0u64, 1u64), (ps / 2, 8), (len.saturating_sub(3), 3), (ps - 2, 5)] {
            if n == 0 || addr + n > len {
                continue;
            }
            let want = history.blame(r.iteration(), addr, n).expect("history blame");
            let got = archive.blame_record(r.id(), addr, n).expect("archive blame");
            assert_eq!(got, want, "blame of {} at {addr}+{n}", r.id());
            let chain = archive.blame_chain(r.id(), addr, n, 4).expect("chain");
            assert_eq!(chain.first().copied(), want);
            assert!(chain.windows(2).all(|w| w[0].iteration > w[1].iteration));
        }
        if let Some(p) = prev {
            let a = history.record(p).expect("prev").snapshot();
            let want = rewind_snapshot::diff(a, r.snapshot());
            assert_eq!(
                archive.diff_records(p, r.id()).expect("diff"),
                want,
                "diff {p} {}",
                r.id()
            );
        }
        prev = Some(r.id());
    }
}
