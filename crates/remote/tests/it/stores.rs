//! Store wrappers for fault injection: one that fails part requests after N, one that
//! lets another writer's push land at a chosen moment of a push.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

fn is_head(location: &Path) -> bool {
    location.filename() == Some("head.json")
}

/// Passes everything to `inner`, except that part requests (GET or PUT of a part
/// object) fail after the first `n` succeeded, as if the network dropped.
#[derive(Debug)]
pub(crate) struct FailAfter {
    inner: Arc<dyn ObjectStore>,
    left: AtomicU64,
}

impl FailAfter {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, n: u64) -> FailAfter {
        FailAfter {
            inner,
            left: AtomicU64::new(n),
        }
    }

    fn allow(&self, location: &Path) -> Result<()> {
        if is_head(location) {
            return Ok(());
        }
        let took = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match took {
            Ok(_) => Ok(()),
            Err(_) => Err(object_store::Error::Generic {
                store: "FailAfter",
                source: "injected failure: connection reset".into(),
            }),
        }
    }
}

impl fmt::Display for FailAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FailAfter({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FailAfter {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.allow(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.allow(location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// When another writer's push lands during ours.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Race {
    /// After our push read the head, before it checks the head's version again.
    BeforeCheck,
    /// After that check, just before our conditional put of the head.
    BeforePut,
}

type Racer = Box<dyn FnOnce() + Send>;

/// Passes everything to `inner`, and runs `racer` (another writer's whole push, on
/// its own thread) once, at the moment `race` names.
pub(crate) struct Racing {
    inner: Arc<dyn ObjectStore>,
    race: Race,
    racer: Mutex<Option<Racer>>,
}

impl fmt::Debug for Racing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Racing({:?})", self.race)
    }
}

impl fmt::Display for Racing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Racing({})", self.inner)
    }
}

impl Racing {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, race: Race, racer: Racer) -> Racing {
        Racing {
            inner,
            race,
            racer: Mutex::new(Some(racer)),
        }
    }

    fn run_racer(&self) {
        let racer = self.racer.lock().expect("not poisoned").take();
        if let Some(r) = racer {
            std::thread::spawn(r).join().expect("the racing push succeeds");
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for Racing {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        if is_head(location) && matches!(self.race, Race::BeforePut) {
            self.run_racer();
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if is_head(location) && options.head && matches!(self.race, Race::BeforeCheck) {
            self.run_racer();
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

type Action = Box<dyn FnOnce() + Send>;

/// Passes everything to `inner`, and once armed ([`OnPut::arm`]) runs `action` (a
/// fault: a node killed) just before the `n`-th part PUT after arming, or before the
/// head PUT if that comes first: so in the middle of one push.
pub(crate) struct OnPut {
    inner: Arc<dyn ObjectStore>,
    countdown: Mutex<Option<u64>>,
    action: Mutex<Option<Action>>,
}

impl fmt::Debug for OnPut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnPut({})", self.inner)
    }
}

impl fmt::Display for OnPut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnPut({})", self.inner)
    }
}

impl OnPut {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, action: Action) -> OnPut {
        OnPut {
            inner,
            countdown: Mutex::new(None),
            action: Mutex::new(Some(action)),
        }
    }

    /// Run the action before the `n`-th part PUT from now (or the next head PUT).
    pub(crate) fn arm(&self, n: u64) {
        *self.countdown.lock().expect("not poisoned") = Some(n);
    }

    /// Whether the action has run.
    pub(crate) fn fired(&self) -> bool {
        self.action.lock().expect("not poisoned").is_none()
    }

    fn before_put(&self, location: &Path) {
        let fire = {
            let mut c = self.countdown.lock().expect("not poisoned");
            match c.as_mut() {
                Some(n) if is_head(location) || *n <= 1 => {
                    *c = None;
                    true
                }
                Some(n) => {
                    *n -= 1;
                    false
                }
                None => false,
            }
        };
        if fire {
            if let Some(a) = self.action.lock().expect("not poisoned").take() {
                a();
            }
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for OnPut {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.before_put(location);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Passes everything to `inner`, holding each part request for a few milliseconds
/// (a link's round trip) and recording the most part requests that were in flight
/// at once.
pub(crate) struct InFlight {
    inner: Arc<dyn ObjectStore>,
    now: AtomicU64,
    most: AtomicU64,
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InFlight({})", self.inner)
    }
}

impl fmt::Display for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InFlight({})", self.inner)
    }
}

impl InFlight {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> InFlight {
        InFlight {
            inner,
            now: AtomicU64::new(0),
            most: AtomicU64::new(0),
        }
    }

    /// The most part requests in flight at once so far.
    pub(crate) fn most(&self) -> u64 {
        self.most.load(Ordering::SeqCst)
    }

    async fn hold<T>(&self, location: &Path, f: impl std::future::Future<Output = T>) -> T {
        if is_head(location) {
            return f.await;
        }
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let out = f.await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

#[async_trait::async_trait]
impl ObjectStore for InFlight {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.hold(location, self.inner.put_opts(location, payload, opts))
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.hold(location, self.inner.get_opts(location, options)).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
