//! A Merkle tree over a snapshot's page hashes, updated in O(changed × log pages).
//!
//! Fan-out [`FANOUT`]: node `i` of level 0 hashes pages `16i..16i+16`; node `i` of level
//! `k+1` hashes nodes `16i..16i+16` of level `k`. The last level has one node, the root.
//! Two parties holding trees find their first differing page by descending from the root,
//! comparing at most [`FANOUT`] hashes per level.

use imbl::Vector;
use rewind_store::{Hasher, PageHash};

/// Children per node.
pub const FANOUT: usize = 16;

/// The levels above the page vector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merkle {
    levels: Vec<Vector<PageHash>>,
}

fn hash_children(hasher: &Hasher, below: &Vector<PageHash>, node: usize) -> PageHash {
    let start = node * FANOUT;
    let end = (start + FANOUT).min(below.len());
    let mut buf = [0u8; 16 * FANOUT];
    let mut n = 0;
    let mut focus = below.focus();
    for i in start..end {
        if let Some(h) = focus.get(i) {
            buf[n..n + 16].copy_from_slice(h.as_bytes());
            n += 16;
        }
    }
    hasher.bytes(&buf[..n])
}

impl Merkle {
    /// The root hash ([`PageHash::ZERO`] for an empty memory).
    pub fn root(&self) -> PageHash {
        self.levels
            .last()
            .and_then(|l| l.front().copied())
            .unwrap_or(PageHash::ZERO)
    }

    /// The levels, lowest first (level 0 hashes pages).
    pub fn levels(&self) -> &[Vector<PageHash>] {
        &self.levels
    }

    /// Build the tree over `pages` from scratch.
    pub fn build(hasher: &Hasher, pages: &Vector<PageHash>) -> Self {
        let mut m = Merkle::default();
        let all: Vec<u32> = (0..pages.len() as u32).collect();
        m.update(hasher, pages, &all, 0);
        m
    }

    /// Update after the pages at `changed` (sorted) were set in `pages`, which had
    /// `old_len` entries before.
    pub fn update(&mut self, hasher: &Hasher, pages: &Vector<PageHash>, changed: &[u32], old_len: usize) {
        let n = pages.len();
        let mut dirty: Vec<usize> = changed.iter().map(|&i| i as usize).collect();
        if n != old_len {
            // The nodes over the old and new tails change shape.
            let from = n.min(old_len).saturating_sub(1);
            dirty.extend(from..n);
            dirty.sort_unstable();
            dirty.dedup();
        }
        let mut below_len = n;
        let mut level = 0;
        let mut below: Vector<PageHash> = pages.clone();
        while below_len > 1 || (level == 0 && below_len == 1) {
            let len = below_len.div_ceil(FANOUT);
            let fresh = level >= self.levels.len();
            if fresh {
                self.levels.push(Vector::new());
            }
            let cur = &mut self.levels[level];
            if cur.len() > len {
                cur.truncate(len);
            }
            while cur.len() < len {
                cur.push_back(PageHash::ZERO);
            }
            let mut parents: Vec<usize> = if fresh {
                (0..len).collect()
            } else {
                dirty.iter().map(|i| i / FANOUT).collect()
            };
            parents.dedup();
            for &p in &parents {
                if p < len {
                    let h = hash_children(hasher, &below, p);
                    self.levels[level].set(p, h);
                }
            }
            dirty = parents;
            below = self.levels[level].clone();
            below_len = len;
            level += 1;
            if len == 1 {
                break;
            }
        }
        self.levels.truncate(level);
    }

    /// The index of the first page where two trees (over `a` and `b`) differ, descending
    /// from the root; `None` when the page vectors are equal. A page missing from the
    /// shorter vector counts as a zero page (memory lengths are compared separately, by
    /// the state hash).
    pub fn first_difference(a: (&Merkle, &Vector<PageHash>), b: (&Merkle, &Vector<PageHash>)) -> Option<u32> {
        let (ma, pa) = a;
        let (mb, pb) = b;
        if pa.len() == pb.len() && ma.root() == mb.root() {
            return None;
        }
        let top = ma.levels.len().min(mb.levels.len());
        // Scan the highest common level whole, then descend one group at a time.
        let mut range = 0..usize::MAX;
        for k in (0..top).rev() {
            let (la, lb) = (&ma.levels[k], &mb.levels[k]);
            let end = range.end.min(la.len().max(lb.len()));
            match first_diff_in(la, lb, range.start..end) {
                Some(i) => range = i * FANOUT..(i + 1) * FANOUT,
                None => return first_diff_in(pa, pb, 0..pa.len().max(pb.len())).map(|i| i as u32),
            }
        }
        let end = range.end.min(pa.len().max(pb.len()));
        first_diff_in(pa, pb, range.start..end)
            .or_else(|| first_diff_in(pa, pb, 0..pa.len().max(pb.len())))
            .map(|i| i as u32)
    }
}

fn first_diff_in(a: &Vector<PageHash>, b: &Vector<PageHash>, range: std::ops::Range<usize>) -> Option<usize> {
    let (mut fa, mut fb) = (a.focus(), b.focus());
    let zero = PageHash::ZERO;
    range
        .into_iter()
        .find(|&i| fa.get(i).unwrap_or(&zero) != fb.get(i).unwrap_or(&zero))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_store::PageSize;

    fn hasher() -> Hasher {
        Hasher::new(3, PageSize::new(4096).unwrap())
    }

    fn pages(n: usize, salt: u128) -> Vector<PageHash> {
        (0..n)
            .map(|i| PageHash::from_u128(i as u128 * 31 + salt))
            .collect()
    }

    #[test]
    fn incremental_update_equals_rebuild() {
        let h = hasher();
        for n in [0usize, 1, 2, 15, 16, 17, 255, 256, 257, 1000] {
            let mut v = pages(n, 1);
            let mut m = Merkle::build(&h, &v);
            assert_eq!(m, Merkle::build(&h, &v));
            // change some pages
            let changed: Vec<u32> = (0..n as u32).step_by(37).collect();
            for &i in &changed {
                v.set(i as usize, PageHash::from_u128(99 + i as u128));
            }
            m.update(&h, &v, &changed, n);
            assert_eq!(m, Merkle::build(&h, &v), "n={n}");
            // grow and shrink
            for new_n in [n + 1, n + 40, n / 2, 0, n] {
                let old = v.len();
                let mut ch = vec![];
                while v.len() < new_n {
                    ch.push(v.len() as u32);
                    v.push_back(PageHash::from_u128(7 + v.len() as u128));
                }
                v.truncate(new_n);
                m.update(&h, &v, &ch, old);
                assert_eq!(m, Merkle::build(&h, &v), "n={n} -> {new_n}");
            }
        }
    }

    #[test]
    fn first_difference_finds_the_first() {
        let h = hasher();
        let a = pages(5000, 1);
        let ma = Merkle::build(&h, &a);
        assert_eq!(Merkle::first_difference((&ma, &a), (&ma, &a)), None);
        for idx in [0usize, 1, 15, 16, 300, 4095, 4999] {
            let mut b = a.clone();
            b.set(idx, PageHash::from_u128(u128::MAX));
            b.set(4999.min(idx + 500), PageHash::from_u128(u128::MAX - 1));
            let mb = Merkle::build(&h, &b);
            assert_eq!(Merkle::first_difference((&ma, &a), (&mb, &b)), Some(idx as u32));
        }
        let mut c = a.clone();
        c.push_back(PageHash::from_u128(5));
        let mc = Merkle::build(&h, &c);
        assert_eq!(Merkle::first_difference((&ma, &a), (&mc, &c)), Some(5000));
        let mut z = a.clone();
        z.push_back(PageHash::ZERO);
        let mz = Merkle::build(&h, &z);
        assert_eq!(Merkle::first_difference((&ma, &a), (&mz, &z)), None);
    }
}
