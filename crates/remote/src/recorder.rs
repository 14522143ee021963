//! A [`Recorder`] whose archive lives in object storage.
//!
//! Object stores have no append: an archive at `s3://BUCKET/KEY` is immutable parts
//! plus a head (`docs/remote.md`). So the recorder writes the archive to a local copy,
//! as [`rewind::Options::archive`] does, and every `push_every` captures (and at
//! [`RemoteRecorder::push`] and [`RemoteRecorder::finish`]) commits it durably and
//! uploads the commits the remote lacks, head last. The remote always holds a whole
//! archive: a crash loses the captures since the last push, never the archive. The
//! single-writer rule of the local file extends to the URL: a second recorder on the
//! same URL is refused at its first push ([`RemoteError::Conflict`] or
//! [`RemoteError::Diverged`]).

use std::path::{Path, PathBuf};

use rewind::{CaptureReport, Durability, GlobalValue, Options, Recorder};

use crate::{PushOptions, Remote, RemoteError, TransferReport};

/// Records frames into an archive at an `s3://` URL, through a local copy.
///
/// ```no_run
/// use rewind_remote::{Remote, RemoteRecorder};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let remote = Remote::open("s3://replays/match-17.rwd")?;
/// let options = rewind::Options::new(4096)?.seed(1);
/// let mut rec = RemoteRecorder::create(remote, "match-17.rwd", options)?.push_every(60);
/// let mut memory = vec![0u8; 16 * 4096];
/// for frame in 0..600u64 {
///     memory[frame as usize % 4096] = frame as u8;
///     rec.capture(frame, &memory, &[], None, None)?; // uploads every 60 captures
/// }
/// let report = rec.finish()?; // the rest, then the head
/// println!("{} bytes in the remote archive", report.len);
/// # Ok(())
/// # }
/// ```
pub struct RemoteRecorder {
    recorder: Recorder,
    cache: PathBuf,
    remote: Remote,
    push_every: u64,
    since_push: u64,
    pushed: TransferReport,
}

impl std::fmt::Debug for RemoteRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRecorder")
            .field("remote", &self.remote)
            .field("cache", &self.cache)
            .field("push_every", &self.push_every)
            .field("pushed", &self.pushed)
            .finish()
    }
}

impl RemoteRecorder {
    /// Record into `remote` through a new local copy at `cache` (which must not exist),
    /// with `options` as for [`Recorder::new`] (an archive set in them is replaced by
    /// `cache`). Nothing is uploaded before the first push.
    pub fn create(remote: Remote, cache: impl Into<PathBuf>, options: Options) -> Result<Self, RemoteError> {
        let cache = cache.into();
        let recorder = Recorder::new(options.archive(&cache, Durability::Manual)).map_err(record(&cache))?;
        Ok(RemoteRecorder {
            recorder,
            cache,
            remote,
            push_every: 0,
            since_push: 0,
            pushed: TransferReport::default(),
        })
    }

    /// Push after every `captures` captures (0, the default: only on
    /// [`RemoteRecorder::push`] and [`RemoteRecorder::finish`]).
    pub fn push_every(mut self, captures: u64) -> Self {
        self.push_every = captures;
        self
    }

    /// Capture as [`Recorder::capture`], then push when `push_every` captures have
    /// been made since the last push.
    pub fn capture(
        &mut self,
        iteration: u64,
        memory: &[u8],
        globals: &[GlobalValue],
        hint: Option<&[u32]>,
        input: Option<&[u8]>,
    ) -> Result<CaptureReport, RemoteError> {
        let report = self
            .recorder
            .capture(iteration, memory, globals, hint, input)
            .map_err(record(&self.cache))?;
        self.since_push += 1;
        if self.push_every > 0 && self.since_push >= self.push_every {
            self.push()?;
        }
        Ok(report)
    }

    /// Commit what was captured to the local copy durably, then upload the commits the
    /// remote lacks (head last). On error the remote still holds the archive of the
    /// last successful push, and the next push resumes.
    pub fn push(&mut self) -> Result<TransferReport, RemoteError> {
        self.recorder.sync().map_err(record(&self.cache))?;
        let report = self.remote.push(&self.cache, PushOptions::default())?;
        self.since_push = 0;
        self.pushed.add(&report);
        Ok(report)
    }

    /// Push what is left and close the local copy. Returns the transfers of every push
    /// of this recorder, summed (`len`: the archive's length after the last).
    pub fn finish(mut self) -> Result<TransferReport, RemoteError> {
        self.push()?;
        Ok(self.pushed)
    }

    /// The recorder (for rollbacks, reads, state hashes, policies).
    pub fn recorder(&mut self) -> &mut Recorder {
        &mut self.recorder
    }

    /// The local copy of the archive.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// The transfers of every push so far, summed.
    pub fn pushed(&self) -> TransferReport {
        self.pushed
    }
}

fn record(path: &Path) -> impl FnOnce(rewind::Error) -> RemoteError + '_ {
    move |source| RemoteError::Record {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}
