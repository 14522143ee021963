//! Host-side state recorded with every iteration.
//!
//! A guest's host functions often keep state the guest can observe — a clock, a
//! random generator, open files. For a rollback to be exact that state must go back
//! with the guest's memory. A [`HostState`] given to
//! [`Session::set_host_state`](crate::Session::set_host_state) is saved after every
//! recorded iteration, put back on every rollback (before the
//! [`on_rollback`](crate::Session::on_rollback) hooks run), dropped with the
//! iterations the policy collects and, if asked, covered by the session's state
//! hashes.
//!
//! The state travels as bytes: the host decides its encoding (it can leave out what
//! never changes, such as file contents, and keep only positions), and equal
//! consecutive states share one allocation.

use std::collections::BTreeMap;
use std::sync::Arc;

use rewind::{Hasher, InputHash, StateHash};

/// Host state that goes back with the guest.
///
/// ```
/// use rewind_wasmer::host_state::{HostState, HostStateError};
///
/// /// A host clock the guest reads through an import.
/// struct Clock(std::rc::Rc<std::cell::Cell<u64>>);
///
/// impl HostState for Clock {
///     fn save(&mut self) -> Vec<u8> {
///         self.0.get().to_le_bytes().to_vec()
///     }
///     fn load(&mut self, bytes: &[u8]) -> Result<(), HostStateError> {
///         let b: [u8; 8] = bytes.try_into().map_err(|_| HostStateError::new("a clock is 8 bytes"))?;
///         self.0.set(u64::from_le_bytes(b));
///         Ok(())
///     }
/// }
/// ```
pub trait HostState {
    /// The state now, encoded: recorded as that of the iteration just captured.
    fn save(&mut self) -> Vec<u8>;

    /// Puts back a state [`save`](Self::save) returned.
    fn load(&mut self, bytes: &[u8]) -> Result<(), HostStateError>;
}

/// A host could not put back a saved state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostStateError(pub String);

impl HostStateError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The saved host states of the timeline, by iteration.
pub(crate) struct HostStates {
    host: Box<dyn HostState>,
    /// The history's hasher (its seed): host-state hashes are comparable across peers.
    hasher: Hasher,
    /// Whether state hashes cover the host state.
    hashed: bool,
    saved: BTreeMap<u64, Saved>,
    /// With frames in flight, collect once this many states are held (the
    /// history is only looked at then, so a pipelined capture does not wait).
    collect_at: usize,
}

#[derive(Clone)]
struct Saved {
    bytes: Arc<[u8]>,
    hash: InputHash,
}

impl HostStates {
    pub(crate) fn new(host: Box<dyn HostState>, hasher: Hasher, hashed: bool) -> Self {
        Self {
            host,
            hasher,
            hashed,
            saved: BTreeMap::new(),
            collect_at: 0,
        }
    }

    /// Records the host's state as that of `iteration` (the new head): later
    /// iterations, left by a rollback, are dropped.
    pub(crate) fn save(&mut self, iteration: u64) {
        let bytes = self.host.save();
        drop(self.saved.split_off(&iteration));
        let saved = match self.saved.last_key_value() {
            Some((_, prev)) if *prev.bytes == *bytes => prev.clone(),
            _ => Saved {
                hash: self.hasher.input(&bytes),
                bytes: bytes.into(),
            },
        };
        self.saved.insert(iteration, saved);
    }

    /// Puts back the state of `iteration` (the head after a rollback) and drops
    /// the later ones.
    pub(crate) fn load(&mut self, iteration: u64) -> Result<(), HostStateError> {
        drop(self.saved.split_off(&(iteration + 1)));
        let saved = self.saved.get(&iteration).ok_or_else(|| {
            HostStateError::new(format!("no host state was recorded for iteration {iteration}"))
        })?;
        self.host.load(&saved.bytes)
    }

    /// Drops the states of iterations before `oldest` (collected by the policy).
    pub(crate) fn collect(&mut self, oldest: u64) {
        if self.saved.first_key_value().is_some_and(|(&k, _)| k < oldest) {
            self.saved = self.saved.split_off(&oldest);
        }
        self.collect_at = 2 * self.saved.len() + 64;
    }

    /// Whether enough states piled up, with frames in flight, to look at the history.
    pub(crate) fn wants_collect(&self) -> bool {
        self.saved.len() >= self.collect_at
    }

    /// The saved bytes of `iteration`.
    pub(crate) fn bytes(&self, iteration: u64) -> Option<&[u8]> {
        self.saved.get(&iteration).map(|s| &*s.bytes)
    }

    /// Iterations with a saved state, and distinct allocations holding them.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let mut distinct = 0;
        let mut prev: Option<&Arc<[u8]>> = None;
        for s in self.saved.values() {
            if !prev.is_some_and(|p| Arc::ptr_eq(p, &s.bytes)) {
                distinct += 1;
            }
            prev = Some(&s.bytes);
        }
        (self.saved.len(), distinct)
    }

    /// The state hash of `iteration` as the session reports it: the guest's own
    /// when the host state is not hashed, else both combined.
    pub(crate) fn state_hash(&self, iteration: u64, guest: StateHash) -> StateHash {
        if !self.hashed {
            return guest;
        }
        let mut buf = Vec::with_capacity(48);
        buf.extend_from_slice(b"rewind-host-v1\0\0");
        buf.extend_from_slice(guest.as_bytes());
        match self.saved.get(&iteration) {
            Some(s) => buf.extend_from_slice(s.hash.as_bytes()),
            None => buf.extend_from_slice(&[0; 16]),
        }
        self.hasher.state(&buf)
    }
}
