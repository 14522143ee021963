//! What a [`Session`] call can fail with.

// The items the docs link to.
#[cfg(doc)]
use super::*;

use thiserror::Error;

use crate::dirty::Unavailable;
use crate::guest::GuestError;

/// Errors of a [`Session`].
#[derive(Debug, Error)]
#[non_exhaustive]
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let mut s = Session::new(wat, SessionOptions::new(4096)?)?;
/// match s.rollback_to(99) {
///     Err(SessionError::Rewind(e)) => assert_eq!(e.not_retained(), Some(99)),
///     other => panic!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
pub enum SessionError {
    /// Checking, instantiating or accessing the guest failed.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The history refused (for example an iteration that is not retained).
    #[error(transparent)]
    Rewind(#[from] rewind::Error),
    /// [`CapturePreference::KernelDirty`] was asked for but the kernel cannot.
    #[error("kernel dirty tracking was required but is unavailable")]
    KernelUnavailable {
        /// Why.
        #[source]
        source: Unavailable,
    },
    /// The step export is missing or has an unsupported shape.
    #[error("step export {name:?}: {reason}")]
    StepExport {
        /// The export name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A frame used up its [`SessionOptions::fuel_per_step`] budget (an
    /// infinite loop, or more work than allowed); it was undone like a trap.
    #[error("iteration {iteration} ran out of fuel ({fuel} wasm operators); step undone")]
    OutOfFuel {
        /// The iteration that failed.
        iteration: u64,
        /// The budget per frame.
        fuel: u64,
    },
    /// [`SessionOptions::fuel_per_step`] was set but the module was not
    /// compiled with metering (see [`metered_engine`]).
    #[error("fuel_per_step needs a module compiled with metering (rewind_wasmer::metered_engine): {detail}")]
    NotMetered {
        /// What is missing.
        detail: String,
    },
    /// [`Session::step`] on a host-driven session, which has no step export.
    #[error("the session is host-driven (no step export): run frames with step_with")]
    HostDriven,
    /// The setup of [`Session::from_module_with_setup`] failed; nothing was
    /// recorded.
    #[error("the session setup failed")]
    Setup {
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An input longer than the step ABI accepts.
    #[error("input of {len} bytes exceeds the step ABI's capacity of {capacity} bytes")]
    InputTooLarge {
        /// Input length.
        len: usize,
        /// Capacity.
        capacity: usize,
    },
    /// The guest trapped while stepping `iteration`; the live state was
    /// restored to the head (iteration - 1) and nothing was recorded.
    #[error("the guest trapped in iteration {iteration}; restored the last good state")]
    Trap {
        /// The iteration that failed.
        iteration: u64,
        /// wasmer's error.
        #[source]
        source: wasmer::RuntimeError,
    },
    /// The guest grew its memory past the limit set with
    /// [`SessionOptions::max_memory`]; the step was undone.
    #[error("iteration {iteration} grew memory to {len} bytes, over the limit of {limit}; step undone")]
    MemoryLimit {
        /// The iteration that failed.
        iteration: u64,
        /// Memory length after the step.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// Capturing `iteration` failed after the guest ran; the step was undone.
    #[error("capturing iteration {iteration} failed; step undone")]
    Capture {
        /// The iteration that failed.
        iteration: u64,
        /// Why.
        #[source]
        source: Box<SessionError>,
    },
    /// The host state ([`Session::set_host_state`]) of `iteration` could not be
    /// put back: the guest is restored, its host is not, so the session refuses
    /// to step until a rollback succeeds.
    #[error("cannot put back the host state of iteration {iteration}")]
    HostState {
        /// The iteration rolled back to.
        iteration: u64,
        /// The host's error.
        #[source]
        source: crate::host_state::HostStateError,
    },
    /// A step failed and restoring the last good state failed too: the live
    /// state is unknown until a successful [`Session::rollback_to`].
    #[error("iteration {iteration} failed ({failure}) and restoring the head failed")]
    RestoreAfterFailure {
        /// The iteration that failed.
        iteration: u64,
        /// The first failure.
        failure: Box<SessionError>,
        /// The restore's error.
        #[source]
        source: Box<SessionError>,
    },
    /// A previous failure left the live state unknown; call
    /// [`Session::rollback_to`] first.
    #[error(
        "the live state is unknown after a failed restore; roll back to iteration {head} or earlier first"
    )]
    NeedsRollback {
        /// The head iteration.
        head: u64,
    },
}
