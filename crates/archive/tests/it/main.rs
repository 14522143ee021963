//! Integration tests of the archive: round trips against the in-memory history,
//! corruption and recovery, a crash test that SIGKILLs a writer, stable fuzzing.

mod common;
mod corrupt;
mod crash;
mod fuzz;
mod roundtrip;
