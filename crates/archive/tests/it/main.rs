//! Integration tests of the archive: round trips against the in-memory history,
//! corruption and recovery, a crash test that SIGKILLs a writer, stable fuzzing, the
//! writer lock and file replacement, damaged tails, re-sealed edits of every field, and
//! the checked-in golden file.

mod attack;
mod bundle;
mod common;
mod corrupt;
mod crash;
mod extra;
mod fuzz;
mod globals;
mod golden;
mod lazy;
mod locking;
mod roundtrip;
mod tail;
