//! Real third-party guests for rewind: rapier2d (physics, prebuilt from npm),
//! SQLite, Lua 5.4 and Doom (compiled to wasm32-wasi from registry packages by
//! `scripts/fetch-guests.sh`), each driven one frame at a time under a
//! [deterministic host](host), recorded every frame, rolled back and
//! re-simulated.
//!
//! The guests are not in the repository: `scripts/fetch-guests.sh` fetches
//! and builds them into `guests/cache/out/` (or `$REWIND_GUESTS_DIR`).
//! [`GuestDir::locate`] fails with [`Error::NotBuilt`] when they are missing.
//!
//! ```no_run
//! use rewind_guests::{GuestDir, GuestKind, GuestRun};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = GuestDir::locate()?;
//! let mut lua = GuestRun::start(GuestKind::Lua, &dir, 7)?;
//! for frame in 1..=100 {
//!     lua.step(frame)?;
//! }
//! let hash_50 = lua.state_hash(50)?;
//! lua.rollback_to(50)?;
//! assert_eq!(lua.head(), 50);
//! assert_eq!(lua.state_hash(50)?, hash_50);
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod doom;
pub mod host;
mod rapier;
mod run;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use doom::DoomFrame;
pub use host::{Host, HostConfig, HostState};
pub use run::{GuestRun, GuestSpec, HostDriver, PAGE_SIZE, RAPIER_BODIES};

/// The guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestKind {
    /// rapier2d-deterministic 0.20.0 (npm), prebuilt by its authors.
    Rapier,
    /// SQLite 3 from better-sqlite3 13.2.0 (npm), with `guests/src/sqlite_driver.c`.
    Sqlite,
    /// Lua 5.4 from the lupa 2.8 sdist (PyPI), with `guests/src/lua_driver.c`.
    Lua,
    /// doomgeneric from the cydoomgeneric 0.1.0 sdist (PyPI) + Freedoom (Debian).
    Doom,
}

impl GuestKind {
    /// Every guest.
    pub const ALL: [GuestKind; 4] = [
        GuestKind::Rapier,
        GuestKind::Sqlite,
        GuestKind::Lua,
        GuestKind::Doom,
    ];

    /// The file name of the built guest in the guest directory.
    pub fn file_name(self) -> &'static str {
        match self {
            GuestKind::Rapier => "rapier2d.wasm",
            GuestKind::Sqlite => "sqlite.wasm",
            GuestKind::Lua => "lua.wasm",
            GuestKind::Doom => "doom.wasm",
        }
    }
}

impl std::fmt::Display for GuestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GuestKind::Rapier => "rapier2d",
            GuestKind::Sqlite => "sqlite",
            GuestKind::Lua => "lua",
            GuestKind::Doom => "doom",
        })
    }
}

/// Where the built guests are.
#[derive(Clone, Debug)]
pub struct GuestDir {
    path: PathBuf,
}

impl GuestDir {
    /// `$REWIND_GUESTS_DIR`, else `guests/cache/out` of this repository;
    /// [`Error::NotBuilt`] unless every guest and the IWAD are there.
    pub fn locate() -> Result<Self, Error> {
        let path = std::env::var_os("REWIND_GUESTS_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/cache/out"),
            PathBuf::from,
        );
        Self::at(path)
    }

    /// The guests in `path`; [`Error::NotBuilt`] unless all are there.
    pub fn at(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = Self { path: path.into() };
        for kind in GuestKind::ALL {
            dir.check(&dir.wasm_path(kind))?;
        }
        dir.check(&dir.wad_dir().join("freedoom1.wad"))?;
        Ok(dir)
    }

    fn check(&self, file: &Path) -> Result<(), Error> {
        if file.is_file() {
            Ok(())
        } else {
            Err(Error::NotBuilt {
                missing: file.to_path_buf(),
            })
        }
    }

    /// The built module of `kind`.
    pub fn wasm_path(&self, kind: GuestKind) -> PathBuf {
        self.path.join(kind.file_name())
    }

    /// The directory preopened read-only for Doom (holds `freedoom1.wad`).
    pub fn wad_dir(&self) -> PathBuf {
        self.path.join("wad")
    }
}

/// Errors of this crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The guests have not been fetched and built.
    #[error(
        "the real guests are not built ({} is missing): run scripts/fetch-guests.sh \
         (or set REWIND_GUESTS_DIR to a directory that holds them)",
        missing.display()
    )]
    NotBuilt {
        /// The first missing file.
        missing: PathBuf,
    },
    /// Reading a guest file failed.
    #[error("reading {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The module imports something the deterministic host does not provide.
    #[error("import {module}.{name}: {reason}")]
    UnsupportedImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The guest does not export what its driver calls.
    #[error("{guest}: export {name}: {reason}")]
    Export {
        /// The guest's name.
        guest: String,
        /// The export.
        name: String,
        /// Why.
        reason: String,
    },
    /// A guest call trapped or failed.
    #[error("{guest}: calling {call}")]
    Call {
        /// The guest's name.
        guest: String,
        /// What was called.
        call: String,
        /// The trap.
        #[source]
        source: wasmer::RuntimeError,
    },
    /// A call returned something unexpected.
    #[error("{guest}: {call} returned {detail}")]
    BadReturn {
        /// The guest's name.
        guest: String,
        /// What was called.
        call: String,
        /// What came back.
        detail: String,
    },
    /// Compiling or instantiating, capture, globals, memory.
    #[error(transparent)]
    Guest(#[from] rewind_wasmer::GuestError),
    /// The rollback session (SQLite, Lua, Doom).
    #[error(transparent)]
    Session(#[from] rewind_wasmer::SessionError),
    /// The history.
    #[error(transparent)]
    Rewind(#[from] rewind::Error),
}
