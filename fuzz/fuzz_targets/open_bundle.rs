//! Read arbitrary bytes as every kind of bundle message and assemble what decodes:
//! errors are fine, panics, hangs and unbounded allocations are findings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_archive::bundle::{self, Bundle, Manifest, Nothing};

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Bundle::from_bytes(data) {
        let _ = b.assemble(&Nothing);
        let _ = b.to_bytes();
    }
    if let Ok(m) = Manifest::from_bytes(data) {
        let _ = m.wanted(&Nothing);
        let _ = m.to_bytes();
    }
    let _ = bundle::want_from_bytes(data);
});
