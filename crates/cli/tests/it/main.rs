//! Integration tests of the `rewind` binary: every command on a real archive, round
//! trips against the imported frames, and bad input. Shared setup is in `common`; one
//! module per group of commands.

mod bundle;
mod common;
mod files;
mod gc;
mod import;
mod output;
mod read;
mod remote;
