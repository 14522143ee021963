//! The cache directory, and the whole-copy read cache: a remote archive pulled into a
//! local file, kept up to date by incremental pulls, and opened with the ordinary
//! zero-copy reader (the CLI's `REWIND_REMOTE_READ=copy`; reads in place are in
//! `reader`).

use std::path::PathBuf;

use crate::transfer::{PullOptions, TransferReport};
use crate::{Remote, RemoteError, RemoteUrl};

/// The cache directory: `$REWIND_CACHE` when set, else `rewind-cache-UID` in the
/// system's temporary directory (one per user, created with mode 0700).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("REWIND_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid().to_string());
    std::env::temp_dir().join(format!("rewind-cache-{}", uid.unwrap_or_else(|_| "user".into())))
}

/// The cache file of a remote archive: in [`cache_dir`], named by a hash of the
/// endpoint (`AWS_ENDPOINT_URL` / `AWS_ENDPOINT`) and the URL, then the key's last
/// segment.
pub fn cache_file(url: &str) -> Result<PathBuf, RemoteError> {
    let parsed = RemoteUrl::parse(url)?;
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .unwrap_or_default();
    let id = xxhash_rust::xxh3::xxh3_64(format!("{endpoint}\n{url}").as_bytes());
    let base: String = parsed
        .key
        .rsplit('/')
        .next()
        .unwrap_or("archive")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(cache_dir().join(format!("{id:016x}-{base}")))
}

/// Bring the cache file of `url` up to date (an incremental [`Remote::pull`] that
/// replaces a cache file the remote no longer extends) and return its path, ready for
/// `Archive::open`, with what the pull moved.
pub fn sync_cache(url: &str) -> Result<(PathBuf, TransferReport), RemoteError> {
    let path = cache_file(url)?;
    let dir = cache_dir();
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(RemoteError::io("create", &dir))?;
    let report = Remote::open(url)?.pull(&path, PullOptions { replace: true })?;
    Ok((path, report))
}
