//! The live instance: store, guest, step function, fuel and dirty tracker.

use wasmer::{Engine, Imports, Mutability, Store, Type, TypedFunction, Value};

use super::*;
use crate::dirty::DirtyTracker;
use crate::guest::{Guest, GuestModule};

pub(crate) enum StepFn {
    Word(TypedFunction<i64, ()>),
    Buffer {
        func: TypedFunction<i32, ()>,
        ptr: u32,
        capacity: u32,
    },
}

/// One live instance: its store, guest, step function and dirty tracker.
pub(crate) struct Live {
    // Field order is drop order: the tracker unregisters before the store
    // unmaps the memory (either order is sound; this one avoids a scan of an
    // unmapped range ever being possible).
    pub(crate) tracker: Option<DirtyTracker>,
    /// `None`: host-driven.
    pub(crate) step: Option<StepFn>,
    /// The metering globals, with fuel per step.
    pub(crate) fuel: Option<Fuel>,
    pub(crate) guest: Guest,
    pub(crate) store: Store,
}

pub(crate) type ImportsFn = Box<dyn FnMut(&mut Store) -> Imports>;

/// The metering middleware's globals of one instance.
pub(crate) struct Fuel {
    pub(crate) per_step: u64,
    pub(crate) remaining: wasmer::Global,
    pub(crate) exhausted: wasmer::Global,
}

impl Fuel {
    const REMAINING: &'static str = "wasmer_metering_remaining_points";
    const EXHAUSTED: &'static str = "wasmer_metering_points_exhausted";

    pub(crate) fn resolve(store: &mut Store, guest: &Guest, per_step: u64) -> Result<Self, SessionError> {
        // Exports of these names in the module itself would be guest state
        // posing as the middleware's counters.
        if let Some(name) = guest.layout().metering_like_exports.first() {
            return Err(SessionError::NotMetered {
                detail: format!("the module itself exports {name:?}"),
            });
        }
        let exports = &guest.instance().exports;
        let global = |name: &str, ty: Type| -> Result<wasmer::Global, SessionError> {
            let g = exports.get_global(name).map_err(|e| SessionError::NotMetered {
                detail: format!("no {name} global ({e})"),
            })?;
            let t = g.ty(store);
            if t.ty != ty || t.mutability != Mutability::Var {
                return Err(SessionError::NotMetered {
                    detail: format!("{name} is {t:?}, not a mutable {ty:?}"),
                });
            }
            Ok(g.clone())
        };
        Ok(Self {
            per_step,
            remaining: global(Self::REMAINING, Type::I64)?,
            exhausted: global(Self::EXHAUSTED, Type::I32)?,
        })
    }

    pub(crate) fn refill(&self, store: &mut Store) -> Result<(), wasmer::RuntimeError> {
        // The budget is at most i64::MAX points as the middleware stores it.
        let points = i64::try_from(self.per_step).unwrap_or(i64::MAX);
        self.remaining.set(store, Value::I64(points))?;
        self.exhausted.set(store, Value::I32(0))
    }

    pub(crate) fn is_exhausted(&self, store: &mut Store) -> bool {
        matches!(self.exhausted.get(store), Value::I32(v) if v != 0)
    }
}
pub(crate) type Hook = Box<dyn FnMut(u64)>;
pub(crate) type InstanceHook = Box<dyn FnMut(&mut Store, &Guest)>;

impl Live {
    pub(crate) fn instantiate(
        engine: &Engine,
        module: &GuestModule,
        imports: &mut ImportsFn,
        step_export: Option<&str>,
        fuel: Option<u64>,
    ) -> Result<Self, SessionError> {
        let mut store = Store::new(engine.clone());
        let imports = imports(&mut store);
        let globals_before = crate::guest::store_globals(&mut store);
        let guest = match Guest::instantiate(&mut store, module, &imports) {
            Ok(guest) => guest,
            // A start function that loops is stopped by the metering like a frame.
            Err(e) => match fuel {
                Some(per_step) if crate::guest::start_ran_out_of_fuel(&mut store, globals_before, &e) => {
                    return Err(SessionError::OutOfFuel {
                        iteration: 0,
                        fuel: per_step,
                    })
                }
                _ => return Err(e.into()),
            },
        };
        let step = step_export
            .map(|name| resolve_step(&mut store, &guest, name))
            .transpose()?;
        let fuel = fuel
            .map(|per_step| Fuel::resolve(&mut store, &guest, per_step))
            .transpose()?;
        Ok(Self {
            tracker: None,
            step,
            fuel,
            guest,
            store,
        })
    }

    /// Gives the next frame its fuel (when metered).
    pub(crate) fn refill(&mut self) -> Result<(), wasmer::RuntimeError> {
        match &self.fuel {
            Some(fuel) => fuel.refill(&mut self.store),
            None => Ok(()),
        }
    }

    /// The failure of a frame: out of fuel, or the trap as it came.
    pub(crate) fn frame_error(&mut self, iteration: u64, source: wasmer::RuntimeError) -> SessionError {
        match &self.fuel {
            Some(fuel) if fuel.is_exhausted(&mut self.store) => SessionError::OutOfFuel {
                iteration,
                fuel: fuel.per_step,
            },
            _ => SessionError::Trap { iteration, source },
        }
    }

    pub(crate) fn abi(&self) -> StepAbi {
        match self.step {
            Some(StepFn::Word(_)) => StepAbi::Word,
            Some(StepFn::Buffer { ptr, capacity, .. }) => StepAbi::Buffer { ptr, capacity },
            None => StepAbi::HostDriven,
        }
    }

    pub(crate) fn check_input(&self, input: &[u8]) -> Result<(), SessionError> {
        let capacity = match self.step {
            Some(StepFn::Word(_)) => 8,
            Some(StepFn::Buffer { capacity, .. }) => capacity as usize,
            None => return Err(SessionError::HostDriven),
        };
        if input.len() > capacity {
            return Err(SessionError::InputTooLarge {
                len: input.len(),
                capacity,
            });
        }
        Ok(())
    }

    /// Runs one step: the input must have passed `check_input`.
    pub(crate) fn run(&mut self, input: &[u8]) -> Result<(), wasmer::RuntimeError> {
        let Some(step) = &self.step else {
            return Err(wasmer::RuntimeError::new("host-driven session: no step export"));
        };
        match step {
            StepFn::Word(func) => {
                let mut word = [0u8; 8];
                word[..input.len()].copy_from_slice(input);
                func.call(&mut self.store, i64::from_le_bytes(word))
            }
            StepFn::Buffer { func, ptr, .. } => {
                self.guest
                    .memory()
                    .view(&self.store)
                    .write(u64::from(*ptr), input)
                    .map_err(|e| wasmer::RuntimeError::new(format!("writing the input: {e}")))?;
                // `check_input` bounded the length by `input_cap`, an i32.
                let len = i32::try_from(input.len()).expect("holds because input_cap is an i32");
                func.call(&mut self.store, len)
            }
        }
    }
}

pub(crate) fn resolve_step(store: &mut Store, guest: &Guest, name: &str) -> Result<StepFn, SessionError> {
    let err = |reason: String| SessionError::StepExport {
        name: name.to_owned(),
        reason,
    };
    let exports = &guest.instance().exports;
    let func = exports
        .get_function(name)
        .map_err(|e| err(format!("not an exported function ({e})")))?;
    let ty = func.ty(store);
    if !ty.results().is_empty() {
        return Err(err(format!("must return nothing, returns {:?}", ty.results())));
    }
    match ty.params() {
        [Type::I64] => Ok(StepFn::Word(
            func.typed(store).map_err(|e| err(format!("typed (i64): {e}")))?,
        )),
        [Type::I32] => {
            let mut read = |global: &str| -> Result<u32, SessionError> {
                let g = exports.get_global(global).map_err(|e| {
                    err(format!(
                        "step(i32) needs an exported immutable i32 global {global:?} ({e})"
                    ))
                })?;
                if g.ty(store).mutability != Mutability::Const {
                    return Err(err(format!("global {global:?} must be immutable")));
                }
                match g.get(store) {
                    Value::I32(v) => Ok(v as u32),
                    other => Err(err(format!("global {global:?} must be an i32, is {other:?}"))),
                }
            };
            let ptr = read("input_ptr")?;
            let capacity = read("input_cap")?;
            let len = guest.memory_len(store) as u64;
            if u64::from(ptr) + u64::from(capacity) > len || capacity > i32::MAX as u32 {
                return Err(err(format!(
                    "input buffer {ptr}+{capacity} does not fit the initial memory of {len} bytes"
                )));
            }
            Ok(StepFn::Buffer {
                func: func.typed(store).map_err(|e| err(format!("typed (i32): {e}")))?,
                ptr,
                capacity,
            })
        }
        other => Err(err(format!("must take (i64) or (i32), takes {other:?}"))),
    }
}
