use rewind_archive::Archive;
use rewind_history::History;

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
        archive.read(r.id(), 0, &mut got).expect("read");
        assert!(got == want, "memory of {}", r.id());
        if history.on_timeline(r.id()) {
            assert_eq!(archive.state_hash(r.iteration()).expect("at"), r.state_hash());
        }
        assert!(listed
            .iter()
            .any(|l| l.id == r.id() && l.on_timeline == history.on_timeline(r.id())));
    }
    assert_eq!(archive.head(), history.head().map(|h| h.id()));
}
