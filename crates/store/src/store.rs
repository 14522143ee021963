//! The object store: pages by hash, with reference counts, reverse deltas and compaction.
//!
//! A new page is stored whole and raw: capture then costs one copy, and the newest
//! version of every slot reads back at memcpy speed. When a slot's page is replaced, the
//! page it replaces is re-encoded as a delta *against the new page* (a reverse delta, as
//! git packs keep recent objects whole): history nearest the head stays cheapest to
//! rebuild, and the oldest versions, which expire first, are leaves nobody depends on, so
//! freeing them needs no compaction. The re-encoding waits
//! [`StoreConfig::delta_after`] frames: a rollback abandons the newest pages, and a
//! delta made against a page that is freed a few frames later would have to be
//! compacted back into a full page, so the newest few frames are left whole. Raw pages that nobody replaced for
//! [`StoreConfig::compress_after`] frames are compressed with lz4 by
//! [`PageStore::compress_aged`]. A replaced page is held raw for
//! [`StoreConfig::rollback_window`] frames (inflated if it had been compressed): a
//! rollback inside that window writes it back with one copy.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hasher as StdHasher};

use crate::codec::{self, Encoding, Scratch};
use crate::{Hasher, PageHash, PageSize, RebuildError, StoreError};

/// How a store is set up. Fixed for the life of a history.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The page size.
    pub page_size: PageSize,
    /// The hash seed; `None` picks a random one.
    pub seed: Option<u64>,
    /// The longest delta chain: reading a page applies at most this many deltas.
    pub max_chain: u8,
    /// A replaced page becomes a delta only when the delta is at most `1/n` of the page.
    pub delta_divisor: u32,
    /// Frames a replaced page stays whole before it is re-encoded as a delta against the
    /// page that replaced it (0: at once). Rollbacks shorter than this abandon pages no
    /// delta depends on, so dropping the abandoned branch needs no compaction.
    pub delta_after: u64,
    /// Frames a raw page waits before [`PageStore::compress_aged`] compresses it
    /// (pages replaced sooner become deltas and are never compressed).
    pub compress_after: u64,
    /// Frames of progress a replaced page is held whole and raw (at most
    /// `delta_after`): the rollback window. A rollback of up to this many frames
    /// writes back the pages replaced since its target, and holding them raw makes
    /// each one a copy; one that had been compressed is inflated when it is replaced,
    /// on the capture. Leaving the window it becomes a delta, or is compressed.
    pub rollback_window: u64,
    /// The fewest pages one [`PageStore::compress_aged`] call may compress; the budget
    /// rises with the rate raw pages are stored at ([`PageStore::compress_budget`]), so
    /// a per-frame call costs in proportion to what the frame wrote;
    /// [`PageStore::compress_all_aged`] has no limit.
    pub compress_budget: usize,
}

impl StoreConfig {
    /// Defaults for a page size: chains of at most 8 deltas, deltas of up to 1/4 page
    /// made 10 frames after the replacement (past GGRS's default 8-frame prediction
    /// window), compression of pages left unreplaced for 16 frames, at most 16 per call.
    pub fn new(page_size: PageSize) -> Self {
        StoreConfig {
            page_size,
            seed: None,
            max_chain: 8,
            delta_divisor: 4,
            delta_after: 10,
            compress_after: 16,
            compress_budget: 16,
            rollback_window: 10,
        }
    }

    /// Use this hash seed (peers that compare state hashes must share it).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Set the longest delta chain (0 stores every page in full).
    pub fn max_chain(mut self, depth: u8) -> Self {
        self.max_chain = depth;
        self
    }

    /// Set how many frames a replaced page stays whole before it becomes a delta (0:
    /// at once).
    pub fn delta_after(mut self, frames: u64) -> Self {
        self.delta_after = frames;
        self
    }

    /// Set how many frames a raw page waits before it is compressed.
    pub fn compress_after(mut self, frames: u64) -> Self {
        self.compress_after = frames;
        self
    }

    /// Set how many frames of progress a replaced page is held whole and raw (the
    /// rollback window, at most `delta_after`; 0 holds nothing).
    pub fn rollback_window(mut self, frames: u64) -> Self {
        self.rollback_window = frames;
        self
    }
}

/// A stored object, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    /// A whole page.
    Full {
        /// How `bytes` encode the page.
        encoding: Encoding,
        /// The encoded page.
        bytes: Box<[u8]>,
    },
    /// Changed byte runs against a parent page.
    Delta {
        /// The page the runs apply to.
        parent: PageHash,
        /// The runs, as encoded by [`codec::encode_delta`].
        runs: Box<[u8]>,
    },
}

/// A stored object, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectRef<'a> {
    /// A whole page.
    Full {
        /// How `bytes` encode the page.
        encoding: Encoding,
        /// The encoded page.
        bytes: &'a [u8],
    },
    /// Changed byte runs against a parent page.
    Delta {
        /// The page the runs apply to.
        parent: PageHash,
        /// The encoded runs.
        runs: &'a [u8],
    },
}

impl Object {
    /// Borrow the object.
    pub fn as_ref(&self) -> ObjectRef<'_> {
        match self {
            Object::Full { encoding, bytes } => ObjectRef::Full {
                encoding: *encoding,
                bytes,
            },
            Object::Delta { parent, runs } => ObjectRef::Delta {
                parent: *parent,
                runs,
            },
        }
    }

    /// Bytes the object occupies (its encoded payload).
    pub fn stored_len(&self) -> usize {
        match self {
            Object::Full { bytes, .. } => bytes.len(),
            Object::Delta { runs, .. } => runs.len(),
        }
    }
}

/// What [`PageStore::put`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// The all-zero page: nothing stored, nothing referenced.
    Zero,
    /// The page was already stored: one more reference, no bytes.
    Dedup,
    /// Stored as a new full page of this many bytes.
    Full(usize),
}

/// Counters of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Objects held.
    pub objects: usize,
    /// Of which full pages.
    pub full_pages: usize,
    /// Of which full pages kept raw (young, or lz4 did not pay).
    pub raw_pages: usize,
    /// Of which deltas.
    pub delta_pages: usize,
    /// Encoded bytes held, all objects.
    pub stored_bytes: u64,
    /// Puts of a page that was already stored.
    pub dedup_hits: u64,
    /// Puts that stored new bytes.
    pub new_objects: u64,
    /// Replaced pages re-encoded as deltas against their replacement.
    pub deltas_made: u64,
    /// Raw pages compressed with lz4 after aging.
    pub compressed: u64,
    /// Compressed pages made raw again when replaced, to be written back by a copy
    /// while they are inside the rollback window ([`StoreConfig::delta_after`]).
    pub inflated: u64,
    /// Pages put again while waiting to be freed, taken back instead of stored anew
    /// ([`PageStore::set_deferred_frees`]; also counted in `new_objects`).
    pub revived: u64,
    /// Objects freed.
    pub freed_objects: u64,
    /// Encoded bytes freed.
    pub freed_bytes: u64,
    /// Deltas turned into full pages because their parent was freed.
    pub compacted_full: u64,
    /// Deltas re-based onto their grandparent because their parent was freed.
    pub compacted_rebased: u64,
}

/// What one [`PageStore::release`] freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Freed {
    /// Objects freed.
    pub objects: u64,
    /// Encoded bytes freed, net of bytes that compaction added.
    pub bytes: u64,
    /// Deltas compacted.
    pub compacted: u64,
}

#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl StdHasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Keys are seeded xxh3-128 outputs: any 8 of their bytes are already uniform.
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= (*b as u64) << (8 * i);
        }
    }
}

/// The object table. `griddle`'s map moves entries to a grown table a few at a time
/// on later inserts instead of all at once, so no capture stalls on moving the whole
/// table. With the standard map the worst hinted capture of the 64 MiB / 1 % workload
/// was 8.4–8.9 ms, with this one 0.8 ms (`cargo run --release -p rewind-bench --bin
/// compare -- --workloads 64MiB-1%-clustered --peers hint,scan,archive --no-git`).
type KeyMap<V> = griddle::HashMap<PageHash, V, BuildHasherDefault<KeyHasher>>;

struct Entry {
    object: Object,
    refs: u32,
    /// Deltas whose parent is this object.
    children: Vec<PageHash>,
    /// An upper bound of the longest chain of deltas that ends at this object.
    height: u8,
    /// The frame until which this page is held whole and raw: a page replaced in the
    /// last [`StoreConfig::delta_after`] frames is what a rollback inside that window
    /// writes back, so it is not compressed (and was inflated if it had been) until
    /// it leaves the window.
    hold: u64,
    /// The length of the lz4 block this page had before it was inflated to be held
    /// raw (0: never compressed): a delta against its replacement must beat half of it.
    /// A block is kept only when smaller than 7/8 of a page of at most 64 KiB, so it
    /// fits, and the field sits in the padding after `refs` and `height`.
    lz4_len: u16,
}

/// The content-addressed store of pages of one history.
pub struct PageStore {
    page_size: PageSize,
    hasher: Hasher,
    max_chain: u8,
    delta_limit: usize,
    delta_after: u64,
    compress_after: u64,
    compress_budget: usize,
    /// Frames a replaced page is held raw: `rollback_window`, at most `delta_after`.
    hold_frames: u64,
    /// Whether the compression budget follows the store rate.
    follow_rate: bool,
    /// Raw pages stored in the current frame, and a running average per frame
    /// (×16, fixed point): the compression budget follows it.
    stored_this_frame: u64,
    store_rate_x16: u64,
    objects: KeyMap<Entry>,
    /// Replaced pages awaiting re-encoding as a delta: (old, new, frame of the
    /// replacement), oldest first.
    replaced: VecDeque<(PageHash, PageHash, u64)>,
    /// Raw pages in the order they were stored, with their frame, awaiting compression.
    young: VecDeque<(PageHash, u64)>,
    /// Replaced pages that left the rollback window without becoming deltas: history,
    /// compressed by the next [`PageStore::compress_aged`] calls before `young`.
    due: VecDeque<PageHash>,
    frame: u64,
    scratch: Scratch,
    buf_a: Vec<u8>,
    buf_b: Vec<u8>,
    /// Page-sized buffers of freed or compressed raw pages, reused for new pages: a
    /// rollback game frees and stores the same number of pages every frame, and
    /// reusing their buffers spares the allocator and the kernel's page faults.
    spare: Vec<Box<[u8]>>,
    /// Whether objects whose last reference goes wait for the next frame before they
    /// are freed ([`PageStore::set_deferred_frees`]).
    defer_frees: bool,
    /// Objects released to zero references, still held until the next frame: a put of
    /// the same page revives one. Counted as freed in the stats.
    retired: Vec<PageHash>,
    stats: StoreStats,
}

/// The fewest bytes of spare page buffers a store keeps; the bound rises with the rate
/// raw pages are stored at ([`PageStore::spare_cap`]).
const SPARE_BYTES: usize = 8 << 20;

impl PageStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        let seed = config.seed.unwrap_or_else(Hasher::random_seed);
        let ps = config.page_size.bytes();
        PageStore {
            page_size: config.page_size,
            hasher: Hasher::new(seed, config.page_size),
            max_chain: config.max_chain,
            delta_limit: ps / config.delta_divisor.max(1) as usize,
            delta_after: config.delta_after,
            compress_after: config.compress_after,
            compress_budget: config.compress_budget,
            hold_frames: config.rollback_window.min(config.delta_after),
            follow_rate: false,
            stored_this_frame: 0,
            store_rate_x16: 0,
            objects: KeyMap::default(),
            replaced: VecDeque::new(),
            young: VecDeque::new(),
            due: VecDeque::new(),
            frame: 0,
            scratch: Scratch::new(),
            buf_a: vec![0; ps],
            buf_b: vec![0; ps],
            spare: Vec::new(),
            defer_frees: false,
            retired: Vec::new(),
            stats: StoreStats::default(),
        }
    }

    /// The page size.
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// The hasher (and so the seed) of this store.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// The longest delta chain.
    pub fn max_chain(&self) -> u8 {
        self.max_chain
    }

    /// Hash a page with this store's seed.
    #[inline]
    pub fn hash(&self, page: &[u8]) -> PageHash {
        self.hasher.page(page)
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// True when an object with this hash is stored (and referenced).
    pub fn contains(&self, hash: PageHash) -> bool {
        self.objects.get(&hash).is_some_and(|e| e.refs > 0)
    }

    /// The reference count of an object (0 when absent).
    pub fn refs(&self, hash: PageHash) -> u32 {
        self.objects.get(&hash).map_or(0, |e| e.refs)
    }

    /// Borrow a stored object.
    pub fn get(&self, hash: PageHash) -> Option<ObjectRef<'_>> {
        self.objects.get(&hash).map(|e| e.object.as_ref())
    }

    /// All objects with their reference counts, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (PageHash, ObjectRef<'_>, u32)> + '_ {
        self.objects
            .iter()
            .filter(|(_, e)| e.refs > 0)
            .map(|(h, e)| (*h, e.object.as_ref(), e.refs))
    }

    fn check_len(&self, page: &[u8]) -> Result<(), StoreError> {
        if page.len() != self.page_size.bytes() {
            return Err(StoreError::PageLength {
                expected: self.page_size.bytes(),
                found: page.len(),
            });
        }
        Ok(())
    }

    /// Count one frame: raw pages age by frames (see [`PageStore::compress_aged`]; a
    /// history counts a frame for each capture past the furthest iteration it has
    /// captured, so re-simulation after a rollback ages nothing), and
    /// pages replaced [`StoreConfig::delta_after`] frames ago become deltas against
    /// their replacements (those still stored: a page freed since, such as one of an
    /// abandoned branch, leaves its predecessor whole).
    pub fn advance_frame(&mut self) {
        self.frame += 1;
        self.free_retired();
        // An exponential average over ~4 frames of the raw pages stored per frame.
        self.store_rate_x16 = (self.store_rate_x16 * 3 + self.stored_this_frame * 16) / 4;
        self.stored_this_frame = 0;
        // A queue that outgrows its bound (a store that never advances frames, then
        // does) drops its oldest entries: those pages stay whole, which is correct.
        const QUEUE_CAP: usize = 1 << 20;
        while self.replaced.len() > QUEUE_CAP {
            self.replaced.pop_front();
        }
        while let Some(&(old, new, f)) = self.replaced.front() {
            if f.saturating_add(self.delta_after) > self.frame {
                break;
            }
            self.replaced.pop_front();
            match self.demote(old, new, None) {
                Demotion::Done | Demotion::Gone | Demotion::Held => {}
                // A replaced page that cannot be a small delta is history (its
                // replacement is stored): due for compression now, within the
                // compression budget of the next GC steps.
                Demotion::Failed { new_stored: true } => self.due.push_back(old),
                // Its replacement was freed (an abandoned branch): the slot may hold it
                // again, so it is left to age in the compression queue.
                Demotion::Failed { new_stored: false } => {}
            }
        }
    }

    /// Store `page` (whose hash is `hash`, from [`PageStore::hash`]) and take one
    /// reference to it. `base` is the page that held the same slot before (or
    /// [`PageHash::ZERO`]): when the new page is whole and the delta is small, `base` is
    /// re-encoded as a delta against the new page, [`StoreConfig::delta_after`] frames
    /// later.
    pub fn put(&mut self, hash: PageHash, page: &[u8], base: PageHash) -> Result<Put, StoreError> {
        self.check_len(page)?;
        if hash.is_zero() {
            return Ok(Put::Zero);
        }
        let put = match self.objects.entry(hash) {
            griddle::hash_map::Entry::Occupied(mut o) => {
                let e = o.get_mut();
                e.refs += 1;
                if e.refs == 1 {
                    // Released this frame and not freed yet (an abandoned branch's page
                    // that a re-simulated capture wrote again): revived, not copied. It
                    // counts as a new page, as when it was freed and stored again.
                    count_in(&mut self.stats, &e.object);
                    self.stats.new_objects += 1;
                    self.stats.revived += 1;
                    self.young.push_back((hash, self.frame));
                    self.stored_this_frame += 1;
                    Put::Full(page.len())
                } else {
                    self.stats.dedup_hits += 1;
                    Put::Dedup
                }
            }
            griddle::hash_map::Entry::Vacant(v) => {
                let bytes = match self.spare.pop() {
                    Some(mut b) => {
                        b.copy_from_slice(page);
                        b
                    }
                    None => page.into(),
                };
                let object = Object::Full {
                    encoding: Encoding::Raw,
                    bytes,
                };
                count_in(&mut self.stats, &object);
                v.insert(Entry {
                    object,
                    refs: 1,
                    children: Vec::new(),
                    height: 0,
                    hold: 0,
                    lz4_len: 0,
                });
                self.stats.new_objects += 1;
                self.young.push_back((hash, self.frame));
                self.stored_this_frame += 1;
                Put::Full(page.len())
            }
        };
        if self.delta_after == 0 {
            self.demote(base, hash, Some(page));
        } else if !base.is_zero() && base != hash {
            self.replaced.push_back((base, hash, self.frame));
            if self.hold_frames > 0 {
                self.hold_raw(base);
            }
        }
        Ok(put)
    }

    /// Hold `old`, just replaced, whole and raw for [`StoreConfig::rollback_window`]
    /// frames: a rollback inside the window writes it back, and a raw
    /// page is written with one copy. A page compressed earlier (it had not been
    /// replaced for [`StoreConfig::compress_after`] frames) is inflated here, on the
    /// capture, rather than on every rollback that writes it back.
    fn hold_raw(&mut self, old: PageHash) {
        let until = self.frame.saturating_add(self.hold_frames);
        let PageStore {
            objects,
            spare,
            stats,
            page_size,
            young,
            compress_after,
            ..
        } = self;
        let Some(e) = objects.get_mut(&old).filter(|e| e.refs > 0) else {
            return;
        };
        e.hold = until;
        let Object::Full {
            encoding: Encoding::Lz4,
            bytes,
        } = &e.object
        else {
            return;
        };
        let mut raw = match spare.pop() {
            Some(b) => b,
            None => vec![0u8; page_size.bytes()].into_boxed_slice(),
        };
        if codec::decode_full(Encoding::Lz4, bytes, &mut raw).is_err() {
            // Left as it is: a read reports the corruption.
            spare.push(raw);
            return;
        }
        let before = std::mem::replace(
            &mut e.object,
            Object::Full {
                encoding: Encoding::Raw,
                bytes: raw,
            },
        );
        e.lz4_len = u16::try_from(before.stored_len()).unwrap_or(u16::MAX);
        count_out(stats, &before);
        count_in(stats, &e.object);
        stats.inflated += 1;
        // Compressed again once it leaves the window, if it is not a delta by then.
        young.push_back((old, until.saturating_sub(*compress_after)));
    }

    /// Re-encode `old` as a delta against `new` (whose bytes are `new_bytes`, or read
    /// from the store when `None`: a raw page is borrowed, not copied) when both are
    /// whole pages, `old` is not held raw by a later replacement, the chain bound allows
    /// it, and the delta is small (at most 1/4 page, and at most half of what lz4 makes
    /// of the page when that is more than 1/8 page).
    fn demote(&mut self, old: PageHash, new: PageHash, new_bytes: Option<&[u8]>) -> Demotion {
        if old.is_zero() || old == new {
            return Demotion::Gone;
        }
        let PageStore {
            objects,
            scratch,
            buf_a,
            buf_b,
            max_chain,
            delta_limit,
            stats,
            spare,
            page_size,
            frame,
            store_rate_x16,
            ..
        } = self;
        let Some(old_entry) = objects.get(&old).filter(|e| e.refs > 0) else {
            return Demotion::Gone;
        };
        if old_entry.hold > *frame && new_bytes.is_none() {
            return Demotion::Held;
        }
        let Some(new_entry) = objects.get(&new).filter(|e| e.refs > 0) else {
            return Demotion::Failed { new_stored: false };
        };
        let failed = Demotion::Failed { new_stored: true };
        let new_bytes: &[u8] = match (new_bytes, &new_entry.object) {
            (_, Object::Delta { .. }) => return failed,
            (Some(b), _) => b,
            (
                None,
                Object::Full {
                    encoding: Encoding::Raw,
                    bytes,
                },
            ) => bytes,
            (None, Object::Full { encoding, bytes }) => {
                if codec::decode_full(*encoding, bytes, buf_b).is_err() {
                    return failed;
                }
                buf_b
            }
        };
        if old_entry.height >= *max_chain {
            return failed;
        }
        // A delta must beat half of what lz4 makes of the page, when that is known
        // (the page is compressed, or was before it was held raw): no lz4 is run here,
        // on the capture, only to compare.
        let lz4_limit = |len: usize| (*delta_limit).min(len / 2);
        let (old_bytes, limit): (&[u8], usize) = match &old_entry.object {
            Object::Full {
                encoding: Encoding::Raw,
                bytes,
            } => match old_entry.lz4_len {
                0 => (bytes, *delta_limit),
                len => (bytes, lz4_limit(len as usize)),
            },
            Object::Full {
                encoding: Encoding::Lz4,
                bytes,
            } => {
                if codec::decode_full(Encoding::Lz4, bytes, buf_a).is_err() {
                    return failed;
                }
                (buf_a.as_slice(), lz4_limit(bytes.len()))
            }
            Object::Delta { .. } => return Demotion::Gone,
        };
        let Some(runs) = codec::encode_delta(new_bytes, old_bytes, limit, scratch) else {
            return failed;
        };
        let runs: Box<[u8]> = runs.into();
        let old_height = old_entry.height;
        let Some(old_entry) = objects.get_mut(&old) else {
            return Demotion::Gone;
        };
        let before = std::mem::replace(&mut old_entry.object, Object::Delta { parent: new, runs });
        let after_len = old_entry.object.stored_len();
        count_out(stats, &before);
        let cap = spare_cap(*store_rate_x16, page_size.bytes());
        Self::keep_spare(spare, cap, page_size.bytes(), before);
        stats.objects += 1;
        stats.delta_pages += 1;
        stats.stored_bytes += after_len as u64;
        stats.deltas_made += 1;
        if let Some(n) = objects.get_mut(&new) {
            n.children.push(old);
            n.height = n.height.max(old_height + 1);
        }
        Demotion::Done
    }

    /// lz4-compress a raw entry in place when that pays; true when it did.
    fn compress_entry(
        e: &mut Entry,
        scratch: &mut Scratch,
        stats: &mut StoreStats,
        spare: &mut Vec<Box<[u8]>>,
        spare_cap: usize,
    ) -> bool {
        let Object::Full {
            encoding: Encoding::Raw,
            bytes,
        } = &e.object
        else {
            return false;
        };
        let page_size = bytes.len();
        // `compress` declines a page lz4 does not shrink by 1/8, without allocating.
        let Some(packed) = codec::compress(bytes, scratch).map(Box::<[u8]>::from) else {
            return false;
        };
        let saved = (page_size - packed.len()) as u64;
        let raw = std::mem::replace(
            &mut e.object,
            Object::Full {
                encoding: Encoding::Lz4,
                bytes: packed,
            },
        );
        Self::keep_spare(spare, spare_cap, page_size, raw);
        stats.raw_pages -= 1;
        stats.stored_bytes -= saved;
        stats.compressed += 1;
        true
    }

    /// The most spare page buffers kept: [`SPARE_BYTES`], or more when raw pages are
    /// stored faster (a rollback game at a high write rate frees and stores a frame's
    /// worth of pages every frame; the buffers it frees serve the next frame's pages).
    fn spare_cap(&self) -> usize {
        spare_cap(self.store_rate_x16, self.page_size.bytes())
    }

    /// The most pages one [`PageStore::compress_aged`] call examines: the configured
    /// budget or, when the budget follows the rate
    /// ([`PageStore::set_compress_follows_rate`]), 5/4 of the raw pages stored per
    /// frame lately when more arrive, so that compression keeps up with a guest that
    /// writes most of its pages (whose pages rarely become small deltas) instead of
    /// leaving them raw.
    pub fn compress_budget(&self) -> usize {
        if !self.follow_rate {
            return self.compress_budget;
        }
        let rate = self.store_rate_x16.div_ceil(16);
        let following = rate.saturating_add(rate / 4);
        self.compress_budget
            .max(usize::try_from(following).unwrap_or(usize::MAX))
    }

    /// Compress up to [`PageStore::compress_budget`] raw pages stored at least `compress_after` frames
    /// ago that are still whole and raw, oldest first. Returns how many pages were
    /// examined. Pages left over wait for the next call.
    pub fn compress_aged(&mut self) -> usize {
        self.compress_some(self.compress_budget())
    }

    /// Let the compression budget follow the rate raw pages are stored at (for a
    /// store whose GC steps run off the frame's critical path, such as on a capture
    /// pipeline's worker), or keep it at the configured budget (the default: a GC
    /// step on the caller's thread costs a bounded time).
    pub fn set_compress_follows_rate(&mut self, on: bool) {
        self.follow_rate = on;
    }

    /// Compress every raw page that has aged (for explicit, idle-time collection).
    pub fn compress_all_aged(&mut self) -> usize {
        self.compress_some(usize::MAX)
    }

    fn compress_some(&mut self, budget: usize) -> usize {
        // A queue that outgrows what compression keeps up with drops its oldest entries:
        // those pages stay raw (correct, only larger), and the queue stays bounded.
        const QUEUE_CAP: usize = 1 << 20;
        while self.young.len() > QUEUE_CAP {
            self.young.pop_front();
        }
        while self.due.len() > QUEUE_CAP {
            self.due.pop_front();
        }
        let mut n = 0;
        let cap = self.spare_cap();
        while n < budget {
            let Some(h) = self.due.pop_front() else { break };
            let Some(e) = self.objects.get_mut(&h).filter(|e| e.refs > 0) else {
                continue;
            };
            n += 1;
            // Replaced again since (held inside the window): not history yet.
            if e.hold <= self.frame {
                Self::compress_entry(e, &mut self.scratch, &mut self.stats, &mut self.spare, cap);
            }
        }
        while let Some(&(h, f)) = self.young.front() {
            if n >= budget || f.saturating_add(self.compress_after) > self.frame {
                break;
            }
            self.young.pop_front();
            // A page freed since (an abandoned branch's) costs nothing: not counted.
            let Some(e) = self.objects.get_mut(&h).filter(|e| e.refs > 0) else {
                continue;
            };
            n += 1;
            // A page held raw inside the rollback window waits until it leaves it
            // (queued again, due then; by then it may be a delta).
            if e.hold > self.frame {
                self.young
                    .push_back((h, e.hold.saturating_sub(self.compress_after)));
                continue;
            }
            Self::compress_entry(e, &mut self.scratch, &mut self.stats, &mut self.spare, cap);
        }
        n
    }

    fn insert_entry(&mut self, hash: PageHash, object: Object, refs: u32) {
        count_in(&mut self.stats, &object);
        if let Object::Delta { parent, .. } = &object {
            if let Some(p) = self.objects.get_mut(parent) {
                p.children.push(hash);
                p.height = p.height.max(1);
            }
        }
        self.objects.insert(
            hash,
            Entry {
                object,
                refs,
                children: Vec::new(),
                height: 0,
                hold: 0,
                lz4_len: 0,
            },
        );
    }

    /// Insert an object read from elsewhere (an archive) with `refs` references.
    ///
    /// A delta's parent must be stored and its chain within the store's bound. The
    /// bytes are trusted to hash to `hash` only after [`PageStore::verify`].
    pub fn insert_object(&mut self, hash: PageHash, object: Object, refs: u32) -> Result<(), StoreError> {
        if hash.is_zero() {
            return Err(StoreError::InvalidObject {
                hash,
                reason: "the zero page is never stored",
            });
        }
        if self.objects.contains_key(&hash) {
            return Err(StoreError::InvalidObject {
                hash,
                reason: "already stored",
            });
        }
        if let Object::Delta { parent, .. } = &object {
            if !self.objects.contains_key(parent) {
                return Err(StoreError::InvalidObject {
                    hash,
                    reason: "delta parent is not stored",
                });
            }
            // The chain below the new delta, and the heights above it.
            let mut cur = *parent;
            let mut dist = 1u8;
            while let Some(e) = self.objects.get(&cur) {
                let Object::Delta { parent, .. } = &e.object else {
                    break;
                };
                if dist >= self.max_chain {
                    return Err(StoreError::InvalidObject {
                        hash,
                        reason: "delta chain longer than the store's bound",
                    });
                }
                dist += 1;
                cur = *parent;
            }
            if !self.objects.contains_key(&cur) {
                return Err(StoreError::InvalidObject {
                    hash,
                    reason: "delta chain reaches a missing object",
                });
            }
            let mut cur = *parent;
            let mut up = 1u8;
            while let Some(e) = self.objects.get_mut(&cur) {
                e.height = e.height.max(up);
                let Object::Delta { parent, .. } = &e.object else {
                    break;
                };
                cur = *parent;
                up += 1;
            }
        }
        self.insert_entry(hash, object, refs);
        Ok(())
    }

    /// Take one more reference to a stored page.
    pub fn retain(&mut self, hash: PageHash) -> Result<(), StoreError> {
        if hash.is_zero() {
            return Ok(());
        }
        let e = self
            .objects
            .get_mut(&hash)
            .filter(|e| e.refs > 0)
            .ok_or(StoreError::Object(RebuildError::MissingObject { hash }))?;
        e.refs += 1;
        Ok(())
    }

    /// Drop one reference. At zero the object is freed; deltas that depend on it are
    /// first compacted (re-based onto its parent when small, else whole).
    pub fn release(&mut self, hash: PageHash) -> Result<Freed, StoreError> {
        if hash.is_zero() {
            return Ok(Freed::default());
        }
        let defer = self.defer_frees;
        let e = self
            .objects
            .get_mut(&hash)
            .ok_or(StoreError::Object(RebuildError::MissingObject { hash }))?;
        if e.refs == 0 {
            if defer {
                // Retired: freed as far as anyone outside the store can tell.
                return Err(StoreError::Object(RebuildError::MissingObject { hash }));
            }
            return Err(StoreError::RefUnderflow { hash });
        }
        e.refs -= 1;
        if e.refs > 0 {
            return Ok(Freed::default());
        }
        if defer {
            let len = e.object.stored_len() as u64;
            count_out(&mut self.stats, &e.object);
            self.stats.freed_objects += 1;
            self.stats.freed_bytes += len;
            self.retired.push(hash);
            if self.retired.len() > self.spare_cap() {
                self.free_retired();
            }
            return Ok(Freed {
                objects: 1,
                bytes: len,
                compacted: 0,
            });
        }
        let before = self.stats.stored_bytes;
        let mut freed = self.free(hash)?;
        freed.bytes = before.saturating_sub(self.stats.stored_bytes);
        Ok(freed)
    }

    /// Let objects whose last reference is released wait until the next frame
    /// ([`PageStore::advance_frame`]) before they are freed, or free them at once (the
    /// default). A history turns this on: after a rollback the collector drops the
    /// abandoned branch, and the re-simulated captures then mostly write the very
    /// pages that branch held; a put of a page waiting to be freed takes it back (no
    /// copy, no table insert, no free). The stats count a waiting object as freed and a
    /// revived one as new, as if it had been freed and stored again; [`PageStore::iter`]
    /// and [`PageStore::contains`] do not see waiting objects.
    pub fn set_deferred_frees(&mut self, on: bool) {
        self.defer_frees = on;
        if !on {
            self.free_retired();
        }
    }

    /// Free the objects released to zero references since the last call that were not
    /// revived since.
    pub fn free_retired(&mut self) {
        let retired = std::mem::take(&mut self.retired);
        for &h in &retired {
            self.free_now(h);
        }
        // Keep the vector's buffer for the next frame.
        let mut retired = retired;
        retired.clear();
        if self.retired.is_empty() {
            self.retired = retired;
        }
    }

    /// Free a retired object (zero references, already counted out of the stats):
    /// retired deltas that depend on it go with it, live ones are compacted.
    fn free_now(&mut self, hash: PageHash) {
        let children = match self.objects.get_mut(&hash) {
            Some(e) if e.refs == 0 => std::mem::take(&mut e.children),
            _ => return,
        };
        let mut live = Vec::new();
        for c in children {
            match self.objects.get(&c) {
                Some(e) if e.refs == 0 => self.free_now(c),
                Some(_) => live.push(c),
                None => {}
            }
        }
        if !live.is_empty() && self.compact_children(hash, &live).is_err() {
            // The object does not rebuild (corrupt): keep it, so its children stay
            // as readable as they were; verify reports it.
            if let Some(e) = self.objects.get_mut(&hash) {
                e.children = live;
            }
            return;
        }
        let Some(entry) = self.objects.remove(&hash) else {
            return;
        };
        if let Object::Delta { parent, .. } = &entry.object {
            if let Some(p) = self.objects.get_mut(parent) {
                if let Some(i) = p.children.iter().position(|c| *c == hash) {
                    p.children.swap_remove(i);
                }
            }
        }
        let cap = self.spare_cap();
        Self::keep_spare(&mut self.spare, cap, self.page_size.bytes(), entry.object);
    }

    fn free(&mut self, hash: PageHash) -> Result<Freed, StoreError> {
        let mut freed = Freed::default();
        let children = match self.objects.get_mut(&hash) {
            Some(e) => std::mem::take(&mut e.children),
            None => return Err(StoreError::Object(RebuildError::MissingObject { hash })),
        };
        if !children.is_empty() {
            freed.compacted = self.compact_children(hash, &children)?;
        }
        let Some(entry) = self.objects.remove(&hash) else {
            return Err(StoreError::Object(RebuildError::MissingObject { hash }));
        };
        if let Object::Delta { parent, .. } = &entry.object {
            if let Some(p) = self.objects.get_mut(parent) {
                if let Some(i) = p.children.iter().position(|c| *c == hash) {
                    p.children.swap_remove(i);
                }
            }
        }
        count_out(&mut self.stats, &entry.object);
        self.stats.freed_objects += 1;
        self.stats.freed_bytes += entry.object.stored_len() as u64;
        freed.objects += 1;
        let cap = self.spare_cap();
        Self::keep_spare(&mut self.spare, cap, self.page_size.bytes(), entry.object);
        Ok(freed)
    }

    /// Keep the buffer of a raw page that is no longer stored for reuse by
    /// [`PageStore::put`], up to `cap` buffers.
    fn keep_spare(spare: &mut Vec<Box<[u8]>>, cap: usize, page_size: usize, object: Object) {
        if let Object::Full {
            encoding: Encoding::Raw,
            bytes,
        } = object
        {
            if bytes.len() == page_size && spare.len() < cap {
                spare.push(bytes);
            }
        }
    }

    /// Rewrite the deltas `children` of `hash` so they no longer need it.
    fn compact_children(&mut self, hash: PageHash, children: &[PageHash]) -> Result<u64, StoreError> {
        // The grandparent, when `hash` is itself a delta: children may be re-based on it.
        // Never one that is itself waiting to be freed (released to zero references):
        // it may be freed along with `hash` ([`PageStore::free_retired`]).
        let grand = match self.objects.get(&hash).map(|e| &e.object) {
            Some(Object::Delta { parent, .. }) if self.objects.get(parent).is_some_and(|g| g.refs > 0) => {
                Some(*parent)
            }
            _ => None,
        };
        let mut grand_bytes = std::mem::take(&mut self.buf_b);
        let have_grand = match grand {
            Some(g) => self.read(g, &mut grand_bytes).is_ok(),
            None => false,
        };
        let mut parent_bytes = vec![0u8; self.page_size.bytes()];
        self.read(hash, &mut parent_bytes)?;
        let mut child_bytes = std::mem::take(&mut self.buf_a);
        let mut compacted = 0;
        for &c in children {
            let runs = match self.objects.get(&c).map(|e| &e.object) {
                Some(Object::Delta { parent, runs }) if *parent == hash => runs.clone(),
                _ => continue,
            };
            child_bytes.copy_from_slice(&parent_bytes);
            codec::apply_delta(&mut child_bytes, &runs)
                .map_err(|source| StoreError::Object(RebuildError::Corrupt { hash: c, source }))?;
            let rebased = match grand {
                Some(g) if have_grand => {
                    codec::encode_delta(&grand_bytes, &child_bytes, self.delta_limit, &mut self.scratch).map(
                        |d| Object::Delta {
                            parent: g,
                            runs: d.into(),
                        },
                    )
                }
                _ => None,
            };
            let new_obj = match rebased {
                Some(obj) => {
                    let child_height = self.objects.get(&c).map_or(0, |e| e.height);
                    if let Some(g) = grand.and_then(|g| self.objects.get_mut(&g)) {
                        g.children.push(c);
                        g.height = g.height.max(child_height + 1);
                    }
                    self.stats.compacted_rebased += 1;
                    obj
                }
                None => {
                    let (encoding, bytes) = codec::encode_full(&child_bytes, &mut self.scratch);
                    self.stats.compacted_full += 1;
                    Object::Full { encoding, bytes }
                }
            };
            count_in(&mut self.stats, &new_obj);
            if let Some(e) = self.objects.get_mut(&c) {
                let old = std::mem::replace(&mut e.object, new_obj);
                count_out(&mut self.stats, &old);
            }
            compacted += 1;
        }
        self.buf_a = child_bytes;
        self.buf_b = grand_bytes;
        Ok(compacted)
    }

    /// Rebuild a page into `out` (page-size bytes). The zero hash reads as zeros.
    pub fn read(&self, hash: PageHash, out: &mut [u8]) -> Result<(), StoreError> {
        self.check_len(out)?;
        crate::rebuild(self, hash, out, self.max_chain as usize)
    }

    /// Rebuild every object and check its hash; returns the hashes that fail.
    pub fn verify(&self) -> Vec<PageHash> {
        let mut buf = vec![0u8; self.page_size.bytes()];
        let mut bad = Vec::new();
        for h in self.objects.keys() {
            if self.read(*h, &mut buf).is_err() || self.hash(&buf) != *h {
                bad.push(*h);
            }
        }
        bad
    }

    /// The length of the delta chain under `hash` (0 for a full page).
    pub fn chain_len(&self, hash: PageHash) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut cur = hash;
        while let Some(ObjectRef::Delta { parent, .. }) = self.get(cur) {
            n += 1;
            if n > 255 {
                return Err(StoreError::Object(RebuildError::ChainTooLong {
                    hash,
                    limit: 255,
                }));
            }
            cur = parent;
        }
        if !cur.is_zero() && !self.objects.contains_key(&cur) {
            return Err(StoreError::Object(RebuildError::MissingObject { hash: cur }));
        }
        Ok(n)
    }
}

/// What [`PageStore::demote`] did with a replaced page.
enum Demotion {
    /// It is now a delta against its replacement.
    Done,
    /// Nothing to do: freed, zero, or already a delta.
    Gone,
    /// A later replacement holds it raw: that one's turn comes later.
    Held,
    /// No small delta could be made (or the chain bound forbids one); whether its
    /// replacement is still stored.
    Failed { new_stored: bool },
}

/// Spare page buffers to keep for a store rate of `rate_x16`/16 raw pages per frame:
/// the floor of [`SPARE_BYTES`], or 5/4 of a frame's pages.
fn spare_cap(rate_x16: u64, page_size: usize) -> usize {
    let rate = usize::try_from(rate_x16.div_ceil(16)).unwrap_or(usize::MAX);
    (SPARE_BYTES / page_size.max(1)).max(rate.saturating_add(rate / 4))
}

fn count_in(stats: &mut StoreStats, object: &Object) {
    stats.objects += 1;
    stats.stored_bytes += object.stored_len() as u64;
    match object {
        Object::Full { encoding, .. } => {
            stats.full_pages += 1;
            if *encoding == Encoding::Raw {
                stats.raw_pages += 1;
            }
        }
        Object::Delta { .. } => stats.delta_pages += 1,
    }
}

fn count_out(stats: &mut StoreStats, object: &Object) {
    stats.objects -= 1;
    stats.stored_bytes -= object.stored_len() as u64;
    match object {
        Object::Full { encoding, .. } => {
            stats.full_pages -= 1;
            if *encoding == Encoding::Raw {
                stats.raw_pages -= 1;
            }
        }
        Object::Delta { .. } => stats.delta_pages -= 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that makes deltas at once, as the tests below expect.
    fn store() -> PageStore {
        PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .seed(9)
                .delta_after(0),
        )
    }

    #[test]
    fn deltas_wait_and_a_page_freed_before_then_leaves_its_predecessor_whole() {
        let mut s = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .seed(9)
                .delta_after(3),
        );
        let a = page(1);
        let (mut b, mut c) = (a.clone(), a.clone());
        b[10] ^= 0xff;
        c[20] ^= 0xff;
        let (ha, hb, hc) = (s.hash(&a), s.hash(&b), s.hash(&c));
        s.put(ha, &a, PageHash::ZERO).unwrap();
        s.advance_frame();
        // b replaces a, then is abandoned (freed) two frames later: no delta was made,
        // so freeing b compacts nothing and a stays whole.
        s.put(hb, &b, ha).unwrap();
        s.advance_frame();
        s.advance_frame();
        assert!(
            matches!(s.get(ha), Some(ObjectRef::Full { .. })),
            "a waits 3 frames"
        );
        let freed = s.release(hb).unwrap();
        assert_eq!(freed.compacted, 0);
        for _ in 0..4 {
            s.advance_frame();
        }
        assert!(
            matches!(s.get(ha), Some(ObjectRef::Full { .. })),
            "b is gone: a stays whole"
        );
        assert_eq!(s.stats().deltas_made, 0);
        // c replaces a and survives: after 3 frames a is a delta against c.
        s.put(hc, &c, ha).unwrap();
        for _ in 0..2 {
            s.advance_frame();
            assert!(matches!(s.get(ha), Some(ObjectRef::Full { .. })));
        }
        s.advance_frame();
        assert!(matches!(s.get(ha), Some(ObjectRef::Delta { parent, .. }) if parent == hc));
        assert_reads_back(&s, ha, &a);
    }

    fn page(seed: u8) -> Vec<u8> {
        (0..1024u32)
            .map(|i| (i as u8).wrapping_mul(seed) ^ (i / 7) as u8)
            .collect()
    }

    /// Versions of one page, each a small change of the previous, stored slot-wise.
    fn versions(s: &mut PageStore, n: usize) -> Vec<(PageHash, Vec<u8>)> {
        let mut p = page(5);
        let mut out: Vec<(PageHash, Vec<u8>)> = vec![];
        let mut prev = PageHash::ZERO;
        for i in 0..n {
            p[(i * 37) % 1024] ^= 0xff;
            let h = s.hash(&p);
            s.put(h, &p, prev).unwrap();
            out.push((h, p.clone()));
            prev = h;
        }
        out
    }

    #[test]
    fn dedup_adds_a_reference_not_bytes() {
        let mut s = store();
        let p = page(3);
        let h = s.hash(&p);
        assert!(matches!(s.put(h, &p, PageHash::ZERO).unwrap(), Put::Full(_)));
        let bytes = s.stats().stored_bytes;
        assert_eq!(s.put(h, &p, PageHash::ZERO).unwrap(), Put::Dedup);
        assert_eq!(s.stats().stored_bytes, bytes);
        assert_eq!(s.refs(h), 2);
        s.release(h).unwrap();
        assert!(s.contains(h));
        s.release(h).unwrap();
        assert!(!s.contains(h));
        assert_eq!(s.stats().objects, 0);
        assert_eq!(s.stats().stored_bytes, 0);
        assert!(matches!(
            s.release(h),
            Err(StoreError::Object(RebuildError::MissingObject { .. }))
        ));
    }

    #[test]
    fn zero_page_is_never_stored() {
        let mut s = store();
        let z = vec![0u8; 1024];
        let h = s.hash(&z);
        assert_eq!(h, PageHash::ZERO);
        assert_eq!(s.put(h, &z, PageHash::ZERO).unwrap(), Put::Zero);
        assert_eq!(s.stats().objects, 0);
        let mut out = vec![1u8; 1024];
        s.read(PageHash::ZERO, &mut out).unwrap();
        assert!(out.iter().all(|b| *b == 0));
    }

    #[test]
    fn wrong_length_is_an_error_and_stores_nothing() {
        let mut s = store();
        let p = vec![1u8; 1000];
        assert!(matches!(
            s.put(PageHash::from_u128(5), &p, PageHash::ZERO),
            Err(StoreError::PageLength { .. })
        ));
        assert_eq!(s.stats().objects, 0);
    }

    #[test]
    fn replaced_pages_become_reverse_deltas_within_the_bound() {
        let mut s = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .delta_after(0)
                .seed(1)
                .max_chain(4),
        );
        let v = versions(&mut s, 20);
        // The newest is whole; older ones are deltas, chains bounded.
        assert!(matches!(s.get(v[19].0), Some(ObjectRef::Full { .. })));
        assert!(matches!(s.get(v[18].0), Some(ObjectRef::Delta { parent, .. }) if parent == v[19].0));
        for (h, _) in &v {
            assert!(s.chain_len(*h).unwrap() <= 4);
        }
        assert!(s.stats().delta_pages >= 15);
        assert!(s.verify().is_empty());
    }

    #[test]
    fn freeing_oldest_first_needs_no_compaction() {
        let mut s = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .delta_after(0)
                .seed(1)
                .max_chain(4),
        );
        let v = versions(&mut s, 20);
        let mut out = vec![0u8; 1024];
        for k in 0..v.len() {
            s.release(v[k].0).unwrap();
            for (h, bytes) in &v[k + 1..] {
                s.read(*h, &mut out).unwrap();
                assert_eq!(&out, bytes);
            }
        }
        assert_eq!(s.stats().compacted_full + s.stats().compacted_rebased, 0);
        assert_eq!(s.stats().objects, 0);
        assert_eq!(s.stats().stored_bytes, 0);
    }

    #[test]
    fn freeing_newest_first_compacts_and_keeps_pages_readable() {
        let mut s = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .delta_after(0)
                .seed(1)
                .max_chain(4),
        );
        let v = versions(&mut s, 20);
        let mut out = vec![0u8; 1024];
        for k in (0..v.len()).rev() {
            s.release(v[k].0).unwrap();
            for (h, bytes) in &v[..k] {
                s.read(*h, &mut out).unwrap();
                assert_eq!(&out, bytes);
                assert!(s.chain_len(*h).unwrap() <= 4);
            }
        }
        assert!(s.stats().compacted_full > 0);
        assert_eq!(s.stats().objects, 0);
        assert_eq!(s.stats().stored_bytes, 0);
    }

    #[test]
    fn freeing_a_middle_delta_rebases_its_child() {
        let mut s = store();
        let v = versions(&mut s, 3);
        // v0 -> v1 -> v2 (whole)
        assert!(matches!(s.get(v[0].0), Some(ObjectRef::Delta { parent, .. }) if parent == v[1].0));
        s.release(v[1].0).unwrap();
        assert!(matches!(s.get(v[0].0), Some(ObjectRef::Delta { parent, .. }) if parent == v[2].0));
        assert_eq!(s.stats().compacted_rebased, 1);
        assert_reads_back(&s, v[0].0, &v[0].1);
    }

    #[test]
    fn aged_raw_pages_are_compressed() {
        let mut s = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .delta_after(0)
                .seed(1)
                .compress_after(2),
        );
        let p = page(3);
        let h = s.hash(&p);
        s.put(h, &p, PageHash::ZERO).unwrap();
        assert_eq!(s.stats().raw_pages, 1);
        s.advance_frame();
        assert_eq!(s.compress_aged(), 0);
        s.advance_frame();
        assert_eq!(s.compress_aged(), 1);
        assert_eq!(s.stats().raw_pages, 0);
        assert!(matches!(
            s.get(h),
            Some(ObjectRef::Full {
                encoding: Encoding::Lz4,
                ..
            })
        ));
        assert!(s.stats().stored_bytes < 1024);
        // A compressed page still becomes a delta when replaced.
        let mut q = p.clone();
        q[3] ^= 1;
        let hq = s.hash(&q);
        s.put(hq, &q, h).unwrap();
        assert!(matches!(s.get(h), Some(ObjectRef::Delta { .. })));
        assert!(s.verify().is_empty());
    }

    #[test]
    fn the_compression_budget_follows_the_write_rate() {
        let mut s = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .seed(1)
                .compress_after(2),
        );
        let mut fixed = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .seed(1)
                .compress_after(2),
        );
        s.set_compress_follows_rate(true);
        assert_eq!(s.compress_budget(), 16, "the configured floor");
        // 100 new pages a frame, each page distinct and never replaced.
        let mut n = 0u32;
        for _ in 0..12 {
            for _ in 0..100 {
                n += 1;
                let mut p = page(7);
                p[..4].copy_from_slice(&n.to_le_bytes());
                s.put(s.hash(&p), &p, PageHash::ZERO).unwrap();
                fixed.put(fixed.hash(&p), &p, PageHash::ZERO).unwrap();
            }
            s.advance_frame();
            s.compress_aged();
            fixed.advance_frame();
            fixed.compress_aged();
        }
        assert_eq!(
            fixed.compress_budget(),
            16,
            "not following: the configured budget"
        );
        assert!(fixed.stats().compressed <= 12 * 16);
        assert!(s.compress_budget() >= 100, "budget {}", s.compress_budget());
        // Compression kept up: only the last compress_after frames' pages are raw.
        assert!(s.stats().raw_pages <= 300, "{:?}", s.stats());
        // With a fixed budget of 16 it could not have.
        assert!(s.stats().compressed >= 12 * 100 - 300);
        assert!(s.verify().is_empty());
    }

    /// A page of a repeating pattern: lz4 compresses it.
    fn compressible(tag: u8) -> Vec<u8> {
        (0..1024u32).map(|i| ((i / 32) as u8) ^ tag).collect()
    }

    /// `h` reads back as `page` (through any delta chain) and the store verifies.
    fn assert_reads_back(s: &PageStore, h: PageHash, page: &[u8]) {
        let mut out = vec![0u8; page.len()];
        s.read(h, &mut out).unwrap();
        assert_eq!(out, page);
        assert!(s.verify().is_empty());
    }

    fn is_raw(s: &PageStore, h: PageHash) -> bool {
        matches!(
            s.get(h),
            Some(ObjectRef::Full {
                encoding: Encoding::Raw,
                ..
            })
        )
    }

    fn is_lz4(s: &PageStore, h: PageHash) -> bool {
        matches!(
            s.get(h),
            Some(ObjectRef::Full {
                encoding: Encoding::Lz4,
                ..
            })
        )
    }

    /// A page that had been compressed, then inflated to be held raw in the window,
    /// becomes a delta only if the delta beats half of its former lz4 block (as it
    /// would have had it stayed compressed); a page never compressed takes any delta
    /// within the 1/4-page bound. No lz4 runs on the capture to decide.
    #[test]
    fn a_held_page_becomes_a_delta_only_if_it_beats_half_its_former_lz4_block() {
        let a = compressible(3);
        let mut b = a.clone();
        for i in (0..b.len()).step_by(40) {
            b[i] ^= 0xA5;
        }
        let mut scratch = Scratch::default();
        let packed = codec::compress(&a, &mut scratch).map(<[u8]>::len).unwrap();
        let delta = codec::encode_delta(&b, &a, usize::MAX, &mut scratch)
            .map(<[u8]>::len)
            .unwrap();
        assert!(
            delta > packed / 2 && delta <= 256,
            "premise: delta {delta}, lz4 {packed}"
        );
        for compressed_first in [true, false] {
            let mut s = PageStore::new(
                StoreConfig::new(PageSize::new(1024).unwrap())
                    .seed(4)
                    .delta_after(2)
                    .rollback_window(2)
                    .compress_after(if compressed_first { 1 } else { 100 }),
            );
            let ha = s.hash(&a);
            s.put(ha, &a, PageHash::ZERO).unwrap();
            s.advance_frame();
            s.compress_aged();
            assert_eq!(is_lz4(&s, ha), compressed_first);
            let hb = s.hash(&b);
            s.put(hb, &b, ha).unwrap();
            assert!(is_raw(&s, ha), "held raw in the window");
            let compressed = s.stats().compressed;
            for _ in 0..3 {
                s.advance_frame();
            }
            assert_eq!(
                s.stats().compressed,
                compressed,
                "no lz4 on the frames' demotions"
            );
            if compressed_first {
                assert!(is_raw(&s, ha), "no delta: lz4 does more than twice better");
                s.compress_aged();
                assert!(is_lz4(&s, ha), "compressed again once out of the window");
            } else {
                assert!(matches!(s.get(ha), Some(ObjectRef::Delta { parent, .. }) if parent == hb));
            }
            assert_reads_back(&s, ha, &a);
        }
    }

    #[test]
    fn a_replaced_page_is_held_raw_inside_the_rollback_window() {
        let mut s = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .seed(4)
                .delta_after(4)
                .rollback_window(4)
                .compress_after(1),
        );
        let a = compressible(1);
        let ha = s.hash(&a);
        s.put(ha, &a, PageHash::ZERO).unwrap();
        s.advance_frame();
        s.compress_aged();
        assert!(is_lz4(&s, ha), "a page nobody replaced is compressed once aged");
        // b replaces a: a is what a rollback to before b writes back, so it is made
        // raw again on the capture, not on every rollback.
        let mut b = a.clone();
        b[7] ^= 0x55;
        let hb = s.hash(&b);
        s.put(hb, &b, ha).unwrap();
        assert!(is_raw(&s, ha));
        assert_eq!(s.stats().inflated, 1);
        // Inside the window, compression leaves it raw whatever its age.
        for _ in 0..3 {
            s.advance_frame();
            s.compress_all_aged();
            assert!(is_raw(&s, ha), "held raw inside the window");
        }
        // Leaving the window it becomes a small delta against b.
        s.advance_frame();
        s.compress_all_aged();
        assert!(matches!(s.get(ha), Some(ObjectRef::Delta { parent, .. }) if parent == hb));
        assert_reads_back(&s, ha, &a);
    }

    #[test]
    fn a_replaced_page_without_a_small_delta_is_compressed_on_leaving_the_window() {
        let mut s = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .seed(4)
                .delta_after(2)
                .compress_after(100),
        );
        let a = compressible(1);
        let b = compressible(0x80); // every byte differs: no small delta
        let (ha, hb) = (s.hash(&a), s.hash(&b));
        s.put(ha, &a, PageHash::ZERO).unwrap();
        s.put(hb, &b, ha).unwrap();
        s.advance_frame();
        assert!(is_raw(&s, ha));
        s.advance_frame();
        // Due for compression at once (not compress_after later), by the next GC step.
        assert!(is_raw(&s, ha));
        assert_eq!(s.compress_aged(), 1);
        assert!(
            is_lz4(&s, ha),
            "history that is no delta leaves the window compressed"
        );
        assert!(is_raw(&s, hb), "the newest version stays raw");
        assert_reads_back(&s, ha, &a);
    }

    #[test]
    fn a_zero_window_holds_nothing_raw() {
        let mut s = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .seed(4)
                .delta_after(u64::MAX)
                .rollback_window(0)
                .compress_after(1),
        );
        let a = compressible(1);
        let ha = s.hash(&a);
        s.put(ha, &a, PageHash::ZERO).unwrap();
        s.advance_frame();
        s.compress_aged();
        let mut b = a.clone();
        b[7] ^= 0x55;
        s.put(s.hash(&b), &b, ha).unwrap();
        assert!(is_lz4(&s, ha), "no window: left compressed");
        assert_eq!(s.stats().inflated, 0);
    }

    #[test]
    fn a_released_page_waits_for_the_next_frame_and_a_put_takes_it_back() {
        let mut s = PageStore::new(StoreConfig::new(PageSize::new(1024).unwrap()).seed(4));
        s.set_deferred_frees(true);
        let (a, b) = (compressible(1), compressible(2));
        let (ha, hb) = (s.hash(&a), s.hash(&b));
        s.put(ha, &a, PageHash::ZERO).unwrap();
        s.put(hb, &b, PageHash::ZERO).unwrap();
        let freed = s.release(ha).unwrap();
        assert_eq!(freed.objects, 1);
        // Freed as far as anyone can tell: not contained, not listed, not counted.
        assert!(!s.contains(ha));
        assert_eq!(s.iter().count(), 1);
        assert_eq!(s.stats().objects, 1);
        assert!(matches!(
            s.retain(ha),
            Err(StoreError::Object(RebuildError::MissingObject { .. }))
        ));
        assert!(matches!(
            s.release(ha),
            Err(StoreError::Object(RebuildError::MissingObject { .. }))
        ));
        // A put of the same page takes it back without storing it again.
        assert_eq!(s.put(ha, &a, PageHash::ZERO).unwrap(), Put::Full(1024));
        assert_eq!(s.stats().revived, 1);
        assert_eq!(s.stats().objects, 2);
        assert!(s.contains(ha));
        // One not taken back is freed at the next frame.
        s.release(hb).unwrap();
        s.advance_frame();
        assert!(!s.contains(hb) && s.get(hb).is_none());
        assert_reads_back(&s, ha, &a);
    }

    /// Regression (found by the GC model test): freeing a waiting page whose delta
    /// child was also waiting re-based that child's live child onto the page being
    /// freed, which then dangled.
    #[test]
    fn freeing_waiting_pages_never_rebases_onto_one_of_them() {
        let mut s = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .seed(1)
                .delta_after(0),
        );
        s.set_deferred_frees(true);
        let v = versions(&mut s, 3);
        // v0 -> v1 -> v2 (whole); v2 and v1 lose their references, v0 stays.
        assert!(matches!(s.get(v[1].0), Some(ObjectRef::Delta { parent, .. }) if parent == v[2].0));
        s.release(v[2].0).unwrap();
        s.release(v[1].0).unwrap();
        s.advance_frame();
        assert!(!s.contains(v[1].0) && s.get(v[1].0).is_none());
        assert!(s.get(v[2].0).is_none());
        assert_reads_back(&s, v[0].0, &v[0].1);
        assert_eq!(s.stats().objects, 1);
    }

    #[test]
    fn spare_buffers_follow_the_store_rate() {
        let floor = SPARE_BYTES / 4096;
        assert_eq!(spare_cap(0, 4096), floor);
        assert_eq!(spare_cap(16 * 100, 4096), floor, "a slow rate keeps the floor");
        let fast = 16 * 10_000;
        assert_eq!(spare_cap(fast, 4096), 12_500, "5/4 of a frame's pages");
        assert!(spare_cap(u64::MAX, 4096) > 12_500, "no overflow");
    }

    #[test]
    fn insert_object_checks_rules() {
        let mut s = store();
        let r = s.insert_object(
            PageHash::from_u128(1),
            Object::Delta {
                parent: PageHash::from_u128(2),
                runs: Box::new([]),
            },
            1,
        );
        assert!(matches!(r, Err(StoreError::InvalidObject { .. })));
        assert_eq!(s.stats().objects, 0);
    }
}
