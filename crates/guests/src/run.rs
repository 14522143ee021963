//! A guest run: the guest stepped one frame at a time, every frame recorded.
//!
//! Every guest runs in a [`rewind_wasmer::Session`] (kernel dirty pages when
//! available, or a full scan when asked for). The C guests (SQLite, Lua, Doom)
//! export `step(i64)`. rapier's per-frame call is `rawphysicspipeline_step`
//! with eleven handles, so it runs host-driven: the session's setup builds the
//! world through the raw exports and each frame is
//! [`Session::step_with`](rewind_wasmer::Session::step_with) calling the
//! pipeline.

use rewind::{Recorder, StateHash};
use rewind_wasmer::{CaptureMode, CapturePreference, GuestModule, Session, SessionOptions, StepReport};
use wasmer::{Engine, Instance, Store, Value};

use crate::host::{Host, HostConfig};
use crate::rapier::World;
use crate::{Error, GuestDir, GuestKind};

/// rewind page size used for every guest (the kernel's dirty granularity).
pub const PAGE_SIZE: u64 = 4096;

/// Bodies in the rapier world.
pub const RAPIER_BODIES: u32 = 300;

/// How a guest with no step export runs its frames: the host calls whatever the
/// guest's per-frame work is (rapier's `rawphysicspipeline_step` takes eleven
/// handles the host built). A guest that exports `step(i64)` needs none.
///
/// ```no_run
/// use rewind_guests::{Error, GuestRun, GuestSpec, HostConfig, HostDriver};
/// use wasmer::{Instance, Store};
///
/// /// A guest driven by calling its `tick()` export every frame.
/// struct Ticks;
///
/// impl HostDriver for Ticks {
///     fn frame(&mut self, store: &mut Store, instance: &Instance, _input: &[u8]) -> Result<(), Error> {
///         let tick = instance.exports.get_function("tick").map_err(|e| Error::Export {
///             guest: "ticker".into(),
///             name: "tick".into(),
///             reason: e.to_string(),
///         })?;
///         tick.call(store, &[]).map_err(|source| Error::Call { guest: "ticker".into(), call: "tick".into(), source })?;
///         Ok(())
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let wasm = std::fs::read("ticker.wasm")?;
/// let spec = GuestSpec::new("ticker", wasm, HostConfig::default()).host_driven(Ticks);
/// let mut run = GuestRun::start_spec(spec, 7, Default::default())?;
/// run.step(1)?;
/// # Ok(())
/// # }
/// ```
pub trait HostDriver: 'static {
    /// Runs once on the first instance, before iteration 0 is captured (build the
    /// world, allocate handles). Does nothing by default.
    fn setup(&mut self, store: &mut Store, instance: &Instance) -> Result<(), Error> {
        let _ = (store, instance);
        Ok(())
    }

    /// Runs one frame with `input` (the bytes recorded with the iteration).
    fn frame(&mut self, store: &mut Store, instance: &Instance, input: &[u8]) -> Result<(), Error>;
}

/// rapier's frames: the world built at setup, one pipeline step per frame.
struct RapierDriver {
    bodies: u32,
    world: Option<World>,
}

impl HostDriver for RapierDriver {
    fn setup(&mut self, store: &mut Store, instance: &Instance) -> Result<(), Error> {
        self.world = Some(World::build(store, instance, self.bodies)?);
        Ok(())
    }

    fn frame(&mut self, store: &mut Store, instance: &Instance, _input: &[u8]) -> Result<(), Error> {
        match &self.world {
            Some(world) => world.step(store, instance),
            None => Err(Error::BadReturn {
                guest: GuestKind::Rapier.to_string(),
                call: "setup".into(),
                detail: "the world was not built".into(),
            }),
        }
    }
}

/// A guest to run under the deterministic host: its module, the host's
/// configuration and, for a guest without a step export, how frames run. The
/// bundled guests are [`GuestSpec::bundled`]; any other module the host can serve
/// (WASI preview 1, wasm-bindgen `*_bg.js` imports) is [`GuestSpec::new`].
pub struct GuestSpec {
    name: String,
    wasm: Vec<u8>,
    host: HostConfig,
    driver: Option<Box<dyn HostDriver>>,
    kind: Option<GuestKind>,
}

impl std::fmt::Debug for GuestSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestSpec")
            .field("name", &self.name)
            .field("wasm_len", &self.wasm.len())
            .field("host_driven", &self.driver.is_some())
            .finish_non_exhaustive()
    }
}

impl GuestSpec {
    /// A guest that exports the step ABI (`step(i64)`), named `name` in errors.
    pub fn new(name: impl Into<String>, wasm: Vec<u8>, host: HostConfig) -> Self {
        Self {
            name: name.into(),
            wasm,
            host,
            driver: None,
            kind: None,
        }
    }

    /// Run frames with `driver` instead of the step export.
    pub fn host_driven(mut self, driver: impl HostDriver) -> Self {
        self.driver = Some(Box::new(driver));
        self
    }

    /// One of the bundled guests, read from `dir`, its host seeded with `seed`.
    pub fn bundled(kind: GuestKind, dir: &GuestDir, seed: u64) -> Result<Self, Error> {
        let path = dir.wasm_path(kind);
        let wasm = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let mut spec = Self::new(kind.to_string(), wasm, host_config(kind, dir, seed));
        spec.kind = Some(kind);
        if kind == GuestKind::Rapier {
            spec = spec.host_driven(RapierDriver {
                bodies: RAPIER_BODIES,
                world: None,
            });
        }
        Ok(spec)
    }
}

/// A recorded run of one guest.
pub struct GuestRun {
    name: String,
    kind: Option<GuestKind>,
    host: Host,
    session: Box<Session>,
    /// Host-driven frames.
    driver: Option<Box<dyn HostDriver>>,
}

impl std::fmt::Debug for GuestRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestRun")
            .field("name", &self.name)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

fn host_config(kind: GuestKind, dir: &GuestDir, seed: u64) -> HostConfig {
    let mut config = HostConfig {
        seed,
        ..HostConfig::default()
    };
    if kind == GuestKind::Doom {
        config.frame_ns = 1_000_000_000 / 35;
        config.preopen = Some((dir.wad_dir(), "/wad".to_owned()));
    }
    config
}

impl GuestRun {
    /// Compiles and instantiates `kind`, sets it up (rapier: builds the world)
    /// and records iteration 0, capturing with kernel dirty pages when the
    /// kernel offers them. `seed` seeds the history's page hashes and the
    /// host's randomness: two runs compare state hashes only with the same seed.
    pub fn start(kind: GuestKind, dir: &GuestDir, seed: u64) -> Result<Self, Error> {
        Self::start_with(kind, dir, seed, CapturePreference::Auto)
    }

    /// Like [`start`](Self::start) with a capture preference (e.g.
    /// [`CapturePreference::FullScan`] to hash every page at every capture).
    pub fn start_with(
        kind: GuestKind,
        dir: &GuestDir,
        seed: u64,
        capture: CapturePreference,
    ) -> Result<Self, Error> {
        Self::start_spec(GuestSpec::bundled(kind, dir, seed)?, seed, capture)
    }

    /// Compiles and instantiates any guest, runs its driver's setup and records
    /// iteration 0. `seed` seeds the history's page hashes (the host's randomness is
    /// the spec's [`HostConfig::seed`]).
    pub fn start_spec(spec: GuestSpec, seed: u64, capture: CapturePreference) -> Result<Self, Error> {
        let GuestSpec {
            name,
            wasm,
            host,
            driver,
            kind,
        } = spec;
        let host = Host::new(host);
        let engine = Store::default().engine().clone();
        let module = GuestModule::new(&engine, &wasm)?;
        let mut options = SessionOptions::new(PAGE_SIZE)?.seed(seed).capture(capture);
        if driver.is_some() {
            options = options.host_driven();
        }
        let (session, driver) = start_session(engine, module, &host, options, driver)?;
        Ok(Self {
            name,
            kind,
            host,
            session: Box::new(session),
            driver,
        })
    }

    /// The guest's name (a bundled guest's is its [`GuestKind`]'s display name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which bundled guest this is; `None` for a guest from [`GuestSpec::new`].
    pub fn kind(&self) -> Option<GuestKind> {
        self.kind
    }

    /// The host (clock, files, output, call counts).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// How captures find changed pages.
    pub fn mode(&self) -> CaptureMode {
        self.session.mode()
    }

    /// The iteration at the head.
    pub fn head(&self) -> u64 {
        self.session.head_iteration()
    }

    /// The rollback session (its mode, counters, live guest).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The history.
    pub fn recorder(&self) -> &Recorder {
        self.session.recorder()
    }

    /// The pages the kernel reported written by the last frame (empty in
    /// full-scan mode): see [`Session::written_pages`].
    pub fn written_pages(&self) -> &[u32] {
        self.session.written_pages()
    }

    /// Runs one frame with `input` and records it as iteration head + 1.
    pub fn step(&mut self, input: u64) -> Result<StepReport, Error> {
        self.host.begin_frame();
        let input = input.to_le_bytes();
        let r = match self.driver.as_mut() {
            Some(driver) => self.session.step_with(&input, |store, guest, input| {
                driver
                    .frame(store, guest.instance(), input)
                    .map_err(|e| wasmer::RuntimeError::user(Box::new(e)))
            }),
            None => self.session.step(&input),
        };
        Ok(r?)
    }

    /// Restores `iteration` (memory, globals, host state) and makes it the
    /// head; returns its state hash as restored.
    pub fn rollback_to(&mut self, iteration: u64) -> Result<StateHash, Error> {
        // The session puts the host state back, and hands the host a new
        // instance's memory (on_reinstantiate).
        Ok(self.session.rollback_to(iteration)?.state_hash)
    }

    /// The state hash of `iteration` on the current timeline.
    pub fn state_hash(&self, iteration: u64) -> Result<StateHash, Error> {
        Ok(self.recorder().state_hash(iteration)?)
    }

    /// The memory length of `iteration` (from history).
    pub fn memory_len_at(&self, iteration: u64) -> Result<u64, Error> {
        Ok(self
            .recorder()
            .history()
            .at(iteration)
            .map_err(rewind::Error::from)?
            .snapshot()
            .memory_len())
    }

    /// Reads `out.len()` bytes at `addr` of `iteration` from history (no restore).
    pub fn read(&self, iteration: u64, addr: u64, out: &mut [u8]) -> Result<(), Error> {
        Ok(self.recorder().read(iteration, addr, out)?)
    }

    /// A copy of the live memory.
    pub fn live_memory(&mut self) -> Result<Vec<u8>, Error> {
        let memory = self.session.guest().memory().clone();
        let view = memory.view(self.session.store());
        let mut out = vec![0u8; view.data_size() as usize];
        view.read(0, &mut out).map_err(|e| Error::BadReturn {
            guest: self.name.clone(),
            call: "reading live memory".into(),
            detail: e.to_string(),
        })?;
        Ok(out)
    }

    /// Calls an exported `() -> i32` function of the live instance (e.g.
    /// Doom's `screen_ptr`). It must not change the guest's state.
    pub fn call_i32(&mut self, name: &str) -> Result<i32, Error> {
        let guest = self.name.clone();
        let func = self
            .session
            .guest()
            .instance()
            .exports
            .get_function(name)
            .cloned()
            .map_err(|e| Error::Export {
                guest: guest.clone(),
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        let ret = func
            .call(self.session.store_mut(), &[])
            .map_err(|source| Error::Call {
                guest: guest.clone(),
                call: name.to_owned(),
                source,
            })?;
        match ret.first() {
            Some(Value::I32(v)) => Ok(*v),
            other => Err(Error::BadReturn {
                guest,
                call: name.to_owned(),
                detail: format!("{other:?}"),
            }),
        }
    }
}

fn start_session(
    engine: Engine,
    module: GuestModule,
    host: &Host,
    options: SessionOptions,
    driver: Option<Box<dyn HostDriver>>,
) -> Result<(Session, Option<Box<dyn HostDriver>>), Error> {
    // Build the imports once here so that a missing import is a clear error,
    // not an instantiation failure inside the session.
    host.imports(&mut Store::new(engine.clone()), module.module())?;
    let wasm_module = module.module().clone();
    let imports_host = host.clone();
    let setup_host = host.clone();
    let (mut session, driver) = Session::from_module_with_setup(
        engine,
        module,
        options,
        move |store| {
            // Checked above: the same module gives the same imports.
            imports_host
                .imports(store, &wasm_module)
                .unwrap_or_else(|_| wasmer::Imports::new())
        },
        move |store, guest| {
            setup_host.set_memory(guest.memory().clone());
            let mut driver = driver;
            if let Some(d) = driver.as_mut() {
                d.setup(store, guest.instance())?;
            }
            Ok(driver)
        },
    )?;
    host.set_memory(session.guest().memory().clone());
    // The host's clock, generator and open files go back with the guest. State
    // hashes stay the guest's own, comparable with an archive's.
    session.set_host_state(host.clone(), false);
    let instance_host = host.clone();
    session.on_reinstantiate(move |_, guest| instance_host.set_memory(guest.memory().clone()));
    // wasi-libc reactors need their constructors (`_initialize`) run before
    // anything else: the drivers call them in their first step, so that
    // iteration 0 is the state right after instantiation.
    Ok((session, driver))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest with no step export and no bundled kind: each frame the host calls
    /// `tick`, which draws 8 bytes from the host's WASI random generator and adds
    /// them to a running sum in memory.
    const TICKER: &str = r#"(module
      (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "tick")
        (drop (call $random (i32.const 0x200) (i32.const 8)))
        (i64.store (i32.const 0x100) (i64.add (i64.load (i32.const 0x100)) (i64.load (i32.const 0x200))))))"#;

    fn wasm() -> Vec<u8> {
        wasmer::wat2wasm(TICKER.as_bytes())
            .expect("valid WAT")
            .into_owned()
    }

    struct Ticks {
        frames: u64,
    }

    impl HostDriver for Ticks {
        fn frame(&mut self, store: &mut Store, instance: &Instance, _input: &[u8]) -> Result<(), Error> {
            self.frames += 1;
            let tick = instance.exports.get_function("tick").map_err(|e| Error::Export {
                guest: "ticker".into(),
                name: "tick".into(),
                reason: e.to_string(),
            })?;
            tick.call(store, &[]).map_err(|source| Error::Call {
                guest: "ticker".into(),
                call: "tick".into(),
                source,
            })?;
            Ok(())
        }
    }

    fn ticker() -> GuestRun {
        let spec = GuestSpec::new("ticker", wasm(), HostConfig::default()).host_driven(Ticks { frames: 0 });
        GuestRun::start_spec(spec, 11, CapturePreference::Auto).expect("start")
    }

    #[test]
    fn a_guest_of_no_bundled_kind_runs_host_driven_and_rolls_back_with_its_host() {
        let mut run = ticker();
        assert_eq!((run.name(), run.kind()), ("ticker", None));
        let mut hashes = Vec::new();
        for frame in 1..=8 {
            hashes.push(run.step(frame).expect("step").state_hash);
        }
        let mut sum = [0u8; 8];
        run.read(8, 0x100, &mut sum).expect("read");
        assert_ne!(sum, [0; 8], "the host's generator fed the guest");
        run.rollback_to(4).expect("rollback");
        for (frame, expected) in (5..=8).zip(&hashes[4..]) {
            assert_eq!(run.step(frame).expect("re-simulate").state_hash, *expected);
        }
        // The generator went back too: a second run from scratch agrees.
        let mut straight = ticker();
        for frame in 1..=8 {
            straight.step(frame).expect("step");
        }
        assert_eq!(
            straight.state_hash(8).expect("hash"),
            run.state_hash(8).expect("hash")
        );
    }

    #[test]
    fn a_failing_driver_is_a_clear_error_and_records_nothing() {
        struct Missing;
        impl HostDriver for Missing {
            fn frame(&mut self, store: &mut Store, instance: &Instance, _: &[u8]) -> Result<(), Error> {
                let f = instance
                    .exports
                    .get_function("absent")
                    .map_err(|e| Error::Export {
                        guest: "ticker".into(),
                        name: "absent".into(),
                        reason: e.to_string(),
                    })?;
                f.call(store, &[]).map(|_| ()).map_err(|source| Error::Call {
                    guest: "ticker".into(),
                    call: "absent".into(),
                    source,
                })
            }
        }
        let spec = GuestSpec::new("ticker", wasm(), HostConfig::default()).host_driven(Missing);
        let mut run = GuestRun::start_spec(spec, 11, CapturePreference::Auto).expect("start");
        let err = run.step(1).expect_err("no such export");
        assert!(rewind::error_chain(&err).contains("absent"), "{err}");
        assert_eq!(run.head(), 0, "the failed frame was undone");
    }
}
