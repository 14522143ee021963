//! Open arbitrary bytes as an archive and run every reader query: errors are fine,
//! panics, hangs and unbounded allocations are findings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_archive::Archive;

fuzz_target!(|data: &[u8]| {
    let Ok(a) = Archive::from_bytes(data) else { return };
    let _ = a.info();
    let _ = a.torn_tail();
    let _ = a.timeline();
    let _ = a.abandoned();
    if let Ok(recs) = a.records() {
        let mut page = vec![0u8; a.page_size().bytes()];
        for r in recs.iter().take(32) {
            let _ = a.globals(r.id);
            let _ = a.input(r.id);
            let _ = a.state_hash(r.iteration);
            if let Ok(pages) = a.pages(r.id) {
                for h in pages.iter().take(8) {
                    let _ = a.read_page(*h, &mut page);
                }
            }
            let mut out = vec![0u8; 4096.min(r.memory_len as usize)];
            let _ = a.read(r.id, 0, &mut out);
        }
    }
    let _ = a.verify();
});
