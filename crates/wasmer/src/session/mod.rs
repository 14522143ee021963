//! A rollback session: a wasmer guest stepped one input at a time, every
//! iteration captured into a [`rewind::Recorder`], with rollback,
//! re-simulation and state-hash comparison.
//!
//! # The step ABI
//!
//! The guest exports a step function (by default `"step"`) in one of two forms,
//! chosen by its signature:
//!
//! - **word**: `(func (export "step") (param i64))`. The input (at most 8
//!   bytes) is passed as one `i64`, little-endian, zero-padded. For the small
//!   per-frame inputs of rollback netcode (buttons, a direction).
//! - **buffer**: `(func (export "step") (param i32))` plus two exported
//!   *immutable* `i32` globals `input_ptr` and `input_cap`. The host writes the
//!   input into linear memory at `input_ptr` (at most `input_cap` bytes,
//!   through `MemoryView::write`) and calls `step(len)`. The input bytes are
//!   then part of the guest's memory, so they are captured like any other
//!   state.
//!
//! # Host-driven frames
//!
//! A guest whose frame is not one export call (a wasm-bindgen library such as
//! a physics engine, stepped with handles the host built) runs under
//! [`SessionOptions::host_driven`]: the session resolves no step export and
//! [`Session::step_with`] runs a frame the host writes as a closure over the
//! live store and guest; everything else (capture with kernel dirty pages,
//! rollback, failed-step undo) is the same. [`Session::from_module_with_setup`]
//! runs host code once before iteration 0 is captured (building the world the
//! frames step), and hands back what it returns.
//!
//! # Iterations
//!
//! The state right after instantiation (start function included, and the
//! setup of [`Session::from_module_with_setup`] if any) is iteration 0. Each successful [`Session::step`] records the next iteration
//! (head + 1). [`Session::rollback_to`]`(k)` restores iteration `k` and makes it
//! the head; the next step records `k + 1` on a new branch (the superseded
//! records stay inspectable until garbage collection).
//!
//! # Failures
//!
//! A step that traps (or breaks the memory limit, or whose capture fails) is
//! not recorded: the live instance is restored to the head (the last good
//! state), the rollback hooks run, and the error is returned. The history is
//! never touched by a failed step.
//!
//! A guest that loops forever would block [`Session::step`]. For guests that
//! are not trusted, [`SessionOptions::fuel_per_step`] compiles the module with
//! wasmer's metering middleware and gives every frame a budget of wasm
//! operators: a frame that runs out traps, is undone like any failed step, and
//! is reported as [`SessionError::OutOfFuel`].

mod adapt;
mod error;
mod live;
mod options;
mod report;

pub use error::SessionError;
pub(crate) use live::*;
pub use options::{metered_engine, CaptureMode, CapturePreference, SessionOptions, StepAbi};
pub use report::{
    Divergence, PageDivergence, ReplayReport, ResimulateReport, RollbackReport, SessionStats, StepReport,
};

use std::time::{Duration, Instant};

use rewind::{CaptureReport, LiveMemory, Policy, RecordId, Recorder, Snapshot, StateHash};
use wasmer::{Engine, Imports, Store};

use crate::dirty::{Availability, DirtyTracker};
use crate::guest::{Guest, GuestModule};
use crate::host_state::{HostState, HostStates};
use adapt::Adapt;
/// A guest under rollback: owns the wasmer store and instance, the history,
/// and the kernel dirty tracker when available.
///
/// Not `Send`: wasmer 7.4.2's `Store` is not. Create the session on the
/// thread that runs it.
///
/// ```
/// use rewind_wasmer::{Session, SessionOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let wat = r#"(module
///   (memory (export "memory") 1)
///   (global $sum (mut i64) (i64.const 0))          ;; not exported
///   (func (export "step") (param i64)
///     (global.set $sum (i64.add (global.get $sum) (local.get 0)))
///     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let mut s = Session::new(wat, SessionOptions::new(4096)?.seed(7))?;
/// for frame in 1..=10u8 {
///     s.step(&[frame])?;
/// }
/// let hash_5 = s.state_hash(5)?;
/// s.rollback_to(5)?;                    // a late input for frame 6
/// s.step(&[100])?;
/// assert_eq!(s.head_iteration(), 6);
/// assert_eq!(s.state_hash(5)?, hash_5);
/// # Ok(())
/// # }
/// ```
pub struct Session {
    engine: Engine,
    module: GuestModule,
    imports: ImportsFn,
    step_export: Option<String>,
    max_memory: Option<u64>,
    fuel: Option<u64>,
    live: Live,
    recorder: Recorder,
    mode: CaptureMode,
    fallback: Option<String>,
    page_size: usize,
    /// Kernel mode: pages written since the head, already taken from the tracker.
    pending: Vec<u32>,
    /// Kernel mode: the pages the last step's capture was given.
    last_written: Vec<u32>,
    scratch: Vec<u32>,
    globals: Vec<rewind::GlobalValue>,
    /// Full-scan mode: whether live memory is known to equal the head.
    at_head: bool,
    /// Auto mode with a working tracker: kernel pages and a full scan alternate as
    /// the write rate asks (see `adapt`); in full-scan mode the tracker is suspended.
    adaptive: bool,
    adapt: Adapt,
    /// Every page index, for a full scan staged through the pipeline.
    all_pages: Vec<u32>,
    /// A failed step could not be undone.
    poisoned: bool,
    hooks: Vec<Hook>,
    instance_hooks: Vec<InstanceHook>,
    host_states: Option<HostStates>,
    /// Resumed from an archive, and no host state set since: the first
    /// [`Session::set_host_state`] puts back the stored one.
    resumed_host: bool,
    stats: SessionStats,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("mode", &self.mode)
            .field("head", &self.head_iteration())
            .field("memory_len", &self.memory_len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session on a module given as WebAssembly text or binary, with no
    /// imports. Captures the instantiated state as iteration 0.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let s = Session::new(wat, SessionOptions::new(4096)?)?; // WAT text or wasm bytes
    /// assert_eq!(s.head_iteration(), 0); // iteration 0 is the state after instantiation
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(wasm: impl AsRef<[u8]>, options: SessionOptions) -> Result<Self, SessionError> {
        Self::with_imports(wasm, options, |_| Imports::new())
    }

    /// A session whose module needs imports: `imports` builds them in a given
    /// store, and is called again for every re-instantiation (each in a
    /// fresh store).
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let wat = r#"(module (import "env" "input" (func $input (result i64))) (memory (export "memory") 1)
    ///   (func (export "step") (param i64) (i64.store (i32.const 0) (call $input))))"#;
    /// let mut s = Session::with_imports(wat, SessionOptions::new(4096)?, |store| {
    ///     let input = wasmer::Function::new_typed(store, || 42i64);
    ///     wasmer::imports! { "env" => { "input" => input } }
    /// })?;
    /// s.step(&[])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_imports(
        wasm: impl AsRef<[u8]>,
        options: SessionOptions,
        imports: impl FnMut(&mut Store) -> Imports + 'static,
    ) -> Result<Self, SessionError> {
        let engine = match options.fuel {
            Some(points) => metered_engine(points),
            None => Store::default().engine().clone(),
        };
        let module = GuestModule::from_wat(&engine, wasm)?;
        Self::from_module(engine, module, options, imports)
    }

    /// A session on an already checked module, compiled with `engine`.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let engine = wasmer::Store::default().engine().clone();
    /// let module = GuestModule::new(&engine, &wasmer::wat2wasm(wat.as_bytes())?)?;
    /// let s = Session::from_module(engine, module, SessionOptions::new(4096)?, |_| wasmer::Imports::new())?;
    /// # let _ = s;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_module(
        engine: Engine,
        module: GuestModule,
        options: SessionOptions,
        imports: impl FnMut(&mut Store) -> Imports + 'static,
    ) -> Result<Self, SessionError> {
        Self::from_module_with_setup(engine, module, options, imports, |_, _| Ok(())).map(|(s, ())| s)
    }

    /// Like [`from_module`](Self::from_module), running `setup` on the fresh
    /// instance before iteration 0 is captured (its writes are part of
    /// iteration 0) and returning what it returns, e.g. the handles of a
    /// world the host-driven frames step.
    ///
    /// `setup` runs once: a later re-instantiation (a rollback that shrinks
    /// memory) restores memory and globals from history instead, so whatever
    /// setup built in the guest's state is back, and guest pointers it
    /// returned stay valid.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let engine = wasmer::Store::default().engine().clone();
    /// let module = GuestModule::new(&engine, &wasmer::wat2wasm(wat.as_bytes())?)?;
    /// // Setup runs before iteration 0 is captured: write a level into memory.
    /// let (s, pages) = Session::from_module_with_setup(engine, module, SessionOptions::new(4096)?, |_| wasmer::Imports::new(), |store, guest| {
    ///     guest.memory().view(store).write(0, b"level 1")?;
    ///     Ok(guest.memory().view(store).data_size() / 4096)
    /// })?;
    /// assert_eq!(pages, 16);
    /// let mut level = [0u8; 7];
    /// s.recorder().read(0, 0, &mut level)?;
    /// assert_eq!(&level, b"level 1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_module_with_setup<T>(
        engine: Engine,
        module: GuestModule,
        options: SessionOptions,
        imports: impl FnMut(&mut Store) -> Imports + 'static,
        setup: impl FnOnce(&mut Store, &Guest) -> Result<T, Box<dyn std::error::Error + Send + Sync>>,
    ) -> Result<(Self, T), SessionError> {
        let mut imports: ImportsFn = Box::new(imports);
        let (mut recorder, resume_at) = open_recorder(&options)?;
        let page_size = recorder.history().page_size().bytes();
        let (mut mode, mut fallback) = probe_capture_mode(options.capture)?;
        let mut live = Live::instantiate(
            &engine,
            &module,
            &mut imports,
            options.step_export.as_deref(),
            options.fuel,
        )?;
        // The archive names the globals as reports do (export name, else `$name`).
        recorder.set_global_names(
            live.guest
                .globals()
                .iter()
                .map(|g| match (&g.export, &g.name) {
                    (None, None) => None,
                    _ => Some(g.label()),
                })
                .collect(),
        );
        if mode == CaptureMode::KernelDirty {
            match live.guest.dirty_tracker(&live.store) {
                Ok(t) => live.tracker = Some(t),
                Err(e) if options.capture == CapturePreference::Auto => {
                    mode = CaptureMode::FullScan;
                    fallback = Some(rewind::error_chain(&e));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut session = Self {
            engine,
            module,
            imports,
            step_export: options.step_export,
            max_memory: options.max_memory,
            fuel: options.fuel,
            live,
            recorder,
            mode,
            fallback,
            page_size,
            pending: Vec::new(),
            last_written: Vec::new(),
            scratch: Vec::new(),
            globals: Vec::new(),
            at_head: false,
            adaptive: options.capture == CapturePreference::Auto && mode == CaptureMode::KernelDirty,
            adapt: Adapt::default(),
            all_pages: Vec::new(),
            poisoned: false,
            hooks: Vec::new(),
            instance_hooks: Vec::new(),
            host_states: None,
            resumed_host: resume_at.is_some(),
            stats: SessionStats::default(),
        };
        session
            .live
            .refill()
            .map_err(|e| SessionError::Setup { source: Box::new(e) })?;
        let value = setup(&mut session.live.store, &session.live.guest).map_err(|source| {
            match &session.live.fuel {
                Some(fuel) if fuel.is_exhausted(&mut session.live.store) => SessionError::OutOfFuel {
                    iteration: 0,
                    fuel: fuel.per_step,
                },
                _ => SessionError::Setup { source },
            }
        })?;
        let len = session.memory_len();
        if let Some(limit) = session.max_memory.filter(|&l| len > l) {
            return Err(SessionError::MemoryLimit {
                iteration: 0,
                len,
                limit,
            });
        }
        if let Some(iteration) = resume_at {
            // Memory, size and globals from the history, into a fresh instance (nothing
            // is known about live memory, so every page is restored); the head moves
            // there.
            let target_len = session.target_len(iteration)?;
            session.restore_fresh(iteration, target_len, Instant::now())?;
            session.stats = SessionStats::default();
            return Ok((session, value));
        }
        // Iteration 0: everything is hashed (there is no previous snapshot).
        session.capture(0, None, true, None)?;
        Ok((session, value))
    }

    /// Append what the archive does not hold yet (with [`SessionOptions::archive`]:
    /// the head after a rollback, records of [`rewind::Durability::Manual`] appends)
    /// and sync it to disk. A no-op without an archive.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// s.step(&[1])?;
    /// s.sync()?; // without an archive: nothing to do
    /// # Ok(())
    /// # }
    /// ```
    pub fn sync(&mut self) -> Result<(), SessionError> {
        Ok(self.recorder.sync()?)
    }

    /// The capture mode in use.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// println!("capturing with {}", s.mode());
    /// # Ok(())
    /// # }
    /// ```
    pub fn mode(&self) -> CaptureMode {
        self.mode
    }

    /// Why the session runs in full-scan mode, if it does.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let s = Session::new(wat, SessionOptions::new(4096)?.capture(CapturePreference::FullScan))?;
    /// assert_eq!(s.fallback_reason(), Some("full scan requested"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The step ABI the guest uses.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// assert_eq!(s.step_abi(), StepAbi::Word);
    /// # Ok(())
    /// # }
    /// ```
    pub fn step_abi(&self) -> StepAbi {
        self.live.abi()
    }

    /// The iteration at the head (the live state's iteration, between steps).
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// s.step(&[1])?;
    /// assert_eq!(s.head_iteration(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn head_iteration(&self) -> u64 {
        self.recorder.head_iteration().unwrap_or(0)
    }

    /// The state hash of `iteration` on the current timeline (covering the host
    /// state too when [`set_host_state`](Self::set_host_state) asked for it).
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// let stepped = s.step(&[1])?.state_hash;
    /// assert_eq!(s.state_hash(1)?, stepped);
    /// let parsed: rewind::StateHash = stepped.to_string().parse()?; // as a peer receives it
    /// assert_eq!(parsed, stepped);
    /// # Ok(())
    /// # }
    /// ```
    pub fn state_hash(&self, iteration: u64) -> Result<StateHash, SessionError> {
        let guest = self.recorder.state_hash(iteration)?;
        Ok(self.reported_hash(iteration, guest))
    }

    /// Records `host`'s state with every iteration from now on: saved after each
    /// step (and now, as the head's), put back on every rollback before the
    /// [`on_rollback`](Self::on_rollback) hooks run, dropped with the iterations
    /// the policy collects. With `in_state_hash`, every state hash the session
    /// reports ([`state_hash`](Self::state_hash), [`StepReport::state_hash`],
    /// [`RollbackReport::state_hash`], [`check`](Self::check)) covers the host
    /// state as well as the guest's. Replaces an earlier host state (the states
    /// it recorded stay with their iterations).
    ///
    /// The states are kept in the history, beside each record's input, and so
    /// reach the archive. On a session resumed from an archive
    /// ([`SessionOptions::resume_from`]) the first call puts the state stored
    /// with the resumed iteration back into `host` ([`HostState::load`]) instead
    /// of recording `host`'s: the guest and its host continue together. If the
    /// host refuses it, the session needs a rollback as after a failed one
    /// ([`SessionError::NeedsRollback`] from the next step; `rollback_to(head)`
    /// reports the host's error).
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// use rewind_wasmer::host_state::{HostState, HostStateError};
    /// use rewind_wasmer::{Session, SessionOptions};
    ///
    /// struct Counter(Rc<Cell<u64>>);
    /// impl HostState for Counter {
    ///     fn save(&mut self) -> Vec<u8> { self.0.get().to_le_bytes().to_vec() }
    ///     fn load(&mut self, b: &[u8]) -> Result<(), HostStateError> {
    ///         let b: [u8; 8] = b.try_into().map_err(|_| HostStateError::new("8 bytes"))?;
    ///         Ok(self.0.set(u64::from_le_bytes(b)))
    ///     }
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let wat = r#"(module (memory (export "memory") 1) (func (export "step") (param i64)))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?.seed(1))?;
    /// let calls = Rc::new(Cell::new(0));
    /// s.set_host_state(Counter(calls.clone()), true);
    /// for _ in 0..5 {
    ///     calls.set(calls.get() + 1); // what a host import would do
    ///     s.step(&[0])?;
    /// }
    /// s.rollback_to(2)?;
    /// assert_eq!(calls.get(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_host_state(&mut self, host: impl HostState + 'static, in_state_hash: bool) {
        let hasher = *self.recorder.history().store().hasher();
        let mut states = HostStates::new(Box::new(host), hasher, in_state_hash);
        let head = self.head_iteration();
        let stored = std::mem::take(&mut self.resumed_host)
            .then(|| self.host_state(head))
            .flatten();
        match stored {
            Some(bytes) => {
                if states.load_bytes(bytes).is_err() {
                    self.poisoned = true;
                }
            }
            None => {
                let bytes = states.save();
                // The head is on the timeline: this cannot fail.
                let _ = self.recorder.set_host_state(head, &bytes);
            }
        }
        self.host_states = Some(states);
    }

    /// The host state recorded with `iteration` of the timeline, as the
    /// [`HostState`] encoded it; `None` without a host state or for an iteration
    /// it does not hold.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// s.step(&[1])?;
    /// assert_eq!(s.host_state(1), None, "no host state was set");
    /// # Ok(())
    /// # }
    /// ```
    pub fn host_state(&self, iteration: u64) -> Option<&[u8]> {
        let history = self.recorder.history();
        history.host_state(history.at(iteration).ok()?.id())
    }

    /// Iterations holding a host state, and the distinct states among them (equal
    /// consecutive states share one copy).
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// assert_eq!(s.host_state_counts(), (0, 0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn host_state_counts(&self) -> (usize, usize) {
        HostStates::counts(self.recorder.history())
    }

    /// The hash the session reports for `iteration`, given the guest's own.
    fn reported_hash(&self, iteration: u64, guest: StateHash) -> StateHash {
        match &self.host_states {
            Some(h) if h.hashed() => h.state_hash(self.recorder.history(), iteration, guest),
            _ => guest,
        }
    }

    /// Puts back the host state of `iteration` (the head after a rollback).
    fn load_host_state(&mut self, iteration: u64) -> Result<(), SessionError> {
        match self.host_states.as_mut() {
            Some(states) => states
                .load(self.recorder.history(), iteration)
                .map_err(|source| SessionError::HostState { iteration, source }),
            None => Ok(()),
        }
    }

    /// The history and its reads (`read`, `blame`, `diff`, stats).
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// s.step(&[1])?;
    /// assert_eq!(s.recorder().history().len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Pin the record of `iteration` so the policy keeps it (e.g. the frame a peer
    /// reported a desync for, until it has been compared). Fails with
    /// [`rewind::Error::NotRetained`] when it is no longer retained.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?.policy(rewind::Policy::default().keep_last(4)))?;
    /// let checkpoint = s.pin(0)?; // a save point the window must not drop
    /// for frame in 1..=10u8 {
    ///     s.step(&[frame])?;
    /// }
    /// assert!(s.state_hash(0).is_ok());
    /// # let _ = checkpoint;
    /// # Ok(())
    /// # }
    /// ```
    pub fn pin(&mut self, iteration: u64) -> Result<RecordId, SessionError> {
        Ok(self.recorder.pin(iteration)?)
    }

    /// Unpin a record; true when it was pinned.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// let id = s.pin(0)?;
    /// assert!(s.unpin(id));
    /// assert!(!s.unpin(id), "already unpinned");
    /// # Ok(())
    /// # }
    /// ```
    pub fn unpin(&mut self, id: RecordId) -> bool {
        self.recorder.unpin(id)
    }

    /// Change the retention policy at run time (pins are kept), e.g. advance
    /// `keep_from` as peers confirm frames. Takes effect at the next step.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// for frame in 1..=10u8 {
    ///     s.step(&[frame])?;
    /// }
    /// s.set_policy(rewind::Policy::default().keep_from(8)); // peers confirmed frame 8
    /// s.step(&[11])?; // the GC step after it applies the policy
    /// assert!(s.state_hash(3).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_policy(&mut self, policy: Policy) {
        self.recorder.set_policy(policy);
    }

    /// The live guest (its instance, memory and globals). Instances are
    /// replaced on re-instantiation: do not keep handles across rollbacks.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// let memory = s.guest().memory().clone();
    /// assert_eq!(memory.view(s.store()).data_size(), 65536);
    /// # Ok(())
    /// # }
    /// ```
    pub fn guest(&self) -> &Guest {
        &self.live.guest
    }

    /// The live store.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// s.step(&[5])?;
    /// let mut sum = [0u8; 8];
    /// s.guest().memory().view(s.store()).read(4096, &mut sum)?;
    /// assert_eq!(i64::from_le_bytes(sum), 5);
    /// # Ok(())
    /// # }
    /// ```
    pub fn store(&self) -> &Store {
        &self.live.store
    }

    /// The live store, mutably: for host reads and writes of guest memory or
    /// calls of other exports between steps. Changes made here belong to the
    /// next recorded iteration; the store is replaced on re-instantiation.
    ///
    /// In a metered session ([`SessionOptions::fuel_per_step`]) the guest's
    /// budget is refilled here, so host calls between steps each get a full one.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// let step = s.guest().instance().exports.get_function("step")?.clone();
    /// // A call outside step() changes state the next capture records.
    /// step.call(s.store_mut(), &[wasmer::Value::I64(1)])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn store_mut(&mut self) -> &mut Store {
        // Full-scan mode has no record of what the caller writes.
        self.at_head = false;
        // Setting the two globals resolved and type-checked at instantiation
        // cannot fail; if it did, the next step's refill reports it.
        let _ = self.live.refill();
        &mut self.live.store
    }

    /// Current memory length in bytes.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// assert_eq!(s.memory_len(), 65536);
    /// # Ok(())
    /// # }
    /// ```
    pub fn memory_len(&self) -> u64 {
        self.live.guest.memory_len(&self.live.store) as u64
    }

    /// Counters.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// s.step(&[1])?;
    /// assert_eq!(s.stats().steps, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Registers host code to run after every rollback (including the
    /// automatic one after a failed step), with the iteration restored.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// let seen = std::rc::Rc::new(std::cell::Cell::new(None));
    /// let hook = seen.clone();
    /// s.on_rollback(move |iteration| hook.set(Some(iteration)));
    /// s.step(&[1])?;
    /// s.rollback_to(0)?;
    /// assert_eq!(seen.get(), Some(0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_rollback(&mut self, f: impl FnMut(u64) + 'static) {
        self.hooks.push(Box::new(f));
    }

    /// Registers host code to run whenever the module is instantiated afresh (a
    /// rollback to a smaller memory, or the undo of a failed step that grew it),
    /// with the new store and guest: the place to hand the host functions the
    /// new [`wasmer::Memory`]. Runs once the new instance holds the restored
    /// state, before the [`on_rollback`](Self::on_rollback) hooks.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let grow = r#"(module (memory (export "memory") 1)
    ///   (func (export "step") (param i64) (drop (memory.grow (i32.const 1)))))"#;
    /// let mut s = Session::new(grow, SessionOptions::new(4096)?)?;
    /// let fresh = std::rc::Rc::new(std::cell::Cell::new(0));
    /// let hook = fresh.clone();
    /// s.on_reinstantiate(move |_, _| hook.set(hook.get() + 1));
    /// s.step(&[])?;
    /// s.rollback_to(0)?; // memory must shrink: a fresh instance
    /// assert_eq!(fresh.get(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_reinstantiate(&mut self, f: impl FnMut(&mut Store, &Guest) + 'static) {
        self.instance_hooks.push(Box::new(f));
    }

    /// The pages the kernel reported written by the last step, sorted: what
    /// its capture hashed, besides pages added by a memory growth (those are
    /// always examined). Empty in full-scan mode, after a rollback and before
    /// the first step.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// s.step(&[1])?;
    /// if s.mode() == CaptureMode::KernelDirty {
    ///     assert_eq!(s.written_pages(), [1]); // the sum lives at 4096
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn written_pages(&self) -> &[u32] {
        &self.last_written
    }

    /// Runs the guest's step function with `input` and records the resulting
    /// state as iteration head + 1.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// let r = s.step(&3i64.to_le_bytes())?;
    /// assert_eq!(r.iteration, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn step(&mut self, input: &[u8]) -> Result<StepReport, SessionError> {
        self.live.check_input(input)?;
        self.step_inner(input, |live| live.run(input))
    }

    /// Runs one frame written by the host — `frame` gets the live store, the
    /// guest and `input` — and records the resulting state as iteration
    /// head + 1 with `input` as its recorded input. The frame may call any
    /// exports and write memory; an error from it (a trap, or a host error
    /// wrapped with [`wasmer::RuntimeError::user`]) is a failed step: undone,
    /// nothing recorded, [`SessionError::Trap`] returned ([`SessionError::OutOfFuel`]
    /// when the fuel ran out; [`SessionError::MemoryLimit`] and
    /// [`SessionError::Capture`] as for [`step`](Self::step)). Works with or
    /// without a step export; [`resimulate`](Self::resimulate) and
    /// [`replay`](Self::replay) need one, [`resimulate_with`](Self::resimulate_with)
    /// does not.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// // The host runs the frame: two guest steps, recorded as one iteration.
    /// s.step_with(&[2], |store, guest, input| {
    ///     let step = guest.instance().exports.get_typed_function::<i64, ()>(store, "step").map_err(|e| wasmer::RuntimeError::new(e.to_string()))?;
    ///     step.call(store, i64::from(input[0]))?;
    ///     step.call(store, i64::from(input[0]))
    /// })?;
    /// let mut sum = [0u8; 8];
    /// s.recorder().read(1, 4096, &mut sum)?;
    /// assert_eq!(i64::from_le_bytes(sum), 4);
    /// # Ok(())
    /// # }
    /// ```
    pub fn step_with<F>(&mut self, input: &[u8], frame: F) -> Result<StepReport, SessionError>
    where
        F: FnOnce(&mut Store, &Guest, &[u8]) -> Result<(), wasmer::RuntimeError>,
    {
        self.step_inner(input, |live| frame(&mut live.store, &live.guest, input))
    }

    fn step_inner(
        &mut self,
        input: &[u8],
        run: impl FnOnce(&mut Live) -> Result<(), wasmer::RuntimeError>,
    ) -> Result<StepReport, SessionError> {
        if self.poisoned {
            return Err(SessionError::NeedsRollback {
                head: self.head_iteration(),
            });
        }
        let iteration = self.head_iteration() + 1;
        self.at_head = false;
        self.last_written.clear();
        let t0 = Instant::now();
        let ran = self.live.refill().and_then(|()| run(&mut self.live));
        let run_time = t0.elapsed();
        if let Err(source) = ran {
            let failure = self.live.frame_error(iteration, source);
            return Err(self.undo_step(iteration, failure));
        }
        let len = self.memory_len();
        if let Some(limit) = self.max_memory.filter(|&l| len > l) {
            return Err(self.undo_step(
                iteration,
                SessionError::MemoryLimit {
                    iteration,
                    len,
                    limit,
                },
            ));
        }
        // The host's state after the frame travels with its capture (to the worker
        // when pipelined) and is recorded beside it.
        let host = self.host_states.as_mut().map(HostStates::save);
        match self.capture(iteration, Some(input), false, host.as_deref()) {
            Ok(mut report) => {
                report.run_time = run_time;
                // A capture pending in the pipeline reports the guest's own hash
                // placeholder: its hash is not known yet, so the step does not wait.
                if !report.pending {
                    report.state_hash = self.reported_hash(iteration, report.state_hash);
                }
                self.stats.steps += 1;
                self.stats.pages_hashed += report.pages_hashed as u64;
                self.stats.pages_changed += report.pages_changed as u64;
                self.stats.capture_time += report.capture_time;
                Ok(report)
            }
            Err(e) => Err(self.undo_step(
                iteration,
                SessionError::Capture {
                    iteration,
                    source: Box::new(e),
                },
            )),
        }
    }

    /// Restores `iteration` (memory, memory size, every mutable global) and
    /// makes it the head, then runs the rollback hooks. When the target's
    /// memory is smaller than the live memory the module is re-instantiated in
    /// a fresh store (see [`RollbackReport::reinstantiated`]).
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// let at_0 = s.state_hash(0)?;
    /// s.step(&[1])?;
    /// assert_eq!(s.rollback_to(0)?.state_hash, at_0);
    /// assert_eq!(s.head_iteration(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn rollback_to(&mut self, iteration: u64) -> Result<RollbackReport, SessionError> {
        let mut report = self.restore(iteration)?;
        if let Err(e) = self.load_host_state(iteration) {
            // The guest is at `iteration`, its host is not: unknown until a rollback succeeds.
            self.poisoned = true;
            return Err(e);
        }
        report.state_hash = self.reported_hash(iteration, report.state_hash);
        self.poisoned = false;
        self.stats.rollbacks += 1;
        self.run_hooks(iteration);
        Ok(report)
    }

    /// The inputs recorded for iterations `from..=to` of the timeline.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// s.step(&[1])?;
    /// s.step(&[2])?;
    /// assert_eq!(s.recorded_inputs(1, 2)?, vec![vec![1], vec![2]]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn recorded_inputs(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, SessionError> {
        let history = self.recorder.history();
        (from..=to)
            .map(|i| {
                let id = history.at(i).map_err(rewind::Error::from)?.id();
                Ok(history.input(id).unwrap_or_default().to_vec())
            })
            .collect()
    }

    /// Rolls back to `from` and steps through `inputs` (iterations `from + 1`
    /// onwards). A step that fails stops the re-simulation with its error; the
    /// steps before it stay recorded.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// s.step(&[1])?;
    /// s.step(&[2])?;
    /// // The input of frame 2 was late: it was 5, not 2.
    /// let r = s.resimulate(1, [[5u8]])?;
    /// assert_eq!(s.head_iteration(), 2);
    /// assert_eq!(r.steps[0].iteration, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn resimulate<I>(&mut self, from: u64, inputs: I) -> Result<ResimulateReport, SessionError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        if self.live.step.is_none() {
            // Refuse before rolling back: the steps could not run.
            return Err(SessionError::HostDriven);
        }
        let rollback = self.rollback_to(from)?;
        let steps = inputs
            .into_iter()
            .map(|input| self.step(input.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(ResimulateReport { rollback, steps })
    }

    /// Rolls back to `from` and runs one host-driven frame per input (as
    /// [`step_with`](Self::step_with)), for sessions without a step export.
    /// `frame` runs once per input, in order, in the instance live at that step
    /// (after a re-instantiation, the new one).
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let wat = r#"(module (memory (export "memory") 1) (func (export "frame") (param i32) (i32.store (i32.const 0) (local.get 0))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?.host_driven())?;
    /// let frame = |store: &mut wasmer::Store, guest: &Guest, input: &[u8]| {
    ///     let f = guest.instance().exports.get_typed_function::<i32, ()>(store, "frame").map_err(|e| wasmer::RuntimeError::new(e.to_string()))?;
    ///     f.call(store, i32::from(input[0]))
    /// };
    /// s.step_with(&[1], frame)?;
    /// let r = s.resimulate_with(0, [[9u8]], frame)?;
    /// assert_eq!(r.steps.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn resimulate_with<I, F>(
        &mut self,
        from: u64,
        inputs: I,
        mut frame: F,
    ) -> Result<ResimulateReport, SessionError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
        F: FnMut(&mut Store, &Guest, &[u8]) -> Result<(), wasmer::RuntimeError>,
    {
        let rollback = self.rollback_to(from)?;
        let steps = inputs
            .into_iter()
            .map(|input| self.step_with(input.as_ref(), &mut frame))
            .collect::<Result<_, _>>()?;
        Ok(ResimulateReport { rollback, steps })
    }

    /// Re-simulates from `from` with `inputs` and compares the state hash of
    /// each iteration `from + 1 + k` with `expected[k]` (from a peer or a
    /// straight run; `expected` may be shorter than `inputs`).
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// let expected: Vec<_> = (1..=3u8).map(|i| s.step(&[i]).map(|r| r.state_hash)).collect::<Result<_, _>>()?;
    /// // Replaying other inputs from 0 diverges at iteration 2.
    /// let r = s.replay(0, [[1u8], [7], [3]], &expected)?;
    /// assert_eq!(r.divergence.map(|d| d.iteration), Some(2));
    /// # Ok(())
    /// # }
    /// ```
    pub fn replay<I>(
        &mut self,
        from: u64,
        inputs: I,
        expected: &[StateHash],
    ) -> Result<ReplayReport, SessionError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let resimulated = self.resimulate(from, inputs)?;
        self.replay_report(from, resimulated, expected)
    }

    /// [`replay`](Self::replay) for host-driven sessions: each input runs
    /// through `frame` as in [`resimulate_with`](Self::resimulate_with).
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let wat = r#"(module (memory (export "memory") 1) (func (export "frame") (param i32) (i32.store (i32.const 0) (local.get 0))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?.host_driven())?;
    /// let frame = |store: &mut wasmer::Store, guest: &Guest, input: &[u8]| {
    ///     let f = guest.instance().exports.get_typed_function::<i32, ()>(store, "frame").map_err(|e| wasmer::RuntimeError::new(e.to_string()))?;
    ///     f.call(store, i32::from(input[0]))
    /// };
    /// let expected = vec![s.step_with(&[4], frame)?.state_hash];
    /// let r = s.replay_with(0, [[4u8]], &expected, frame)?;
    /// assert!(r.divergence.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn replay_with<I, F>(
        &mut self,
        from: u64,
        inputs: I,
        expected: &[StateHash],
        frame: F,
    ) -> Result<ReplayReport, SessionError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
        F: FnMut(&mut Store, &Guest, &[u8]) -> Result<(), wasmer::RuntimeError>,
    {
        let resimulated = self.resimulate_with(from, inputs, frame)?;
        self.replay_report(from, resimulated, expected)
    }

    fn replay_report(
        &self,
        from: u64,
        resimulated: ResimulateReport,
        expected: &[StateHash],
    ) -> Result<ReplayReport, SessionError> {
        let divergence = self.check(
            expected
                .iter()
                .enumerate()
                .map(|(k, &h)| (from + 1 + k as u64, h)),
        )?;
        Ok(ReplayReport {
            resimulated,
            divergence,
        })
    }

    /// Compares the timeline's state hashes with `(iteration, expected hash)`
    /// pairs and returns the first mismatch (in the order given). The
    /// differing pages are filled in when this history holds a snapshot with
    /// the expected hash at that iteration (for example the superseded branch
    /// of an earlier run); for a peer's hash, use
    /// [`compare_snapshot`](Self::compare_snapshot) with the peer's snapshot.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// let h1 = s.step(&[1])?.state_hash;
    /// assert_eq!(s.check([(1, h1)])?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn check(
        &self,
        expected: impl IntoIterator<Item = (u64, StateHash)>,
    ) -> Result<Option<Divergence>, SessionError> {
        let history = self.recorder.history();
        for (iteration, want) in expected {
            let record = history.at(iteration).map_err(rewind::Error::from)?;
            let found = self.reported_hash(iteration, record.state_hash());
            if found == want {
                continue;
            }
            let pages = history
                .records()
                .find(|r| r.iteration() == iteration && r.state_hash() == want)
                .map(|r| PageDivergence::between(record.snapshot(), r.snapshot()));
            return Ok(Some(Divergence {
                iteration,
                expected: want,
                found,
                pages,
            }));
        }
        Ok(None)
    }

    /// The pages in which `iteration` of the timeline differs from `reference`
    /// (a snapshot of a history with the same page size and seed, e.g. a
    /// peer's or a straight run's); `None` when the state hashes are equal.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
    /// s.step(&[1])?;
    /// let same = s.recorder().history().at(1)?.snapshot().clone();
    /// assert_eq!(s.compare_snapshot(1, &same)?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn compare_snapshot(
        &self,
        iteration: u64,
        reference: &Snapshot,
    ) -> Result<Option<PageDivergence>, SessionError> {
        let record = self
            .recorder
            .history()
            .at(iteration)
            .map_err(rewind::Error::from)?;
        if record.state_hash() == reference.state_hash() {
            return Ok(None);
        }
        Ok(Some(PageDivergence::between(record.snapshot(), reference)))
    }

    fn run_hooks(&mut self, iteration: u64) {
        for hook in &mut self.hooks {
            hook(iteration);
        }
    }

    /// Undoes a failed step by restoring the head; returns the error to report.
    fn undo_step(&mut self, iteration: u64, failure: SessionError) -> SessionError {
        self.stats.failed_steps += 1;
        let head = self.head_iteration();
        match self.restore(head).and_then(|_| self.load_host_state(head)) {
            Ok(()) => {
                self.run_hooks(head);
                failure
            }
            Err(e) => {
                self.poisoned = true;
                SessionError::RestoreAfterFailure {
                    iteration,
                    failure: Box::new(failure),
                    source: Box::new(e),
                }
            }
        }
    }

    /// Stops kernel tracking and continues in full-scan mode.
    fn downgrade(&mut self, why: String) {
        self.live.tracker = None;
        self.adaptive = false;
        self.mode = CaptureMode::FullScan;
        self.fallback = Some(why);
        self.pending.clear();
        self.at_head = false;
    }

    /// Auto's switch between kernel pages and a full scan, counted in the stats. The
    /// tracker stays: suspended in full-scan mode (written pages stay writable), re-armed
    /// by the capture that switches back.
    fn switch_mode(&mut self, mode: CaptureMode, why: Option<String>) {
        if self.mode != mode {
            self.mode = mode;
            self.fallback = why;
            self.stats.mode_switches += 1;
        }
    }

    /// Kernel mode: moves the pages written since the last scan into
    /// `pending`. Returns false (after downgrading) when the tracker failed.
    fn sync_dirty(&mut self) -> bool {
        let Some(tracker) = self.live.tracker.as_mut() else {
            return false;
        };
        match self
            .live
            .guest
            .take_written(&self.live.store, tracker, self.page_size, &mut self.scratch)
        {
            Ok(()) => {
                if self.pending.is_empty() {
                    std::mem::swap(&mut self.pending, &mut self.scratch);
                } else {
                    self.pending.extend_from_slice(&self.scratch);
                    self.pending.sort_unstable();
                    self.pending.dedup();
                }
                true
            }
            Err(e) => {
                self.downgrade(format!(
                    "kernel dirty tracking failed: {}",
                    rewind::error_chain(&e)
                ));
                false
            }
        }
    }

    /// Captures the live state as `iteration`.
    fn capture(
        &mut self,
        iteration: u64,
        input: Option<&[u8]>,
        full: bool,
        host: Option<&[u8]>,
    ) -> Result<StepReport, SessionError> {
        let t0 = Instant::now();
        // Auto with the tracker suspended: every `REPROBE_EVERY` scans, re-arm it here
        // (this capture hashes every page, so nothing written meanwhile is missed).
        let rearm =
            self.adaptive && self.mode == CaptureMode::FullScan && !full && self.adapt.before_scan_capture();
        let hinted = !full && self.mode == CaptureMode::KernelDirty && self.sync_dirty();
        if (full || rearm) && self.live.tracker.is_some() {
            // Reset the tracker: everything is hashed anyway.
            self.sync_dirty();
        }
        if rearm && self.live.tracker.is_some() {
            self.switch_mode(CaptureMode::KernelDirty, None);
        }
        let scan_time = t0.elapsed();
        self.live
            .guest
            .read_global_values(&mut self.live.store, &mut self.globals)?;
        // Pipelined without kernel pages: stage every page (the caller copies, the
        // worker hashes), once the history has a head to compare with.
        let pages = self.memory_len().div_ceil(self.page_size as u64) as u32;
        self.all_pages.clear();
        if !hinted && self.recorder.is_pipelined() && self.recorder.head_iteration().is_some() {
            self.all_pages.extend(0..pages);
        }
        let hint = if hinted {
            Some(self.pending.as_slice())
        } else {
            (!self.all_pages.is_empty()).then_some(self.all_pages.as_slice())
        };
        let (recorder, globals) = (&mut self.recorder, &self.globals);
        // Pipelined: return once the written pages are copied; the worker records them.
        let staged = recorder.is_pipelined() && hint.is_some();
        let staged_before = recorder.pipeline_stats().pages_staged;
        let report = self.live.guest.with_memory(&mut self.live.store, |memory| {
            if staged {
                recorder
                    .submit_with_host_state(iteration, memory, globals, hint, input, host)
                    .map(|ticket| CaptureReport {
                        record: ticket.record,
                        state_hash: StateHash::default(),
                        pages_hashed: 0,
                        pages_changed: 0,
                        dedup: 0,
                        bytes_stored: 0,
                    })
            } else {
                recorder.capture_with_host_state(iteration, memory, globals, hint, input, host)
            }
        })??;
        let pages_hashed = if staged {
            (self.recorder.pipeline_stats().pages_staged - staged_before) as usize
        } else {
            report.pages_hashed
        };
        if hinted {
            // Auto: a guest that keeps writing most of its pages is cheaper to scan.
            if self.adaptive
                && self
                    .adapt
                    .after_kernel_capture(self.pending.len(), pages as usize)
            {
                self.switch_mode(
                    CaptureMode::FullScan,
                    Some(format!(
                        "more than half of the pages were written in {} captures in a row: \
                         full scan, with the write rate measured again every {} captures",
                        adapt::HIGH_RUN,
                        adapt::REPROBE_EVERY
                    )),
                );
            }
            std::mem::swap(&mut self.pending, &mut self.last_written);
        }
        self.pending.clear();
        self.at_head = true;
        Ok(StepReport {
            iteration,
            record: report.record,
            state_hash: report.state_hash,
            pages_hashed,
            pages_changed: report.pages_changed,
            bytes_stored: report.bytes_stored,
            pending: staged,
            memory_len: self.memory_len(),
            run_time: Duration::ZERO,
            capture_time: t0.elapsed(),
            scan_time,
        })
    }

    /// The memory length recorded at `iteration`, once its globals are checked against
    /// the guest's (so a restore cannot fail half way on them).
    fn target_len(&self, iteration: u64) -> Result<u64, SessionError> {
        let snapshot = self
            .recorder
            .history()
            .at(iteration)
            .map_err(rewind::Error::from)?
            .snapshot();
        self.live.guest.check_global_values(snapshot.globals())?;
        Ok(snapshot.memory_len())
    }

    /// Restores `iteration` into the live instance, or into a fresh one when
    /// memory must shrink. No hooks.
    fn restore(&mut self, iteration: u64) -> Result<RollbackReport, SessionError> {
        let t0 = Instant::now();
        self.last_written.clear();
        let target_len = self.target_len(iteration)?;
        let live_len = self.memory_len();
        if target_len < live_len {
            return self.restore_fresh(iteration, target_len, t0);
        }
        if target_len > live_len {
            self.at_head = false;
            self.live.guest.grow_to(&mut self.live.store, target_len)?;
        }
        let kernel = self.mode == CaptureMode::KernelDirty && self.sync_dirty();
        let live = if kernel {
            LiveMemory::WrittenSinceHead(&self.pending)
        } else if self.at_head {
            LiveMemory::AtHead
        } else {
            LiveMemory::Unknown
        };
        let recorder = &mut self.recorder;
        let rollback = self.live.guest.with_memory_mut(&mut self.live.store, |memory| {
            recorder.rollback_to(iteration, memory, live)
        })??;
        self.live
            .guest
            .write_global_values(&mut self.live.store, &rollback.globals)?;
        // The restore's own writes are not guest writes: forget them.
        if self.mode == CaptureMode::KernelDirty {
            self.sync_dirty();
        }
        self.pending.clear();
        self.at_head = true;
        let report = RollbackReport {
            iteration,
            state_hash: rollback.state_hash,
            pages_written: rollback.restored.pages_written,
            pages_hashed: rollback.restored.pages_hashed,
            reinstantiated: false,
            memory_len: self.memory_len(),
            time: t0.elapsed(),
        };
        self.stats.rollback_time += report.time;
        Ok(report)
    }

    /// Instantiates the module in a fresh store, grows its memory to the
    /// target's length, restores every page (hashing all of them: nothing is
    /// known about a fresh memory) and the globals, then replaces the live
    /// instance and re-creates the dirty tracker. On error the live instance
    /// and the history are unchanged.
    fn restore_fresh(
        &mut self,
        iteration: u64,
        target_len: u64,
        t0: Instant,
    ) -> Result<RollbackReport, SessionError> {
        let mut fresh = Live::instantiate(
            &self.engine,
            &self.module,
            &mut self.imports,
            self.step_export.as_deref(),
            self.fuel,
        )?;
        fresh.guest.grow_to(&mut fresh.store, target_len)?;
        let recorder = &mut self.recorder;
        let rollback = fresh.guest.with_memory_mut(&mut fresh.store, |memory| {
            recorder.rollback_to(iteration, memory, LiveMemory::Unknown)
        })??;
        fresh
            .guest
            .write_global_values(&mut fresh.store, &rollback.globals)?;
        // Drop the old instance (tracker first, then its store and its
        // memory reservation) before tracking the new one.
        self.live = fresh;
        self.pending.clear();
        self.at_head = true;
        if self.mode == CaptureMode::KernelDirty || self.adaptive {
            match self.live.guest.dirty_tracker(&self.live.store) {
                Ok(t) => self.live.tracker = Some(t),
                Err(e) => self.downgrade(format!(
                    "re-creating the dirty tracker after re-instantiation failed: {}",
                    rewind::error_chain(&e)
                )),
            }
        }
        self.stats.reinstantiations += 1;
        for hook in &mut self.instance_hooks {
            hook(&mut self.live.store, &self.live.guest);
        }
        let report = RollbackReport {
            iteration,
            state_hash: rollback.state_hash,
            pages_written: rollback.restored.pages_written,
            pages_hashed: rollback.restored.pages_hashed,
            reinstantiated: true,
            memory_len: self.memory_len(),
            time: t0.elapsed(),
        };
        self.stats.rollback_time += report.time;
        Ok(report)
    }
}

/// The recorder a new session records into: the archive it resumes, the state a
/// bundle joined it at, or a new one; and the iteration to restore when it resumes or
/// joins.
fn open_recorder(options: &SessionOptions) -> Result<(Recorder, Option<u64>), SessionError> {
    Ok(match (&options.resume, &options.joined) {
        (Some(r), _) => (
            Recorder::open(&r.path, r.durability, options.recorder.policy.clone())?,
            Some(r.iteration),
        ),
        (None, Some(state)) => (
            Recorder::from_bundle(options.recorder.clone(), state)?,
            Some(state.iteration()),
        ),
        (None, None) => (Recorder::new(options.recorder.clone())?, None),
    })
}

/// The capture mode a preference gets on this kernel, and why it is a full scan when
/// it is one. Kernel dirty tracking asked for but unavailable is
/// [`SessionError::KernelUnavailable`].
fn probe_capture_mode(preference: CapturePreference) -> Result<(CaptureMode, Option<String>), SessionError> {
    Ok(match preference {
        CapturePreference::FullScan => (CaptureMode::FullScan, Some("full scan requested".to_owned())),
        CapturePreference::Auto | CapturePreference::KernelDirty => match DirtyTracker::probe() {
            Availability::Available => (CaptureMode::KernelDirty, None),
            Availability::Unavailable(why) => {
                if preference == CapturePreference::KernelDirty {
                    return Err(SessionError::KernelUnavailable { source: why });
                }
                (CaptureMode::FullScan, Some(why.to_string()))
            }
        },
    })
}
