//! Test support: a one-node Garage server on 127.0.0.1.
//!
//! [`Garage::start`] writes a small configuration (sqlite metadata, replication
//! factor 1, RPC, S3 and admin APIs on free loopback ports, a random RPC secret, data
//! and metadata in a temporary directory), starts `garage server`, assigns and applies
//! a layout, and creates a bucket and a key allowed to read and write it. Every wait is
//! bounded; the server is killed on drop. The binary is `$GARAGE_BIN` or `garage` on
//! `PATH`; `scripts/install-garage.sh` installs it.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any one step may take before the fixture gives up.
const STEP: Duration = Duration::from_secs(60);

/// A running one-node Garage server, killed on drop.
#[derive(Debug)]
pub struct Garage {
    child: Child,
    dir: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The S3 region the server expects.
    pub region: String,
    /// The access key id allowed on [`Garage::bucket`].
    pub key_id: String,
    /// Its secret.
    pub secret: String,
    /// A bucket the key owns.
    pub bucket: String,
}

/// Where the garage binary is: `$GARAGE_BIN`, else `garage` on `PATH`; when neither
/// names a file, an error that says how to install it.
pub fn garage_bin() -> Result<PathBuf, String> {
    find_garage(std::env::var_os("GARAGE_BIN"), std::env::var_os("PATH"))
}

fn find_garage(bin: Option<std::ffi::OsString>, path: Option<std::ffi::OsString>) -> Result<PathBuf, String> {
    if let Some(p) = bin.filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "GARAGE_BIN={} is not a file; run scripts/install-garage.sh to install garage 2.5.0",
                p.display()
            ))
        };
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("garage"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "the garage binary is not on PATH and GARAGE_BIN is not set: run scripts/install-garage.sh \
             (cargo install garage --locked --version 2.5.0) to install it"
                .to_string()
        })
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| format!("random bytes: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Run a command with a deadline; its stdout, or an error with its output.
fn run_bounded(cmd: &mut Command, what: &str) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let deadline = Instant::now() + STEP;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                let mut err = String::new();
                if let Some(mut s) = child.stdout.take() {
                    let _ = s.read_to_string(&mut out);
                }
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                return if status.success() {
                    Ok(out)
                } else {
                    Err(format!("{what}: {status}: {out}{err}"))
                };
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: no answer within {STEP:?}"));
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

/// Retry `f` until it succeeds or the deadline passes.
fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + STEP;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(format!("{what}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn field(out: &str, name: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Garage {
    /// Start a server, lay it out and create a bucket and a key.
    pub fn start() -> Result<Garage, String> {
        let bin = garage_bin()?;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let (rpc, s3, admin) = (free_port()?, free_port()?, free_port()?);
        let config = dir.path().join("garage.toml");
        let region = "garage".to_string();
        let toml = format!(
            "metadata_dir = \"{d}/meta\"\n\
             data_dir = \"{d}/data\"\n\
             db_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{secret}\"\n\
             [s3_api]\n\
             s3_region = \"{region}\"\n\
             api_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             [admin]\n\
             api_bind_addr = \"127.0.0.1:{admin}\"\n",
            d = dir.path().display(),
            secret = random_hex(32)?,
        );
        std::fs::write(&config, toml).map_err(|e| format!("write {}: {e}", config.display()))?;
        let log =
            std::fs::File::create(dir.path().join("server.log")).map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let mut g = Garage {
            child,
            dir,
            bin,
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            region,
            key_id: String::new(),
            secret: String::new(),
            bucket: "rewind".into(),
        };
        g.setup().map_err(|e| format!("{e}\nserver log:\n{}", g.log()))?;
        Ok(g)
    }

    fn setup(&mut self) -> Result<(), String> {
        let id = retry("garage node id", || self.cli(&["node", "id", "-q"]))?;
        let id = id.trim().split('@').next().unwrap_or_default().to_string();
        if id.is_empty() {
            return Err("garage node id printed nothing".into());
        }
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id])?;
        self.cli(&["layout", "apply", "--version", "1"])?;
        retry("garage bucket create", || {
            self.cli(&["bucket", "create", "rewind"])
        })?;
        let key = self.cli(&["key", "create", "rewind-key"])?;
        self.key_id = field(&key, "Key ID:").ok_or_else(|| format!("no key id in {key:?}"))?;
        self.secret = field(&key, "Secret key:").ok_or_else(|| format!("no secret in {key:?}"))?;
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "rewind",
            "--key",
            "rewind-key",
        ])?;
        // The S3 API answers once the layout has reached every table: wait for a listing.
        let store = self.store(&self.bucket).map_err(|e| format!("S3 client: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        retry("the S3 API", || {
            rt.block_on(store.list_with_delimiter(None))
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?;
        Ok(())
    }

    /// Run `garage -c CONFIG ARGS...` (bounded); its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&self.config).args(args);
        run_bounded(&mut cmd, &format!("garage {}", args.join(" ")))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The temporary directory holding the server's data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Settings for [`crate::Remote::open_with`] that reach this server with its key.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint.clone()),
            ("aws_region", self.region.clone()),
            ("aws_access_key_id", self.key_id.clone()),
            ("aws_secret_access_key", self.secret.clone()),
            ("aws_allow_http", "true".into()),
        ]
    }

    /// The same as environment variables, for a child process (the CLI).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// An S3 client of `bucket` on this server, for tests that tamper with objects or
    /// wrap the store.
    pub fn store(
        &self,
        bucket: &str,
    ) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, object_store::Error> {
        let mut b = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
        for (k, v) in self.settings() {
            let key: object_store::aws::AmazonS3ConfigKey = k.parse()?;
            b = b.with_config(key, v);
        }
        Ok(std::sync::Arc::new(b.build()?))
    }

    /// Open `s3://BUCKET/KEY` on this server.
    pub fn remote(&self, key: &str) -> Result<crate::Remote, crate::RemoteError> {
        let s = self.settings();
        let pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crate::Remote::open_with(&format!("s3://{}/{key}", self.bucket), &pairs)
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_garage_binary_is_an_error_naming_the_install_script() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = find_garage(None, Some(dir.path().as_os_str().to_owned())).expect_err("missing");
        assert!(err.contains("scripts/install-garage.sh"), "{err}");
        let err = find_garage(Some(dir.path().join("garage").into_os_string()), None).expect_err("missing");
        assert!(
            err.contains("GARAGE_BIN") && err.contains("scripts/install-garage.sh"),
            "{err}"
        );
        std::fs::write(dir.path().join("garage"), b"").expect("write");
        assert_eq!(
            find_garage(None, Some(dir.path().as_os_str().to_owned())),
            Ok(dir.path().join("garage"))
        );
    }
}
