//! The capture pipeline: the caller copies the pages a capture examines into a staging
//! buffer and returns; a worker thread does the rest of the capture.
//!
//! # Hand-off
//!
//! The recorder's state (history, collector, archive writer: [`Core`]) has exactly one
//! owner at a time, and ownership moves over std channels:
//!
//! - at rest it is the caller's (the [`crate::Recorder`] holds it, so `history()` can
//!   return a plain `&History`);
//! - the first staged capture sends it to the worker ahead of the frame; the worker
//!   then records every staged frame in order (hash, dedup, store, deltas, vector and
//!   Merkle updates, archive append, GC step, compression);
//! - any call that needs the history sends `Return` behind the frames: the worker
//!   answers it after the frames before it (the channel is FIFO) and sends the state
//!   back with any failure.
//!
//! No state is shared between the threads except the staging budget (a `Mutex` and a
//! `Condvar`) and counters (atomics): the history is never behind a lock, so neither
//! thread waits on a lock the other holds while working.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rewind_archive::ArchiveWriter;
use rewind_gc::{Collector, GcReport};
use rewind_history::{CaptureReport, History};
use rewind_snapshot::{GlobalValue, StagedPages};

use crate::Error;

/// Options of the capture pipeline ([`crate::Options::pipeline`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
///
/// ```
/// use rewind::*;
///
/// # fn main() -> Result<(), rewind::Error> {
/// let options = Options::new(4096)?.pipeline(PipelineOptions { staging_budget: 16 << 20, ..Default::default() });
/// assert_eq!(options.pipeline.map(|p| p.staging_budget), Some(16 << 20));
/// # Ok(())
/// # }
/// ```
pub struct PipelineOptions {
    /// Bytes of staged pages that may wait for the worker. A capture that would go
    /// past it blocks until the worker has recorded enough (counted in
    /// [`PipelineStats::blocked`]); a single capture larger than the budget is staged
    /// alone.
    pub staging_budget: usize,
    /// Let the worker's GC steps compress as many aged pages as the guest writes
    /// instead of a fixed number per step
    /// ([`rewind_store::PageStore::set_compress_follows_rate`]): memory stays bounded
    /// for a guest that writes most of its pages, at the cost of worker CPU (one lz4
    /// pass per written page). Off by default.
    pub compress_follows_rate: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            staging_budget: 64 << 20,
            compress_follows_rate: false,
        }
    }
}

impl PipelineOptions {
    /// The default: a 64 MiB staging budget.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// assert_eq!(PipelineOptions::new().staging_budget, 64 << 20);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The staging budget in bytes.
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// // At most 8 MiB of copied pages wait for the worker; a capture beyond blocks.
    /// let rec = Recorder::new(Options::new(4096)?.pipeline(PipelineOptions::new().staging_budget(8 << 20)))?;
    /// # let _ = rec;
    /// # Ok(())
    /// # }
    /// ```
    pub fn staging_budget(mut self, bytes: usize) -> Self {
        self.staging_budget = bytes;
        self
    }

    /// Whether the worker's compression follows the write rate (see
    /// [`PipelineOptions::compress_follows_rate`]).
    ///
    /// ```
    /// use rewind::*;
    ///
    /// # fn main() -> Result<(), rewind::Error> {
    /// // A guest that rewrites most of its pages every frame.
    /// let rec = Recorder::new(Options::new(4096)?.pipeline(PipelineOptions::new().compress_follows_rate(true)))?;
    /// # let _ = rec;
    /// # Ok(())
    /// # }
    /// ```
    pub fn compress_follows_rate(mut self, on: bool) -> Self {
        self.compress_follows_rate = on;
        self
    }
}

/// What the pipeline did so far: caller-thread and worker figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
///
/// ```
/// use rewind::*;
///
/// # fn main() -> Result<(), rewind::Error> {
/// let mut rec = Recorder::new(Options::new(4096)?.pipeline(PipelineOptions::new()))?;
/// rec.submit(0, &[0u8; 4096], &[], None, None)?;
/// rec.submit(1, &[1u8; 4096], &[], Some(&[0]), None)?;
/// rec.settle()?;
/// let stats: PipelineStats = rec.pipeline_stats();
/// assert_eq!((stats.synchronous, stats.staged, stats.blocked), (1, 1, 0));
/// # Ok(())
/// # }
/// ```
pub struct PipelineStats {
    /// Captures staged for the worker.
    pub staged: u64,
    /// Captures recorded on the caller's thread (no hint, or the first capture after a
    /// worker failure).
    pub synchronous: u64,
    /// Pages copied into staging.
    pub pages_staged: u64,
    /// Caller time spent copying pages into staging.
    pub copy_time: Duration,
    /// Captures that waited for staging budget.
    pub blocked: u64,
    /// Caller time spent waiting for staging budget.
    pub blocked_time: Duration,
    /// Times the caller waited for the worker to hand the history back (queries,
    /// rollbacks) while frames were in flight.
    pub waits: u64,
    /// Caller time spent in those waits.
    pub wait_time: Duration,
    /// Frames the worker recorded.
    pub worker_frames: u64,
    /// Worker time spent recording them (wall time while busy).
    pub worker_time: Duration,
    /// The most staged bytes in flight at once.
    pub max_staged_bytes: u64,
}

/// The recorder's state: what the pipeline hands between the threads.
pub(crate) struct Core {
    pub(crate) history: History,
    pub(crate) gc: Collector,
    pub(crate) last_gc: GcReport,
    pub(crate) archive: Option<ArchiveWriter>,
    /// The report of the last capture, from either path.
    pub(crate) last_report: Option<CaptureReport>,
    /// Tests: make the staged capture of this iteration fail (`false`) or panic (`true`).
    #[cfg(test)]
    pub(crate) fault: Option<(u64, bool)>,
}

impl Core {
    /// What follows every capture, on either path: the archive append (before the GC
    /// step, so the policy never drops a record the file lacks), then one GC step.
    pub(crate) fn after_capture(&mut self, report: CaptureReport) -> Result<CaptureReport, Error> {
        if let Some(w) = &mut self.archive {
            w.append(&self.history)?;
        }
        self.last_gc = self.gc.collect_some(&mut self.history)?;
        self.last_report = Some(report);
        Ok(report)
    }

    fn record_staged(&mut self, frame: &Frame) -> Result<CaptureReport, Error> {
        #[cfg(test)]
        match self.fault {
            Some((it, true)) if it == frame.iteration => panic!("injected panic at {it}"),
            Some((it, false)) if it == frame.iteration => return Err(Error::WorkerGone),
            _ => {}
        }
        let staged = StagedPages {
            memory_len: frame.memory_len,
            indices: &frame.indices,
            bytes: &frame.bytes,
        };
        let report =
            self.history
                .capture_staged(frame.iteration, staged, &frame.globals, frame.input.as_deref())?;
        if let Some(host) = &frame.host_state {
            self.history.set_host_state(report.record, host)?;
        }
        self.after_capture(report)
    }
}

/// One staged capture. Dropping it (recorded or discarded) returns its buffer and its
/// budget, so the caller never waits on budget the worker will not give back.
pub(crate) struct Frame {
    pub(crate) iteration: u64,
    pub(crate) memory_len: u64,
    pub(crate) indices: Vec<u32>,
    pub(crate) bytes: Vec<u8>,
    pub(crate) globals: Vec<GlobalValue>,
    pub(crate) input: Option<Vec<u8>>,
    /// The host state recorded with the capture ([`crate::Recorder::submit_with_host_state`]).
    pub(crate) host_state: Option<Vec<u8>>,
    pub(crate) shared: Arc<Shared>,
}

impl Drop for Frame {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        let mut staging = self.shared.lock();
        staging.in_flight = staging.in_flight.saturating_sub(bytes.len());
        if staging.pool.len() < 16 {
            staging.pool.push(bytes);
        }
        drop(staging);
        self.shared.cv.notify_all();
    }
}

/// Messages to the worker.
pub(crate) enum Msg {
    /// The state, ahead of the frames recorded with it.
    Core(Box<Core>),
    /// A capture to record.
    Frame(Frame),
    /// Send the state back once the frames before this message are recorded.
    Return,
}

/// Why the worker stopped recording.
pub(crate) enum Failure {
    /// A capture failed (the history is as it was before it).
    Error { iteration: u64, error: Error },
    /// Recording panicked (the history may be inconsistent).
    Panic(String),
}

/// The worker's answer to [`Msg::Return`].
pub(crate) struct Returned {
    pub(crate) core: Option<Box<Core>>,
    pub(crate) failure: Option<Failure>,
}

/// Staging budget and buffer pool.
pub(crate) struct Staging {
    pub(crate) in_flight: usize,
    pub(crate) pool: Vec<Vec<u8>>,
    /// False once the worker thread has ended.
    pub(crate) alive: bool,
}

/// What both threads see.
pub(crate) struct Shared {
    staging: Mutex<Staging>,
    pub(crate) cv: Condvar,
    /// Set by the worker when it stops recording; cleared when the caller has taken
    /// the failure.
    pub(crate) failed: AtomicBool,
    pub(crate) worker_frames: AtomicU64,
    pub(crate) worker_nanos: AtomicU64,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Staging> {
        // Nothing panics while holding this lock (plain counter updates), so a poisoned
        // lock still holds consistent counters.
        self.staging.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until `need` more bytes fit the budget (or nothing is in flight). Returns
    /// the bytes in flight after reserving, whether it had to wait, and false when the
    /// worker has ended.
    pub(crate) fn reserve(&self, need: usize, budget: usize) -> (usize, bool, bool) {
        let mut staging = self.lock();
        let mut waited = false;
        while staging.alive && staging.in_flight > 0 && staging.in_flight + need > budget {
            waited = true;
            staging = self.cv.wait(staging).unwrap_or_else(|e| e.into_inner());
        }
        if !staging.alive {
            return (staging.in_flight, waited, false);
        }
        staging.in_flight += need;
        (staging.in_flight, waited, true)
    }

    /// A buffer from the pool (or a new one), cleared.
    pub(crate) fn buffer(&self) -> Vec<u8> {
        let mut b = self.lock().pool.pop().unwrap_or_default();
        b.clear();
        b
    }
}

/// Sets [`Staging::alive`] to false when the worker thread ends, however it ends.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.lock().alive = false;
        self.0.cv.notify_all();
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The caller's end of the pipeline.
pub(crate) struct Pipe {
    pub(crate) tx: Sender<Msg>,
    pub(crate) rx: Receiver<Returned>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) worker: Option<std::thread::JoinHandle<()>>,
    pub(crate) options: PipelineOptions,
}

impl Pipe {
    pub(crate) fn start(options: PipelineOptions) -> Result<Pipe, Error> {
        let shared = Arc::new(Shared {
            staging: Mutex::new(Staging {
                in_flight: 0,
                pool: Vec::new(),
                alive: true,
            }),
            cv: Condvar::new(),
            failed: AtomicBool::new(false),
            worker_frames: AtomicU64::new(0),
            worker_nanos: AtomicU64::new(0),
        });
        let (tx, worker_rx) = std::sync::mpsc::channel();
        let (worker_tx, rx) = std::sync::mpsc::channel();
        let alive = Alive(shared.clone());
        let worker = std::thread::Builder::new()
            .name("rewind-capture".into())
            .spawn(move || {
                let alive = alive;
                work(&worker_rx, &worker_tx, &alive.0);
            })
            .map_err(Error::WorkerSpawn)?;
        Ok(Pipe {
            tx,
            rx,
            shared,
            worker: Some(worker),
            options,
        })
    }
}

/// The worker: records frames with the state it holds, stops recording at the first
/// failure (later frames are dropped, their budget returned) until the state goes back.
fn work(rx: &Receiver<Msg>, tx: &Sender<Returned>, shared: &Shared) {
    let mut core: Option<Box<Core>> = None;
    let mut failure: Option<Failure> = None;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Core(c) => core = Some(c),
            Msg::Frame(frame) => {
                if failure.is_some() {
                    continue;
                }
                let t0 = Instant::now();
                let result = match core.as_mut() {
                    Some(c) => catch_unwind(AssertUnwindSafe(|| c.record_staged(&frame))),
                    None => Ok(Err(Error::WorkerGone)),
                };
                shared
                    .worker_nanos
                    .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                shared.worker_frames.fetch_add(1, Ordering::Relaxed);
                failure = match result {
                    Ok(Ok(_)) => None,
                    Ok(Err(error)) => Some(Failure::Error {
                        iteration: frame.iteration,
                        error,
                    }),
                    Err(p) => Some(Failure::Panic(panic_message(&*p))),
                };
                if failure.is_some() {
                    shared.failed.store(true, Ordering::Release);
                }
            }
            Msg::Return => {
                let returned = Returned {
                    core: core.take(),
                    failure: failure.take(),
                };
                if tx.send(returned).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Error, GlobalValue, LiveMemory, Options, PipelineOptions, Recorder};

    const PAGE: usize = 1024;

    fn recorder(fault: (u64, bool)) -> Recorder {
        let options = Options::new(PAGE as u64)
            .expect("page size")
            .seed(3)
            .pipeline(PipelineOptions::new());
        let mut rec = Recorder::new(options).expect("recorder");
        rec.home.get_mut().expect("home").fault = Some(fault);
        rec
    }

    /// Runs frames 0..10 (each writes page `it % 8`), returning the first error.
    fn frames(rec: &mut Recorder, memory: &mut [u8]) -> Result<(), Error> {
        rec.submit(0, memory, &[GlobalValue::I32(0)], None, None)?;
        for it in 1..10u64 {
            let p = (it % 8) as usize;
            memory[p * PAGE] = it as u8;
            rec.submit(
                it,
                memory,
                &[GlobalValue::I32(it as i32)],
                Some(&[p as u32]),
                None,
            )?;
        }
        Ok(())
    }

    #[test]
    fn worker_error_is_reported_by_the_next_call_and_the_recorder_goes_on() {
        let mut rec = recorder((4, false));
        let mut memory = vec![0u8; 8 * PAGE];
        // Frames after 4 are discarded; the error comes from a later submit or the
        // settle, never lost.
        let submitted = frames(&mut rec, &mut memory);
        let err = submitted.err().or_else(|| rec.settle().err()).expect("an error");
        assert!(matches!(err, Error::Deferred { iteration: 4, .. }), "{err}");
        assert_eq!(rec.history().head().map(|h| h.iteration()), Some(3));
        rec.history().check().expect("consistent");
        // Reported once; the next capture hashes all of memory (its hint was relative
        // to a discarded capture) and matches a synchronous recorder's.
        rec.settle().expect("reported once");
        rec.submit(4, &memory, &[GlobalValue::I32(4)], Some(&[]), None)
            .expect("resynchronised");
        let mut sync = Recorder::new(Options::new(PAGE as u64).expect("page size").seed(3)).expect("sync");
        let mut m2 = vec![0u8; 8 * PAGE];
        sync.submit(0, &m2, &[GlobalValue::I32(0)], None, None)
            .expect("0");
        for it in 1..4u64 {
            let p = (it % 8) as usize;
            m2[p * PAGE] = it as u8;
            sync.submit(it, &m2, &[GlobalValue::I32(it as i32)], Some(&[p as u32]), None)
                .expect("frame");
        }
        sync.submit(4, &memory, &[GlobalValue::I32(4)], None, None)
            .expect("4");
        assert_eq!(rec.state_hash(4).expect("4"), sync.state_hash(4).expect("4"));
        assert_eq!(rec.pipeline_stats().synchronous, 2);
    }

    #[test]
    fn worker_panic_poisons_the_recorder_without_hanging() {
        let mut rec = recorder((5, true));
        let mut memory = vec![0u8; 8 * PAGE];
        let submitted = frames(&mut rec, &mut memory);
        let err = submitted.err().or_else(|| rec.settle().err()).expect("an error");
        assert!(matches!(err, Error::WorkerPanicked { .. }), "{err}");
        // Every later call fails the same way, and none hangs.
        assert!(matches!(rec.state_hash(1), Err(Error::WorkerPanicked { .. })));
        assert!(matches!(
            rec.rollback_to(1, &mut memory, LiveMemory::Unknown),
            Err(Error::WorkerPanicked { .. })
        ));
        assert!(matches!(
            rec.submit(20, &memory, &[GlobalValue::I32(0)], Some(&[]), None),
            Err(Error::WorkerPanicked { .. })
        ));
        drop(rec);
    }

    #[test]
    fn dropping_with_captures_in_flight_records_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.rwd");
        let options = Options::new(PAGE as u64)
            .expect("page size")
            .seed(3)
            .archive(&path, crate::Durability::Manual)
            .pipeline(PipelineOptions::new());
        let mut rec = Recorder::new(options).expect("recorder");
        let mut memory = vec![0u8; 8 * PAGE];
        frames(&mut rec, &mut memory).expect("frames");
        drop(rec);
        let archive = crate::Archive::open(&path).expect("archive");
        let history = archive.to_history().expect("history");
        assert_eq!(history.head().map(|h| h.iteration()), Some(9));
    }
}
