//! Locating the first differing page between two live peers by exchanging
//! Merkle nodes, over whatever channel the game already has.
//!
//! Each snapshot carries a fan-out-16 Merkle tree over its page hashes. In
//! this protocol **level 0 is the page hashes** and level `k + 1` hashes
//! groups of 16 nodes of level `k`; the top level has one node, the root.
//! [`locate`] asks the peer for a [`TreeSummary`] (page size, seed check,
//! memory length, root, globals hash), then descends from the root asking
//! for at most 16 node hashes per level: O(16 · log₁₆ pages) hashes in all
//! (48 hashes for 4,096 pages). The peer answers with [`answer`]. Requests
//! and responses have a byte encoding ([`Request::encode`],
//! [`Response::decode`], …) for sending over a socket.
//!
//! When the memory lengths differ, the descent covers the pages both
//! memories have; if those are equal the first page past the shorter memory
//! is reported.

use rewind::{PageHash, Snapshot, StateHash};
use rewind_wasmer::Session;
use thiserror::Error;

/// Children per node.
pub const FANOUT: usize = 16;

/// The most node hashes one [`Request::Nodes`] may ask for.
pub const MAX_NODES_PER_REQUEST: u32 = 1024;

const SEED_CHECK: &[u8] = b"rewind-ggrs seed check v1";

/// What a peer says about its state at one iteration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSummary {
    /// The iteration.
    pub iteration: u64,
    /// Its state hash.
    pub state_hash: [u8; 16],
    /// A hash of a fixed string under the history's seed: equal for equal
    /// seeds, without revealing the seed.
    pub seed_check: [u8; 16],
    /// Page size in bytes.
    pub page_size: u64,
    /// Memory length in bytes.
    pub memory_len: u64,
    /// Page slots in the snapshot.
    pub pages: u64,
    /// Levels of the protocol's tree (pages included; 0 for no pages).
    pub levels: u32,
    /// The root (the single node of the top level; zero for no pages).
    pub root: [u8; 16],
    /// A hash of the globals.
    pub globals_hash: [u8; 16],
}

/// A question to the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The peer's [`TreeSummary`] at `iteration`.
    Summary {
        /// The iteration (the same frame on both peers).
        iteration: u64,
    },
    /// `count` node hashes of `level` from index `start`.
    Nodes {
        /// The iteration.
        iteration: u64,
        /// The level (0 = page hashes).
        level: u32,
        /// The first node index.
        start: u64,
        /// How many (fewer come back past the end of the level).
        count: u32,
    },
}

/// The peer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// To [`Request::Summary`].
    Summary(TreeSummary),
    /// To [`Request::Nodes`].
    Nodes(Vec<[u8; 16]>),
    /// The peer could not answer (iteration not retained, bad level).
    Error(String),
}

/// Errors of [`locate`] and of decoding messages.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LocateError {
    /// The local session cannot answer (iteration not retained).
    #[error("local state at iteration {iteration}")]
    Local {
        /// The iteration.
        iteration: u64,
        /// The history's error.
        #[source]
        source: rewind::Error,
    },
    /// Asking the peer failed (the channel's error).
    #[error("asking the peer")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The peer answered with an error.
    #[error("the peer could not answer: {0}")]
    Remote(String),
    /// The peer's answer does not fit the question.
    #[error("unexpected answer from the peer: {0}")]
    Unexpected(String),
    /// The peers use different page sizes: their hashes cannot be compared.
    #[error("page sizes differ: {local} bytes here, {remote} at the peer")]
    PageSizeMismatch {
        /// Local page size.
        local: u64,
        /// The peer's.
        remote: u64,
    },
    /// The peers hash with different seeds (`SessionOptions::seed`): every
    /// hash differs, so checksums and nodes say nothing about the state.
    #[error("the peers' histories use different hash seeds: set the same SessionOptions::seed on both")]
    SeedMismatch,
    /// A message that cannot be decoded.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Where two peers' states differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The iteration compared.
    pub iteration: u64,
    /// True when the state hashes are equal (nothing else is filled in).
    pub equal: bool,
    /// The first differing page, if the pages differ.
    pub first_page: Option<u32>,
    /// Memory lengths (local, remote).
    pub memory_len: (u64, u64),
    /// True when the globals differ.
    pub globals_differ: bool,
    /// Node hashes received from the peer during the descent.
    pub hashes_received: usize,
    /// Requests sent (the summary included).
    pub round_trips: usize,
}

/// The snapshot of `iteration` on `session`'s timeline and its hasher.
fn snapshot_at(
    session: &Session,
    iteration: u64,
) -> Result<(&Snapshot, &rewind::layers::store::Hasher), LocateError> {
    let history = session.recorder().history();
    let snapshot = history
        .at(iteration)
        .map_err(|e| LocateError::Local {
            iteration,
            source: e.into(),
        })?
        .snapshot();
    Ok((snapshot, history.store().hasher()))
}

fn globals_hash(hasher: &rewind::layers::store::Hasher, snapshot: &Snapshot) -> [u8; 16] {
    let mut buf = Vec::with_capacity(17 * snapshot.globals().len());
    for g in snapshot.globals() {
        buf.push(g.ty() as u8);
        buf.extend_from_slice(&g.to_bits().to_le_bytes());
    }
    *hasher.bytes(&buf).as_bytes()
}

/// Levels of the protocol's tree over `snapshot`: the page level plus the
/// Merkle levels.
fn level_count(snapshot: &Snapshot) -> u32 {
    if snapshot.pages().is_empty() {
        0
    } else {
        u32::try_from(snapshot.tree().levels().len() + 1).unwrap_or(u32::MAX)
    }
}

/// The summary of `session`'s state at `iteration`.
pub fn tree_summary(session: &Session, iteration: u64) -> Result<TreeSummary, LocateError> {
    let (snapshot, hasher) = snapshot_at(session, iteration)?;
    let levels = level_count(snapshot);
    let root = match snapshot.tree().levels().last() {
        Some(top) => top.front().copied().unwrap_or(PageHash::ZERO),
        // One page or none: the page itself is the top.
        None => snapshot.page(0),
    };
    Ok(TreeSummary {
        iteration,
        state_hash: *snapshot.state_hash().as_bytes(),
        seed_check: *hasher.bytes(SEED_CHECK).as_bytes(),
        page_size: hasher_page_size(session),
        memory_len: snapshot.memory_len(),
        pages: snapshot.pages().len() as u64,
        levels,
        root: *root.as_bytes(),
        globals_hash: globals_hash(hasher, snapshot),
    })
}

fn hasher_page_size(session: &Session) -> u64 {
    session.recorder().history().page_size().bytes() as u64
}

/// Node hashes `start..start + count` of `level` (0 = pages) of `session`'s
/// state at `iteration`; fewer past the end of the level, none past the top.
pub fn merkle_level_nodes(
    session: &Session,
    iteration: u64,
    level: u32,
    start: u64,
    count: u32,
) -> Result<Vec<[u8; 16]>, LocateError> {
    let (snapshot, _) = snapshot_at(session, iteration)?;
    Ok(level_nodes(snapshot, level, start, count))
}

fn level_nodes(snapshot: &Snapshot, level: u32, start: u64, count: u32) -> Vec<[u8; 16]> {
    let count = count.min(MAX_NODES_PER_REQUEST) as usize;
    let nodes = if level == 0 {
        Some(snapshot.pages())
    } else {
        snapshot.tree().levels().get(level as usize - 1)
    };
    let Some(nodes) = nodes else { return Vec::new() };
    let Ok(start) = usize::try_from(start) else {
        return Vec::new();
    };
    if start >= nodes.len() {
        return Vec::new();
    }
    let end = start.saturating_add(count).min(nodes.len());
    let mut focus = nodes.focus();
    (start..end)
        .filter_map(|i| focus.get(i).map(|h| *h.as_bytes()))
        .collect()
}

/// Answers a peer's request from `session` (for the peer's [`locate`]).
pub fn answer(session: &Session, request: &Request) -> Response {
    match request {
        Request::Summary { iteration } => match tree_summary(session, *iteration) {
            Ok(s) => Response::Summary(s),
            Err(e) => Response::Error(rewind::error_chain(&e)),
        },
        Request::Nodes {
            iteration,
            level,
            start,
            count,
        } => match merkle_level_nodes(session, *iteration, *level, *start, *count) {
            Ok(n) => Response::Nodes(n),
            Err(e) => Response::Error(rewind::error_chain(&e)),
        },
    }
}

/// Finds the first page where `session`'s state at `iteration` differs from
/// the peer's, asking the peer through `ask` (which sends a [`Request`] over
/// the game's channel and returns the peer's [`Response`], e.g. from
/// [`answer`] on the other side).
pub fn locate<E>(
    session: &Session,
    iteration: u64,
    mut ask: impl FnMut(&Request) -> Result<Response, E>,
) -> Result<Located, LocateError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let local = tree_summary(session, iteration)?;
    let (snapshot, _) = snapshot_at(session, iteration)?;
    let remote = ask_summary(&mut ask, iteration)?;
    check_summaries(&local, &remote, iteration)?;
    let mut out = Located {
        iteration,
        equal: remote.state_hash == local.state_hash,
        first_page: None,
        memory_len: (local.memory_len, remote.memory_len),
        globals_differ: remote.globals_hash != local.globals_hash,
        hashes_received: 0,
        round_trips: 1,
    };
    if out.equal {
        return Ok(out);
    }
    let same_shape = local.pages == remote.pages;
    if same_shape && local.root == remote.root {
        return Ok(out); // the pages are equal: globals or memory length differ
    }
    let top = local.levels.min(remote.levels);
    if top == 0 {
        out.first_page = (local.pages != remote.pages).then_some(0);
        return Ok(out);
    }
    let descent = Descent {
        iteration,
        snapshot,
        common: local.pages.min(remote.pages),
        same_shape,
        top,
    };
    descent.run(&mut out, &mut ask)?;
    Ok(out)
}

/// Ask the peer for its summary of `iteration`.
fn ask_summary<E>(
    ask: &mut impl FnMut(&Request) -> Result<Response, E>,
    iteration: u64,
) -> Result<TreeSummary, LocateError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match ask(&Request::Summary { iteration }).map_err(|e| LocateError::Transport(e.into()))? {
        Response::Summary(s) => Ok(s),
        Response::Error(e) => Err(LocateError::Remote(e)),
        other => Err(LocateError::Unexpected(format!("{other:?} to a summary request"))),
    }
}

/// The two summaries describe the same iteration under the same page size and seed.
fn check_summaries(local: &TreeSummary, remote: &TreeSummary, iteration: u64) -> Result<(), LocateError> {
    if remote.iteration != iteration {
        return Err(LocateError::Unexpected(format!(
            "summary of iteration {} for iteration {iteration}",
            remote.iteration
        )));
    }
    if remote.page_size != local.page_size {
        return Err(LocateError::PageSizeMismatch {
            local: local.page_size,
            remote: remote.page_size,
        });
    }
    if remote.seed_check != local.seed_check {
        return Err(LocateError::SeedMismatch);
    }
    Ok(())
}

/// Ask the peer for `count` node hashes of `level` from `start`.
fn ask_nodes<E>(
    ask: &mut impl FnMut(&Request) -> Result<Response, E>,
    iteration: u64,
    level: u32,
    start: u64,
    count: u32,
) -> Result<Vec<[u8; 16]>, LocateError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let theirs = match ask(&Request::Nodes {
        iteration,
        level,
        start,
        count,
    })
    .map_err(|e| LocateError::Transport(e.into()))?
    {
        Response::Nodes(n) => n,
        Response::Error(e) => return Err(LocateError::Remote(e)),
        other => return Err(LocateError::Unexpected(format!("{other:?} to a nodes request"))),
    };
    if theirs.len() > count as usize {
        return Err(LocateError::Unexpected(format!(
            "{} nodes for {count} asked",
            theirs.len()
        )));
    }
    Ok(theirs)
}

/// The walk down two Merkle trees whose roots differ, level by level, to the first
/// differing page.
struct Descent<'a> {
    iteration: u64,
    snapshot: &'a Snapshot,
    /// Pages both sides have.
    common: u64,
    /// Both memories have the same number of pages.
    same_shape: bool,
    /// Levels both trees have (at least 1).
    top: u32,
}

impl Descent<'_> {
    /// Node `index` of `level` covers only pages both sides have; with the same shape,
    /// partial last nodes compare too.
    fn comparable(&self, level: u32, index: u64) -> bool {
        let span = (FANOUT as u64).saturating_pow(level);
        let first = index.saturating_mul(span);
        first < self.common
            && (self.same_shape || index.saturating_add(1).saturating_mul(span) <= self.common)
    }

    /// Descend, asking the peer for at most one fanout of nodes a round trip; sets
    /// `out.first_page`, `out.hashes_received` and `out.round_trips`.
    fn run<E>(
        &self,
        out: &mut Located,
        ask: &mut impl FnMut(&Request) -> Result<Response, E>,
    ) -> Result<(), LocateError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // `next`: the first node index at `level` not yet known to be equal;
        // `limit`: the end of the range to look at on this level.
        // With the same shape the roots (in the summaries) already differ: start
        // with the root's children.
        let (mut level, mut limit) = if self.same_shape && self.top >= 2 {
            (self.top - 2, FANOUT as u64)
        } else {
            (self.top - 1, u64::MAX)
        };
        let mut next = 0u64;
        loop {
            let mut end = next;
            while end < limit && end - next < FANOUT as u64 && self.comparable(level, end) {
                end += 1;
            }
            let mut found = None;
            if end > next {
                let count = u32::try_from(end - next).unwrap_or(FANOUT as u32);
                out.round_trips += 1;
                let theirs = ask_nodes(ask, self.iteration, level, next, count)?;
                out.hashes_received += theirs.len();
                let ours = level_nodes(self.snapshot, level, next, count);
                found = (0..count as usize)
                    .find(|&i| ours.get(i) != theirs.get(i))
                    .map(|i| next + i as u64);
            }
            match found {
                Some(index) if level == 0 => {
                    out.first_page = Some(u32::try_from(index).unwrap_or(u32::MAX));
                    return Ok(());
                }
                Some(index) => {
                    // Descend into the differing node.
                    level -= 1;
                    next = index * FANOUT as u64;
                    limit = next + FANOUT as u64;
                }
                None if end < limit && self.comparable(level, end) => {
                    // More comparable nodes on this level than one request asked.
                    next = end;
                }
                None if level == 0 => {
                    // Every page both have is equal: the difference is past the
                    // shorter memory (or in the globals / memory length only).
                    if !self.same_shape {
                        out.first_page = Some(u32::try_from(self.common).unwrap_or(u32::MAX));
                    }
                    return Ok(());
                }
                None => {
                    // The rest of this range is only partly covered on one side:
                    // look one level down, past what is known equal.
                    level -= 1;
                    next = end * FANOUT as u64;
                    limit = if limit == u64::MAX {
                        u64::MAX
                    } else {
                        limit * FANOUT as u64
                    };
                }
            }
        }
    }
}

// Wire format: little-endian, a one-byte tag, fixed fields.

const TAG_SUMMARY_REQ: u8 = 1;
const TAG_NODES_REQ: u8 = 2;
const TAG_SUMMARY: u8 = 3;
const TAG_NODES: u8 = 4;
const TAG_ERROR: u8 = 5;

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LocateError> {
        if self.bytes.len() < n {
            return Err(LocateError::Malformed(format!(
                "needed {n} more bytes, {} left",
                self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, LocateError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }
    fn u32(&mut self) -> Result<u32, LocateError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, LocateError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn hash(&mut self) -> Result<[u8; 16], LocateError> {
        let mut b = [0u8; 16];
        b.copy_from_slice(self.take(16)?);
        Ok(b)
    }
    fn end(&self) -> Result<(), LocateError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(LocateError::Malformed(format!(
                "{} trailing bytes",
                self.bytes.len()
            )))
        }
    }
}

impl Request {
    /// The request's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        match self {
            Request::Summary { iteration } => {
                out.push(TAG_SUMMARY_REQ);
                out.extend_from_slice(&iteration.to_le_bytes());
            }
            Request::Nodes {
                iteration,
                level,
                start,
                count,
            } => {
                out.push(TAG_NODES_REQ);
                out.extend_from_slice(&iteration.to_le_bytes());
                out.extend_from_slice(&level.to_le_bytes());
                out.extend_from_slice(&start.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
        }
        out
    }

    /// Decodes a request (any malformed input is an error).
    pub fn decode(bytes: &[u8]) -> Result<Self, LocateError> {
        let mut r = Reader { bytes };
        let request = match r.u8()? {
            TAG_SUMMARY_REQ => Request::Summary { iteration: r.u64()? },
            TAG_NODES_REQ => Request::Nodes {
                iteration: r.u64()?,
                level: r.u32()?,
                start: r.u64()?,
                count: r.u32()?,
            },
            tag => return Err(LocateError::Malformed(format!("request tag {tag}"))),
        };
        r.end()?;
        Ok(request)
    }
}

impl Response {
    /// The response's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Response::Summary(s) => {
                out.push(TAG_SUMMARY);
                out.extend_from_slice(&s.iteration.to_le_bytes());
                out.extend_from_slice(&s.state_hash);
                out.extend_from_slice(&s.seed_check);
                out.extend_from_slice(&s.page_size.to_le_bytes());
                out.extend_from_slice(&s.memory_len.to_le_bytes());
                out.extend_from_slice(&s.pages.to_le_bytes());
                out.extend_from_slice(&s.levels.to_le_bytes());
                out.extend_from_slice(&s.root);
                out.extend_from_slice(&s.globals_hash);
            }
            Response::Nodes(nodes) => {
                out.push(TAG_NODES);
                let n = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&n.to_le_bytes());
                for h in nodes.iter().take(n as usize) {
                    out.extend_from_slice(h);
                }
            }
            Response::Error(e) => {
                out.push(TAG_ERROR);
                out.extend_from_slice(e.as_bytes());
            }
        }
        out
    }

    /// Decodes a response (any malformed input is an error).
    pub fn decode(bytes: &[u8]) -> Result<Self, LocateError> {
        let mut r = Reader { bytes };
        let response = match r.u8()? {
            TAG_SUMMARY => Response::Summary(TreeSummary {
                iteration: r.u64()?,
                state_hash: r.hash()?,
                seed_check: r.hash()?,
                page_size: r.u64()?,
                memory_len: r.u64()?,
                pages: r.u64()?,
                levels: r.u32()?,
                root: r.hash()?,
                globals_hash: r.hash()?,
            }),
            TAG_NODES => {
                let n = r.u32()?;
                if n > MAX_NODES_PER_REQUEST {
                    return Err(LocateError::Malformed(format!("{n} nodes in one response")));
                }
                let nodes = (0..n).map(|_| r.hash()).collect::<Result<Vec<_>, _>>()?;
                Response::Nodes(nodes)
            }
            TAG_ERROR => {
                let rest = r.take(r.bytes.len())?;
                Response::Error(String::from_utf8_lossy(rest).into_owned())
            }
            tag => return Err(LocateError::Malformed(format!("response tag {tag}"))),
        };
        r.end()?;
        Ok(response)
    }
}

impl TreeSummary {
    /// The state hash as rewind's type.
    pub fn state_hash(&self) -> StateHash {
        StateHash(self.state_hash)
    }
}
