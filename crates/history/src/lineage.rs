//! One blame for every store of records linked by parents: the in-memory [`History`]
//! and an archive on disk both describe their records through [`Lineage`], and
//! [`blame_chain`] walks back from a record the same way for both.
//!
//! [`History`]: crate::History
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::ops::RangeInclusive;

use crate::{Blame, RecordId};

/// Records linked by parents, as blame reads them: each record knows its parent, which
/// pages it changed against that parent, and can read its memory.
pub trait Lineage {
    /// A record as the lineage hands it out (a reference, or a small copy of an index
    /// entry).
    type Record<'a>
    where
        Self: 'a;
    /// The lineage's error.
    type Error;

    /// Bytes per page.
    fn page_size(&self) -> u64;
    /// The record's number.
    fn id(&self, record: &Self::Record<'_>) -> RecordId;
    /// The record's iteration.
    fn iteration(&self, record: &Self::Record<'_>) -> u64;
    /// The record's memory length in bytes.
    fn memory_len(&self, record: &Self::Record<'_>) -> u64;
    /// The record's parent, `None` for the oldest record the lineage holds on this path.
    fn parent<'a>(&'a self, record: &Self::Record<'a>) -> Result<Option<Self::Record<'a>>, Self::Error>;
    /// True when the record changed any page in `pages` against its parent. May answer
    /// true for pages whose bytes end up equal: blame compares the bytes then.
    fn changes_touch(
        &self,
        record: &Self::Record<'_>,
        pages: RangeInclusive<u32>,
    ) -> Result<bool, Self::Error>;
    /// Read `out.len()` bytes at `addr` of the record's memory (within its length).
    fn read(&self, record: &Self::Record<'_>, addr: u64, out: &mut [u8]) -> Result<(), Self::Error>;
    /// The error for a blame of `[addr, addr + len)` outside a `memory_len`-byte memory.
    fn out_of_bounds(&self, addr: u64, len: u64, memory_len: u64) -> Self::Error;
}

/// Up to `limit` successive changes of `[addr, addr + len)` walking back from `start`
/// along parents: the first is the latest record at or before `start` at which any
/// byte of the range changed (a reverse watchpoint); each next one is the blame of the
/// bytes as they were just before the previous change. When the walk reaches the oldest
/// record with the bytes not all zero, that record ends the list with `at_oldest` set
/// (the bytes may have changed earlier); all zero there, it adds nothing.
///
/// Bytes are compared only at records whose change list touches the range's pages;
/// bytes past a parent's smaller memory count as zeros. An empty range, or one past
/// `start`'s memory, is [`Lineage::out_of_bounds`].
pub fn blame_chain<'a, L: Lineage + ?Sized>(
    lineage: &'a L,
    start: L::Record<'a>,
    addr: u64,
    len: u64,
    limit: usize,
) -> Result<Vec<Blame>, L::Error> {
    let memory_len = lineage.memory_len(&start);
    let end = addr.checked_add(len).filter(|e| len > 0 && *e <= memory_len);
    let (Some(_), Ok(n)) = (end, usize::try_from(len)) else {
        return Err(lineage.out_of_bounds(addr, len, memory_len));
    };
    let ps = lineage.page_size().max(1);
    let pages = page_of(addr / ps)..=page_of((addr + len - 1) / ps);
    let mut here = vec![0u8; n];
    let mut before = vec![0u8; n];
    lineage.read(&start, addr, &mut here)?;
    let mut cur = start;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(parent) = lineage.parent(&cur)? else {
            // The oldest record: the bytes are as they were here.
            if here.iter().any(|b| *b != 0) {
                out.push(blame_at(lineage, &cur, true));
            }
            break;
        };
        if lineage.changes_touch(&cur, pages.clone())? {
            read_or_zero(lineage, &parent, addr, &mut before)?;
            if before != here {
                out.push(blame_at(lineage, &cur, false));
                std::mem::swap(&mut here, &mut before);
            }
        }
        cur = parent;
    }
    Ok(out)
}

/// The first entry of [`blame_chain`]: where the range last changed at or before
/// `start`, `None` when its bytes are the same in every record back to the oldest and
/// are all zero.
pub fn blame<'a, L: Lineage + ?Sized>(
    lineage: &'a L,
    start: L::Record<'a>,
    addr: u64,
    len: u64,
) -> Result<Option<Blame>, L::Error> {
    Ok(blame_chain(lineage, start, addr, len, 1)?.into_iter().next())
}

/// A page index as blame uses it: addresses past `u32::MAX` pages saturate, which only
/// widens the range tested against change lists.
fn page_of(page: u64) -> u32 {
    u32::try_from(page).unwrap_or(u32::MAX)
}

fn blame_at<L: Lineage + ?Sized>(lineage: &L, record: &L::Record<'_>, at_oldest: bool) -> Blame {
    Blame {
        record: lineage.id(record),
        iteration: lineage.iteration(record),
        at_oldest,
    }
}

/// Read `out.len()` bytes at `addr` of `record`; bytes past its memory read as zeros.
fn read_or_zero<L: Lineage + ?Sized>(
    lineage: &L,
    record: &L::Record<'_>,
    addr: u64,
    out: &mut [u8],
) -> Result<(), L::Error> {
    let present = lineage
        .memory_len(record)
        .saturating_sub(addr)
        .min(out.len() as u64) as usize;
    out.fill(0);
    match out.get_mut(..present) {
        Some(b) if !b.is_empty() => lineage.read(record, addr, b),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A lineage as a model: each record holds a full copy of its memory.
    struct Model {
        page_size: u64,
        /// By record number: (iteration, parent, memory).
        records: Vec<(u64, Option<usize>, Vec<u8>)>,
    }

    #[derive(Debug, PartialEq, Eq)]
    struct OutOfBounds(u64, u64, u64);

    impl Model {
        fn new(page_size: u64) -> Self {
            Model {
                page_size,
                records: Vec::new(),
            }
        }

        /// Add a record after `parent` with `memory`; returns its number.
        fn add(&mut self, iteration: u64, parent: Option<usize>, memory: Vec<u8>) -> usize {
            self.records.push((iteration, parent, memory));
            self.records.len() - 1
        }

        fn memory(&self, r: usize) -> Vec<u8> {
            self.records[r].2.clone()
        }
    }

    impl Lineage for Model {
        type Record<'a> = usize;
        type Error = OutOfBounds;

        fn page_size(&self) -> u64 {
            self.page_size
        }
        fn id(&self, r: &usize) -> RecordId {
            RecordId(*r as u64)
        }
        fn iteration(&self, r: &usize) -> u64 {
            self.records[*r].0
        }
        fn memory_len(&self, r: &usize) -> u64 {
            self.records[*r].2.len() as u64
        }
        fn parent(&self, r: &usize) -> Result<Option<usize>, OutOfBounds> {
            Ok(self.records[*r].1)
        }
        fn changes_touch(&self, r: &usize, pages: RangeInclusive<u32>) -> Result<bool, OutOfBounds> {
            let Some(p) = self.records[*r].1 else {
                return Ok(true);
            };
            let (a, b) = (&self.records[*r].2, &self.records[p].2);
            let ps = self.page_size as usize;
            Ok(pages.into_iter().any(|i| {
                let range = i as usize * ps..(i as usize + 1) * ps;
                a.get(range.clone()) != b.get(range)
            }))
        }
        fn read(&self, r: &usize, addr: u64, out: &mut [u8]) -> Result<(), OutOfBounds> {
            let m = &self.records[*r].2;
            out.copy_from_slice(&m[addr as usize..addr as usize + out.len()]);
            Ok(())
        }
        fn out_of_bounds(&self, addr: u64, len: u64, memory_len: u64) -> OutOfBounds {
            OutOfBounds(addr, len, memory_len)
        }
    }

    fn at(m: &Model, r: usize, oldest: bool) -> Blame {
        Blame {
            record: RecordId(r as u64),
            iteration: m.iteration(&r),
            at_oldest: oldest,
        }
    }

    /// A line of records, each writing one byte of its own.
    fn line() -> Model {
        let mut m = Model::new(16);
        let mut mem = vec![0u8; 64];
        let mut parent = None;
        for i in 0..6u64 {
            mem[(i * 10) as usize] = i as u8 + 1;
            parent = Some(m.add(i, parent, mem.clone()));
        }
        m
    }

    #[test]
    fn finds_the_latest_change_at_or_before_the_start() {
        let m = line();
        // Byte 20 was written at record 2, nothing after.
        assert_eq!(blame(&m, 5, 20, 1).unwrap(), Some(at(&m, 2, false)));
        assert_eq!(blame(&m, 2, 20, 1).unwrap(), Some(at(&m, 2, false)));
        // Before record 2 it was zero since the oldest record.
        assert_eq!(blame(&m, 1, 20, 1).unwrap(), None);
        // A range over two writes names the later.
        assert_eq!(blame(&m, 5, 20, 11).unwrap(), Some(at(&m, 3, false)));
    }

    #[test]
    fn the_oldest_record_is_flagged_when_bytes_are_not_zero() {
        let m = line();
        assert_eq!(blame(&m, 5, 0, 1).unwrap(), Some(at(&m, 0, true)));
        assert_eq!(blame(&m, 0, 0, 1).unwrap(), Some(at(&m, 0, true)));
        // Zero bytes never written: no blame.
        assert_eq!(blame(&m, 5, 63, 1).unwrap(), None);
    }

    #[test]
    fn a_chain_lists_successive_changes_back_to_the_oldest() {
        let mut m = Model::new(8);
        let mut parent = None;
        for (i, v) in [7u8, 7, 8, 8, 9].into_iter().enumerate() {
            parent = Some(m.add(i as u64, parent, vec![v; 16]));
        }
        let chain = blame_chain(&m, 4, 3, 1, 10).unwrap();
        assert_eq!(chain, vec![at(&m, 4, false), at(&m, 2, false), at(&m, 0, true)]);
        assert_eq!(blame_chain(&m, 4, 3, 1, 2).unwrap(), chain[..2].to_vec());
        assert!(blame_chain(&m, 4, 3, 1, 0).unwrap().is_empty());
    }

    #[test]
    fn blame_follows_parents_not_abandoned_branches() {
        // 0 → 1 → 2 (abandoned after a rollback to 1), then 1 → 3 at iteration 2 again.
        let mut m = Model::new(8);
        let r0 = m.add(0, None, vec![1; 16]);
        let r1 = m.add(1, Some(r0), vec![2; 16]);
        let mut abandoned = m.memory(r1);
        abandoned[0] = 50;
        let r2 = m.add(2, Some(r1), abandoned);
        let r3 = m.add(2, Some(r1), m.memory(r1));
        let mut next = m.memory(r3);
        next[5] = 60;
        let r4 = m.add(3, Some(r3), next);
        // The new branch never wrote byte 0: its last change is record 1, not the
        // abandoned record 2 of the same iteration.
        assert_eq!(blame(&m, r4, 0, 1).unwrap(), Some(at(&m, r1, false)));
        assert_eq!(blame(&m, r2, 0, 1).unwrap(), Some(at(&m, r2, false)));
        assert_eq!(blame(&m, r4, 5, 1).unwrap(), Some(at(&m, r4, false)));
    }

    #[test]
    fn bytes_past_a_smaller_parent_memory_read_as_zero() {
        let mut m = Model::new(8);
        let r0 = m.add(0, None, vec![3; 8]);
        let mut grown = m.memory(r0);
        grown.extend([0u8; 8]);
        let r1 = m.add(1, Some(r0), grown.clone());
        grown[12] = 4;
        let r2 = m.add(2, Some(r1), grown);
        // Zeros after growth equal the zeros past the old memory: no change at r1.
        assert_eq!(blame(&m, r1, 12, 1).unwrap(), None);
        assert_eq!(blame(&m, r2, 12, 1).unwrap(), Some(at(&m, r2, false)));
        // A range across the old end: byte 7 came from the oldest record.
        assert_eq!(blame(&m, r1, 7, 2).unwrap(), Some(at(&m, r0, true)));
    }

    #[test]
    fn a_range_outside_the_start_memory_is_an_error() {
        let m = line();
        assert_eq!(blame(&m, 5, 0, 0), Err(OutOfBounds(0, 0, 64)));
        assert_eq!(blame(&m, 5, 60, 5), Err(OutOfBounds(60, 5, 64)));
        assert_eq!(blame(&m, 5, u64::MAX, 2), Err(OutOfBounds(u64::MAX, 2, 64)));
    }

    #[test]
    fn a_touch_without_a_byte_change_is_not_blamed() {
        // Record 1 rewrites page 0 but the asked byte keeps its value.
        let mut m = Model::new(8);
        let r0 = m.add(0, None, vec![5; 8]);
        let mut mem = m.memory(r0);
        mem[0] = 6;
        let r1 = m.add(1, Some(r0), mem);
        assert_eq!(blame(&m, r1, 4, 1).unwrap(), Some(at(&m, r0, true)));
        assert_eq!(blame(&m, r1, 0, 1).unwrap(), Some(at(&m, r1, false)));
    }
}
