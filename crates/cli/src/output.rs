//! Writing an output file so that a reader never sees half of it and nothing around it
//! is disturbed.
//!
//! An [`Output`] is where a command writes: the path as given, followed through any
//! symbolic links to the file they name (the link stays a link; its target is
//! replaced).
//!
//! - A regular file (or a path that does not exist yet) is written as a file in a
//!   private temporary directory beside it, `.<name>.rewind-tmp.<pid>.<random>/`, which
//!   is synced and renamed over the target only when complete (the one way every
//!   command writes a file: streamed with [`Output::write`], or built by a library call
//!   with [`Output::write_file`]). A file that is replaced keeps its permission
//!   bits and its owner and group; a new file gets `0o666` less the umask, like any
//!   file a program creates. The temporary file is removed on an error; one left by a
//!   process that was killed (its pid no longer runs) is removed the next time the same
//!   output is written (Linux: the pid is looked up in `/proc`).
//! - Anything else that exists (a character device such as `/dev/null`, a FIFO, a
//!   socket) is written through in place, never replaced; a write error (`ENOSPC` from
//!   `/dev/full`) is an error.
//! - A directory is refused.

use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Symbolic links followed at most, as the kernel does (`ELOOP` beyond).
const MAX_LINKS: usize = 40;

/// The part of a temporary file's name after the output's name.
const TMP_TAG: &str = ".rewind-tmp.";

/// Where an output is written, resolved before anything is written.
#[derive(Debug)]
pub struct Output {
    /// The path as the user gave it (for messages).
    given: PathBuf,
    /// The file the path names once symbolic links are followed.
    target: PathBuf,
    /// What the target is.
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// No file there yet.
    New,
    /// A regular file, replaced by rename.
    Regular(Metadata),
    /// A device, FIFO or socket: written through in place.
    Special,
}

impl Output {
    /// Resolve `path`: follow symbolic links and look at what they lead to.
    pub fn new(path: &Path) -> Result<Output> {
        let target = resolve(path)?;
        let kind = match std::fs::metadata(&target) {
            Ok(m) if m.is_dir() => bail!("cannot write {}: it is a directory", path.display()),
            Ok(m) if m.is_file() => Kind::Regular(m),
            Ok(_) => Kind::Special,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kind::New,
            Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
        };
        Ok(Output {
            given: path.to_path_buf(),
            target,
            kind,
        })
    }

    /// The file that is written: the path with symbolic links followed.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// True when the target is a device, FIFO or socket, written through in place.
    pub fn is_special(&self) -> bool {
        matches!(self.kind, Kind::Special)
    }

    /// The writer lock of the archive this output replaces
    /// ([`rewind_archive::ArchiveLock`]), to hold until the output is in place: a
    /// writer appending meanwhile would lose its appends to the replacement. `None` for
    /// a device, FIFO or socket, which is written through, not replaced.
    pub fn lock(&self) -> Result<Option<rewind_archive::ArchiveLock>> {
        if self.is_special() {
            return Ok(None);
        }
        rewind_archive::ArchiveLock::acquire(&self.target)
            .map(Some)
            .with_context(|| format!("cannot lock {}", self.given.display()))
    }

    /// Write the output as a stream: `f` writes everything, then the file is moved into
    /// place (or, for a special file, the writes went straight to it).
    pub fn write(&self, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        if self.is_special() {
            let file = OpenOptions::new()
                .write(true)
                .open(&self.target)
                .with_context(|| format!("cannot open {}", self.given.display()))?;
            return self.stream(file, f);
        }
        self.in_temp_dir(|path| {
            let file = File::create(path).context("cannot create the temporary file")?;
            self.stream(file, f)
        })
    }

    /// Build the output as a file: `f` gets a path where nothing exists yet, in a
    /// private temporary directory, and creates the file there; then it is moved into
    /// place (or, for a special file, copied into it; the temporary directory is then in
    /// the system's temporary directory). The temporary directory is removed afterwards,
    /// also on an error.
    pub fn write_file<T>(&self, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        if !self.is_special() {
            return self.in_temp_dir(f);
        }
        let (_, name) = dir_and_name(&self.target)?;
        let tmp = tempfile::Builder::new()
            .prefix(".rewind-tmp.")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let path = tmp.path().join(&name);
        let value = f(&path)?;
        let mut from = File::open(&path).context("cannot read back the temporary file")?;
        self.write(|w| {
            std::io::copy(&mut from, w).with_context(|| format!("cannot write {}", self.given.display()))?;
            Ok(())
        })?;
        Ok(value)
    }

    /// `f` writes everything into `file` through a buffer, which is then flushed.
    fn stream(&self, file: File, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        f(&mut w)?;
        w.flush()
            .with_context(|| format!("cannot write {}", self.given.display()))
    }

    /// The one way a regular file is written: `f` creates it at a path in a private
    /// temporary directory beside the target, then it is given its mode and owner and
    /// renamed over the target. The directory is removed afterwards, also on an error.
    fn in_temp_dir<T>(&self, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let (_, name) = dir_and_name(&self.target)?;
        let tmp = self.temp_dir()?;
        let path = tmp.path().join(&name);
        // The mode a new file gets here: what a plain create (0o666) leaves after the
        // umask, whatever mode `f` creates its file with.
        let probe = tmp.path().join(".mode");
        File::create(&probe).context("cannot create a file in the temporary directory")?;
        let created = std::fs::metadata(&probe)
            .context("cannot stat a temporary file")?
            .mode()
            & 0o777;
        let value = f(&path)?;
        self.commit(&path, created)?;
        drop(tmp);
        Ok(value)
    }

    /// A new private directory beside the target, after removing the stale temporary
    /// files and directories of processes that no longer run.
    fn temp_dir(&self) -> Result<tempfile::TempDir> {
        let (dir, name) = dir_and_name(&self.target)?;
        remove_stale(&dir, &name);
        tempfile::Builder::new()
            .prefix(&format!(".{name}{TMP_TAG}{}.", std::process::id()))
            .tempdir_in(&dir)
            .with_context(|| format!("cannot create a temporary directory in {}", dir.display()))
    }

    /// Give the finished temporary file the target's mode and owner (a new file: the
    /// mode `created` it was created with, since whoever filled it may have replaced
    /// it), sync it, rename it over the target and sync the directory.
    fn commit(&self, tmp: &Path, created: u32) -> Result<()> {
        let file = File::open(tmp).context("cannot reopen the temporary file")?;
        let now = file.metadata().context("cannot stat the temporary file")?;
        match &self.kind {
            Kind::Regular(old) => {
                if now.uid() != old.uid() || now.gid() != old.gid() {
                    std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid())).with_context(
                        || {
                            format!(
                                "cannot keep the owner ({}:{}) of {}; it was not replaced",
                                old.uid(),
                                old.gid(),
                                self.given.display()
                            )
                        },
                    )?;
                }
                file.set_permissions(Permissions::from_mode(old.mode() & 0o7777))
                    .with_context(|| format!("cannot keep the mode of {}", self.given.display()))?;
            }
            Kind::New => {
                file.set_permissions(Permissions::from_mode(created))
                    .with_context(|| format!("cannot set the mode of {}", self.given.display()))?;
            }
            Kind::Special => {}
        }
        file.sync_all()
            .with_context(|| format!("cannot write {}", self.given.display()))?;
        drop(file);
        std::fs::rename(tmp, &self.target)
            .with_context(|| format!("cannot move {} into place", self.given.display()))?;
        if let Ok((dir, _)) = dir_and_name(&self.target) {
            // The rename is durable once the directory is synced; a directory that cannot
            // be opened for that (rare) still has the file.
            if let Ok(d) = File::open(&dir) {
                d.sync_all()
                    .with_context(|| format!("cannot sync {}", dir.display()))?;
            }
        }
        Ok(())
    }
}

/// Write the file at `path` as a stream through an [`Output`]: `f` writes everything,
/// then the file is moved into place.
pub fn write_path(path: &Path, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    Output::new(path)?.write(f)
}

/// Follow symbolic links from `path` to the file they name (which need not exist).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p)
                    .with_context(|| format!("cannot read the symbolic link {}", p.display()))?;
                p = if link.is_absolute() {
                    link
                } else {
                    p.parent().unwrap_or(Path::new("")).join(link)
                };
            }
            _ => return Ok(p),
        }
    }
    bail!(
        "cannot write {}: too many levels of symbolic links",
        path.display()
    )
}

/// The directory a path is in (`.` for a bare name) and its file name.
fn dir_and_name(path: &Path) -> Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .with_context(|| format!("{} does not name a file", path.display()))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// Refuse to write `out` when it is one of the `inputs` (also through a symbolic or
/// hard link, or a name that leads to the same place), or when it exists and `force`
/// is not given.
pub fn check(out: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    for i in inputs {
        if same_destination(out, i) {
            bail!("refusing to write {}: it is an input", out.display());
        }
    }
    if !force && out.exists() {
        bail!("{} already exists (use --force to replace it)", out.display());
    }
    Ok(())
}

/// True when two paths name the same existing file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// True when the two paths are the same destination: the same existing file (also
/// through a symbolic or hard link), or the same name in the same directory once
/// symbolic links are followed (for files that do not exist yet).
pub fn same_destination(a: &Path, b: &Path) -> bool {
    if same_file(a, b) {
        return true;
    }
    let (Ok(ra), Ok(rb)) = (resolve(a), resolve(b)) else {
        return false;
    };
    match (dir_and_name(&ra), dir_and_name(&rb)) {
        (Ok((da, na)), Ok((db, nb))) => na == nb && same_file(&da, &db),
        _ => false,
    }
}

/// Remove `.<name>.rewind-tmp.<pid>.*` files and directories in `dir` whose process no
/// longer runs.
/// Without `/proc` (not Linux) nothing is removed: a live writer's file must not be.
fn remove_stale(dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}{TMP_TAG}");
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(pid) = stale_pid(&file_name.to_string_lossy(), &prefix) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
        }
    }
}

/// The pid in a temporary file name `<prefix><pid>.<random>`.
fn stale_pid(file_name: &str, prefix: &str) -> Option<u32> {
    let rest = file_name.strip_prefix(prefix)?;
    let (pid, _) = rest.split_once('.')?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn a_symlink_stays_a_link_and_its_target_is_replaced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = dir.path().join("real.bin");
        std::fs::write(&real, b"old").expect("write");
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink("real.bin", &link).expect("symlink");
        Output::new(&link)
            .expect("output")
            .write(|w| Ok(w.write_all(b"new")?))
            .expect("write");
        assert!(std::fs::symlink_metadata(&link)
            .expect("stat")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).expect("read"), b"new");
    }

    #[test]
    fn a_dangling_symlink_creates_its_target() {
        let dir = tempfile::tempdir().expect("temp dir");
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink("made.bin", &link).expect("symlink");
        Output::new(&link)
            .expect("output")
            .write(|w| Ok(w.write_all(b"x")?))
            .expect("write");
        assert_eq!(std::fs::read(dir.path().join("made.bin")).expect("read"), b"x");
        assert!(std::fs::symlink_metadata(&link)
            .expect("stat")
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_replaced_file_keeps_its_mode() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("f.bin");
        std::fs::write(&p, b"old").expect("write");
        std::fs::set_permissions(&p, Permissions::from_mode(0o640)).expect("chmod");
        Output::new(&p)
            .expect("output")
            .write_file(|tmp| Ok(std::fs::write(tmp, b"new")?))
            .expect("write");
        let m = std::fs::metadata(&p).expect("stat");
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read(&p).expect("read"), b"new");
    }

    #[test]
    fn a_new_file_is_not_private_unless_the_umask_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("f.bin");
        Output::new(&p)
            .expect("output")
            .write(|w| Ok(w.write_all(b"x")?))
            .expect("write");
        let mode = std::fs::metadata(&p).expect("stat").mode() & 0o777;
        // Whatever the umask, the mode is 0o666 less it: the owner can read and write,
        // nobody executes, and it is what a plain create gives.
        let plain = dir.path().join("plain.bin");
        std::fs::write(&plain, b"x").expect("write");
        assert_eq!(mode, std::fs::metadata(&plain).expect("stat").mode() & 0o777);
    }

    #[test]
    fn dev_full_is_an_error_and_stays_a_device() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return; // not Linux
        }
        let o = Output::new(full).expect("output");
        assert!(o.is_special());
        let r = o.write(|w| Ok(w.write_all(&[1u8; 4096])?));
        assert!(r.is_err(), "ENOSPC from /dev/full went unreported");
        assert!(std::fs::metadata(full)
            .expect("stat")
            .file_type()
            .is_char_device());
    }

    #[test]
    fn dev_null_is_written_through_for_files_too() {
        let null = Path::new("/dev/null");
        let o = Output::new(null).expect("output");
        assert!(o.is_special());
        let n = o
            .write_file(|tmp| {
                std::fs::write(tmp, b"archive bytes")?;
                Ok(7)
            })
            .expect("write");
        assert_eq!(n, 7);
        assert!(std::fs::metadata(null)
            .expect("stat")
            .file_type()
            .is_char_device());
    }

    #[test]
    fn a_fifo_is_written_through() {
        use std::os::unix::fs::FileTypeExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("pipe");
        match std::process::Command::new("mkfifo").arg(&fifo).status() {
            Ok(s) if s.success() => {}
            _ => return, // no mkfifo here
        }
        let reader = std::thread::spawn({
            let f = fifo.clone();
            move || std::fs::read(f)
        });
        let o = Output::new(&fifo).expect("output");
        assert!(o.is_special());
        o.write(|w| Ok(w.write_all(b"through")?)).expect("write");
        let got = reader.join().expect("reader thread").expect("read the FIFO");
        assert_eq!(got, b"through");
        assert!(std::fs::metadata(&fifo).expect("stat").file_type().is_fifo());
    }

    #[test]
    fn an_error_leaves_no_temporary_file_and_the_old_file_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("f.bin");
        std::fs::write(&p, b"old").expect("write");
        let r = Output::new(&p).expect("output").write(|w| {
            w.write_all(b"partial")?;
            bail!("stop")
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.bin")]);
    }

    #[test]
    fn stale_temporary_files_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("out.rwd");
        // pid 0 never names a user process; the live pid is ours.
        let dead = dir.path().join(format!(".out.rwd{TMP_TAG}0.abc123"));
        let live = dir
            .path()
            .join(format!(".out.rwd{TMP_TAG}{}.abc123", std::process::id()));
        let other = dir.path().join(format!(".other.rwd{TMP_TAG}0.abc123"));
        for f in [&dead, &live, &other] {
            std::fs::write(f, b"junk").expect("write");
        }
        Output::new(&p)
            .expect("output")
            .write(|w| Ok(w.write_all(b"x")?))
            .expect("write");
        if Path::new("/proc/self").exists() {
            assert!(!dead.exists(), "a dead process's temporary file stayed");
        }
        assert!(live.exists(), "a live process's temporary file was removed");
        assert!(other.exists(), "another output's temporary file was removed");
    }

    #[test]
    fn same_destination_sees_through_links_and_new_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = dir.path().join("a.bin");
        assert!(same_destination(&a, &dir.path().join(".").join("a.bin")));
        assert!(!same_destination(&a, &dir.path().join("b.bin")));
        std::fs::write(&a, b"x").expect("write");
        let hard = dir.path().join("hard.bin");
        std::fs::hard_link(&a, &hard).expect("link");
        assert!(same_destination(&a, &hard));
        let soft = dir.path().join("soft.bin");
        std::os::unix::fs::symlink(&a, &soft).expect("symlink");
        assert!(same_destination(&soft, &a));
        let dangling = dir.path().join("dangling.bin");
        std::os::unix::fs::symlink("new.bin", &dangling).expect("symlink");
        assert!(same_destination(&dangling, &dir.path().join("new.bin")));
    }

    #[test]
    fn stale_pid_parses_only_our_names() {
        assert_eq!(
            stale_pid(".x.rwd.rewind-tmp.123.Ab9", ".x.rwd.rewind-tmp."),
            Some(123)
        );
        assert_eq!(stale_pid(".x.rwd.rewind-tmp.zz.Ab9", ".x.rwd.rewind-tmp."), None);
        assert_eq!(stale_pid(".y.rwd.rewind-tmp.1.Ab9", ".x.rwd.rewind-tmp."), None);
    }
}
