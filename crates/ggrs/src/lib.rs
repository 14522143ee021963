//! rewind as the state backend of [GGRS](https://github.com/gschup/ggrs), the
//! Rust rollback-netcode library (GGPO reimagined).
//!
//! A GGRS session asks the game to save, load and advance. With a
//! [`RewindBackend`] over a [`rewind_wasmer::Session`]:
//!
//! - `SaveGameState` → nothing to copy: every advance already captured its
//!   iteration, so the cell gets a [`SavedFrame`] (iteration, record, state
//!   hash) and the checksum is the 128-bit state hash;
//! - `LoadGameState` → [`Session::rollback_to`](rewind_wasmer::Session::rollback_to)
//!   (only the pages that differ are written);
//! - `AdvanceFrame` → [`Session::step`](rewind_wasmer::Session::step) with
//!   every player's input ([`InputBytes`]), which records the next iteration.
//!
//! GGRS frame `f` is iteration `origin + f` ([`RewindBackend::origin`], the
//! session's head when the backend is made: 0 for a fresh session).
//!
//! [`run_sync_test`] drives GGRS's `SyncTestSession` (GGRS re-simulates every
//! frame and compares checksums); when it fails, rewind says where: the
//! first differing page and the byte ranges ([`DesyncReport`]). Between two
//! live peers, [`locate`](locate::locate) finds the first differing page by
//! exchanging O(16 · log₁₆ pages) Merkle node hashes over the game's own
//! channel.
//!
//! ```
//! use ggrs::{PredictRepeatLast, SessionBuilder};
//! use rewind_ggrs::{run_sync_test, RewindBackend, SavedFrame};
//! use rewind_wasmer::{Session, SessionOptions};
//!
//! struct Game;
//! impl ggrs::Config for Game {
//!     type Input = u8;
//!     type InputPredictor = PredictRepeatLast;
//!     type State = SavedFrame;
//!     type Address = std::net::SocketAddr;
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two players' inputs arrive as two bytes of `step`'s i64.
//! let wat = r#"(module
//!   (memory (export "memory") 1)
//!   (global $sum (mut i64) (i64.const 0))
//!   (func (export "step") (param i64)
//!     (global.set $sum (i64.add (global.get $sum) (local.get 0)))
//!     (i64.store (i32.const 64) (global.get $sum))))"#;
//! let session = Session::new(wat, SessionOptions::new(4096)?.seed(7))?;
//! let mut backend = RewindBackend::new(session);
//! let mut sync = SessionBuilder::<Game>::new()
//!     .with_num_players(2)?
//!     .with_check_distance(4)
//!     .start_synctest_session()?;
//! let summary = run_sync_test(&mut backend, &mut sync, 100, |frame, player| {
//!     (frame as u8).wrapping_mul(3) ^ player as u8
//! })?;
//! assert!(summary.stats.resimulated > 0);
//! // Frame f is iteration f: GGRS's checksum is rewind's state hash.
//! assert_eq!(backend.checksum(100)?, backend.session().state_hash(100)?.to_u128());
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![deny(unsafe_code)]

mod backend;
pub mod locate;
mod sync;

pub use backend::{BackendError, BackendStats, Handled, InputBytes, RewindBackend, SavedFrame, Simulation};
pub use sync::{run_sync_test, DesyncReport, SyncTestError, SyncTestSummary};
