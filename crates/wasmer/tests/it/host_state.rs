//! Host state recorded with every iteration: rolled back with the guest,
//! collected with the policy, covered by state hashes when asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rewind::Policy;
use rewind_wasmer::{HostState, HostStateError, Session, SessionError, SessionOptions};
use wasmer::{imports, Function, FunctionEnv, FunctionEnvMut};

/// Each step stores the host's `next()` (a counter the host keeps) plus the
/// input into page 1.
const GUEST: &str = r#"(module
  (import "host" "next" (func $next (result i64)))
  (memory (export "memory") 2)
  (func (export "step") (param $input i64)
    (i64.store (i32.const 0x1000)
      (i64.add (i64.load (i32.const 0x1000))
               (i64.add (call $next) (local.get $input))))))"#;

/// The host's counter, shared by the import and the [`HostState`].
#[derive(Clone)]
struct Counter(Arc<AtomicU64>);

impl HostState for Counter {
    fn save(&mut self) -> Vec<u8> {
        self.0.load(Ordering::Relaxed).to_le_bytes().to_vec()
    }

    fn load(&mut self, bytes: &[u8]) -> Result<(), HostStateError> {
        let b: [u8; 8] = bytes
            .try_into()
            .map_err(|_| HostStateError::new("a counter is 8 bytes"))?;
        self.0.store(u64::from_le_bytes(b), Ordering::Relaxed);
        Ok(())
    }
}

fn session(options: SessionOptions) -> (Session, Counter) {
    let counter = Counter(Arc::new(AtomicU64::new(0)));
    let shared = counter.0.clone();
    let s = Session::with_imports(GUEST, options, move |store| {
        let env = FunctionEnv::new(store, shared.clone());
        let next = Function::new_typed_with_env(store, &env, |env: FunctionEnvMut<Arc<AtomicU64>>| {
            env.data().fetch_add(1, Ordering::Relaxed) as i64 * 7
        });
        imports! { "host" => { "next" => next } }
    })
    .expect("the guest instantiates");
    (s, counter)
}

fn options() -> SessionOptions {
    SessionOptions::new(4096).expect("page size").seed(3)
}

fn straight(frames: u64) -> Vec<rewind::StateHash> {
    let (mut s, counter) = session(options());
    s.set_host_state(counter, false);
    (1..=frames)
        .map(|f| s.step(&f.to_le_bytes()).expect("step").state_hash)
        .collect()
}

#[test]
fn host_state_goes_back_with_the_guest() {
    let expected = straight(12);
    let (mut s, counter) = session(options());
    s.set_host_state(counter.clone(), false);
    for f in 1..=12u64 {
        s.step(&f.to_le_bytes()).expect("step");
    }
    assert_eq!(counter.0.load(Ordering::Relaxed), 12);
    s.rollback_to(5).expect("rollback");
    assert_eq!(
        counter.0.load(Ordering::Relaxed),
        5,
        "the host's counter went back to frame 5"
    );
    assert_eq!(s.host_state(5), Some(&5u64.to_le_bytes()[..]));
    assert_eq!(
        s.host_state(6),
        None,
        "later host states are dropped with the branch"
    );
    for f in 6..=12u64 {
        let r = s.step(&f.to_le_bytes()).expect("re-simulate");
        assert_eq!(r.state_hash, expected[f as usize - 1], "frame {f}");
    }
}

#[test]
fn without_host_state_the_resimulation_differs() {
    // The same run with the host left out: the counter keeps counting after the
    // rollback, so the re-simulated frames differ. This is what the test above
    // guards against.
    let expected = straight(8);
    let (mut s, _counter) = session(options());
    for f in 1..=8u64 {
        s.step(&f.to_le_bytes()).expect("step");
    }
    s.rollback_to(3).expect("rollback");
    let r = s.step(&4u64.to_le_bytes()).expect("step");
    assert_ne!(r.state_hash, expected[3]);
}

#[test]
fn state_hashes_cover_the_host_state_when_asked() {
    let (mut plain, c1) = session(options());
    plain.set_host_state(c1, false);
    let (mut hashed, c2) = session(options());
    hashed.set_host_state(c2.clone(), true);
    for f in 1..=4u64 {
        let a = plain.step(&f.to_le_bytes()).expect("step");
        let b = hashed.step(&f.to_le_bytes()).expect("step");
        assert_ne!(a.state_hash, b.state_hash);
        assert_eq!(hashed.state_hash(f).expect("hash"), b.state_hash);
        assert_eq!(
            hashed.recorder().state_hash(f).expect("guest hash"),
            a.state_hash,
            "the history keeps the guest's own hash"
        );
    }
    // check() and rollbacks report the covered hashes.
    let r = hashed.rollback_to(2).expect("rollback");
    assert_eq!(r.state_hash, hashed.state_hash(2).expect("hash"));
    assert_eq!(hashed.check([(2, r.state_hash)]).expect("check"), None);
    let guest_only = hashed.recorder().state_hash(2).expect("guest hash");
    assert!(hashed.check([(2, guest_only)]).expect("check").is_some());
    // The same guest state with another host state hashes differently.
    c2.0.store(1000, Ordering::Relaxed);
    hashed.set_host_state(c2, true);
    assert_ne!(hashed.state_hash(2).expect("hash"), r.state_hash);
}

#[test]
fn host_states_are_collected_with_the_policy() {
    let (mut s, counter) = session(options().policy(Policy::default().keep_last(8)));
    s.set_host_state(counter, false);
    for f in 1..=200u64 {
        s.step(&f.to_le_bytes()).expect("step");
        if f % 5 == 0 {
            s.rollback_to(f - 2).expect("rollback");
        }
    }
    let (held, _) = s.host_state_counts();
    let timeline = s.recorder().history().timeline_len();
    assert!(
        held <= timeline,
        "{held} host states for {timeline} timeline records"
    );
    assert!(held <= 10, "{held}");
    let oldest = s
        .recorder()
        .history()
        .timeline()
        .next()
        .expect("a record")
        .iteration();
    assert!(s.host_state(oldest).is_some());
    assert!(s.host_state(oldest - 1).is_none());
}

/// A host whose saved state cannot be put back.
struct Broken;

impl HostState for Broken {
    fn save(&mut self) -> Vec<u8> {
        vec![1, 2, 3]
    }

    fn load(&mut self, _: &[u8]) -> Result<(), HostStateError> {
        Err(HostStateError::new("the host refuses"))
    }
}

#[test]
fn a_host_state_that_cannot_be_put_back_is_an_error_and_blocks_steps() {
    let (mut s, _counter) = session(options());
    for f in 1..=3u64 {
        s.step(&f.to_le_bytes()).expect("step");
    }
    let hash_3 = s.state_hash(3).expect("hash");
    s.set_host_state(Broken, false);
    s.step(&[4]).expect("step");
    let err = s.rollback_to(3).expect_err("the host refuses");
    assert!(
        matches!(err, SessionError::HostState { iteration: 3, .. }),
        "{err}"
    );
    let err = s.step(&[5]).expect_err("the live host state is unknown");
    assert!(matches!(err, SessionError::NeedsRollback { .. }), "{err}");
    // The history is intact: the guest is at 3, the record of 4 kept (abandoned).
    assert_eq!(s.head_iteration(), 3);
    assert_eq!(s.state_hash(3).expect("hash"), hash_3);
    assert!(s.recorder().history().records().any(|r| r.iteration() == 4));
}

/// Grows its memory by one wasm page when the input is 99; stores the input at 0x100.
const GROWER: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "step") (param $input i64)
    (if (i64.eq (local.get $input) (i64.const 99))
      (then (drop (memory.grow (i32.const 1)))))
    (i64.store (i32.const 0x100) (local.get $input))))"#;

#[test]
fn a_new_instance_is_handed_to_the_host() {
    use std::cell::RefCell;
    use std::rc::Rc;

    let mut s = Session::new(GROWER, options()).expect("guest");
    // What the host saw: the memory length and the value at 0x100, read through
    // the memory handle it was given.
    let seen: Rc<RefCell<Vec<(u64, u64)>>> = Rc::default();
    let log = seen.clone();
    s.on_reinstantiate(move |store, guest| {
        let view = guest.memory().view(store);
        let mut b = [0u8; 8];
        view.read(0x100, &mut b).expect("the new memory is readable");
        log.borrow_mut().push((view.data_size(), u64::from_le_bytes(b)));
    });
    s.step(&7u64.to_le_bytes()).expect("step 1");
    s.step(&99u64.to_le_bytes()).expect("step 2 grows");
    s.step(&5u64.to_le_bytes()).expect("step 3");
    s.rollback_to(2).expect("rollback within the grown memory");
    assert!(
        seen.borrow().is_empty(),
        "no new instance for a rollback that does not shrink"
    );
    let r = s.rollback_to(1).expect("rollback across the growth");
    assert!(r.reinstantiated);
    assert_eq!(*seen.borrow(), vec![(65536, 7)]);
    assert_eq!(s.guest().memory().view(s.store()).data_size(), 65536);
}

#[test]
fn host_state_follows_a_pipelined_session() {
    if !crate::kernel_available() {
        return;
    }
    let expected = straight(40);
    let options = options()
        .policy(Policy::default().keep_last(6))
        .pipeline(rewind::PipelineOptions::default());
    let (mut s, counter) = session(options);
    s.set_host_state(counter.clone(), true);
    for f in 1..=30u64 {
        let r = s.step(&f.to_le_bytes()).expect("step");
        if r.pending {
            assert_eq!(r.state_hash, rewind::StateHash::default(), "not known yet");
        }
    }
    s.rollback_to(27).expect("rollback");
    assert_eq!(counter.0.load(Ordering::Relaxed), 27);
    for f in 28..=40u64 {
        s.step(&f.to_le_bytes()).expect("re-simulate");
    }
    // The guest's own hashes equal the straight run's; the reported ones cover the host.
    for f in 35..=40u64 {
        assert_eq!(
            s.recorder().state_hash(f).expect("hash"),
            expected[f as usize - 1]
        );
        assert_ne!(s.state_hash(f).expect("hash"), expected[f as usize - 1]);
    }
    let (held, _) = s.host_state_counts();
    assert!(held <= 2 * 6 + 64, "{held} host states held");
}

/// The straight run of `frames` frames with the host state hashed.
fn straight_hashed(frames: u64) -> Vec<rewind::StateHash> {
    let (mut s, counter) = session(options());
    s.set_host_state(counter, true);
    (1..=frames)
        .map(|f| s.step(&f.to_le_bytes()).expect("step").state_hash)
        .collect()
}

/// Records 12 frames with the host state to an archive (pipelined when asked).
fn record_to(path: &std::path::Path, pipelined: bool) {
    let mut options = options().archive(path, rewind::Durability::EveryAppend);
    if pipelined {
        options = options.pipeline(rewind::PipelineOptions::default());
    }
    let (mut s, counter) = session(options);
    s.set_host_state(counter, true);
    for f in 1..=12u64 {
        s.step(&f.to_le_bytes()).expect("step");
    }
}

#[test]
fn a_session_resumed_from_an_archive_gets_its_host_state_back() {
    let expected = straight_hashed(20);
    let guest_only = straight(20);
    let mut runs = vec![false];
    if crate::kernel_available() {
        runs.push(true);
    }
    for pipelined in runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("host.rwd");
        record_to(&path, pipelined);
        // The archive holds the host state of every frame, and the facade's resume
        // returns it.
        {
            let mut rec =
                rewind::Recorder::open(&path, rewind::Durability::Manual, Policy::default()).expect("open");
            let state = rec.resume_at(8).expect("resume");
            assert_eq!(state.host_state, Some(8u64.to_le_bytes().to_vec()));
        }
        let resume = || options().resume_from(&path, 8, rewind::Durability::EveryAppend);
        let (mut s, counter) = session(resume());
        s.set_host_state(counter.clone(), true);
        assert_eq!(
            counter.0.load(Ordering::Relaxed),
            8,
            "the host's counter is frame 8's ({pipelined})"
        );
        assert_eq!(s.state_hash(8).expect("head"), expected[7]);
        for f in 9..=20u64 {
            let r = s.step(&f.to_le_bytes()).expect("step");
            assert_eq!(r.state_hash, expected[f as usize - 1], "frame {f} ({pipelined})");
            assert_eq!(
                s.recorder().state_hash(f).expect("guest"),
                guest_only[f as usize - 1]
            );
        }
        drop(s);
        // Without the host state put back (the host starts at 0), the continuation
        // diverges at once: what the test above guards against.
        let (mut s, counter) = session(resume());
        let r = s.step(&9u64.to_le_bytes()).expect("step");
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        assert_ne!(r.state_hash, guest_only[8], "frame 9 ({pipelined})");
    }
}

#[test]
fn a_session_joined_from_a_bundle_gets_its_host_state_back() {
    use rewind::bundle::{Bundle, Manifest, Nothing};
    let expected = straight_hashed(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("host.rwd");
    record_to(&path, false);
    // A self-contained bundle of frame 8 for a receiver that has nothing.
    let archive = rewind::Archive::open(&path).expect("open");
    let manifest = Manifest::from_archive(&archive, 8).expect("manifest");
    assert_eq!(manifest.host_state(), Some(&8u64.to_le_bytes()[..]));
    let bundle = Bundle::self_contained(&manifest, &manifest.wanted(&Nothing).expect("wanted"), &archive)
        .expect("build");
    let state = Bundle::from_bytes(&bundle.to_bytes().expect("encode"))
        .expect("decode")
        .assemble(&Nothing)
        .expect("assemble");
    let (mut s, counter) = session(options().resume_from_bundle(state));
    s.set_host_state(counter.clone(), true);
    assert_eq!(
        counter.0.load(Ordering::Relaxed),
        8,
        "the host's counter is frame 8's"
    );
    assert_eq!(s.state_hash(8).expect("head"), expected[7]);
    for f in 9..=20u64 {
        let r = s.step(&f.to_le_bytes()).expect("step");
        assert_eq!(r.state_hash, expected[f as usize - 1], "frame {f}");
    }
}
