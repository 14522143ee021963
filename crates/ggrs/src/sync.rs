//! GGRS's sync test over a rewind session, and what rewind says when it fails.

use std::fmt;

use ggrs::{Config, Frame, GgrsError, PlayerHandle, SyncTestSession};
use rewind::{ByteRange, Snapshot, StateHash};
use thiserror::Error;

use crate::backend::{BackendError, InputBytes, RewindBackend, SavedFrame, Simulation};

/// Where a re-simulated frame differs from its first simulation: the two
/// records of one iteration that GGRS's checksums disagree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesyncReport {
    /// The GGRS frame.
    pub frame: Frame,
    /// Its iteration.
    pub iteration: u64,
    /// The state hash of the first simulation.
    pub first: StateHash,
    /// The state hash of the re-simulation (on the timeline).
    pub resimulated: StateHash,
    /// The first differing page (Merkle descent).
    pub first_page: Option<u32>,
    /// Every differing page.
    pub pages: Vec<u32>,
    /// The differing bytes, merged across page boundaries.
    pub bytes: Vec<ByteRange>,
    /// Memory lengths (first, re-simulated).
    pub memory_len: (u64, u64),
    /// Indices of the globals that differ (in the guest's order).
    pub globals: Vec<usize>,
    /// Their names, as [`GlobalSlot::label`](rewind_wasmer::guest::GlobalSlot::label)
    /// gives them (export name, `$name` from the module's name section, or
    /// `global N`); `#i` when the guest was not at hand.
    pub global_labels: Vec<String>,
}

impl DesyncReport {
    /// Compares two snapshots of the same history (`first` and `resimulated`
    /// states of `iteration`), reading page bytes from `history`'s store.
    pub fn between(
        history: &rewind::History,
        frame: Frame,
        iteration: u64,
        first: &Snapshot,
        resimulated: &Snapshot,
    ) -> Result<Self, BackendError> {
        let bytes = rewind::layers::snapshot::diff_bytes(history.store(), first, resimulated)
            .map_err(rewind::Error::from)?;
        let globals: Vec<usize> = first
            .globals()
            .iter()
            .zip(resimulated.globals())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i)
            .collect();
        Ok(Self {
            frame,
            iteration,
            first: first.state_hash(),
            resimulated: resimulated.state_hash(),
            first_page: first.first_differing_page(resimulated),
            pages: rewind::layers::snapshot::diff(first, resimulated),
            bytes,
            memory_len: (first.memory_len(), resimulated.memory_len()),
            global_labels: globals.iter().map(|i| format!("#{i}")).collect(),
            globals,
        })
    }

    /// Names the differing globals after `guest`'s (the guest the snapshots came from).
    pub fn label_globals(&mut self, guest: &rewind_wasmer::Guest) {
        let slots = guest.globals();
        self.global_labels = self
            .globals
            .iter()
            .map(|&i| slots.get(i).map_or_else(|| format!("#{i}"), |g| g.label()))
            .collect();
    }
}

impl fmt::Display for DesyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame {} (iteration {}): first simulation {}, re-simulation {}",
            self.frame,
            self.iteration,
            self.first.to_hex(),
            self.resimulated.to_hex()
        )?;
        match self.first_page {
            Some(p) => write!(f, "; first differing page {p} ({} pages differ", self.pages.len())?,
            None => write!(f, "; pages equal (")?,
        }
        let shown: Vec<String> = self
            .bytes
            .iter()
            .take(8)
            .map(|r| format!("{:#x}..{:#x}", r.addr, r.addr + r.len))
            .collect();
        if !shown.is_empty() {
            write!(f, "; bytes {}", shown.join(", "))?;
            if self.bytes.len() > shown.len() {
                write!(f, " and {} more ranges", self.bytes.len() - shown.len())?;
            }
        }
        write!(f, ")")?;
        if self.memory_len.0 != self.memory_len.1 {
            write!(f, "; memory {} vs {} bytes", self.memory_len.0, self.memory_len.1)?;
        }
        if !self.globals.is_empty() {
            write!(f, "; globals {} differ", self.global_labels.join(", "))?;
        }
        Ok(())
    }
}

impl<S: Simulation> RewindBackend<S> {
    /// Why `frame` re-simulated differently: compares the timeline's record
    /// of its iteration with the earliest other record of the same iteration
    /// whose state hash differs (the first simulation, kept by the history as
    /// a superseded branch until the retention policy drops it). `None` when
    /// no such record is retained.
    pub fn explain_resimulation(&self, frame: Frame) -> Result<Option<DesyncReport>, BackendError> {
        let iteration = self.iteration_of(frame)?;
        let history = self.session().recorder().history();
        let current = history.at(iteration).map_err(rewind::Error::from)?;
        let first = history
            .records()
            .filter(|r| r.iteration() == iteration && r.state_hash() != current.state_hash())
            .min_by_key(|r| r.id());
        let Some(first) = first else { return Ok(None) };
        let mut report =
            DesyncReport::between(history, frame, iteration, first.snapshot(), current.snapshot())?;
        report.label_globals(self.session().guest());
        Ok(Some(report))
    }
}

/// Why a sync test stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SyncTestError {
    /// GGRS found a re-simulated checksum that differs from the first one:
    /// the guest is not deterministic. `report` says where (when rewind
    /// still holds both states).
    #[error("GGRS sync test: the guest is not deterministic ({ggrs}){}", report_suffix(.report))]
    Desync {
        /// GGRS's error (`MismatchedChecksum`).
        ggrs: GgrsError,
        /// rewind's report on the first mismatched frame.
        report: Option<Box<DesyncReport>>,
    },
    /// Another GGRS error.
    #[error("GGRS")]
    Ggrs(#[source] GgrsError),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

fn report_suffix(report: &Option<Box<DesyncReport>>) -> String {
    match report {
        Some(r) => format!(": {r}"),
        None => ": rewind no longer holds the first simulation of the mismatched frames".to_owned(),
    }
}

/// What a passing sync test did.
#[derive(Clone, Copy, Debug)]
pub struct SyncTestSummary {
    /// Frames advanced (GGRS's current frame at the end).
    pub frames: Frame,
    /// The check distance.
    pub check_distance: usize,
    /// The backend's counters.
    pub stats: crate::BackendStats,
}

/// Runs `frames` frames of GGRS's [`SyncTestSession`] over `backend`: every
/// frame GGRS saves, advances, then loads `check_distance` frames back and
/// re-simulates, comparing the checksums (rewind's state hashes) of each
/// frame's simulations. `input(frame, player)` gives each player's input.
///
/// A mismatch is [`SyncTestError::Desync`] with rewind's [`DesyncReport`]:
/// the first differing page and the byte ranges.
pub fn run_sync_test<T, S>(
    backend: &mut RewindBackend<S>,
    session: &mut SyncTestSession<T>,
    frames: Frame,
    mut input: impl FnMut(Frame, PlayerHandle) -> T::Input,
) -> Result<SyncTestSummary, SyncTestError>
where
    T: Config<State = SavedFrame>,
    T::Input: InputBytes,
    S: Simulation,
{
    // One advance past `frames`: the last check_distance frames are compared at the
    // next advance, so the run asks for one more than the count the caller gave.
    while session.current_frame() <= frames {
        let frame = session.current_frame();
        for player in 0..session.num_players() {
            session
                .add_local_input(player, input(frame, player))
                .map_err(SyncTestError::Ggrs)?;
        }
        match session.advance_frame() {
            Ok(requests) => backend.handle_requests(requests)?,
            Err(ggrs) => return Err(desync_or(backend, ggrs)),
        }
    }
    Ok(SyncTestSummary {
        frames: session.current_frame(),
        check_distance: session.check_distance(),
        stats: backend.stats(),
    })
}

fn desync_or<S: Simulation>(backend: &RewindBackend<S>, ggrs: GgrsError) -> SyncTestError {
    let GgrsError::MismatchedChecksum {
        mismatched_frames, ..
    } = &ggrs
    else {
        return SyncTestError::Ggrs(ggrs);
    };
    // The first mismatched frame whose first simulation is still retained.
    let report = mismatched_frames
        .iter()
        .find_map(|&f| backend.explain_resimulation(f).ok().flatten())
        .map(Box::new);
    SyncTestError::Desync { ggrs, report }
}
