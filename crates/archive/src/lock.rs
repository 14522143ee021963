//! The single-writer lock of an archive, and the file-type checks shared by readers
//! and writers.
//!
//! The lock is an advisory `flock` (through the standard library's [`File::try_lock`],
//! so no `unsafe` and no extra crate) on a lock file beside the archive,
//! `<archive>.lock`, which holds the holder's process id. It sits on a separate file,
//! not on the archive itself, because writers replace archives by `rename`: a lock on
//! the archive's inode would be left behind on the old file, while the lock file's name
//! stays put. The kernel drops a `flock` when its holder dies, so a crashed writer
//! never leaves a stale lock, only (at worst) a stale file that the next holder reuses.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::ArchiveError;

/// How many times [`ArchiveLock::acquire`] retries when the lock file it opened was
/// removed by a releasing holder between its open and its lock.
const RETRIES: usize = 64;

/// The writer lock of one archive, held until dropped.
///
/// [`crate::ArchiveWriter`] (from `create`, `replace` or `open`), [`crate::repair`] and
/// [`crate::compact`] take it and hold it for as long as they may change the file; a
/// second one fails at once with [`ArchiveError::Locked`] naming the holder's pid.
/// Readers ([`crate::Archive`]) never take it: they read committed bytes that no lock
/// holder changes (see `docs/format.md`, "Concurrent processes").
///
/// The lock is per open file description: a second `acquire` in the same process is
/// refused too. Dropping the lock removes the lock file, then releases the lock.
#[derive(Debug)]
pub struct ArchiveLock {
    file: File,
    lock_path: PathBuf,
    archive: PathBuf,
}

/// The archive path locks are keyed on: the target of a symbolic link, so a link and
/// its target share one lock. A path that does not exist yet is used as given.
pub(crate) fn resolve(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// The lock file of an archive: its name with `.lock` appended.
pub fn lock_path(path: &Path) -> PathBuf {
    let target = resolve(path);
    let mut name = target
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "archive".into());
    name.push(".lock");
    target.with_file_name(name)
}

impl ArchiveLock {
    /// Take the writer lock of the archive at `path` (which need not exist yet), or
    /// fail at once with [`ArchiveError::Locked`] when another holder has it.
    pub fn acquire(path: &Path) -> Result<ArchiveLock, ArchiveError> {
        let lock_path = lock_path(path);
        for _ in 0..RETRIES {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
                .map_err(ArchiveError::io("open lock file", &lock_path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(ArchiveError::Locked {
                        path: path.to_path_buf(),
                        pid: read_pid(&file),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(ArchiveError::io("lock", &lock_path)(e)),
            }
            // A holder removes the file before it unlocks: if the name no longer leads
            // to the inode just locked, that lock guards nothing. Try again.
            let mine = file.metadata().map_err(ArchiveError::io("stat", &lock_path))?;
            match std::fs::metadata(&lock_path) {
                Ok(now) if now.dev() == mine.dev() && now.ino() == mine.ino() => {}
                _ => continue,
            }
            let pid = format!("{}\n", std::process::id());
            file.set_len(0)
                .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
                .map_err(ArchiveError::io("write lock file", &lock_path))?;
            return Ok(ArchiveLock {
                file,
                lock_path,
                archive: path.to_path_buf(),
            });
        }
        Err(ArchiveError::Locked {
            path: path.to_path_buf(),
            pid: None,
        })
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The archive this lock guards.
    pub fn archive_path(&self) -> &Path {
        &self.archive
    }
}

impl Drop for ArchiveLock {
    fn drop(&mut self) {
        // Remove the name while still holding the lock (nobody else can have recreated
        // it meanwhile), then unlock by closing: see `acquire` for why this order.
        let _ = std::fs::remove_file(&self.lock_path);
        let _ = self.file.unlock();
    }
}

fn read_pid(file: &File) -> Option<u32> {
    let mut s = String::new();
    file.take(32).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// What a file type is, for [`ArchiveError::NotAFile`], or `None` for a regular file.
pub(crate) fn not_regular(t: std::fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("a special file")
    }
}

/// Open `path` for reading without blocking (a FIFO would block an ordinary open until
/// a writer appears) and check that it is a regular file.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64), ArchiveError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ArchiveError::io("open", path))?;
    let meta = file.metadata().map_err(ArchiveError::io("stat", path))?;
    if let Some(what) = not_regular(meta.file_type()) {
        return Err(ArchiveError::NotAFile {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok((file, meta.len()))
}
