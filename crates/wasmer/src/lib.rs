//! Guest state capture for [wasmer](https://wasmer.io) 7.4: the linear memory,
//! every mutable global (exported or not) and the memory size of one
//! instance, plus kernel dirty-page tracking of the linear memory.
//!
//! - [`guest`] checks a module (one memory it defines and exports, no
//!   mutable tables, no imported mutable globals), instantiates it and finds
//!   the store index of each of its mutable globals, exported or not.
//! - [`session`] is the rollback API on top: a [`Session`] owns the store,
//!   the instance, a [`rewind::Recorder`] and the dirty tracker; it steps the
//!   guest with an input, records every iteration, rolls back (re-instantiating
//!   when memory must shrink), re-simulates and compares state hashes.
//! - [`dirty`] reports the pages written since the last call with
//!   userfaultfd (asynchronous write-protect) and the `PAGEMAP_SCAN` ioctl,
//!   with no guest instrumentation; [`DirtyTracker::probe`] says when the
//!   kernel cannot, so that capture falls back to hashing every page.
//!
//! ```
//! use rewind_wasmer::guest::{Guest, GuestModule};
//! use rewind_wasmer::{Availability, DirtyTracker};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut store = wasmer::Store::default();
//! let module = GuestModule::from_wat(
//!     &store,
//!     r#"(module
//!          (memory (export "memory") 1)
//!          (global $ticks (mut i32) (i32.const 0))   ;; not exported
//!          (func (export "tick") (param i32)
//!            global.get $ticks i32.const 1 i32.add global.set $ticks
//!            local.get 0 global.get $ticks i32.store))"#,
//! )?;
//! let guest = Guest::instantiate(&mut store, &module, &wasmer::Imports::new())?;
//! let tick = guest.instance().exports.get_typed_function::<i32, ()>(&store, "tick")?;
//!
//! let mut tracker = match DirtyTracker::probe() {
//!     Availability::Available => Some(guest.dirty_tracker(&store)?),
//!     Availability::Unavailable(_) => None, // hash every page instead
//! };
//! tick.call(&mut store, 8192)?;
//!
//! let mut globals = Vec::new();
//! guest.read_globals(&mut store, &mut globals)?;
//! assert_eq!(globals, [1]);
//! if let Some(tracker) = tracker.as_mut() {
//!     let mut pages = Vec::new();
//!     guest.take_written(&store, tracker, 4096, &mut pages)?;
//!     assert_eq!(pages, [2]);
//! }
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

#[allow(unsafe_code)]
pub mod dirty;
pub mod guest;
pub mod host_state;
pub mod session;

pub use dirty::{Availability, DirtyError, DirtyTracker, Unavailable, GROWTH_HEADROOM};
pub use guest::{Guest, GuestError, GuestModule};
pub use host_state::{HostState, HostStateError};
/// The capture pipeline's options and figures ([`SessionOptions::pipeline`]).
pub use rewind::{PipelineOptions, PipelineStats};
pub use session::{
    metered_engine, CaptureMode, CapturePreference, Divergence, PageDivergence, ReplayReport,
    ResimulateReport, RollbackReport, Session, SessionError, SessionOptions, SessionStats, StepAbi,
    StepReport,
};
