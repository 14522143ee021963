//! A guest run: the guest stepped one frame at a time, every frame recorded.
//!
//! The C guests (SQLite, Lua, Doom) export `step(i64)` and run in a
//! [`rewind_wasmer::Session`] (kernel dirty pages when available). rapier's
//! per-frame call is `rawphysicspipeline_step` with eleven handles, which a
//! `Session` cannot call (it needs a `step` export of its own ABI), so rapier
//! runs on [`rewind_wasmer::Guest`] + [`rewind::Recorder`] directly, hashing
//! every page at each capture.

use std::time::{Duration, Instant};

use rewind::{GlobalValue, LiveMemory, Options, Recorder, StateHash};
use rewind_wasmer::{Guest, GuestModule, Session, SessionOptions};
use wasmer::{Engine, Store, Value};

use crate::host::{Host, HostConfig};
use crate::rapier::World;
use crate::{Error, GuestDir, GuestKind};

/// rewind page size used for every guest (the kernel's dirty granularity).
pub const PAGE_SIZE: u64 = 4096;

/// Bodies in the rapier world.
pub const RAPIER_BODIES: u32 = 300;

/// What one frame recorded.
#[derive(Clone, Copy, Debug)]
pub struct FrameReport {
    /// The iteration recorded.
    pub iteration: u64,
    /// Its state hash.
    pub state_hash: StateHash,
    /// Pages hashed by the capture.
    pub pages_hashed: usize,
    /// Pages whose content changed.
    pub pages_changed: usize,
    /// New bytes stored.
    pub bytes_stored: u64,
    /// Memory length after the frame.
    pub memory_len: u64,
    /// Time in the guest.
    pub run_time: Duration,
    /// Time to capture.
    pub capture_time: Duration,
}

/// A recorded run of one guest.
pub struct GuestRun {
    kind: GuestKind,
    host: Host,
    inner: Inner,
}

impl std::fmt::Debug for GuestRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestRun")
            .field("kind", &self.kind)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

enum Inner {
    Session(Box<Session>),
    Direct(Box<Direct>),
}

struct Direct {
    engine: Engine,
    module: GuestModule,
    store: Store,
    guest: Guest,
    world: World,
    recorder: Recorder,
    /// Live memory equals the head's state.
    at_head: bool,
    globals: Vec<GlobalValue>,
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
    /// and records iteration 0. `seed` seeds the history's page hashes and the
    /// host's randomness: two runs compare state hashes only with the same seed.
    pub fn start(kind: GuestKind, dir: &GuestDir, seed: u64) -> Result<Self, Error> {
        let path = dir.wasm_path(kind);
        let wasm = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let host = Host::new(host_config(kind, dir, seed));
        let engine = Store::default().engine().clone();
        let module = GuestModule::new(&engine, &wasm)?;
        let inner = if kind == GuestKind::Rapier {
            Inner::Direct(Box::new(Direct::start(engine, module, &host, seed)?))
        } else {
            Inner::Session(Box::new(start_session(engine, module, &host, seed)?))
        };
        Ok(Self { kind, host, inner })
    }

    /// The guest.
    pub fn kind(&self) -> GuestKind {
        self.kind
    }

    /// The host (clock, files, output, call counts).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The iteration at the head.
    pub fn head(&self) -> u64 {
        self.recorder().history().head().map_or(0, |r| r.iteration())
    }

    /// The history.
    pub fn recorder(&self) -> &Recorder {
        match &self.inner {
            Inner::Session(s) => s.recorder(),
            Inner::Direct(d) => &d.recorder,
        }
    }

    /// Runs one frame with `input` and records it as iteration head + 1.
    pub fn step(&mut self, input: u64) -> Result<FrameReport, Error> {
        self.host.begin_frame();
        let report = match &mut self.inner {
            Inner::Session(s) => {
                let r = s.step(&input.to_le_bytes())?;
                FrameReport {
                    iteration: r.iteration,
                    state_hash: r.state_hash,
                    pages_hashed: r.pages_hashed,
                    pages_changed: r.pages_changed,
                    bytes_stored: r.bytes_stored,
                    memory_len: r.memory_len,
                    run_time: r.run_time,
                    capture_time: r.capture_time,
                }
            }
            Inner::Direct(d) => {
                let iteration = d.head() + 1;
                let t0 = Instant::now();
                d.at_head = false;
                let ran = d.world.step(&mut d.store, d.guest.instance());
                if let Err(e) = ran {
                    // Undo the partial frame so the run stays usable.
                    let head = d.head();
                    d.rollback(&self.host, head)?;
                    return Err(e);
                }
                let run_time = t0.elapsed();
                d.capture(iteration, &input.to_le_bytes(), run_time)?
            }
        };
        self.host.checkpoint(report.iteration);
        Ok(report)
    }

    /// Restores `iteration` (memory, globals, host state) and makes it the
    /// head; returns its state hash as restored.
    pub fn rollback_to(&mut self, iteration: u64) -> Result<StateHash, Error> {
        match &mut self.inner {
            Inner::Session(s) => {
                let report = s.rollback_to(iteration)?;
                if report.reinstantiated {
                    self.host.set_memory(s.guest().memory().clone());
                }
                // The on_rollback hook has put the host state back.
                Ok(report.state_hash)
            }
            Inner::Direct(d) => d.rollback(&self.host, iteration),
        }
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
        Ok(match &mut self.inner {
            Inner::Session(s) => {
                let memory = s.guest().memory().clone();
                let view = memory.view(s.store());
                let mut out = vec![0u8; view.data_size() as usize];
                view.read(0, &mut out).map_err(|e| Error::BadReturn {
                    guest: self.kind,
                    call: "reading live memory".into(),
                    detail: e.to_string(),
                })?;
                out
            }
            Inner::Direct(d) => d.guest.with_memory(&mut d.store, <[u8]>::to_vec)?,
        })
    }

    /// Calls an exported `() -> i32` function of the live instance (e.g.
    /// Doom's `screen_ptr`). It must not change the guest's state.
    pub fn call_i32(&mut self, name: &str) -> Result<i32, Error> {
        let kind = self.kind;
        let (func, store) = match &mut self.inner {
            Inner::Session(s) => {
                let f = s.guest().instance().exports.get_function(name).cloned();
                (f, s.store_mut())
            }
            Inner::Direct(d) => (
                d.guest.instance().exports.get_function(name).cloned(),
                &mut d.store,
            ),
        };
        let func = func.map_err(|e| Error::Export {
            guest: kind,
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        let ret = func.call(store, &[]).map_err(|source| Error::Call {
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

fn start_session(engine: Engine, module: GuestModule, host: &Host, seed: u64) -> Result<Session, Error> {
    // Build the imports once here so that a missing import is a clear error,
    // not an instantiation failure inside the session.
    host.imports(&mut Store::new(engine.clone()), module.module())?;
    let wasm_module = module.module().clone();
    let imports_host = host.clone();
    let mut session = Session::from_module(
        engine,
        module,
        SessionOptions::new(PAGE_SIZE)?.seed(seed),
        move |store| {
            // Checked above: the same module gives the same imports.
            imports_host
                .imports(store, &wasm_module)
                .unwrap_or_else(|_| wasmer::Imports::new())
        },
    )?;
    host.set_memory(session.guest().memory().clone());
    host.checkpoint(0);
    let hook_host = host.clone();
    session.on_rollback(move |iteration| {
        // Checkpoints exist for every recorded iteration; a missing one
        // would show as a state-hash mismatch in the re-simulation.
        let _ = hook_host.restore(iteration);
    });
    // wasi-libc reactors need their constructors (`_initialize`) run before
    // anything else: the drivers call them in their first step, so that
    // iteration 0 is the state right after instantiation.
    Ok(session)
}

impl Direct {
    fn start(engine: Engine, module: GuestModule, host: &Host, seed: u64) -> Result<Self, Error> {
        let mut store = Store::new(engine.clone());
        let imports = host.imports(&mut store, module.module())?;
        let guest = Guest::instantiate(&mut store, &module, &imports)?;
        host.set_memory(guest.memory().clone());
        let world = World::build(&mut store, guest.instance(), RAPIER_BODIES)?;
        let recorder = Recorder::new(Options::new(PAGE_SIZE)?.seed(seed))?;
        let mut direct = Self {
            engine,
            module,
            store,
            guest,
            world,
            recorder,
            at_head: false,
            globals: Vec::new(),
        };
        direct.capture(0, &[], Duration::ZERO)?;
        host.checkpoint(0);
        Ok(direct)
    }

    fn head(&self) -> u64 {
        self.recorder.history().head().map_or(0, |r| r.iteration())
    }

    fn capture(&mut self, iteration: u64, input: &[u8], run_time: Duration) -> Result<FrameReport, Error> {
        let t0 = Instant::now();
        self.guest
            .read_global_values(&mut self.store, &mut self.globals)?;
        let (recorder, globals) = (&mut self.recorder, &self.globals);
        let report = self.guest.with_memory(&mut self.store, |memory| {
            recorder.record(iteration, memory, globals, None, Some(input))
        })??;
        self.at_head = true;
        Ok(FrameReport {
            iteration,
            state_hash: report.state_hash,
            pages_hashed: report.pages_hashed,
            pages_changed: report.pages_changed,
            bytes_stored: report.bytes_stored,
            memory_len: self.guest.memory_len(&self.store) as u64,
            run_time,
            capture_time: t0.elapsed(),
        })
    }

    /// Like `Session::rollback_to`: re-instantiates when memory must shrink.
    fn rollback(&mut self, host: &Host, iteration: u64) -> Result<StateHash, Error> {
        let target_len = self
            .recorder
            .history()
            .at(iteration)
            .map_err(rewind::Error::from)?
            .snapshot()
            .memory_len();
        let live_len = self.guest.memory_len(&self.store) as u64;
        let mut live = if self.at_head {
            LiveMemory::AtHead
        } else {
            LiveMemory::Unknown
        };
        if target_len < live_len {
            let mut store = Store::new(self.engine.clone());
            let imports = host.imports(&mut store, self.module.module())?;
            let guest = Guest::instantiate(&mut store, &self.module, &imports)?;
            self.store = store;
            self.guest = guest;
            host.set_memory(self.guest.memory().clone());
            live = LiveMemory::Unknown;
        }
        self.guest.grow_to(&mut self.store, target_len)?;
        if target_len > live_len {
            live = LiveMemory::Unknown;
        }
        let recorder = &mut self.recorder;
        let rollback = self.guest.with_memory_mut(&mut self.store, |memory| {
            recorder.rollback(iteration, memory, live)
        })??;
        self.guest
            .write_global_values(&mut self.store, &rollback.globals)?;
        host.restore(iteration)?;
        self.at_head = true;
        Ok(rollback.state_hash)
    }
}
