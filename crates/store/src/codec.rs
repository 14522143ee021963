//! Byte encodings of stored pages: lz4 or raw full pages, and deltas of changed byte runs.
//!
//! These functions are shared by the in-memory store and by readers of archived objects,
//! so they validate everything they read: a corrupt encoding is an error, never a panic.
//!
//! A delta is a sequence of runs, each `offset: u16 LE`, `len - 1: u16 LE`, then `len`
//! bytes to write at `offset` over the parent page. Runs are in increasing offset order
//! and do not overlap.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::CodecError;

/// How a full page's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Encoding {
    /// The page's bytes as they are (compression did not pay).
    Raw = 0,
    /// An lz4 block (lz4_flex) of the page's bytes.
    Lz4 = 1,
}

impl Encoding {
    /// The encoding from its tag byte.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::Lz4),
            _ => None,
        }
    }
}

/// Bytes of header per delta run.
pub const RUN_HEADER: usize = 4;

/// Two runs closer than this many bytes are merged into one: a new run header costs
/// [`RUN_HEADER`] bytes, so copying a short equal gap is cheaper.
pub const MERGE_GAP: usize = RUN_HEADER;

/// Reusable buffers for encoding pages: the lz4 output buffer and hash table are kept
/// between calls (a fresh table per page costs an allocation and a zeroing).
#[derive(Default)]
pub struct Scratch {
    lz4: Vec<u8>,
    table: lz4_flex::block::CompressTable,
    delta: Vec<u8>,
}

impl Scratch {
    /// Empty buffers; they grow to the page size on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Encode a full page: lz4 when it saves at least 1/8 of the page, raw otherwise.
///
/// The returned bytes are always what the returned encoding says: when compression
/// fails or does not pay, the page is returned raw and tagged [`Encoding::Raw`].
pub fn encode_full(page: &[u8], scratch: &mut Scratch) -> (Encoding, Box<[u8]>) {
    match compress(page, scratch) {
        Some(block) => (Encoding::Lz4, block.into()),
        None => (Encoding::Raw, page.into()),
    }
}

/// The lz4 block of `page` when it saves at least 1/8 of the page (the bytes
/// [`encode_full`] tags [`Encoding::Lz4`]), else `None` (the page is to be stored raw).
/// The block borrows `scratch`: nothing is allocated once it has grown to the page size.
pub fn compress<'s>(page: &[u8], scratch: &'s mut Scratch) -> Option<&'s [u8]> {
    let max = lz4_flex::block::get_maximum_output_size(page.len());
    if scratch.lz4.len() < max {
        scratch.lz4.resize(max, 0);
    }
    lz4_flex::block::compress_into_with_table(page, &mut scratch.lz4, &mut scratch.table)
        .ok()
        .filter(|n| *n < page.len() - page.len() / 8)
        .and_then(|n| scratch.lz4.get(..n))
}

/// Decode a full page into `out` (whose length is the page size).
pub fn decode_full(encoding: Encoding, bytes: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    match encoding {
        Encoding::Raw => {
            if bytes.len() != out.len() {
                return Err(CodecError::RawLength {
                    expected: out.len(),
                    found: bytes.len(),
                });
            }
            out.copy_from_slice(bytes);
            Ok(())
        }
        Encoding::Lz4 => match lz4_flex::block::decompress_into(bytes, out) {
            Ok(n) if n == out.len() => Ok(()),
            Ok(n) => Err(CodecError::Lz4Length {
                expected: out.len(),
                found: n,
            }),
            Err(e) => Err(CodecError::Lz4(e.to_string())),
        },
    }
}

/// Encode the changed byte runs of `page` against `base` (same length) into a delta.
///
/// Returns `None` when the delta would be larger than `limit` bytes (the caller then
/// stores a full page), or when the pages are equal. The returned slice borrows `scratch`.
pub fn encode_delta<'s>(
    base: &[u8],
    page: &[u8],
    limit: usize,
    scratch: &'s mut Scratch,
) -> Option<&'s [u8]> {
    if base.len() != page.len() || page.len() > 65536 {
        return None;
    }
    let out = &mut scratch.delta;
    out.clear();
    let mut pending: Option<(usize, usize)> = None;
    for (s, e) in ChangedRuns::new(base, page) {
        match pending {
            Some((ps, pe)) if s - pe <= MERGE_GAP => pending = Some((ps, e)),
            Some(run) => {
                push_run(out, page, run)?;
                if out.len() > limit {
                    return None;
                }
                pending = Some((s, e));
            }
            None => pending = Some((s, e)),
        }
    }
    let run = pending?;
    push_run(out, page, run)?;
    if out.len() > limit {
        return None;
    }
    Some(out.as_slice())
}

/// Append the run `[s, e)` of `page`; `None` (no delta) when it is not a non-empty run
/// of the page with offsets that fit the format's `u16` fields.
fn push_run(out: &mut Vec<u8>, page: &[u8], (s, e): (usize, usize)) -> Option<()> {
    let offset = u16::try_from(s).ok()?;
    let len_minus_one = u16::try_from(e.checked_sub(s)?.checked_sub(1)?).ok()?;
    let bytes = page.get(s..e)?;
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&len_minus_one.to_le_bytes());
    out.extend_from_slice(bytes);
    Some(())
}

/// A run header's offset and length.
fn run_header(header: &[u8; RUN_HEADER]) -> (usize, usize) {
    let [o0, o1, l0, l1] = *header;
    (
        u16::from_le_bytes([o0, o1]) as usize,
        u16::from_le_bytes([l0, l1]) as usize + 1,
    )
}

/// Apply a delta's runs over `page` (which holds the parent's bytes).
pub fn apply_delta(page: &mut [u8], runs: &[u8]) -> Result<(), CodecError> {
    let mut rest = runs;
    let mut min_offset = 0usize;
    let page_len = page.len();
    while !rest.is_empty() {
        let (header, tail) = rest
            .split_first_chunk::<RUN_HEADER>()
            .ok_or(CodecError::DeltaTruncated)?;
        let (offset, len) = run_header(header);
        if offset < min_offset {
            return Err(CodecError::DeltaRunOrder { offset });
        }
        let bytes = tail.get(..len).ok_or(CodecError::DeltaTruncated)?;
        let target = page
            .get_mut(offset..offset + len)
            .ok_or(CodecError::DeltaRunOutOfPage {
                offset,
                len,
                page: page_len,
            })?;
        target.copy_from_slice(bytes);
        min_offset = offset + len;
        rest = tail.get(len..).ok_or(CodecError::DeltaTruncated)?;
    }
    Ok(())
}

/// Iterate the runs `(offset, len)` of a delta, validated against `page_len`.
pub fn delta_runs(
    runs: &[u8],
    page_len: usize,
) -> impl Iterator<Item = Result<(usize, usize), CodecError>> + '_ {
    let mut rest = runs;
    let mut failed = false;
    std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        let r = (|| {
            let (header, tail) = rest
                .split_first_chunk::<RUN_HEADER>()
                .ok_or(CodecError::DeltaTruncated)?;
            let (offset, len) = run_header(header);
            if offset + len > page_len {
                return Err(CodecError::DeltaRunOutOfPage {
                    offset,
                    len,
                    page: page_len,
                });
            }
            rest = tail.get(len..).ok_or(CodecError::DeltaTruncated)?;
            Ok((offset, len))
        })();
        failed = r.is_err();
        Some(r)
    })
}

/// The maximal runs `[start, end)` of bytes that differ between two equal-length slices.
///
/// Equal stretches are skipped 64 bytes at a time (memcmp speed); runs are exact: every
/// byte inside a run differs.
pub struct ChangedRuns<'a> {
    a: &'a [u8],
    b: &'a [u8],
    pos: usize,
}

impl<'a> ChangedRuns<'a> {
    /// Runs where `a` and `b` differ. Only the common prefix of the two is compared.
    pub fn new(a: &'a [u8], b: &'a [u8]) -> Self {
        let n = a.len().min(b.len());
        ChangedRuns {
            a: a.split_at(n).0,
            b: b.split_at(n).0,
            pos: 0,
        }
    }
}

const BLOCK: usize = 64;

/// Whether the `BLOCK` bytes at `i` are equal in both slices. The xors of the block's
/// words are or-ed together, which the compiler turns into inline vector instructions
/// (comparing `[u8; 64]` arrays with `==` compiled to a `memcmp` call per block).
/// A block past the end of either slice is not equal.
#[inline(always)]
fn block_eq(a: &[u8], b: &[u8], i: usize) -> bool {
    let (Some((x, _)), Some((y, _))) = (
        a.get(i..).and_then(<[u8]>::split_first_chunk::<BLOCK>),
        b.get(i..).and_then(<[u8]>::split_first_chunk::<BLOCK>),
    ) else {
        return false;
    };
    let mut acc = 0u64;
    for (p, q) in x.as_chunks::<8>().0.iter().zip(y.as_chunks::<8>().0) {
        acc |= u64::from_le_bytes(*p) ^ u64::from_le_bytes(*q);
    }
    acc == 0
}

/// True when both slices have a byte at `i` and it is the same.
#[inline(always)]
fn same_at(a: &[u8], b: &[u8], i: usize) -> bool {
    matches!((a.get(i), b.get(i)), (Some(x), Some(y)) if x == y)
}

/// The 8 bytes at `i` of a slice as a little-endian word, if there are 8.
#[inline(always)]
fn word(a: &[u8], i: usize) -> Option<u64> {
    a.get(i..i + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
}

impl Iterator for ChangedRuns<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        let (a, b) = (self.a, self.b);
        let n = a.len();
        let mut i = self.pos;
        // Skip equal blocks, then equal words, then equal bytes.
        while i + BLOCK <= n && block_eq(a, b, i) {
            i += BLOCK;
        }
        while let (Some(x), Some(y)) = (word(a, i), word(b, i)) {
            let d = x ^ y;
            if d != 0 {
                i += (d.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        while i < n && same_at(a, b, i) {
            i += 1;
        }
        if i >= n {
            self.pos = n;
            return None;
        }
        let start = i;
        // The run ends at the first equal byte: a zero byte of `x ^ y`, found a
        // word at a time (the lowest set bit of the classic has-zero-byte mask
        // marks the first zero byte exactly), then bytes for the tail.
        const LO: u64 = 0x0101_0101_0101_0101;
        const HI: u64 = 0x8080_8080_8080_8080;
        loop {
            let (Some(x), Some(y)) = (word(a, i), word(b, i)) else {
                while i < n && !same_at(a, b, i) {
                    i += 1;
                }
                break;
            };
            let d = x ^ y;
            let zero = d.wrapping_sub(LO) & !d & HI;
            if zero != 0 {
                i += (zero.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        self.pos = i;
        Some((start, i))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lz4_and_raw_round_trip() {
        let mut s = Scratch::new();
        let page: Vec<u8> = (0..4096u32).map(|i| (i / 64) as u8).collect();
        let (enc, bytes) = encode_full(&page, &mut s);
        assert_eq!(enc, Encoding::Lz4);
        assert!(bytes.len() < 1024);
        let mut out = vec![0u8; 4096];
        decode_full(enc, &bytes, &mut out).unwrap();
        assert_eq!(out, page);

        let mut x = 0x1234_5678_9abc_def0u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (enc, bytes) = encode_full(&noise, &mut s);
        assert_eq!(enc, Encoding::Raw);
        decode_full(enc, &bytes, &mut out).unwrap();
        assert_eq!(out, noise);
    }

    #[test]
    fn corrupt_full_is_an_error() {
        let mut out = vec![0u8; 1024];
        assert!(matches!(
            decode_full(Encoding::Raw, &[1, 2, 3], &mut out),
            Err(CodecError::RawLength { .. })
        ));
        assert!(decode_full(Encoding::Lz4, &[0xff, 0xff, 0xff], &mut out).is_err());
    }

    #[test]
    fn corrupt_delta_is_an_error() {
        let mut page = vec![0u8; 1024];
        // run past the page end
        let bad = [0xff, 0x03, 0x01, 0x00, 9, 9];
        assert!(matches!(
            apply_delta(&mut page, &bad),
            Err(CodecError::DeltaRunOutOfPage { .. })
        ));
        // truncated header and body
        assert!(matches!(
            apply_delta(&mut page, &[0, 0]),
            Err(CodecError::DeltaTruncated)
        ));
        assert!(matches!(
            apply_delta(&mut page, &[0, 0, 5, 0, 1]),
            Err(CodecError::DeltaTruncated)
        ));
    }

    #[test]
    fn delta_limit_is_respected() {
        let mut s = Scratch::new();
        let a = vec![0u8; 4096];
        let b = vec![1u8; 4096];
        assert!(encode_delta(&a, &b, 100, &mut s).is_none());
        assert!(encode_delta(&a, &a, 100, &mut s).is_none());
    }

    /// A 1 KiB page whose first `runs` bytes of every 64 are pseudo-random (from
    /// `seed`) and the rest zero: from incompressible to all zeros.
    fn runs_page(seed: u64, runs: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..1024)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 64 < runs {
                    x as u8
                } else {
                    0
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn delta_round_trip(base in proptest::collection::vec(any::<u8>(), 1024),
                            writes in proptest::collection::vec((0usize..1024, any::<u8>()), 0..64)) {
            let mut page = base.clone();
            for (i, v) in writes { page[i] = v; }
            let mut s = Scratch::new();
            match encode_delta(&base, &page, 4096, &mut s) {
                Some(d) => {
                    let mut out = base.clone();
                    apply_delta(&mut out, d).unwrap();
                    prop_assert_eq!(out, page);
                }
                None => prop_assert_eq!(&base, &page),
            }
        }

        #[test]
        fn changed_runs_cover_exactly_the_differences(a in proptest::collection::vec(0u8..4, 0..600),
                                                      flips in proptest::collection::vec(any::<prop::sample::Index>(), 0..40)) {
            let mut b = a.clone();
            if !b.is_empty() {
                for f in flips { let i = f.index(b.len()); b[i] = b[i].wrapping_add(1); }
            }
            let mut covered = vec![false; a.len()];
            let mut last_end = 0;
            for (s, e) in ChangedRuns::new(&a, &b) {
                prop_assert!(s < e && s >= last_end);
                prop_assert!((s..e).all(|k| a[k] != b[k]));
                for c in &mut covered[s..e] { *c = true; }
                last_end = e;
            }
            for i in 0..a.len() {
                if a[i] != b[i] { prop_assert!(covered[i]); }
            }
        }

        /// A differing byte followed by an equal one, then a byte differing by
        /// one: `x ^ y` has bytes `.., 0x00, 0x01, ..`, where the has-zero-byte
        /// mask's borrow reaches the byte above the zero one. The run must end at
        /// the zero byte exactly.
        #[test]
        fn changed_runs_end_exactly_before_a_borrowing_byte(at in 0usize..16) {
            let a = vec![0u8; 24];
            let mut b = a.clone();
            b[at] = 0x80;
            b[at + 2] = 0x01;
            let runs: Vec<_> = ChangedRuns::new(&a, &b).collect();
            prop_assert_eq!(runs, vec![(at, at + 1), (at + 2, at + 3)]);
        }

        /// Dense differences (long differing runs, scanned a word at a time):
        /// the runs are exactly the maximal differing stretches.
        #[test]
        fn changed_runs_are_maximal_on_dense_differences(
            a in proptest::collection::vec(any::<u8>(), 0..600),
            mask in proptest::collection::vec(prop_oneof![3 => Just(0u8), 5 => 1u8..=255], 600),
        ) {
            let b: Vec<u8> = a.iter().zip(&mask).map(|(x, m)| x ^ m).collect();
            let expected: Vec<(usize, usize)> = {
                let mut runs = Vec::new();
                let mut i = 0;
                while i < a.len() {
                    if a[i] != b[i] {
                        let s = i;
                        while i < a.len() && a[i] != b[i] { i += 1; }
                        runs.push((s, i));
                    } else {
                        i += 1;
                    }
                }
                runs
            };
            prop_assert_eq!(ChangedRuns::new(&a, &b).collect::<Vec<_>>(), expected);
        }

        /// Whatever the page, the bytes `encode_full` returns decode, under the
        /// encoding it names, to the page.
        #[test]
        fn full_pages_decode_under_the_encoding_they_are_tagged_with(
            seed in any::<u64>(),
            runs in 0usize..64,
        ) {
            let page = runs_page(seed, runs);
            let mut s = Scratch::new();
            let (enc, bytes) = encode_full(&page, &mut s);
            let mut out = vec![0u8; 1024];
            decode_full(enc, &bytes, &mut out).unwrap();
            prop_assert_eq!(out, page);
        }

        /// `compress` gives exactly the lz4 block `encode_full` stores, and nothing
        /// exactly when `encode_full` stores the page raw.
        #[test]
        fn compress_is_the_lz4_block_of_encode_full(
            seed in any::<u64>(),
            runs in 0usize..64,
        ) {
            let page = runs_page(seed, runs);
            let mut s = Scratch::new();
            let (enc, bytes) = encode_full(&page, &mut s);
            let block = compress(&page, &mut s).map(<[u8]>::to_vec);
            match enc {
                Encoding::Lz4 => prop_assert_eq!(block.as_deref(), Some(&bytes[..])),
                Encoding::Raw => prop_assert_eq!(block, None),
            }
        }

        #[test]
        fn garbage_deltas_never_panic(runs in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut page = vec![0u8; 1024];
            let _ = apply_delta(&mut page, &runs);
            let _ = delta_runs(&runs, 1024).count();
        }
    }
}
