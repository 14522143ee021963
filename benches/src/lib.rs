//! Workloads shared by rewind's benchmarks and comparison harness.

/// A deterministic xorshift generator, so every peer sees the same frames.
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
