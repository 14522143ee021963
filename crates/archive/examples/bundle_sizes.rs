//! Measures what a late joiner receives (`docs/benchmarks.md`, "Late-joiner bundles"):
//! the bundle bytes for the state at iteration N when the receiver holds the state at
//! N-100, or the archive up to N-100, or nothing, against the archive's size.
//!
//! The guest is the push/pull figure's (`crates/remote/examples/remote_bench.rs`):
//! 4 MiB of memory, 16 random bytes written per frame, one commit per frame; here
//! 1,100 frames, N = 1,099.
//!
//! ```sh
//! cargo run --release -p rewind-archive --example bundle_sizes
//! ```

use rewind_archive::bundle::{Bundle, Manifest, Nothing};
use rewind_archive::{Archive, ArchiveWriter, Durability};
use rewind_history::{History, HistoryConfig};

const PAGE: usize = 4096;
const MEM: usize = 4 << 20;
const FRAMES: u64 = 1100;
const BACK: u64 = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.rwd");
    let earlier = dir.path().join("earlier.rwd");
    let mut history = History::new(HistoryConfig::new(PAGE as u64)?.seed(1))?;
    let mut writer = ArchiveWriter::create(&path, &history, Durability::Manual)?;
    let mut memory = vec![0u8; MEM];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let n = FRAMES - 1;
    let mut len_earlier = 0;
    for frame in 0..FRAMES {
        for _ in 0..16 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x as usize) % MEM;
            memory[at] = x as u8;
        }
        history.capture(frame, &memory, &[], None, None)?;
        writer.append(&history)?;
        if frame == n - BACK {
            writer.sync()?;
            std::fs::copy(&path, &earlier)?;
            len_earlier = std::fs::metadata(&earlier)?.len();
        }
    }
    writer.sync()?;
    let archive_len = std::fs::metadata(&path)?.len();
    let archive = Archive::open(&path)?;
    let manifest = Manifest::from_archive(&archive, n)?;
    let manifest_bytes = manifest.to_bytes()?.len();

    // A receiver that joined at N-100 (with a full bundle) and holds only that state.
    let m_earlier = Manifest::from_archive(&archive, n - BACK)?;
    let joined_earlier = Bundle::self_contained(&m_earlier, &m_earlier.wanted(&Nothing)?, &archive)?
        .assemble(&Nothing)?
        .to_history()?;
    // A receiver holding the archive up to N-100 (a pull of it, say).
    let have_archive = Archive::open(&earlier)?;

    println!(
        "4 MiB guest, {FRAMES} frames, N = {n}: {} distinct non-zero pages of {}",
        manifest.distinct_pages().len(),
        manifest.pages().len()
    );
    println!(
        "archive at N: {archive_len} B; the {BACK} commits after N-100: {} B",
        archive_len - len_earlier
    );
    println!("manifest alone (page hashes, globals, state hash): {manifest_bytes} B");
    println!("| receiver holds | pages sent | page data | bundle file (self-contained) |");
    println!("| --- | --- | --- | --- |");
    let row = |what: &str, wanted: Vec<rewind_store::PageHash>| -> Result<(), Box<dyn std::error::Error>> {
        let b = Bundle::self_contained(&manifest, &wanted, &archive)?;
        let bytes = b.to_bytes()?;
        // The receiver's side: it assembles and verifies.
        let back = Bundle::from_bytes(&bytes)?;
        let state = match what {
            w if w.starts_with("the state") => back.assemble(joined_earlier.store())?,
            w if w.starts_with("the archive") => back.assemble(&have_archive)?,
            _ => back.assemble(&Nothing)?,
        };
        assert_eq!(state.memory(), &memory[..]);
        println!(
            "| {what} | {} | {} B | {} B ({:.1} % of the archive) |",
            b.page_count(),
            b.page_bytes(),
            bytes.len(),
            bytes.len() as f64 * 100.0 / archive_len as f64
        );
        Ok(())
    };
    row(
        "the state at N-100 (joined then)",
        manifest.wanted(joined_earlier.store())?,
    )?;
    row("the archive up to N-100", manifest.wanted(&have_archive)?)?;
    row("nothing (full bundle)", manifest.wanted(&Nothing)?)?;
    Ok(())
}
