//! Store wrappers for fault injection: one that fails part requests after N, one that
//! lets another writer's push land at a chosen moment of a push, one that runs an
//! action (a node killed) mid-push, one that counts part requests in flight. Each
//! hooks a few methods and passes the rest on ([`wrapper_store`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use object_store::path::Path;
use object_store::{GetOptions, GetResult, ObjectStore, PutOptions, PutPayload, PutResult, Result};

/// The Display of a wrapper store `NAME(inner)` and its [`ObjectStore`] impl: the
/// methods given (the ones it hooks), and every other one passed to `self.inner`.
macro_rules! wrapper_store {
    ($name:ident { $($hooked:tt)* }) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.inner)
            }
        }

        #[async_trait::async_trait]
        impl object_store::ObjectStore for $name {
            $($hooked)*

            async fn put_multipart_opts(
                &self,
                location: &object_store::path::Path,
                opts: object_store::PutMultipartOptions,
            ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
                self.inner.put_multipart_opts(location, opts).await
            }

            fn delete_stream(
                &self,
                locations: futures_util::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
            ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
                self.inner.delete_stream(locations)
            }

            fn list(
                &self,
                prefix: Option<&object_store::path::Path>,
            ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
                self.inner.list(prefix)
            }

            async fn list_with_delimiter(
                &self,
                prefix: Option<&object_store::path::Path>,
            ) -> object_store::Result<object_store::ListResult> {
                self.inner.list_with_delimiter(prefix).await
            }

            async fn copy_opts(
                &self,
                from: &object_store::path::Path,
                to: &object_store::path::Path,
                options: object_store::CopyOptions,
            ) -> object_store::Result<()> {
                self.inner.copy_opts(from, to, options).await
            }
        }
    };
}
pub(crate) use wrapper_store;

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

crate::stores::wrapper_store!(FailAfter {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.allow(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.allow(location)?;
        self.inner.get_opts(location, options).await
    }
});

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

crate::stores::wrapper_store!(Racing {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        if is_head(location) && matches!(self.race, Race::BeforePut) {
            self.run_racer();
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if is_head(location) && options.head && matches!(self.race, Race::BeforeCheck) {
            self.run_racer();
        }
        self.inner.get_opts(location, options).await
    }
});

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

crate::stores::wrapper_store!(OnPut {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.before_put(location);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
});

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

crate::stores::wrapper_store!(InFlight {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.hold(location, self.inner.put_opts(location, payload, opts))
            .await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.hold(location, self.inner.get_opts(location, options)).await
    }
});
