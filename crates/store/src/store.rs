//! The object store: pages by hash, with reference counts, deltas and compaction.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher as StdHasher};

use crate::codec::{self, Encoding, Scratch};
use crate::{Hasher, PageHash, PageSize, StoreError};

/// How a store is set up. Fixed for the life of a history.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The page size.
    pub page_size: PageSize,
    /// The hash seed; `None` picks a random one.
    pub seed: Option<u64>,
    /// The longest delta chain: reading a page applies at most this many deltas.
    pub max_chain: u8,
    /// A delta this small (as a fraction `1/n` of the page) is taken without trying lz4.
    pub delta_small_divisor: u32,
    /// How many recently stored pages keep their plain bytes in memory, to diff against
    /// and to read without decoding. 0 turns the cache off.
    pub cache_pages: usize,
}

impl StoreConfig {
    /// Defaults for a page size: chains of at most 8 deltas, deltas of up to 1/16 page
    /// taken outright, a cache of 4,096 pages.
    pub fn new(page_size: PageSize) -> Self {
        StoreConfig {
            page_size,
            seed: None,
            max_chain: 8,
            delta_small_divisor: 16,
            cache_pages: 4096,
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

    /// Set the size of the cache of plain recent pages.
    pub fn cache_pages(mut self, pages: usize) -> Self {
        self.cache_pages = pages;
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
        /// An upper bound of the number of deltas from this one down to a full page.
        depth: u8,
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
        /// An upper bound of the chain length below this delta.
        depth: u8,
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
            Object::Delta { parent, depth, runs } => ObjectRef::Delta {
                parent: *parent,
                depth: *depth,
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

    fn depth(&self) -> u8 {
        match self {
            Object::Full { .. } => 0,
            Object::Delta { depth, .. } => *depth,
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
    /// Stored as a full page of this many bytes.
    Full(usize),
    /// Stored as a delta of this many bytes.
    Delta(usize),
}

/// Counters of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Objects held.
    pub objects: usize,
    /// Of which full pages.
    pub full_pages: usize,
    /// Of which full pages kept raw (lz4 did not pay).
    pub raw_pages: usize,
    /// Of which deltas.
    pub delta_pages: usize,
    /// Encoded bytes held, all objects.
    pub stored_bytes: u64,
    /// Puts of a page that was already stored.
    pub dedup_hits: u64,
    /// Puts that stored new bytes.
    pub new_objects: u64,
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

type KeyMap<V> = HashMap<PageHash, V, BuildHasherDefault<KeyHasher>>;

struct Entry {
    object: Object,
    refs: u32,
    /// Deltas whose parent is this object.
    children: Vec<PageHash>,
}

/// The content-addressed store of pages of one history.
pub struct PageStore {
    page_size: PageSize,
    hasher: Hasher,
    max_chain: u8,
    small_delta: usize,
    objects: KeyMap<Entry>,
    cache: KeyMap<Box<[u8]>>,
    cache_order: VecDeque<PageHash>,
    cache_cap: usize,
    scratch: Scratch,
    base_buf: Vec<u8>,
    work_buf: Vec<u8>,
    stats: StoreStats,
}

impl PageStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        let seed = config.seed.unwrap_or_else(Hasher::random_seed);
        let ps = config.page_size.bytes();
        PageStore {
            page_size: config.page_size,
            hasher: Hasher::new(seed, config.page_size),
            max_chain: config.max_chain,
            small_delta: ps / config.delta_small_divisor.max(1) as usize,
            objects: KeyMap::default(),
            cache: KeyMap::default(),
            cache_order: VecDeque::new(),
            cache_cap: config.cache_pages,
            scratch: Scratch::new(),
            base_buf: vec![0; ps],
            work_buf: vec![0; ps],
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

    /// True when an object with this hash is stored.
    pub fn contains(&self, hash: PageHash) -> bool {
        self.objects.contains_key(&hash)
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
        self.objects.iter().map(|(h, e)| (*h, e.object.as_ref(), e.refs))
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

    /// Store `page` (whose hash is `hash`, from [`PageStore::hash`]) and take one
    /// reference to it. `base` is the page that held the same slot before (or
    /// [`PageHash::ZERO`]): the page is stored as a delta against it when that is small.
    pub fn put(&mut self, hash: PageHash, page: &[u8], base: PageHash) -> Result<Put, StoreError> {
        self.check_len(page)?;
        if hash.is_zero() {
            return Ok(Put::Zero);
        }
        if let Some(e) = self.objects.get_mut(&hash) {
            e.refs += 1;
            self.stats.dedup_hits += 1;
            return Ok(Put::Dedup);
        }
        let object = self.encode(page, base);
        let put = match &object {
            Object::Full { bytes, .. } => Put::Full(bytes.len()),
            Object::Delta { runs, .. } => Put::Delta(runs.len()),
        };
        self.insert_entry(hash, object, 1);
        self.stats.new_objects += 1;
        self.cache_insert(hash, page);
        Ok(put)
    }

    /// Choose and build the encoding of a new page.
    fn encode(&mut self, page: &[u8], base: PageHash) -> Object {
        let ps = self.page_size.bytes();
        let base_depth = if base.is_zero() {
            None
        } else {
            self.objects.get(&base).map(|e| e.object.depth())
        };
        let mut delta: Option<Box<[u8]>> = None;
        if let Some(depth) = base_depth.filter(|d| *d < self.max_chain) {
            let base_bytes: Option<&[u8]> = match self.cache.get(&base) {
                Some(b) => Some(b),
                None => {
                    let mut buf = std::mem::take(&mut self.base_buf);
                    let ok = self.read(base, &mut buf).is_ok();
                    self.base_buf = buf;
                    ok.then_some(self.base_buf.as_slice())
                }
            };
            if let Some(base_bytes) = base_bytes {
                if let Some(d) = codec::encode_delta(base_bytes, page, ps / 4, &mut self.scratch) {
                    if d.len() <= self.small_delta {
                        return Object::Delta {
                            parent: base,
                            depth: depth + 1,
                            runs: d.into(),
                        };
                    }
                    delta = Some(d.into());
                }
            }
        }
        let (encoding, bytes) = codec::encode_full(page, &mut self.scratch);
        match delta {
            Some(runs) if runs.len() * 2 <= bytes.len() => Object::Delta {
                parent: base,
                depth: base_depth.unwrap_or(0) + 1,
                runs,
            },
            _ => Object::Full { encoding, bytes },
        }
    }

    fn insert_entry(&mut self, hash: PageHash, object: Object, refs: u32) {
        self.count_in(&object);
        if let Object::Delta { parent, .. } = &object {
            if let Some(p) = self.objects.get_mut(parent) {
                p.children.push(hash);
            }
        }
        self.objects.insert(
            hash,
            Entry {
                object,
                refs,
                children: Vec::new(),
            },
        );
    }

    fn count_in(&mut self, object: &Object) {
        self.stats.objects += 1;
        self.stats.stored_bytes += object.stored_len() as u64;
        match object {
            Object::Full { encoding, .. } => {
                self.stats.full_pages += 1;
                if *encoding == Encoding::Raw {
                    self.stats.raw_pages += 1;
                }
            }
            Object::Delta { .. } => self.stats.delta_pages += 1,
        }
    }

    fn count_out(&mut self, object: &Object) {
        self.stats.objects -= 1;
        self.stats.stored_bytes -= object.stored_len() as u64;
        match object {
            Object::Full { encoding, .. } => {
                self.stats.full_pages -= 1;
                if *encoding == Encoding::Raw {
                    self.stats.raw_pages -= 1;
                }
            }
            Object::Delta { .. } => self.stats.delta_pages -= 1,
        }
    }

    fn cache_insert(&mut self, hash: PageHash, page: &[u8]) {
        if self.cache_cap == 0 {
            return;
        }
        while self.cache_order.len() >= self.cache_cap {
            match self.cache_order.pop_front() {
                Some(old) => {
                    self.cache.remove(&old);
                }
                None => break,
            }
        }
        self.cache.insert(hash, page.into());
        self.cache_order.push_back(hash);
    }

    /// Insert an object read from elsewhere (an archive) with `refs` references.
    ///
    /// The object is checked against the store's rules: a delta's parent must be stored
    /// and its depth within the chain bound; a full page must decode to the page size.
    /// The bytes are trusted to hash to `hash` only after [`PageStore::verify`].
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
        if let Object::Delta { parent, depth, .. } = &object {
            let Some(p) = self.objects.get(parent) else {
                return Err(StoreError::InvalidObject {
                    hash,
                    reason: "delta parent is not stored",
                });
            };
            if *depth > self.max_chain || *depth <= p.object.depth() {
                return Err(StoreError::InvalidObject {
                    hash,
                    reason: "delta depth breaks the chain bound",
                });
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
            .ok_or(StoreError::MissingObject { hash })?;
        e.refs += 1;
        Ok(())
    }

    /// Drop one reference. At zero the object is freed; deltas that depend on it are
    /// first compacted (into full pages, or re-based onto its parent when that is small).
    pub fn release(&mut self, hash: PageHash) -> Result<Freed, StoreError> {
        if hash.is_zero() {
            return Ok(Freed::default());
        }
        let e = self
            .objects
            .get_mut(&hash)
            .ok_or(StoreError::MissingObject { hash })?;
        if e.refs == 0 {
            return Err(StoreError::RefUnderflow { hash });
        }
        e.refs -= 1;
        if e.refs > 0 {
            return Ok(Freed::default());
        }
        let before = self.stats.stored_bytes;
        let mut freed = self.free(hash)?;
        freed.bytes = before.saturating_sub(self.stats.stored_bytes);
        Ok(freed)
    }

    fn free(&mut self, hash: PageHash) -> Result<Freed, StoreError> {
        let mut freed = Freed::default();
        let children = match self.objects.get_mut(&hash) {
            Some(e) => std::mem::take(&mut e.children),
            None => return Err(StoreError::MissingObject { hash }),
        };
        if !children.is_empty() {
            freed.compacted = self.compact_children(hash, &children)?;
        }
        let Some(entry) = self.objects.remove(&hash) else {
            return Err(StoreError::MissingObject { hash });
        };
        if let Object::Delta { parent, .. } = &entry.object {
            if let Some(p) = self.objects.get_mut(parent) {
                if let Some(i) = p.children.iter().position(|c| *c == hash) {
                    p.children.swap_remove(i);
                }
            }
        }
        self.count_out(&entry.object);
        self.stats.freed_objects += 1;
        self.stats.freed_bytes += entry.object.stored_len() as u64;
        freed.objects += 1;
        if self.cache.remove(&hash).is_some() {
            if let Some(i) = self.cache_order.iter().position(|h| *h == hash) {
                self.cache_order.remove(i);
            }
        }
        Ok(freed)
    }

    /// Rewrite the deltas `children` of `hash` so they no longer need it.
    fn compact_children(&mut self, hash: PageHash, children: &[PageHash]) -> Result<u64, StoreError> {
        let ps = self.page_size.bytes();
        // The grandparent, when `hash` is itself a delta: children may be re-based on it.
        let grand = match self.objects.get(&hash).map(|e| &e.object) {
            Some(Object::Delta { parent, depth, .. }) => Some((*parent, depth.saturating_sub(1))),
            _ => None,
        };
        let mut grand_bytes = None;
        if let Some((g, _)) = grand {
            let mut buf = vec![0u8; ps];
            self.read(g, &mut buf)?;
            grand_bytes = Some(buf);
        }
        let mut parent_bytes = vec![0u8; ps];
        self.read(hash, &mut parent_bytes)?;
        let mut child_bytes = std::mem::take(&mut self.work_buf);
        let mut compacted = 0;
        for &c in children {
            let runs = match self.objects.get(&c).map(|e| &e.object) {
                Some(Object::Delta { parent, runs, .. }) if *parent == hash => runs.clone(),
                _ => continue,
            };
            child_bytes.copy_from_slice(&parent_bytes);
            codec::apply_delta(&mut child_bytes, &runs)
                .map_err(|source| StoreError::Corrupt { hash: c, source })?;
            let mut new_obj = None;
            if let (Some((g, gdepth)), Some(gb)) = (grand, grand_bytes.as_deref()) {
                if let Some(d) = codec::encode_delta(gb, &child_bytes, self.small_delta, &mut self.scratch) {
                    new_obj = Some(Object::Delta {
                        parent: g,
                        depth: gdepth + 1,
                        runs: d.into(),
                    });
                }
            }
            let rebased = new_obj.is_some();
            let new_obj = new_obj.unwrap_or_else(|| {
                let (encoding, bytes) = codec::encode_full(&child_bytes, &mut self.scratch);
                Object::Full { encoding, bytes }
            });
            if rebased {
                if let Some((g, _)) = grand {
                    if let Some(ge) = self.objects.get_mut(&g) {
                        ge.children.push(c);
                    }
                }
                self.stats.compacted_rebased += 1;
            } else {
                self.stats.compacted_full += 1;
            }
            self.count_in(&new_obj);
            if let Some(e) = self.objects.get_mut(&c) {
                let old = std::mem::replace(&mut e.object, new_obj);
                self.count_out(&old);
            }
            compacted += 1;
        }
        self.work_buf = child_bytes;
        Ok(compacted)
    }

    /// Rebuild a page into `out` (page-size bytes). The zero hash reads as zeros.
    pub fn read(&self, hash: PageHash, out: &mut [u8]) -> Result<(), StoreError> {
        self.check_len(out)?;
        if hash.is_zero() {
            out.fill(0);
            return Ok(());
        }
        if let Some(b) = self.cache.get(&hash) {
            out.copy_from_slice(b);
            return Ok(());
        }
        let limit = self.max_chain as usize + 1;
        let mut chain: Vec<(PageHash, &[u8])> = Vec::new();
        let mut cur = hash;
        loop {
            if let Some(b) = self.cache.get(&cur) {
                out.copy_from_slice(b);
                break;
            }
            let e = self
                .objects
                .get(&cur)
                .ok_or(StoreError::MissingObject { hash: cur })?;
            match &e.object {
                Object::Full { encoding, bytes } => {
                    codec::decode_full(*encoding, bytes, out)
                        .map_err(|source| StoreError::Corrupt { hash: cur, source })?;
                    break;
                }
                Object::Delta { parent, runs, .. } => {
                    if chain.len() >= limit {
                        return Err(StoreError::ChainTooLong { hash, limit });
                    }
                    chain.push((cur, runs));
                    cur = *parent;
                }
            }
        }
        for (h, runs) in chain.iter().rev() {
            codec::apply_delta(out, runs).map_err(|source| StoreError::Corrupt { hash: *h, source })?;
        }
        Ok(())
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
                return Err(StoreError::ChainTooLong { hash, limit: 255 });
            }
            cur = parent;
        }
        if !cur.is_zero() && !self.contains(cur) {
            return Err(StoreError::MissingObject { hash: cur });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> PageStore {
        PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .seed(9)
                .cache_pages(0),
        )
    }

    fn page(seed: u8) -> Vec<u8> {
        (0..1024u32)
            .map(|i| (i as u8).wrapping_mul(seed) ^ (i / 7) as u8)
            .collect()
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
        assert!(matches!(s.release(h), Err(StoreError::MissingObject { .. })));
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
    fn chain_depth_is_bounded_and_compaction_keeps_pages_readable() {
        let mut s = PageStore::new(
            StoreConfig::new(PageSize::new(1024).unwrap())
                .seed(1)
                .max_chain(4)
                .cache_pages(0),
        );
        let mut p = page(5);
        let mut versions = vec![];
        let mut prev = PageHash::ZERO;
        for i in 0..20 {
            p[i * 3] ^= 0xff;
            let h = s.hash(&p);
            s.put(h, &p, prev).unwrap();
            versions.push((h, p.clone()));
            prev = h;
        }
        for (h, _) in &versions {
            assert!(s.chain_len(*h).unwrap() <= 4);
        }
        assert!(s.stats().delta_pages > 0);
        // Free the oldest versions one by one; the rest must stay readable and bounded.
        let mut out = vec![0u8; 1024];
        for k in 0..versions.len() {
            s.release(versions[k].0).unwrap();
            for (h, bytes) in &versions[k + 1..] {
                s.read(*h, &mut out).unwrap();
                assert_eq!(&out, bytes);
                assert!(s.chain_len(*h).unwrap() <= 4);
            }
        }
        assert_eq!(s.stats().objects, 0);
        assert_eq!(s.stats().stored_bytes, 0);
        assert!(s.stats().compacted_full + s.stats().compacted_rebased > 0);
    }

    #[test]
    fn freeing_a_middle_delta_rebases_its_child() {
        let mut s = store();
        let mut p = page(7);
        let h0 = s.hash(&p);
        s.put(h0, &p, PageHash::ZERO).unwrap();
        p[1] ^= 1;
        let h1 = s.hash(&p);
        s.put(h1, &p, h0).unwrap();
        p[2] ^= 1;
        let h2 = s.hash(&p);
        s.put(h2, &p, h1).unwrap();
        s.release(h1).unwrap();
        assert!(matches!(s.get(h2), Some(ObjectRef::Delta { parent, .. }) if parent == h0));
        let mut out = vec![0u8; 1024];
        s.read(h2, &mut out).unwrap();
        assert_eq!(out, p);
        assert!(s.verify().is_empty());
    }

    #[test]
    fn insert_object_checks_rules() {
        let mut s = store();
        let r = s.insert_object(
            PageHash::from_u128(1),
            Object::Delta {
                parent: PageHash::from_u128(2),
                depth: 1,
                runs: Box::new([]),
            },
            1,
        );
        assert!(matches!(r, Err(StoreError::InvalidObject { .. })));
        assert_eq!(s.stats().objects, 0);
    }
}
