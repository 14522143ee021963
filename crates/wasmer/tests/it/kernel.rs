//! Kernel-hinted capture against full-scan capture on the same runs.

use proptest::prelude::*;
use rewind_wasmer::{CaptureMode, CapturePreference, Session, SessionOptions};

use crate::guests::{self, grow, scribble, trap, work};

#[derive(Clone, Debug)]
enum Op {
    /// A guest step with the usual work.
    Work(u64),
    /// A guest step that grows memory first.
    Grow(u8),
    /// A guest step that writes every page.
    Scribble(u8),
    /// A guest step that traps (undone).
    Trap,
    /// A host write through `MemoryView::write` between steps.
    HostWrite {
        page: u32,
        offset: u16,
        byte: u8,
        len: u16,
    },
    /// Roll back this many iterations (bounded by the head).
    Rollback(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => any::<u64>().prop_map(Op::Work),
        1 => (0u8..4).prop_map(Op::Grow),
        1 => any::<u8>().prop_map(Op::Scribble),
        1 => Just(Op::Trap),
        4 => (0u32..256, 0u16..4096, any::<u8>(), 1u16..9000)
            .prop_map(|(page, offset, byte, len)| Op::HostWrite { page, offset, byte, len }),
        2 => (0u8..12).prop_map(Op::Rollback),
    ]
}

fn session(capture: CapturePreference) -> Session {
    let options = SessionOptions::new(4096)
        .expect("page size")
        .seed(99)
        .capture(capture);
    Session::new(guests::COUNTER, options).expect("session")
}

/// Applies one op; returns the state hash of the head afterwards.
fn apply(s: &mut Session, op: &Op) -> rewind::StateHash {
    match *op {
        Op::Work(v) => {
            s.step(&work(v >> 8)).expect("step");
        }
        Op::Grow(pages) => {
            s.step(&grow(pages, 1)).expect("step");
        }
        Op::Scribble(b) => {
            s.step(&scribble(b)).expect("step");
        }
        Op::Trap => {
            assert!(s.step(&trap()).is_err());
        }
        Op::HostWrite {
            page,
            offset,
            byte,
            len,
        } => {
            let memory = s.guest().memory().clone();
            let size = s.memory_len();
            let at = (u64::from(page) * 4096 + u64::from(offset)) % size;
            let len = u64::from(len).min(size - at) as usize;
            memory
                .view(s.store_mut())
                .write(at, &vec![byte; len])
                .expect("in bounds");
        }
        Op::Rollback(n) => {
            let head = s.head_iteration();
            s.rollback_to(head - u64::from(n).min(head)).expect("rollback");
        }
    }
    s.state_hash(s.head_iteration()).expect("head")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// The kernel's written pages never miss a write: hinted capture gives
    /// the same state hash as hashing every page, after every op (host
    /// writes land in the next step's capture).
    #[test]
    fn kernel_hinted_capture_equals_full_scan(ops in proptest::collection::vec(op(), 1..60)) {
        if !crate::kernel_available() {
            return Ok(());
        }
        let mut kernel = session(CapturePreference::KernelDirty);
        let mut full = session(CapturePreference::FullScan);
        prop_assert_eq!(kernel.mode(), CaptureMode::KernelDirty);
        for op in &ops {
            let a = apply(&mut kernel, op);
            let b = apply(&mut full, op);
            prop_assert_eq!(a, b, "after {:?}", op);
            prop_assert_eq!(kernel.memory_len(), full.memory_len());
        }
        // A final step captures any pending host writes.
        let a = kernel.step(&work(1)).expect("step").state_hash;
        let b = full.step(&work(1)).expect("step").state_hash;
        prop_assert_eq!(a, b);
        prop_assert_eq!(kernel.mode(), CaptureMode::KernelDirty, "no silent downgrade");
    }
}

/// In kernel mode a capture hashes only the written pages.
#[test]
fn kernel_mode_hashes_only_written_pages() {
    if !crate::kernel_available() {
        return;
    }
    let mut s = session(CapturePreference::KernelDirty);
    let r = s.step(&work(5)).expect("step");
    assert!(r.pages_hashed <= 4, "{}", r.pages_hashed);
    // A host write is seen too.
    let memory = s.guest().memory().clone();
    memory
        .view(s.store_mut())
        .write(100_000, &[1, 2, 3])
        .expect("write");
    let r = s.step(&work(6)).expect("step");
    assert!(r.pages_hashed <= 5, "{}", r.pages_hashed);
    let mut b = [0u8; 3];
    s.recorder().read(2, 100_000, &mut b).expect("read");
    assert_eq!(b, [1, 2, 3]);
    // Growth then a rollback to before it re-creates the tracker.
    s.step(&grow(3, 1)).expect("step");
    let back = s.rollback_to(1).expect("rollback");
    assert!(back.reinstantiated);
    assert_eq!(s.mode(), CaptureMode::KernelDirty);
    let r = s.step(&work(6)).expect("step");
    assert!(r.pages_hashed <= 5, "{}", r.pages_hashed);
}

/// Named regression (seed in tests/proptest-regressions/kernel.txt): a single
/// step of work, hinted by the kernel, equals a full scan.
#[test]
fn regression_one_step_of_work() {
    if !crate::kernel_available() {
        return;
    }
    let mut kernel = session(CapturePreference::KernelDirty);
    let mut full = session(CapturePreference::FullScan);
    assert_eq!(apply(&mut kernel, &Op::Work(0)), apply(&mut full, &Op::Work(0)));
    let a = kernel.step(&work(1)).expect("step").state_hash;
    let b = full.step(&work(1)).expect("step").state_hash;
    assert_eq!(a, b);
}

/// Auto hashes every page while the guest writes most of its pages (the tracker's
/// faults and re-protection buy nothing then) and goes back to kernel pages when it
/// stops; the state hashes equal a full-scan session's throughout, through rollbacks,
/// synchronous and pipelined.
#[test]
fn auto_scans_while_most_pages_are_written_and_goes_back_when_the_rate_falls() {
    if !crate::kernel_available() {
        return;
    }
    for pipelined in [false, true] {
        let options = |capture| {
            let o = SessionOptions::new(4096)
                .expect("page size")
                .seed(99)
                .capture(capture);
            if pipelined {
                o.pipeline(rewind::PipelineOptions::new())
            } else {
                o
            }
        };
        let mut auto = Session::new(guests::COUNTER, options(CapturePreference::Auto)).expect("session");
        let mut full = Session::new(guests::COUNTER, options(CapturePreference::FullScan)).expect("session");
        let both = |auto: &mut Session, full: &mut Session, input: &[u8]| {
            let a = auto.step(input).expect("step").iteration;
            full.step(input).expect("step");
            assert_eq!(
                auto.state_hash(a).expect("hash"),
                full.state_hash(a).expect("hash"),
                "iteration {a}, pipelined {pipelined}"
            );
            (auto.mode(), auto.stats().mode_switches)
        };
        let (a, f) = (&mut auto, &mut full);
        for v in 0..4 {
            assert_eq!(both(a, f, &work(v)), (CaptureMode::KernelDirty, 0));
        }
        // Two captures of every page written, a quiet one, then three in a row.
        assert_eq!(both(a, f, &scribble(1)), (CaptureMode::KernelDirty, 0));
        assert_eq!(both(a, f, &scribble(2)), (CaptureMode::KernelDirty, 0));
        assert_eq!(both(a, f, &work(9)), (CaptureMode::KernelDirty, 0));
        assert_eq!(both(a, f, &scribble(3)), (CaptureMode::KernelDirty, 0));
        assert_eq!(both(a, f, &scribble(4)), (CaptureMode::KernelDirty, 0));
        assert_eq!(both(a, f, &scribble(5)), (CaptureMode::FullScan, 1));
        let why = a.fallback_reason().expect("a reason").to_owned();
        assert!(why.contains("more than half of the pages"), "{why}");
        // Rolled back and re-simulated while scanning: still the full scan's states.
        let head = a.head_iteration();
        a.rollback_to(head - 3).expect("rollback");
        f.rollback_to(head - 3).expect("rollback");
        assert_eq!(both(a, f, &scribble(6)), (CaptureMode::FullScan, 1));
        // Quiet frames: the 64th scan since the switch re-arms the tracker (and still
        // hashes every page), the next capture uses it.
        for v in 0..62 {
            assert_eq!(both(a, f, &work(v)), (CaptureMode::FullScan, 1), "scan {v}");
        }
        assert_eq!(both(a, f, &work(100)), (CaptureMode::KernelDirty, 2));
        let r = auto.step(&work(101)).expect("step");
        full.step(&work(101)).expect("step");
        assert_eq!(auto.mode(), CaptureMode::KernelDirty);
        assert!(r.pages_hashed <= 4, "{}", r.pages_hashed);
        assert_eq!(
            auto.state_hash(r.iteration).expect("hash"),
            full.state_hash(r.iteration).expect("hash")
        );
        auto.recorder().history().check().expect("history invariant");
    }
}
