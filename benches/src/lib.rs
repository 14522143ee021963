//! Workloads shared by rewind's benchmarks and the comparison harness
//! (`cargo run --release -p rewind-bench --bin compare`).
//!
//! Every peer of the harness is fed by a [`FrameSource`]: a guest memory plus a way to
//! run one more frame and learn which pages it wrote. [`Workload`] is the synthetic
//! source (deterministic: two sources built with the same arguments produce the same
//! frames, which is how every peer sees exactly the same sequence); [`RecordedFrames`]
//! replays frames recorded from a real guest (the hook for the real guests of issue 6).

pub mod soak;

/// The xorshift64 generator (13, 7, 17) behind [`Workload`]: every peer sees the same
/// frames, and the figures in docs/benchmarks.md were measured on this exact sequence
/// (a different generator would change every workload's bytes and page choice).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// How the pages written in a frame are placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Runs of neighbouring pages, as real programs write (heap arenas, arrays).
    Clustered,
    /// Pages anywhere.
    Scattered,
    /// One run of exactly the dirty page count from a random page on, wrapping at the
    /// end: most of memory each frame, as a copying garbage collector writes its heap.
    Sweep,
}

/// A synthetic guest memory and its per-frame writes.
pub struct Workload {
    /// The memory.
    pub memory: Vec<u8>,
    /// Page size.
    pub page: usize,
    /// Pages written per frame.
    pub dirty_pages: usize,
    /// Bytes written in each dirty page per frame.
    pub bytes_per_page: usize,
    /// Placement of the dirty pages.
    pub placement: Placement,
    rng: Rng,
}

impl Workload {
    /// Like [`Workload::new`], with an exact number of pages written per frame.
    pub fn with_dirty_pages(
        memory_bytes: usize,
        page: usize,
        dirty_pages: usize,
        placement: Placement,
        seed: u64,
    ) -> Self {
        let mut w = Workload::new(memory_bytes, page, 0.0, placement, seed);
        w.dirty_pages = dirty_pages.max(1);
        w
    }

    /// `memory_bytes` of memory shaped like a guest heap: a quarter zero pages, the rest
    /// a mix of small structured values and random bytes (lz4 ratio around 2–4).
    pub fn new(
        memory_bytes: usize,
        page: usize,
        dirty_fraction: f64,
        placement: Placement,
        seed: u64,
    ) -> Self {
        let mut rng = Rng(seed | 1);
        let mut memory = vec![0u8; memory_bytes];
        for (i, p) in memory.chunks_mut(page).enumerate() {
            match i % 4 {
                0 => {}
                1 => {
                    for (k, w) in p.chunks_mut(8).enumerate() {
                        w.copy_from_slice(&((k as u64 * 3) ^ (i as u64)).to_le_bytes());
                    }
                }
                _ => {
                    for w in p.chunks_mut(8) {
                        let v = rng.next_u64() & 0x0000_00ff_00ff_ffff;
                        w.copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
        let pages = memory_bytes / page;
        Workload {
            memory,
            page,
            dirty_pages: ((pages as f64 * dirty_fraction).round() as usize).max(1),
            bytes_per_page: 64,
            placement,
            rng,
        }
    }

    /// Pages in memory.
    pub fn pages(&self) -> usize {
        self.memory.len() / self.page
    }

    /// Run one frame: write `bytes_per_page` bytes in each of `dirty_pages` pages.
    /// The written page indices go to `dirty` (sorted, unique).
    pub fn frame(&mut self, dirty: &mut Vec<u32>) {
        dirty.clear();
        let pages = self.pages();
        match self.placement {
            Placement::Clustered => {
                let mut left = self.dirty_pages;
                while left > 0 {
                    let run = left.min(1 + self.rng.below(16));
                    let start = self.rng.below(pages - run + 1);
                    dirty.extend((start..start + run).map(|p| p as u32));
                    left -= run;
                }
            }
            Placement::Scattered => {
                for _ in 0..self.dirty_pages {
                    dirty.push(self.rng.below(pages) as u32);
                }
            }
            Placement::Sweep => {
                let start = self.rng.below(pages);
                dirty.extend((0..self.dirty_pages.min(pages)).map(|k| ((start + k) % pages) as u32));
            }
        }
        dirty.sort_unstable();
        dirty.dedup();
        for &p in dirty.iter() {
            let base = p as usize * self.page;
            let off = self.rng.below(self.page - self.bytes_per_page);
            let v = self.rng.next_u64();
            for (k, b) in self.memory[base + off..base + off + self.bytes_per_page]
                .iter_mut()
                .enumerate()
            {
                *b = (v >> ((k % 8) * 8)) as u8 ^ k as u8;
            }
        }
    }
}

impl FrameSource for Workload {
    fn memory(&self) -> &[u8] {
        &self.memory
    }
    fn memory_mut(&mut self) -> &mut [u8] {
        &mut self.memory
    }
    fn page_size(&self) -> usize {
        self.page
    }
    fn next_frame(&mut self, dirty: &mut Vec<u32>) -> bool {
        self.frame(dirty);
        true
    }
}

/// A guest whose frames a harness can replay: its memory and one frame at a time.
///
/// The harness builds a fresh source for every peer, so a source must be deterministic.
/// After [`FrameSource::next_frame`] the memory holds the new frame and `dirty` names
/// every page written in it (sorted, unique) — what a kernel dirty tracker
/// (userfaultfd + `PAGEMAP_SCAN`) reports for a real guest.
pub trait FrameSource {
    /// The guest memory as of the last frame (the initial memory before the first).
    fn memory(&self) -> &[u8];
    /// The memory, writable (a peer restores a rollback into it).
    fn memory_mut(&mut self) -> &mut [u8];
    /// The page size the frames are tracked at.
    fn page_size(&self) -> usize;
    /// Run one frame; `false` when a recorded source has no more frames.
    fn next_frame(&mut self, dirty: &mut Vec<u32>) -> bool;
}

/// Frames recorded from a real guest, replayed from a file.
///
/// File layout (all little-endian): magic `RWFRAME1`, page size `u32`, memory length
/// `u64`, the initial memory (`memory length` bytes), then per frame: a page count `u32`
/// and that many `(index u32, page bytes)` pairs — the pages the guest wrote in that
/// frame, with their content after the frame. [`RecordedFrames::writer`] writes it; a
/// guest runner (issue 6) calls it once per frame. Memory growth is not represented:
/// record at the final memory size.
pub struct RecordedFrames {
    memory: Vec<u8>,
    page: usize,
    data: Vec<u8>,
    pos: usize,
}

/// Magic of a recorded-frames file.
pub const RECORDED_MAGIC: &[u8; 8] = b"RWFRAME1";

impl RecordedFrames {
    /// Read a recorded-frames file.
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let data = std::fs::read(path)?;
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        if data.get(..8) != Some(&RECORDED_MAGIC[..]) {
            return Err(bad("not a recorded-frames file (magic)"));
        }
        let page = u32::from_le_bytes(
            data.get(8..12)
                .ok_or_else(|| bad("short header"))?
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        let len = u64::from_le_bytes(
            data.get(12..20)
                .ok_or_else(|| bad("short header"))?
                .try_into()
                .expect("8 bytes"),
        ) as usize;
        if page == 0 || !page.is_power_of_two() || !len.is_multiple_of(page) {
            return Err(bad("bad page size or memory length"));
        }
        let memory = data
            .get(20..20 + len)
            .ok_or_else(|| bad("short initial memory"))?
            .to_vec();
        Ok(RecordedFrames {
            memory,
            page,
            pos: 20 + len,
            data,
        })
    }

    /// Start a recorded-frames file with the initial memory; then call
    /// [`RecordedFramesWriter::frame`] once per frame.
    pub fn writer(
        path: &std::path::Path,
        page: usize,
        memory: &[u8],
    ) -> std::io::Result<RecordedFramesWriter> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        out.write_all(RECORDED_MAGIC)?;
        out.write_all(&(page as u32).to_le_bytes())?;
        out.write_all(&(memory.len() as u64).to_le_bytes())?;
        out.write_all(memory)?;
        Ok(RecordedFramesWriter { out, page })
    }
}

/// Appends frames to a recorded-frames file (see [`RecordedFrames`]).
pub struct RecordedFramesWriter {
    out: std::io::BufWriter<std::fs::File>,
    page: usize,
}

impl RecordedFramesWriter {
    /// Append one frame: the pages written (`dirty`) with their content in `memory`.
    pub fn frame(&mut self, memory: &[u8], dirty: &[u32]) -> std::io::Result<()> {
        use std::io::Write;
        self.out.write_all(&(dirty.len() as u32).to_le_bytes())?;
        for &p in dirty {
            let base = p as usize * self.page;
            self.out.write_all(&p.to_le_bytes())?;
            self.out.write_all(&memory[base..base + self.page])?;
        }
        Ok(())
    }

    /// Flush the file.
    pub fn finish(mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.out.flush()
    }
}

impl FrameSource for RecordedFrames {
    fn memory(&self) -> &[u8] {
        &self.memory
    }
    fn memory_mut(&mut self) -> &mut [u8] {
        &mut self.memory
    }
    fn page_size(&self) -> usize {
        self.page
    }
    fn next_frame(&mut self, dirty: &mut Vec<u32>) -> bool {
        dirty.clear();
        let Some(n) = self.data.get(self.pos..self.pos + 4) else {
            return false;
        };
        let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
        self.pos += 4;
        for _ in 0..n {
            let Some(idx) = self.data.get(self.pos..self.pos + 4) else {
                return false;
            };
            let idx = u32::from_le_bytes(idx.try_into().expect("4 bytes"));
            let base = idx as usize * self.page;
            let (Some(src), Some(dst)) = (
                self.data.get(self.pos + 4..self.pos + 4 + self.page),
                self.memory.get_mut(base..base + self.page),
            ) else {
                return false;
            };
            dst.copy_from_slice(src);
            dirty.push(idx);
            self.pos += 4 + self.page;
        }
        dirty.sort_unstable();
        dirty.dedup();
        true
    }
}

/// Minimum, median and maximum of a set of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    /// Smallest sample.
    pub min: f64,
    /// Median (the upper one for an even count).
    pub median: f64,
    /// Largest sample.
    pub max: f64,
    /// Number of samples.
    pub n: usize,
}

impl Spread {
    /// The spread of `samples` (any unit); all zero when empty.
    pub fn of(samples: &[f64]) -> Spread {
        if samples.is_empty() {
            return Spread::default();
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        Spread {
            min: v[0],
            median: v[v.len() / 2],
            max: v[v.len() - 1],
            n: v.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_frames_replay_a_workload() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.frames");
        let mut w = Workload::new(64 * 4096, 4096, 0.05, Placement::Clustered, 3);
        let mut out = RecordedFrames::writer(&path, 4096, &w.memory).expect("writer");
        let mut dirty = Vec::new();
        let mut frames = Vec::new();
        for _ in 0..5 {
            w.frame(&mut dirty);
            out.frame(&w.memory, &dirty).expect("frame");
            frames.push((w.memory.clone(), dirty.clone()));
        }
        out.finish().expect("finish");
        let mut r = RecordedFrames::open(&path).expect("open");
        for (mem, d) in frames {
            assert!(r.next_frame(&mut dirty));
            assert_eq!(dirty, d);
            assert_eq!(r.memory(), &mem[..]);
        }
        assert!(!r.next_frame(&mut dirty));
    }

    /// The SplitMix64 the soak (and the tests and examples that used this crate's own
    /// copy before) draw from: `rand_xoshiro`'s must give the same sequence for the
    /// same seed, so figures and seeded tests did not move with the switch.
    #[test]
    fn rand_xoshiro_splitmix64_is_the_reference_sequence() {
        use rand_xoshiro::rand_core::{RngCore, SeedableRng};
        fn reference(state: &mut u64) -> u64 {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        for seed in [0, 1, 7, 42, 0x2545_F491_4F6C_DD1D, u64::MAX] {
            let mut state = seed;
            let mut rng = rand_xoshiro::SplitMix64::seed_from_u64(seed);
            for _ in 0..1000 {
                assert_eq!(rng.next_u64(), reference(&mut state), "seed {seed}");
            }
        }
        // The published first output for seed 0 (Vigna's splitmix64.c).
        let mut zero = rand_xoshiro::SplitMix64::seed_from_u64(0);
        assert_eq!(zero.next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn spread_of_samples() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.median, s.max, s.n), (1.0, 2.0, 3.0, 3));
    }
}
