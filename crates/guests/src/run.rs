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
use wasmer::{Engine, Store, Value};

use crate::host::{Host, HostConfig};
use crate::rapier::World;
use crate::{Error, GuestDir, GuestKind};

/// rewind page size used for every guest (the kernel's dirty granularity).
pub const PAGE_SIZE: u64 = 4096;

/// Bodies in the rapier world.
pub const RAPIER_BODIES: u32 = 300;

/// A recorded run of one guest.
pub struct GuestRun {
    kind: GuestKind,
    host: Host,
    session: Box<Session>,
    /// rapier's world (host-driven frames).
    world: Option<World>,
}

impl std::fmt::Debug for GuestRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestRun")
            .field("kind", &self.kind)
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
        let path = dir.wasm_path(kind);
        let wasm = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let host = Host::new(host_config(kind, dir, seed));
        let engine = Store::default().engine().clone();
        let module = GuestModule::new(&engine, &wasm)?;
        let mut options = SessionOptions::new(PAGE_SIZE)?.seed(seed).capture(capture);
        if kind == GuestKind::Rapier {
            options = options.host_driven();
        }
        let (session, world) = start_session(kind, engine, module, &host, options)?;
        Ok(Self {
            kind,
            host,
            session: Box::new(session),
            world,
        })
    }

    /// The guest.
    pub fn kind(&self) -> GuestKind {
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
        let r = match self.world {
            Some(world) => self.session.step_with(&input, |store, guest, _| {
                world
                    .step(store, guest.instance())
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
            guest: self.kind,
            call: "reading live memory".into(),
            detail: e.to_string(),
        })?;
        Ok(out)
    }

    /// Calls an exported `() -> i32` function of the live instance (e.g.
    /// Doom's `screen_ptr`). It must not change the guest's state.
    pub fn call_i32(&mut self, name: &str) -> Result<i32, Error> {
        let kind = self.kind;
        let func = self
            .session
            .guest()
            .instance()
            .exports
            .get_function(name)
            .cloned()
            .map_err(|e| Error::Export {
                guest: kind,
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        let ret = func
            .call(self.session.store_mut(), &[])
            .map_err(|source| Error::Call {
                guest: kind,
                call: name.to_owned(),
                source,
            })?;
        match ret.first() {
            Some(Value::I32(v)) => Ok(*v),
            other => Err(Error::BadReturn {
                guest: kind,
                call: name.to_owned(),
                detail: format!("{other:?}"),
            }),
        }
    }
}

fn start_session(
    kind: GuestKind,
    engine: Engine,
    module: GuestModule,
    host: &Host,
    options: SessionOptions,
) -> Result<(Session, Option<World>), Error> {
    // Build the imports once here so that a missing import is a clear error,
    // not an instantiation failure inside the session.
    host.imports(&mut Store::new(engine.clone()), module.module())?;
    let wasm_module = module.module().clone();
    let imports_host = host.clone();
    let setup_host = host.clone();
    let (mut session, world) = Session::from_module_with_setup(
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
            if kind != GuestKind::Rapier {
                return Ok(None);
            }
            Ok(Some(World::build(store, guest.instance(), RAPIER_BODIES)?))
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
    Ok((session, world))
}
