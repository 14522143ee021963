//! How a [`Session`] is set up: capture modes, the step ABI, [`SessionOptions`].

use rewind::{Durability, Options, PipelineOptions, Policy};
use wasmer::Engine;

use super::*;

/// How changed pages are found at each capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
/// match s.mode() {
///     CaptureMode::KernelDirty => assert!(s.fallback_reason().is_none()),
///     CaptureMode::FullScan => println!("hashing every page: {:?}", s.fallback_reason()),
/// }
/// # s.step(&[1])?;
/// # Ok(())
/// # }
/// ```
pub enum CaptureMode {
    /// The kernel reports the pages written since the last capture
    /// (userfaultfd write-protect + `PAGEMAP_SCAN`): only those are hashed.
    KernelDirty,
    /// Every page is hashed at every capture.
    FullScan,
}

impl std::fmt::Display for CaptureMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::KernelDirty => "kernel dirty pages (userfaultfd WP-async + PAGEMAP_SCAN)",
            Self::FullScan => "full scan (every page hashed)",
        })
    }
}

/// Which capture mode a session should use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let s = Session::new(wat, SessionOptions::new(4096)?.capture(CapturePreference::FullScan))?;
/// assert_eq!(s.mode(), CaptureMode::FullScan);
/// # Ok(())
/// # }
/// ```
pub enum CapturePreference {
    /// Kernel dirty pages when [`DirtyTracker::probe`] says they work, else a
    /// full scan; with kernel pages, a full scan for as long as the guest writes most
    /// of its pages (after 3 captures in a row with more than half written, the
    /// tracker is suspended; every 64 full-scan captures the write rate is measured
    /// again). [`Session::mode`](crate::Session::mode) tells the mode of the moment
    /// and [`SessionStats::mode_switches`](crate::SessionStats::mode_switches) counts
    /// the switches.
    #[default]
    Auto,
    /// Kernel dirty pages or an error at setup.
    KernelDirty,
    /// Always hash every page.
    FullScan,
}

/// The step ABI found in the guest (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
/// assert_eq!(s.step_abi(), StepAbi::Word); // step(i64): inputs of up to 8 bytes
/// # Ok(())
/// # }
/// ```
pub enum StepAbi {
    /// `step(i64)`: inputs of at most 8 bytes.
    Word,
    /// `step(i32 len)` with the input written at `ptr` first.
    Buffer {
        /// Address of the input buffer (`input_ptr`).
        ptr: u32,
        /// Its capacity in bytes (`input_cap`).
        capacity: u32,
    },
    /// No step export ([`SessionOptions::host_driven`]): frames run through
    /// [`Session::step_with`].
    HostDriven,
}

/// How a [`Session`] is set up.
#[derive(Clone, Debug)]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let options = SessionOptions::new(4096)?
///     .seed(7)
///     .policy(rewind::Policy::default().keep_last(600))
///     .max_memory(16 << 20);
/// let mut s = Session::new(wat, options)?;
/// s.step(&[1])?;
/// # Ok(())
/// # }
/// ```
pub struct SessionOptions {
    pub(crate) recorder: Options,
    /// `None`: host-driven.
    pub(crate) step_export: Option<String>,
    pub(crate) capture: CapturePreference,
    pub(crate) max_memory: Option<u64>,
    pub(crate) fuel: Option<u64>,
    pub(crate) resume: Option<Resume>,
    /// Start from a state handed over by a late-joiner bundle.
    pub(crate) joined: Option<std::sync::Arc<rewind::BundleState>>,
}

/// Where a resumed session starts ([`SessionOptions::resume_from`]).
#[derive(Clone, Debug)]
pub(crate) struct Resume {
    pub(crate) path: std::path::PathBuf,
    pub(crate) iteration: u64,
    pub(crate) durability: Durability,
}

impl SessionOptions {
    /// Options with rewind pages of `page_size` bytes (a power of two from
    /// 1 KiB to 64 KiB; 4 KiB matches the kernel's dirty granularity), a random
    /// hash seed, a policy that keeps everything, step export `"step"`, and
    /// [`CapturePreference::Auto`].
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// assert!(SessionOptions::new(4096).is_ok());
    /// assert!(SessionOptions::new(3000).is_err(), "not a power of two");
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(page_size: u64) -> Result<Self, SessionError> {
        Ok(Self {
            recorder: Options::new(page_size)?,
            step_export: Some("step".into()),
            capture: CapturePreference::Auto,
            max_memory: None,
            fuel: None,
            resume: None,
            joined: None,
        })
    }

    /// Record captures on a worker thread: [`Session::step`] returns once the
    /// pages the kernel reported written are copied (see `docs/wasmer.md`,
    /// "Capture pipeline"). Needs kernel dirty tracking to help: a full-scan
    /// capture is recorded on the caller's thread either way.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?.pipeline(PipelineOptions::new()))?;
    /// let report = s.step(&[1])?; // returns once the written pages are copied
    /// let hash = s.state_hash(report.iteration)?; // waits for the worker
    /// # let _ = hash;
    /// # Ok(())
    /// # }
    /// ```
    pub fn pipeline(mut self, options: PipelineOptions) -> Self {
        self.recorder = self.recorder.pipeline(options);
        self
    }

    /// The hash seed. Peers that compare state hashes must use the same seed
    /// (and page size); without one, each session draws a random seed.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut a = Session::new(wat, SessionOptions::new(4096)?.seed(9))?;
    /// let mut b = Session::new(wat, SessionOptions::new(4096)?.seed(9))?;
    /// assert_eq!(a.step(&[3])?.state_hash, b.step(&[3])?.state_hash);
    /// # Ok(())
    /// # }
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.recorder = self.recorder.seed(seed);
        self
    }

    /// The retention policy, applied incrementally after every step.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?.policy(rewind::Policy::default().keep_last(8)))?;
    /// for frame in 0..20u8 {
    ///     s.step(&[frame])?;
    /// }
    /// assert!(s.state_hash(20).is_ok() && s.state_hash(5).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn policy(mut self, policy: Policy) -> Self {
        self.recorder = self.recorder.policy(policy);
        self
    }

    /// Persist every captured iteration to a new archive at `path` (appended before
    /// each GC step, see [`rewind::Options::archive`]). A path that exists is refused;
    /// see [`SessionOptions::replace_archive`].
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let path = std::env::temp_dir().join(format!("rewind-session-archive-{}.rwd", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?.archive(&path, rewind::Durability::EveryAppend))?;
    /// s.step(&[1])?;
    /// assert_eq!(rewind::Archive::open(&path)?.state_hash(1)?, s.state_hash(1)?);
    /// # drop(s);
    /// # std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn archive(mut self, path: impl Into<std::path::PathBuf>, durability: Durability) -> Self {
        self.recorder = self.recorder.archive(path, durability);
        self
    }

    /// As [`SessionOptions::archive`], replacing an archive already at `path`.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let path = std::env::temp_dir().join(format!("rewind-session-replace-{}.rwd", std::process::id()));
    /// for _ in 0..2 {
    ///     let options = SessionOptions::new(4096)?.replace_archive(&path, rewind::Durability::EveryAppend);
    ///     Session::new(wat, options)?.step(&[1])?;
    /// }
    /// # std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn replace_archive(mut self, path: impl Into<std::path::PathBuf>, durability: Durability) -> Self {
        self.recorder = self.recorder.replace_archive(path, durability);
        self
    }

    /// Start from iteration `iteration` of the archive at `path` instead of the
    /// module's initial state, and keep appending to that archive: a crashed game
    /// restarting where it stopped, a debugger continuing from a stored frame. The
    /// module is instantiated (and a setup run) as usual, then memory, memory size and
    /// every global are restored from the archive; the session's head is `iteration`
    /// and the next step is `iteration + 1`. The archive's page size and seed win over
    /// these options'; the policy applies to the loaded history. Fails with
    /// [`rewind::Error::NotRetained`] for an iteration the archive (under the
    /// policy) does not retain, and with a guest error when the archive's globals do
    /// not fit the module.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let path = std::env::temp_dir().join(format!("rewind-session-resume-{}.rwd", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let mut first = Session::new(wat, SessionOptions::new(4096)?.seed(1).archive(&path, rewind::Durability::EveryAppend))?;
    /// for frame in 1..=10u8 {
    ///     first.step(&[frame])?;
    /// }
    /// let hash_11 = { first.rollback_to(6)?; first.step(&[50])?.state_hash };
    /// drop(first);
    /// // Another process continues from iteration 6 of the stored history.
    /// let mut again = Session::new(wat, SessionOptions::new(4096)?.seed(1).resume_from(&path, 6, rewind::Durability::EveryAppend))?;
    /// assert_eq!(again.head_iteration(), 6);
    /// assert_eq!(again.step(&[50])?.state_hash, hash_11);
    /// # drop(again);
    /// # std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn resume_from(
        mut self,
        path: impl Into<std::path::PathBuf>,
        iteration: u64,
        durability: Durability,
    ) -> Self {
        self.resume = Some(Resume {
            path: path.into(),
            iteration,
            durability,
        });
        self.joined = None;
        self
    }

    /// Start from a state another process handed over as a late-joiner bundle
    /// ([`rewind::bundle`]; assembled and verified by [`rewind::Manifest::assemble`]):
    /// a spectator or a peer joining a running game. As with
    /// [`resume_from`](Self::resume_from), the module is instantiated (and a setup
    /// run), then memory, memory size and every global are restored from the state,
    /// the session's head is its iteration and the next step is the one after. The
    /// history starts with that one record ([`rewind::Recorder::from_bundle`]: the
    /// sender's page size and seed win over these options', so state hashes compare
    /// with the sender's); an archive of these options starts there too. The host
    /// state the sender recorded goes back into the host given to
    /// [`Session::set_host_state`]. Replaces an earlier `resume_from`.
    ///
    /// ```
    /// use rewind_wasmer::*;
    /// use rewind::{bundle::Nothing, Bundle, Manifest};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let mut host = Session::new(wat, SessionOptions::new(4096)?.seed(2))?;
    /// for frame in 1..=10u8 {
    ///     host.step(&[frame])?;
    /// }
    /// // The host sends frame 10 to a peer that has nothing.
    /// let manifest = Manifest::from_history(host.recorder().history(), 10)?;
    /// let bundle = Bundle::self_contained(&manifest, &manifest.wanted(&Nothing)?, host.recorder().history().store())?;
    /// let state = Bundle::from_bytes(&bundle.to_bytes()?)?.assemble(&Nothing)?;
    /// let mut peer = Session::new(wat, SessionOptions::new(4096)?.resume_from_bundle(state))?;
    /// assert_eq!(peer.head_iteration(), 10);
    /// assert_eq!(peer.step(&[11])?.state_hash, host.step(&[11])?.state_hash);
    /// # Ok(())
    /// # }
    /// ```
    pub fn resume_from_bundle(mut self, state: rewind::BundleState) -> Self {
        self.joined = Some(std::sync::Arc::new(state));
        self.resume = None;
        self
    }

    /// The name of the exported step function.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let wat = r#"(module (memory (export "memory") 1)
    ///   (func (export "tick") (param i64) (i64.store (i32.const 0) (local.get 0))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?.step_export("tick"))?;
    /// s.step(&[9])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn step_export(mut self, name: impl Into<String>) -> Self {
        self.step_export = Some(name.into());
        self
    }

    /// No step export: every frame is run by the host through
    /// [`Session::step_with`] (see the module docs).
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let wat = r#"(module (memory (export "memory") 1) (func (export "frame") (i32.store (i32.const 0) (i32.const 1))))"#;
    /// let mut s = Session::new(wat, SessionOptions::new(4096)?.host_driven())?;
    /// s.step_with(&[], |store, guest, _input| {
    ///     guest.instance().exports.get_function("frame").map_err(|e| wasmer::RuntimeError::new(e.to_string()))?.call(store, &[])?;
    ///     Ok(())
    /// })?;
    /// assert_eq!(s.step_abi(), StepAbi::HostDriven);
    /// # Ok(())
    /// # }
    /// ```
    pub fn host_driven(mut self) -> Self {
        self.step_export = None;
        self
    }

    /// The capture mode preference.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let s = Session::new(wat, SessionOptions::new(4096)?.capture(CapturePreference::Auto))?;
    /// # let _ = s;
    /// # Ok(())
    /// # }
    /// ```
    pub fn capture(mut self, capture: CapturePreference) -> Self {
        self.capture = capture;
        self
    }

    /// Refuse a step after which the memory is larger than `bytes`: the step
    /// is undone and [`SessionError::MemoryLimit`] returned.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let grow = r#"(module (memory (export "memory") 1)
    ///   (func (export "step") (param i64) (drop (memory.grow (i32.wrap_i64 (local.get 0))))))"#;
    /// let mut s = Session::new(grow, SessionOptions::new(4096)?.max_memory(4 * 65536))?;
    /// s.step(&[1])?; // 2 wasm pages
    /// assert!(matches!(s.step(&[8]), Err(SessionError::MemoryLimit { .. })), "undone");
    /// assert_eq!(s.head_iteration(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// Give every frame (each [`Session::step`] or [`Session::step_with`],
    /// and the setup) a budget of `points` wasm operators, one point each
    /// (wasmer's metering middleware): a frame that uses it up — an
    /// infinite loop — traps, is undone, and is reported as
    /// [`SessionError::OutOfFuel`]. Host calls through
    /// [`Session::store_mut`] get a full budget too. The start function runs
    /// under the engine's initial points: the same budget with [`Session::new`]
    /// and [`Session::with_imports`], `initial_points` of [`metered_engine`]
    /// with [`Session::from_module`]. The module must be compiled with metering:
    /// [`Session::new`] and [`Session::with_imports`] do it; for
    /// [`Session::from_module`] compile with [`metered_engine`]. The
    /// metering's own globals are not guest state: state hashes equal those
    /// of an unmetered session.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let spin = r#"(module (memory (export "memory") 1)
    ///   (func (export "step") (param i64) (loop $l (br_if $l (i32.const 1)))))"#;
    /// let mut s = Session::new(spin, SessionOptions::new(4096)?.fuel_per_step(100_000))?;
    /// assert!(matches!(s.step(&[0]), Err(SessionError::OutOfFuel { .. })), "a hostile guest is stopped");
    /// assert_eq!(s.head_iteration(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn fuel_per_step(mut self, points: u64) -> Self {
        self.fuel = Some(points);
        self
    }
}

/// A wasmer engine (Cranelift) that compiles modules with wasmer's metering
/// middleware, one point per wasm operator, `initial_points` available to the
/// start function, for sessions with [`SessionOptions::fuel_per_step`].
/// Compile exactly one module with each such engine (the middleware keeps
/// per-module state and panics when reused across modules).
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let engine = metered_engine(1_000_000);
/// let module = GuestModule::new(&engine, &wasmer::wat2wasm(wat.as_bytes())?)?;
/// let s = Session::from_module(engine, module, SessionOptions::new(4096)?.fuel_per_step(1_000_000), |_| wasmer::Imports::new())?;
/// # let _ = s;
/// # Ok(())
/// # }
/// ```
pub fn metered_engine(initial_points: u64) -> Engine {
    use wasmer::sys::CompilerConfig as _;
    let mut compiler = wasmer::sys::Cranelift::default();
    compiler.push_middleware(std::sync::Arc::new(wasmer_middlewares::Metering::new(
        initial_points,
        |_: &wasmer::wasmparser::Operator| 1,
    )));
    wasmer::sys::EngineBuilder::new(compiler).engine().into()
}
