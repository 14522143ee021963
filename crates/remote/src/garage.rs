//! Test support: a one-node Garage server on 127.0.0.1.
//!
//! [`Garage::start`] writes a small configuration (sqlite metadata, replication
//! factor 1, RPC, S3 and admin APIs on free loopback ports, a random RPC secret, data
//! and metadata in a temporary directory), starts `garage server`, assigns and applies
//! a layout, and creates a bucket and a key allowed to read and write it. Every wait is
//! bounded; the server is killed on drop. [`GarageCluster::start`] does the same for
//! several nodes connected to each other (replication factor 3 for three), whose
//! processes a test can kill one by one. The binary is `$GARAGE_BIN` or `garage` on
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

/// `n` distinct free ports on 127.0.0.1: every listener is held until all are chosen,
/// so no two of them are the same port. Another process may still take one before the
/// server binds it: [`with_fresh_ports`] starts again then.
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind a free port: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string()))
        .collect()
}

/// Starts that lost a port to another process (tests start servers in parallel)
/// between choosing it and the server binding it, tried again with fresh ports.
const START_ATTEMPTS: usize = 3;

/// Run `start` until it does not fail on a port taken meanwhile ("Address already in
/// use" in the error, which carries the servers' logs), at most [`START_ATTEMPTS`]
/// times; any other failure is returned at once.
fn with_fresh_ports<T>(mut start: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let mut last = String::new();
    for _ in 0..START_ATTEMPTS {
        match start() {
            Ok(v) => return Ok(v),
            Err(e) if e.contains("Address already in use") => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(format!(
        "{START_ATTEMPTS} attempts lost a port to another process; the last: {last}"
    ))
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

/// The loopback ports of one node.
#[derive(Clone, Copy, Debug)]
struct Ports {
    rpc: u16,
    s3: u16,
    admin: u16,
}

impl Ports {
    /// The ports of `nodes` nodes, all distinct.
    fn free(nodes: usize) -> Result<Vec<Ports>, String> {
        let ports = free_ports(3 * nodes)?;
        Ok(ports
            .chunks_exact(3)
            .map(|p| Ports {
                rpc: p[0],
                s3: p[1],
                admin: p[2],
            })
            .collect())
    }
}

/// Write a node's configuration: data and metadata under `dir`, every API on
/// 127.0.0.1.
fn write_config(
    config: &Path,
    dir: &Path,
    replication: u8,
    ports: Ports,
    secret: &str,
    region: &str,
) -> Result<(), String> {
    let toml = format!(
        "metadata_dir = \"{d}/meta\"\n\
         data_dir = \"{d}/data\"\n\
         db_engine = \"sqlite\"\n\
         replication_factor = {replication}\n\
         rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
         rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
         rpc_secret = \"{secret}\"\n\
         [s3_api]\n\
         s3_region = \"{region}\"\n\
         api_bind_addr = \"127.0.0.1:{s3}\"\n\
         root_domain = \".s3.garage.localhost\"\n\
         [admin]\n\
         api_bind_addr = \"127.0.0.1:{admin}\"\n",
        d = dir.display(),
        rpc = ports.rpc,
        s3 = ports.s3,
        admin = ports.admin,
    );
    std::fs::write(config, toml).map_err(|e| format!("write {}: {e}", config.display()))
}

/// Start `garage -c CONFIG server`, its output going to `log`.
fn spawn(bin: &Path, config: &Path, log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("log file: {e}"))?;
    let err = out.try_clone().map_err(|e| format!("log file: {e}"))?;
    Command::new(bin)
        .arg("-c")
        .arg(config)
        .arg("server")
        .env("RUST_LOG", "garage=warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))
}

/// The node's id (without its address).
fn node_id(cli: impl Fn(&[&str]) -> Result<String, String>) -> Result<String, String> {
    let id = retry("garage node id", || cli(&["node", "id", "-q"]))?;
    let id = id.trim().split('@').next().unwrap_or_default().to_string();
    if id.is_empty() {
        return Err("garage node id printed nothing".into());
    }
    Ok(id)
}

/// Create the bucket `rewind` and a key that owns it: the key's id and secret.
fn bucket_and_key(cli: impl Fn(&[&str]) -> Result<String, String>) -> Result<(String, String), String> {
    retry("garage bucket create", || cli(&["bucket", "create", "rewind"]))?;
    let key = cli(&["key", "create", "rewind-key"])?;
    let key_id = field(&key, "Key ID:").ok_or_else(|| format!("no key id in {key:?}"))?;
    let secret = field(&key, "Secret key:").ok_or_else(|| format!("no secret in {key:?}"))?;
    cli(&[
        "bucket",
        "allow",
        "--read",
        "--write",
        "--owner",
        "rewind",
        "--key",
        "rewind-key",
    ])?;
    Ok((key_id, secret))
}

/// The S3 API answers once the layout has reached every table: wait for a listing.
fn wait_for_s3(store: &std::sync::Arc<dyn object_store::ObjectStore>) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    retry("the S3 API", || {
        rt.block_on(store.list_with_delimiter(None))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// An S3 client of `bucket` with these settings.
fn s3_store(
    bucket: &str,
    settings: &[(&'static str, String)],
) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, object_store::Error> {
    // The same bounds as `Remote::open_with`: a dead node fails in seconds.
    let mut b = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_retry(object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(20),
            ..Default::default()
        })
        .with_config(
            object_store::aws::AmazonS3ConfigKey::Client(object_store::ClientConfigKey::ConnectTimeout),
            "5s",
        )
        .with_config(
            object_store::aws::AmazonS3ConfigKey::Client(object_store::ClientConfigKey::Timeout),
            "60s",
        );
    for (k, v) in settings {
        let key: object_store::aws::AmazonS3ConfigKey = k.parse()?;
        b = b.with_config(key, v);
    }
    Ok(std::sync::Arc::new(b.build()?))
}

impl Garage {
    /// Start a server, lay it out and create a bucket and a key.
    pub fn start() -> Result<Garage, String> {
        with_fresh_ports(Self::start_once)
    }

    fn start_once() -> Result<Garage, String> {
        let bin = garage_bin()?;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let ports = Ports::free(1)?
            .pop()
            .ok_or_else(|| "no ports chosen".to_string())?;
        let config = dir.path().join("garage.toml");
        let region = "garage".to_string();
        write_config(&config, dir.path(), 1, ports, &random_hex(32)?, &region)?;
        let child = spawn(&bin, &config, &dir.path().join("server.log"))?;
        let mut g = Garage {
            child,
            dir,
            bin,
            config,
            endpoint: format!("http://127.0.0.1:{}", ports.s3),
            region,
            key_id: String::new(),
            secret: String::new(),
            bucket: "rewind".into(),
        };
        g.setup().map_err(|e| format!("{e}\nserver log:\n{}", g.log()))?;
        Ok(g)
    }

    fn setup(&mut self) -> Result<(), String> {
        let id = node_id(|a| self.cli(a))?;
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id])?;
        self.cli(&["layout", "apply", "--version", "1"])?;
        (self.key_id, self.secret) = bucket_and_key(|a| self.cli(a))?;
        wait_for_s3(&self.store(&self.bucket).map_err(|e| format!("S3 client: {e}"))?)
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
        s3_store(bucket, &self.settings())
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

/// One node of a [`GarageCluster`].
#[derive(Debug)]
struct Node {
    child: std::sync::Mutex<Option<Child>>,
    config: PathBuf,
    log: PathBuf,
    ports: Ports,
}

/// Garage nodes on 127.0.0.1 connected to each other, each with its own ports and
/// directory, sharing one layout (zone `dc1`, 1 GB each), a bucket and a key; every
/// node's process is killed on drop.
///
/// With three nodes the replication factor is 3 and the consistency mode Garage's
/// default (`consistent`): a write is acknowledged once two nodes hold it, and a read
/// asks two, so any one node can be lost without losing an acknowledged write.
#[derive(Debug)]
pub struct GarageCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    nodes: Vec<Node>,
    /// The S3 region the nodes expect.
    pub region: String,
    /// The access key id allowed on [`GarageCluster::bucket`].
    pub key_id: String,
    /// Its secret.
    pub secret: String,
    /// A bucket the key owns.
    pub bucket: String,
}

impl GarageCluster {
    /// Start `nodes` nodes (replication factor `min(nodes, 3)`), connect them, lay
    /// them out and create a bucket and a key. Every step is bounded.
    pub fn start(nodes: usize) -> Result<GarageCluster, String> {
        if nodes == 0 {
            return Err("a cluster needs at least one node".into());
        }
        with_fresh_ports(|| Self::start_once(nodes))
    }

    fn start_once(nodes: usize) -> Result<GarageCluster, String> {
        let bin = garage_bin()?;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let secret = random_hex(32)?;
        let region = "garage".to_string();
        let replication = nodes.min(3) as u8;
        let mut list = Vec::with_capacity(nodes);
        for (i, ports) in Ports::free(nodes)?.into_iter().enumerate() {
            let d = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
            let config = d.join("garage.toml");
            write_config(&config, &d, replication, ports, &secret, &region)?;
            let log = d.join("server.log");
            let child = spawn(&bin, &config, &log)?;
            list.push(Node {
                child: std::sync::Mutex::new(Some(child)),
                config,
                log,
                ports,
            });
        }
        let mut c = GarageCluster {
            dir,
            bin,
            nodes: list,
            region,
            key_id: String::new(),
            secret: String::new(),
            bucket: "rewind".into(),
        };
        c.setup().map_err(|e| {
            let logs: Vec<String> = (0..c.nodes.len())
                .map(|i| format!("node {i} log:\n{}", c.log(i)))
                .collect();
            format!("{e}\n{}", logs.join("\n"))
        })?;
        Ok(c)
    }

    fn setup(&mut self) -> Result<(), String> {
        let mut ids = Vec::new();
        for i in 0..self.nodes.len() {
            ids.push(node_id(|a| self.cli(i, a))?);
        }
        for (i, id) in ids.iter().enumerate().skip(1) {
            let peer = format!("{id}@127.0.0.1:{}", self.nodes[i].ports.rpc);
            retry("garage node connect", || self.cli(0, &["node", "connect", &peer]))?;
        }
        for id in &ids {
            retry("garage layout assign", || {
                self.cli(0, &["layout", "assign", "-z", "dc1", "-c", "1G", id])
            })?;
        }
        self.cli(0, &["layout", "apply", "--version", "1"])?;
        (self.key_id, self.secret) = bucket_and_key(|a| self.cli(0, a))?;
        for i in 0..self.nodes.len() {
            wait_for_s3(&self.store(i).map_err(|e| format!("S3 client: {e}"))?)?;
        }
        Ok(())
    }

    /// How many nodes the cluster started with.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never: [`GarageCluster::start`] refuses 0).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn node(&self, i: usize) -> Result<&Node, String> {
        self.nodes
            .get(i)
            .ok_or_else(|| format!("no node {i} in a cluster of {}", self.nodes.len()))
    }

    /// Run `garage -c NODE_CONFIG ARGS...` against node `i` (bounded); its stdout.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let node = self.node(i)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&node.config).args(args);
        run_bounded(&mut cmd, &format!("garage (node {i}) {}", args.join(" ")))
    }

    /// Kill node `i` with SIGKILL, as a crash or a power loss would, and reap it.
    pub fn kill(&self, i: usize) -> Result<(), String> {
        let node = self.node(i)?;
        let child = node.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        match child {
            Some(mut c) => {
                c.kill().map_err(|e| format!("kill node {i}: {e}"))?;
                c.wait().map_err(|e| format!("reap node {i}: {e}"))?;
                Ok(())
            }
            None => Err(format!("node {i} is already stopped")),
        }
    }

    /// Start node `i` again after [`GarageCluster::kill`], on its directory, ports and
    /// configuration (its data and metadata as the kill left them). It rejoins its
    /// peers by itself; this does not wait for that (a node answers S3 requests once
    /// a quorum of the cluster is reachable). The earlier log is kept beside the new
    /// one (`server.log.N`).
    pub fn restart(&self, i: usize) -> Result<(), String> {
        let node = self.node(i)?;
        let mut slot = node.child.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Err(format!("node {i} is running"));
        }
        let mut n = 1;
        let kept = loop {
            let p = node.log.with_extension(format!("log.{n}"));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        std::fs::rename(&node.log, &kept).map_err(|e| format!("keep node {i}'s log: {e}"))?;
        *slot = Some(spawn(&self.bin, &node.config, &node.log)?);
        Ok(())
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        self.nodes
            .get(i)
            .and_then(|n| std::fs::read_to_string(&n.log).ok())
            .unwrap_or_default()
    }

    /// The temporary directory holding every node's data (`n0/`, `n1/`, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `i`'s S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self, i: usize) -> Result<String, String> {
        Ok(format!("http://127.0.0.1:{}", self.node(i)?.ports.s3))
    }

    /// Settings for [`crate::Remote::open_with`] that reach node `i` with the key.
    pub fn settings(&self, i: usize) -> Result<Vec<(&'static str, String)>, String> {
        Ok(vec![
            ("aws_endpoint", self.endpoint(i)?),
            ("aws_region", self.region.clone()),
            ("aws_access_key_id", self.key_id.clone()),
            ("aws_secret_access_key", self.secret.clone()),
            ("aws_allow_http", "true".into()),
        ])
    }

    /// An S3 client of the bucket through node `i`.
    pub fn store(&self, i: usize) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, String> {
        s3_store(&self.bucket, &self.settings(i)?).map_err(|e| e.to_string())
    }

    /// Open `s3://BUCKET/KEY` through node `i`.
    pub fn remote(&self, i: usize, key: &str) -> Result<crate::Remote, String> {
        let s = self.settings(i)?;
        let pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crate::Remote::open_with(&format!("s3://{}/{key}", self.bucket), &pairs).map_err(|e| e.to_string())
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            if let Some(mut c) = n.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
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

    #[test]
    fn ports_chosen_together_are_distinct() {
        let ports = free_ports(9).expect("ports");
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 9, "{ports:?}");
    }

    #[test]
    fn a_start_that_lost_a_port_is_tried_again_and_other_failures_are_not() {
        let mut calls = 0;
        let r = with_fresh_ports(|| {
            calls += 1;
            if calls < 3 {
                Err("node 0 log: S3 API server exited with error: Address already in use".to_string())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r, Ok(3));
        let mut calls = 0;
        let r: Result<(), String> = with_fresh_ports(|| {
            calls += 1;
            Err("Address already in use".to_string())
        });
        assert_eq!(calls, START_ATTEMPTS);
        assert!(r.expect_err("gave up").contains("3 attempts"));
        let mut calls = 0;
        let r: Result<(), String> = with_fresh_ports(|| {
            calls += 1;
            Err("garage layout apply: exit status 1".to_string())
        });
        assert_eq!(
            (calls, r),
            (1, Err("garage layout apply: exit status 1".to_string()))
        );
    }
}
