//! rewind under GGRS: the backend's frame mapping and errors, GGRS's sync
//! test over the built-in WAT guest and every real guest, a guest made
//! nondeterministic on purpose, and Merkle desync location between two
//! processes.
//!
//! The real guests come from `scripts/fetch-guests.sh`; without them those
//! tests FAIL (never skip) with a message saying to run it.

mod backend;
mod common;
mod guests;
mod locate;
mod p2p;
mod wat;
