//! The library behind the `rewind` inspector, laid out as ripgrep lays out its crates:
//!
//! - [`cmd`]: one module per command, each its arguments and `run(args, ctx)`;
//! - [`inspect`], [`import`], [`heatmap`]: the work, returning plain data;
//! - [`schema`]: the JSON Lines types, one per concept, shared by every command;
//! - [`render`]: sizes, hex, JSON Lines, hexdumps, the one-line error chain;
//! - [`output`]: writing a file through a temporary file renamed into place.
//!
//! The binary (`src/main.rs`) parses arguments, installs the panic hook and prints
//! errors. Garbage collection is [`rewind_archive::collect_file`].
//!
//! ```
//! use rewind_cli::{import, inspect};
//!
//! # fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! // Three 8 KiB frames: one byte changes at 0x1234 in the second.
//! let mut frames = Vec::new();
//! for i in 0..3u8 {
//!     let mut f = vec![0u8; 8192];
//!     f[0x1234] = (i / 2) + 1;
//!     let path = dir.path().join(format!("f{i}.bin"));
//!     std::fs::write(&path, &f)?;
//!     frames.push(path);
//! }
//! let out = dir.path().join("h.rwd");
//! let opts = import::ImportOptions::new(1024);
//! import::import(&import::Frames::Files(frames), &out, &opts, &mut |_, _| {})?;
//! let archive = rewind_archive::Archive::open(&out)?;
//! let blame = inspect::blame(&archive, inspect::Target::Iteration(2), 0x1234, 1, 1)?;
//! assert_eq!(blame.changes[0].iteration, 2);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod cmd;
pub mod heatmap;
pub mod import;
pub mod inspect;
pub mod output;
pub mod render;
pub mod schema;

/// Progress callback: `(done, total)` in the unit of the operation (bytes or records).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);
