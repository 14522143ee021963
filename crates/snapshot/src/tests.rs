//! Unit tests of capture, restore, diff and reads against plain byte copies.

use rewind_store::{PageSize, PageStore, StoreConfig, StoreError};

use super::*;

const PAGE: usize = 1024;

fn store() -> PageStore {
    let size = PageSize::new(PAGE as u64).expect("page size");
    PageStore::new(StoreConfig::new(size).seed(11))
}

fn take(store: &mut PageStore, prev: Option<&Snapshot>, memory: &[u8], hint: Option<&[u32]>) -> Snapshot {
    capture(store, prev, memory, &[GlobalValue::I32(memory[0] as i32)], hint)
        .expect("capture")
        .snapshot
}

#[test]
fn capture_then_restore_gives_the_bytes_back() {
    let mut s = store();
    let mut memory = vec![0u8; 4 * PAGE];
    let first = take(&mut s, None, &memory, None);
    memory[PAGE + 5] = 7;
    memory[3 * PAGE] = 9;
    let second = take(&mut s, Some(&first), &memory, Some(&[1, 3]));
    assert_eq!(diff(&first, &second), [1, 3]);
    let mut live = memory.clone();
    let r = restore(&s, &mut live, Live::Exact(&second), &first).expect("restore");
    assert_eq!(r.pages_written, 2);
    assert!(live.iter().all(|&b| b == 0));
    let r = restore(&s, &mut live, Live::Unknown, &second).expect("restore");
    assert_eq!((r.pages_written, r.pages_hashed), (2, 4));
    assert_eq!(live, memory);
}

#[test]
fn a_hint_that_misses_a_write_misses_it_and_a_full_scan_does_not() {
    // The hint is trusted: that is what makes hinted capture cheap, and why the
    // dirty tracker must never miss a write.
    let mut s = store();
    let mut memory = vec![0u8; 2 * PAGE];
    let first = take(&mut s, None, &memory, None);
    memory[PAGE] = 1;
    let hinted = take(&mut s, Some(&first), &memory, Some(&[]));
    let scanned = take(&mut s, Some(&first), &memory, None);
    assert_eq!(diff(&first, &hinted), Vec::<u32>::new());
    assert_eq!(diff(&first, &scanned), [1]);
}

#[test]
fn bad_input_is_an_error_and_stores_nothing() {
    let mut s = store();
    let memory = vec![1u8; 2 * PAGE];
    let first = take(&mut s, None, &memory, None);
    let objects = s.stats().objects;
    let err = capture(
        &mut s,
        Some(&first),
        &memory[..PAGE + 3],
        &[GlobalValue::I32(1)],
        None,
    )
    .expect_err("not a whole number of pages");
    assert!(
        matches!(err, SnapshotError::Store(StoreError::MemoryNotPageAligned { len, .. }) if len == PAGE as u64 + 3),
        "{err}"
    );
    let err = capture(&mut s, Some(&first), &memory, &[GlobalValue::I32(1)], Some(&[2]))
        .expect_err("hint past the memory");
    assert!(
        matches!(err, SnapshotError::HintOutOfRange { index: 2, pages: 2 }),
        "{err}"
    );
    let err = capture(&mut s, Some(&first), &memory, &[GlobalValue::I64(1)], None).expect_err("type");
    assert!(matches!(err, SnapshotError::GlobalType { index: 0, .. }), "{err}");
    let err = capture(&mut s, Some(&first), &memory, &[], None).expect_err("arity");
    assert!(
        matches!(
            err,
            SnapshotError::GlobalsArity {
                expected: 1,
                found: 0
            }
        ),
        "{err}"
    );
    assert_eq!(s.stats().objects, objects, "nothing stored by a refused capture");
    let mut short = vec![0u8; PAGE];
    let err = restore(&s, &mut short, Live::Unknown, &first).expect_err("length");
    assert!(matches!(err, SnapshotError::MemoryLength { .. }), "{err}");
    let mut out = [0u8; 4];
    let err = read(&s, &first, 2 * PAGE as u64 - 2, &mut out).expect_err("out of bounds");
    assert!(matches!(err, SnapshotError::OutOfBounds { .. }), "{err}");
}

#[test]
fn reads_and_byte_diffs_cross_page_boundaries() {
    let mut s = store();
    let mut memory = vec![0u8; 3 * PAGE];
    let first = take(&mut s, None, &memory, None);
    memory[PAGE - 2..PAGE + 2].copy_from_slice(&[1, 2, 3, 4]);
    let second = take(&mut s, Some(&first), &memory, None);
    let mut out = [0u8; 6];
    read(&s, &second, PAGE as u64 - 3, &mut out).expect("read");
    assert_eq!(out, [0, 1, 2, 3, 4, 0]);
    let ranges = diff_bytes(&s, &first, &second).expect("diff");
    assert_eq!(
        ranges,
        [ByteRange {
            addr: PAGE as u64 - 2,
            len: 4
        }]
    );
}

#[test]
fn state_hashes_cover_length_pages_and_globals() {
    let mut s = store();
    let memory = vec![0u8; 2 * PAGE];
    let a = take(&mut s, None, &memory, None);
    let mut other = memory.clone();
    other[0] = 1; // also changes the global (it mirrors byte 0)
    let b = take(&mut s, Some(&a), &other, None);
    assert_ne!(a.state_hash(), b.state_hash());
    let grown = take(&mut s, Some(&a), &vec![0u8; 3 * PAGE], None);
    assert_ne!(
        a.state_hash(),
        grown.state_hash(),
        "a longer zero memory is another state"
    );
    let again = take(&mut s, Some(&b), &memory, None);
    assert_eq!(
        again.state_hash(),
        a.state_hash(),
        "the same state hashes the same"
    );
    assert_eq!(a.first_differing_page(&b), Some(0));
    assert_eq!(a.first_differing_page(&again), None);
}
