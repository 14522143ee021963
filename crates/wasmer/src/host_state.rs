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
//! never changes, such as file contents, and keep only positions). The bytes live in
//! the session's history, beside each record's input (content-addressed, so equal
//! consecutive states share one copy), and so reach the archive with
//! [`SessionOptions::archive`](crate::SessionOptions::archive): a session resumed
//! from it ([`SessionOptions::resume_from`](crate::SessionOptions::resume_from))
//! puts the stored state back into the host given to
//! [`Session::set_host_state`](crate::Session::set_host_state).

use std::collections::HashSet;

use rewind::{Hasher, History, InputHash, StateHash};

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
///
/// ```
/// use rewind_wasmer::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
/// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
/// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
/// let e = HostStateError::new("a clock is 8 bytes");
/// assert_eq!(e.to_string(), "a clock is 8 bytes");
/// # Ok(())
/// # }
/// ```
pub struct HostStateError(pub String);

impl HostStateError {
    /// An error with a message.
    ///
    /// ```
    /// use rewind_wasmer::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let wat = r#"(module (memory (export "memory") 1) (global $sum (mut i64) (i64.const 0))
    /// #   (func (export "step") (param i64) (global.set $sum (i64.add (global.get $sum) (local.get 0)))
    /// #     (i64.store (i32.const 4096) (global.get $sum))))"#;
    /// let e: HostStateError = HostStateError::new(format!("unknown file {}", 3));
    /// # let _ = e;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The session's host: saved with every capture into the history (beside the
/// record's input), put back from it on every rollback.
pub(crate) struct HostStates {
    host: Box<dyn HostState>,
    /// The history's hasher (its seed): host-state hashes are comparable across peers.
    hasher: Hasher,
    /// Whether state hashes cover the host state.
    hashed: bool,
}

impl HostStates {
    pub(crate) fn new(host: Box<dyn HostState>, hasher: Hasher, hashed: bool) -> Self {
        Self { host, hasher, hashed }
    }

    /// The host's state now, encoded: recorded with the capture of the iteration
    /// that just ran.
    pub(crate) fn save(&mut self) -> Vec<u8> {
        self.host.save()
    }

    /// Puts back the state recorded with `iteration` of `history`'s timeline.
    pub(crate) fn load(&mut self, history: &History, iteration: u64) -> Result<(), HostStateError> {
        let bytes = history
            .at(iteration)
            .ok()
            .and_then(|r| history.host_state(r.id()))
            .ok_or_else(|| {
                HostStateError::new(format!("no host state was recorded for iteration {iteration}"))
            })?;
        self.host.load(bytes)
    }

    /// Puts back `bytes`, a state [`HostState::save`] returned.
    pub(crate) fn load_bytes(&mut self, bytes: &[u8]) -> Result<(), HostStateError> {
        self.host.load(bytes)
    }

    /// Iterations of `history`'s timeline holding a host state, and the distinct
    /// states among them (each stored once).
    pub(crate) fn counts(history: &History) -> (usize, usize) {
        let hashes: Vec<InputHash> = history.timeline().filter_map(|r| r.host_state_hash()).collect();
        let distinct: HashSet<InputHash> = hashes.iter().copied().collect();
        (hashes.len(), distinct.len())
    }

    /// Whether reported state hashes cover the host state.
    pub(crate) fn hashed(&self) -> bool {
        self.hashed
    }

    /// The state hash of `iteration` of `history` as the session reports it: the
    /// guest's own when the host state is not hashed, else both combined.
    pub(crate) fn state_hash(&self, history: &History, iteration: u64, guest: StateHash) -> StateHash {
        if !self.hashed {
            return guest;
        }
        let host = history.at(iteration).ok().and_then(|r| r.host_state_hash());
        let mut buf = Vec::with_capacity(48);
        buf.extend_from_slice(b"rewind-host-v1\0\0");
        buf.extend_from_slice(guest.as_bytes());
        match host {
            Some(h) => buf.extend_from_slice(h.as_bytes()),
            None => buf.extend_from_slice(&[0; 16]),
        }
        self.hasher.state(&buf)
    }
}
