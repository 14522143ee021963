//! Integration tests of `rewind_wasmer::Session` with WAT guests.
//!
//! Tests that need kernel dirty tracking fail loudly when it is unavailable,
//! unless `REWIND_SKIP_KERNEL_DIRTY=1` is set (then they are skipped).

mod guests;
mod host_state;
mod kernel;
mod resume;
mod session;

use rewind_wasmer::{Availability, DirtyTracker};

/// Kernel dirty tracking is expected on the machines this project targets
/// (Linux ≥ 6.7, root); set `REWIND_SKIP_KERNEL_DIRTY=1` to skip elsewhere.
pub fn kernel_available() -> bool {
    match DirtyTracker::probe() {
        Availability::Available => true,
        Availability::Unavailable(why) => {
            if std::env::var_os("REWIND_SKIP_KERNEL_DIRTY").is_some() {
                eprintln!("skipping: {why}");
                false
            } else {
                panic!("kernel dirty tracking unavailable ({why:?}); set REWIND_SKIP_KERNEL_DIRTY=1 to skip");
            }
        }
    }
}
