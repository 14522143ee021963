//! Integration tests of `rewind_wasmer::Session` with WAT guests.
//!
//! Tests that need kernel dirty tracking fail loudly when it is unavailable,
//! unless `REWIND_SKIP_KERNEL_DIRTY=1` is set (then they are skipped).

mod guests;
mod kernel;
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

/// SplitMix64: reproducible random numbers without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
